//! The tokio driver: the one task that moves bytes between the connection and the
//! sans-IO session. It reads into a large buffer (payloads are split off it without
//! copying), writes queued frames with vectored writes, and fires the keepalive timer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::buffer::RecycledBuffer;
use crate::error::SessionError;
use crate::shared::{Shared, register};
use crate::write_queue::poll_write_queue;

/// Read buffer growth step; one read syscall can fill this much.
const READ_CHUNK: usize = 256 * 1024;
/// Most slices handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// Loop iterations before the driver yields to other tasks.
const POLL_BUDGET: usize = 32;

/// The future that drives one mux session over `T`. Spawn it (or use [`crate::Mux::spawn`]).
#[must_use = "the session makes no progress unless its driver is polled"]
pub struct Driver<T> {
    io: T,
    shared: Arc<Shared>,
    read_buf: RecycledBuffer,
    write_queue: VecDeque<Bytes>,
    sleep: Pin<Box<Sleep>>,
    deadline: Option<Instant>,
    closed_tx: watch::Sender<Option<SessionError>>,
    /// True when the last pass found nothing to do.
    idle: bool,
    /// While set, the driver waits for the other ready tasks to run first.
    gathering: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<T> std::fmt::Debug for Driver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl<T> Driver<T> {
    pub(crate) fn new(
        io: T,
        shared: Arc<Shared>,
        closed_tx: watch::Sender<Option<SessionError>>,
    ) -> Self {
        Driver {
            io,
            shared,
            read_buf: RecycledBuffer::new(READ_CHUNK),
            write_queue: VecDeque::new(),
            sleep: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            deadline: None,
            closed_tx,
            idle: true,
            gathering: None,
        }
    }
}

/// What one pass of the driver found out.
enum Step {
    Progress,
    Idle,
    Done(SessionError),
}

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    fn step(&mut self, cx: &mut Context<'_>) -> Step {
        let mut progress = false;
        // One lock for everything the pass needs to know up front.
        let (wants_input, closing, deadline) = {
            let mut inner = self.shared.lock();
            register(&mut inner.driver_waker, cx.waker());
            if self.write_queue.is_empty() {
                inner.session.poll_transmit(&mut self.write_queue);
            }
            inner.dispatch_events();
            (
                inner.session.wants_input(),
                inner.session.is_closing(),
                inner.session.poll_timeout(),
            )
        };

        // Write everything queued, as few syscalls as the kernel allows.
        while !self.write_queue.is_empty() {
            match poll_write_queue::<MAX_IOVECS, _>(&mut self.io, cx, &mut self.write_queue) {
                Poll::Ready(Ok(0)) => return Step::Done(SessionError::ConnectionClosed),
                Poll::Ready(Ok(_)) => progress = true,
                Poll::Ready(Err(e)) => return Step::Done(SessionError::Io(e.to_string())),
                Poll::Pending => break,
            }
        }
        if self.write_queue.is_empty()
            && let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx)
        {
            return Step::Done(SessionError::Io(e.to_string()));
        }

        if closing && self.write_queue.is_empty() && !self.shared.lock().session.has_transmit() {
            // The go-away is out: close our side and stop.
            let _ = Pin::new(&mut self.io).poll_shutdown(cx);
            let error = self.shared.lock().session.error().cloned();
            return Step::Done(error.unwrap_or(SessionError::Closed));
        }

        if wants_input {
            // The session takes data frames in pieces, so what stays in the buffer
            // between reads is at most a partial header: no frame needs room to grow.
            let buf = self.read_buf.prepare(READ_CHUNK / 4);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, buf) {
                Poll::Ready(Ok(0)) => return Step::Done(SessionError::ConnectionClosed),
                Poll::Ready(Ok(_)) => {
                    progress = true;
                    let mut inner = self.shared.lock();
                    // A protocol error queues a go-away; the next pass flushes it.
                    let _ = inner
                        .session
                        .handle_input(self.read_buf.get_mut(), crate::shared::now());
                    inner.dispatch_events();
                }
                Poll::Ready(Err(e)) => return Step::Done(SessionError::Io(e.to_string())),
                Poll::Pending => {}
            }
        }

        if let Some(at) = deadline {
            if self.deadline != Some(at) {
                self.deadline = Some(at);
                self.sleep.as_mut().reset(at.into());
            }
            if self.sleep.as_mut().poll(cx).is_ready() {
                self.deadline = None;
                let mut inner = self.shared.lock();
                inner.session.handle_timeout(crate::shared::now());
                progress = true;
            }
        }

        if progress { Step::Progress } else { Step::Idle }
    }

    /// Woken from idle with fresh frames to send, the driver first lets every other
    /// task that is ready run (tokio's `yield_now` defers until the worker's queue
    /// is empty), so frames that many streams queue in the same moment leave in one
    /// write instead of one write each.
    fn gather_first(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.gathering.is_none() {
            if !self.idle || !self.write_queue.is_empty() {
                return Poll::Ready(());
            }
            if !self.shared.lock().session.has_transmit() {
                return Poll::Ready(());
            }
            self.gathering = Some(Box::pin(tokio::task::yield_now()));
        }
        let gathering = self.gathering.as_mut().expect("set above");
        if gathering.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.gathering = None;
        Poll::Ready(())
    }

    fn finish(&mut self, error: SessionError) {
        tracing::debug!(%error, "mux session ended");
        let mut inner = self.shared.lock();
        inner.session.handle_connection_lost(error);
        inner.dispatch_events();
        inner.wake_all();
        let final_error = inner
            .session
            .error()
            .cloned()
            .unwrap_or(SessionError::Closed);
        drop(inner);
        self.closed_tx.send_replace(Some(final_error));
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for Driver<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.gather_first(cx).is_pending() {
            return Poll::Pending;
        }
        this.idle = false;
        for _ in 0..POLL_BUDGET {
            match this.step(cx) {
                Step::Progress => continue,
                Step::Idle => {
                    this.idle = true;
                    return Poll::Pending;
                }
                Step::Done(error) => {
                    this.finish(error);
                    return Poll::Ready(());
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
