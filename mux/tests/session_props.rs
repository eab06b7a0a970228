//! Property tests of the sans-IO session: two sessions wired back to back, driven by
//! arbitrary interleavings of opens, writes, reads, half-closes, resets, releases and
//! partial deliveries. Every byte must arrive in order and no stream may leak.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use netbore_mux::{Config, ReadOutcome, Role, Session, StreamId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Open(usize),
    Write(usize, usize, usize),
    Read(usize, usize),
    Finish(usize, usize),
    Reset(usize, usize),
    Release(usize, usize),
    Deliver(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let side = 0usize..2;
    let idx = 0usize..8;
    prop_oneof![
        2 => side.clone().prop_map(Op::Open),
        6 => (side.clone(), idx.clone(), 1usize..300_000).prop_map(|(s, i, n)| Op::Write(s, i, n)),
        6 => (side.clone(), idx.clone()).prop_map(|(s, i)| Op::Read(s, i)),
        1 => (side.clone(), idx.clone()).prop_map(|(s, i)| Op::Finish(s, i)),
        1 => (side.clone(), idx.clone()).prop_map(|(s, i)| Op::Reset(s, i)),
        1 => (side.clone(), idx.clone()).prop_map(|(s, i)| Op::Release(s, i)),
        6 => (side, 1usize..400_000).prop_map(|(s, n)| Op::Deliver(s, n)),
    ]
}

/// One end: the session, the bytes it has not yet delivered, and its handles.
struct End {
    session: Session,
    wire: VecDeque<Bytes>,
    inbox: BytesMut,
    /// Streams this end holds a handle to (opened or accepted), not yet released.
    handles: Vec<StreamId>,
}

struct Harness {
    ends: [End; 2],
    /// (stream, direction 0 = A→B) → bytes written / bytes read.
    sent: HashMap<(StreamId, usize), Vec<u8>>,
    recv: HashMap<(StreamId, usize), Vec<u8>>,
    reset: std::collections::HashSet<StreamId>,
    counter: u8,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let cfg = Config {
            keepalive_interval: None,
            ..Config::default()
        };
        let end = |role| End {
            session: Session::new(role, cfg.clone(), now),
            wire: VecDeque::new(),
            inbox: BytesMut::new(),
            handles: Vec::new(),
        };
        Harness {
            ends: [end(Role::Client), end(Role::Server)],
            sent: HashMap::new(),
            recv: HashMap::new(),
            reset: Default::default(),
            counter: 0,
            now,
        }
    }

    fn accept_all(&mut self) {
        for end in &mut self.ends {
            while let Some(id) = end.session.accept_stream() {
                end.handles.push(id);
            }
        }
    }

    fn pick(&self, side: usize, idx: usize) -> Option<StreamId> {
        let h = &self.ends[side].handles;
        (!h.is_empty()).then(|| h[idx % h.len()])
    }

    /// Moves up to `budget` bytes from `side`'s output into the other side's input.
    fn deliver(&mut self, side: usize, mut budget: usize) {
        let (a, b) = self.ends.split_at_mut(1);
        let (from, to) = if side == 0 {
            (&mut a[0], &mut b[0])
        } else {
            (&mut b[0], &mut a[0])
        };
        from.session.poll_transmit(&mut from.wire);
        while budget > 0 {
            let Some(mut chunk) = from.wire.pop_front() else {
                break;
            };
            let n = chunk.len().min(budget);
            to.inbox.extend_from_slice(&chunk.split_to(n));
            budget -= n;
            if !chunk.is_empty() {
                from.wire.push_front(chunk);
            }
        }
        to.session
            .handle_input(&mut to.inbox, self.now)
            .expect("no protocol error between correct peers");
    }

    fn read(&mut self, side: usize, id: StreamId) -> bool {
        let dir = 1 - side;
        match self.ends[side].session.read(id, || self.now) {
            Ok(ReadOutcome::Data(b)) => {
                self.recv
                    .entry((id, dir))
                    .or_default()
                    .extend_from_slice(&b);
                true
            }
            _ => false,
        }
    }

    fn apply(&mut self, op: Op) {
        self.accept_all();
        match op {
            Op::Open(side) => {
                if let Ok(id) = self.ends[side].session.open_stream() {
                    self.ends[side].handles.push(id);
                }
            }
            Op::Write(side, idx, len) => {
                if let Some(id) = self.pick(side, idx) {
                    self.counter = self.counter.wrapping_add(1);
                    let data: Vec<u8> = (0..len)
                        .map(|i| (i as u8).wrapping_mul(7) ^ self.counter)
                        .collect();
                    if let Ok(n) = self.ends[side].session.write(id, &data) {
                        self.sent
                            .entry((id, side))
                            .or_default()
                            .extend_from_slice(&data[..n]);
                    }
                }
            }
            Op::Read(side, idx) => {
                if let Some(id) = self.pick(side, idx) {
                    self.read(side, id);
                }
            }
            Op::Finish(side, idx) => {
                if let Some(id) = self.pick(side, idx) {
                    let _ = self.ends[side].session.finish(id);
                }
            }
            Op::Reset(side, idx) => {
                if let Some(id) = self.pick(side, idx) {
                    self.ends[side].session.reset(id);
                    self.reset.insert(id);
                }
            }
            Op::Release(side, idx) => {
                if let Some(id) = self.pick(side, idx) {
                    self.ends[side].session.release(id);
                    self.ends[side].handles.retain(|h| *h != id);
                    // A release before both FINs resets the stream.
                    self.reset.insert(id);
                }
            }
            Op::Deliver(side, n) => self.deliver(side, n),
        }
    }

    /// Finishes every stream, reads everything, releases every handle, and runs the
    /// wire until both sessions are idle.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            self.accept_all();
            let mut progress = false;
            for side in 0..2 {
                for id in self.ends[side].handles.clone() {
                    let _ = self.ends[side].session.finish(id);
                    while self.read(side, id) {
                        progress = true;
                    }
                }
            }
            for side in 0..2 {
                if self.ends[side].session.has_transmit() || !self.ends[side].wire.is_empty() {
                    self.deliver(side, usize::MAX);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        for side in 0..2 {
            for id in std::mem::take(&mut self.ends[side].handles) {
                self.ends[side].session.release(id);
            }
        }
        for _ in 0..4 {
            self.accept_all();
            for side in 0..2 {
                for id in std::mem::take(&mut self.ends[side].handles) {
                    self.ends[side].session.release(id);
                }
                self.deliver(side, usize::MAX);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn streams_deliver_in_order_and_never_leak(ops in proptest::collection::vec(op(), 1..120)) {
        let mut h = Harness::new();
        for op in ops {
            h.apply(op);
        }
        h.settle();
        for (key, sent) in &h.sent {
            let got = h.recv.get(key).map(Vec::as_slice).unwrap_or(&[]);
            if h.reset.contains(&key.0) {
                prop_assert!(sent.starts_with(got), "stream {:?}: received bytes are not a prefix of sent", key);
            } else {
                prop_assert_eq!(got.len(), sent.len(), "stream {:?} lost bytes", key);
                prop_assert!(got == sent.as_slice(), "stream {:?} reordered bytes", key);
            }
        }
        for end in &h.ends {
            let stats = end.session.stats();
            prop_assert_eq!(stats.streams, 0, "streams leaked: {:?}", stats);
            prop_assert_eq!(stats.buffered_bytes, 0);
            prop_assert_eq!(stats.window_total, 0);
            prop_assert!(end.session.error().is_none());
        }
    }
}
