//! Streams from the Edge to the Origin: read the stream header, dial the origin, pipe.
//! Every stream of an HTTP tunnel starts, on the agent's side, with an
//! [`OriginStatus`]: connected (the origin's bytes follow), or unreachable with a
//! sentence naming the address the agent tried, so the viewer learns what is wrong.
//! Only the agent writes that status, before any origin byte, so no origin can forge
//! it. The unreachable status is sent only after the request head has arrived (an
//! HTTP client meets an answer that comes before its request as a broken connection),
//! and the stream is closed cleanly (FIN, then the agent drains what the Edge still
//! sends) instead of reset, so the answer is never lost to a reset racing it.

use std::sync::Arc;
use std::time::Duration;

use netbore_control::api::Protocol;

use crate::inspect::ByteCount;
use crate::inspect::queued_tap::QueuedTap;
use netbore_transport::proto::{OriginStatus, StreamHeader};
use netbore_transport::{Session, Stream, pipe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of a request head the agent reads before its unreachable status.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// The most the agent discards of what the Edge sends after that status.
const MAX_DRAIN: usize = 1024 * 1024;
/// How long the agent waits for the Edge to finish after that status.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Where one tunnel's streams go.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// `HOST:PORT`.
    pub(crate) addr: String,
    /// The tunnel's protocol.
    pub(crate) protocol: Protocol,
    /// The tunnel's id, for logs.
    pub(crate) tunnel_id: String,
    /// The tunnel's counters (and its place in the metrics while the session lives).
    pub(crate) metrics: Arc<netbore_metrics::TunnelGuard>,
    /// The inspector, when it records this tunnel's requests or connections.
    pub(crate) inspector: Option<crate::inspect::Inspector>,
}

/// Accepts streams until the session ends, each piped to its tunnel's origin.
pub(crate) async fn serve(session: &Session, origins: Vec<Origin>, timeout: Duration) {
    let origins: Arc<[Origin]> = origins.into();
    while let Some(stream) = session.accept().await {
        tokio::spawn(forward(stream, origins.clone(), timeout));
    }
}

async fn forward(mut stream: Stream, origins: Arc<[Origin]>, timeout: Duration) {
    let header = match tokio::time::timeout(timeout, StreamHeader::read(&mut stream)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the Edge opened a stream with a malformed header; dropped it");
            stream.reset();
            return;
        }
        Err(_) => {
            stream.reset();
            return;
        }
    };
    let Some(origin) = origins.get(header.slot as usize) else {
        tracing::warn!(
            slot = header.slot,
            "the Edge opened a stream for an unknown tunnel; dropped it"
        );
        stream.reset();
        return;
    };
    let addr = origin.addr.as_str();
    let metrics = netbore_metrics::agent();
    let _open = metrics.streams_open.hold();
    let started = std::time::Instant::now();
    let failure = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(socket)) => {
            metrics.origin_connect.observe(started.elapsed());
            let _ = socket.set_nodelay(true);
            if origin.protocol == Protocol::Http && stream.write_all(&[CONNECTED]).await.is_err() {
                return;
            }
            let stats = origin.metrics.stats();
            // The origin is the socket: what goes to the stream goes out to viewers.
            let counted = pipe::Counted {
                to_stream: &stats.bytes_out,
                from_stream: &stats.bytes_in,
            };
            // One pipe future whatever is inspected (each stream's task holds it).
            // An HTTP stream's bytes are read by the capture thread: forwarding
            // only copies them into its queue (the tap is boxed: only inspected
            // streams pay for it).
            // A TCP connection's bytes are counted as they pass, so one that ends
            // in a reset still shows what it moved.
            let mut http_tap: Option<Box<QueuedTap>> = None;
            let mut moved = ByteCount::default();
            let tap: Option<&mut dyn pipe::Tap> = match (&origin.inspector, origin.protocol) {
                (None, _) => None,
                (Some(inspector), Protocol::Http) => {
                    http_tap = QueuedTap::new(inspector, header.slot as usize, header.viewer.ip())
                        .map(Box::new);
                    http_tap.as_deref_mut().map(|tap| tap as &mut dyn pipe::Tap)
                }
                (Some(inspector), Protocol::Tcp | Protocol::Tls) => {
                    moved.connection =
                        inspector.connection_opened(header.slot as usize, header.viewer);
                    Some(&mut moved)
                }
            };
            let mut socket = socket;
            let result = pipe::join_tapped(&mut socket, stream, Some(counted), tap).await;
            if result.is_err() {
                // Cut (the Edge or the viewer went away): the origin sees a reset,
                // not a request that ended cleanly.
                let _ = socket.set_zero_linger();
            }
            drop(http_tap);
            if let Some(inspector) = &origin.inspector
                && moved.connection != 0
            {
                inspector.connection_closed(moved.connection, moved.from_viewer, moved.to_viewer);
            }
            if let Err(e) = result {
                tracing::debug!(tunnel_id = %origin.tunnel_id, viewer = %header.viewer, error = %e, "viewer stream ended with an error");
            }
            return;
        }
        Ok(Err(e)) => {
            format!("the agent could not reach the local service at {addr} ({e}); is it running?")
        }
        Err(_) => format!(
            "the local service at {addr} did not accept a connection within {timeout:?}; is it overloaded?"
        ),
    };
    metrics.origin_failures.inc();
    tracing::warn!(tunnel_id = %origin.tunnel_id, "{failure} (viewer {})", header.viewer);
    match origin.protocol {
        Protocol::Http => answer_unreachable(stream, &failure, timeout).await,
        Protocol::Tcp | Protocol::Tls => stream.reset(),
    }
}

/// The encoded [`OriginStatus::Connected`]: one byte, written before the origin's.
const CONNECTED: u8 = netbore_transport::proto::ORIGIN_CONNECTED;

/// Tells the Edge the origin is unreachable, with `message`; the Edge turns it into
/// its own error page. Waits (up to `timeout`) for the request head first: an HTTP
/// client treats an answer that comes before its request as a broken connection.
async fn answer_unreachable(mut stream: Stream, message: &str, timeout: Duration) {
    if tokio::time::timeout(timeout, read_and_drop(&mut stream, MAX_REQUEST_HEAD, true))
        .await
        .is_err()
    {
        stream.reset();
        return;
    }
    let status = OriginStatus::Unreachable(message.to_string()).encode();
    let _ = stream.write_all(&status).await;
    let _ = stream.shutdown().await;
    // Dropping the stream with the Edge's data unread would reset it, and a reset can
    // reach the Edge before it has taken the answer. Read to the Edge's close instead.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, read_and_drop(&mut stream, MAX_DRAIN, false)).await;
}

/// Reads and drops up to `limit` bytes, until the end of the stream or an error; with
/// `head_only`, stops after the blank line that ends an HTTP request head as well
/// (body bytes read with it are dropped: the answer closes the connection anyway).
async fn read_and_drop(stream: &mut Stream, limit: usize, head_only: bool) {
    // On the heap: a buffer held across an await would sit in every stream's task.
    let mut buf = vec![0u8; 4096];
    // What the last read brought, after the last three bytes before it: a blank line
    // may straddle two reads.
    let mut recent = Vec::new();
    let mut left = limit;
    while left > 0 {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        left = left.saturating_sub(n);
        if head_only {
            recent.extend_from_slice(&buf[..n]);
            if recent.windows(4).any(|w| w == b"\r\n\r\n") {
                return;
            }
            recent.drain(..recent.len().saturating_sub(3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbore_mux::{Config, Role};
    use netbore_transport::{TransportKind, mux_session};
    use tokio::net::TcpListener;

    /// An Edge-side and an agent-side session over a loopback TCP connection, the
    /// agent serving one HTTP tunnel whose origin port is closed.
    async fn refused_http_tunnel() -> (Session, String) {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        (http_tunnel(closed_addr.clone()).await, closed_addr)
    }

    /// An Edge-side session whose agent serves one HTTP tunnel to `origin`.
    async fn http_tunnel(origin: String) -> Session {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (dialed, (accepted, peer)) = (dialed.unwrap(), accepted.unwrap());
        let agent = mux_session::spawn(
            dialed,
            Role::Client,
            Config::default(),
            addr,
            TransportKind::Tcp,
        );
        let edge = mux_session::spawn(
            accepted,
            Role::Server,
            Config::default(),
            peer,
            TransportKind::Tcp,
        );
        let origins = vec![Origin {
            addr: origin,
            protocol: Protocol::Http,
            tunnel_id: "t_test".into(),
            metrics: Arc::new(netbore_metrics::agent().tunnels.add("t_test", "http")),
            inspector: None,
        }];
        tokio::spawn(async move { serve(&agent, origins, Duration::from_secs(5)).await });
        edge
    }

    async fn open_stream(edge: &Session) -> Stream {
        let mut stream = edge.open().await.unwrap();
        let header = StreamHeader {
            slot: 0,
            viewer: "192.0.2.1:5000".parse().unwrap(),
        };
        stream.write_all(&header.encode()).await.unwrap();
        stream
    }

    #[tokio::test]
    async fn a_forwarded_stream_task_stays_small() {
        // Every idle viewer stream holds one of these futures for its lifetime, so
        // its size is memory per idle stream (docs/benchmarks.md, "Memory").
        let (edge, _) = refused_http_tunnel().await;
        let stream = edge.open().await.unwrap();
        let origins: Arc<[Origin]> = Vec::new().into();
        let task = forward(stream, origins, Duration::from_secs(1));
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "the per-stream future is {size} bytes");
    }

    #[tokio::test]
    async fn the_unreachable_answer_waits_for_the_request_head() {
        let (edge, closed) = refused_http_tunnel().await;
        let mut stream = open_stream(&edge).await;
        // Nothing comes back before the request does.
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await;
        assert!(
            early.is_err(),
            "the agent answered before the request: {early:?}"
        );
        // The head's blank line split across two writes still ends it.
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: app\r\n\r")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.write_all(b"\n").await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let (status, len) = OriginStatus::decode(&answer).unwrap().unwrap();
        assert_eq!(len, answer.len(), "nothing follows the status");
        let OriginStatus::Unreachable(message) = status else {
            panic!("{status:?}");
        };
        assert!(message.contains(&closed), "{message}");
    }

    #[tokio::test]
    async fn an_origin_s_bytes_follow_the_connected_status() {
        // An origin that tries to forge the unreachable status as its first bytes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let forged = OriginStatus::Unreachable("forged".into()).encode();
        let sent = forged.clone();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(&sent).await.unwrap();
        });
        let edge = http_tunnel(addr).await;
        let mut stream = open_stream(&edge).await;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let (status, len) = OriginStatus::decode(&answer).unwrap().unwrap();
        assert_eq!(status, OriginStatus::Connected);
        assert_eq!(
            &answer[len..],
            &forged[..],
            "the origin's bytes follow, unread"
        );
    }

    #[tokio::test]
    async fn the_unreachable_answer_ends_the_stream_without_a_reset() {
        let (edge, _) = refused_http_tunnel().await;
        let mut stream = open_stream(&edge).await;
        let body = vec![b'x'; 512 * 1024];
        let head = format!(
            "POST /upload HTTP/1.1\r\nhost: app\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        assert_eq!(
            answer.first(),
            Some(&netbore_transport::proto::ORIGIN_UNREACHABLE)
        );
        // The agent has answered and finished; it must still take the rest of the
        // request rather than reset the stream under the Edge.
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream
            .write_all(&body)
            .await
            .expect("the agent reset the stream after its answer");
        stream
            .shutdown()
            .await
            .expect("the agent reset the stream after its answer");
    }
}
