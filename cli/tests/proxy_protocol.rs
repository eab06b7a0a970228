//! PROXY protocol v2 at the Edge (`--proxy-protocol`) against the real binary: a
//! trusted proxy's header names the viewer of HTTP, HTTPS and TCP tunnels (forwarding
//! headers, the agent's stream header, per-address caps), an untrusted peer's header
//! is just bytes, and a trusted peer without a valid header is closed within the
//! deadline. Headers are built here byte by byte from HAProxy's specification, not
//! by the Edge's own code.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{HttpAgent, Proc, Server, web};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use netbore_test_support::{read_until_closed, tls_client_config};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The address the balancer relays for in most tests (TEST-NET-3).
const CLIENT: &str = "203.0.113.7:51000";

/// A server on loopback trusting 127.0.0.1 as a proxy, with `--proxy-protocol`.
fn proxied_server(extra: &[&str]) -> Server {
    let mut args = vec![
        "--domain",
        "localhost",
        "--trusted-proxies",
        "127.0.0.1/32",
        "--proxy-protocol",
    ];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// A version 2 `PROXY` header for TCP from `src` to `dst`, followed by `tlvs`.
fn v2(src: SocketAddr, dst: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    let mut addresses = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11); // TCP over IPv4
            [s.ip().octets(), d.ip().octets()].concat()
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.push(0x21); // TCP over IPv6
            [s.ip().octets(), d.ip().octets()].concat()
        }
        _ => panic!("one family"),
    };
    addresses.extend_from_slice(&src.port().to_be_bytes());
    addresses.extend_from_slice(&dst.port().to_be_bytes());
    addresses.extend_from_slice(tlvs);
    h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    h.extend_from_slice(&addresses);
    h
}

/// A version 2 `LOCAL` header (a balancer's health check).
fn v2_local() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    h
}

/// A connection to `to` from `from` (any 127.0.0.0/8 address on Linux loopback).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// A connection from the trusted proxy (127.0.0.1) to `to` that has sent `header`.
async fn through_proxy(to: SocketAddr, header: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(to).await.unwrap();
    s.write_all(header).await.unwrap();
    s
}

/// A TCP origin echoing every connection's bytes back.
async fn echo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A `netbore tcp LOCAL` agent and its public address on loopback (the server's
/// domain is `localhost`, which `common::Agent` does not parse).
fn tcp_agent(server: &Server, local: &str) -> (Proc, SocketAddr) {
    let url = server.url();
    let proc = Proc::spawn(&["tcp", local, "--server", &url]);
    let online = proc.expect_event("online", Duration::from_secs(20));
    let url = online["public_url"].as_str().unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    (proc, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Waits (20 s at most) for a line of `proc`'s log containing `needle`.
fn wait_for_log(proc: &Proc, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proc.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_trusted_proxys_header_names_the_viewer_of_an_http_tunnel() {
    let origin = web::start_origin().await;
    let server = proxied_server(&[]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);

    let s = through_proxy(server.http, &v2(CLIENT.parse().unwrap(), server.http, &[])).await;
    let spoof = [("x-forwarded-for", "198.51.100.9")];
    let r = web::request_on(s, "GET", &agent.host, "/headers", &spoof, Bytes::new()).await;
    let h = r.json();
    assert_eq!(h["x-forwarded-for"], "198.51.100.9, 203.0.113.7", "{h}");
    assert_eq!(h["x-netbore-client-ip"], "203.0.113.7", "{h}");
    assert_eq!(h["x-real-ip"], "203.0.113.7", "{h}");

    // IPv6, with TLVs after the addresses (an authority, an AWS endpoint id).
    let mut tlvs = vec![0x02, 0x00, 0x0f];
    tlvs.extend_from_slice(b"app.example.com");
    tlvs.extend_from_slice(&[0xea, 0x00, 0x05, 0x01, b'v', b'p', b'c', b'e']);
    let header = v2(
        "[2001:db8::7]:443".parse().unwrap(),
        "[2001:db8::1]:80".parse().unwrap(),
        &tlvs,
    );
    let s = through_proxy(server.http, &header).await;
    let r = web::request_on(s, "GET", &agent.host, "/headers", &[], Bytes::new()).await;
    assert_eq!(r.json()["x-netbore-client-ip"], "2001:db8::7");

    // A health check (LOCAL) is the proxy itself.
    let s = through_proxy(server.http, &v2_local()).await;
    let r = web::request_on(s, "GET", &agent.host, "/headers", &[], Bytes::new()).await;
    assert_eq!(r.json()["x-netbore-client-ip"], "127.0.0.1");
}

#[tokio::test]
async fn the_header_comes_before_tls_on_the_https_port() {
    let origin = web::start_origin().await;
    let server = proxied_server(&["--https-addr", "127.0.0.1:0"]);
    let https = server.https.unwrap();
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let ca = std::fs::read(server.listening["https_ca"].as_str().unwrap()).unwrap();
    let config = std::sync::Arc::new(tls_client_config(&ca, &[b"http/1.1"]));
    let sni = agent.host.split(':').next().unwrap().to_string();

    let s = through_proxy(https, &v2(CLIENT.parse().unwrap(), https, &[])).await;
    let name = ServerName::try_from(sni).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, s)
        .await
        .unwrap();
    let r = web::request_on(tls, "GET", &agent.host, "/headers", &[], Bytes::new()).await;
    let h = r.json();
    assert_eq!(h["x-netbore-client-ip"], "203.0.113.7", "{h}");
    assert_eq!(h["x-forwarded-proto"], "https", "{h}");
}

#[tokio::test]
async fn a_tcp_tunnel_gets_the_bytes_after_the_header_and_the_agent_its_viewer() {
    let server = proxied_server(&[]);
    let (_echo, echo) = tcp_agent(&server, &echo_origin().await.to_string());
    // The header and the viewer's first bytes in one write: the Edge must not take
    // a byte past the header.
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut first = v2(CLIENT.parse().unwrap(), echo, &[]);
    first.extend_from_slice(&payload[..1000]);
    let mut s = through_proxy(echo, &first).await;
    s.write_all(&payload[1000..]).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut back))
        .await
        .expect("the echo came back")
        .unwrap();
    assert!(back == payload, "the bytes arrived changed");

    // The agent's stream header carries the viewer: an agent whose origin is gone
    // names it in its warning.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = gone.local_addr().unwrap().to_string();
    drop(gone);
    let (agent, public) = tcp_agent(&server, &dead);
    let mut s = through_proxy(public, &v2(CLIENT.parse().unwrap(), public, &[])).await;
    wait_for_log(&agent, &format!("(viewer {CLIENT})"));
    read_until_closed(&mut s, Duration::from_secs(20)).await;
}

/// An HTTP/1.1 connection through the proxy for `client`, kept open (with its
/// driver) after a first `GET /` that must succeed.
async fn held_connection(
    server: &Server,
    host: &str,
    client: &str,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let s = through_proxy(server.http, &v2(client.parse().unwrap(), server.http, &[])).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get("/")
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200, "{client}");
    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
    sender
}

#[tokio::test]
async fn the_per_address_cap_counts_the_header_address_not_the_proxy() {
    let origin = web::start_origin().await;
    let server = proxied_server(&["--max-viewer-connections-per-ip", "2"]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let a = "203.0.113.7:1000";
    let _one = held_connection(&server, &agent.host, a).await;
    let _two = held_connection(&server, &agent.host, a).await;
    // A third for the same client is refused with the plain-HTTP 503.
    let header = v2("203.0.113.7:1002".parse().unwrap(), server.http, &[]);
    let mut third = through_proxy(server.http, &header).await;
    let answer = read_until_closed(&mut third, Duration::from_secs(20)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("too_many_connections"),
        "{answer:?}"
    );
    // Another client through the same proxy still gets in, twice: the proxy's own
    // address holds none of its clients' slots.
    let _b1 = held_connection(&server, &agent.host, "198.51.100.4:1000").await;
    let _b2 = held_connection(&server, &agent.host, "198.51.100.4:1001").await;
}

#[tokio::test]
async fn an_untrusted_peers_header_is_not_believed() {
    let origin = web::start_origin().await;
    let server = proxied_server(&[]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let header = v2(CLIENT.parse().unwrap(), server.http, &[]);

    // From 127.0.0.2 the header is the start of a malformed HTTP request.
    let mut s = connect_from("127.0.0.2", server.http).await;
    let request = format!(
        "GET /headers HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        agent.host
    );
    s.write_all(&[header.as_slice(), request.as_bytes()].concat())
        .await
        .unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(20)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
    assert!(!answer.contains("203.0.113.7"), "{answer:?}");

    // Its plain requests are its own address's.
    let s = connect_from("127.0.0.2", server.http).await;
    let r = web::request_on(s, "GET", &agent.host, "/headers", &[], Bytes::new()).await;
    assert_eq!(r.json()["x-netbore-client-ip"], "127.0.0.2");

    // On a TCP tunnel the header reaches the origin as the viewer sent it.
    let (_echo, echo) = tcp_agent(&server, &echo_origin().await.to_string());
    let mut s = connect_from("127.0.0.2", echo).await;
    let sent = [header.as_slice(), b"after"].concat();
    s.write_all(&sent).await.unwrap();
    let mut back = vec![0u8; sent.len()];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut back))
        .await
        .expect("the echo came back")
        .unwrap();
    assert_eq!(back, sent);
}

#[tokio::test]
async fn a_trusted_peer_without_a_valid_header_is_closed() {
    let origin = web::start_origin().await;
    // A 1 s header deadline, well inside the HTTP first-request deadline.
    let server = proxied_server(&[
        "--tls-handshake-timeout",
        "1",
        "--viewer-header-timeout",
        "60",
    ]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let (_echo, echo) = tcp_agent(&server, &echo_origin().await.to_string());

    // Silent, on HTTP and on a TCP tunnel (which has no deadline of its own).
    for to in [server.http, echo] {
        let started = Instant::now();
        let mut s = TcpStream::connect(to).await.unwrap();
        let answer = read_until_closed(&mut s, Duration::from_secs(15)).await;
        assert!(answer.is_empty(), "{to}: {answer:?}");
        assert!(started.elapsed() >= Duration::from_millis(900), "{to}");
    }

    // Malformed: a request with no header, a version 1 header, a bad version, a length
    // past the bound, a header cut short. Each is closed without a byte of answer.
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", agent.host);
    let good = v2(CLIENT.parse().unwrap(), server.http, &[]);
    let mut bad_version = good.clone();
    bad_version[12] = 0x11;
    let mut oversize = good.clone();
    oversize[14..16].copy_from_slice(&60_000u16.to_be_bytes());
    let v1 = format!("PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\n{request}");
    let cases: [(&str, Vec<u8>); 5] = [
        ("no header", request.clone().into_bytes()),
        ("version 1", v1.into_bytes()),
        (
            "bad version",
            [bad_version, request.clone().into_bytes()].concat(),
        ),
        ("oversize", oversize),
        ("cut short", good[..20].to_vec()),
    ];
    for (what, bytes) in cases {
        let mut s = TcpStream::connect(server.http).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        if what == "cut short" {
            s.shutdown().await.unwrap();
        }
        let answer = read_until_closed(&mut s, Duration::from_secs(15)).await;
        assert!(
            answer.is_empty(),
            "{what}: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    // The server still serves a proxied viewer.
    let s = through_proxy(server.http, &good).await;
    let r = web::request_on(s, "GET", &agent.host, "/headers", &[], Bytes::new()).await;
    assert_eq!(r.json()["x-netbore-client-ip"], "203.0.113.7");
}
