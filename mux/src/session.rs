//! The sans-IO mux session: bytes and `now` in, frames to send and events out.
//!
//! No tokio and no sockets live here. The API is grouped the quinn way: getters,
//! `handle_*` inputs, commands (`open_stream`, `write`, `read`, `finish`, `reset`,
//! `release`, `close`) and `poll_*` outputs.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::budget::{FloodBudget, FloodKind};
use crate::config::{Config, MAX_SEND_FRAME, PROTOCOL_INITIAL_WINDOW, SMALL_PAYLOAD};
use crate::error::{SessionError, StreamError};
use crate::frame::{Flags, FrameDecoder, FrameType, GoAwayCode, StreamId};
use crate::stream_state::StreamState;

/// The smallest RTT window auto-tuning assumes (see `maybe_credit`).
const MIN_TUNING_RTT: Duration = Duration::from_micros(250);

/// How long received data may wait unread before it is copied out of the read buffers
/// it shares (see [`StreamState::compact`]): a stream read promptly is never copied,
/// and one nobody reads pins only what it holds.
const STALLED: Duration = Duration::from_millis(200);

/// Which end of the session this is; decides the parity of the stream ids it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that dialed the connection; opens odd stream ids.
    Client,
    /// The end that accepted the connection; opens even stream ids.
    Server,
}

/// Something the driver must react to (usually by waking a task).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A new incoming stream waits in the accept queue.
    IncomingStream,
    /// A stream has data, a FIN or a reset to deliver.
    Readable(StreamId),
    /// A stream that could not write may write again (credit or buffer space).
    Writable(StreamId),
    /// The peer announced it is going away.
    GoAway(GoAwayCode),
}

/// What a read of a stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The next chunk of the stream, in order.
    Data(Bytes),
    /// The peer half-closed: no more data will come.
    Fin,
    /// Nothing yet; a [`Event::Readable`] follows when something arrives.
    Blocked,
}

/// Lifecycle of the whole session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Streams open and data flows.
    Open,
    /// A go-away was queued; the driver flushes it and then closes the connection.
    Closing,
    /// The connection is gone.
    Closed,
}

/// Counters describing a session's memory and streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Streams currently tracked (open, half-closed, or waiting for release).
    pub streams: usize,
    /// Received bytes buffered for streams the application has not read yet.
    pub buffered_bytes: usize,
    /// Bytes queued for the connection and not yet handed to the driver.
    pub queued_bytes: usize,
    /// Sum of all streams' receive windows.
    pub window_total: u64,
}

/// A table keyed by stream id. The peer chooses the ids of the streams it opens, so
/// the hash is seeded (foldhash's seeds, drawn per process and per table); it costs a
/// few instructions where the default SipHash cost about a hundred, five times per
/// request.
pub(crate) type StreamMap<V> = HashMap<StreamId, V, foldhash::fast::RandomState>;

/// The sans-IO state machine of one mux session.
#[derive(Debug)]
pub struct Session {
    config: Config,
    role: Role,
    state: State,
    next_stream_id: u32,
    max_inbound_id: u32,
    streams: StreamMap<StreamState>,
    accept_queue: VecDeque<StreamId>,
    decoder: FrameDecoder,
    /// Set when the session failed: every byte received after that is discarded
    /// unread, and the driver reads no more.
    input_closed: bool,
    budget: FloodBudget,
    /// Frames ready for the connection, in order. `tail` collects headers and small
    /// payloads contiguously until a large payload forces it out.
    out: VecDeque<Bytes>,
    tail: BytesMut,
    queued_bytes: usize,
    /// Streams whose last write found the send buffer full.
    blocked_on_buffer: Vec<StreamId>,
    events: VecDeque<Event>,
    remote_go_away: Option<GoAwayCode>,
    error: Option<SessionError>,
    window_total: u64,
    buffered_total: usize,
    ping_opaque: u32,
    /// When to look for stalled streams to compact, while any stream holds data.
    compact_at: Option<Instant>,
    ping_sent_at: Option<Instant>,
    /// When bytes last arrived while a ping waited for its answer: a peer that sends
    /// anything is alive, even when its answer queues behind its data.
    heard_at: Option<Instant>,
    next_ping_at: Option<Instant>,
    rtt: Option<Duration>,
}

impl Session {
    /// A new session. The first keepalive ping is due immediately so RTT is known early.
    pub fn new(role: Role, config: Config, now: Instant) -> Self {
        let config = config.normalized();
        let next_ping_at = config.keepalive_interval.map(|_| now);
        Session {
            decoder: FrameDecoder::in_pieces(config.max_frame_size),
            input_closed: false,
            budget: FloodBudget::new(config.flood),
            role,
            state: State::Open,
            next_stream_id: match role {
                Role::Client => 1,
                Role::Server => 2,
            },
            max_inbound_id: 0,
            streams: StreamMap::default(),
            accept_queue: VecDeque::new(),
            out: VecDeque::new(),
            tail: BytesMut::with_capacity(16 * 1024),
            queued_bytes: 0,
            blocked_on_buffer: Vec::new(),
            events: VecDeque::new(),
            remote_go_away: None,
            error: None,
            window_total: 0,
            buffered_total: 0,
            ping_opaque: 0,
            compact_at: None,
            ping_sent_at: None,
            heard_at: None,
            next_ping_at,
            rtt: None,
            config,
        }
    }

    // ----- getters -----

    /// The configuration in force (after normalisation).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The latest round-trip time measured by a keepalive ping.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Why the session failed or closed, once it has.
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }

    /// True once the session failed (a protocol error, a peer silent past its
    /// keepalive): nothing more is read, and its streams are told so.
    pub fn has_failed(&self) -> bool {
        self.input_closed
    }

    /// True once a go-away was queued or the connection is gone: no new streams.
    pub fn is_closing(&self) -> bool {
        self.state != State::Open
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The go-away code the peer sent, if any.
    pub fn remote_go_away(&self) -> Option<GoAwayCode> {
        self.remote_go_away
    }

    /// False once the session failed or closed, or while too much output is queued:
    /// the driver then stops reading so a peer that never reads cannot make us queue
    /// replies without bound.
    pub fn wants_input(&self) -> bool {
        self.input_room(0, 0) > 0
    }

    /// How many more bytes the driver may read, with `buffered` received bytes not
    /// yet consumed by [`Session::handle_input`] and `unsent` bytes taken from
    /// [`Session::poll_transmit`] and not yet written. Zero once the session failed
    /// (input after an error is never read), while the session's queue and `unsent`
    /// together reach three times `max_send_buffer`, and when `buffered` reached
    /// `max_read_buffer` (the cap the read buffer never exceeds).
    pub fn input_room(&self, buffered: usize, unsent: usize) -> usize {
        if self.state == State::Closed
            || self.input_closed
            || self.queued_bytes + unsent >= 3 * self.config.max_send_buffer
        {
            return 0;
        }
        self.config.max_read_buffer.saturating_sub(buffered)
    }

    /// Memory and stream counters.
    pub fn stats(&self) -> Stats {
        Stats {
            streams: self.streams.len(),
            buffered_bytes: self.buffered_total,
            queued_bytes: self.queued_bytes,
            window_total: self.window_total,
        }
    }

    // ----- inputs (frames: session_input.rs) -----

    /// Fires due timers: compacts what stalled streams hold, sends a keepalive ping
    /// or declares the peer dead.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Open {
            return;
        }
        if self.compact_at.is_some_and(|at| now >= at) {
            self.compact_stalled(now);
        }
        if let Some(sent) = self.ping_sent_at {
            let alive = self.heard_at.map_or(sent, |h| h.max(sent));
            if now.saturating_duration_since(alive) >= self.config.keepalive_timeout {
                self.fail(SessionError::KeepaliveTimeout(
                    self.config.keepalive_timeout,
                ));
            }
            return;
        }
        if let Some(at) = self.next_ping_at
            && now >= at
        {
            self.ping_opaque = self.ping_opaque.wrapping_add(1);
            self.ping_sent_at = Some(now);
            self.push_control(
                FrameType::Ping,
                Flags::empty(),
                StreamId::SESSION,
                self.ping_opaque,
            );
        }
    }

    /// The connection ended (EOF or I/O error). Every stream sees the session gone.
    pub fn handle_connection_lost(&mut self, error: SessionError) {
        if self.error.is_none() {
            let error = match (error, self.remote_go_away) {
                (SessionError::ConnectionClosed, Some(code)) if code != GoAwayCode::NORMAL => {
                    SessionError::GoAway(code)
                }
                (e, _) => e,
            };
            self.error = Some(error);
        }
        self.state = State::Closed;
        self.out.clear();
        self.tail.clear();
        self.queued_bytes = 0;
        for id in self.streams.keys() {
            self.events.push_back(Event::Readable(*id));
            self.events.push_back(Event::Writable(*id));
        }
    }

    // ----- commands -----

    /// Opens a stream towards the peer; its SYN is queued at once.
    pub fn open_stream(&mut self) -> Result<StreamId, SessionError> {
        if self.state != State::Open {
            return Err(self.error.clone().unwrap_or(SessionError::Closed));
        }
        if let Some(code) = self.remote_go_away {
            return Err(SessionError::GoAway(code));
        }
        if self.streams.len() >= self.config.max_streams {
            return Err(SessionError::TooManyStreams(self.config.max_streams));
        }
        let next = self
            .next_stream_id
            .checked_add(2)
            .ok_or(SessionError::StreamIdsExhausted)?;
        // Only streams this end opens take from the shared budget: at the Edge those
        // are the viewers' streams, while what an agent may open (before or after its
        // hello) is bounded per session by the accept backlog.
        let window = self.config.initial_stream_window;
        if let Some(budget) = &self.config.window_budget
            && !budget.take(u64::from(window))
        {
            return Err(SessionError::WindowBudget(budget.granted()));
        }
        let id = StreamId(self.next_stream_id);
        self.next_stream_id = next;
        self.insert_stream(id);
        if self.config.window_budget.is_some()
            && let Some(s) = self.streams.get_mut(&id)
        {
            s.charged = window;
        }
        let extra = self.config.initial_stream_window - PROTOCOL_INITIAL_WINDOW;
        self.push_control(FrameType::WindowUpdate, Flags::SYN, id, extra);
        Ok(id)
    }

    /// Takes the next incoming stream, if one waits.
    pub fn accept_stream(&mut self) -> Option<StreamId> {
        self.accept_queue.pop_front()
    }

    /// Queues up to `data.len()` bytes (copied) for `id`; returns how many were taken.
    /// `Ok(0)` means blocked: a [`Event::Writable`] follows.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let n = self.writable_len(id, data.len())?;
        if n == 0 {
            return Ok(0);
        }
        if n <= SMALL_PAYLOAD {
            self.push_small_data(id, &data[..n]);
        } else {
            self.push_large_data(id, Bytes::copy_from_slice(&data[..n]));
        }
        Ok(n)
    }

    /// Like [`Session::write`] but takes ownership of a `Bytes` prefix without copying.
    pub fn write_bytes(&mut self, id: StreamId, data: &Bytes) -> Result<usize, StreamError> {
        let n = self.writable_len(id, data.len())?;
        if n == 0 {
            return Ok(0);
        }
        if n <= SMALL_PAYLOAD {
            self.push_small_data(id, &data[..n]);
        } else {
            self.push_large_data(id, data.slice(..n));
        }
        Ok(n)
    }

    /// Takes the next received chunk of `id`, crediting the peer as data is consumed.
    /// `now` is asked only when a credit is due (a clock read per chunk showed in
    /// the relays' profiles).
    pub fn read(
        &mut self,
        id: StreamId,
        now: impl FnOnce() -> Instant,
    ) -> Result<ReadOutcome, StreamError> {
        let closed = self.state == State::Closed;
        let s = self.streams.get_mut(&id).ok_or(StreamError::Unknown(id))?;
        if s.reset && !s.recv_fin {
            return Err(StreamError::Reset);
        }
        if let Some(chunk) = s.pop_recv() {
            self.buffered_total -= chunk.len();
            // Chunks are bounded by max_frame_size, which fits in u32.
            s.recv_consumed += chunk.len() as u32;
            self.maybe_credit(id, now);
            return Ok(ReadOutcome::Data(chunk));
        }
        if s.recv_fin {
            return Ok(ReadOutcome::Fin);
        }
        if closed {
            return Err(StreamError::SessionClosed(
                self.error.clone().unwrap_or(SessionError::Closed),
            ));
        }
        Ok(ReadOutcome::Blocked)
    }

    /// Whether `id` was reset by either side, or is gone.
    pub fn is_reset(&self, id: StreamId) -> bool {
        self.streams.get(&id).is_none_or(|s| s.reset)
    }

    /// Half-closes the sending side of `id` (queues a FIN).
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        let s = self.streams.get_mut(&id).ok_or(StreamError::Unknown(id))?;
        if s.reset {
            return Err(StreamError::Reset);
        }
        if s.send_fin || self.state == State::Closed {
            return Ok(());
        }
        s.send_fin = true;
        self.push_control(FrameType::Data, Flags::FIN, id, 0);
        self.maybe_remove(id);
        Ok(())
    }

    /// Aborts `id` in both directions (queues a RST).
    pub fn reset(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.reset {
            return;
        }
        s.reset = true;
        let dropped = s.clear_recv();
        self.buffered_total -= dropped;
        if self.state == State::Open {
            self.push_control(FrameType::WindowUpdate, Flags::RST, id, 0);
        }
        self.maybe_remove(id);
    }

    /// The application dropped its handle to `id`. Like closing a socket: with
    /// unread data the stream is reset; otherwise a FIN is sent (if not yet) and the
    /// state is freed once the peer's FIN arrives. Data arriving after the release
    /// resets the stream.
    pub fn release(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.released = true;
        if !s.reset && s.recv_buffered > 0 {
            self.reset(id);
            return;
        }
        if !s.reset && !s.send_fin {
            s.send_fin = true;
            if self.state == State::Open {
                self.push_control(FrameType::Data, Flags::FIN, id, 0);
            }
        }
        self.maybe_remove(id);
    }

    /// Lets the peer open up to `backlog` streams the application has not accepted
    /// yet.
    pub fn set_accept_backlog(&mut self, backlog: usize) {
        self.config.accept_backlog = backlog;
    }

    /// Queues a go-away with `code`; the driver flushes it and closes the connection.
    pub fn close(&mut self, code: GoAwayCode) {
        if self.state != State::Open {
            return;
        }
        if self.error.is_none() {
            self.error = Some(SessionError::LocalClose(code));
        }
        self.push_control(FrameType::GoAway, Flags::empty(), StreamId::SESSION, code.0);
        self.state = State::Closing;
    }

    // ----- outputs -----

    /// Moves every queued chunk into `dst`, in wire order, and returns their length
    /// in bytes (what the caller owes [`Session::input_room`] until it is written).
    pub fn poll_transmit(&mut self, dst: &mut VecDeque<Bytes>) -> usize {
        self.seal_tail();
        let moved = self.queued_bytes;
        let was_full = moved >= self.config.max_send_buffer;
        dst.extend(self.out.drain(..));
        self.queued_bytes = 0;
        if was_full || !self.blocked_on_buffer.is_empty() {
            for id in self.blocked_on_buffer.drain(..) {
                self.events.push_back(Event::Writable(id));
            }
        }
        moved
    }

    /// True when chunks wait to be transmitted.
    pub fn has_transmit(&self) -> bool {
        self.queued_bytes > 0
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != State::Open {
            return None;
        }
        let keepalive = match self.ping_sent_at {
            Some(sent) => {
                let alive = self.heard_at.map_or(sent, |h| h.max(sent));
                Some(alive + self.config.keepalive_timeout)
            }
            None => self.next_ping_at,
        };
        match (keepalive, self.compact_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- internals -----

    /// Compacts every stream whose received data has waited [`STALLED`] unread, and
    /// schedules the next look for the others.
    fn compact_stalled(&mut self, now: Instant) {
        let mut next: Option<Instant> = None;
        for s in self.streams.values_mut() {
            let Some(since) = s.unowned_since else {
                continue;
            };
            if now.saturating_duration_since(since) >= STALLED {
                s.compact();
            } else {
                let at = since + STALLED;
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        self.compact_at = next;
    }

    /// Counts one frame against its flood budget.
    fn spend(&mut self, kind: FloodKind, now: Instant) -> Result<(), SessionError> {
        self.budget.spend(kind, now).map_err(SessionError::Flood)
    }

    fn fail(&mut self, error: SessionError) -> SessionError {
        tracing::debug!(%error, "mux session failed");
        self.input_closed = true;
        let code = error.go_away_code();
        if self.state == State::Open {
            self.push_control(FrameType::GoAway, Flags::empty(), StreamId::SESSION, code.0);
            self.state = State::Closing;
        }
        self.error = Some(error.clone());
        for id in self.streams.keys() {
            self.events.push_back(Event::Readable(*id));
            self.events.push_back(Event::Writable(*id));
        }
        error
    }

    /// Registers a stream whose initial window was taken from the budget.
    fn insert_stream(&mut self, id: StreamId) {
        let window = self.config.initial_stream_window;
        self.streams
            .insert(id, StreamState::new(window, PROTOCOL_INITIAL_WINDOW));
        self.window_total += u64::from(window);
    }

    fn writable_len(&mut self, id: StreamId, want: usize) -> Result<usize, StreamError> {
        let closed = self.state != State::Open;
        let s = self.streams.get_mut(&id).ok_or(StreamError::Unknown(id))?;
        if s.reset {
            return Err(StreamError::Reset);
        }
        if s.send_fin {
            return Err(StreamError::Finished);
        }
        if closed {
            return Err(StreamError::SessionClosed(
                self.error.clone().unwrap_or(SessionError::Closed),
            ));
        }
        if want == 0 {
            return Ok(0);
        }
        if s.send_credit == 0 {
            s.send_blocked = true;
            return Ok(0);
        }
        let room = self
            .config
            .max_send_buffer
            .saturating_sub(self.queued_bytes);
        if room == 0 {
            self.blocked_on_buffer.push(id);
            return Ok(0);
        }
        let n = want
            .min(s.send_credit as usize)
            .min(MAX_SEND_FRAME)
            .min(room);
        s.send_credit -= n as u32;
        Ok(n)
    }

    /// Credits the peer once half the window has been consumed, growing the window
    /// when updates come faster than twice the RTT (the window limits throughput).
    fn maybe_credit(&mut self, id: StreamId, now: impl FnOnce() -> Instant) {
        let rtt = self.rtt;
        let room = (self.config.max_session_window).saturating_sub(self.window_total);
        let max_window = self.config.max_stream_window;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.recv_fin || s.reset || s.recv_consumed < s.recv_window / 2 {
            return;
        }
        let now = now();
        let mut growth = 0u32;
        // Below a quarter millisecond the measured RTT is mostly scheduling noise (loopback,
        // LAN); the floor lets fast local streams grow their windows too.
        let rtt = rtt.unwrap_or(MIN_TUNING_RTT).max(MIN_TUNING_RTT);
        if let Some(last) = s.last_credit_at
            && now.saturating_duration_since(last) < rtt * 2
        {
            growth = s.recv_window.min(max_window - s.recv_window);
            growth = growth.min(u32::try_from(room).unwrap_or(u32::MAX));
            if let Some(budget) = &self.config.window_budget {
                // Fits in u32: at most the growth asked for.
                growth = budget.take_up_to(u64::from(growth)) as u32;
                s.charged += growth;
            }
        }
        s.last_credit_at = Some(now);
        s.recv_window += growth;
        let increment = s.recv_consumed + growth;
        s.recv_credit += increment;
        s.recv_consumed = 0;
        self.window_total += u64::from(growth);
        self.push_control(FrameType::WindowUpdate, Flags::empty(), id, increment);
    }

    fn maybe_remove(&mut self, id: StreamId) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.released && (s.reset || (s.send_fin && s.recv_fin)) {
            let s = self.streams.remove(&id).expect("stream present");
            shrink_when_sparse(&mut self.streams);
            self.window_total -= u64::from(s.recv_window);
            if let Some(budget) = &self.config.window_budget {
                budget.give_back(u64::from(s.charged));
            }
            self.buffered_total -= s.recv_buffered;
        }
    }
}

/// Maps with room for fewer entries than this are left as they are.
const SHRINK_FLOOR: usize = 256;

/// Gives a map's memory back once it holds under a quarter of what it has room for:
/// a session that once carried thousands of streams keeps no table sized for them.
/// Shrinking to twice the entries left keeps the rehashing amortised.
pub(crate) fn shrink_when_sparse<K, V, S>(map: &mut HashMap<K, V, S>)
where
    K: std::hash::Hash + Eq,
    S: std::hash::BuildHasher,
{
    let room = map.capacity();
    if room > SHRINK_FLOOR && map.len() < room / 4 {
        map.shrink_to(map.len() * 2);
    }
}

impl Drop for Session {
    /// Gives back what the streams still tracked took from the shared budget.
    fn drop(&mut self) {
        if let Some(budget) = &self.config.window_budget {
            let charged = self.streams.values().map(|s| u64::from(s.charged)).sum();
            budget.give_back(charged);
        }
    }
}

#[path = "session_input.rs"]
mod input;

#[path = "session_output.rs"]
mod output;

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
