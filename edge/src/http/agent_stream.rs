//! The Edge's end of an HTTP tunnel stream. The agent starts its side of every such
//! stream with an [`OriginStatus`] before any byte of the origin's
//! (`docs/protocols/handshake.md`, section 4): [`AgentStream`] reads and removes it,
//! then hands on the origin's bytes untouched, or fails every read with
//! [`OriginUnreachable`]. The origin's bytes can only come after the agent's
//! "connected", so no origin can make the Edge show its "origin unreachable" page.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use netbore_metrics::TunnelStats;
use netbore_transport::Stream;
use netbore_transport::proto::OriginStatus;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::h1::ReadChunk;

/// The agent could not reach the tunnel's origin.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OriginUnreachable {
    /// The agent's sentence, naming the address it tried.
    pub message: String,
}

impl OriginUnreachable {
    /// The `OriginUnreachable` somewhere in `error`'s chain of causes, also inside an
    /// [`io::Error`].
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<Self>() {
                return Some(found);
            }
            // `io::Error::source` skips the error it wraps: look inside.
            if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref())
                && let Some(found) = inner.downcast_ref::<Self>()
            {
                return Some(found);
            }
            next = e.source();
        }
        None
    }
}

/// The node of a fleet a stream was relayed to does not serve the tunnel (any
/// more): it moved, or its session there ended, since this node last heard. Nothing
/// reached an agent.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the node the tunnel was relayed to does not serve it now")]
pub struct NotHeld;

impl NotHeld {
    /// Whether a `NotHeld` is somewhere in `error`'s chain of causes, also inside an
    /// [`io::Error`].
    pub fn within(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if e.is::<Self>()
                || e.downcast_ref::<io::Error>()
                    .and_then(|io| io.get_ref())
                    .is_some_and(|inner| inner.is::<Self>())
            {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// A stream to the agent of an HTTP tunnel, with the agent's origin status removed
/// from the front of what it reads.
#[derive(Debug)]
pub struct AgentStream {
    io: Stream,
    status: Status,
    /// The tunnel's counters: bytes written count as `in` (from viewers), bytes
    /// handed on as `out` (to viewers).
    stats: Arc<TunnelStats>,
    /// Counts the stream among those open while it lives.
    _open: netbore_metrics::GaugeGuard,
}

#[derive(Debug)]
enum Status {
    /// Not read yet: the bytes of a status split over several chunks.
    Pending(BytesMut),
    /// Connected: what arrived with the status and is not handed on yet.
    Connected(Bytes),
    /// The agent could not reach the origin.
    Unreachable(String),
    /// The node this stream was relayed to does not serve the tunnel.
    NotHeld,
}

impl AgentStream {
    /// The stream `io`, whose first bytes will be the agent's origin status, counted
    /// in `stats`.
    pub fn new(io: Stream, stats: Arc<TunnelStats>) -> Self {
        AgentStream {
            io,
            status: Status::Pending(BytesMut::new()),
            stats,
            _open: netbore_metrics::server().streams_open.hold(),
        }
    }

    /// Reads until the status is known. `Ok(Some)`: origin bytes that came with it;
    /// `Ok(None)`: the stream ended first.
    fn poll_status(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<()>>> {
        loop {
            let gathered = match &mut self.status {
                Status::Connected(_) => return Poll::Ready(Ok(Some(()))),
                Status::Unreachable(message) => {
                    let e = OriginUnreachable {
                        message: message.clone(),
                    };
                    return Poll::Ready(Err(io::Error::other(e)));
                }
                Status::NotHeld => return Poll::Ready(Err(io::Error::other(NotHeld))),
                Status::Pending(gathered) => gathered,
            };
            let Some(chunk) = ready!(self.io.poll_read_chunk(cx))? else {
                return Poll::Ready(Ok(None));
            };
            // Usually the whole status is in the first chunk: no copy.
            let mut input = if gathered.is_empty() {
                chunk
            } else {
                gathered.extend_from_slice(&chunk);
                gathered.split().freeze()
            };
            match OriginStatus::decode(&input)? {
                None => gathered.extend_from_slice(&input),
                Some((OriginStatus::Connected, len)) => {
                    input.advance(len);
                    self.status = Status::Connected(input);
                }
                Some((OriginStatus::Unreachable(message), _)) => {
                    self.status = Status::Unreachable(message);
                }
                Some((OriginStatus::NotHeld, _)) => self.status = Status::NotHeld,
            }
        }
    }
}

impl ReadChunk for AgentStream {
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if ready!(self.poll_status(cx))?.is_none() {
            return Poll::Ready(Ok(None));
        }
        if let Status::Connected(rest) = &mut self.status
            && !rest.is_empty()
        {
            self.stats.bytes_out.add(rest.len() as u64);
            return Poll::Ready(Ok(Some(std::mem::take(rest))));
        }
        let chunk = ready!(self.io.poll_read_chunk(cx))?;
        if let Some(c) = &chunk {
            self.stats.bytes_out.add(c.len() as u64);
        }
        Poll::Ready(Ok(chunk))
    }
}

impl AsyncRead for AgentStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if ready!(this.poll_status(cx))?.is_none() {
            return Poll::Ready(Ok(()));
        }
        if let Status::Connected(rest) = &mut this.status
            && !rest.is_empty()
        {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            rest.advance(n);
            this.stats.bytes_out.add(n as u64);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        this.stats
            .bytes_out
            .add((buf.filled().len() - before) as u64);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for AgentStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.stats.bytes_in.add(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_status_is_found_inside_io_errors_and_their_wrappers() {
        let e = io::Error::other(OriginUnreachable {
            message: "no service at 127.0.0.1:1".into(),
        });
        assert_eq!(
            OriginUnreachable::find(&e).map(|u| u.message.as_str()),
            Some("no service at 127.0.0.1:1")
        );
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapper(#[source] io::Error);
        assert!(OriginUnreachable::find(&Wrapper(e)).is_some());
        assert!(OriginUnreachable::find(&io::Error::other("plain")).is_none());
    }

    #[test]
    fn not_held_is_found_inside_io_errors_and_their_wrappers() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapper(#[source] io::Error);
        assert!(NotHeld::within(&Wrapper(io::Error::other(NotHeld))));
        assert!(NotHeld::within(&io::Error::other(NotHeld)));
        assert!(!NotHeld::within(&io::Error::other("plain")));
    }
}
