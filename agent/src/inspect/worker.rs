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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use netbore_transport::pipe::Tap;

use super::capture::HttpTap;
use super::handoff::{Guard, Handoff};
use super::{Inner, Inspector};

/// How long the worker lets bytes gather before it reads them.
const TICK: Duration = Duration::from_millis(5);
/// Bytes one direction of a stream may have waiting, past the body limit, before
/// the worker is woken at once (a large body is coming; it says soon how much of
/// it it needs).
const HURRY_PAST_LIMIT: u64 = 32 * 1024;
/// Room a queue keeps between bursts, at most; more is given back when the
/// worker is idle.
const KEEP_ROOM: usize = 1 << 20;

/// The longest method a resume looks for.
const MAX_METHOD: usize = 16;

/// The two directions of a stream.
const FROM_VIEWER: usize = 0;
const FROM_ORIGIN: usize = 1;

/// The queue between the forwarding side and the worker.
#[derive(Debug)]
pub(crate) struct Queue {
    batch: Handoff<Batch>,
    /// Its bounds, from the inspector's memory budget.
    room: Room,
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
    /// more, until it resumes.
    Lost,
    /// The capture starts again at a request: the bytes up to these offsets (per
    /// direction) passed unread. The `n`th resume of its stream.
    Resume {
        at: [u64; 2],
        n: u32,
    },
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
    /// How a capture that fell behind starts again (read by forwarding only once
    /// its stream is followed no more, or while it waits for a resume to be read).
    resync: Line<Resync>,
}

#[derive(Debug, Default)]
struct Resync {
    /// The capture ended because bytes passed unread (the worker fell behind), not
    /// because the stream stopped being HTTP: it may resume at a later request.
    holed: AtomicBool,
    /// Resumes the worker has read.
    resumed: AtomicU32,
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

/// A queue's bounds. Each of its two batches holds at most `bytes` bytes and
/// `events` events (closes may pass that by a sixteenth); bytes that find it full
/// pass unread (a body keeps what came before, marked cut; elsewhere its stream's
/// capture ends), and a stream with an event that finds it full is followed no
/// more, nor is any new stream until the worker catches up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room {
    bytes: usize,
    events: usize,
    /// What a batch keeps between bursts.
    keep_bytes: usize,
    keep_events: usize,
}

impl Room {
    /// The queue's share of a memory budget of `budget` bytes: a sixteenth of it
    /// per batch for bytes (at the default budget, 3 MiB, which the worker empties
    /// every 5 ms), and an event per 256 of those bytes. Never less than 256 KiB:
    /// bytes that find the queue full end the capture of their stream, and the
    /// Edge keeps its streams to the agent open for many requests.
    pub(crate) fn for_budget(budget: usize) -> Room {
        let bytes = (budget / 16).clamp(256 << 10, 16 << 20);
        let events = (bytes / 256).clamp(1024, 64 * 1024);
        Room {
            bytes,
            events,
            keep_bytes: bytes.min(KEEP_ROOM),
            keep_events: events.min(KEEP_ROOM / 64),
        }
    }

    /// Memory the two batches may hold at most.
    pub(crate) fn most(&self) -> usize {
        2 * (self.bytes + (self.events + self.events / 16) * std::mem::size_of::<Event>())
    }
}

impl Queue {
    pub(crate) fn new(room: Room) -> Queue {
        Queue {
            batch: Handoff::default(),
            room,
            parked: AtomicBool::new(false),
            worker: OnceLock::new(),
            next_stream: AtomicU64::new(0),
            read: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        }
    }

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
    /// The stream's tunnel and viewer, until the worker has been told of it.
    unopened: Option<(usize, IpAddr)>,
    /// Per direction: bytes passed so far.
    offset: [u64; 2],
    /// Bytes waiting for the worker in one direction past which it is woken at once.
    hurry_at: u64,
    /// Per direction: where the worker had read to when it was last hurried.
    hurried: [Option<u64>; 2],
    /// Per direction: `shared.read_to` when last loaded (it only grows, so what
    /// waits is at most what this says).
    read_seen: [u64; 2],
    /// An event was dropped (or the stream could not be opened): nothing more is
    /// sent until the capture resumes at a request.
    lost: bool,
    /// It was dropped because the queue's lock stayed taken, so the worker has not
    /// been told yet (it is by the next pass that finds the lock free, by a resume
    /// or by the close).
    untold: bool,
    /// The last bytes that passed came from the origin: bytes from the viewer now
    /// start its next request (the Edge sends one request at a time on a stream).
    answered: bool,
    /// Resumes sent.
    resumes: u32,
    /// A resume was sent that the worker has not read yet: until it has, what it
    /// said it does not need is from before the hole, and everything is copied.
    resuming: bool,
}

impl QueuedTap {
    /// Starts capturing a stream of tunnel `tunnel` opened for `viewer` (`None`
    /// when the capture thread could not be started). When the queue is full or
    /// held too long, the stream passes uncaptured until a later request of it
    /// finds room.
    pub(crate) fn new(inspector: &Inspector, tunnel: usize, viewer: IpAddr) -> Option<Self> {
        let queue = Arc::clone(&inspector.inner.queue);
        if !start_worker(&queue, Arc::downgrade(&inspector.inner)) {
            return None;
        }
        let stream = queue.next_stream.fetch_add(1, Ordering::Relaxed);
        let mut tap = QueuedTap {
            queue,
            stream,
            shared: Arc::default(),
            unopened: Some((tunnel, viewer)),
            offset: [0; 2],
            hurry_at: inspector.config().body_limit as u64 + HURRY_PAST_LIMIT,
            hurried: [None; 2],
            read_seen: [0; 2],
            lost: true,
            untold: false,
            answered: false,
            resumes: 0,
            resuming: false,
        };
        // Forwarding does not wait for a holder that was preempted: the stream
        // passes uncaptured instead, for now.
        let queue = Arc::clone(&tap.queue);
        if let Some(mut batch) = queue.batch.try_lock()
            && batch.events.len() < queue.room.events
        {
            tap.open(&mut batch, Instant::now());
            tap.lost = false;
            drop(batch);
            queue.wake();
        }
        Some(tap)
    }

    /// Tells the worker of the stream, if it has not been yet.
    fn open(&mut self, batch: &mut Batch, now: Instant) {
        if let Some((tunnel, viewer)) = self.unopened.take() {
            batch.push(
                self.stream,
                now,
                What::Open {
                    tunnel,
                    viewer,
                    shared: Arc::clone(&self.shared),
                },
            );
        }
    }

    /// After a hole, starts the capture again at the request whose first bytes
    /// `data` are, if the queue has room for it (half of it free): true when it
    /// did, with `data` queued.
    fn resume(&mut self, data: &[u8]) -> bool {
        // (Its own reference: the batch's guard borrows it while `self` changes.)
        let queue = Arc::clone(&self.queue);
        let Some(mut batch) = queue.batch.try_lock_now() else {
            return false;
        };
        let room = queue.room;
        if batch.events.len() + 4 > room.events / 2
            || batch.bytes.len() + data.len() > room.bytes / 2
        {
            return false;
        }
        let now = Instant::now();
        self.open(&mut batch, now);
        if self.untold {
            batch.push(self.stream, now, What::Lost);
            self.untold = false;
        }
        let at = [
            self.offset[FROM_VIEWER] - data.len() as u64,
            self.offset[FROM_ORIGIN],
        ];
        self.resumes = self.resumes.wrapping_add(1);
        batch.push(
            self.stream,
            now,
            What::Resume {
                at,
                n: self.resumes,
            },
        );
        batch.push_data(self.stream, now, FROM_VIEWER, data);
        drop(batch);
        queue.wake();
        self.lost = false;
        self.resuming = true;
        self.read_seen = at;
        self.hurried = [None; 2];
        true
    }

    /// Where the worker said the bytes it does not need end in `direction`.
    fn needless_to(&mut self, direction: usize) -> u64 {
        if self.resuming {
            if self.shared.resync.resumed.load(Ordering::Acquire) != self.resumes {
                return 0;
            }
            self.resuming = false;
        }
        self.shared.needless_to[direction].load(Ordering::Acquire)
    }

    fn pass(&mut self, direction: usize, data: &[u8]) {
        let at = self.offset[direction];
        let len = data.len() as u64;
        self.offset[direction] += len;
        let turned = direction == FROM_VIEWER && self.answered;
        self.answered = direction == FROM_ORIGIN;
        let needless_to = self.needless_to(direction);
        if needless_to == u64::MAX || self.lost {
            // A capture the worker ended at a hole may start again.
            if !self.lost && self.shared.resync.holed.load(Ordering::Acquire) {
                self.lost = true;
            }
            if self.lost && turned && starts_a_request(data) && self.resume(data) {
                return;
            }
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
        if batch.events.len() + 2 > self.queue.room.events {
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
            if batch.bytes.len() + rest.len() <= self.queue.room.bytes {
                batch.push_data(self.stream, now, direction, rest);
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
        if self.unopened.is_some() {
            // The worker never heard of it.
            return;
        }
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

/// Whether `data` may start an HTTP request: a method (capital letters) and a
/// space, after the empty lines a message may follow.
fn starts_a_request(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    let data = &data[start..];
    let method = data.iter().take(MAX_METHOD + 1).position(|&b| b == b' ');
    matches!(method, Some(n) if n > 0 && data[..n].iter().all(u8::is_ascii_uppercase))
}

impl Batch {
    fn push(&mut self, stream: u64, at: Instant, what: What) {
        self.events.push(Event { stream, at, what });
        self.pushed += 1;
    }

    /// Copies `data`, which passed in `direction`, and its event.
    fn push_data(&mut self, stream: u64, at: Instant, direction: usize, data: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        let len = data.len();
        self.push(
            stream,
            at,
            What::Data {
                direction,
                start,
                len,
            },
        );
    }

    /// Room for everything the queue may hold, reserved by the worker before the
    /// batch goes back to forwarding under heavy traffic: growing it under the lock
    /// would copy megabytes while streams wait (and give up). Only reserved: pages
    /// are touched as bytes arrive. (Closes are queued past `room.events`: room
    /// for some of them too.)
    fn make_room(&mut self, room: Room) {
        self.bytes
            .reserve_exact(room.bytes.saturating_sub(self.bytes.len()));
        self.events
            .reserve_exact((room.events + room.events / 16).saturating_sub(self.events.len()));
    }

    /// Gives back room past what it keeps between bursts (the batch is empty):
    /// what a burst touched is freed, and what light traffic needs stays reserved.
    /// (Not reserved in full again right away: the allocator would hand back the
    /// very pages just freed.)
    fn keep_little(&mut self, room: Room) {
        if self.bytes.capacity() > room.keep_bytes {
            self.bytes = Vec::with_capacity(room.keep_bytes);
        }
        if self.events.capacity() > room.keep_events {
            self.events = Vec::with_capacity(room.keep_events);
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
    /// Forwarding was told that the capture ended at a hole.
    holed: bool,
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
            batch.keep_little(queue.room);
            spare = batch;
            continue;
        }
        let Some(inner) = inspector.upgrade() else {
            return;
        };
        let owner = Inspector { inner };
        let heavy = batch.bytes.len() > queue.room.keep_bytes / 2
            || batch.events.len() > queue.room.keep_events / 2;
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
            batch.make_room(queue.room);
        } else {
            batch.keep_little(queue.room);
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
                    holed: false,
                },
            );
            return;
        }
        What::Resume { at, n } => {
            if let Some(f) = streams.get_mut(&stream) {
                f.tap.restart();
                f.read_to = at;
                f.needless_to = at;
                f.holed = false;
                for d in [FROM_VIEWER, FROM_ORIGIN] {
                    f.shared.needless_to[d].store(at[d], Ordering::Release);
                }
                f.shared.resync.holed.store(false, Ordering::Relaxed);
                // Read after what is stored above (it releases them).
                f.shared.resync.resumed.store(n, Ordering::Release);
                if !f.moved {
                    f.moved = true;
                    moved.push(stream);
                }
            }
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
                f.holed = true;
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
    // Bytes that passed unread where a body was not expected ended the capture:
    // forwarding may resume it at a later request (it reads this once it sees the
    // stream is followed no more, stored above).
    if !f.holed && f.tap.fell_behind() {
        f.holed = true;
        f.shared.resync.holed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
