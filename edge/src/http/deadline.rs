//! Deadlines of a viewer's HTTP connection. Until its first request starts, the
//! connection has the header timeout from the moment it was handed to HTTP (after TLS,
//! when there is TLS): that bounds version detection, the h2 preface and settings, and
//! the first request head. Between requests (no request in flight, for HTTP/1.1 and
//! h2 alike) it has the idle timeout. A protocol switch (WebSocket) counts as a
//! request in flight until its byte pipe ends, which has an idle timeout of its own.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::drain::Drain;

/// How long a connection told to shut down gracefully (an h2 GOAWAY) may take before
/// it is dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// While the node drains, how long an HTTP/1.1 connection may stay without a request
/// in flight before it is closed. Its requests' answers say `Connection: close`, so a
/// busy client leaves by itself; closing an idle one at the very moment the drain
/// starts would race a request its client is sending.
pub const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// The two deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the start until the first request.
    pub first_request: Duration,
    /// From the end of a request until the next one starts.
    pub idle: Duration,
}

/// What a connection is doing, as its deadlines need it: requests in flight and when
/// the last one ended. Each request costs two atomic adds and a clock read.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    /// Milliseconds after `opened` when a request last ended.
    last_end: AtomicU64,
    /// The connection speaks h2.
    h2: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            last_end: AtomicU64::new(0),
            h2: AtomicBool::new(false),
        }
    }
}

impl Activity {
    /// A request started.
    pub fn begin(&self) {
        self.served.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// A request (or a protocol switch's pipe) ended.
    pub fn end(&self) {
        // Stored before the count drops: whoever sees no request in flight sees this
        // end (or a later one) too.
        let at = Instant::now().saturating_duration_since(self.opened);
        let at = at.as_millis() as u64;
        // Requests ending within the same millisecond (most of them, under load) find
        // it stored already: a load instead of a read-modify-write loop.
        if self.last_end.load(Ordering::Acquire) < at {
            self.last_end.fetch_max(at, Ordering::AcqRel);
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// The connection carried an h2 request: a drain ends it with a GOAWAY at once.
    pub fn set_h2(&self) {
        if !self.h2.load(Ordering::Relaxed) {
            self.h2.store(true, Ordering::Relaxed);
        }
    }

    /// When a request last ended (or the connection opened).
    fn last_end(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_end.load(Ordering::Acquire))
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// When the connection is to end if no request starts before; `None` while one
    /// is in flight.
    pub fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        if self.in_flight() > 0 {
            return None;
        }
        if !self.served.load(Ordering::Acquire) {
            return Some(self.opened + timeouts.first_request);
        }
        let last_end = Duration::from_millis(self.last_end.load(Ordering::Acquire));
        Some(self.opened + last_end + timeouts.idle)
    }
}

/// Drives `conn` until it ends or misses a deadline of `activity`; then asks it to
/// shut down with `shutdown` and gives it [`SHUTDOWN_GRACE`] before dropping it.
/// When `drain` starts, it is asked to shut down too (a keep-alive connection closes
/// after the request in flight, an h2 one sends GOAWAY), and is given as long as it
/// takes: the node's drain deadline bounds it. Returns the connection's result, or
/// `None` if it was dropped unfinished.
pub async fn drive<C, T>(
    mut conn: Pin<&mut C>,
    activity: &Activity,
    timeouts: Timeouts,
    drain: &Drain,
    shutdown: impl FnOnce(Pin<&mut C>),
) -> Option<T>
where
    C: Future<Output = T>,
{
    let sleep = tokio::time::sleep(timeouts.first_request);
    tokio::pin!(sleep);
    let notice = drain.draining_notice();
    tokio::pin!(notice);
    notice.as_mut().enable();
    let mut draining = drain.is_draining();
    while !draining {
        let now = Instant::now();
        // Nothing wakes this loop when a request starts or ends (that would cost
        // every request a wake-up): it looks again every quarter of the idle
        // timeout, so a connection ends at most that late.
        let tick = now + timeouts.idle / 4;
        match activity.deadline(timeouts) {
            Some(at) if at <= now => break,
            Some(at) => sleep.as_mut().reset(at.min(tick)),
            None => sleep.as_mut().reset(tick),
        }
        match until_done_or_elapsed(conn.as_mut(), sleep.as_mut(), Some(notice.as_mut())).await {
            Woken::Done(done) => return Some(done),
            Woken::Elapsed => {}
            Woken::Draining => draining = true,
        }
    }
    if draining && !activity.h2.load(Ordering::Relaxed) {
        // HTTP/1.1: closed once idle for a moment (its answers meanwhile end it).
        let since = Instant::now();
        loop {
            let now = Instant::now();
            let at = activity.last_end().max(since) + DRAIN_IDLE;
            if activity.in_flight() == 0 && at <= now {
                break;
            }
            sleep.as_mut().reset(at.max(now + DRAIN_IDLE / 4));
            if let Woken::Done(done) =
                until_done_or_elapsed(conn.as_mut(), sleep.as_mut(), None).await
            {
                return Some(done);
            }
        }
    }
    shutdown(conn.as_mut());
    if draining {
        return Some(conn.await);
    }
    tokio::time::timeout(SHUTDOWN_GRACE, conn).await.ok()
}

/// Why [`until_done_or_elapsed`] returned.
enum Woken<T> {
    /// The connection ended.
    Done(T),
    /// The timer rang.
    Elapsed,
    /// The node started draining.
    Draining,
}

/// Polls `conn` until it ends, `sleep` elapses or `draining` completes.
///
/// The connection's task wakes several times for every request it serves, and each
/// wake polls the connection; the timer is polled only once it has rung, or when it
/// has no alarm for the task's current waker (just set, or the waker changed).
/// Polling it on every wake, as `select!` does, registers the same waker again and
/// again, and asking the timer whether it fired reads memory the timer driver
/// writes: a look at the alarm's own flag is all a wake costs.
async fn until_done_or_elapsed<C: Future>(
    mut conn: Pin<&mut C>,
    mut sleep: Pin<&mut tokio::time::Sleep>,
    mut draining: Option<Pin<&mut tokio::sync::futures::Notified<'_>>>,
) -> Woken<C::Output> {
    let mut alarm: Option<Arc<Alarm>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = conn.as_mut().poll(cx) {
            return Poll::Ready(Woken::Done(done));
        }
        let alarm = match &alarm {
            Some(set) if set.task.will_wake(cx.waker()) => {
                if !set.rang.swap(false, Ordering::AcqRel) {
                    return Poll::Pending;
                }
                set.clone()
            }
            _ => alarm
                .insert(Arc::new(Alarm {
                    rang: AtomicBool::new(false),
                    task: cx.waker().clone(),
                }))
                .clone(),
        };
        // Polled with the alarm as its waker: when it fires, or when tokio defers the
        // poll for lack of budget, the alarm rings and wakes the task.
        // The drain notice rings the same alarm.
        let waker = Waker::from(alarm);
        let mut alarm_cx = Context::from_waker(&waker);
        if let Some(draining) = draining.as_mut()
            && draining.as_mut().poll(&mut alarm_cx).is_ready()
        {
            return Poll::Ready(Woken::Draining);
        }
        if sleep.as_mut().poll(&mut alarm_cx).is_ready() {
            return Poll::Ready(Woken::Elapsed);
        }
        Poll::Pending
    })
    .await
}

/// The waker a connection's deadline timer holds: it notes that the timer rang, then
/// wakes the connection's task.
#[derive(Debug)]
struct Alarm {
    rang: AtomicBool,
    task: Waker,
}

impl Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.rang.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// Copies between `viewer` and `origin` both ways until both ends close, or until no
/// byte has moved either way for `idle`. Returns `Ok(false)` on the idle timeout.
pub async fn splice_until_idle<A, B>(viewer: A, origin: &mut B, idle: Duration) -> io::Result<bool>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let mut viewer = Watched {
        inner: viewer,
        epoch,
        last: &last,
    };
    let copy = tokio::io::copy_bidirectional(&mut viewer, origin);
    tokio::pin!(copy);
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    loop {
        let quiet_until = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        if quiet_until <= Instant::now() {
            return Ok(false);
        }
        sleep.as_mut().reset(quiet_until);
        tokio::select! {
            done = copy.as_mut() => return done.map(|_| true),
            () = sleep.as_mut() => {}
        }
    }
}

/// An I/O object that notes when bytes last moved through it. Every byte of a splice
/// passes the viewer's side, one way or the other.
struct Watched<'a, T> {
    inner: T,
    epoch: Instant,
    last: &'a AtomicU64,
}

impl<T> Watched<'_, T> {
    fn touch(&self) {
        let at = Instant::now().saturating_duration_since(self.epoch);
        self.last.store(at.as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const T: Timeouts = Timeouts {
        first_request: Duration::from_secs(2),
        idle: Duration::from_secs(5),
    };

    /// Drives a connection that never ends on its own; returns when it was cut.
    async fn cut_after(activity: &Activity) -> Duration {
        let start = Instant::now();
        let conn = std::future::pending::<()>();
        tokio::pin!(conn);
        assert!(
            drive(conn, activity, T, &Drain::default(), |_| {})
                .await
                .is_none()
        );
        // The grace after the shutdown request is part of the drive.
        start.elapsed() - SHUTDOWN_GRACE
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_asks_an_h2_connection_to_shut_down_at_once_and_waits_for_it() {
        let drain = Drain::default();
        let activity = Activity::default();
        // A request in flight: no deadline of its own.
        activity.set_h2();
        activity.begin();
        let start = Instant::now();
        let long = SHUTDOWN_GRACE * 10;
        let conn = async move {
            tokio::time::sleep(long).await;
            7
        };
        tokio::pin!(conn);
        let starter = drain.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            starter.start();
        });
        let asked = std::sync::Mutex::new(None);
        let out = drive(conn, &activity, T, &drain, |_| {
            *asked.lock().unwrap() = Some(start.elapsed());
        })
        .await;
        assert_eq!(
            out,
            Some(7),
            "a draining connection is not cut at the grace"
        );
        assert_eq!(*asked.lock().unwrap(), Some(Duration::from_millis(100)));
        assert_eq!(start.elapsed(), long);
    }

    #[tokio::test(start_paused = true)]
    async fn a_draining_http1_connection_is_closed_once_idle_for_a_moment() {
        let drain = Drain::default();
        drain.start();
        let activity = std::sync::Arc::new(Activity::default());
        // A request runs from 0.1 s to 0.3 s; the connection is asked to close
        // DRAIN_IDLE after it ended, and given as long as it takes.
        let busy = activity.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            busy.begin();
            tokio::time::sleep(Duration::from_millis(200)).await;
            busy.end();
        });
        let start = Instant::now();
        let conn = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            8
        };
        tokio::pin!(conn);
        let asked = std::sync::Mutex::new(None);
        let out = drive(conn, &activity, T, &drain, |_| {
            *asked.lock().unwrap() = Some(start.elapsed());
        })
        .await;
        assert_eq!(out, Some(8));
        let asked = asked.lock().unwrap().expect("asked to shut down");
        assert!(
            asked >= Duration::from_millis(300) + DRAIN_IDLE
                && asked <= Duration::from_millis(300) + DRAIN_IDLE * 2,
            "{asked:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_ends_at_the_first_deadline() {
        let activity = Activity::default();
        assert_eq!(cut_after(&activity).await, T.first_request);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_ends_after_the_idle_timeout_from_its_last_request() {
        let activity = std::sync::Arc::new(Activity::default());
        let a = activity.clone();
        tokio::spawn(async move {
            a.begin();
            tokio::time::sleep(Duration::from_secs(30)).await;
            a.end();
        });
        // 30 s in flight (past both timeouts), then 5 s idle, seen at the next look
        // (every 1.25 s).
        let cut = cut_after(&activity).await;
        assert!(
            cut >= Duration::from_secs(35) && cut <= Duration::from_millis(36_250),
            "{cut:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_wakes_often_still_meets_its_deadline() {
        // The timer is polled only when it rings: the many wakes of a busy
        // connection must neither hide its ring nor move its deadline.
        let activity = Activity::default();
        let start = Instant::now();
        let conn = async {
            loop {
                tokio::time::sleep(Duration::from_millis(7)).await;
                tokio::task::yield_now().await;
            }
        };
        tokio::pin!(conn);
        assert!(
            drive(conn, &activity, T, &Drain::default(), |_| {})
                .await
                .is_none()
        );
        assert_eq!(start.elapsed() - SHUTDOWN_GRACE, T.first_request);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_ends_first_returns_its_result() {
        let activity = Activity::default();
        let conn = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            7
        };
        tokio::pin!(conn);
        assert_eq!(
            drive(conn, &activity, T, &Drain::default(), |_| {}).await,
            Some(7)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_splice_ends_after_idle_seconds_without_a_byte() {
        let (viewer, mut viewer_peer) = tokio::io::duplex(1024);
        let (mut origin, mut origin_peer) = tokio::io::duplex(1024);
        let pipe = tokio::spawn(async move {
            let start = Instant::now();
            let r = splice_until_idle(viewer, &mut origin, Duration::from_secs(10)).await;
            (r.unwrap(), start.elapsed())
        });
        // Bytes every 6 s keep it alive; then silence ends it 10 s later.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            viewer_peer.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            origin_peer.read_exact(&mut got).await.unwrap();
        }
        let (finished, after) = pipe.await.unwrap();
        assert!(!finished);
        assert_eq!(after.as_secs(), 28);
    }
}
