//! Attacks by anonymous viewers on the real `netbore server`: silent and slow
//! connections, idle keep-alive and WebSocket connections, one address taking every
//! connection, one tunnel's viewers taking every stream. Each test sets the limit
//! low, attacks, and checks that the Edge lets go in time and still serves others.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::web::{self, get};
use common::{Agent, HttpAgent, Proc, Server};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn http_server(extra: &[&str]) -> Server {
    let mut args = vec!["--domain", "localhost"];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// Descriptors the process holds now.
fn fd_count(proc: &Proc) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", proc.pid()))
        .unwrap()
        .count()
}

/// Waits (up to `within`) until `check` holds, polling every 50 ms.
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// A connection to `addr` from loopback address `from` (all of 127.0.0.0/8 is this
/// machine).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until the Edge closes `stream`: how long that took and what it sent, or
/// `None` if it was still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some((start.elapsed(), got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A request on an open connection, reading one response head and its
/// `content-length` body; the status.
async fn exchange(stream: &mut TcpStream, host: &str, path: &str) -> u16 {
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a response: {got:?}");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    return head[9..12].parse().unwrap();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s")
}

#[tokio::test]
async fn silent_viewers_are_closed_at_the_header_deadline_and_their_descriptors_freed() {
    let server = http_server(&["--viewer-header-timeout", "1"]);
    let before = fd_count(&server.proc);
    // Connections that never send a byte: before the fix, version detection waited
    // for them forever.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(server.http).await.unwrap());
    }
    assert!(
        eventually(Duration::from_secs(1), || fd_count(&server.proc)
            >= before + 50)
        .await,
        "the Edge holds {} descriptors, {before} before 50 connections",
        fd_count(&server.proc)
    );
    for s in &mut silent {
        let (after, _) = closed_within(s, Duration::from_secs(5))
            .await
            .expect("a silent viewer closed within 5 s");
        assert!(after <= Duration::from_secs(4), "closed after {after:?}");
    }
    assert!(
        eventually(Duration::from_secs(2), || fd_count(&server.proc)
            <= before + 2)
        .await,
        "the Edge still holds {} descriptors, {before} before",
        fd_count(&server.proc)
    );
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_at_the_header_deadline() {
    let server = http_server(&[
        "--viewer-header-timeout",
        "1",
        "--viewer-idle-timeout",
        "60",
    ]);
    let mut slow = TcpStream::connect(server.http).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-A: ")
        .await
        .unwrap();
    let start = Instant::now();
    // A byte every 300 ms never finishes the head.
    let trickle = async {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow.write_all(b"a").await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(6), trickle).await;
    let closed = closed_within(&mut slow, Duration::from_secs(1)).await;
    assert!(
        closed.is_some(),
        "a trickled head was still open after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // The header deadline is far away: only the idle timeout can close it.
    let server = http_server(&[
        "--viewer-idle-timeout",
        "1",
        "--viewer-header-timeout",
        "30",
    ]);
    let host = format!("nobody.localhost:{}", server.http.port());
    let mut viewer = TcpStream::connect(server.http).await.unwrap();
    // Requests keep it open (a 404 page: no tunnel needed).
    for _ in 0..3 {
        assert_eq!(exchange(&mut viewer, &host, "/").await, 404);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let (after, sent) = closed_within(&mut viewer, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection closed within 5 s");
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));
    assert!(after <= Duration::from_secs(3), "closed after {after:?}");
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_the_idle_timeout() {
    let server = http_server(&[
        "--viewer-idle-timeout",
        "1",
        "--viewer-header-timeout",
        "30",
    ]);
    let stream = TcpStream::connect(server.http).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://nobody.localhost:{}/", server.http.port()))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 404);
    drop(response);
    let start = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "an idle h2 connection was open after 5 s");
    assert!(
        start.elapsed() <= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let server = http_server(&[
        "--max-viewer-connections-per-ip",
        "4",
        "--viewer-header-timeout",
        "30",
    ]);
    let host = format!("nobody.localhost:{}", server.http.port());
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from("127.0.0.1", server.http).await;
        assert_eq!(exchange(&mut s, &host, "/").await, 404);
        held.push(s);
    }
    // The fifth from the same address is closed at once (after a 503 if it can).
    let mut fifth = connect_from("127.0.0.1", server.http).await;
    let (after, sent) = closed_within(&mut fifth, Duration::from_secs(2))
        .await
        .expect("the fifth connection from one address closed at once");
    assert!(after < Duration::from_secs(1), "closed after {after:?}");
    let sent = String::from_utf8_lossy(&sent);
    assert!(
        sent.is_empty()
            || (sent.starts_with("HTTP/1.1 503") && sent.contains("too_many_connections")),
        "{sent}"
    );
    // Another address is served.
    let mut other = connect_from("127.0.0.2", server.http).await;
    assert_eq!(exchange(&mut other, &host, "/").await, 404);
    // A connection given back is a slot free again.
    drop(held.pop());
    let mut again = None;
    for _ in 0..40 {
        let mut s = connect_from("127.0.0.1", server.http).await;
        let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        if s.write_all(head.as_bytes()).await.is_ok() {
            let mut buf = [0u8; 12];
            if let Ok(Ok(12)) =
                tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await
                && &buf[9..12] == b"404"
            {
                again = Some(s);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the freed slot was never given out again");
}

#[tokio::test]
async fn one_address_cannot_take_every_connection_of_a_tcp_tunnel() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let server = Server::start_with(&["--max-viewer-connections-per-ip", "2"]);
    let agent = Agent::start(&server, &origin.to_string(), &[]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.1", agent.public).await;
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        held.push(s);
    }
    let mut third = connect_from("127.0.0.1", agent.public).await;
    let _ = third.write_all(b"ping").await;
    let (after, sent) = closed_within(&mut third, Duration::from_secs(2))
        .await
        .expect("the third connection from one address closed at once");
    assert!(sent.is_empty() && after < Duration::from_secs(1));
    let mut other = connect_from("127.0.0.2", agent.public).await;
    other.write_all(b"pong").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), other.read_exact(&mut back))
        .await
        .expect("another address is served")
        .unwrap();
    assert_eq!(&back, b"pong");
}

#[tokio::test]
async fn a_tunnel_over_its_stream_cap_answers_503_tunnel_busy() {
    let origin = web::start_origin().await;
    let server = http_server(&["--max-streams-per-tunnel", "2"]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let host = agent.host.clone();
            let http = server.http;
            tokio::spawn(async move { get(http, &host, "/slow/2000").await })
        })
        .collect();
    // Both slow requests are in flight once the origin has them; a third is refused.
    let mut busy = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = get(server.http, &agent.host, "/third").await;
        if r.status == 503 {
            busy = Some(r);
            break;
        }
    }
    let busy = busy.expect("a third request while two are in flight got a 503");
    assert_eq!(busy.headers["x-netbore-error"], "tunnel_busy");
    for s in slow {
        assert_eq!(s.await.unwrap().status, 200);
    }
    // Streams given back serve again.
    assert_eq!(get(server.http, &agent.host, "/after").await.status, 200);
}

#[tokio::test]
async fn an_address_over_its_stream_cap_answers_503_viewer_busy() {
    let origin = web::start_origin().await;
    let server = http_server(&["--max-viewer-streams-per-ip", "2"]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    // One h2 connection: many requests on one connection slot.
    let stream = TcpStream::connect(server.http).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let send = |path: &str| {
        let mut sender = sender.clone();
        let req = hyper::Request::get(format!("http://{}{path}", agent.host))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        async move { sender.send_request(req).await.unwrap() }
    };
    let slow: Vec<_> = (0..2).map(|_| tokio::spawn(send("/slow/2000"))).collect();
    let mut busy = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = send("/third").await;
        if r.status() == 503 {
            busy = Some(r);
            break;
        }
    }
    let busy = busy.expect("a third stream from one address got a 503");
    assert_eq!(busy.headers()["x-netbore-error"], "viewer_busy");
    for s in slow {
        assert_eq!(s.await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn a_websocket_keeps_its_slot_until_it_ends_and_ends_when_idle() {
    let origin = web::start_origin().await;
    let server = http_server(&[
        "--max-viewer-connections",
        "1",
        "--viewer-upgrade-idle-timeout",
        "2",
    ]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let stream = TcpStream::connect(server.http).await.unwrap();
    let url = format!("ws://{}/ws", agent.host);
    let (mut ws, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(response.status(), 101);
    let upgraded = Instant::now();
    // The only slot is the WebSocket's: another viewer waits in the listen queue.
    let waiting = tokio::spawn({
        let (http, host) = (server.http, agent.host.clone());
        async move {
            let r = get(http, &host, "/next").await;
            (r.status, Instant::now())
        }
    });
    // Silence for 2 s ends the WebSocket.
    let ended = tokio::time::timeout(Duration::from_secs(6), ws.next()).await;
    let ended = ended.expect("an idle WebSocket was still open after 6 s");
    assert!(!matches!(&ended, Some(Ok(m)) if !m.is_close()), "{ended:?}");
    assert!(upgraded.elapsed() >= Duration::from_millis(1500));
    let (status, served) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting viewer was served once the WebSocket ended")
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        served.duration_since(upgraded) >= Duration::from_millis(1500),
        "served {:?} after the upgrade, while the WebSocket held the only slot",
        served.duration_since(upgraded)
    );
}

#[test]
fn the_open_file_limit_is_raised_and_the_caps_fitted_below_it() {
    let hard: u64 = {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_string();
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields[4].parse().unwrap()
    };
    let data_dir = common::TempDir::new("nofile");
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" \"$@\"")
        .arg(common::bin())
        .args([
            "server",
            "--control-addr=127.0.0.1:0",
            "--agent-addr=127.0.0.1:0",
            "--http-addr=127.0.0.1:0",
            "--tcp-ports=0",
            "--tcp-bind-ip=127.0.0.1",
            "--max-viewer-connections",
            "100000000",
            "--data-dir",
        ])
        .arg(&data_dir.0);
    let proc = Proc::spawn_command(command);
    proc.expect_event("listening", Duration::from_secs(20));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proc.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], hard.to_string(), "soft limit not raised: {line}");
    let stderr = proc.stderr();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("open-file limit is too low"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
}
