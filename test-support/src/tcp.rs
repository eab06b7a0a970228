//! Loopback TCP helpers for end-to-end tests: a two-way transfer checked by checksum,
//! an echoing origin, and a read that expects the peer to close.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::pattern::{read_all, send_pattern};

/// Sends `total` pattern bytes each way between a viewer of `public` and `origin`; asserts both.
pub async fn round_trip(origin: &TcpListener, public: SocketAddr, total: usize) {
    let (viewer, accepted) = tokio::join!(TcpStream::connect(public), origin.accept());
    let (mut viewer_r, mut viewer_w) = viewer.unwrap().into_split();
    let (mut origin_r, mut origin_w) = accepted.unwrap().0.into_split();
    let origin_send = tokio::spawn(async move { send_pattern(&mut origin_w, 2, total).await });
    let origin_read = tokio::spawn(async move { read_all(&mut origin_r).await });
    let viewer_send = tokio::spawn(async move { send_pattern(&mut viewer_w, 1, total).await });
    let viewer_got = read_all(&mut viewer_r).await;
    let viewer_sent = viewer_send.await.unwrap();
    let origin_got = origin_read.await.unwrap();
    let origin_sent = origin_send.await.unwrap();
    assert_eq!(viewer_sent.len, total as u64);
    assert_eq!(origin_got, viewer_sent, "viewer → origin bytes differ");
    assert_eq!(viewer_got, origin_sent, "origin → viewer bytes differ");
}

/// A loopback listener for an origin that takes bursts of connections: tokio's
/// `bind` queues only 128 (std's value), and the agent dials the origin once per viewer,
/// so a burst of 500 viewers overflowed it; the kernel then answered some with SYN
/// cookies that failed and reset them, which looked like the tunnel losing streams.
pub fn origin_listener() -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(4096).unwrap()
}

/// A loopback TCP origin echoing each connection until EOF; runs until its task ends.
pub async fn echo_origin() -> (SocketAddr, JoinHandle<()>) {
    let listener = origin_listener();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// Reads until EOF (or an error) and returns what came; panics if still open after `limit`.
pub async fn read_until_closed(s: &mut (impl AsyncRead + Unpin), limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let res = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(res.is_ok(), "connection still open after {limit:?}");
    out
}
