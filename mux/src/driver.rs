//! The tokio driver: the one task that moves bytes between the connection and the
//! sans-IO session. It reads into a large buffer (payloads are split off it without
//! copying), writes queued frames with vectored writes, and fires the keepalive timer.
//!
//! It also bounds how long a connection can be held by a peer that stops reading:
//! output that waits `keepalive_timeout` without one byte written, or a closing
//! session whose go-away is not out after `close_timeout`, ends the connection.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::buffer::RecycledBuffer;
use crate::error::SessionError;
use crate::shared::{Shared, register};
use crate::splice::Job;
use crate::write_queue::poll_write_queue;

/// Read buffer growth step; one read syscall can fill this much.
const READ_CHUNK: usize = 256 * 1024;

/// How long the read buffer goes without needing a new allocation before the ones
/// it parked for a burst are freed.
const SHED_AFTER: Duration = Duration::from_secs(5);
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
    /// Bytes in `write_queue`.
    unsent: usize,
    /// Since when `write_queue` has waited with no byte written.
    write_blocked_since: Option<Instant>,
    /// When a closing session is dropped even if its go-away is not out.
    close_deadline: Option<Instant>,
    /// The keepalive tolerance and `close_timeout` of the session's config.
    write_timeout: Duration,
    close_timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    deadline: Option<Instant>,
    closed_tx: watch::Sender<Option<SessionError>>,
    /// True when the last pass found nothing to do.
    idle: bool,
    /// While set, the driver waits for the other ready tasks to run first.
    gathering: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The read buffer's rotations when last looked at, and when they last moved.
    rotations: (u64, Instant),
    /// Splice directions to run once the lock is let go ([`crate::splice`]).
    jobs: Vec<Job>,
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
        let (write_timeout, close_timeout) = {
            let inner = shared.lock();
            let config = inner.session.config();
            (config.tolerance(), config.close_timeout)
        };
        Driver {
            io,
            shared,
            read_buf: RecycledBuffer::new(READ_CHUNK),
            rotations: (0, crate::shared::now()),
            write_queue: VecDeque::new(),
            unsent: 0,
            write_blocked_since: None,
            close_deadline: None,
            write_timeout,
            close_timeout,
            sleep: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            deadline: None,
            closed_tx,
            idle: true,
            gathering: None,
            jobs: Vec::new(),
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
        let (input_room, closing, session_deadline) = {
            let mut inner = self.shared.lock();
            register(&mut inner.driver_waker, cx.waker());
            if self.write_queue.is_empty() {
                self.unsent = inner.session.poll_transmit(&mut self.write_queue);
                inner.spliced = false;
            }
            announce_failure(&self.closed_tx, &inner.session);
            inner.dispatch_events();
            std::mem::swap(&mut self.jobs, &mut inner.splice_jobs);
            (
                inner
                    .session
                    .input_room(self.read_buf.get_mut().len(), self.unsent),
                inner.session.is_closing(),
                inner.session.poll_timeout(),
            )
        };
        progress |= self.run_splices();

        // Write everything queued, as few syscalls as the kernel allows.
        let mut written = false;
        while !self.write_queue.is_empty() {
            match poll_write_queue::<MAX_IOVECS, _>(&mut self.io, cx, &mut self.write_queue) {
                Poll::Ready(Ok(0)) => return Step::Done(SessionError::ConnectionClosed),
                Poll::Ready(Ok(n)) => {
                    self.unsent = self.unsent.saturating_sub(n);
                    written = true;
                }
                Poll::Ready(Err(e)) => return Step::Done(SessionError::Io(e.to_string())),
                Poll::Pending => break,
            }
        }
        progress |= written;
        if self.write_queue.is_empty() {
            self.write_blocked_since = None;
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                return Step::Done(SessionError::Io(e.to_string()));
            }
        } else if written || self.write_blocked_since.is_none() {
            // The peer must take some of it within the write timeout.
            self.write_blocked_since = Some(crate::shared::now());
        }

        if closing {
            if self.write_queue.is_empty() && !self.shared.lock().session.has_transmit() {
                // The go-away is out: close our side and stop.
                let _ = Pin::new(&mut self.io).poll_shutdown(cx);
                return Step::Done(self.session_error());
            }
            if self.close_deadline.is_none() {
                self.close_deadline = Some(crate::shared::now() + self.close_timeout);
            }
        }

        if input_room > 0 {
            // The session takes data frames in pieces, so what stays in the buffer
            // between reads is at most a partial header: no frame needs room to grow.
            // The read is capped so the buffer never holds more than the session
            // allows.
            let buf = self.read_buf.prepare(READ_CHUNK / 4);
            let mut buf = bytes::BufMut::limit(buf, input_room);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut buf) {
                Poll::Ready(Ok(0)) => return Step::Done(SessionError::ConnectionClosed),
                Poll::Ready(Ok(_)) => {
                    progress = true;
                    let mut inner = self.shared.lock();
                    // A protocol error queues a go-away; the next pass flushes it.
                    let _ = inner
                        .session
                        .handle_input(self.read_buf.get_mut(), crate::shared::now());
                    announce_failure(&self.closed_tx, &inner.session);
                    inner.dispatch_events();
                    std::mem::swap(&mut self.jobs, &mut inner.splice_jobs);
                    drop(inner);
                    self.run_splices();
                }
                Poll::Ready(Err(e)) => return Step::Done(SessionError::Io(e.to_string())),
                Poll::Pending => {}
            }
        }

        let write_deadline = self.write_blocked_since.map(|t| t + self.write_timeout);
        // Allocations parked for a burst are freed once the burst is over.
        if self.read_buf.rotations() != self.rotations.0 {
            self.rotations = (self.read_buf.rotations(), crate::shared::now());
        }
        let shed_deadline = self
            .read_buf
            .holds_parked()
            .then(|| self.rotations.1 + SHED_AFTER);
        let deadline = [
            session_deadline,
            write_deadline,
            self.close_deadline,
            shed_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = deadline {
            if self.deadline != Some(at) {
                self.deadline = Some(at);
                self.sleep.as_mut().reset(at.into());
            }
            if self.sleep.as_mut().poll(cx).is_ready() {
                self.deadline = None;
                let now = crate::shared::now();
                if write_deadline.is_some_and(|at| now >= at) {
                    return Step::Done(SessionError::WriteTimeout(self.write_timeout));
                }
                if self.close_deadline.is_some_and(|at| now >= at) {
                    tracing::debug!("mux session dropped: its go-away was not flushed in time");
                    return Step::Done(self.session_error());
                }
                if shed_deadline.is_some_and(|at| now >= at) {
                    self.read_buf.shed();
                }
                let mut inner = self.shared.lock();
                inner.session.handle_timeout(now);
                announce_failure(&self.closed_tx, &inner.session);
                drop(inner);
                progress = true;
            }
        }

        if progress { Step::Progress } else { Step::Idle }
    }

    /// Why the session ended, as far as the session knows.
    fn session_error(&self) -> SessionError {
        let error = self.shared.lock().session.error().cloned();
        error.unwrap_or(SessionError::Closed)
    }

    /// Woken from idle with fresh frames to send, the driver first lets every other
    /// task that is ready run (tokio's `yield_now` defers until the worker's queue
    /// is empty), so frames that many streams queue in the same moment leave in one
    /// write instead of one write each. Frames a splice queued from another
    /// session's driver leave at once: that driver moved all it had read together.
    fn gather_first(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.gathering.is_none() {
            if !self.idle || !self.write_queue.is_empty() {
                return Poll::Ready(());
            }
            let mut inner = self.shared.lock();
            if !inner.session.has_transmit() || std::mem::take(&mut inner.spliced) {
                return Poll::Ready(());
            }
            drop(inner);
            self.gathering = Some(Box::pin(tokio::task::yield_now()));
        }
        let gathering = self.gathering.as_mut().expect("set above");
        if gathering.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.gathering = None;
        Poll::Ready(())
    }

    /// Ends the session. It reads as closed before any stream is woken: a stream
    /// that finds its connection gone must find the session closed too (a relay tells
    /// a lost link, which it may retry elsewhere, from a failed request that way).
    fn finish(&mut self, error: SessionError) {
        tracing::debug!(%error, "mux session ended");
        let mut inner = self.shared.lock();
        inner.session.handle_connection_lost(error);
        let final_error = inner
            .session
            .error()
            .cloned()
            .unwrap_or(SessionError::Closed);
        self.closed_tx.send_replace(Some(final_error));
        inner.dispatch_events();
        inner.wake_all();
        std::mem::swap(&mut self.jobs, &mut inner.splice_jobs);
        drop(inner);
        self.run_splices();
    }

    /// Runs the splice directions the last events made runnable; true if there were
    /// any (they may have queued frames here, such as window credits).
    fn run_splices(&mut self) -> bool {
        if self.jobs.is_empty() {
            return false;
        }
        for (splice, end) in self.jobs.drain(..) {
            splice.run(end, Some(&self.shared));
        }
        true
    }
}

/// Marks the session closed as soon as it failed, under the lock that changed it,
/// before its streams are woken: they find their connection unusable and the session
/// closed at once, though its go-away may take a little longer to leave (the driver
/// ends when it has, or at its close timeout). A relay tells a lost link from a
/// failed request by that.
fn announce_failure(
    closed: &watch::Sender<Option<SessionError>>,
    session: &crate::session::Session,
) {
    if session.has_failed() && closed.borrow().is_none() {
        let error = session.error().cloned().unwrap_or(SessionError::Closed);
        closed.send_replace(Some(error));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::time::{Instant, timeout};

    use crate::budget::FloodLimits;
    use crate::config::Config;
    use crate::error::SessionError;
    use crate::frame::{Flags, Frame, GoAwayCode, HEADER_LEN};
    use crate::mux::Mux;
    use crate::session::Role;

    /// Capacity of the in-memory pipe each way.
    const PIPE: usize = 64 * 1024;

    fn pings(n: u32) -> Vec<u8> {
        let mut wire = Vec::new();
        for opaque in 0..n {
            Frame::Ping {
                flags: Flags::empty(),
                opaque,
            }
            .encode(&mut wire);
        }
        wire
    }

    /// Writes `junk` in 4 KiB pieces until a write blocks for a second, fails, or
    /// 4 MiB went through; returns the bytes the pipe took.
    async fn push_until_blocked(far: &mut DuplexStream) -> usize {
        let piece = [0xeeu8; 4096];
        let mut taken = 0;
        for _ in 0..1024 {
            match timeout(Duration::from_secs(1), far.write_all(&piece)).await {
                Ok(Ok(())) => taken += piece.len(),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        taken
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_bad_header_reading_stops_and_a_closing_session_is_dropped_in_time() {
        // The attacker's replies pile up (it never reads), so the go-away queued
        // behind them can never be flushed.
        let config = Config {
            keepalive_interval: None,
            flood: FloodLimits {
                pings: u32::MAX,
                ..FloodLimits::default()
            },
            ..Config::default()
        };
        let (near, mut far) = tokio::io::duplex(PIPE);
        let mux = Mux::spawn(near, Role::Server, config);
        far.write_all(&pings(20_000)).await.unwrap();
        far.write_all(&[9; HEADER_LEN]).await.unwrap();
        let failed_at = Instant::now();
        // Reading stopped: the pipe fills and the attacker blocks, instead of the
        // Edge reading (and buffering) everything it sends.
        let taken = push_until_blocked(&mut far).await;
        assert!(taken <= 2 * PIPE, "the session kept reading: {taken} bytes");
        let reason = timeout(Duration::from_secs(10), mux.closed())
            .await
            .expect("a closing session that cannot flush is dropped");
        assert!(matches!(reason, SessionError::Frame(_)), "{reason}");
        let closed_after = failed_at.elapsed();
        assert!(closed_after <= Duration::from_secs(4), "{closed_after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_reads_is_dropped_after_the_write_timeout() {
        let config = Config {
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        // The far end is held but never read.
        let (near, _far) = tokio::io::duplex(PIPE);
        let mux = Mux::spawn(near, Role::Client, config);
        let mut stream = mux.open().await.unwrap();
        let writer = tokio::spawn(async move {
            let _ = stream.write_all(&vec![7u8; 4 * PIPE]).await;
            stream
        });
        let started = Instant::now();
        let reason = timeout(Duration::from_secs(60), mux.closed())
            .await
            .expect("a peer that reads nothing is dropped");
        assert_eq!(reason, SessionError::WriteTimeout(Duration::from_secs(5)));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(6),
            "{elapsed:?}"
        );
        drop(writer);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_makes_progress_is_never_dropped() {
        let config = Config {
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let (near, mut far) = tokio::io::duplex(PIPE);
        let mux = Mux::spawn(near, Role::Client, config);
        let mut stream = mux.open().await.unwrap();
        let total = 4 * PIPE;
        let writer = tokio::spawn(async move {
            stream.write_all(&vec![7u8; total]).await.unwrap();
            stream
        });
        // 16 KiB every 4 s: slower than the pipe, but never 5 s without progress.
        let mut got = 0;
        let mut buf = vec![0u8; 16 * 1024];
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let n = far.read(&mut buf).await.unwrap();
            got += n;
            if got >= total {
                break;
            }
        }
        assert!(got >= total, "only {got} bytes arrived");
        assert!(!mux.is_closed(), "{:?}", mux.closed().await);
        drop(writer);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_flood_ends_in_a_flood_go_away() {
        let (near, mut far) = tokio::io::duplex(PIPE);
        let config = Config {
            keepalive_interval: None,
            ..Config::default()
        };
        let mux = Mux::spawn(near, Role::Server, config);
        let flood = pings(1000);
        let _ = far.write_all(&flood).await;
        let reason = timeout(Duration::from_secs(5), mux.closed()).await.unwrap();
        assert_eq!(reason, SessionError::Flood(crate::FloodKind::Ping));
        let mut reply = Vec::new();
        let _ = timeout(Duration::from_secs(5), far.read_to_end(&mut reply)).await;
        let tail: [u8; HEADER_LEN] = reply[reply.len() - HEADER_LEN..].try_into().unwrap();
        let header = crate::frame::Header::decode(&tail, u32::MAX).unwrap();
        assert_eq!(header.ty, crate::frame::FrameType::GoAway);
        assert_eq!(GoAwayCode(header.length), GoAwayCode::FLOOD);
        // One pong per ping within the budget, then the go-away.
        let budget = FloodLimits::default().pings as usize;
        assert_eq!(reply.len(), (budget + 1) * HEADER_LEN);
    }
}
