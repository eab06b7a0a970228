//! A server's drain on SIGTERM (`docs/deploy.md`, "Draining a node"), on a single
//! node: `/readyz` turns 503, work in flight finishes (a slow HTTP request, a 1 GiB
//! download through a TCP tunnel, checksum intact), the node exits once idle with
//! status 0; at `--drain-timeout` it cuts what is left and says how much, with exit
//! status 3; a second signal exits at once.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::web::{self, PatternBody};
use common::{Agent, HttpAgent, Server};
use netbore_test_support::Checksum;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `signal` (`TERM`, `INT`) to `pid`.
/// A TCP agent's public address on loopback (its URL names `localhost`).
fn tcp_public(server: &Server, origin: SocketAddr) -> (Agent, SocketAddr) {
    let url = server.url();
    let proc = common::Proc::spawn(&["tcp", &origin.to_string(), "--server", &url]);
    let online = proc.expect_event("online", Duration::from_secs(20));
    let port: u16 = online["public_url"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let public = SocketAddr::from(([127, 0, 0, 1], port));
    (
        Agent {
            proc,
            public,
            online,
        },
        public,
    )
}

/// `GET /readyz` on the metrics listener: the status code.
async fn readyz(metrics: &str) -> u16 {
    let addr: SocketAddr = metrics.strip_prefix("http://").unwrap().parse().unwrap();
    web::get(addr, "metrics", "/readyz").await.status
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from `socket`: its head and
/// the body's checksum. `progress` counts the body's bytes as they come.
async fn read_response(
    socket: &mut tokio::net::TcpStream,
    progress: &AtomicU64,
) -> (String, Checksum) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            socket.read(&mut byte).await.unwrap(),
            1,
            "the head ended early"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let len: u64 = head
        .lines()
        .find_map(|l| {
            let l = l.to_ascii_lowercase();
            l.strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .expect("a content-length")
        .parse()
        .unwrap();
    let mut sum = Checksum::default();
    let mut buf = vec![0u8; 256 * 1024];
    while sum.len < len {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the body ended at {} of {len} bytes", sum.len);
        sum.update(&buf[..n]);
        progress.store(sum.len, Ordering::Relaxed);
    }
    (head, sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_and_a_1_gib_tcp_download_finish_then_exits_0() {
    let origin = web::start_origin().await;
    let mut server =
        Server::start_with(&["--metrics-addr", "127.0.0.1:0", "--domain", "localhost"]);
    let metrics = server.listening["metrics"].as_str().unwrap().to_string();
    let http = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let (tcp, _) = tcp_public(&server, origin.addr);
    assert_eq!(readyz(&metrics).await, 200);

    // A 1 GiB download through the TCP tunnel, and a request the origin answers
    // after 3 s through the HTTP tunnel, both in flight when the signal comes.
    const LEN: u64 = 1 << 30;
    let mut download = tokio::net::TcpStream::connect(tcp.public).await.unwrap();
    download
        .write_all(
            format!("GET /bytes/{LEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let progress = Arc::new(AtomicU64::new(0));
    let read = progress.clone();
    let downloading = tokio::spawn(async move { read_response(&mut download, &read).await });
    let (http_addr, host) = (server.http, http.host.clone());
    let slow = tokio::spawn(async move { web::get(http_addr, &host, "/slow/3000").await });
    while progress.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    server.proc.signal("TERM");
    let draining = server.proc.expect_event("draining", Duration::from_secs(5));
    assert!(draining["in_flight"].as_u64().unwrap() >= 2, "{draining}");
    assert!(
        progress.load(Ordering::Relaxed) < LEN,
        "the download is still in flight"
    );
    assert_eq!(readyz(&metrics).await, 503, "a draining node is not ready");
    // A new viewer is still served while the node drains (single node: nowhere
    // else), and its keep-alive connection ends after the request.
    let r = web::get(server.http, &http.host, "/during").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );

    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.text().as_str()), (200, "slow answer"));
    let (head, sum) = downloading.await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        sum,
        PatternBody::checksum(LEN),
        "the download arrived whole"
    );
    let stopped = server.proc.expect_event("stopped", Duration::from_secs(10));
    assert_eq!(stopped["cut"], 0, "{stopped}");
    assert_eq!(server.proc.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_millis(2500),
        "it waited for the slow request"
    );
    drop((http, tcp));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_cuts_what_is_left_and_says_how_much_and_a_second_signal_exits_now() {
    let origin = web::start_origin().await;
    // The deadline: a stream that never ends is cut after 1 s, exit status 3.
    let mut server = Server::start_with(&["--drain-timeout", "1", "--domain", "localhost"]);
    let (tcp, _) = tcp_public(&server, origin.addr);
    let mut endless = tokio::net::TcpStream::connect(tcp.public).await.unwrap();
    endless
        .write_all(b"GET /bytes/1099511627776 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    endless.read_exact(&mut first).await.unwrap();
    let signalled = Instant::now();
    server.proc.signal("TERM");
    let stopped = server.proc.expect_event("stopped", Duration::from_secs(10));
    assert_eq!(stopped["cut"], 1, "{stopped}");
    assert_eq!(stopped["reason"], "the drain timeout passed");
    assert_eq!(server.proc.wait_exit(Duration::from_secs(5)), Some(3));
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        server.proc.stderr().contains("were cut"),
        "{}",
        server.proc.stderr()
    );
    drop((tcp, endless));

    // A second signal: out at once, long before the 30 s default.
    let mut server = Server::start_with(&["--domain", "localhost"]);
    let (tcp, _) = tcp_public(&server, origin.addr);
    let mut endless = tokio::net::TcpStream::connect(tcp.public).await.unwrap();
    endless
        .write_all(b"GET /bytes/1099511627776 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    endless.read_exact(&mut first).await.unwrap();
    let signalled = Instant::now();
    server.proc.signal("TERM");
    server.proc.expect_event("draining", Duration::from_secs(5));
    server.proc.signal("INT");
    let stopped = server.proc.expect_event("stopped", Duration::from_secs(5));
    assert_eq!(stopped["reason"], "a second signal asked to exit now");
    assert_eq!(stopped["cut"], 1, "{stopped}");
    assert_eq!(server.proc.wait_exit(Duration::from_secs(5)), Some(3));
    assert!(signalled.elapsed() < Duration::from_secs(5));
    drop((tcp, endless));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_key_drains_the_node_through_the_control_api_and_no_other_caller_can() {
    // Keys made before the server starts, so it can name the admin one.
    let data = common::TempDir::new("data");
    let made = |label: &str| {
        let (code, events) = common::key_cmd(&data, &["create", "--label", label]);
        assert_eq!(code, 0, "{events:?}");
        (
            events[0]["id"].as_str().unwrap().to_string(),
            events[0]["key"].as_str().unwrap().to_string(),
        )
    };
    let (admin_id, admin) = made("ops");
    let (_, user) = made("user");
    let mut server = Server::start_in(
        data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--admin-key",
            &admin_id,
            "--drain-linger",
            "0",
            "--domain",
            "localhost",
        ],
    );
    server
        .api("POST", "/admin/drain", None, None)
        .assert_error(401, "unauthorized");
    server
        .api("POST", "/admin/drain", Some(&user), None)
        .assert_error(403, "forbidden");
    // Still serving: neither asked it to drain.
    let listed = server.api("GET", "/tunnels", Some(&user), None);
    assert_eq!(listed.status, 200, "{listed:?}");
    let asked = server.api("POST", "/admin/drain", Some(&admin), None);
    assert_eq!(asked.status, 202, "{asked:?}");
    assert_eq!(asked.body, serde_json::json!({"draining": true}));
    server.proc.expect_event("draining", Duration::from_secs(5));
    assert_eq!(server.proc.wait_exit(Duration::from_secs(10)), Some(0));
}
