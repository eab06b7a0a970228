//! The forwarding side of an HTTP stream's capture: a [`QueuedTap`] copies what
//! passes into the capture worker's queue (see [`super::worker`]), passes over what
//! the worker said it does not need, and, when the capture fell behind (the queue
//! was full or held), starts it again at the stream's next request.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use netbore_transport::pipe::Tap;

use super::Inspector;
use super::worker::{Batch, FROM_ORIGIN, FROM_VIEWER, Queue, Shared, What, start_worker};

/// Bytes one direction of a stream may have waiting, past the body limit, before
/// the worker is woken at once (a large body is coming; it says soon how much of
/// it it needs).
const HURRY_PAST_LIMIT: u64 = 32 * 1024;
/// The longest method a resume looks for.
const MAX_METHOD: usize = 16;
/// The longest request line a resume looks for.
const MAX_REQUEST_LINE: usize = 8 * 1024;

/// The forwarding side of one HTTP stream: copies what passes into the queue.
pub(crate) struct QueuedTap {
    queue: Arc<Queue>,
    stream: u64,
    pub(super) shared: Arc<Shared>,
    /// The stream's tunnel and viewer, until the worker has been told of it.
    unopened: Option<(usize, IpAddr)>,
    /// Per direction: bytes passed so far.
    pub(super) offset: [u64; 2],
    /// Bytes waiting for the worker in one direction past which it is woken at once.
    hurry_at: u64,
    /// Per direction: where the worker had read to when it was last hurried.
    hurried: [Option<u64>; 2],
    /// Per direction: `shared.read_to` when last loaded (it only grows, so what
    /// waits is at most what this says).
    read_seen: [u64; 2],
    /// An event was dropped (or the stream could not be opened): nothing more is
    /// sent until the capture resumes at a request.
    pub(super) lost: bool,
    /// It was dropped because the queue's lock stayed taken, so the worker has not
    /// been told yet (it is by the next pass that finds the lock free, by a resume
    /// or by the close).
    pub(super) untold: bool,
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
            // A stream starts with a request.
            answered: true,
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
        let Some(mut batch) = queue.batch.try_lock() else {
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
        batch.push_data(self.stream, now, FROM_VIEWER, data, room.bytes);
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
                batch.push_data(self.stream, now, direction, rest, self.queue.room.bytes);
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

/// Whether `data` starts with an HTTP/1.x request line (after the empty lines a
/// message may follow): a method of capital letters, a target, `HTTP/1.x`, all on
/// one line that ends in `data`.
pub(super) fn starts_a_request(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    let data = &data[start..];
    let Some(end) = memchr::memchr(b'\n', &data[..data.len().min(MAX_REQUEST_LINE)]) else {
        return false;
    };
    let line = data[..end].strip_suffix(b"\r").unwrap_or(&data[..end]);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    (1..=MAX_METHOD).contains(&method.len())
        && method.iter().all(u8::is_ascii_uppercase)
        && !target.is_empty()
        && target.iter().all(u8::is_ascii_graphic)
        && version.len() == 8
        && version.starts_with(b"HTTP/1.")
        && version[7].is_ascii_digit()
}
