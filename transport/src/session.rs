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
use crate::traits::{TransportSession, TransportStream};

/// Which transport a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// The Netbore mux over a plain TCP connection.
    Tcp,
}

impl TransportKind {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
        }
    }
}

/// One Agent↔Edge session on any transport. Cloning shares the session.
#[derive(Debug, Clone)]
pub enum Session {
    /// Mux over TCP.
    Tcp(MuxSession),
}

impl Session {
    /// Opens a stream to the peer.
    pub async fn open(&self) -> Result<Stream, TransportError> {
        match self {
            Session::Tcp(s) => Ok(Stream::Mux(s.open().await?)),
        }
    }

    /// Waits for the next stream the peer opens; `None` once the session is ending.
    pub async fn accept(&self) -> Option<Stream> {
        match self {
            Session::Tcp(s) => s.accept().await.map(Stream::Mux),
        }
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> SocketAddr {
        match self {
            Session::Tcp(s) => s.peer_addr(),
        }
    }

    /// The transport this session runs on.
    pub fn kind(&self) -> TransportKind {
        match self {
            Session::Tcp(_) => TransportKind::Tcp,
        }
    }

    /// The latest measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        match self {
            Session::Tcp(s) => s.rtt(),
        }
    }

    /// Closes the session, telling the peer why.
    pub fn close(&self, code: GoAwayCode) {
        match self {
            Session::Tcp(s) => s.close(code),
        }
    }

    /// Waits until the session has ended and says why.
    pub async fn closed(&self) -> TransportError {
        match self {
            Session::Tcp(s) => s.closed().await,
        }
    }

    /// True once the session has ended.
    pub fn is_closed(&self) -> bool {
        match self {
            Session::Tcp(s) => s.is_closed(),
        }
    }
}

/// One bidirectional stream of a [`Session`].
#[derive(Debug)]
pub enum Stream {
    /// A mux stream (tcp, and later wss).
    Mux(MuxStream),
}

impl Stream {
    /// Reads the next chunk without copying; `None` at end of stream.
    pub fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        match self {
            Stream::Mux(s) => TransportStream::poll_read_chunk(s, cx),
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
        }
    }

    /// Aborts the stream in both directions.
    pub fn reset(&mut self) {
        match self {
            Stream::Mux(s) => TransportStream::reset(s),
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
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Mux(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Mux(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
