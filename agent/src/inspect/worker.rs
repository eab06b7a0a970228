//! The capture worker: an HTTP tunnel's bytes are read for the inspector on a
//! thread of its own, so forwarding never parses them, never copies into the
//! history and never waits for its lock (which the inspector's web page also
//! takes). On the forwarding side a [`QueuedTap`](super::queued_tap::QueuedTap) copies what passes into a queue
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

use super::capture::HttpTap;
use super::handoff::{Guard, Handoff};
use super::{Inner, Inspector};

/// How long the worker lets bytes gather before it reads them.
const TICK: Duration = Duration::from_millis(5);
/// Room a queue keeps between bursts, at most; more is given back when the
/// worker is idle.
const KEEP_ROOM: usize = 1 << 20;
/// How far past what it copies forwarding asks for the queue's next lines.
const WARM_AHEAD: usize = 2048;

/// The two directions of a stream.
pub(super) const FROM_VIEWER: usize = 0;
pub(super) const FROM_ORIGIN: usize = 1;

/// The queue between the forwarding side and the worker.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(super) batch: Handoff<Batch>,
    /// Its bounds, from the inspector's memory budget.
    pub(super) room: Room,
    /// Set while the worker sleeps with nothing to do.
    pub(super) parked: AtomicBool,
    pub(super) worker: OnceLock<Thread>,
    pub(super) next_stream: AtomicU64,
    /// Events the worker has read, counted as `Batch::pushed` counts them.
    read: AtomicU64,
    /// The worker has ended (it never ends while the inspector lives, unless it
    /// panicked): nothing more is queued.
    ended: AtomicBool,
}

/// What waits for the worker.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) events: Vec<Event>,
    /// The bytes of the `Data` events, one after the other.
    pub(super) bytes: Vec<u8>,
    /// Events pushed since the start.
    pushed: u64,
}

#[derive(Debug)]
pub(super) struct Event {
    pub(super) stream: u64,
    pub(super) at: Instant,
    pub(super) what: What,
}

#[derive(Debug)]
pub(super) enum What {
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
pub(super) struct Shared {
    /// Per direction: the offset up to which the worker does not need the bytes.
    pub(super) needless_to: Line<[AtomicU64; 2]>,
    /// Per direction: the offset up to which the worker has read.
    pub(super) read_to: Line<[AtomicU64; 2]>,
    /// How a capture that fell behind starts again (read by forwarding only once
    /// its stream is followed no more, or while it waits for a resume to be read).
    pub(super) resync: Line<Resync>,
}

#[derive(Debug, Default)]
pub(super) struct Resync {
    /// The capture ended because bytes passed unread (the worker fell behind), not
    /// because the stream stopped being HTTP: it may resume at a later request.
    pub(super) holed: AtomicBool,
    /// Resumes the worker has read.
    pub(super) resumed: AtomicU32,
}

/// A value alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(super) struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// A queue's bounds. Each of its two batches holds at most `bytes` bytes and
/// `events` events, and past that only closes (one per stream); bytes that find it
/// full pass unread (a body keeps what came before, marked cut; elsewhere its
/// stream's capture stops until its next request), and so do the events of a
/// stream that finds it full.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room {
    pub(super) bytes: usize,
    pub(super) events: usize,
    /// What a batch keeps between bursts.
    keep_bytes: usize,
    keep_events: usize,
}

impl Room {
    /// The queue's share of a memory budget of `budget` bytes: a sixteenth of it
    /// per batch for bytes (at the default budget, 3 MiB, which the worker empties
    /// every 5 ms), and an event per 256 of those bytes. Never less than 256 KiB,
    /// so that a burst of a few hundred requests is captured whole: a budget under
    /// 1 MiB is passed by that minimum.
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
    pub(super) fn lock(&self) -> Guard<'_, Batch> {
        self.batch.lock()
    }

    /// Wakes the worker if it sleeps.
    pub(super) fn wake(&self) {
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
        self.settle_within(Duration::from_secs(1)).await;
    }

    /// [`Queue::settle`], waiting up to `patience`.
    pub(crate) async fn settle_within(&self, patience: Duration) {
        let target = self.lock().pushed;
        let deadline = Instant::now() + patience;
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

impl Batch {
    pub(super) fn push(&mut self, stream: u64, at: Instant, what: What) {
        self.events.push(Event { stream, at, what });
        self.pushed += 1;
    }

    /// Copies `data`, which passed in `direction`, and its event (room for it
    /// checked against `most`, which the bytes' room never passes: it grows to
    /// `most` at once, not by doubling past it).
    pub(super) fn push_data(
        &mut self,
        stream: u64,
        at: Instant,
        direction: usize,
        data: &[u8],
        most: usize,
    ) {
        let grown = self.bytes.capacity() < self.bytes.len() + data.len();
        if grown {
            self.bytes
                .reserve_exact(most.saturating_sub(self.bytes.len()).max(data.len()));
        }
        let start = self.bytes.len();
        // The room's lines were last read by the capture thread's core: asked for
        // ahead of the copies that write them, they come while forwarding does
        // other work, instead of one at a time in the copy (`docs/benchmarks.md`,
        // finding 50).
        super::lines::extend_asking_ahead(
            &mut self.bytes,
            data,
            WARM_AHEAD,
            start == 0 || grown,
            super::lines::Want::Write,
        );
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
pub(super) fn start_worker(queue: &Arc<Queue>, inspector: Weak<Inner>) -> bool {
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

/// The streams the worker follows, by number (the queue's own count), with a fast
/// hasher: the table is looked up on every event, twice per request.
type Streams = HashMap<u64, Followed, foldhash::fast::RandomState>;

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
    let mut streams = Streams::default();
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
    streams: &mut Streams,
    moved: &mut Vec<u64>,
    bytes: &[u8],
    event: Event,
) {
    let Event { stream, at, what } = event;
    let (f, direction, len) = match what {
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
                // A stream that left HTTP (a WebSocket, a tunnel) stays unfollowed;
                // one the worker has not read yet (opened by this resume) or that
                // fell behind starts again here.
                let again = f.tap.resumable() || f.read_to == [0; 2];
                if again {
                    f.tap.restart();
                    f.read_to = at;
                }
                f.needless_to = if again { at } else { [u64::MAX; 2] };
                f.holed = false;
                for d in [FROM_VIEWER, FROM_ORIGIN] {
                    f.shared.needless_to[d].store(f.needless_to[d], Ordering::Release);
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
            (f, direction, len as u64)
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
            (f, direction, len)
        }
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
    if !f.holed && f.tap.resumable() {
        f.holed = true;
        f.shared.resync.holed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
