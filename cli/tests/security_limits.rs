//! Server-wide limits against the real binary: anonymous tunnels per IPv6 /48 and in
//! all, tunnel records in all, X-Forwarded-For believed only from trusted proxies, and
//! ACME orders only for names an agent serves now, within each owner's budget, with
//! no renewal for names no agent serves (the ACME tests run pebble, as
//! `cli/tests/acme.rs` does).

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pebble::{self, Pebble};
use common::{HttpAgent, HttpResponse, Server, TempDir, web};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use netbore_test_support::{tls_client_config, tls_connect};
use rustls::ClientConfig;
use serde_json::{Value, json};

fn tcp() -> Value {
    json!({"protocol": "tcp"})
}

/// `POST /tunnels/create` with `body`, an optional key and an optional
/// `X-Forwarded-For` (the common helper sends no extra headers).
fn create(
    server: &Server,
    body: &Value,
    key: Option<&str>,
    forwarded: Option<&str>,
) -> HttpResponse {
    let body = body.to_string();
    let mut req = format!(
        "POST /tunnels/create HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        server.control,
        body.len()
    );
    if let Some(key) = key {
        req.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if let Some(f) = forwarded {
        req.push_str(&format!("X-Forwarded-For: {f}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let (status, headers, body) = raw(server.control, &req);
    HttpResponse {
        status,
        headers,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    }
}

/// Sends `request` on a new connection; status, lowercase headers and body (not
/// chunked: the control API and the Edge's error pages send a length).
fn raw(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP head");
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

#[test]
fn anonymous_clients_of_one_ipv6_48_share_a_limit() {
    // Loopback has one IPv6 address: the /64s of one /48 arrive through a trusted
    // proxy on 127.0.0.1, which also proves the proxy's header is believed.
    let server = Server::start_with(&[
        "--trusted-proxies",
        "127.0.0.1/32",
        "--max-tunnels-per-anonymous-ip",
        "5",
        "--max-tunnels-per-anonymous-ipv6-48",
        "2",
    ]);
    for client in ["2001:db8:1:1::1", "2001:db8:1:2::1"] {
        let r = create(&server, &tcp(), None, Some(client));
        assert_eq!(r.status, 200, "{client}: {r:?}");
    }
    // A third /64 of the same /48 is refused, each /64 under its own limit.
    let refused = create(&server, &tcp(), None, Some("2001:db8:1:3::1"));
    let message = refused.assert_error(403, "limit_reached");
    assert!(message.contains("/48"), "{message}");
    // Another /48 is not.
    let other = create(&server, &tcp(), None, Some("2001:db8:2:1::1"));
    assert_eq!(other.status, 200, "{other:?}");
}

#[test]
fn anonymous_tunnels_are_capped_server_wide_and_keys_still_work() {
    let server = Server::start_with(&[
        "--max-tunnels-per-anonymous-ip",
        "10",
        "--max-anonymous-tunnels",
        "2",
    ]);
    for _ in 0..2 {
        let r = create(&server, &tcp(), None, None);
        assert_eq!(r.status, 200, "{r:?}");
    }
    let refused = create(&server, &tcp(), None, None);
    let message = refused.assert_error(403, "limit_reached");
    assert!(
        message.contains("anonymous tunnels") && message.contains("API key"),
        "{message}"
    );
    let key = server.create_key("ops");
    let keyed = create(&server, &tcp(), Some(&key), None);
    assert_eq!(keyed.status, 200, "API keys are not anonymous: {keyed:?}");
}

#[test]
fn tunnel_records_are_capped_server_wide() {
    let server = Server::start_with(&["--max-tunnel-records", "2"]);
    let key = server.create_key("ops");
    let first = create(&server, &tcp(), Some(&key), None);
    assert_eq!(first.status, 200, "{first:?}");
    let second = create(&server, &tcp(), None, None);
    assert_eq!(second.status, 200, "{second:?}");
    // Full: nobody's records may be forgotten (both tunnels are live).
    let refused = create(&server, &tcp(), Some(&key), None);
    let message = refused.assert_error(503, "limit_reached");
    assert!(message.contains("tunnel records"), "{message}");
    assert_eq!(create(&server, &tcp(), None, None).status, 503);
    // Deleting a record makes room.
    let id = first.body["tunnel_id"].as_str().unwrap();
    let deleted = server.api("DELETE", &format!("/tunnels/{id}"), Some(&key), None);
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let again = create(&server, &tcp(), Some(&key), None);
    assert_eq!(again.status, 200, "{again:?}");
}

#[test]
fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    let spoofs = ["203.0.113.1", "203.0.113.2", "203.0.113.3"];
    // Not trusted: every spoofed address is still 127.0.0.1, one owner of two.
    let server = Server::start_with(&["--max-tunnels-per-anonymous-ip", "2"]);
    for spoof in &spoofs[..2] {
        let r = create(&server, &tcp(), None, Some(spoof));
        assert_eq!(r.status, 200, "{r:?}");
    }
    let refused = create(&server, &tcp(), None, Some(spoofs[2]));
    let message = refused.assert_error(403, "limit_reached");
    assert!(message.contains("your address"), "{message}");

    // Trusted: the header names the client, three owners.
    let proxied = Server::start_with(&[
        "--max-tunnels-per-anonymous-ip",
        "2",
        "--trusted-proxies",
        "10.0.0.0/8,127.0.0.1",
    ]);
    for spoof in spoofs {
        let r = create(&proxied, &tcp(), None, Some(spoof));
        assert_eq!(r.status, 200, "{spoof}: {r:?}");
    }
    // The rightmost untrusted hop counts: a client's own first entry does not.
    // 203.0.113.1 has one tunnel: one more, behind two proxies, then its limit, however
    // the client varies its own first entry.
    let r = create(
        &proxied,
        &tcp(),
        None,
        Some("198.51.100.7, 203.0.113.1, 10.1.1.1"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = create(&proxied, &tcp(), None, Some("198.51.100.8, 203.0.113.1"));
    r.assert_error(403, "limit_reached");
}

// ---- ACME ----

fn require_pebble() {
    assert!(
        pebble::installed(),
        "pebble is not installed; run `apt-get install pebble` (scripts/test.sh does)"
    );
}

/// A server with HTTPS certificates from `pebble`, its plain HTTP on `http_port`.
fn acme_server(pebble: &Pebble, http_port: u16, extra: &[&str]) -> Server {
    let http = format!("127.0.0.1:{http_port}");
    let ca = pebble.ca_file.to_str().unwrap().to_string();
    let mut args = vec![
        "--domain",
        "localhost",
        "--https-addr",
        "127.0.0.1:0",
        "--acme-directory",
        &pebble.directory,
        "--acme-email",
        "ops@example.com",
        "--acme-ca",
        &ca,
        "--acme-wait",
        "30",
    ];
    args.extend_from_slice(extra);
    Server::start_opts(
        TempDir::new("acme"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &http,
        true,
        &args,
    )
}

fn client(roots_pem: &[u8]) -> Arc<ClientConfig> {
    let mut config = tls_client_config(roots_pem, &[]);
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// `GET /` over TLS to `addr` with SNI and Host `sni`: the status.
async fn https_get(addr: SocketAddr, sni: &str, config: Arc<ClientConfig>) -> Result<u16, String> {
    let tls = tls_connect(addr, sni, config)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/")
        .header("host", sni)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}

/// pebble's root CA, from its management API.
async fn pebble_root(pebble: &Pebble) -> Vec<u8> {
    let listener_ca = std::fs::read(&pebble.ca_file).unwrap();
    let tls = tls_connect(pebble.management, "127.0.0.1", client(&listener_ca))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get("/roots/0")
        .header("host", "127.0.0.1")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

fn lines_with(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

fn wait_for_line(server: &Server, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while lines_with(&server.proc.stderr(), needle) == 0 {
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} within {within:?}:\n{}",
            server.proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the Edge answers `name`'s plain HTTP viewers with 502 (its tunnel is
/// known, and no agent serves it).
fn wait_offline(server: &Server, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let req = format!("GET / HTTP/1.1\r\nHost: {name}.localhost\r\nConnection: close\r\n\r\n");
        let (status, _, _) = raw(server.http, &req);
        if status == 502 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is still served ({status})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn acme_orders_only_names_an_agent_serves_now() {
    require_pebble();
    let http_port = common::free_port();
    let pebble = Pebble::start(http_port, None);
    let origin = web::start_origin().await;
    let server = acme_server(&pebble, http_port, &[]);
    let https = server.https.unwrap();
    let viewer = client(&pebble_root(&pebble).await);

    // A tunnel created through the API whose agent never comes: pending.
    let pending = server.api(
        "POST",
        "/tunnels/create",
        None,
        Some(&json!({"protocol": "http", "name": "idle"})),
    );
    assert_eq!(pending.status, 200, "{pending:?}");
    // A tunnel whose agent left: offline (its name still answers 502).
    let gone = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "gone"]);
    drop(gone);
    wait_offline(&server, "gone");

    for name in ["idle.localhost", "gone.localhost"] {
        let r = https_get(https, name, viewer.clone()).await;
        assert!(r.is_err(), "{name}: no certificate, no handshake: {r:?}");
    }
    // A served name is ordered (the test can tell an order when one happens).
    let _app = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "app"]);
    let status = https_get(https, "app.localhost", viewer.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.proc.stderr()));
    assert_eq!(status, 200);
    let log = server.proc.stderr();
    let orders: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ACME order started"))
        .collect();
    assert_eq!(orders.len(), 1, "{log}");
    assert!(orders[0].contains("app.localhost"), "{log}");
}

#[tokio::test]
async fn acme_orders_are_budgeted_per_owner() {
    require_pebble();
    let http_port = common::free_port();
    let pebble = Pebble::start(http_port, None);
    let origin = web::start_origin().await;
    let server = acme_server(
        &pebble,
        http_port,
        &["--acme-orders-per-owner-per-hour", "1"],
    );
    let https = server.https.unwrap();
    let viewer = client(&pebble_root(&pebble).await);
    let origin = origin.addr.to_string();

    // Two names of one owner (anonymous, 127.0.0.1): the second is over budget.
    let _one = HttpAgent::start(&server, &origin, &["--name", "one"]);
    let _two = HttpAgent::start(&server, &origin, &["--name", "two"]);
    let status = https_get(https, "one.localhost", viewer.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.proc.stderr()));
    assert_eq!(status, 200);
    for _ in 0..3 {
        let r = https_get(https, "two.localhost", viewer.clone()).await;
        assert!(r.is_err(), "over budget, no certificate: {r:?}");
    }
    // Another owner (an API key) has its own budget.
    let key = server.create_key("other");
    let _three = HttpAgent::start(&server, &origin, &["--name", "three", "--key", &key]);
    let status = https_get(https, "three.localhost", viewer)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.proc.stderr()));
    assert_eq!(status, 200);
    let log = server.proc.stderr();
    assert_eq!(lines_with(&log, "ACME order started"), 2, "{log}");
    assert_eq!(
        lines_with(&log, "ACME order refused"),
        1,
        "one line however many viewers ask:\n{log}"
    );
}

#[tokio::test]
async fn acme_certificates_of_names_no_agent_serves_are_not_renewed() {
    require_pebble();
    let http_port = common::free_port();
    // Certificates valid 12 s: due for renewal 8 s after they start.
    let pebble = Pebble::start(http_port, Some(Duration::from_secs(12)));
    let origin = web::start_origin().await;
    let server = acme_server(&pebble, http_port, &["--acme-renew-check", "1"]);
    let https = server.https.unwrap();
    let viewer = client(&pebble_root(&pebble).await);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "app"]);
    let status = https_get(https, "app.localhost", viewer)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.proc.stderr()));
    assert_eq!(status, 200);
    drop(agent);
    wait_offline(&server, "app");
    wait_for_line(
        &server,
        "ACME certificate not renewed",
        Duration::from_secs(30),
    );
    let log = server.proc.stderr();
    assert_eq!(
        lines_with(&log, "renewing the ACME certificate"),
        0,
        "{log}"
    );
    assert_eq!(lines_with(&log, "ACME order started"), 1, "{log}");
}
