//! Fuzzes two sans-IO mux sessions wired back to back, driven by an arbitrary
//! sequence of operations (opens, writes, reads, half-closes, resets, releases,
//! partial deliveries, clock ticks).
//!
//! The input is a `Vec<Op>` in the `arbitrary` crate's format. Invariants: correct
//! peers never see a protocol error; buffered bytes stay within the windows; and
//! after the settle phase (finish, read and release everything, deliver every byte)
//! every stream that was never reset or released early delivered every byte in
//! order, every other stream delivered a prefix of what was sent, and both sessions
//! track no stream, buffer nothing and queue nothing.

#![no_main]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use netbore_mux::config::{MAX_SEND_FRAME, PROTOCOL_INITIAL_WINDOW};
use netbore_mux::{Config, FloodLimits, ReadOutcome, Role, Session, StreamId};

/// Operations beyond this are ignored. With at most this many opens, neither side
/// can reach `max_streams` or `accept_backlog`, so no open is refused (a refusal is a
/// reset the harness could not attribute).
const MAX_OPS: usize = 1000;

#[derive(Debug, Arbitrary)]
enum Op {
    Open {
        side: bool,
    },
    Write {
        side: bool,
        idx: u8,
        len: u16,
    },
    /// `kib` KiB through `write_bytes` (the zero-copy path for large payloads).
    WriteBig {
        side: bool,
        idx: u8,
        kib: u8,
    },
    Read {
        side: bool,
        idx: u8,
    },
    Finish {
        side: bool,
        idx: u8,
    },
    Reset {
        side: bool,
        idx: u8,
    },
    Release {
        side: bool,
        idx: u8,
    },
    /// Moves up to `budget` bytes from `side`'s output to the other side.
    Deliver {
        side: bool,
        budget: u16,
    },
    DeliverAll {
        side: bool,
    },
    /// Advances the fake clock (drives receive-window auto-tuning).
    Tick {
        ms: u8,
    },
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn config() -> Config {
    Config {
        max_streams: 2 * MAX_OPS,
        accept_backlog: 2 * MAX_OPS,
        max_frame_size: MAX_SEND_FRAME as u32,
        initial_stream_window: PROTOCOL_INITIAL_WINDOW,
        max_stream_window: 4 * PROTOCOL_INITIAL_WINDOW,
        max_session_window: 16 * u64::from(PROTOCOL_INITIAL_WINDOW),
        max_send_buffer: MAX_SEND_FRAME,
        keepalive_interval: None,
        keepalive_timeout: Duration::from_secs(20),
        // The harness may open and reset hundreds of streams before writing to them.
        flood: FloodLimits {
            reset_opens: u32::MAX,
            ..FloodLimits::default()
        },
        ..Config::default()
    }
}

struct End {
    session: Session,
    /// Chunks handed out by `poll_transmit` and not yet delivered.
    wire: VecDeque<Bytes>,
    /// Delivered bytes the session has not decoded yet.
    inbox: BytesMut,
    /// Streams this end holds a handle to.
    handles: Vec<StreamId>,
}

struct Harness {
    ends: [End; 2],
    /// (stream, sending side) → bytes accepted by `write` / bytes read by the peer.
    sent: HashMap<(StreamId, usize), Vec<u8>>,
    recv: HashMap<(StreamId, usize), Vec<u8>>,
    /// Streams reset or released before the settle phase: they may lose bytes.
    lossy: HashSet<StreamId>,
    counter: u8,
    now: Instant,
}

fn side(b: bool) -> usize {
    usize::from(b)
}

impl Harness {
    fn new() -> Self {
        let now = epoch();
        let end = |role| End {
            session: Session::new(role, config(), now),
            wire: VecDeque::new(),
            inbox: BytesMut::new(),
            handles: Vec::new(),
        };
        Harness {
            ends: [end(Role::Client), end(Role::Server)],
            sent: HashMap::new(),
            recv: HashMap::new(),
            lossy: HashSet::new(),
            counter: 0,
            now,
        }
    }

    fn accept_all(&mut self) {
        for end in &mut self.ends {
            while let Some(id) = end.session.accept_stream() {
                assert!(!end.handles.contains(&id), "stream {id} accepted twice");
                end.handles.push(id);
            }
        }
    }

    fn pick(&self, side: usize, idx: u8) -> Option<StreamId> {
        let h = &self.ends[side].handles;
        (!h.is_empty()).then(|| h[usize::from(idx) % h.len()])
    }

    fn payload(&mut self, len: usize) -> Vec<u8> {
        self.counter = self.counter.wrapping_add(1);
        let c = self.counter;
        (0..len)
            .map(|i| ((i >> 3) as u8).wrapping_mul(29) ^ (i as u8) ^ c)
            .collect()
    }

    fn deliver(&mut self, from: usize, mut budget: usize) {
        let [a, b] = &mut self.ends;
        let (src, dst) = if from == 0 { (a, b) } else { (b, a) };
        src.session.poll_transmit(&mut src.wire);
        while budget > 0 {
            let Some(mut chunk) = src.wire.pop_front() else {
                break;
            };
            let n = chunk.len().min(budget);
            dst.inbox.extend_from_slice(&chunk.split_to(n));
            budget -= n;
            if !chunk.is_empty() {
                src.wire.push_front(chunk);
            }
        }
        if let Err(e) = dst.session.handle_input(&mut dst.inbox, self.now) {
            panic!("protocol error between two correct sessions: {e}");
        }
    }

    /// Reads one chunk; true when data came.
    fn read(&mut self, side: usize, id: StreamId) -> bool {
        match self.ends[side].session.read(id, || self.now) {
            Ok(ReadOutcome::Data(b)) => {
                assert!(!b.is_empty());
                self.recv
                    .entry((id, 1 - side))
                    .or_default()
                    .extend_from_slice(&b);
                true
            }
            _ => false,
        }
    }

    fn write(&mut self, side: usize, id: StreamId, data: Vec<u8>, zero_copy: bool) {
        let r = if zero_copy {
            let data = Bytes::from(data.clone());
            self.ends[side].session.write_bytes(id, &data)
        } else {
            self.ends[side].session.write(id, &data)
        };
        if let Ok(n) = r {
            assert!(n <= data.len());
            self.sent
                .entry((id, side))
                .or_default()
                .extend_from_slice(&data[..n]);
        }
    }

    fn apply(&mut self, op: Op) {
        self.accept_all();
        match op {
            Op::Open { side: s } => {
                let s = side(s);
                let id = self.ends[s]
                    .session
                    .open_stream()
                    .expect("opening below every limit succeeds");
                self.ends[s].handles.push(id);
            }
            Op::Write { side: s, idx, len } => {
                let s = side(s);
                if let Some(id) = self.pick(s, idx) {
                    let data = self.payload(usize::from(len));
                    self.write(s, id, data, false);
                }
            }
            Op::WriteBig { side: s, idx, kib } => {
                let s = side(s);
                if let Some(id) = self.pick(s, idx) {
                    let data = self.payload(usize::from(kib) * 1024);
                    self.write(s, id, data, true);
                }
            }
            Op::Read { side: s, idx } => {
                let s = side(s);
                if let Some(id) = self.pick(s, idx) {
                    self.read(s, id);
                }
            }
            Op::Finish { side: s, idx } => {
                let s = side(s);
                if let Some(id) = self.pick(s, idx) {
                    let _ = self.ends[s].session.finish(id);
                }
            }
            Op::Reset { side: s, idx } => {
                let s = side(s);
                if let Some(id) = self.pick(s, idx) {
                    self.ends[s].session.reset(id);
                    self.lossy.insert(id);
                }
            }
            Op::Release { side: s, idx } => {
                let s = side(s);
                if let Some(id) = self.pick(s, idx) {
                    self.ends[s].session.release(id);
                    self.ends[s].handles.retain(|h| *h != id);
                    // Releasing with unread data, or before the peer's data arrived,
                    // resets the stream.
                    self.lossy.insert(id);
                }
            }
            Op::Deliver { side: s, budget } => self.deliver(side(s), usize::from(budget)),
            Op::DeliverAll { side: s } => self.deliver(side(s), usize::MAX),
            Op::Tick { ms } => self.now += Duration::from_millis(u64::from(ms)),
        }
        for end in &self.ends {
            let st = end.session.stats();
            assert!(st.buffered_bytes as u64 <= st.window_total, "{st:?}");
            assert!(end.session.error().is_none(), "{:?}", end.session.error());
        }
    }

    /// Finishes every stream, reads everything, releases every handle, and runs the
    /// wire until both sessions are idle.
    fn settle(&mut self) {
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 100_000, "settle does not converge");
            self.accept_all();
            let mut progress = false;
            for s in 0..2 {
                for id in self.ends[s].handles.clone() {
                    let _ = self.ends[s].session.finish(id);
                    while self.read(s, id) {
                        progress = true;
                    }
                }
            }
            for s in 0..2 {
                if self.ends[s].session.has_transmit() || !self.ends[s].wire.is_empty() {
                    self.deliver(s, usize::MAX);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        for round in 0.. {
            assert!(round < 1_000, "release phase does not converge");
            self.accept_all();
            for s in 0..2 {
                for id in std::mem::take(&mut self.ends[s].handles) {
                    self.ends[s].session.release(id);
                }
                self.deliver(s, usize::MAX);
            }
            if self.ends.iter().all(|e| !e.session.has_transmit()) {
                break;
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut h = Harness::new();
    for op in ops.into_iter().take(MAX_OPS) {
        h.apply(op);
    }
    h.settle();

    for (key, got) in &h.recv {
        assert!(
            h.sent.contains_key(key),
            "stream {key:?} received bytes nobody sent"
        );
        assert!(!got.is_empty());
    }
    for (key, sent) in &h.sent {
        let got = h.recv.get(key).map(Vec::as_slice).unwrap_or(&[]);
        if h.lossy.contains(&key.0) {
            assert!(
                sent.starts_with(got),
                "stream {key:?}: received bytes are not a prefix of the sent bytes"
            );
        } else {
            assert_eq!(got.len(), sent.len(), "stream {key:?} lost bytes");
            assert!(
                got == sent.as_slice(),
                "stream {key:?} corrupted or reordered bytes"
            );
        }
    }
    for end in &mut h.ends {
        let st = end.session.stats();
        assert_eq!(st.streams, 0, "streams leaked: {st:?}");
        assert_eq!(st.buffered_bytes, 0, "{st:?}");
        assert_eq!(st.window_total, 0, "{st:?}");
        assert_eq!(st.queued_bytes, 0, "{st:?}");
        assert!(end.wire.is_empty() && end.inbox.is_empty());
        assert!(end.session.error().is_none());
        assert!(end.session.accept_stream().is_none());
    }
});
