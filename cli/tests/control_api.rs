//! The control API through the real binary: API keys made with `netbore key` and used
//! over HTTP, anonymous access, reserved names, recreate tokens (also across a
//! restart), list/show/delete, limits and the rate limit, and the one error shape.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Server, TempDir, free_port};
use serde_json::{Value, json};

fn tcp() -> Value {
    json!({"protocol": "tcp"})
}

fn http(name: Option<&str>) -> Value {
    match name {
        Some(n) => json!({"protocol": "http", "name": n}),
        None => json!({"protocol": "http"}),
    }
}

#[test]
fn keys_made_with_the_cli_authenticate_until_revoked() {
    let server = Server::start();
    let key = server.create_key("laptop");
    assert!(key.starts_with("nbk_"));

    let (code, events) = server.key(&["list"]);
    assert_eq!(code, 0);
    let keys = events[0]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["label"], "laptop");
    assert_eq!(keys[0]["revoked"], false);
    assert!(
        !events[0].to_string().contains(&key),
        "list never shows the secret"
    );
    let id = keys[0]["id"].as_str().unwrap().to_string();

    let listed = server.api("GET", "/tunnels", Some(&key), None);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body, json!({"tunnels": []}));

    // Revoked while the server runs: refused at once.
    let (code, events) = server.key(&["revoke", &id]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(events[0]["event"], "key_revoked");
    let refused = server.api("GET", "/tunnels", Some(&key), None);
    let msg = refused.assert_error(401, "unauthorized");
    assert!(msg.contains("revoked"), "{msg}");
    let (_, events) = server.key(&["list"]);
    assert_eq!(events[0]["keys"][0]["revoked"], true);

    // Unknown ids are an error a person can act on.
    let (code, events) = server.key(&["revoke", "k_nope"]);
    assert_eq!(code, 1);
    assert_eq!(events[0]["event"], "error");
}

#[test]
fn unknown_or_malformed_keys_are_refused() {
    let server = Server::start();
    server
        .api("POST", "/tunnels/create", Some("nbk_0_00"), Some(&tcp()))
        .assert_error(401, "unauthorized");
    let resp = common::http_request(server.control, "GET", "/names", None, None);
    resp.assert_error(401, "unauthorized");
    // A bearer scheme is required.
    let mut s = std::net::TcpStream::connect(server.control).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /tunnels HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YTpi\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(out.contains("Bearer KEY"), "{out}");
}

#[test]
fn anonymous_agents_need_allow_anonymous() {
    let server = Server::start_opts(
        TempDir::new("strict"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        "127.0.0.1:0",
        false,
        &[],
    );
    let msg = server
        .api("POST", "/tunnels/create", None, Some(&tcp()))
        .assert_error(401, "unauthorized");
    assert!(msg.contains("anonymous"), "{msg}");
    let key = server.create_key("ci");
    let created = server.api("POST", "/tunnels/create", Some(&key), Some(&tcp()));
    assert_eq!(created.status, 200, "{created:?}");
}

#[test]
fn tunnels_are_listed_shown_and_deleted_by_their_key_only() {
    let server = Server::start();
    let a = server.create_key("a");
    let b = server.create_key("b");
    let created = server.api(
        "POST",
        "/tunnels/create",
        Some(&a),
        Some(&http(Some("Docs"))),
    );
    assert_eq!(created.status, 200, "{created:?}");
    let id = created.body["tunnel_id"].as_str().unwrap().to_string();
    assert_eq!(created.body["name"], "docs");
    let url = created.body["public_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://docs."), "{url}");
    assert!(created.body["recreate_token"].as_str().unwrap().len() >= 64);

    let listed = server.api("GET", "/tunnels", Some(&a), None);
    assert_eq!(listed.status, 200);
    let t = &listed.body["tunnels"][0];
    assert_eq!(t["tunnel_id"], id.as_str());
    assert_eq!(t["protocol"], "http");
    assert_eq!(t["name"], "docs");
    assert_eq!(t["public_url"], url.as_str());
    assert_eq!(t["status"], "pending", "no agent has said hello yet");
    assert!(t["created_at"].as_u64().unwrap() > 1_600_000_000);
    assert!(t.get("agent_addr").is_none());

    let shown = server.api("GET", &format!("/tunnels/{id}"), Some(&a), None);
    assert_eq!(shown.status, 200);
    assert_eq!(&shown.body, t);

    // Another key sees nothing and deletes nothing.
    server
        .api("GET", &format!("/tunnels/{id}"), Some(&b), None)
        .assert_error(404, "not_found");
    server
        .api("DELETE", &format!("/tunnels/{id}"), Some(&b), None)
        .assert_error(404, "not_found");
    assert_eq!(
        server.api("GET", "/tunnels", Some(&b), None).body["tunnels"],
        json!([])
    );
    // Anonymous callers list nothing: they hold no key.
    let msg = server
        .api("GET", "/tunnels", None, None)
        .assert_error(401, "unauthorized");
    assert!(msg.contains("API key"), "{msg}");

    let deleted = server.api("DELETE", &format!("/tunnels/{id}"), Some(&a), None);
    assert_eq!(deleted.status, 204);
    server
        .api("GET", &format!("/tunnels/{id}"), Some(&a), None)
        .assert_error(404, "not_found");
    // Its recreate token stops working.
    let token = created.body["recreate_token"].as_str().unwrap();
    let msg = server
        .api(
            "POST",
            "/tunnels/create",
            Some(&a),
            Some(&json!({"protocol": "http", "recreate_token": token})),
        )
        .assert_error(404, "not_found");
    assert!(msg.contains("create a new tunnel"), "{msg}");
    // And its name is free again.
    let again = server.api(
        "POST",
        "/tunnels/create",
        Some(&b),
        Some(&http(Some("docs"))),
    );
    assert_eq!(again.status, 200, "{again:?}");
}

#[test]
fn names_are_validated_and_random_by_default() {
    let server = Server::start();
    let random = server.api("POST", "/tunnels/create", None, Some(&http(None)));
    assert_eq!(random.status, 200, "{random:?}");
    let name = random.body["name"].as_str().unwrap();
    assert_eq!(name.len(), 8);
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );

    for bad in ["-x", "x-", "a.b", "under_score", "", &"a".repeat(64)] {
        server
            .api("POST", "/tunnels/create", None, Some(&http(Some(bad))))
            .assert_error(400, "bad_request");
    }
    server
        .api(
            "POST",
            "/tunnels/create",
            None,
            Some(&json!({"protocol": "tcp", "name": "web"})),
        )
        .assert_error(400, "bad_request");
    server
        .api(
            "POST",
            "/tunnels/create",
            None,
            Some(&json!({"protocol": "http", "remote_port": 8080})),
        )
        .assert_error(400, "bad_request");
    server
        .api(
            "POST",
            "/tunnels/create",
            None,
            Some(&json!({"protocol": "udp"})),
        )
        .assert_error(400, "bad_request");
    server
        .api("POST", "/tunnels/create", None, Some(&json!([1, 2])))
        .assert_error(400, "bad_request");
}

#[test]
fn reserved_names_are_sticky_and_per_key() {
    let server = Server::start();
    let a = server.create_key("a");
    let b = server.create_key("b");

    let reserved = server.api("POST", "/names", Some(&a), Some(&json!({"name": "Shop"})));
    assert_eq!(reserved.status, 201, "{reserved:?}");
    assert_eq!(reserved.body["name"], "shop");
    let again = server.api("POST", "/names", Some(&a), Some(&json!({"name": "shop"})));
    assert_eq!(again.status, 200);
    let listed = server.api("GET", "/names", Some(&a), None);
    assert_eq!(listed.body["names"][0]["name"], "shop");
    assert_eq!(listed.body["names"].as_array().unwrap().len(), 1);

    // Nobody else gets it, though no tunnel uses it.
    server
        .api("POST", "/names", Some(&b), Some(&json!({"name": "shop"})))
        .assert_error(409, "name_taken");
    server
        .api(
            "POST",
            "/tunnels/create",
            Some(&b),
            Some(&http(Some("shop"))),
        )
        .assert_error(409, "name_taken");
    server
        .api("POST", "/tunnels/create", None, Some(&http(Some("shop"))))
        .assert_error(409, "name_taken");
    server
        .api("POST", "/names", None, Some(&json!({"name": "mine"})))
        .assert_error(401, "unauthorized");
    server
        .api(
            "POST",
            "/names",
            Some(&a),
            Some(&json!({"name": "no_dots."})),
        )
        .assert_error(400, "bad_request");

    // Its holder does.
    let own = server.api(
        "POST",
        "/tunnels/create",
        Some(&a),
        Some(&http(Some("shop"))),
    );
    assert_eq!(own.status, 200, "{own:?}");

    // Release: only by its holder.
    server
        .api("DELETE", "/names/shop", Some(&b), None)
        .assert_error(404, "not_found");
    assert_eq!(
        server.api("DELETE", "/names/shop", Some(&a), None).status,
        204
    );
    assert_eq!(
        server.api("GET", "/names", Some(&a), None).body["names"],
        json!([])
    );
}

#[test]
fn a_name_held_by_a_live_tunnel_is_taken() {
    let server = Server::start();
    let b = server.create_key("b");
    let live = server.api("POST", "/tunnels/create", None, Some(&http(Some("live1"))));
    assert_eq!(live.status, 200, "{live:?}");
    // The Edge holds the name for the pending tunnel.
    server
        .api(
            "POST",
            "/tunnels/create",
            Some(&b),
            Some(&http(Some("live1"))),
        )
        .assert_error(409, "name_taken");
    // And reserving it would strand that tunnel.
    server
        .api("POST", "/names", Some(&b), Some(&json!({"name": "live1"})))
        .assert_error(409, "name_taken");
}

#[test]
fn recreate_token_reclaims_the_same_tunnel() {
    let server = Server::start();
    let key = server.create_key("k");
    let first = server.api("POST", "/tunnels/create", Some(&key), Some(&tcp()));
    assert_eq!(first.status, 200, "{first:?}");
    let token = first.body["recreate_token"].as_str().unwrap();
    let body = json!({"protocol": "tcp", "recreate_token": token});
    let second = server.api("POST", "/tunnels/create", Some(&key), Some(&body));
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.body["tunnel_id"], first.body["tunnel_id"]);
    assert_eq!(second.body["public_url"], first.body["public_url"]);
    assert!(
        second.body.get("recreate_token").is_none(),
        "returned once only"
    );
    assert_ne!(
        second.body["ephemeral_token"],
        first.body["ephemeral_token"]
    );

    // A key's tunnel needs that key too.
    server
        .api("POST", "/tunnels/create", None, Some(&body))
        .assert_error(401, "unauthorized");
    // The token fixes protocol and port.
    server
        .api(
            "POST",
            "/tunnels/create",
            Some(&key),
            Some(&json!({"protocol": "http", "recreate_token": token})),
        )
        .assert_error(409, "recreate_mismatch");
    server
        .api(
            "POST",
            "/tunnels/create",
            Some(&key),
            Some(&json!({"protocol": "tcp", "recreate_token": "nbr_unknown"})),
        )
        .assert_error(404, "not_found");
}

#[test]
fn recreate_tokens_survive_a_restart() {
    let http_port = free_port().to_string();
    let http_addr = format!("127.0.0.1:{http_port}");
    let server = Server::start_opts(
        TempDir::new("restart"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &http_addr,
        true,
        &[],
    );
    let key = server.create_key("k");
    let anon = server.api("POST", "/tunnels/create", None, Some(&tcp()));
    let named = server.api(
        "POST",
        "/tunnels/create",
        Some(&key),
        Some(&http(Some("kept"))),
    );
    let reserved = server.api(
        "POST",
        "/names",
        Some(&key),
        Some(&json!({"name": "later"})),
    );
    assert_eq!(anon.status, 200, "{anon:?}");
    assert_eq!(named.status, 200, "{named:?}");
    assert_eq!(reserved.status, 201, "{reserved:?}");

    let data_dir = server.stop();
    let server = Server::start_opts(
        data_dir,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &http_addr,
        true,
        &[],
    );

    for (first, key) in [(&anon, None), (&named, Some(key.as_str()))] {
        let body = json!({
            "protocol": first.body["protocol"],
            "recreate_token": first.body["recreate_token"],
        });
        let again = server.api("POST", "/tunnels/create", key, Some(&body));
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(again.body["tunnel_id"], first.body["tunnel_id"]);
        assert_eq!(again.body["public_url"], first.body["public_url"]);
    }
    // The key and its reservation survived too.
    let names = server.api("GET", "/names", Some(&key), None);
    assert_eq!(names.body["names"][0]["name"], "later");
    server
        .api("POST", "/tunnels/create", None, Some(&http(Some("later"))))
        .assert_error(409, "name_taken");
}

#[test]
fn live_tunnels_per_key_are_limited() {
    let server = Server::start_with(&["--max-tunnels-per-key", "2"]);
    let key = server.create_key("k");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = server.api("POST", "/tunnels/create", Some(&key), Some(&tcp()));
        assert_eq!(r.status, 200, "{r:?}");
        ids.push(r.body["tunnel_id"].as_str().unwrap().to_string());
    }
    let msg = server
        .api("POST", "/tunnels/create", Some(&key), Some(&tcp()))
        .assert_error(403, "limit_reached");
    assert!(msg.contains("delete one"), "{msg}");
    // Another key has its own allowance; deleting makes room.
    let other = server.create_key("other");
    assert_eq!(
        server
            .api("POST", "/tunnels/create", Some(&other), Some(&tcp()))
            .status,
        200
    );
    assert_eq!(
        server
            .api("DELETE", &format!("/tunnels/{}", ids[0]), Some(&key), None)
            .status,
        204
    );
    assert_eq!(
        server
            .api("POST", "/tunnels/create", Some(&key), Some(&tcp()))
            .status,
        200
    );
}

#[test]
fn live_tunnels_per_anonymous_ip_are_limited() {
    let server = Server::start_with(&["--max-tunnels-per-anonymous-ip", "2"]);
    for _ in 0..2 {
        assert_eq!(
            server
                .api("POST", "/tunnels/create", None, Some(&tcp()))
                .status,
            200
        );
    }
    server
        .api("POST", "/tunnels/create", None, Some(&http(None)))
        .assert_error(403, "limit_reached");
    // A key is not bound by the anonymous allowance.
    let key = server.create_key("k");
    assert_eq!(
        server
            .api("POST", "/tunnels/create", Some(&key), Some(&tcp()))
            .status,
        200
    );
}

#[test]
fn api_requests_are_rate_limited_per_ip() {
    let server = Server::start_with(&["--api-rate", "1", "--api-burst", "3"]);
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let r = server.api("GET", "/openapi.json", None, None);
        statuses.push(r.status);
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert!(
        statuses.len() >= 4,
        "the burst of 3 passes first: {statuses:?}"
    );
    limited.assert_error(429, "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
}

#[test]
fn unknown_endpoints_and_methods_answer_in_the_error_shape() {
    let server = Server::start();
    server
        .api("GET", "/nope", None, None)
        .assert_error(404, "not_found");
    let r = server.api("PUT", "/tunnels", None, None);
    r.assert_error(405, "method_not_allowed");
    let doc = server.api("GET", "/openapi.json", None, None);
    assert_eq!(doc.status, 200);
    assert!(doc.body["paths"]["/tunnels/create"].is_object());
}

/// The id of the key labelled `label`, from `netbore key list`.
fn key_id(server: &Server, label: &str) -> String {
    let (_, events) = server.key(&["list"]);
    events[0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == label)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How soon after `netbore key revoke` returns the running server has taken the key's
/// tunnels offline.
const REVOCATION_TAKES: Duration = Duration::from_secs(1);

#[test]
fn revoking_a_key_takes_its_live_tunnels_offline_and_stops_their_agents() {
    let server = Server::start();
    let key = server.create_key("laptop");
    let other = server.create_key("desktop");
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let local = origin.local_addr().unwrap().to_string();
    let mut agent = common::Agent::start(&server, &local, &["--key", &key]);
    let mut bystander = common::Agent::start(&server, &local, &["--key", &other]);
    let public = agent.public;

    let id = key_id(&server, "laptop");
    let (code, _) = server.key(&["revoke", &id]);
    assert_eq!(code, 0);
    let revoked = Instant::now();

    // The CLI wrote to the store from another process; the server sees the store
    // change at once and tells the agent why.
    let error = agent.proc.expect_event("error", REVOCATION_TAKES);
    assert!(revoked.elapsed() < REVOCATION_TAKES);
    assert_eq!(error["code"], "unauthorized", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("revoked"),
        "{error}"
    );
    assert_eq!(agent.proc.wait_exit(Duration::from_secs(5)), Some(1));
    assert!(
        std::net::TcpStream::connect(public).is_err(),
        "the revoked key's public port is closed"
    );
    // Another key's tunnel stays up.
    assert!(std::net::TcpStream::connect(bystander.public).is_ok());

    // A second revocation right after the first is as quick: the server does not
    // wait out an interval that began with the first one.
    let (code, _) = server.key(&["revoke", &key_id(&server, "desktop")]);
    assert_eq!(code, 0);
    let revoked = Instant::now();
    let error = bystander.proc.expect_event("error", REVOCATION_TAKES);
    assert!(revoked.elapsed() < REVOCATION_TAKES);
    assert_eq!(error["code"], "unauthorized", "{error}");
    assert_eq!(bystander.proc.wait_exit(Duration::from_secs(5)), Some(1));
}

/// One create of the race below: when it was sent, and what it got.
struct Attempt {
    sent: Instant,
    status: u16,
    public: Option<SocketAddr>,
}

#[test]
fn creates_racing_a_revocation_leave_no_tunnel_of_the_key() {
    const THREADS: usize = 4;
    let server = Server::start_with(&[
        "--max-tunnels-per-key",
        "100000",
        "--api-rate",
        "100000",
        "--api-burst",
        "100000",
    ]);
    let key = server.create_key("racer");
    let id = key_id(&server, "racer");

    // Each thread creates tunnels back to back until it is refused.
    let (attempts, results) = mpsc::channel();
    let racers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (control, key, attempts) = (server.control, key.clone(), attempts.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let r = common::http_request(
                        control,
                        "POST",
                        "/tunnels/create",
                        Some(&key),
                        Some(&tcp()),
                    );
                    let refused = r.status != 200;
                    if refused {
                        r.assert_error(401, "unauthorized");
                    }
                    let public = (!refused).then(|| common::public_addr(&r.body));
                    let attempt = Attempt {
                        sent,
                        status: r.status,
                        public,
                    };
                    if attempts.send(attempt).is_err() || refused {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(attempts);

    // Revoke while every thread is busy creating.
    let mut seen: Vec<Attempt> = Vec::new();
    while seen.iter().filter(|a| a.status == 200).count() < 8 * THREADS {
        seen.push(results.recv().expect("the racers create tunnels"));
    }
    let (code, events) = server.key(&["revoke", &id]);
    assert_eq!(code, 0, "{events:?}");
    let revoked = Instant::now();
    for racer in racers {
        racer.join().unwrap();
    }
    seen.extend(results.iter());

    // Every thread was refused in the end, and any create sent after the revocation
    // returned was refused.
    assert_eq!(seen.iter().filter(|a| a.status == 401).count(), THREADS);
    for a in seen.iter().filter(|a| a.sent >= revoked) {
        assert_eq!(a.status, 401, "a create sent after the revocation");
    }
    // Every tunnel created, also by a create that passed its key check just before
    // the revocation committed, goes offline: its public port closes.
    let mut open: Vec<SocketAddr> = seen.iter().filter_map(|a| a.public).collect();
    let created = open.len();
    loop {
        open.retain(|public| std::net::TcpStream::connect(public).is_ok());
        if open.is_empty() {
            break;
        }
        assert!(
            revoked.elapsed() < REVOCATION_TAKES,
            "{} of {created} tunnels of the revoked key still listen: {open:?}",
            open.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Within a second, not when their unclaimed placements lapse.
    assert!(revoked.elapsed() < REVOCATION_TAKES);
}
