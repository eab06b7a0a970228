//! The capture worker: an HTTP tunnel's bytes are read for the inspector on a
//! thread of its own, so forwarding never parses them, never copies into the
//! history and never waits for its lock (which the inspector's web page also
//! takes). On the forwarding side a [`QueuedTap`] copies what passes into a queue
//! bounded in bytes, and passes over what the worker said it does not need (a body
//! past the body limit, a stream it follows no more); the worker wakes every few
//! milliseconds and feeds each stream's bytes to its [`HttpTap`], with the time
//! they passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use netbore_transport::pipe::Tap;

use super::capture::HttpTap;
use super::handoff::{Guard, Handoff};
use super::{Inner, Inspector};

/// How long the worker lets bytes gather before it reads them.
const TICK: Duration = Duration::from_millis(5);
/// Bytes the queue holds at most; bytes that find it full pass unread (a body
/// keeps what came before, marked cut; elsewhere its stream's capture ends).
const QUEUE_BYTES: usize = 16 << 20;
/// Bytes one direction of a stream may have waiting, past the body limit, before
/// the worker is woken at once (a large body is coming; it says soon how much of
/// it it needs).
const HURRY_PAST_LIMIT: u64 = 32 * 1024;
/// Events the queue holds at most; a stream with an event that finds it full is
/// followed no more, and no new stream is followed until the worker catches up.
const QUEUE_EVENTS: usize = 64 * 1024;
/// Room a queue keeps between bursts; more is given back when the worker is idle.
const KEEP_ROOM: usize = 1 << 20;

/// The two directions of a stream.
const FROM_VIEWER: usize = 0;
const FROM_ORIGIN: usize = 1;

/// The queue between the forwarding side and the worker.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    batch: Handoff<Batch>,
    /// Set while the worker sleeps with nothing to do.
    parked: AtomicBool,
    worker: OnceLock<Thread>,
    next_stream: AtomicU64,
    /// Events the worker has read, counted as `Batch::pushed` counts them.
    read: AtomicU64,
    /// The worker has ended (it never ends while the inspector lives, unless it
    /// panicked): nothing more is queued.
    ended: AtomicBool,
}

/// What waits for the worker.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<Event>,
    /// The bytes of the `Data` events, one after the other.
    bytes: Vec<u8>,
    /// Events pushed since the start.
    pushed: u64,
}

#[derive(Debug)]
struct Event {
    stream: u64,
    at: Instant,
    what: What,
}

#[derive(Debug)]
enum What {
    Open {
        tunnel: usize,
        viewer: IpAddr,
        shared: Arc<Shared>,
    },
    /// Bytes of one direction, at `start..start + len` of the batch's bytes.
    Data {
        direction: usize,
        start: usize,
        len: usize,
    },
    /// Bytes that passed unread: `asked` when the worker said it does not need them.
    Pass {
        direction: usize,
        len: u64,
        asked: bool,
    },
    /// Events of this stream were dropped (the queue was full): it is followed no
    /// more.
    Lost,
    Close,
}

/// What one stream's two sides share. Each field has a cache line of its own: the
/// forwarding side reads `needless_to` on every pass, and the worker's stores to
/// `read_to` (once per batch) must not take that line away from its core.
#[derive(Debug, Default)]
struct Shared {
    /// Per direction: the offset up to which the worker does not need the bytes.
    needless_to: Line<[AtomicU64; 2]>,
    /// Per direction: the offset up to which the worker has read.
    read_to: Line<[AtomicU64; 2]>,
}

/// A value alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl Queue {
    /// The batch, once no one else holds it (for what happens once per stream or
    /// per batch; forwarding's copies use [`Handoff::try_lock`]).
    fn lock(&self) -> Guard<'_, Batch> {
        self.batch.lock()
    }

    /// Wakes the worker if it sleeps.
    fn wake(&self) {
        if self.parked.load(Ordering::SeqCst)
            && self.parked.swap(false, Ordering::SeqCst)
            && let Some(worker) = self.worker.get()
        {
            worker.unpark();
        }
    }

    /// Waits (up to a second, on a machine too busy to run the worker) until the
    /// worker has read everything pushed before the call: what an API answer shows
    /// includes every request that passed before it was asked for.
    pub(crate) async fn settle(&self) {
        let target = self.lock().pushed;
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.read.load(Ordering::Acquire) < target
            && Instant::now() < deadline
            && !self.ended.load(Ordering::Acquire)
        {
            if let Some(worker) = self.worker.get() {
                worker.unpark();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The forwarding side of one HTTP stream: copies what passes into the queue.
pub(crate) struct QueuedTap {
    queue: Arc<Queue>,
    stream: u64,
    shared: Arc<Shared>,
    /// Per direction: bytes passed so far.
    offset: [u64; 2],
    /// Bytes waiting for the worker in one direction past which it is woken at once.
    hurry_at: u64,
    /// Per direction: where the worker had read to when it was last hurried.
    hurried: [Option<u64>; 2],
    /// Per direction: `shared.read_to` when last loaded (it only grows, so what
    /// waits is at most what this says).
    read_seen: [u64; 2],
    /// An event was dropped: nothing more is sent but the close.
    lost: bool,
    /// It was dropped because the queue's lock stayed taken, so the worker has not
    /// been told yet (it is by the next pass that finds the lock free, or by the
    /// close).
    untold: bool,
}

impl QueuedTap {
    /// Starts capturing a stream of tunnel `tunnel` opened for `viewer` (`None`
    /// when the capture thread could not be started).
    pub(crate) fn new(inspector: &Inspector, tunnel: usize, viewer: IpAddr) -> Option<Self> {
        let queue = Arc::clone(&inspector.inner.queue);
        if !start_worker(&queue, Arc::downgrade(&inspector.inner)) {
            return None;
        }
        let shared = Arc::new(Shared::default());
        let stream = queue.next_stream.fetch_add(1, Ordering::Relaxed);
        // Forwarding does not wait for a holder that was preempted: the stream
        // passes uncaptured instead.
        let mut batch = queue.batch.try_lock()?;
        if batch.events.len() >= QUEUE_EVENTS {
            // The worker is far behind: this stream passes uncaptured.
            return None;
        }
        batch.push(
            stream,
            Instant::now(),
            What::Open {
                tunnel,
                viewer,
                shared: Arc::clone(&shared),
            },
        );
        drop(batch);
        queue.wake();
        Some(QueuedTap {
            queue,
            stream,
            shared,
            offset: [0; 2],
            hurry_at: inspector.config().body_limit as u64 + HURRY_PAST_LIMIT,
            hurried: [None; 2],
            read_seen: [0; 2],
            lost: false,
            untold: false,
        })
    }

    fn pass(&mut self, direction: usize, data: &[u8]) {
        let at = self.offset[direction];
        let len = data.len() as u64;
        self.offset[direction] += len;
        let needless_to = self.shared.needless_to[direction].load(Ordering::Acquire);
        if needless_to == u64::MAX || self.lost {
            // Not followed any more: nothing to tell, but why, when the lock was
            // held too long (once it is free, without waiting for it).
            if self.untold
                && let Some(mut batch) = self.queue.batch.try_lock_now()
            {
                batch.push(self.stream, Instant::now(), What::Lost);
                self.untold = false;
            }
            return;
        }
        let skip = needless_to.saturating_sub(at).min(len);
        let rest = &data[skip as usize..];
        // How far the worker has read is loaded only when what may wait for it
        // passes the hurry mark.
        let mut read_to = self.read_seen[direction];
        let mut waiting = (at + skip).saturating_sub(read_to) + rest.len() as u64;
        if waiting > self.hurry_at {
            read_to = self.shared.read_to[direction].load(Ordering::Acquire);
            self.read_seen[direction] = read_to;
            waiting = (at + skip).saturating_sub(read_to) + rest.len() as u64;
        }
        let now = Instant::now();
        let Some(mut batch) = self.queue.batch.try_lock() else {
            // Held too long (its holder was preempted): forwarding does not wait,
            // and this stream's capture ends here.
            self.lost = true;
            self.untold = true;
            return;
        };
        if batch.events.len() + 2 > QUEUE_EVENTS {
            self.lost = true;
            batch.push(self.stream, now, What::Lost);
            return;
        }
        if skip > 0 {
            batch.push(
                self.stream,
                now,
                What::Pass {
                    direction,
                    len: skip,
                    asked: true,
                },
            );
        }
        if !rest.is_empty() {
            if batch.bytes.len() + rest.len() <= QUEUE_BYTES {
                let start = batch.bytes.len();
                batch.bytes.extend_from_slice(rest);
                batch.push(
                    self.stream,
                    now,
                    What::Data {
                        direction,
                        start,
                        len: rest.len(),
                    },
                );
            } else {
                batch.push(
                    self.stream,
                    now,
                    What::Pass {
                        direction,
                        len: rest.len() as u64,
                        asked: false,
                    },
                );
            }
        }
        drop(batch);
        // A large body is coming (or the worker is far behind on this stream): it
        // is woken at once, once per step of its reading, to say what it needs.
        if waiting > self.hurry_at && self.hurried[direction] != Some(read_to) {
            self.hurried[direction] = Some(read_to);
            self.queue.parked.store(false, Ordering::SeqCst);
            if let Some(worker) = self.queue.worker.get() {
                worker.unpark();
            }
        } else {
            self.queue.wake();
        }
    }
}

impl Tap for QueuedTap {
    fn read_from_stream(&mut self, data: &[u8]) {
        self.pass(FROM_VIEWER, data);
    }

    fn read_from_socket(&mut self, data: &[u8]) {
        self.pass(FROM_ORIGIN, data);
    }
}

impl Drop for QueuedTap {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut batch = self.queue.lock();
        if self.untold {
            batch.push(self.stream, now, What::Lost);
        }
        batch.push(self.stream, now, What::Close);
        drop(batch);
        self.queue.wake();
    }
}

impl Batch {
    fn push(&mut self, stream: u64, at: Instant, what: What) {
        self.events.push(Event { stream, at, what });
        self.pushed += 1;
    }

    /// Room for everything the queue may hold, reserved by the worker before the
    /// batch goes back to forwarding under heavy traffic: growing it under the lock
    /// would copy megabytes while streams wait (and give up). Only reserved: pages
    /// are touched as bytes arrive. (Closes are queued past [`QUEUE_EVENTS`]: room
    /// for some of them too.)
    fn make_room(&mut self) {
        self.bytes
            .reserve_exact(QUEUE_BYTES.saturating_sub(self.bytes.len()));
        self.events
            .reserve_exact((QUEUE_EVENTS + QUEUE_EVENTS / 16).saturating_sub(self.events.len()));
    }

    /// Gives back room past [`KEEP_ROOM`] (the batch is empty): what a burst
    /// touched is freed, and what light traffic needs stays reserved. (Not reserved
    /// in full again right away: the allocator would hand back the very pages just
    /// freed.)
    fn keep_little(&mut self) {
        if self.bytes.capacity() > KEEP_ROOM {
            self.bytes = Vec::with_capacity(KEEP_ROOM);
        }
        if self.events.capacity() > KEEP_ROOM / 64 {
            self.events = Vec::with_capacity(KEEP_ROOM / 64);
        }
    }
}

/// Starts the worker thread the first time an HTTP stream is captured (false when
/// it cannot be). It ends once the inspector is gone and its last stream has closed.
fn start_worker(queue: &Arc<Queue>, inspector: Weak<Inner>) -> bool {
    static STARTING: Mutex<()> = Mutex::new(());
    if queue.worker.get().is_some() {
        return !queue.ended.load(Ordering::Acquire);
    }
    let _one = STARTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if queue.worker.get().is_some() {
        return !queue.ended.load(Ordering::Acquire);
    }
    let for_worker = Arc::clone(queue);
    let spawned = thread::Builder::new()
        .name("netbore-inspect".into())
        .spawn(move || run(&for_worker, &inspector));
    match spawned {
        Ok(handle) => {
            let _ = queue.worker.set(handle.thread().clone());
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "the inspector could not start its capture thread, so requests are not captured; free some memory or threads and restart the agent");
            false
        }
    }
}

/// One stream the worker follows.
struct Followed {
    tap: HttpTap,
    shared: Arc<Shared>,
    read_to: [u64; 2],
    /// What was last stored in `shared.needless_to`.
    needless_to: [u64; 2],
    /// `read_to` moved since it was last stored in `shared`.
    moved: bool,
}

/// Marks the queue ended when the worker returns or unwinds.
struct Ending<'a>(&'a Queue);

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Release);
        if std::thread::panicking() {
            tracing::error!(
                "the inspector's capture thread failed, so requests are no longer captured; restart the agent to capture them again"
            );
        }
    }
}

/// Lowers the calling thread's priority as far as it goes: forwarding comes first,
/// and the capture uses what CPU is left (when there is none, the queue fills and
/// the capture of the streams that find it full ends, marked so).
fn yield_to_forwarding() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::debug!(error = %e, "the capture thread keeps its priority");
    }
}

fn run(queue: &Queue, inspector: &Weak<Inner>) {
    let _ending = Ending(queue);
    yield_to_forwarding();
    let mut streams: HashMap<u64, Followed> = HashMap::new();
    // Streams whose reading moved in this batch.
    let mut moved: Vec<u64> = Vec::new();
    let mut spare = Batch::default();
    loop {
        let mut batch = {
            let mut current = queue.lock();
            spare.pushed = current.pushed;
            std::mem::replace(&mut *current, std::mem::take(&mut spare))
        };
        if batch.events.is_empty() {
            if inspector.strong_count() == 0 && streams.is_empty() {
                return;
            }
            queue.parked.store(true, Ordering::SeqCst);
            if queue.lock().events.is_empty() {
                thread::park_timeout(Duration::from_secs(1));
            }
            queue.parked.store(false, Ordering::SeqCst);
            // Idle: pages a burst touched are given back.
            batch.keep_little();
            spare = batch;
            continue;
        }
        let Some(inner) = inspector.upgrade() else {
            return;
        };
        let owner = Inspector { inner };
        let heavy = batch.bytes.len() > KEEP_ROOM / 2 || batch.events.len() > KEEP_ROOM / 128;
        for event in batch.events.drain(..) {
            apply(&owner, &mut streams, &mut moved, &batch.bytes, event);
        }
        drop(owner);
        // How far each stream was read is told once per batch, not per event: the
        // forwarding side reads it on every pass, and each store here takes the
        // line from that core's cache.
        for stream in moved.drain(..) {
            if let Some(f) = streams.get_mut(&stream) {
                f.moved = false;
                for d in [FROM_VIEWER, FROM_ORIGIN] {
                    f.shared.read_to[d].store(f.read_to[d], Ordering::Release);
                }
            }
        }
        queue.read.store(batch.pushed, Ordering::Release);
        batch.bytes.clear();
        // Heavy traffic: the batch gets all its room before it goes back to
        // forwarding; light traffic (or none) needs little.
        if heavy {
            batch.make_room();
        } else {
            batch.keep_little();
        }
        spare = batch;
        thread::park_timeout(TICK);
    }
}

fn apply(
    inspector: &Inspector,
    streams: &mut HashMap<u64, Followed>,
    moved: &mut Vec<u64>,
    bytes: &[u8],
    event: Event,
) {
    let Event { stream, at, what } = event;
    let (direction, len) = match what {
        What::Open {
            tunnel,
            viewer,
            shared,
        } => {
            let tap = HttpTap::new(inspector.clone(), tunnel, viewer, None);
            streams.insert(
                stream,
                Followed {
                    tap,
                    shared,
                    read_to: [0; 2],
                    needless_to: [0; 2],
                    moved: false,
                },
            );
            return;
        }
        What::Close => {
            streams.remove(&stream);
            return;
        }
        What::Lost => {
            if let Some(f) = streams.get_mut(&stream) {
                f.tap.give_up();
                for d in [FROM_VIEWER, FROM_ORIGIN] {
                    f.needless_to[d] = u64::MAX;
                    f.shared.needless_to[d].store(u64::MAX, Ordering::Release);
                }
            }
            return;
        }
        What::Data {
            direction,
            start,
            len,
        } => {
            let Some(f) = streams.get_mut(&stream) else {
                return;
            };
            f.tap
                .feed(direction == FROM_VIEWER, &bytes[start..start + len], at);
            (direction, len as u64)
        }
        What::Pass {
            direction,
            len,
            asked,
        } => {
            let Some(f) = streams.get_mut(&stream) else {
                return;
            };
            f.tap.pass_over(direction == FROM_VIEWER, len, asked, at);
            (direction, len)
        }
    };
    let Some(f) = streams.get_mut(&stream) else {
        return;
    };
    f.read_to[direction] += len;
    if !f.moved {
        f.moved = true;
        moved.push(stream);
    }
    // Reading one side can change what the other needs (an upgrade's answer, a
    // stream no longer followed): both are told, at once, when it changed. Any
    // offset not past what was read means "nothing to pass over", so the one
    // stored stays while that holds.
    for d in [FROM_VIEWER, FROM_ORIGIN] {
        let needless = f.tap.needless(d == FROM_VIEWER);
        if needless == Some(0) && f.needless_to[d] <= f.read_to[d] {
            continue;
        }
        let needless_to = match needless {
            None => u64::MAX,
            Some(n) => f.read_to[d].saturating_add(n).min(u64::MAX - 1),
        };
        if needless_to != f.needless_to[d] {
            f.needless_to[d] = needless_to;
            f.shared.needless_to[d].store(needless_to, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::InspectConfig;

    fn inspector(body_limit: usize) -> Inspector {
        Inspector::new(InspectConfig {
            body_limit,
            db_size: 1 << 20,
            secrets: false,
        })
    }

    #[tokio::test]
    async fn the_worker_records_what_passed_with_the_times_it_passed() {
        let inspector = inspector(1024);
        let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
        tap.read_from_stream(b"POST /a HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi");
        tokio::time::sleep(Duration::from_millis(30)).await;
        tap.read_from_socket(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok");
        inspector.settle().await;
        let all = inspector.exchanges(10);
        assert_eq!(all.len(), 1);
        let e = &all[0];
        assert_eq!(e.request_body.captured, &b"hi"[..]);
        assert_eq!(e.response_body.captured, &b"ok"[..]);
        // Timed when the bytes passed, not when the worker read them.
        let took = e.duration.unwrap();
        assert!(
            took >= Duration::from_millis(30) && took < Duration::from_secs(5),
            "{took:?}"
        );
        drop(tap);
        inspector.settle().await;
        assert!(inspector.exchanges(10)[0].error.is_none());
    }

    #[tokio::test]
    async fn a_large_body_is_copied_only_until_the_worker_says_it_is_past_the_limit() {
        let limit = 1024;
        let inspector = inspector(limit);
        let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
        let size = 1 << 20;
        tap.read_from_stream(b"GET /big HTTP/1.1\r\n\r\n");
        tap.read_from_socket(
            format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").as_bytes(),
        );
        let chunk = vec![b'x'; 16 * 1024];
        let mut sent = 0;
        let mut skipped = false;
        while sent < size {
            // Once the worker has said so, the rest of the body is only counted.
            let told = tap.shared.needless_to[FROM_ORIGIN].load(Ordering::Acquire);
            let queued = inspector.inner.queue.lock().bytes.len();
            tap.read_from_socket(&chunk);
            sent += chunk.len();
            if told >= tap.offset[FROM_ORIGIN] {
                // (The worker may have taken the queue meanwhile: it can only shrink.)
                let after = inspector.inner.queue.lock().bytes.len();
                assert!(after <= queued, "copied past the limit");
                skipped = true;
            }
            // Time for the worker (woken by the hurry) to read.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            skipped,
            "the worker never said the rest of the body was not needed"
        );
        inspector.settle().await;
        tap.read_from_stream(b"GET /next HTTP/1.1\r\n\r\n");
        tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        inspector.settle().await;
        let mut all = inspector.exchanges(10);
        all.reverse();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].response_body.size, size as u64);
        assert_eq!(all[0].response_body.captured.len(), limit);
        assert!(all[0].response_body.truncated);
        assert_eq!(all[1].request.request_line().1, "/next");
        assert_eq!(all[1].response_body.captured, &b"ok"[..]);
    }

    #[tokio::test]
    async fn forwarding_does_not_wait_for_a_queue_held_too_long() {
        let inspector = inspector(1024);
        let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
        tap.read_from_stream(b"GET /held HTTP/1.1\r\n\r\n");
        inspector.settle().await;
        // Another holder keeps the queue (as a preempted capture thread would).
        let held = inspector.inner.queue.lock();
        let started = Instant::now();
        tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        let waited = started.elapsed();
        drop(held);
        assert!(waited < Duration::from_millis(100), "{waited:?}");
        assert!(tap.lost);
        // Nothing more is copied; the next pass, finding the lock free, tells the
        // worker why the capture ended (the connection may stay open for hours).
        tap.read_from_socket(b"more");
        assert!(!tap.untold);
        assert!(inspector.inner.queue.lock().bytes.is_empty());
        inspector.settle().await;
        let all = inspector.exchanges(10);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].request.request_line().1, "/held");
        assert!(
            all[0].error.as_deref().unwrap().contains("fell behind"),
            "{:?}",
            all[0].error
        );
        drop(tap);
        inspector.settle().await;
        assert_eq!(inspector.exchanges(10).len(), 1);
    }

    #[tokio::test]
    async fn a_stream_opened_while_the_queue_is_held_passes_uncaptured() {
        let inspector = inspector(1024);
        // The worker runs (a first stream started it).
        drop(QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap());
        let held = inspector.inner.queue.lock();
        let started = Instant::now();
        assert!(QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).is_none());
        assert!(started.elapsed() < Duration::from_millis(100));
        drop(held);
        assert!(QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).is_some());
    }

    #[tokio::test]
    async fn a_burst_on_one_stream_is_captured_whole_while_the_worker_lags() {
        let inspector = inspector(1024);
        let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
        let filler = "f".repeat(300);
        let n = 600;
        // Far more than a body limit's worth, faster than the worker reads.
        for i in 0..n {
            tap.read_from_stream(
                format!("GET /r{i} HTTP/1.1\r\nx-filler: {filler}\r\n\r\n").as_bytes(),
            );
            tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
        inspector.settle().await;
        let all = inspector.exchanges(usize::MAX);
        assert_eq!(all.len(), n);
        assert_eq!(all[0].request.request_line().1, format!("/r{}", n - 1));
    }
}
