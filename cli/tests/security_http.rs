//! Attacks on the HTTP semantics of the Edge, against the real `netbore server` and
//! `netbore http` binaries: requests that name two hosts, spellings of a host, forged
//! forwarding headers, an origin forging the Edge's error page, and an origin flooding
//! interim responses. Requests are written byte for byte on raw TCP, so nothing a
//! client library would tidy up is lost.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{HttpAgent, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The request heads an origin received, as text.
type Seen = Arc<Mutex<Vec<String>>>;

/// An origin that records every request head and answers by path:
/// `/forge` with the 502 the agent used to send for an unreachable origin,
/// `/continue` with 1000 `100 Continue` before its answer, `/continue-forever` with
/// `100 Continue`s until the connection closes, anything else with the request head it
/// received as its body.
async fn recording_origin() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    record.lock().unwrap().push(head.clone());
                    let path = head.split(' ').nth(1).unwrap_or("/");
                    if path == "/continue-forever" {
                        let flood = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(64);
                        while socket.write_all(&flood).await.is_ok() {}
                        return;
                    }
                    let answer = match path {
                        "/forge" => b"HTTP/1.1 502 Bad Gateway\r\nx-netbore-error: origin_unreachable\r\nx-netbore-message: forged by the origin\r\nx-netbore-client-ip: 6.6.6.6\r\ncontent-length: 11\r\n\r\norigin page".to_vec(),
                        "/continue" => [
                            b"HTTP/1.1 100 Continue\r\n\r\n".repeat(1000),
                            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate".to_vec(),
                        ]
                        .concat(),
                        _ => format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{head}",
                            head.len()
                        )
                        .into_bytes(),
                    };
                    if socket.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A response as the viewer got it.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Writes `request` as it is to `addr` and reads the answer until the Edge closes the
/// connection (each request says `Connection: close`). Fails after 15 s: no request may
/// hang.
async fn raw(addr: SocketAddr, request: &str) -> Raw {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), socket.read_to_end(&mut out))
        .await
        .expect("the Edge answers within 15 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Raw {
        status,
        headers,
        body: body.to_string(),
    }
}

/// The values of header `name` in a request head the origin received.
fn values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// A server on `--domain localhost` and an agent for tunnel `app` in front of a
/// recording origin; the tunnel's host (`app.localhost:PORT`).
async fn tunnel() -> (Server, HttpAgent, Seen, String) {
    let (origin, seen) = recording_origin().await;
    let server = Server::start_with(&["--domain", "localhost"]);
    let agent = HttpAgent::start(&server, &origin.to_string(), &["--name", "app"]);
    let host = agent.host.clone();
    (server, agent, seen, host)
}

#[tokio::test]
async fn duplicate_host_headers_are_refused() {
    let (server, _agent, seen, host) = tunnel().await;
    let port = server.http.port();
    for second in [host.clone(), format!("other.localhost:{port}")] {
        let r = raw(
            server.http,
            &format!(
                "GET /dup HTTP/1.1\r\nHost: {host}\r\nHost: {second}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(r.header("x-netbore-error"), Some("ambiguous_host"), "{r:?}");
        assert!(r.body.contains("more than one Host"), "{}", r.body);
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "a request reached the origin"
    );
}

#[tokio::test]
async fn a_host_differing_from_the_absolute_target_is_refused() {
    let (server, _agent, seen, host) = tunnel().await;
    let port = server.http.port();
    let other = format!("other.localhost:{port}");
    // Either way round: routed by the target, or by the Host, the request names two.
    for (target, header) in [(&host, &other), (&other, &host)] {
        let r = raw(
            server.http,
            &format!(
                "GET http://{target}/abs HTTP/1.1\r\nHost: {header}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(r.status, 400, "target {target}, Host {header}: {r:?}");
        assert_eq!(r.header("x-netbore-error"), Some("ambiguous_host"));
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "a request reached the origin"
    );
    // The same host written two ways is one host.
    let r = raw(
        server.http,
        &format!("GET http://{host}/abs HTTP/1.1\r\nHost: APP.localhost.:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn every_spelling_of_the_host_routes_and_the_origin_sees_one_canonical_host() {
    let (server, _agent, seen, host) = tunnel().await;
    let port = server.http.port();
    let cases = [
        (format!("APP.LocalHost.:{port}"), host.clone()),
        (format!("app.localhost.:{port}"), host.clone()),
        ("App.Localhost".to_string(), "app.localhost".to_string()),
        ("app.localhost.".to_string(), "app.localhost".to_string()),
    ];
    for (sent, routed) in &cases {
        let r = raw(
            server.http,
            &format!("GET /spelling HTTP/1.1\r\nHost: {sent}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, 200, "Host {sent}: {r:?}");
        let head = seen
            .lock()
            .unwrap()
            .pop()
            .expect("the origin got the request");
        assert_eq!(
            values(&head, "host"),
            [routed.as_str()],
            "Host {sent}: {head}"
        );
        assert_eq!(
            values(&head, "x-forwarded-host"),
            [routed.as_str()],
            "{head}"
        );
    }
    // An absolute-form target without a Host header: the origin still gets one.
    let r = raw(
        server.http,
        &format!("GET http://App.LOCALHOST:{port}/abs HTTP/1.0\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let head = seen.lock().unwrap().pop().unwrap();
    assert!(
        head.starts_with("GET /abs HTTP/1.1\r\n"),
        "origin form: {head}"
    );
    assert_eq!(values(&head, "host"), [host.as_str()], "{head}");
}

#[tokio::test]
async fn viewer_forwarded_and_real_ip_headers_do_not_reach_the_origin() {
    let (server, _agent, seen, host) = tunnel().await;
    let r = raw(
        server.http,
        &format!(
            "GET /fwd HTTP/1.1\r\nHost: {host}\r\nForwarded: for=6.6.6.6;host=evil.example;proto=https\r\n\
             X-Real-IP: 6.6.6.6\r\nx-real-ip: 7.7.7.7\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let head = seen.lock().unwrap().pop().unwrap();
    assert!(values(&head, "forwarded").is_empty(), "{head}");
    assert_eq!(values(&head, "x-real-ip"), ["127.0.0.1"], "{head}");
    assert!(
        !head.contains("6.6.6.6") && !head.contains("7.7.7.7"),
        "{head}"
    );
}

#[tokio::test]
async fn an_origin_cannot_forge_the_edge_s_error_page_or_headers() {
    let (server, _agent, seen, host) = tunnel().await;
    // Bodiless (the Edge's own HTTP/1.1 client) and with a body (hyper's).
    for (method, extra) in [("GET", ""), ("POST", "Content-Length: 3\r\n\r\nabc")] {
        let head_end = if extra.is_empty() { "\r\n" } else { "" };
        let r = raw(
            server.http,
            &format!(
                "{method} /forge HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n{extra}{head_end}"
            ),
        )
        .await;
        assert_eq!(r.status, 502, "{method}: {r:?}");
        assert_eq!(
            r.body, "origin page",
            "{method}: the origin's own answer passes"
        );
        assert!(
            r.headers
                .iter()
                .all(|(n, _)| !n.to_ascii_lowercase().starts_with("x-netbore-")),
            "{method}: an origin's x-netbore-* header reached the viewer: {r:?}"
        );
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_origin_flooding_interim_responses_gets_a_502_not_a_hang() {
    let (server, _agent, _seen, host) = tunnel().await;
    let started = std::time::Instant::now();
    let r = raw(
        server.http,
        &format!("GET /continue HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.header("x-netbore-error"), Some("upstream_broken"));
    assert!(r.body.contains("interim"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The connection that said too much is not reused: the next request is answered.
    let r = raw(
        server.http,
        &format!("GET /after HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn an_origin_flooding_interim_responses_to_a_request_with_a_body_gets_a_502() {
    let (server, _agent, _seen, host) = tunnel().await;
    // A body sends the request over hyper's client, not the lean one. Endless interim
    // responses, and a final one only after 1000 of them: both are cut off at the cap.
    for path in ["/continue-forever", "/continue"] {
        let started = std::time::Instant::now();
        let r = raw(
            server.http,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
            ),
        )
        .await;
        assert_eq!(r.status, 502, "{path}: {r:?}");
        assert_eq!(
            r.header("x-netbore-error"),
            Some("upstream_broken"),
            "{path}: {r:?}"
        );
        assert!(r.body.contains("interim"), "{path}: {}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: answered after {:?}",
            started.elapsed()
        );
    }
    // The connection that said too much is not reused: the next request is answered.
    let r = raw(
        server.http,
        &format!(
            "POST /after HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn an_unreachable_origin_still_gets_the_edge_s_page_on_both_clients() {
    let server = Server::start_with(&["--domain", "localhost"]);
    let closed = common::free_port();
    let agent = HttpAgent::start(&server, &closed.to_string(), &["--name", "gone"]);
    let host = &agent.host;
    for (method, extra) in [("GET", "\r\n"), ("POST", "Content-Length: 3\r\n\r\nabc")] {
        let r = raw(
            server.http,
            &format!("{method} / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}"),
        )
        .await;
        assert_eq!(r.status, 502, "{method}: {r:?}");
        assert_eq!(
            r.header("x-netbore-error"),
            Some("origin_unreachable"),
            "{method}: {r:?}"
        );
        assert!(
            r.body.contains(&format!("127.0.0.1:{closed}")),
            "{method}: {}",
            r.body
        );
    }
}
