//! The tokio layer over real loopback sockets and in-memory pipes: streams, half-close,
//! resets, limits, keepalive and go-away.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use netbore_mux::{Config, GoAwayCode, Mux, Role, SessionError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

async fn pair(client_cfg: Config, server_cfg: Config) -> (Mux, Mux) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (client, server) = (client.unwrap(), accepted.unwrap().0);
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    let client = Mux::spawn(client, Role::Client, client_cfg);
    let server = Mux::spawn(server, Role::Server, server_cfg);
    (client, server)
}

#[tokio::test]
async fn a_stream_carries_bytes_both_ways_and_half_closes() {
    let (client, server) = pair(Config::default(), Config::default()).await;
    let mut a = client.open().await.unwrap();
    a.write_all(b"request").await.unwrap();
    a.shutdown().await.unwrap();
    let mut b = server.accept().await.unwrap();
    let mut got = Vec::new();
    b.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"request");
    // After the client's FIN the server can still answer in full.
    let answer = tokio::spawn(async move {
        b.write_all(&vec![42u8; 5 * 1024 * 1024]).await.unwrap();
        b.shutdown().await.unwrap();
        b
    });
    let mut back = Vec::new();
    a.read_to_end(&mut back).await.unwrap();
    let b = answer.await.unwrap();
    assert_eq!(back.len(), 5 * 1024 * 1024);
    assert!(back.iter().all(|x| *x == 42));
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.stats().streams, 0);
    assert_eq!(server.stats().streams, 0);
}

#[tokio::test]
async fn a_reset_reaches_the_other_side_as_an_error() {
    let (client, server) = pair(Config::default(), Config::default()).await;
    let mut a = client.open().await.unwrap();
    a.write_all(b"x").await.unwrap();
    let mut b = server.accept().await.unwrap();
    let mut one = [0u8; 1];
    b.read_exact(&mut one).await.unwrap();
    a.reset();
    let err = b.read(&mut one).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    let err = b.write_all(b"more").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn opens_beyond_the_peers_stream_limit_are_reset_not_fatal() {
    let server_cfg = Config {
        max_streams: 2,
        ..Config::default()
    };
    let (client, server) = pair(Config::default(), server_cfg).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = client.open().await.unwrap();
        s.write_all(b"hi").await.unwrap();
        streams.push(s);
    }
    let _first = server.accept().await.unwrap();
    let _second = server.accept().await.unwrap();
    let mut buf = [0u8; 2];
    let err = streams[2].read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    // The session itself is healthy.
    assert!(!client.is_closed());
}

#[tokio::test]
async fn close_sends_a_go_away_with_its_reason() {
    let (client, server) = pair(Config::default(), Config::default()).await;
    server.close(GoAwayCode::CLOSED_BY_APPLICATION);
    let reason = tokio::time::timeout(Duration::from_secs(2), client.closed())
        .await
        .unwrap();
    assert_eq!(
        reason,
        SessionError::GoAway(GoAwayCode::CLOSED_BY_APPLICATION)
    );
    assert!(client.accept().await.is_none());
    assert!(client.open().await.is_err());
}

#[tokio::test]
async fn dropping_every_handle_closes_the_session() {
    let (client, server) = pair(Config::default(), Config::default()).await;
    drop(server);
    let reason = tokio::time::timeout(Duration::from_secs(2), client.closed())
        .await
        .unwrap();
    assert!(
        matches!(
            reason,
            SessionError::ConnectionClosed | SessionError::GoAway(_)
        ),
        "{reason:?}"
    );
}

#[tokio::test]
async fn keepalive_measures_rtt() {
    let (client, _server) = pair(Config::default(), Config::default()).await;
    for _ in 0..100 {
        if client.rtt().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no RTT measured within 1 s");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_answers_pings_is_declared_dead() {
    // The far end of the pipe is held but never read: pings go unanswered.
    let (near, _far) = tokio::io::duplex(64 * 1024);
    let cfg = Config {
        keepalive_interval: Some(Duration::from_secs(10)),
        keepalive_timeout: Duration::from_secs(20),
        ..Config::default()
    };
    let mux = Mux::spawn(near, Role::Client, cfg);
    let started = tokio::time::Instant::now();
    let reason = mux.closed().await;
    assert_eq!(
        reason,
        SessionError::KeepaliveTimeout(Duration::from_secs(20))
    );
    assert!(
        started.elapsed() >= Duration::from_secs(20) && started.elapsed() < Duration::from_secs(25)
    );
}

#[tokio::test]
async fn a_stalled_stream_holds_at_most_its_window_and_others_keep_flowing() {
    let (client, server) = pair(Config::default(), Config::default()).await;
    // Stream 1: the server writes but the client never reads.
    let mut stalled_c = client.open().await.unwrap();
    stalled_c.write_all(b"s").await.unwrap();
    let mut stalled_s = server.accept().await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = vec![1u8; 64 * 1024];
        let mut sent = 0usize;
        loop {
            match tokio::time::timeout(Duration::from_millis(300), stalled_s.write_all(&chunk))
                .await
            {
                Ok(Ok(())) => sent += chunk.len(),
                _ => return (sent, stalled_s),
            }
        }
    });
    // Stream 2 moves 32 MiB meanwhile.
    let mut fast_c = client.open().await.unwrap();
    fast_c.write_all(b"f").await.unwrap();
    let mut fast_s = server.accept().await.unwrap();
    let mover = tokio::spawn(async move {
        let chunk = vec![2u8; 64 * 1024];
        for _ in 0..512 {
            fast_s.write_all(&chunk).await.unwrap();
        }
        fast_s.shutdown().await.unwrap();
        fast_s
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), fast_c.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 32 * 1024 * 1024);
    let _fast_s = mover.await.unwrap();
    let (sent, _stalled_s) = writer.await.unwrap();
    let window = Config::default().initial_stream_window as usize;
    // Writes stop at the window (the first 1-byte read left it at the start size).
    assert!(
        sent <= window,
        "stalled stream accepted {sent} bytes beyond a {window}-byte window"
    );
    let stats = client.stats();
    assert!(stats.buffered_bytes <= window, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_short_request_response_streams_complete() {
    for duplex in [false, true] {
        short_streams(duplex).await;
    }
}

async fn short_streams(duplex: bool) {
    let (client, server) = if duplex {
        let (a, b) = tokio::io::duplex(1024 * 1024);
        (
            Mux::spawn(a, Role::Client, Config::default()),
            Mux::spawn(b, Role::Server, Config::default()),
        )
    } else {
        pair(Config::default(), Config::default()).await
    };
    let acceptor = tokio::spawn(async move {
        for _ in 0..2000 {
            let mut s = server.accept().await.unwrap();
            let mut buf = [0u8; 1];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            s.shutdown().await.unwrap();
        }
        server
    });
    for i in 0..2000 {
        let mut s = client.open().await.unwrap();
        s.write_all(b"x").await.unwrap();
        s.shutdown().await.unwrap();
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf)
            .await
            .unwrap_or_else(|e| panic!("duplex={duplex} stream {i}: {e}"));
    }
    let server = acceptor.await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.stats().streams, 0);
    assert_eq!(server.stats().streams, 0);
}

/// Records whether the session read as closed at the moment a stream was woken.
struct ClosedWhenWoken {
    mux: Arc<Mux>,
    seen: Mutex<Option<bool>>,
}

impl ClosedWhenWoken {
    /// Registers a check as `stream`'s read waker (the stream has nothing to read).
    fn watch(mux: &Arc<Mux>, stream: &mut netbore_mux::MuxStream) -> Arc<ClosedWhenWoken> {
        let check = Arc::new(ClosedWhenWoken {
            mux: mux.clone(),
            seen: Mutex::new(None),
        });
        let waker = Waker::from(check.clone());
        let mut buf = [0u8; 16];
        let mut read = ReadBuf::new(&mut buf);
        let polled = Pin::new(stream).poll_read(&mut Context::from_waker(&waker), &mut read);
        assert!(polled.is_pending());
        check
    }

    /// Whether the session read as closed when the stream was woken, once it is
    /// (within `limit`).
    async fn seen(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                if let Some(seen) = *self.seen.lock().unwrap() {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the stream is woken")
    }
}

impl Wake for ClosedWhenWoken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let closed = self.mux.is_closed();
        self.seen.lock().unwrap().get_or_insert(closed);
    }
}

/// A stream woken because its connection went away finds its session closed
/// already: a relay tells a lost link (whose request it may send to another node)
/// from a request that failed by asking the session at that moment.
#[tokio::test]
async fn a_stream_woken_by_a_lost_connection_finds_the_session_closed() {
    let (near, far) = tokio::io::duplex(64 * 1024);
    let client = Arc::new(Mux::spawn(near, Role::Client, Config::default()));
    let (server, driver) = Mux::new(far, Role::Server, Config::default());
    let driver = tokio::spawn(driver);
    let mut a = client.open().await.unwrap();
    a.write_all(b"x").await.unwrap();
    let mut b = server.accept().await.unwrap();
    let mut one = [0u8; 1];
    b.read_exact(&mut one).await.unwrap();

    let check = ClosedWhenWoken::watch(&client, &mut a);
    // The far end's connection goes away at once, as when its process is killed.
    driver.abort();
    let _ = driver.await;
    drop((b, server));
    let seen = check.seen(Duration::from_secs(5)).await;
    assert!(seen, "the session read as open when the stream was woken");
    assert!(client.is_closed());
    assert!(!matches!(a.read(&mut one).await, Ok(1)));
}

/// The same when the session fails on its own, its peer silent past the keepalive
/// timeout (a link whose packets are dropped): its go-away cannot leave, but the
/// session reads as closed when its streams learn of the failure, not seconds later.
#[tokio::test(start_paused = true)]
async fn a_stream_woken_by_a_keepalive_failure_finds_the_session_closed() {
    let (near, _far) = tokio::io::duplex(64 * 1024);
    let cfg = Config {
        keepalive_interval: Some(Duration::from_secs(10)),
        keepalive_timeout: Duration::from_secs(20),
        ..Config::default()
    };
    let client = Arc::new(Mux::spawn(near, Role::Client, cfg));
    let mut a = client.open().await.unwrap();
    let check = ClosedWhenWoken::watch(&client, &mut a);
    let started = tokio::time::Instant::now();
    let seen = check.seen(Duration::from_secs(60)).await;
    assert!(seen, "the session read as open when the stream was woken");
    assert!(
        started.elapsed() < Duration::from_secs(23),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        client.closed().await,
        SessionError::KeepaliveTimeout(Duration::from_secs(20))
    );
}
