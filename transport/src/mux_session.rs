//! The trait family implemented by the Netbore mux, shared by every transport that
//! carries one byte stream (`tcp`, `tls`, `ws`, `wss`). The mux driver is generic
//! over the byte stream, so each transport's IO type is used directly (plain TCP keeps
//! its vectored writes); nothing is boxed.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use netbore_mux::{Config, GoAwayCode, Mux, MuxStream, Role};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::traits::{TransportSession, TransportStream};
use crate::{Session, TransportError, TransportKind};

/// A mux session, the address of its peer, and the transport under it.
#[derive(Debug, Clone)]
pub struct MuxSession {
    /// The mux handle.
    pub mux: Mux,
    /// The other end's address (through a proxy: the proxy's).
    pub peer: SocketAddr,
    /// The transport carrying the mux's bytes.
    pub kind: TransportKind,
}

/// Starts the mux over `io` (any byte stream: a `TcpStream`, a TLS stream, a
/// WebSocket adapter) and returns it as a [`Session`] of `kind`.
pub fn spawn<T>(io: T, role: Role, config: Config, peer: SocketAddr, kind: TransportKind) -> Session
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Session::Mux(MuxSession {
        mux: Mux::spawn(io, role, config),
        peer,
        kind,
    })
}

impl TransportSession for MuxSession {
    type Stream = MuxStream;

    async fn open(&self) -> Result<MuxStream, TransportError> {
        Ok(self.mux.open().await?)
    }

    async fn accept(&self) -> Option<MuxStream> {
        self.mux.accept().await
    }

    fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    fn rtt(&self) -> Option<Duration> {
        self.mux.rtt()
    }

    fn close(&self, code: GoAwayCode) {
        self.mux.close(code)
    }

    async fn closed(&self) -> TransportError {
        TransportError::Session(self.mux.closed().await)
    }

    fn is_closed(&self) -> bool {
        self.mux.is_closed()
    }
}

impl TransportStream for MuxStream {
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        MuxStream::poll_read_chunk(self, cx)
    }

    fn poll_write_bytes(&mut self, cx: &mut Context<'_>, data: &Bytes) -> Poll<io::Result<usize>> {
        MuxStream::poll_write_bytes(self, cx, data)
    }

    fn reset(&mut self) {
        MuxStream::reset(self)
    }
}
