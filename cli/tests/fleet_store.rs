//! Two `netbore server` nodes sharing one control store in a real `redis-server`
//! (`--redis`), each with its own data directory: an API key made once with
//! `netbore key --redis` works on both, a name reserved on one is refused to another
//! key on the other, a tunnel created on one is listed on the other, and a revocation
//! reaches both at once. And the one-sentence error when Redis is not there.

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::{Proc, Server, TempDir, free_port, key_cmd};
use serde_json::{Value, json};

/// `netbore key ARGS --redis URL`, run from a directory no server uses: exit code
/// and events.
fn key(redis: &RedisServer, args: &[&str]) -> (i32, Vec<Value>) {
    let nowhere = TempDir::new("key-cli");
    let mut with_redis = args.to_vec();
    with_redis.extend_from_slice(&["--redis", &redis.url]);
    key_cmd(&nowhere, &with_redis)
}

/// Creates a key in the shared store: its id and secret.
fn create_key(redis: &RedisServer, label: &str) -> (String, String) {
    let (code, events) = key(redis, &["create", "--label", label]);
    assert_eq!(code, 0, "{events:?}");
    (
        events[0]["id"].as_str().unwrap().to_string(),
        events[0]["key"].as_str().unwrap().to_string(),
    )
}

fn tunnel_ids(listed: &common::HttpResponse) -> Vec<String> {
    assert_eq!(listed.status, 200, "{listed:?}");
    listed.body["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tunnel_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_nodes_share_keys_names_and_tunnels_through_redis() {
    let redis = RedisServer::start();
    let a = Server::start_with(&["--redis", &redis.url]);
    let b = Server::start_with(&["--redis", &redis.url]);
    assert_ne!(a.data_dir.0, b.data_dir.0);
    let (id, secret) = create_key(&redis, "fleet");
    let (_, other) = create_key(&redis, "other");

    // The key authenticates on both nodes.
    let on_a = a.api(
        "POST",
        "/tunnels/create",
        Some(&secret),
        Some(&json!({"protocol": "tcp"})),
    );
    assert_eq!(on_a.status, 200, "{on_a:?}");
    let on_b = b.api(
        "POST",
        "/tunnels/create",
        Some(&secret),
        Some(&json!({"protocol": "tcp"})),
    );
    assert_eq!(on_b.status, 200, "{on_b:?}");

    // A name reserved through node A is refused to another key on node B.
    let reserved = a.api(
        "POST",
        "/names",
        Some(&secret),
        Some(&json!({"name": "shop"})),
    );
    assert_eq!(reserved.status, 201, "{reserved:?}");
    b.api(
        "POST",
        "/names",
        Some(&other),
        Some(&json!({"name": "shop"})),
    )
    .assert_error(409, "name_taken");
    b.api(
        "POST",
        "/tunnels/create",
        Some(&other),
        Some(&json!({"protocol": "http", "name": "shop"})),
    )
    .assert_error(409, "name_taken");
    let held = b.api("GET", "/names", Some(&secret), None);
    assert_eq!(held.body["names"][0]["name"], "shop", "{held:?}");

    // A tunnel created on node A is listed on node B, and the other way round.
    let shop = a.api(
        "POST",
        "/tunnels/create",
        Some(&secret),
        Some(&json!({"protocol": "http", "name": "shop"})),
    );
    assert_eq!(shop.status, 200, "{shop:?}");
    let shop_id = shop.body["tunnel_id"].as_str().unwrap().to_string();
    let from_b = tunnel_ids(&b.api("GET", "/tunnels", Some(&secret), None));
    let from_a = tunnel_ids(&a.api("GET", "/tunnels", Some(&secret), None));
    assert_eq!(from_a, from_b);
    for created in [&on_a, &on_b] {
        assert!(from_b.contains(&created.body["tunnel_id"].as_str().unwrap().to_string()));
    }
    assert!(from_b.contains(&shop_id), "{from_b:?}");
    assert_eq!(from_b.len(), 3);

    // `netbore key revoke --redis` makes both nodes refuse the key at once.
    let (code, events) = key(&redis, &["revoke", &id]);
    assert_eq!(code, 0, "{events:?}");
    for node in [&a, &b] {
        let msg = node
            .api("GET", "/tunnels", Some(&secret), None)
            .assert_error(401, "unauthorized");
        assert!(msg.contains("revoked"), "{msg}");
    }
    // Its name is free again, on either node, for the other key.
    let freed = b.api(
        "POST",
        "/names",
        Some(&other),
        Some(&json!({"name": "shop"})),
    );
    assert_eq!(freed.status, 201, "{freed:?}");

    let (code, events) = key(&redis, &["list"]);
    assert_eq!(code, 0, "{events:?}");
    let keys = events[0]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let revoked = keys.iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert_eq!(revoked["revoked"], true);
}

#[test]
fn an_unreachable_redis_is_one_sentence_naming_the_flag() {
    // A port below the ephemeral range that nobody listens on.
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let expected = format!(
        "could not reach Redis at {url}: connection refused; check --redis and that Redis is running"
    );

    let data_dir = TempDir::new("fleet-down");
    let dd = data_dir.0.to_str().unwrap();
    let mut server = Proc::spawn(&[
        "server",
        "--control-addr",
        "127.0.0.1:0",
        "--agent-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--tcp-ports",
        "0",
        "--data-dir",
        dd,
        "--redis",
        &url,
    ]);
    let error = server.expect_event("error", Duration::from_secs(20));
    assert_eq!(error["message"], expected.as_str(), "{error}");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(1));

    let (code, events) = key_cmd(&data_dir, &["list", "--redis", &url]);
    assert_eq!(code, 1);
    assert_eq!(events[0]["event"], "error");
    assert_eq!(events[0]["message"], expected.as_str());
}

/// `netbore key ARGS --redis URL --json`, with `SSL_CERT_FILE` set to `ca` (or unset):
/// exit code and events.
fn key_over(url: &str, ca: Option<&std::path::Path>, args: &[&str]) -> (i32, Vec<Value>) {
    let nowhere = TempDir::new("key-tls");
    let mut command = std::process::Command::new(common::bin());
    command
        .arg("key")
        .args(args)
        .args(["--redis", url, "--json", "--data-dir"])
        .arg(&nowhere.0)
        .env_remove("SSL_CERT_FILE")
        .stdin(std::process::Stdio::null());
    if let Some(ca) = ca {
        command.env("SSL_CERT_FILE", ca);
    }
    let out = command.output().expect("netbore runs");
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap_or(-1), events)
}

#[test]
fn the_store_is_reached_over_tls_and_plain_text_to_another_machine_is_refused() {
    let pki = netbore_test_support::Pki::new();
    let redis =
        netbore_test_support::redis::RedisServer::start_tls(free_port(), &pki.cert, &pki.key);
    assert!(redis.url.starts_with("rediss://"), "{}", redis.url);

    // Keys over TLS, the server's certificate checked against the CA in SSL_CERT_FILE.
    let (code, events) = key_over(&redis.url, Some(&pki.ca), &["create", "--label", "tls"]);
    assert_eq!(code, 0, "{events:?}");
    let (code, events) = key_over(&redis.url, Some(&pki.ca), &["list"]);
    assert_eq!(code, 0, "{events:?}");
    assert!(format!("{events:?}").contains("tls"), "{events:?}");
    // A certificate the machine does not trust is refused.
    let (code, events) = key_over(&redis.url, None, &["list"]);
    assert_eq!(code, 1, "{events:?}");

    // A server joins the fleet over TLS.
    let data_dir = TempDir::new("fleet-tls");
    let mut command = std::process::Command::new(common::bin());
    command
        .args([
            "server",
            "--control-addr",
            "127.0.0.1:0",
            "--agent-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--tcp-ports",
            "0",
            "--redis",
            &redis.url,
            "--data-dir",
        ])
        .arg(&data_dir.0)
        .env("SSL_CERT_FILE", &pki.ca);
    let server = Proc::spawn_command(command);
    let listening = server.expect_event("listening", Duration::from_secs(20));
    assert!(listening["node"].is_string(), "{listening}");

    // redis:// to another machine is refused before anything is sent, in one sentence
    // that says what to do, without the password.
    let (code, events) = key_over("redis://:hunter2@192.0.2.1:6379/0", None, &["list"]);
    assert_eq!(code, 1, "{events:?}");
    let message = events[0]["message"].as_str().unwrap();
    assert!(
        message.contains("without TLS") && message.contains("rediss://"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

/// The `kid` a JWT's header names.
fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let json = netbore_test_support::webdriver::base64_decode(header).unwrap();
    let header: Value = serde_json::from_slice(&json).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_new_signing_key_is_trusted_by_its_kid_beside_its_old_one() {
    use common::fleet::Fleet;
    use common::hello::{create_token, hello};
    use netbore_transport::proto::{ErrorCode, HelloReply};
    use std::time::Instant;

    let mut fleet = Fleet::start_n(2, &["--max-tunnels-per-anonymous-ip", "50"]);
    let old = create_token(&fleet.nodes[0].server).await;
    // Node 0 starts again with a new signing key: a fresh data directory, as when the
    // operator deletes control-ed25519.pk8 to rotate it.
    fleet.nodes[0].server.proc.kill();
    fleet.restart(0);
    let new = create_token(&fleet.nodes[0].server).await;
    assert_ne!(kid(&old), kid(&new), "the new key has a kid of its own");
    // Node 1 trusts the new key by its kid once it has read node 0's new record (at
    // its next heartbeat); until then it refuses the token without using it up.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match hello(&fleet.nodes[1].server, vec![new.clone()]).await {
            HelloReply::Ok { .. } => break,
            HelloReply::Error(e) if e.code == ErrorCode::BadToken && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("node 1 refused the new key's token: {other:?}"),
        }
    }
    // A token of the old key, minted before the rotation, still opens its tunnel
    // elsewhere: a key is trusted by its kid for five minutes after a node stopped
    // publishing it (tokens live a minute), `docs/protocols/fleet.md`.
    match hello(&fleet.nodes[1].server, vec![old]).await {
        HelloReply::Ok { tunnels } => assert_eq!(tunnels.len(), 1),
        other => panic!("a token of the rotated key was refused at once: {other:?}"),
    }
}
