//! Fuzzes one sans-IO mux `Session` fed untrusted bytes from its peer, interleaved
//! with the application's commands.
//!
//! Input layout: byte 0 picks the role (bit 0: 0 = client, 1 = server), then a
//! sequence of operations, each an opcode byte (taken mod 16) and its arguments:
//!
//! | op | name          | arguments                     |
//! |----|---------------|-------------------------------|
//! | 0  | feed          | len: u16 BE, then len bytes   |
//! | 1  | open          |                               |
//! | 2  | accept        |                               |
//! | 3  | write         | idx: u8, len: u16 BE          |
//! | 4  | read          | idx: u8                       |
//! | 5  | finish        | idx: u8                       |
//! | 6  | reset         | idx: u8                       |
//! | 7  | release       | idx: u8                       |
//! | 8  | poll_transmit |                               |
//! | 9  | timeout       | ms: u8 (clock advances ms×10) |
//! | 10 | close         | code: u8                      |
//! | 11 | conn. lost    |                               |
//! | 12 | peer SYN      | flags: u8 (mod 16), inc: u16  |
//! | 13 | peer data     | idx: u8, flags: u8, len: u16  |
//! | 14 | peer window   | idx: u8, flags: u8, inc: u32  |
//! | 15 | read all      |                               |
//!
//! `idx` picks a known stream (`idx % known`), except 255 which names stream 255
//! whether or not it exists. "Peer" ops synthesize well-formed frames (the fuzzer
//! would rarely guess valid stream ids otherwise) and feed them like op 0.
//!
//! Invariants: nothing panics; `buffered_bytes <= window_total <= streams ×
//! max_stream_window`; `streams <= max_streams`; once the session failed or closed it
//! opens no stream and accepts no write; `poll_transmit` hands out exactly
//! `queued_bytes`, as whole frames that decode cleanly and never exceed the largest
//! frame this implementation sends; at most one go-away ever leaves, and one does
//! leave after a protocol error.

#![no_main]

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use netbore_mux::config::{MAX_SEND_FRAME, PROTOCOL_INITIAL_WINDOW};
use netbore_mux::frame::{Flags, Frame, FrameDecoder, GoAwayCode, HEADER_LEN};
use netbore_mux::{Config, ReadOutcome, Role, Session, SessionError, StreamError, StreamId};

/// The fake clock's origin: one fixed instant for the whole process.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn config() -> Config {
    Config {
        max_streams: 4,
        accept_backlog: 2,
        max_frame_size: MAX_SEND_FRAME as u32,
        initial_stream_window: PROTOCOL_INITIAL_WINDOW,
        max_stream_window: 2 * PROTOCOL_INITIAL_WINDOW,
        max_session_window: 6 * u64::from(PROTOCOL_INITIAL_WINDOW),
        max_send_buffer: MAX_SEND_FRAME,
        keepalive_interval: None,
        keepalive_timeout: Duration::from_secs(1),
        ..Config::default()
    }
}

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u8_or0(&mut self) -> u8 {
        self.u8().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8_or0(), self.u8_or0()])
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) << 16 | u32::from(self.u16())
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

struct Harness {
    session: Session,
    role: Role,
    max_stream_window: usize,
    max_streams: usize,
    now: Instant,
    inbox: BytesMut,
    /// Streams this harness has heard of (opened, accepted, or opened by the "peer").
    known: Vec<StreamId>,
    /// Next id the synthesized peer opens.
    next_peer_id: u32,
    /// The session failed (protocol error), was closed, or lost its connection.
    failed: bool,
    /// A protocol error from `handle_input` happened while the session was open.
    input_error_while_open: bool,
    connection_lost: bool,
    /// Everything `poll_transmit` produced, checked frame by frame.
    out_decoder: FrameDecoder,
    out_buf: BytesMut,
    go_aways_sent: usize,
    counter: u8,
}

impl Harness {
    fn new(role: Role) -> Self {
        let config = config();
        let session = Session::new(role, config.clone(), epoch());
        let config = session.config().clone();
        Harness {
            session,
            role,
            max_stream_window: config.max_stream_window as usize,
            max_streams: config.max_streams,
            now: epoch(),
            inbox: BytesMut::new(),
            known: Vec::new(),
            next_peer_id: match role {
                Role::Client => 2,
                Role::Server => 1,
            },
            failed: false,
            input_error_while_open: false,
            connection_lost: false,
            out_decoder: FrameDecoder::new(MAX_SEND_FRAME as u32),
            out_buf: BytesMut::new(),
            go_aways_sent: 0,
            counter: 0,
        }
    }

    fn pick(&self, idx: u8) -> StreamId {
        if idx == 255 || self.known.is_empty() {
            StreamId(u32::from(idx))
        } else {
            self.known[usize::from(idx) % self.known.len()]
        }
    }

    fn remember(&mut self, id: StreamId) {
        if !self.known.contains(&id) {
            self.known.push(id);
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.inbox.extend_from_slice(bytes);
        let was_open = !self.session.is_closing();
        match self.session.handle_input(&mut self.inbox, self.now) {
            Ok(()) => {
                // Everything complete was consumed: what is left is one partial frame.
                assert!(self.session.input_wanted(self.inbox.len()) > 0);
            }
            Err(e) => {
                if was_open {
                    assert_ne!(e, SessionError::Closed);
                    self.input_error_while_open = true;
                }
                self.failed = true;
                assert!(self.session.is_closing(), "session still open after {e}");
                assert!(self.session.error().is_some());
            }
        }
        if self.failed {
            self.assert_refuses_streams();
        }
    }

    fn feed_frame(&mut self, frame: Frame) {
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        self.feed(&wire);
    }

    fn assert_refuses_streams(&mut self) {
        let r = self.session.open_stream();
        assert!(r.is_err(), "a failed or closed session opened stream {r:?}");
        assert!(self.session.is_closing());
    }

    fn accept(&mut self) {
        while let Some(id) = self.session.accept_stream() {
            let peer_parity = match self.role {
                Role::Client => 0,
                Role::Server => 1,
            };
            assert_eq!(id.0 % 2, peer_parity, "accepted a stream of our own parity");
            self.remember(id);
        }
    }

    fn payload(&mut self, len: usize) -> Vec<u8> {
        self.counter = self.counter.wrapping_add(1);
        let c = self.counter;
        (0..len).map(|i| (i as u8).wrapping_mul(13) ^ c).collect()
    }

    fn transmit(&mut self) {
        let queued = self.session.stats().queued_bytes;
        assert_eq!(self.session.has_transmit(), queued > 0);
        let mut chunks = VecDeque::<Bytes>::new();
        self.session.poll_transmit(&mut chunks);
        let total: usize = chunks.iter().map(Bytes::len).sum();
        assert_eq!(
            total, queued,
            "poll_transmit handed out other than queued_bytes"
        );
        assert_eq!(self.session.stats().queued_bytes, 0);
        for chunk in chunks {
            self.out_buf.extend_from_slice(&chunk);
        }
        loop {
            match self.out_decoder.decode(&mut self.out_buf) {
                Ok(Some(frame)) => self.check_sent(frame),
                Ok(None) => break,
                Err(e) => panic!("the session sent an undecodable frame: {e}"),
            }
        }
        assert!(
            self.out_buf.is_empty(),
            "poll_transmit ended in the middle of a frame"
        );
        assert_eq!(self.out_decoder.bytes_wanted(0), HEADER_LEN);
    }

    fn check_sent(&mut self, frame: Frame) {
        match frame {
            Frame::GoAway { .. } => self.go_aways_sent += 1,
            Frame::Data { payload, .. } => assert!(payload.len() <= MAX_SEND_FRAME),
            Frame::Ping { flags, .. } => {
                assert!(flags == Flags::empty() || flags == Flags::ACK);
            }
            Frame::WindowUpdate { .. } => {}
        }
        assert!(self.go_aways_sent <= 1, "more than one go-away sent");
    }

    fn check(&mut self) {
        let st = self.session.stats();
        assert!(st.streams <= self.max_streams, "{st:?}");
        assert!(
            st.buffered_bytes as u64 <= st.window_total,
            "more bytes buffered than windows allow: {st:?}"
        );
        assert!(
            st.buffered_bytes <= st.streams * self.max_stream_window,
            "buffered bytes exceed streams × max_stream_window: {st:?}"
        );
        assert!(
            st.window_total <= (st.streams * self.max_stream_window) as u64,
            "{st:?}"
        );
        if self.failed {
            assert!(self.session.is_closing());
        }
    }

    fn op(&mut self, input: &mut Input<'_>, opcode: u8) {
        match opcode % 16 {
            0 => {
                let len = input.u16();
                let bytes = input.take(usize::from(len));
                self.feed(bytes);
            }
            1 => {
                if self.failed {
                    self.assert_refuses_streams();
                } else if let Ok(id) = self.session.open_stream() {
                    let own_parity = match self.role {
                        Role::Client => 1,
                        Role::Server => 0,
                    };
                    assert_eq!(id.0 % 2, own_parity);
                    assert!(!self.known.contains(&id), "stream id {id} reused");
                    self.remember(id);
                }
            }
            2 => self.accept(),
            3 => {
                let id = self.pick(input.u8_or0());
                let len = input.u16();
                let data = self.payload(usize::from(len));
                let r = self.session.write(id, &data);
                if let Ok(n) = r {
                    assert!(n <= data.len() && n <= MAX_SEND_FRAME);
                    assert!(
                        !(self.failed && n > 0),
                        "a failed session accepted {n} bytes"
                    );
                }
            }
            4 => {
                let id = self.pick(input.u8_or0());
                if let Ok(ReadOutcome::Data(b)) = self.session.read(id, || self.now) {
                    assert!(!b.is_empty(), "read returned an empty chunk");
                }
            }
            5 => {
                let id = self.pick(input.u8_or0());
                let r = self.session.finish(id);
                if let Err(e) = r {
                    assert!(
                        matches!(e, StreamError::Reset | StreamError::Unknown(_)),
                        "{e}"
                    );
                }
            }
            6 => {
                let id = self.pick(input.u8_or0());
                self.session.reset(id);
            }
            7 => {
                let id = self.pick(input.u8_or0());
                self.session.release(id);
            }
            8 => {
                self.transmit();
                while self.session.poll_event().is_some() {}
            }
            9 => {
                let ms = input.u8_or0();
                self.now += Duration::from_millis(u64::from(ms) * 10);
                self.session.handle_timeout(self.now);
            }
            10 => {
                let code = input.u8_or0();
                self.session.close(GoAwayCode(u32::from(code)));
                self.failed = true;
                self.assert_refuses_streams();
            }
            11 => {
                self.session
                    .handle_connection_lost(SessionError::ConnectionClosed);
                self.failed = true;
                self.connection_lost = true;
                assert!(self.session.is_closed());
                assert!(!self.session.wants_input());
                assert_eq!(self.session.stats().queued_bytes, 0);
                self.assert_refuses_streams();
            }
            12 => {
                let flags = Flags(u16::from(input.u8_or0() % 16)) | Flags::SYN;
                let increment = u32::from(input.u16());
                let id = StreamId(self.next_peer_id);
                self.next_peer_id = self.next_peer_id.wrapping_add(2);
                self.remember(id);
                self.feed_frame(Frame::WindowUpdate {
                    stream: id,
                    flags,
                    increment,
                });
            }
            13 => {
                let id = self.pick(input.u8_or0());
                let flags = Flags(u16::from(input.u8_or0() % 16));
                let len = input.u16();
                let payload = Bytes::from(self.payload(usize::from(len)));
                if id.0 != 0 {
                    self.feed_frame(Frame::Data {
                        stream: id,
                        flags,
                        payload,
                    });
                }
            }
            14 => {
                let id = self.pick(input.u8_or0());
                let flags = Flags(u16::from(input.u8_or0() % 16));
                let increment = input.u32();
                if id.0 != 0 {
                    self.feed_frame(Frame::WindowUpdate {
                        stream: id,
                        flags,
                        increment,
                    });
                }
            }
            _ => {
                for id in self.known.clone() {
                    for _ in 0..64 {
                        match self.session.read(id, || self.now) {
                            Ok(ReadOutcome::Data(b)) => assert!(!b.is_empty()),
                            _ => break,
                        }
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(first) = input.u8() else {
        return;
    };
    let role = if first & 1 == 0 {
        Role::Client
    } else {
        Role::Server
    };
    let mut h = Harness::new(role);
    while let Some(opcode) = input.u8() {
        h.op(&mut input, opcode);
        h.check();
    }
    h.transmit();
    h.check();
    if h.input_error_while_open && !h.connection_lost {
        assert_eq!(
            h.go_aways_sent, 1,
            "a protocol error left without a go-away"
        );
    }
});
