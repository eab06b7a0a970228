//! The life of an HTTP tunnel with the real control plane: API keys on the agent,
//! status in the API, DELETE cutting a live tunnel, reserved names, recreate tokens
//! across agent and server restarts, and takeover by a second agent.

mod common;

use std::time::{Duration, Instant};

use common::web::{self, get};
use common::{HttpAgent, Server, TempDir, free_port};
use serde_json::json;

fn http_server(extra: &[&str]) -> Server {
    let mut args = vec!["--domain", "localhost"];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

#[tokio::test]
async fn a_keyed_tunnel_is_listed_online_and_delete_cuts_it_within_a_second() {
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let key = server.create_key("laptop");
    let mut agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--key", &key]);
    let id = agent.online["tunnel_id"].as_str().unwrap().to_string();
    assert_eq!(get(server.http, &agent.host, "/").await.status, 200);

    let shown = server.api("GET", &format!("/tunnels/{id}"), Some(&key), None);
    assert_eq!(shown.status, 200, "{:?}", shown.body);
    assert_eq!(shown.body["status"], "online");
    assert_eq!(shown.body["protocol"], "http");
    assert!(
        shown.body["agent_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{}",
        shown.body
    );
    let listed = server.api("GET", "/tunnels", Some(&key), None);
    assert_eq!(listed.body["tunnels"][0]["tunnel_id"], id.as_str());

    let started = Instant::now();
    let deleted = server.api("DELETE", &format!("/tunnels/{id}"), Some(&key), None);
    assert_eq!(deleted.status, 204);
    let error = agent.proc.expect_event("error", Duration::from_secs(1));
    assert_eq!(error["code"], "tunnel_deleted", "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(agent.proc.wait_exit(Duration::from_secs(2)), Some(1));
    let r = get(server.http, &agent.host, "/").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(
        server
            .api("GET", &format!("/tunnels/{id}"), Some(&key), None)
            .status,
        404
    );
}

#[tokio::test]
async fn a_masked_agent_address_is_left_out_of_the_api() {
    let origin = web::start_origin().await;
    let server = http_server(&["--mask-agent-ip"]);
    let key = server.create_key("k");
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--key", &key]);
    let id = agent.online["tunnel_id"].as_str().unwrap();
    let shown = server.api("GET", &format!("/tunnels/{id}"), Some(&key), None);
    assert_eq!(shown.body["status"], "online");
    assert!(shown.body.get("agent_addr").is_none(), "{}", shown.body);
}

#[tokio::test]
async fn a_reserved_name_goes_only_to_its_key() {
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let owner = server.create_key("owner");
    let other = server.create_key("other");
    let reserved = server.api(
        "POST",
        "/names",
        Some(&owner),
        Some(&json!({"name": "shop"})),
    );
    assert_eq!(reserved.status, 201, "{:?}", reserved.body);

    for extra in [vec!["--key", other.as_str()], vec![]] {
        let mut args = vec!["--name", "shop"];
        args.extend(extra);
        let mut refused = HttpAgent::spawn(&server, &origin.addr.to_string(), &args);
        let error = refused.expect_event("error", Duration::from_secs(10));
        assert_eq!(error["code"], "name_taken", "{error}");
        assert_eq!(refused.wait_exit(Duration::from_secs(5)), Some(1));
    }
    let agent = HttpAgent::start(
        &server,
        &origin.addr.to_string(),
        &["--name", "shop", "--key", &owner],
    );
    assert!(agent.host.starts_with("shop.localhost:"));
    assert_eq!(get(server.http, &agent.host, "/x").await.text(), "hello /x");
}

#[tokio::test]
async fn the_url_survives_a_server_restart_and_an_agent_restart_after_it() {
    let origin = web::start_origin().await;
    let (control, agent_port, http) = (free_port(), free_port(), free_port());
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let start = |data: TempDir| {
        Server::start_opts(
            data,
            &addr(control),
            &addr(agent_port),
            &addr(http),
            true,
            &["--domain", "localhost"],
        )
    };
    let server = start(TempDir::new("data"));
    let state = TempDir::new("state");
    let state_dir = state.0.to_str().unwrap().to_string();
    let mut agent = HttpAgent::start(
        &server,
        &origin.addr.to_string(),
        &["--state-dir", &state_dir],
    );
    let url = agent.online["public_url"].clone();
    let id = agent.online["tunnel_id"].clone();

    // Server restart: the running agent reconnects and reclaims the same tunnel.
    let server = start(server.stop());
    let back = agent.proc.expect_event("online", Duration::from_secs(20));
    assert_eq!(back["public_url"], url);
    assert_eq!(back["tunnel_id"], id);
    assert_eq!(get(server.http, &agent.host, "/a").await.text(), "hello /a");

    // Agent restart after that: still the same URL.
    agent.proc.kill();
    let again = HttpAgent::start(
        &server,
        &origin.addr.to_string(),
        &["--state-dir", &state_dir],
    );
    assert_eq!(again.online["public_url"], url);
    assert_eq!(again.online["tunnel_id"], id);
    assert_eq!(get(server.http, &again.host, "/b").await.text(), "hello /b");
}

#[tokio::test]
async fn a_second_agent_with_the_same_recreate_token_takes_over() {
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let state = TempDir::new("state");
    let state_dir = state.0.to_str().unwrap();
    let mut first = HttpAgent::start(
        &server,
        &origin.addr.to_string(),
        &["--state-dir", state_dir],
    );
    let second = HttpAgent::start(
        &server,
        &origin.addr.to_string(),
        &["--state-dir", state_dir],
    );
    assert_eq!(second.online["public_url"], first.online["public_url"]);
    let error = first.proc.expect_event("error", Duration::from_secs(5));
    assert_eq!(error["code"], "replaced", "{error}");
    assert_eq!(first.proc.wait_exit(Duration::from_secs(5)), Some(1));
    assert_eq!(
        get(server.http, &second.host, "/c").await.text(),
        "hello /c"
    );
}
