//! The core TCP- and HTTP-tunnel checks, once per agent transport (tcp, tls, ws, wss,
//! quic), through the real binary: integrity, concurrency, half-close, flow control
//! under a stalled viewer, faults, and an HTTP tunnel with a WebSocket inside.
//!
//! Each check is written once as `check_*(kind)`; [`every_transport!`] makes one
//! module of tests per transport, so a failure reads `quic::a_half_closed_...`.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::web::{self, get, request};
use common::{
    Agent, HttpAgent, Server, free_port, read_fast_stream, stalling_origin, wait_until_still,
};
use futures_util::{SinkExt, StreamExt};
use netbore_test_support::{
    echo_origin, pattern_checksum, read_all, read_until_closed, round_trip, send_pattern,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1024 * 1024;

/// The agent flags for `kind`: the transport, and the server's development CA for the
/// transports that check a certificate.
fn agent_args(server: &Server, kind: &str) -> Vec<String> {
    let mut args = vec!["--transport".to_string(), kind.to_string()];
    if matches!(kind, "tls" | "wss" | "quic") {
        let ca = server.data_dir.0.join("ca.pem");
        args.push("--ca".to_string());
        args.push(ca.to_str().unwrap().to_string());
    }
    args
}

/// Starts `netbore tcp LOCAL --transport KIND` and checks its session runs on `kind`.
fn tcp_agent(server: &Server, kind: &str, local: &str) -> Agent {
    let args = agent_args(server, kind);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(server, local, &args);
    assert_eq!(agent.online["transport"], kind, "{}", agent.online);
    agent
}

async fn check_integrity(kind: &str) {
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = origin.local_addr().unwrap().to_string();
    let server = Server::start();
    let agent = tcp_agent(&server, kind, &local);
    tokio::time::timeout(
        Duration::from_secs(60),
        round_trip(&origin, agent.public, 16 * MIB),
    )
    .await
    .unwrap_or_else(|_| panic!("{kind}: 16 MiB each way within 60 s"));
}

async fn check_concurrency(kind: &'static str) {
    const VIEWERS: u64 = 100;
    const LEN: usize = 64 * 1024;
    let (origin, _echo) = echo_origin().await;
    let server = Server::start();
    let agent = tcp_agent(&server, kind, &origin.to_string());
    let public = agent.public;

    let viewers: Vec<_> = (0..VIEWERS)
        .map(|i| {
            tokio::spawn(async move {
                let s = TcpStream::connect(public).await.unwrap();
                let (mut r, mut w) = s.into_split();
                let send = tokio::spawn(async move { send_pattern(&mut w, i + 10, LEN).await });
                let got = read_all(&mut r).await;
                let sent = send.await.unwrap();
                assert_eq!(got, sent, "{kind}: viewer {i} got other bytes than it sent");
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(60), async {
        for v in viewers {
            v.await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{kind}: {VIEWERS} viewers finish within 60 s"));
}

async fn check_half_close(kind: &str) {
    // More than one WebSocket message (256 KiB) and not a multiple of any buffer.
    const RESPONSE: usize = 3 * MIB / 2 + 7;
    // The origin answers only after the viewer's request has ended (EOF).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap().to_string();
    let (request_tx, request_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        s.read_to_end(&mut request).await.unwrap();
        let _ = request_tx.send(request);
        send_pattern(&mut s, 7, RESPONSE).await;
    });
    let server = Server::start();
    let agent = tcp_agent(&server, kind, &origin);

    let mut viewer = TcpStream::connect(agent.public).await.unwrap();
    viewer.write_all(b"the whole request").await.unwrap();
    viewer.shutdown().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), read_all(&mut viewer))
        .await
        .unwrap_or_else(|_| panic!("{kind}: the response arrives within 20 s"));
    assert_eq!(request_rx.await.unwrap(), b"the whole request");
    assert_eq!(
        got,
        pattern_checksum(7, RESPONSE),
        "{kind}: response differs"
    );
}

async fn check_flow_control(kind: &str) {
    const FAST: usize = 8 * MIB;
    // Several, so a transport whose session-wide window is only a few stream windows
    // (each stalled stream holding a full one) is caught freezing the others.
    const STALLED: usize = 6;
    // Connections that send 'S' get an endless stream; 'F' gets FAST bytes and EOF.
    let (origin, pushed_to_stalled) = stalling_origin(FAST).await;
    let server = Server::start();
    let agent = tcp_agent(&server, kind, &origin);

    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut s = TcpStream::connect(agent.public).await.unwrap();
        s.write_all(b"S").await.unwrap();
        stalled.push(s);
    }
    // Let the stalled streams fill every buffer and window on their path.
    wait_until_still(&pushed_to_stalled).await;

    // Meanwhile, another viewer of the same session moves FAST bytes.
    let (got, took) = read_fast_stream(agent.public)
        .await
        .unwrap_or_else(|| panic!("{kind}: the fast viewer is blocked by the stalled one"));
    assert_eq!(got.len, FAST as u64);

    // Backpressure reached the stalled origins instead of the tunnel buffering them.
    let pushed = pushed_to_stalled.load(Ordering::Relaxed);
    assert!(
        pushed < (STALLED * 32 * MIB) as u64,
        "{kind}: the stalled stream absorbed {} MiB: flow control is not holding the origin back",
        pushed / MIB as u64
    );

    // And a stalled stream is only stalled: it moves again once read.
    let mut buf = vec![0u8; 64 * 1024];
    let mut drained = 0;
    let first = &mut stalled[0];
    tokio::time::timeout(Duration::from_secs(10), async {
        while drained < pushed as usize / STALLED + MIB {
            let n = first.read(&mut buf).await.unwrap();
            assert!(n > 0, "{kind}: the stalled stream ended");
            drained += n;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{kind}: the stalled stream resumes once read"));
    eprintln!(
        "{kind}: fast viewer moved 8 MiB in {took:?} beside {STALLED} stalled ones holding {} KiB",
        pushed / 1024
    );
}

async fn check_refusing_origin(kind: &str) {
    let server = Server::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let agent = tcp_agent(&server, kind, &dead);

    let started = Instant::now();
    match TcpStream::connect(agent.public).await {
        Ok(mut viewer) => {
            read_until_closed(&mut viewer, Duration::from_secs(2)).await;
        }
        // The Edge can reset the viewer before the connect is seen to complete (the
        // reset lands in the socket's pending error): closed all the same.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{kind}: the viewer could not connect: {e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// How the agent process ends in [`check_agent_gone`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ending {
    /// SIGTERM: the agent closes its session on the way out.
    Stopped,
    /// SIGKILL: nothing is said. The kernel closes a TCP connection (FIN/RST), but a
    /// QUIC peer learns only from silence, so the QUIC run uses `--keepalive 1
    /// --keepalive-tolerance 2` on both ends (idle timeout 2 s) and gets that much longer.
    Killed,
}

async fn check_agent_gone(kind: &str, ending: Ending) {
    const VIEWERS: usize = 5;
    let silence_detection = ending == Ending::Killed && kind == "quic";
    // An origin that holds every connection open and reports each one.
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = origin.local_addr().unwrap().to_string();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = origin.accept().await {
            held.push(s);
            let _ = accepted_tx.send(());
        }
    });
    let keepalive: &[&str] = if silence_detection {
        &["--keepalive", "1", "--keepalive-tolerance", "2"]
    } else {
        &[]
    };
    let server = Server::start_with(keepalive);
    let mut args = agent_args(&server, kind);
    args.extend(keepalive.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::start(&server, &local, &args);
    assert_eq!(agent.online["transport"], kind, "{}", agent.online);
    let public = agent.public;
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        let mut v = TcpStream::connect(public).await.unwrap();
        v.write_all(b"hello").await.unwrap();
        viewers.push(v);
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..VIEWERS {
            accepted.recv().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{kind}: every viewer reaches the origin"));

    match ending {
        Ending::Killed => agent.proc.kill(),
        Ending::Stopped => {
            agent.proc.signal("TERM");
            assert_eq!(
                agent.proc.wait_exit(Duration::from_secs(2)),
                Some(0),
                "{kind}: a stopped agent exits cleanly"
            );
        }
    }
    let started = Instant::now();
    let limit = if silence_detection {
        Duration::from_millis(3500)
    } else {
        Duration::from_secs(2)
    };
    let deadline = started + limit;
    for v in &mut viewers {
        let left = deadline.saturating_duration_since(Instant::now());
        read_until_closed(v, left).await;
    }
    while TcpStream::connect(public).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{kind}: public port still open {limit:?} after the agent ended ({ending:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        Instant::now() < deadline,
        "{kind}: took {:?}",
        started.elapsed()
    );
}

async fn check_http(kind: &str) {
    let origin = web::start_origin().await;
    let server = Server::start_with(&["--domain", "localhost"]);
    let args = agent_args(&server, kind);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &args);
    assert_eq!(agent.online["transport"], kind, "{}", agent.online);

    tokio::time::timeout(Duration::from_secs(30), async {
        let r = get(server.http, &agent.host, "/hello?x=1").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hello /hello");

        let body: Vec<u8> = (0..MIB as u32).map(|i| (i % 251) as u8).collect();
        let r = request(server.http, "POST", &agent.host, "/echo", &[], body.clone()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), body.len());
        assert!(r.body == body, "{kind}: echoed body differs");

        let stream = TcpStream::connect(server.http).await.unwrap();
        let url = format!("ws://{}/ws", agent.host);
        let (mut ws, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        assert_eq!(response.status(), 101);
        use tokio_tungstenite::tungstenite::Message;
        for i in 0..10 {
            ws.send(Message::text(format!("ping {i}"))).await.unwrap();
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text(format!("ping {i}"))
            );
        }
        let big = vec![7u8; 512 * 1024];
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
        ws.close(None).await.unwrap();
    })
    .await
    .unwrap_or_else(|_| panic!("{kind}: GET, POST and WebSocket within 30 s"));
}

/// One module of tests per transport, each test running one check on that transport.
macro_rules! every_transport {
    ($($kind:ident),* $(,)?) => {$(
        mod $kind {
            const KIND: &str = stringify!($kind);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn moves_16_mib_each_way_intact() {
                super::check_integrity(KIND).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_hundred_concurrent_viewers_echo_intact() {
                super::check_concurrency(KIND).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_half_closed_viewer_gets_the_whole_response() {
                super::check_half_close(KIND).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_stalled_viewer_holds_back_its_origin_and_not_the_others() {
                super::check_flow_control(KIND).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_refusing_origin_closes_the_viewer_within_2s() {
                super::check_refusing_origin(KIND).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_stopped_agent_cuts_viewers_and_releases_the_port_within_2s() {
                super::check_agent_gone(KIND, super::Ending::Stopped).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_killed_agent_cuts_viewers_and_releases_the_port_promptly() {
                super::check_agent_gone(KIND, super::Ending::Killed).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn http_get_post_and_websocket_pass() {
                super::check_http(KIND).await;
            }
        }
    )*};
}

every_transport!(tcp, tls, ws, wss, quic);
