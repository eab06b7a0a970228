//! Every transport over real loopback sockets, all against one listener: integrity of
//! many MiB both ways over concurrent streams, half-close, and a stalled stream that
//! does not block the others.

mod common;

use std::time::Duration;

use common::{connect, dial, listener};
use netbore_test_support::{Pki, read_all, send_pattern};
use netbore_transport::{Session, TransportKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

const KINDS: [TransportKind; 5] = [
    TransportKind::Tcp,
    TransportKind::Tls,
    TransportKind::Ws,
    TransportKind::Wss,
    TransportKind::Quic,
];

/// `streams` concurrent streams from client to server, each moving `per_stream`
/// bytes each way; checks every byte by checksum.
async fn both_ways(client: &Session, server: &Session, streams: u64, per_stream: usize) {
    let mut client_tasks = Vec::new();
    for i in 0..streams {
        let s = client.open().await.unwrap();
        client_tasks.push(tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(s);
            let send =
                tokio::spawn(async move { send_pattern(&mut w, 1000 + i, per_stream).await });
            let got = read_all(&mut r).await;
            (send.await.unwrap(), got)
        }));
    }
    let mut server_tasks = Vec::new();
    for _ in 0..streams {
        let s = tokio::time::timeout(Duration::from_secs(20), server.accept())
            .await
            .unwrap()
            .unwrap();
        server_tasks.push(tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(s);
            // The server sends its own pattern while reading the client's.
            let send = tokio::spawn(async move { send_pattern(&mut w, 7, per_stream).await });
            let got = read_all(&mut r).await;
            (send.await.unwrap(), got)
        }));
    }
    let mut client_sent = Vec::new();
    let mut client_got = Vec::new();
    for t in client_tasks {
        let (s, g) = t.await.unwrap();
        client_sent.push(s);
        client_got.push(g);
    }
    let mut server_got = Vec::new();
    let mut server_sent = None;
    for t in server_tasks {
        let (s, g) = t.await.unwrap();
        server_got.push(g);
        server_sent = Some(s);
    }
    // Streams are accepted in the order they were opened.
    client_sent.sort_by_key(|c| c.hash);
    server_got.sort_by_key(|c| c.hash);
    assert_eq!(client_sent, server_got, "client → server bytes differ");
    for g in client_got {
        assert_eq!(Some(g), server_sent, "server → client bytes differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_moves_many_mib_both_ways_over_concurrent_streams() {
    let pki = Pki::new();
    let mut l = listener(&pki, Duration::from_secs(10)).await;
    let addr = l.local_addr().unwrap();
    for kind in KINDS {
        let (client, server) = connect(&mut l, &dial(&pki, kind, addr)).await;
        assert_eq!(client.kind(), kind);
        assert_eq!(server.kind(), kind, "the Edge told the transport apart");
        tokio::time::timeout(
            Duration::from_secs(120),
            both_ways(&client, &server, 4, 8 * MIB),
        )
        .await
        .unwrap_or_else(|_| panic!("{kind}: 4 × 8 MiB each way within 120 s"));
        client.close(netbore_mux::GoAwayCode::NORMAL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_lets_the_other_direction_finish() {
    let pki = Pki::new();
    let mut l = listener(&pki, Duration::from_secs(10)).await;
    let addr = l.local_addr().unwrap();
    for kind in KINDS {
        let (client, server) = connect(&mut l, &dial(&pki, kind, addr)).await;
        let mut s = client.open().await.unwrap();
        s.write_all(b"request").await.unwrap();
        s.shutdown().await.unwrap();
        let mut peer = server.accept().await.unwrap();
        let mut request = Vec::new();
        peer.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"request", "{kind}");
        // Only after the request ended does the answer go back, larger than a window.
        let answering = tokio::spawn(async move {
            peer.write_all(&vec![9u8; 300_000]).await.unwrap();
            peer.shutdown().await.unwrap();
        });
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer.len(), 300_000, "{kind}");
        assert!(answer.iter().all(|b| *b == 9), "{kind}");
        answering.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_does_not_block_the_others() {
    let pki = Pki::new();
    let mut l = listener(&pki, Duration::from_secs(10)).await;
    let addr = l.local_addr().unwrap();
    for kind in KINDS {
        let (client, server) = connect(&mut l, &dial(&pki, kind, addr)).await;
        // Stream A: the client writes far more than any window; nobody reads it.
        let mut a = client.open().await.unwrap();
        let stalled = tokio::spawn(async move {
            let chunk = vec![1u8; 64 * 1024];
            loop {
                if a.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let _a_peer = server.accept().await.unwrap();
        // Stream B still moves 2 MiB each way while A fills its window and stays full.
        tokio::time::timeout(
            Duration::from_secs(30),
            both_ways(&client, &server, 1, 2 * MIB),
        )
        .await
        .unwrap_or_else(|_| panic!("{kind}: a stalled stream blocked another"));
        assert!(
            !stalled.is_finished(),
            "{kind}: A's writer is held by flow control"
        );
        stalled.abort();
    }
}

/// An agent opens one stream, its hello: after it the Edge still lets a QUIC peer
/// have only [`AGENT_OPENED_STREAMS`] open, and raises that to the stream limit only
/// for a session whose streams are viewers (a fleet link's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_agent_opens_few_streams_after_its_hello_and_a_link_many() {
    use netbore_transport::quic::AGENT_OPENED_STREAMS;

    let pki = Pki::new();
    let mut l = listener(&pki, Duration::from_secs(10)).await;
    let addr = l.local_addr().unwrap();
    let client = dial(&pki, TransportKind::Quic, addr)
        .connect()
        .await
        .unwrap();
    let mut open = Vec::new();
    let mut hello = client.open().await.unwrap();
    hello.write_all(b"h").await.unwrap();
    hello.flush().await.unwrap();
    open.push(hello);
    let server = tokio::time::timeout(Duration::from_secs(10), l.accept())
        .await
        .unwrap()
        .unwrap();
    server.hello_accepted();
    for _ in 1..AGENT_OPENED_STREAMS {
        let mut s = tokio::time::timeout(Duration::from_secs(5), client.open())
            .await
            .expect("a stream within the agent's few")
            .unwrap();
        s.write_all(b"s").await.unwrap();
        s.flush().await.unwrap();
        open.push(s);
    }
    let past = tokio::time::timeout(Duration::from_secs(1), client.open()).await;
    assert!(
        !matches!(past, Ok(Ok(_))),
        "an agent opened a stream past {AGENT_OPENED_STREAMS} after its hello"
    );
    // A fleet link's session: its peer opens the viewers' streams.
    server.set_accept_backlog(1024);
    for _ in 0..16 {
        let s = tokio::time::timeout(Duration::from_secs(5), client.open())
            .await
            .expect("a link's stream")
            .unwrap();
        open.push(s);
    }
    assert_eq!(open.len(), AGENT_OPENED_STREAMS as usize + 16);
}
