//! The trait family every transport implements. Callers use the [`crate::Session`] and
//! [`crate::Stream`] enums (static dispatch, no `Box<dyn>` on the data path); a new
//! transport implements these two traits and becomes one more enum variant.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use netbore_mux::GoAwayCode;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::TransportError;

/// One Agent↔Edge session of a transport: opens and accepts streams.
pub trait TransportSession: Clone + Send + Sync + 'static {
    /// The transport's stream type.
    type Stream: TransportStream;

    /// Opens a stream to the peer.
    fn open(&self) -> impl Future<Output = Result<Self::Stream, TransportError>> + Send;

    /// Waits for the next stream the peer opens; `None` once the session is ending.
    fn accept(&self) -> impl Future<Output = Option<Self::Stream>> + Send;

    /// The other end's address.
    fn peer_addr(&self) -> SocketAddr;

    /// The latest measured round-trip time.
    fn rtt(&self) -> Option<Duration>;

    /// Closes the session, telling the peer why.
    fn close(&self, code: GoAwayCode);

    /// Waits until the session has ended and says why.
    fn closed(&self) -> impl Future<Output = TransportError> + Send;

    /// True once the session has ended.
    fn is_closed(&self) -> bool;
}

/// One bidirectional stream: a byte stream with half-close (`poll_shutdown`), plus
/// zero-copy chunk operations for forwarding loops.
pub trait TransportStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Reads the next chunk as it arrived, without copying; `None` at end of stream.
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>>;

    /// Queues a prefix of `data` without copying; returns how much was taken.
    fn poll_write_bytes(&mut self, cx: &mut Context<'_>, data: &Bytes) -> Poll<io::Result<usize>>;

    /// Aborts the stream in both directions.
    fn reset(&mut self);
}
