//! Capture of HTTP/1.1 exchanges from the bytes the agent pipes: a [`Tap`] that
//! finds each request and response in the two byte streams (heads, bodies by
//! `Content-Length` or chunked framing, responses to `HEAD`, 1xx, close-delimited
//! bodies, WebSocket frames after a `101`) and records them, bodies up to the body
//! limit. It never changes or holds back a byte; on anything it cannot follow it
//! stops looking and the pipe goes on.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use netbore_transport::pipe::Tap;

use super::Inspector;
use super::body::{Capture, Chunk, Framing, reuse};
use super::fields::{Fields, decimal, end_of_head};
use super::store::{Record, WsMessage};
use super::websocket::Frames;

/// The longest head followed; a longer one ends the capture of its stream.
const MAX_HEAD: usize = 64 * 1024;

/// Taps one stream of an HTTP tunnel.
pub(crate) struct HttpTap {
    inspector: Inspector,
    tunnel: usize,
    viewer: IpAddr,
    limit: usize,
    replay_of: Option<u64>,
    request: Side,
    response: Side,
    /// Requests whose response has not ended, oldest first.
    waiting: VecDeque<Waiting>,
    /// The exchange that switched the stream to WebSocket.
    upgraded: Option<u64>,
    /// When the bytes being read passed the agent.
    at: Instant,
    /// The capture fell behind and stopped following the stream.
    gave_up: bool,
    /// The stream is no longer HTTP/1.1 messages (a WebSocket, a `CONNECT`
    /// tunnel, bytes that were not HTTP): a capture that fell behind on it never
    /// starts again.
    left_http: bool,
    /// Started again after a hole ([`HttpTap::restart`]) and no response has ended
    /// since: what it reads may not be where a request starts, so bytes it cannot
    /// follow count as another hole, not as the stream leaving HTTP.
    fresh: bool,
}

struct Waiting {
    seq: u64,
    /// A `CONNECT`: a 2xx answer makes the rest a tunnel, not HTTP.
    connect: bool,
    started: Instant,
    head_request: bool,
    upgrade: bool,
}

/// One direction's parser.
#[derive(Default)]
struct Side {
    state: State,
    /// A head that came in pieces (a head that comes whole is read where it
    /// lies).
    head: Vec<u8>,
    /// The framing fields of the head, once it is complete.
    fields: Fields,
    body: Capture,
}

#[derive(Default)]
enum State {
    /// Reading a head.
    #[default]
    Head,
    /// Reading a body framed so.
    Body(Framing),
    /// After a request that asked to upgrade, until its response says whether it
    /// did: what comes meanwhile, up to [`MAX_HEAD`].
    Upgrading(Vec<u8>),
    /// Reading WebSocket frames.
    WebSocket(Box<Frames>),
    /// Not following this stream any more.
    Off,
}

/// What a step of a side's parser ended.
enum Done {
    Nothing,
    /// A head: the bytes taken from this offset on, or (`None`) the side's `head`.
    Head(Option<usize>),
    /// A body: all of it is the bytes taken from this offset on, or (`None`) the
    /// side's `body` holds what is kept of it.
    Body(Option<usize>),
}

impl HttpTap {
    pub(crate) fn new(
        inspector: Inspector,
        tunnel: usize,
        viewer: IpAddr,
        replay_of: Option<u64>,
    ) -> Self {
        let limit = inspector.config().body_limit;
        HttpTap {
            inspector,
            tunnel,
            viewer,
            limit,
            replay_of,
            request: Side::default(),
            response: Side::default(),
            waiting: VecDeque::new(),
            upgraded: None,
            at: Instant::now(),
            gave_up: false,
            left_http: false,
            fresh: false,
        }
    }

    /// Stops following the stream because the capture fell behind (its queue was
    /// full): requests still waiting are marked so, not as cut by the connection.
    /// They are marked at once: the connection may stay open for hours.
    pub(crate) fn give_up(&mut self) {
        self.gave_up = true;
        self.end();
    }

    /// The capture fell behind ([`HttpTap::give_up`]) on a stream that was HTTP
    /// then: it may start again at a later request ([`HttpTap::restart`]).
    pub(crate) fn resumable(&self) -> bool {
        self.gave_up && !self.left_http
    }

    /// Starts again at a request, after bytes passed unread (only when
    /// [`HttpTap::resumable`]): what was waiting is marked as ended by
    /// [`HttpTap::give_up`].
    pub(crate) fn restart(&mut self) {
        let mut fresh = HttpTap::new(
            self.inspector.clone(),
            self.tunnel,
            self.viewer,
            self.replay_of,
        );
        fresh.fresh = true;
        // The old one ends as it is dropped.
        *self = fresh;
    }

    /// Reads `data`, which passed the agent at `at`: from the viewer (the request
    /// side) or from the origin.
    pub(crate) fn feed(&mut self, from_viewer: bool, data: &[u8], at: Instant) {
        self.at = at;
        if from_viewer {
            self.feed_request(data);
        } else {
            self.feed_response(data);
        }
    }

    /// `n` bytes in one direction passed without being read: `asked` when the
    /// capture said it did not need them ([`HttpTap::needless`]), else they were
    /// lost on the way. Inside a body they only count (a body with a hole is kept
    /// up to it and marked cut); anywhere else the capture of the stream ends.
    pub(crate) fn pass_over(&mut self, from_viewer: bool, n: u64, asked: bool, at: Instant) {
        self.at = at;
        let limit = self.limit;
        let side = if from_viewer {
            &mut self.request
        } else {
            &mut self.response
        };
        if !asked && side.body.captured.len() < limit {
            side.body.holed = true;
        }
        let ended = match &mut side.state {
            State::Off => return,
            State::Body(Framing::Length(left)) if n <= *left => {
                *left -= n;
                side.body.size += n;
                *left == 0
            }
            State::Body(Framing::Chunked(Chunk::Data(left))) if n <= *left => {
                *left -= n;
                side.body.size += n;
                if *left == 0 {
                    side.state = State::Body(Framing::Chunked(Chunk::DataEnd));
                }
                false
            }
            State::Body(Framing::UntilClose) => {
                side.body.size += n;
                false
            }
            // Bytes lost on the way between HTTP messages: the capture fell
            // behind (it may start again at a later request). Lost in WebSocket
            // frames, or before an upgrade's answer, the stream is not followed
            // again.
            State::Head | State::Body(_) if !asked => {
                self.give_up();
                return;
            }
            _ => {
                self.stop();
                return;
            }
        };
        if ended {
            if from_viewer {
                self.request_body_done(None);
            } else {
                self.response_done(None, None);
            }
        }
    }

    /// Bytes coming next in one direction that the capture does not need to see
    /// (the rest of a body past the body limit), or `None` when it needs none of
    /// them (it follows the stream no more).
    pub(crate) fn needless(&self, from_viewer: bool) -> Option<u64> {
        let side = if from_viewer {
            &self.request
        } else {
            &self.response
        };
        let full = side.body.holed || side.body.captured.len() >= self.limit;
        match &side.state {
            State::Off => None,
            State::Body(Framing::Length(left)) if full => Some(*left),
            State::Body(Framing::Chunked(Chunk::Data(left))) if full => Some(*left),
            // Not chunked framing after all: this side is followed no more.
            State::Body(Framing::Chunked(Chunk::Lost)) => None,
            // Counted to the end, never read.
            State::Body(Framing::UntilClose) if full => Some(u64::MAX),
            _ => Some(0),
        }
    }

    /// No request is waiting for the rest of its response.
    pub(crate) fn idle(&self) -> bool {
        self.waiting.is_empty() && matches!(self.response.state, State::Head)
    }

    /// The sequence number of the newest request captured.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.waiting.back().map(|w| w.seq)
    }

    /// A request head has ended: `whole` when it came in one piece, else it is the
    /// side's `head`.
    fn request_head(&mut self, whole: Option<&[u8]>) {
        let held = std::mem::take(&mut self.request.head);
        let head = whole.unwrap_or(&held);
        let head_request = head.starts_with(b"HEAD ");
        let connect = head.starts_with(b"CONNECT ");
        let fields = &self.request.fields;
        let framing = if fields.chunked {
            Some(Framing::Chunked(Chunk::Size { line: Vec::new() }))
        } else {
            match fields.content_length {
                Ok(Some(n)) if n > 0 => Some(Framing::Length(n)),
                Ok(_) => None,
                Err(()) => {
                    self.stop();
                    return;
                }
            }
        };
        let upgrade = fields.upgrade;
        let now = self.at;
        let record = Record::new(self.tunnel, self.viewer, wall_clock(now), self.replay_of);
        let seq = self.inspector.store().add(record, head);
        self.request.head = held;
        reuse(&mut self.request.head);
        self.waiting.push_back(Waiting {
            seq,
            connect,
            started: now,
            head_request,
            upgrade,
        });
        self.request.state = match framing {
            Some(f) => State::Body(f),
            None if upgrade => State::Upgrading(Vec::new()),
            None => State::Head,
        };
    }

    fn request_body_done(&mut self, whole: Option<&[u8]>) {
        self.request.state = State::Head;
        let mut store = self.inspector.store();
        let seq = self.waiting.back().map_or(0, |w| w.seq);
        let body = self.request.body.finish(&mut store, seq, whole, false);
        store.update(seq, |r| r.request_body = body);
    }

    /// A response head has ended: `whole` when it came in one piece, else it is the
    /// side's `head`; `after` is what followed it in the same read. A final answer's
    /// head is recorded at once, read where it lies (with the response's end when
    /// that is now, else before its body). Returns how much of `after` it took.
    fn response_head(&mut self, whole: Option<&[u8]>, after: &[u8]) -> usize {
        let held = std::mem::take(&mut self.response.head);
        let taken = self.answer(whole.unwrap_or(&held), after);
        self.response.head = held;
        reuse(&mut self.response.head);
        taken
    }

    /// What the response head `head` says; `after` is what followed it in the same
    /// read. Returns how much of `after` it took: a body that is all there and all
    /// kept (the common case) is recorded with its head, under one lock.
    fn answer(&mut self, head: &[u8], after: &[u8]) -> usize {
        let status = head
            .strip_prefix(b"HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(decimal)
            .and_then(|code| u16::try_from(code).ok());
        let (Some(status), Some(front)) = (status, self.waiting.front()) else {
            self.stop();
            return 0;
        };
        if (100..200).contains(&status) && status != 101 {
            // An interim answer (100 Continue, 103 Early Hints): the final one follows.
            return 0;
        }
        // The answer to the request that asked to upgrade decides what the bytes
        // held since then are.
        let early = match &mut self.request.state {
            State::Upgrading(early) if front.upgrade => Some(std::mem::take(early)),
            _ => None,
        };
        if status == 101 {
            let (upgrade, seq) = (front.upgrade, front.seq);
            self.response_done(Some(head), None);
            if upgrade {
                self.upgraded = Some(seq);
                self.left_http = true;
                self.request.state = State::WebSocket(Box::default());
                self.response.state = State::WebSocket(Box::default());
                if let Some(early) = early {
                    self.feed_request(&early);
                }
            } else {
                self.stop();
            }
            return 0;
        }
        if front.connect && (200..300).contains(&status) {
            // A tunnel from here on: its bytes are not HTTP.
            self.response_done(Some(head), None);
            self.stop();
            return 0;
        }
        let fields = &self.response.fields;
        let framing = if front.head_request || status == 204 || status == 304 {
            None
        } else if fields.chunked {
            Some(Framing::Chunked(Chunk::Size { line: Vec::new() }))
        } else if fields.transfer_encoding {
            Some(Framing::UntilClose)
        } else {
            match fields.content_length {
                Ok(Some(0)) => None,
                Ok(Some(n)) => Some(Framing::Length(n)),
                Ok(None) => Some(Framing::UntilClose),
                Err(()) => {
                    self.record_head(head);
                    self.stop();
                    return 0;
                }
            }
        };
        let taken = match framing {
            Some(Framing::Length(n)) if n <= after.len() as u64 && n <= self.limit as u64 => {
                self.response.body.size = n;
                self.response_done(Some(head), Some(&after[..n as usize]));
                n as usize
            }
            Some(f) => {
                self.record_head(head);
                self.response.state = State::Body(f);
                0
            }
            None => {
                self.response_done(Some(head), None);
                0
            }
        };
        if let Some(early) = early {
            // Not upgraded: what came meanwhile is the next request.
            self.request.state = State::Head;
            self.feed_request(&early);
        }
        taken
    }

    /// Records the head of the response the oldest waiting request gets, before
    /// its body.
    fn record_head(&mut self, head: &[u8]) {
        if let Some(w) = self.waiting.front() {
            let mut store = self.inspector.store();
            let piece = store.put(w.seq, head);
            store.update(w.seq, |r| r.response = piece);
        }
    }

    /// Records the end of a response, and its body: `whole` when it came in one
    /// piece, else what the side holds of it; its `head` too, unless it was
    /// recorded before the body.
    fn response_done(&mut self, head: Option<&[u8]>, whole: Option<&[u8]>) {
        self.response.state = State::Head;
        self.fresh = false;
        if let Some(w) = self.waiting.pop_front() {
            let duration = self.at.saturating_duration_since(w.started);
            let mut store = self.inspector.store();
            let head = head.map(|h| store.put(w.seq, h));
            let body = self.response.body.finish(&mut store, w.seq, whole, false);
            store.update(w.seq, |r| {
                if let Some(head) = head {
                    r.response = head;
                }
                r.response_body = body;
                r.duration = Some(duration);
            });
        }
    }

    /// Stops following the stream because it is not (or no longer) HTTP/1.1
    /// messages (what was captured stays). Just after a restart, where the capture
    /// may have guessed the start of a request wrong, it counts as another hole.
    pub(crate) fn stop(&mut self) {
        if self.fresh && !self.left_http {
            self.give_up();
            return;
        }
        self.left_http = true;
        self.halt();
    }

    /// Stops reading either side.
    fn halt(&mut self) {
        self.request.state = State::Off;
        self.response.state = State::Off;
    }

    fn ws_message(&mut self, seq: Option<u64>, message: WsMessage) {
        let Some(seq) = seq else {
            return;
        };
        self.inspector
            .store()
            .update(seq, |r| r.push_message(message));
    }
}

impl Tap for HttpTap {
    fn read_from_stream(&mut self, data: &[u8]) {
        self.feed(true, data, Instant::now());
    }

    fn read_from_socket(&mut self, data: &[u8]) {
        self.feed(false, data, Instant::now());
    }
}

impl HttpTap {
    fn feed_request(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (used, done) = self.request.step(data, self.limit);
            let (piece, rest) = data.split_at(used);
            data = rest;
            match done {
                Done::Nothing => {}
                Done::Head(at) => self.request_head(at.map(|start| &piece[start..])),
                Done::Body(at) => self.request_body_done(at.map(|start| &piece[start..])),
            }
            if let State::WebSocket(frames) = &mut self.request.state {
                let seq = self.upgraded;
                let mut messages = Vec::new();
                frames.time = Some(wall_clock(self.at));
                frames.feed(data, true, self.limit, &mut messages);
                for m in messages {
                    self.ws_message(seq, m);
                }
                return;
            }
            if matches!(self.request.state, State::Off) {
                return;
            }
        }
    }

    fn feed_response(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (used, done) = self.response.step(data, self.limit);
            let (piece, rest) = data.split_at(used);
            data = rest;
            match done {
                Done::Nothing => {}
                Done::Head(at) => {
                    let taken = self.response_head(at.map(|start| &piece[start..]), data);
                    data = &data[taken..];
                }
                Done::Body(at) => self.response_done(None, at.map(|start| &piece[start..])),
            }
            if let State::WebSocket(frames) = &mut self.response.state {
                let seq = self.upgraded;
                let mut messages = Vec::new();
                frames.time = Some(wall_clock(self.at));
                frames.feed(data, false, self.limit, &mut messages);
                for m in messages {
                    self.ws_message(seq, m);
                }
                return;
            }
            if matches!(self.response.state, State::Off) {
                return;
            }
        }
    }
}

impl Drop for HttpTap {
    fn drop(&mut self) {
        self.end();
    }
}

impl HttpTap {
    /// The stream ended (or is followed no more): a close-delimited response is
    /// complete, unless the capture gave up; requests still waiting never got (all
    /// of) theirs.
    fn end(&mut self) {
        if !self.gave_up && matches!(self.response.state, State::Body(Framing::UntilClose)) {
            self.response_done(None, None);
        }
        // A body the stream ended in the middle of is kept as far as it came, marked
        // cut (so it is never replayed as if it were whole).
        let mut store = self.inspector.store();
        if matches!(self.request.state, State::Body(_))
            && let Some(w) = self.waiting.back()
        {
            let body = self.request.body.finish(&mut store, w.seq, None, true);
            store.update(w.seq, |r| r.request_body = body);
        }
        if matches!(self.response.state, State::Body(_))
            && let Some(w) = self.waiting.front()
        {
            let body = self.response.body.finish(&mut store, w.seq, None, true);
            store.update(w.seq, |r| r.response_body = body);
        }
        let error = if self.gave_up {
            "the inspector fell behind under load and missed part of this exchange; the request itself was forwarded"
        } else {
            "the connection closed before the origin's response was complete"
        };
        for w in self.waiting.drain(..) {
            store.update(w.seq, |r| r.set_error(error));
        }
        drop(store);
        self.halt();
    }
}

impl Side {
    /// Takes what it can of `data` in its state; returns the bytes used and what
    /// they ended.
    fn step(&mut self, data: &[u8], limit: usize) -> (usize, Done) {
        match &mut self.state {
            State::Head => self.step_head(data),
            // A body that is all here and all kept is read where it lies.
            State::Body(Framing::Length(left))
                if self.body.size == 0 && *left <= data.len() as u64 && *left <= limit as u64 =>
            {
                self.body.size = *left;
                (*left as usize, Done::Body(Some(0)))
            }
            State::Body(framing) => {
                let (used, ended) = framing.step(data, &mut self.body, limit);
                (
                    used,
                    if ended {
                        Done::Body(None)
                    } else {
                        Done::Nothing
                    },
                )
            }
            State::Upgrading(early) => {
                if early.len() + data.len() > MAX_HEAD {
                    self.state = State::Off;
                } else {
                    early.extend_from_slice(data);
                }
                (data.len(), Done::Nothing)
            }
            State::WebSocket(_) => (0, Done::Nothing),
            State::Off => (data.len(), Done::Nothing),
        }
    }

    fn step_head(&mut self, data: &[u8]) -> (usize, Done) {
        let mut start = 0;
        if self.head.is_empty() {
            // Empty lines before a message are allowed and ignored (RFC 9112 2.2).
            start = data
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(data.len());
            // Most heads arrive whole: one pass over their lines finds both the
            // end and the framing fields, and the head is read where it lies.
            self.fields = Fields::new();
            if let Some(end) = self.fields.scan_head(&data[start..]) {
                if end > MAX_HEAD {
                    self.state = State::Off;
                    return (data.len(), Done::Nothing);
                }
                return (start + end, Done::Head(Some(start)));
            }
        }
        // The end may straddle the chunks: search from the last three bytes held.
        let held = self.head.len();
        let take = (data.len() - start).min(MAX_HEAD + 4 - held.min(MAX_HEAD));
        self.head.extend_from_slice(&data[start..start + take]);
        let from = held.saturating_sub(3);
        if let Some(i) = end_of_head().find(&self.head[from..]) {
            let end = from + i + 4;
            self.head.truncate(end);
            self.fields = Fields::scan(&self.head);
            return (start + end - held, Done::Head(None));
        }
        if self.head.len() > MAX_HEAD {
            reuse(&mut self.head);
            self.state = State::Off;
        }
        (start + take, Done::Nothing)
    }
}

/// The wall-clock time of `now`, from one reading of both clocks taken once: one
/// clock read per request instead of two.
pub(crate) fn wall_clock(now: Instant) -> SystemTime {
    static BASE: std::sync::OnceLock<(Instant, SystemTime)> = std::sync::OnceLock::new();
    let (instant, system) = *BASE.get_or_init(|| (Instant::now(), SystemTime::now()));
    system + now.saturating_duration_since(instant)
}

#[cfg(test)]
#[path = "capture_tests.rs"]
mod tests;
