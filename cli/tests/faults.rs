//! Bad input and faults: each case ends in a typed error or a prompt close, never a
//! hang or a crash, and the server keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::hello::{create_token, hello, hello_on, open_hello};
use common::{Agent, Proc, Server, free_port};
use netbore_control::tokens::{TokenSigner, unix_now};
use netbore_mux::frame::{FrameType, GoAwayCode, HEADER_LEN, Header};
use netbore_test_support::read_until_closed;
use netbore_transport::proto::{ErrorCode, HelloReply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Finds a go-away frame in `bytes` and returns its code.
fn go_away_code(bytes: &[u8]) -> Option<GoAwayCode> {
    let mut at = 0;
    while at + HEADER_LEN <= bytes.len() {
        let raw: &[u8; HEADER_LEN] = bytes[at..at + HEADER_LEN].try_into().unwrap();
        let h = Header::decode(raw, u32::MAX).ok()?;
        if h.ty == FrameType::GoAway {
            return Some(GoAwayCode(h.length));
        }
        at += HEADER_LEN
            + if h.ty == FrameType::Data {
                h.length as usize
            } else {
                0
            };
    }
    None
}

#[tokio::test]
async fn an_origin_that_refuses_closes_the_viewer_promptly_and_logs_one_line() {
    let server = Server::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(&server, &dead, &[]);

    let started = Instant::now();
    let mut viewer = TcpStream::connect(agent.public).await.unwrap();
    read_until_closed(&mut viewer, Duration::from_secs(2)).await;
    assert!(started.elapsed() < Duration::from_secs(2));

    let deadline = Instant::now() + Duration::from_secs(2);
    let line = format!("could not reach the local service at {dead}");
    while !agent.proc.stderr().contains(&line) {
        assert!(
            Instant::now() < deadline,
            "agent did not log the refusal:\n{}",
            agent.proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        agent.proc.stderr().matches(&line).count(),
        1,
        "one line per refused viewer"
    );
}

#[tokio::test]
async fn when_the_agent_dies_its_viewers_are_cut_and_its_port_released_within_2s() {
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin.local_addr().unwrap().to_string();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = origin.accept().await {
            held.push(s);
        }
    });
    let server = Server::start();
    let mut agent = Agent::start(&server, &origin_addr, &[]);
    let public = agent.public;
    let mut viewers = Vec::new();
    for _ in 0..5 {
        let mut v = TcpStream::connect(public).await.unwrap();
        v.write_all(b"hello").await.unwrap();
        viewers.push(v);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    agent.proc.kill();
    let started = Instant::now();
    for v in &mut viewers {
        read_until_closed(v, Duration::from_secs(2)).await;
    }
    loop {
        match TcpStream::connect(public).await {
            Err(_) => break,
            Ok(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "public port still open after 2 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn garbage_on_the_agent_listener_gets_a_protocol_error_go_away() {
    let server = Server::start();
    // Garbage that starts like a mux frame (the version byte) reaches the mux.
    let mut s = TcpStream::connect(server.agent).await.unwrap();
    let mut garbage = vec![netbore_mux::frame::VERSION];
    garbage.extend_from_slice(&[0xee; 31]);
    s.write_all(&garbage).await.unwrap();
    let reply = read_until_closed(&mut s, Duration::from_secs(2)).await;
    assert_eq!(
        go_away_code(&reply),
        Some(GoAwayCode::PROTOCOL_ERROR),
        "reply: {reply:?}"
    );
    // An HTTP request that is no WebSocket upgrade, and bytes no transport starts with,
    // are closed at once.
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: nonsense\r\n\r\n"[..],
        b"\xffjunk",
    ] {
        let mut s = TcpStream::connect(server.agent).await.unwrap();
        s.write_all(junk).await.unwrap();
        let reply = read_until_closed(&mut s, Duration::from_secs(2)).await;
        assert_eq!(go_away_code(&reply), None, "reply: {reply:?}");
    }

    // The server is unharmed.
    let origin = format!("127.0.0.1:{}", free_port());
    Agent::start(&server, &origin, &[]);
}

#[tokio::test]
async fn a_frame_over_the_size_limit_gets_a_frame_too_large_go_away() {
    let server = Server::start();
    let mut s = TcpStream::connect(server.agent).await.unwrap();
    let header = Header {
        ty: FrameType::Data,
        flags: netbore_mux::frame::Flags::SYN,
        stream: netbore_mux::StreamId(1),
        length: 64 * 1024 * 1024,
    };
    s.write_all(&header.to_bytes()).await.unwrap();
    let reply = read_until_closed(&mut s, Duration::from_secs(2)).await;
    assert_eq!(
        go_away_code(&reply),
        Some(GoAwayCode::FRAME_TOO_LARGE),
        "reply: {reply:?}"
    );
}

#[tokio::test]
async fn a_connection_that_never_says_hello_is_closed_after_the_hello_timeout() {
    let server = Server::start_with(&["--hello-timeout", "1"]);
    let mut s = TcpStream::connect(server.agent).await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
}

fn error_code(reply: &HelloReply) -> ErrorCode {
    match reply {
        HelloReply::Error(body) => {
            assert!(
                body.message.ends_with("control plane"),
                "message says what to do: {}",
                body.message
            );
            body.code
        }
        HelloReply::Ok { .. } => panic!("hello was accepted"),
    }
}

#[tokio::test]
async fn expired_forged_and_reused_tokens_get_typed_errors() {
    let server = Server::start();
    let key = server.data_dir.0.join("control-ed25519.pk8");
    let signer = TokenSigner::load_or_create(&key).unwrap();

    let (_, mut claims) = signer
        .mint(
            "anonymous:test",
            "tun_x",
            "tcp",
            Some(1),
            None,
            Duration::from_secs(60),
        )
        .unwrap();
    claims.exp = unix_now() - 120;
    let expired = signer.sign(&claims).unwrap();
    assert_eq!(
        error_code(&hello(&server, vec![expired]).await),
        ErrorCode::TokenExpired
    );

    let forger = TokenSigner::generate();
    let (forged, _) = forger
        .mint(
            "anonymous:test",
            "tun_x",
            "tcp",
            Some(1),
            None,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(
        error_code(&hello(&server, vec![forged]).await),
        ErrorCode::BadToken
    );
    assert_eq!(
        error_code(&hello(&server, vec!["not-a-jwt".into()]).await),
        ErrorCode::BadToken
    );

    // A real token works once, and only once.
    let token = create_token(&server).await;
    let first = hello(&server, vec![token.clone()]).await;
    assert!(
        matches!(first, HelloReply::Ok { ref tunnels } if tunnels.len() == 1),
        "{first:?}"
    );
    assert_eq!(
        error_code(&hello(&server, vec![token]).await),
        ErrorCode::TokenReused
    );
}

#[tokio::test]
async fn a_refused_hello_reaches_a_quic_agent_before_the_session_closes() {
    // A QUIC close discards unsent stream data: the Edge must let the answer arrive.
    let server = Server::start();
    let ca = server.data_dir.0.join("ca.pem");
    let dial = netbore_transport::Dial {
        kind: netbore_transport::TransportKind::Quic,
        addr: format!("127.0.0.1:{}", server.agent.port()),
        tls: Some(
            netbore_transport::tls::ClientTls::new(&netbore_transport::tls::TrustOptions {
                extra_ca: Some(ca),
                insecure_skip_verify: false,
            })
            .unwrap(),
        ),
        proxy: None,
        mux: Default::default(),
    };
    for _ in 0..5 {
        let session = dial.connect().await.unwrap();
        let (session, _stream, reply) = hello_on(session, vec!["not-a-jwt".into()]).await;
        assert_eq!(error_code(&reply), ErrorCode::BadToken);
        tokio::time::timeout(Duration::from_secs(2), session.closed())
            .await
            .expect("the Edge closes the session after the refusal");
    }
}

#[tokio::test]
async fn a_public_port_already_in_use_is_one_clear_sentence() {
    let server = Server::start();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let url = server.url();
    let mut agent = Proc::spawn(&["tcp", "9", "--server", &url, "--remote-port", &port]);
    let ev = agent.expect_event("error", Duration::from_secs(10));
    assert_eq!(ev["code"], "port_in_use");
    let message = ev["message"].as_str().unwrap();
    assert!(
        message.contains(&port) && message.matches(". ").count() == 0,
        "one sentence: {message}"
    );
    assert_eq!(agent.wait_exit(Duration::from_secs(5)), Some(1));
}

#[tokio::test]
async fn a_server_without_allow_anonymous_refuses_anonymous_agents_clearly() {
    let data = common::TempDir::new("data");
    let dd = data.0.to_str().unwrap().to_string();
    let server = Proc::spawn(&[
        "server",
        "--control-addr",
        "127.0.0.1:0",
        "--agent-addr",
        "127.0.0.1:0",
        "--tcp-ports",
        "0",
        "--data-dir",
        &dd,
    ]);
    let ev = server.expect_event("listening", Duration::from_secs(10));
    let url = format!("http://{}", ev["control"].as_str().unwrap());
    let mut agent = Proc::spawn(&["tcp", "9", "--server", &url]);
    let ev = agent.expect_event("error", Duration::from_secs(10));
    assert_eq!(ev["code"], "unauthorized");
    assert!(
        ev["message"]
            .as_str()
            .unwrap()
            .contains("--allow-anonymous")
    );
    assert_eq!(agent.wait_exit(Duration::from_secs(5)), Some(1));
}

#[tokio::test]
async fn a_listen_address_in_use_is_one_clear_sentence() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let data = common::TempDir::new("data");
    let dd = data.0.to_str().unwrap().to_string();
    let mut server = Proc::spawn(&[
        "server",
        "--control-addr",
        &addr,
        "--agent-addr",
        "127.0.0.1:0",
        "--data-dir",
        &dd,
    ]);
    let ev = server.expect_event("error", Duration::from_secs(10));
    let message = ev["message"].as_str().unwrap();
    assert!(
        message.contains(&addr) && message.contains("--control-addr"),
        "{message}"
    );
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(1));
}

#[tokio::test]
async fn streams_an_agent_opens_after_its_hello_are_refused() {
    let server = Server::start();
    let token = create_token(&server).await;
    let (session, _hello_stream, reply) = open_hello(&server, vec![token]).await;
    assert!(matches!(reply, HelloReply::Ok { .. }));

    let mut extra = session.open().await.unwrap();
    extra.write_all(b"unexpected").await.unwrap();
    let mut buf = [0u8; 8];
    let err = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(!session.is_closed(), "the session itself stays up");
}
