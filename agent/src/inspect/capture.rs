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
use super::store::{Body, Exchange, Head, MAX_WS_MESSAGES, WsMessage};

/// The longest head followed; a longer one ends the capture of its stream.
const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size or trailer line followed.
const MAX_LINE: usize = 4096;

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
    head: Vec<u8>,
    /// The framing fields of `head`, once it is complete.
    fields: Fields,
    body: Body,
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

enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

enum Chunk {
    /// In the chunk-size line, this long so far.
    Size { line: Vec<u8> },
    /// In a chunk's data, this much left.
    Data(u64),
    /// In the line ending after a chunk's data.
    DataEnd,
    /// In the trailer section, the current line this long.
    Trailer { line: usize },
    /// Not chunked framing after all: nothing more is followed on this side.
    Lost,
}

/// One direction of a WebSocket: the frame being read and the message being built.
#[derive(Default)]
struct Frames {
    header: [u8; 14],
    have: usize,
    remaining: u64,
    mask: Option<[u8; 4]>,
    masked_at: usize,
    /// The data message being built (across continuation frames).
    message: Option<WsMessage>,
    /// A control frame being read.
    control: Option<WsMessage>,
    fin: bool,
}

/// What a step of a side's parser ended.
enum Done {
    Nothing,
    Head,
    Body,
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

    fn request_head(&mut self) {
        let head = &self.request.head;
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
        let head = Head {
            raw: std::mem::take(&mut self.request.head),
        };
        let now = Instant::now();
        let seq = self.inspector.store().add(Exchange {
            seq: 0,
            tunnel: self.tunnel,
            viewer: self.viewer,
            started: wall_clock(now),
            duration: None,
            replay_of: self.replay_of,
            request: head,
            request_body: Body::default(),
            response: None,
            response_body: Body::default(),
            websocket: Vec::new(),
            error: None,
        });
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

    fn request_body_done(&mut self) {
        let mut body = std::mem::take(&mut self.request.body);
        body.captured.shrink_to_fit();
        self.request.state = State::Head;
        if let Some(w) = self.waiting.back() {
            self.inspector
                .store()
                .update(w.seq, |e| e.request_body = body);
        }
    }

    fn response_head(&mut self) {
        let head = &self.response.head;
        let status = head
            .strip_prefix(b"HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| std::str::from_utf8(code).ok())
            .and_then(|code| code.parse::<u16>().ok());
        let (Some(status), Some(front)) = (status, self.waiting.front()) else {
            self.stop();
            return;
        };
        if (100..200).contains(&status) && status != 101 {
            // An interim answer (100 Continue, 103 Early Hints): the final one follows.
            self.response.head.clear();
            return;
        }
        // The answer to the request that asked to upgrade decides what the bytes
        // held since then are.
        let early = match &mut self.request.state {
            State::Upgrading(early) if front.upgrade => Some(std::mem::take(early)),
            _ => None,
        };
        if status == 101 {
            let (upgrade, seq) = (front.upgrade, front.seq);
            self.response_done();
            if upgrade {
                self.upgraded = Some(seq);
                self.request.state = State::WebSocket(Box::default());
                self.response.state = State::WebSocket(Box::default());
                if let Some(early) = early {
                    self.read_from_stream(&early);
                }
            } else {
                self.stop();
            }
            return;
        }
        if front.connect && (200..300).contains(&status) {
            // A tunnel from here on: its bytes are not HTTP.
            self.response_done();
            self.stop();
            return;
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
                    self.stop();
                    return;
                }
            }
        };
        match framing {
            Some(f) => self.response.state = State::Body(f),
            None => self.response_done(),
        }
        if let Some(early) = early {
            // Not upgraded: what came meanwhile is the next request.
            self.request.state = State::Head;
            self.read_from_stream(&early);
        }
    }

    /// Records the response whose head (and body, if any) the response side holds.
    fn response_done(&mut self) {
        let head = Head {
            raw: std::mem::take(&mut self.response.head),
        };
        let mut body = std::mem::take(&mut self.response.body);
        body.captured.shrink_to_fit();
        self.response.state = State::Head;
        let Some(w) = self.waiting.pop_front() else {
            return;
        };
        let duration = w.started.elapsed();
        self.inspector.store().update(w.seq, |e| {
            e.response = Some(head);
            e.response_body = body;
            e.duration = Some(duration);
        });
    }

    /// Stops following the stream (what was captured stays).
    fn stop(&mut self) {
        self.request.state = State::Off;
        self.response.state = State::Off;
    }

    fn ws_message(&mut self, seq: Option<u64>, message: WsMessage) {
        let Some(seq) = seq else {
            return;
        };
        self.inspector.store().update(seq, |e| {
            if e.websocket.len() >= MAX_WS_MESSAGES {
                e.websocket.remove(0);
            }
            e.websocket.push(message);
        });
    }
}

impl Tap for HttpTap {
    fn read_from_stream(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (used, done) = self.request.step(data, self.limit);
            data = &data[used..];
            match done {
                Done::Nothing => {}
                Done::Head => self.request_head(),
                Done::Body => self.request_body_done(),
            }
            if let State::WebSocket(frames) = &mut self.request.state {
                let seq = self.upgraded;
                let mut messages = Vec::new();
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

    fn read_from_socket(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (used, done) = self.response.step(data, self.limit);
            data = &data[used..];
            match done {
                Done::Nothing => {}
                Done::Head => self.response_head(),
                Done::Body => self.response_done(),
            }
            if let State::WebSocket(frames) = &mut self.response.state {
                let seq = self.upgraded;
                let mut messages = Vec::new();
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
    /// The stream ended: a close-delimited response is complete; requests still
    /// waiting never got (all of) theirs.
    fn drop(&mut self) {
        if matches!(self.response.state, State::Body(Framing::UntilClose)) {
            self.response_done();
        }
        // A body the stream ended in the middle of is kept as far as it came, marked
        // cut (so it is never replayed as if it were whole).
        if matches!(self.request.state, State::Body(_))
            && let Some(w) = self.waiting.back()
        {
            let mut body = std::mem::take(&mut self.request.body);
            body.truncated = true;
            self.inspector
                .store()
                .update(w.seq, |e| e.request_body = body);
        }
        if matches!(self.response.state, State::Body(_))
            && let Some(w) = self.waiting.front()
        {
            let mut body = std::mem::take(&mut self.response.body);
            body.truncated = true;
            self.inspector
                .store()
                .update(w.seq, |e| e.response_body = body);
        }
        let mut store = self.inspector.store();
        for w in self.waiting.drain(..) {
            store.update(w.seq, |e| {
                e.error =
                    Some("the connection closed before the origin's response was complete".into());
            });
        }
    }
}

impl Side {
    /// Takes what it can of `data` in its state; returns the bytes used and what
    /// they ended.
    fn step(&mut self, data: &[u8], limit: usize) -> (usize, Done) {
        match &mut self.state {
            State::Head => self.step_head(data),
            State::Body(framing) => {
                let (used, ended) = framing.step(data, &mut self.body, limit);
                (used, if ended { Done::Body } else { Done::Nothing })
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
            // end and the framing fields, then one copy of the exact size.
            let rest = &data[start..];
            self.fields = Fields::new();
            let mut line_start = 0;
            for end in memchr::memchr_iter(b'\n', rest) {
                let line = &rest[line_start..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    if end >= MAX_HEAD {
                        self.state = State::Off;
                        return (data.len(), Done::Nothing);
                    }
                    self.head = rest[..end + 1].to_vec();
                    return (start + end + 1, Done::Head);
                }
                if line_start > 0 {
                    self.fields.note(line);
                }
                line_start = end + 1;
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
            // The record keeps this Vec: no room beyond the head it counts.
            self.head.shrink_to_fit();
            self.fields = Fields::scan(&self.head);
            return (start + end - held, Done::Head);
        }
        if self.head.len() > MAX_HEAD {
            self.head = Vec::new();
            self.state = State::Off;
        }
        (start + take, Done::Nothing)
    }
}

impl Framing {
    /// Takes body bytes of `data`; returns the bytes used and whether the body ended.
    fn step(&mut self, data: &[u8], body: &mut Body, limit: usize) -> (usize, bool) {
        match self {
            Framing::Length(left) => {
                let n = (*left).min(data.len() as u64) as usize;
                keep(body, &data[..n], limit);
                *left -= n as u64;
                (n, *left == 0)
            }
            Framing::UntilClose => {
                keep(body, data, limit);
                (data.len(), false)
            }
            Framing::Chunked(chunk) => chunk.step(data, body, limit),
        }
    }
}

impl Chunk {
    fn step(&mut self, data: &[u8], body: &mut Body, limit: usize) -> (usize, bool) {
        let mut used = 0;
        while used < data.len() {
            let rest = &data[used..];
            match self {
                Chunk::Size { line } => {
                    let Some(i) = rest.iter().position(|&b| b == b'\n') else {
                        if line.len() + rest.len() > MAX_LINE {
                            *self = Chunk::Lost;
                        } else {
                            line.extend_from_slice(rest);
                        }
                        return (data.len(), false);
                    };
                    if line.len() + i > MAX_LINE {
                        *self = Chunk::Lost;
                        return (data.len(), false);
                    }
                    line.extend_from_slice(&rest[..i]);
                    used += i + 1;
                    let size = chunk_size(line);
                    *self = match size {
                        Some(0) => Chunk::Trailer { line: 0 },
                        Some(n) => Chunk::Data(n),
                        // Not a chunk size: this side is not followed any more.
                        None => Chunk::Lost,
                    };
                }
                Chunk::Data(left) => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    keep(body, &rest[..n], limit);
                    *left -= n as u64;
                    used += n;
                    if *left == 0 {
                        *self = Chunk::DataEnd;
                    }
                }
                Chunk::DataEnd => match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        used += i + 1;
                        *self = Chunk::Size { line: Vec::new() };
                    }
                    None => return (data.len(), false),
                },
                Chunk::Lost => return (data.len(), false),
                Chunk::Trailer { line } => {
                    let b = rest[0];
                    used += 1;
                    match b {
                        b'\n' if *line == 0 => return (used, true),
                        b'\n' => *line = 0,
                        b'\r' => {}
                        _ => *line += 1,
                    }
                }
            }
        }
        (used, false)
    }
}

/// The size on a chunk-size line (`1a;ext=1\r`).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line.split(|&b| b == b';').next()?;
    let hex = std::str::from_utf8(hex).ok()?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Adds `data` to `body`: all of it to the size, up to `limit` to what is kept.
fn keep(body: &mut Body, data: &[u8], limit: usize) {
    body.size += data.len() as u64;
    let room = limit.saturating_sub(body.captured.len());
    if room < data.len() {
        body.truncated = true;
    }
    body.captured
        .extend_from_slice(&data[..room.min(data.len())]);
}

/// The wall-clock time of `now`, from one reading of both clocks taken once: one
/// clock read per request instead of two.
fn wall_clock(now: Instant) -> SystemTime {
    static BASE: std::sync::OnceLock<(Instant, SystemTime)> = std::sync::OnceLock::new();
    let (instant, system) = *BASE.get_or_init(|| (Instant::now(), SystemTime::now()));
    system + now.saturating_duration_since(instant)
}

/// The blank line that ends a head, its searcher built once.
fn end_of_head() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(b"\r\n\r\n"))
}

/// What framing needs of a head's fields, found by one pass over its lines (the
/// heads come from the Edge and the origin; the capture only needs their framing).
struct Fields {
    /// `Content-Length`, if any; an error when it is not one number.
    content_length: Result<Option<u64>, ()>,
    /// A `Transfer-Encoding` field is present.
    transfer_encoding: bool,
    /// Its last coding is `chunked`.
    chunked: bool,
    /// An `Upgrade` field is present.
    upgrade: bool,
}

impl Default for Fields {
    fn default() -> Self {
        Fields::new()
    }
}

impl Fields {
    fn new() -> Fields {
        Fields {
            content_length: Ok(None),
            transfer_encoding: false,
            chunked: false,
            upgrade: false,
        }
    }

    /// The fields of a whole head (its first line is skipped).
    fn scan(head: &[u8]) -> Fields {
        let mut fields = Fields::new();
        let mut lines = head.split(|&b| b == b'\n').skip(1);
        for line in &mut lines {
            fields.note(line.strip_suffix(b"\r").unwrap_or(line));
        }
        fields
    }

    /// Notes one field line (without its line end).
    fn note(&mut self, line: &[u8]) {
        // Only names of 7, 14 or 17 bytes matter, and a name ends at its colon:
        // three looks tell whether this line can be one of them.
        let colon_at = |at: usize| line.len() > at && line[at] == b':';
        let colon = if colon_at(7) {
            7
        } else if colon_at(14) {
            14
        } else if colon_at(17) {
            17
        } else {
            return;
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            self.content_length = match (n, self.content_length) {
                (Some(n), Ok(None)) => Ok(Some(n)),
                (Some(n), Ok(Some(m))) if n == m => Ok(Some(n)),
                _ => Err(()),
            };
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            self.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        }
    }
}

impl Frames {
    /// Reads frames from `data`, pushing each finished message to `out`.
    fn feed(&mut self, mut data: &[u8], from_viewer: bool, limit: usize, out: &mut Vec<WsMessage>) {
        while !data.is_empty() {
            if self.remaining == 0 && self.have < self.header_len() {
                let need = self.header_len() - self.have;
                let n = need.min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have == self.header_len() {
                    self.frame_started(from_viewer, out);
                }
                continue;
            }
            let n = self.remaining.min(data.len() as u64) as usize;
            let payload = &data[..n];
            let mask = self.mask;
            let offset = self.masked_at;
            if let Some(m) = self.current() {
                m.size += n as u64;
                let room = limit.saturating_sub(m.captured.len()).min(n);
                let start = m.captured.len();
                m.captured.extend_from_slice(&payload[..room]);
                if let Some(mask) = mask {
                    for (i, b) in m.captured[start..].iter_mut().enumerate() {
                        *b ^= mask[(offset + i) % 4];
                    }
                }
            }
            self.masked_at += n;
            self.remaining -= n as u64;
            data = &data[n..];
            if self.remaining == 0 {
                self.frame_ended(out);
            }
        }
    }

    /// The length of the frame header being read, as far as its first bytes tell.
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extended + if self.header[1] & 0x80 != 0 { 4 } else { 0 }
    }

    fn frame_started(&mut self, from_viewer: bool, out: &mut Vec<WsMessage>) {
        let h = self.header;
        self.fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let (len, at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes(h[2..10].try_into().unwrap_or([0; 8])),
                10,
            ),
            n => (u64::from(n), 2),
        };
        self.mask = (h[1] & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        self.masked_at = 0;
        self.remaining = len;
        self.have = 0;
        let kind = match opcode {
            0 => None,
            1 => Some("text"),
            2 => Some("binary"),
            8 => Some("close"),
            9 => Some("ping"),
            10 => Some("pong"),
            _ => Some("binary"),
        };
        let new = |kind| WsMessage {
            from_viewer,
            time: SystemTime::now(),
            kind,
            size: 0,
            captured: Vec::new(),
        };
        match kind {
            Some(k) if opcode >= 8 => self.control = Some(new(k)),
            Some(k) => self.message = Some(new(k)),
            None if self.message.is_none() => self.message = Some(new("binary")),
            None => {}
        }
        if len == 0 {
            self.frame_ended(out);
        }
    }

    fn current(&mut self) -> Option<&mut WsMessage> {
        if self.control.is_some() {
            self.control.as_mut()
        } else {
            self.message.as_mut()
        }
    }

    fn frame_ended(&mut self, out: &mut Vec<WsMessage>) {
        if let Some(c) = self.control.take() {
            out.push(c);
        } else if self.fin
            && let Some(m) = self.message.take()
        {
            out.push(m);
        }
    }
}

#[cfg(test)]
#[path = "capture_tests.rs"]
mod tests;
