//! [`MuxStream`]: one bidirectional stream of a session, as `AsyncRead + AsyncWrite`,
//! plus zero-copy chunk reads and `Bytes` writes for forwarding loops.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::frame::StreamId;
use crate::session::ReadOutcome;
use crate::shared::{Shared, register};

/// One stream. Dropping it without closing both directions resets it.
#[derive(Debug)]
pub struct MuxStream {
    id: StreamId,
    shared: Arc<Shared>,
    /// The rest of a chunk a short `poll_read` could not take in full.
    chunk: Bytes,
    /// Handed to a splice, which releases the stream instead of this handle.
    detached: bool,
}

impl MuxStream {
    pub(crate) fn new(id: StreamId, shared: Arc<Shared>) -> Self {
        MuxStream {
            id,
            shared,
            chunk: Bytes::new(),
            detached: false,
        }
    }

    /// Hands the stream to a splice: its id, its session and what was read from it
    /// and not yet taken. The handle's drop then leaves the stream alone.
    pub(crate) fn detach(mut self) -> (StreamId, Arc<Shared>, Bytes) {
        self.detached = true;
        (
            self.id,
            self.shared.clone(),
            std::mem::take(&mut self.chunk),
        )
    }

    /// This stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Reads the next chunk exactly as it arrived, without copying. `None` at FIN.
    pub fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if !self.chunk.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.chunk))));
        }
        let mut inner = self.shared.lock();
        let outcome = inner.session.read(self.id, crate::shared::now);
        match outcome {
            Ok(ReadOutcome::Data(bytes)) => {
                inner.wake_driver_if_needed();
                Poll::Ready(Ok(Some(bytes)))
            }
            Ok(ReadOutcome::Fin) => Poll::Ready(Ok(None)),
            Ok(ReadOutcome::Blocked) => {
                if let Some(w) = inner.wakers.get_mut(&self.id) {
                    register(&mut w.read, cx.waker());
                }
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Reads the next chunk without copying; `None` at FIN.
    pub async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_read_chunk(cx)).await
    }

    /// Queues a prefix of `data` without copying it; returns how much was taken.
    pub fn poll_write_bytes(
        &mut self,
        cx: &mut Context<'_>,
        data: &Bytes,
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.shared.lock();
        match inner.session.write_bytes(self.id, data) {
            Ok(0) if !data.is_empty() => {
                if let Some(w) = inner.wakers.get_mut(&self.id) {
                    register(&mut w.write, cx.waker());
                }
                Poll::Pending
            }
            Ok(n) => {
                inner.wake_driver_if_needed();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Writes all of `data` without copying it.
    pub async fn write_all_bytes(&mut self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            let n = std::future::poll_fn(|cx| self.poll_write_bytes(cx, &data)).await?;
            data.advance(n);
        }
        Ok(())
    }

    /// Aborts the stream in both directions.
    pub fn reset(&mut self) {
        let mut inner = self.shared.lock();
        inner.session.reset(self.id);
        inner.wake_driver_if_needed();
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        match this.poll_read_chunk(cx) {
            Poll::Ready(Ok(Some(mut chunk))) => {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                chunk.advance(n);
                this.chunk = chunk;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut inner = this.shared.lock();
        match inner.session.write(this.id, buf) {
            Ok(0) if !buf.is_empty() => {
                if let Some(w) = inner.wakers.get_mut(&this.id) {
                    register(&mut w.write, cx.waker());
                }
                Poll::Pending
            }
            Ok(n) => {
                inner.wake_driver_if_needed();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are handed to the driver as they are written; nothing is held here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut inner = this.shared.lock();
        let result = inner.session.finish(this.id);
        inner.wake_driver_if_needed();
        Poll::Ready(result.map_err(Into::into))
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        let mut inner = self.shared.lock();
        inner.session.release(self.id);
        inner.wakers.remove(&self.id);
        crate::session::shrink_when_sparse(&mut inner.wakers);
        inner.wake_driver_if_needed();
    }
}
