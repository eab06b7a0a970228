//! The transport-neutral session and stream types: enums over the implementations of
//! [`TransportSession`] and [`TransportStream`], so callers never name a transport.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use netbore_mux::{GoAwayCode, MuxStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::TransportError;
use crate::mux_session::MuxSession;
use crate::quic::{QuicSession, QuicStream};
use crate::traits::{TransportSession, TransportStream};

/// Which transport a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// The Netbore mux over a plain TCP connection.
    Tcp,
    /// The Netbore mux over TLS over TCP (ALPN `netbore/1`).
    Tls,
    /// The Netbore mux over WebSocket binary messages, unencrypted (`ws://`, for
    /// local development).
    Ws,
    /// The Netbore mux over WebSocket binary messages over TLS (`wss://`).
    Wss,
    /// QUIC: each Netbore stream a native QUIC stream, no mux (UDP, same port number).
    Quic,
}

impl TransportKind {
    /// Every transport this build can dial, in the order an Edge prefers them when it
    /// has a certificate agents trust.
    pub const ALL: [TransportKind; 5] = [
        TransportKind::Quic,
        TransportKind::Wss,
        TransportKind::Tls,
        TransportKind::Tcp,
        TransportKind::Ws,
    ];

    /// The name used on the command line, in the control plane's candidates and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
            TransportKind::Quic => "quic",
        }
    }

    /// True when the transport runs over TLS (and so checks the Edge's certificate).
    pub fn uses_tls(self) -> bool {
        matches!(
            self,
            TransportKind::Tls | TransportKind::Wss | TransportKind::Quic
        )
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TransportKind {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Self, UnknownTransport> {
        TransportKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownTransport(s.to_string()))
    }
}

/// A transport name this build does not know.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0:?} is not a transport; choose auto, quic, wss, tls, tcp or ws")]
pub struct UnknownTransport(pub String);

/// One Agent↔Edge session on any transport. Cloning shares the session.
#[derive(Debug, Clone)]
pub enum Session {
    /// The Netbore mux over one byte stream (tcp, tls, ws, wss: the kind is recorded
    /// in the [`MuxSession`]).
    Mux(MuxSession),
    /// A QUIC connection, each stream a native QUIC stream.
    Quic(QuicSession),
}

impl Session {
    /// Opens a stream to the peer.
    pub async fn open(&self) -> Result<Stream, TransportError> {
        match self {
            Session::Mux(s) => Ok(Stream::Mux(s.open().await?)),
            Session::Quic(s) => Ok(Stream::Quic(s.open().await?)),
        }
    }

    /// Waits for the next stream the peer opens; `None` once the session is ending.
    pub async fn accept(&self) -> Option<Stream> {
        match self {
            Session::Mux(s) => s.accept().await.map(Stream::Mux),
            Session::Quic(s) => s.accept().await.map(Stream::Quic),
        }
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> SocketAddr {
        match self {
            Session::Mux(s) => s.peer_addr(),
            Session::Quic(s) => s.peer_addr(),
        }
    }

    /// The transport this session runs on.
    pub fn kind(&self) -> TransportKind {
        match self {
            Session::Mux(s) => s.kind,
            Session::Quic(s) => s.kind(),
        }
    }

    /// The latest measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        match self {
            Session::Mux(s) => s.rtt(),
            Session::Quic(s) => s.rtt(),
        }
    }

    /// Closes the session, telling the peer why.
    pub fn close(&self, code: GoAwayCode) {
        match self {
            Session::Mux(s) => s.close(code),
            Session::Quic(s) => s.close(code),
        }
    }

    /// Closes the session like [`Session::close`], then waits (up to `limit`) until the
    /// goodbye has left: the mux's go-away is flushed, or QUIC's close is sent and
    /// the agent's endpoint is idle. Call it before the process exits, so the peer
    /// learns at once instead of after its idle timeout.
    pub async fn close_and_flush(&self, code: GoAwayCode, limit: Duration) {
        self.close(code);
        let flushed = async {
            match self {
                Session::Mux(s) => {
                    s.closed().await;
                }
                Session::Quic(s) => s.wait_idle().await,
            }
        };
        let _ = tokio::time::timeout(limit, flushed).await;
    }

    /// Waits until the session has ended and says why.
    pub async fn closed(&self) -> TransportError {
        match self {
            Session::Mux(s) => s.closed().await,
            Session::Quic(s) => s.closed().await,
        }
    }

    /// The Edge accepted the agent's hello: lift what an unauthenticated peer is held
    /// to (a QUIC session's receive window; a mux session's limits do not change).
    pub fn hello_accepted(&self) {
        if let Session::Quic(s) = self {
            s.hello_accepted();
        }
    }

    /// Lets the peer open up to `backlog` streams not accepted yet (a fleet link,
    /// whose streams are viewers, unlike an agent's); a QUIC session's peer may then
    /// have its stream limit open.
    pub fn set_accept_backlog(&self, backlog: usize) {
        match self {
            Session::Mux(s) => s.mux.set_accept_backlog(backlog),
            Session::Quic(s) => s.accept_streams(),
        }
    }

    /// True once the session has ended.
    pub fn is_closed(&self) -> bool {
        match self {
            Session::Mux(s) => s.is_closed(),
            Session::Quic(s) => s.is_closed(),
        }
    }
}

/// One bidirectional stream of a [`Session`].
#[derive(Debug)]
pub enum Stream {
    /// A mux stream (tcp, tls, ws, wss).
    Mux(MuxStream),
    /// A QUIC stream.
    Quic(QuicStream),
}

impl Stream {
    /// Reads the next chunk without copying; `None` at end of stream.
    pub fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        match self {
            Stream::Mux(s) => TransportStream::poll_read_chunk(s, cx),
            Stream::Quic(s) => s.poll_read_chunk(cx),
        }
    }

    /// Queues a prefix of `data` without copying; returns how much was taken.
    pub fn poll_write_bytes(
        &mut self,
        cx: &mut Context<'_>,
        data: &Bytes,
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Mux(s) => TransportStream::poll_write_bytes(s, cx, data),
            Stream::Quic(s) => s.poll_write_bytes(cx, data),
        }
    }

    /// Aborts the stream in both directions.
    pub fn reset(&mut self) {
        match self {
            Stream::Mux(s) => TransportStream::reset(s),
            Stream::Quic(s) => s.reset(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Mux(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Quic(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Mux(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Quic(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Mux(s) => Pin::new(s).poll_flush(cx),
            Stream::Quic(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Mux(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Quic(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
