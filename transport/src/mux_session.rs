//! The trait family implemented by the Netbore mux, shared by every transport that
//! carries one byte stream (`tcp` today, `wss` later).

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use netbore_mux::{GoAwayCode, Mux, MuxStream};

use crate::TransportError;
use crate::traits::{TransportSession, TransportStream};

/// A mux session and the address of its peer.
#[derive(Debug, Clone)]
pub struct MuxSession {
    /// The mux handle.
    pub mux: Mux,
    /// The other end's address.
    pub peer: SocketAddr,
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
