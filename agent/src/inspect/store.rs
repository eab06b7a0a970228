//! The inspector's history: captured exchanges and TCP connections, oldest first
//! out once their bytes pass the memory budget, with a change feed for live views.

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::broadcast;

/// The history copies heads and bodies into blocks of this size, one after the
/// other: writing a record touches memory in order instead of wherever the
/// allocator finds room, and dropping the oldest records frees whole blocks.
/// (A small budget gets blocks of a sixteenth of it, so a block being filled
/// and one being emptied leave most of it to records.)
const BLOCK: usize = 64 * 1024;
/// How far past the end of the block's bytes the lines the next copies write are
/// asked for.
const PREFETCH_AHEAD: usize = 4096;
/// Changes a live view may fall behind by before it is told to reload.
const FEED_CAPACITY: usize = 1024;
/// The most TCP connections kept (each is a few dozen bytes).
const MAX_CONNECTIONS: usize = 1000;
/// The most WebSocket messages kept per exchange.
pub(crate) const MAX_WS_MESSAGES: usize = 200;

/// A request or response head as the agent saw it: its bytes, up to and including
/// the blank line (parsed when it is shown, not when it passes).
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// The head's bytes.
    pub raw: Bytes,
}

/// A [`Head`], parsed.
#[derive(Debug, Clone, Default)]
pub struct ParsedHead {
    /// Request method (empty for a response).
    pub method: String,
    /// Request target, path and query (empty for a response).
    pub target: String,
    /// Response status code (0 for a request).
    pub status: u16,
    /// Response reason phrase.
    pub reason: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: &'static str,
    /// Header fields in the order they came, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Header fields a head may carry, at most, to be parsed.
const MAX_FIELDS: usize = 128;

impl Head {
    /// The request head's fields (empty when the bytes are not a request head).
    pub fn request(&self) -> ParsedHead {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut fields);
        if !matches!(req.parse(&self.raw), Ok(httparse::Status::Complete(_))) {
            return ParsedHead::default();
        }
        ParsedHead {
            method: req.method.unwrap_or_default().to_string(),
            target: req.path.unwrap_or_default().to_string(),
            version: version(req.version),
            headers: owned(req.headers),
            ..ParsedHead::default()
        }
    }

    /// The response head's fields (empty when the bytes are not a response head).
    pub fn response(&self) -> ParsedHead {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut res = httparse::Response::new(&mut fields);
        if !matches!(res.parse(&self.raw), Ok(httparse::Status::Complete(_))) {
            return ParsedHead::default();
        }
        ParsedHead {
            status: res.code.unwrap_or_default(),
            reason: res.reason.unwrap_or_default().to_string(),
            version: version(res.version),
            headers: owned(res.headers),
            ..ParsedHead::default()
        }
    }
}

fn version(minor: Option<u8>) -> &'static str {
    if minor == Some(0) {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    }
}

fn owned(fields: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    fields
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

impl Head {
    /// A request head's method and target, without parsing its fields.
    pub fn request_line(&self) -> (&str, &str) {
        let line = self.first_line();
        let mut parts = line.split(' ');
        (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        )
    }

    /// A response head's status code and reason, without parsing its fields.
    pub fn status_line(&self) -> (u16, &str) {
        let line = self.first_line();
        let mut parts = line.splitn(3, ' ');
        let _version = parts.next();
        let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, parts.next().unwrap_or_default())
    }

    fn first_line(&self) -> &str {
        let end = memchr::memchr(b'\n', &self.raw).unwrap_or(self.raw.len());
        let line = &self.raw[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        std::str::from_utf8(line).unwrap_or_default()
    }
}

impl Exchange {
    /// The viewer's address: the last `X-Forwarded-For` hop (added by the Edge), or
    /// the address the stream was opened for.
    pub fn remote_addr(&self) -> String {
        let raw = &self.request.raw;
        let mut found = None;
        for line in raw.split(|&b| b == b'\n') {
            if line.len() > 16 && line[..16].eq_ignore_ascii_case(b"x-forwarded-for:") {
                found = Some(&line[16..]);
            }
        }
        found
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| self.viewer.to_string())
    }
}

impl ParsedHead {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// A message body: its full size and the first bytes of it (decoded from chunked).
#[derive(Debug, Clone, Default)]
pub struct Body {
    /// Bytes of body the message carried.
    pub size: u64,
    /// The first of them, up to the body limit.
    pub captured: Bytes,
    /// `size` is more than was captured.
    pub truncated: bool,
}

/// One WebSocket message of an upgraded exchange.
#[derive(Debug, Clone)]
pub struct WsMessage {
    /// Sent by the viewer (true) or the origin.
    pub from_viewer: bool,
    /// When the agent saw its first byte.
    pub time: SystemTime,
    /// `text`, `binary`, `close`, `ping` or `pong`.
    pub kind: &'static str,
    /// Payload bytes.
    pub size: u64,
    /// The first of them, up to the body limit.
    pub captured: Vec<u8>,
}

/// One request and its response.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Sequence number, unique for the life of the process.
    pub seq: u64,
    /// The tunnel's index in the agent's tunnel list.
    pub tunnel: usize,
    /// The viewer's address the stream was opened for (the request's own is the
    /// last `X-Forwarded-For` hop, which the Edge adds).
    pub viewer: std::net::IpAddr,
    /// When the request head was complete.
    pub started: SystemTime,
    /// From the request head to the end of the response.
    pub duration: Option<Duration>,
    /// The request this one replays.
    pub replay_of: Option<u64>,
    /// The request.
    pub request: Head,
    /// The request's body.
    pub request_body: Body,
    /// The response, once its head has come.
    pub response: Option<Head>,
    /// The response's body.
    pub response_body: Body,
    /// Messages after a WebSocket upgrade.
    pub websocket: Vec<WsMessage>,
    /// Why the exchange ended without a complete response.
    pub error: Option<String>,
}

/// One TCP connection through a TCP or TLS tunnel.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Sequence number.
    pub seq: u64,
    /// The tunnel's index.
    pub tunnel: usize,
    /// The viewer's address.
    pub remote_addr: String,
    /// When the Edge opened it.
    pub started: SystemTime,
    /// How long it lasted, once it has ended.
    pub duration: Option<Duration>,
    /// Bytes from the viewer to the origin.
    pub bytes_in: u64,
    /// Bytes from the origin to the viewer.
    pub bytes_out: u64,
}

/// A change the live views hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Exchange `seq` was added or updated.
    Request(u64),
    /// Connection `seq` was added or updated.
    Connection(u64),
    /// The history was cleared.
    Cleared,
}

/// A live view's subscription to the history's changes (the history only sends
/// them while a view is subscribed).
#[derive(Debug)]
pub struct Feed {
    changes: broadcast::Receiver<Change>,
    _open: Arc<()>,
}

impl Feed {
    /// The next change.
    pub async fn recv(&mut self) -> Result<Change, broadcast::error::RecvError> {
        self.changes.recv().await
    }

    /// The next change, if one is waiting.
    pub fn try_recv(&mut self) -> Result<Change, broadcast::error::TryRecvError> {
        self.changes.try_recv()
    }
}

/// Where a record's piece of bytes lies: in which of the history's blocks (its
/// number counted from the first ever made, modulo 2^32), from where, how long.
/// Empty when `len` is 0.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Piece {
    block: u32,
    start: u32,
    len: u32,
}

/// A body as the history keeps it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StoredBody {
    pub(crate) size: u64,
    pub(crate) piece: Piece,
    pub(crate) truncated: bool,
}

/// One exchange as the history keeps it: its heads and bodies are pieces of the
/// history's blocks. (An [`Exchange`] is a copy of one, made when it is asked for.)
/// Kept small: the list of records is a good part of the budget when exchanges are.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) started: SystemTime,
    pub(crate) duration: Option<Duration>,
    replay_of: Option<NonZeroU64>,
    pub(crate) request: Piece,
    pub(crate) request_body: StoredBody,
    /// Empty until the response head has come.
    pub(crate) response: Piece,
    pub(crate) response_body: StoredBody,
    /// WebSocket messages and the error, which few records have.
    more: Option<Box<More>>,
    tunnel: u32,
    viewer: std::net::IpAddr,
}

#[derive(Debug, Default)]
struct More {
    websocket: Vec<WsMessage>,
    error: Option<String>,
}

impl Record {
    /// A record of a request from `viewer` on tunnel `tunnel`, complete at `started`,
    /// with nothing of it kept yet.
    pub(crate) fn new(
        tunnel: usize,
        viewer: std::net::IpAddr,
        started: SystemTime,
        replay_of: Option<u64>,
    ) -> Self {
        Record {
            seq: 0,
            started,
            duration: None,
            replay_of: replay_of.and_then(NonZeroU64::new),
            request: Piece::default(),
            request_body: StoredBody::default(),
            response: Piece::default(),
            response_body: StoredBody::default(),
            more: None,
            tunnel: u32::try_from(tunnel).unwrap_or(u32::MAX),
            viewer,
        }
    }

    /// Why the exchange ended without a complete response.
    pub(crate) fn error(&self) -> Option<&str> {
        self.more.as_ref()?.error.as_deref()
    }

    pub(crate) fn set_error(&mut self, error: &str) {
        self.more.get_or_insert_default().error = Some(error.to_string());
    }

    /// Adds a WebSocket message, the oldest going past [`MAX_WS_MESSAGES`].
    pub(crate) fn push_message(&mut self, message: WsMessage) {
        let websocket = &mut self.more.get_or_insert_default().websocket;
        if websocket.len() >= MAX_WS_MESSAGES {
            websocket.remove(0);
        }
        websocket.push(message);
    }

    /// Memory it holds outside the blocks and its own slot.
    fn extra(&self) -> usize {
        let Some(more) = &self.more else {
            return 0;
        };
        std::mem::size_of::<More>()
            + more.error.as_ref().map_or(0, String::capacity)
            + more.websocket.capacity() * std::mem::size_of::<WsMessage>()
            + more
                .websocket
                .iter()
                .map(|m| m.captured.capacity())
                .sum::<usize>()
    }
}

/// A block of the history: bytes of records, one after the other.
#[derive(Debug)]
struct Block {
    bytes: Vec<u8>,
    /// The newest record with a piece in it: once it is gone (records go oldest
    /// first), so are all the others.
    newest: u64,
}

/// The history, behind the inspector's lock. Its memory is counted as the
/// allocator holds it: the blocks whole, the record slots the list has room for,
/// and what records hold besides (WebSocket messages, errors).
#[derive(Debug)]
pub(crate) struct Store {
    budget: usize,
    next_seq: u64,
    records: VecDeque<Record>,
    /// What the records hold besides their slots and pieces.
    extra: usize,
    connections: VecDeque<Connection>,
    feed: broadcast::Sender<Change>,
    /// One more reference per open [`Feed`].
    feeds: Arc<()>,
    /// Records' bytes, oldest first: heads and bodies are copied into the last one,
    /// and a block is dropped once every record with a piece in it has gone.
    blocks: VecDeque<Block>,
    /// The number of `blocks[0]`, counted from the first block ever made.
    first_block: u64,
    /// Bytes the blocks hold (their capacities).
    block_bytes: usize,
}

impl Store {
    pub(crate) fn new(budget: usize) -> Self {
        Store {
            budget,
            next_seq: 1,
            records: VecDeque::new(),
            extra: 0,
            connections: VecDeque::new(),
            feed: broadcast::channel(FEED_CAPACITY).0,
            feeds: Arc::new(()),
            blocks: VecDeque::new(),
            first_block: 0,
            block_bytes: 0,
        }
    }

    /// Copies `data` into the blocks for record `seq`, if it is still kept (else
    /// nothing is copied and the piece is empty).
    pub(crate) fn put(&mut self, seq: u64, data: &[u8]) -> Piece {
        if data.is_empty() || self.position(seq).is_none() {
            return Piece::default();
        }
        self.copy(seq, data)
    }

    fn copy(&mut self, seq: u64, data: &[u8]) -> Piece {
        // (A body limit past 4 GiB keeps 4 GiB.)
        let data = &data[..data.len().min(u32::MAX as usize)];
        let fits = self
            .blocks
            .back()
            .is_some_and(|b| b.bytes.capacity() - b.bytes.len() >= data.len());
        if !fits {
            let bytes = Vec::with_capacity(data.len().max((self.budget / 16).clamp(1024, BLOCK)));
            self.block_bytes += bytes.capacity();
            self.blocks.push_back(Block { bytes, newest: seq });
        }
        let number = self.first_block + self.blocks.len() as u64 - 1;
        let block = self.blocks.back_mut().expect("a block was just made");
        let start = block.bytes.len();
        super::lines::extend_asking_ahead(
            &mut block.bytes,
            data,
            PREFETCH_AHEAD,
            start == 0,
            super::lines::Want::Read,
        );
        block.newest = block.newest.max(seq);
        // Blocks are at most 4 GiB, so these fit; the number wraps.
        Piece {
            block: number as u32,
            start: start as u32,
            len: data.len() as u32,
        }
    }

    /// The bytes of `piece`.
    fn bytes(&self, piece: Piece) -> &[u8] {
        if piece.len == 0 {
            return &[];
        }
        let index = piece.block.wrapping_sub(self.first_block as u32) as usize;
        let (start, len) = (piece.start as usize, piece.len as usize);
        self.blocks
            .get(index)
            .and_then(|b| b.bytes.get(start..start + len))
            .unwrap_or_default()
    }

    fn head(&self, piece: Piece) -> Head {
        Head {
            raw: Bytes::copy_from_slice(self.bytes(piece)),
        }
    }

    fn body(&self, body: StoredBody) -> Body {
        Body {
            size: body.size,
            captured: Bytes::copy_from_slice(self.bytes(body.piece)),
            truncated: body.truncated,
        }
    }

    /// A copy of `record`, its bytes with it.
    fn exchange(&self, r: &Record) -> Exchange {
        self.copy_out(r, true)
    }

    /// A copy of `record` without its bodies' and messages' bytes (their sizes
    /// stay): what a list row shows.
    fn outline(&self, r: &Record) -> Exchange {
        self.copy_out(r, false)
    }

    fn copy_out(&self, r: &Record, bodies: bool) -> Exchange {
        let (request, response) = self.heads(r);
        let body = |b: StoredBody| {
            if bodies {
                self.body(b)
            } else {
                Body {
                    size: b.size,
                    captured: Bytes::new(),
                    truncated: b.truncated,
                }
            }
        };
        let websocket = r.more.as_ref().map_or_else(Vec::new, |m| {
            m.websocket
                .iter()
                .map(|w| WsMessage {
                    captured: if bodies {
                        w.captured.clone()
                    } else {
                        Vec::new()
                    },
                    ..*w
                })
                .collect()
        });
        Exchange {
            seq: r.seq,
            tunnel: r.tunnel as usize,
            viewer: r.viewer,
            started: r.started,
            duration: r.duration,
            replay_of: r.replay_of.map(NonZeroU64::get),
            request,
            request_body: body(r.request_body),
            response,
            response_body: body(r.response_body),
            websocket,
            error: r.error().map(str::to_string),
        }
    }

    /// A copy of `record`'s heads, without its bodies.
    fn heads(&self, r: &Record) -> (Head, Option<Head>) {
        let response = (r.response.len > 0).then(|| self.head(r.response));
        (self.head(r.request), response)
    }

    pub(crate) fn subscribe(&self) -> Feed {
        Feed {
            changes: self.feed.subscribe(),
            _open: Arc::clone(&self.feeds),
        }
    }

    /// Tells the live views about `change`, if any is open.
    fn changed(&self, change: Change) {
        if Arc::strong_count(&self.feeds) > 1 {
            let _ = self.feed.send(change);
        }
    }

    fn next(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Adds `record` with its request head (its `seq` is assigned here) and returns
    /// its sequence number.
    pub(crate) fn add(&mut self, mut record: Record, head: &[u8]) -> u64 {
        let seq = self.next();
        record.seq = seq;
        // The list of records takes at most half the budget: its room doubles up
        // to that, and once that is full the oldest record makes room.
        if self.records.len() == self.records.capacity() {
            let most = (self.budget / 2 / std::mem::size_of::<Record>()).max(1);
            if self.records.len() < most {
                let room = (self.records.capacity() * 2).max(4).min(most);
                self.records.reserve_exact(room - self.records.len());
            } else if let Some(old) = self.records.pop_front() {
                self.forget(old);
            }
        }
        // (Copied once room is made: dropping blocks then cannot take the head's.)
        if !head.is_empty() {
            record.request = self.copy(seq, head);
        }
        self.extra += record.extra();
        self.records.push_back(record);
        self.evict();
        self.changed(Change::Request(seq));
        seq
    }

    /// Changes record `seq` with `f`, if it is still kept.
    pub(crate) fn update(&mut self, seq: u64, f: impl FnOnce(&mut Record)) {
        let Some(i) = self.position(seq) else {
            return;
        };
        let record = &mut self.records[i];
        let before = record.extra();
        f(record);
        self.extra = self.extra - before + record.extra();
        self.evict();
        self.changed(Change::Request(seq));
    }

    fn position(&self, seq: u64) -> Option<usize> {
        // Sequence numbers are mostly consecutive: try where `seq` would be then.
        let first = self.records.front()?.seq;
        let guess = usize::try_from(seq.checked_sub(first)?).ok()?;
        if self.records.get(guess).is_some_and(|r| r.seq == seq) {
            return Some(guess);
        }
        self.records.binary_search_by_key(&seq, |r| r.seq).ok()
    }

    fn evict(&mut self) {
        // The newest record stays even when it alone is over the budget.
        while self.used() > self.budget && self.records.len() > 1 {
            if let Some(r) = self.records.pop_front() {
                self.forget(r);
            }
        }
        // Room left by many small records goes back once larger ones took their place.
        if self.records.capacity() > 64 && self.records.len() < self.records.capacity() / 4 {
            self.records.shrink_to(self.records.len() * 2);
        }
    }

    /// Accounts for `record`, the oldest, just taken out of the list: the blocks
    /// whose newest record it was hold nothing kept any more. Those at the front go;
    /// one behind a block still in use (a late response written after newer
    /// requests) is emptied where it stands, so its memory is not held until the
    /// blocks before it go.
    fn forget(&mut self, record: Record) {
        self.extra -= record.extra();
        let pieces = [
            record.request,
            record.request_body.piece,
            record.response,
            record.response_body.piece,
        ];
        for piece in pieces.into_iter().filter(|p| p.len > 0) {
            let index = piece.block.wrapping_sub(self.first_block as u32) as usize;
            if let Some(block) = self.blocks.get_mut(index)
                && block.newest <= record.seq
            {
                self.block_bytes -= block.bytes.capacity();
                block.bytes = Vec::new();
            }
        }
        self.drop_blocks();
    }

    /// Drops the oldest blocks no kept record has a piece in.
    fn drop_blocks(&mut self) {
        let oldest = self.records.front().map_or(self.next_seq, |r| r.seq);
        while let Some(b) = self.blocks.front() {
            if b.newest >= oldest {
                break;
            }
            self.block_bytes -= b.bytes.capacity();
            self.blocks.pop_front();
            self.first_block += 1;
        }
    }

    /// A copy of exchange `seq`, if it is still kept.
    pub(crate) fn get(&self, seq: u64) -> Option<Exchange> {
        self.position(seq).map(|i| self.exchange(&self.records[i]))
    }

    /// Exchange `seq` without its bodies' bytes, if it is still kept.
    pub(crate) fn get_outline(&self, seq: u64) -> Option<Exchange> {
        self.position(seq).map(|i| self.outline(&self.records[i]))
    }

    /// The newest `limit` exchanges without their bodies' bytes, newest first.
    pub(crate) fn newest_outlines(&self, limit: usize) -> impl Iterator<Item = Exchange> + '_ {
        self.newest_records(limit).map(|r| self.outline(r))
    }

    /// Copies of the newest `limit` exchanges, newest first.
    pub(crate) fn newest(&self, limit: usize) -> impl Iterator<Item = Exchange> + '_ {
        self.newest_records(limit).map(|r| self.exchange(r))
    }

    /// The newest `limit` records, newest first.
    pub(crate) fn newest_records(&self, limit: usize) -> impl Iterator<Item = &Record> {
        self.records.iter().rev().take(limit)
    }

    pub(crate) fn clear(&mut self) {
        self.records = VecDeque::new();
        self.extra = 0;
        self.connections.clear();
        // Numbers go on from the last block's, so no piece can name a later one.
        self.first_block += self.blocks.len() as u64;
        self.blocks = VecDeque::new();
        self.block_bytes = 0;
        self.changed(Change::Cleared);
    }

    /// Exchanges kept.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Memory the history holds for its exchanges: its blocks, the room of its
    /// list of records, and what the records hold besides.
    pub(crate) fn used(&self) -> usize {
        self.block_bytes + self.records.capacity() * std::mem::size_of::<Record>() + self.extra
    }

    pub(crate) fn add_connection(&mut self, mut connection: Connection) -> u64 {
        let seq = self.next();
        connection.seq = seq;
        self.connections.push_back(connection);
        if self.connections.len() > MAX_CONNECTIONS {
            self.connections.pop_front();
        }
        self.changed(Change::Connection(seq));
        seq
    }

    pub(crate) fn update_connection(&mut self, seq: u64, f: impl FnOnce(&mut Connection)) {
        if let Ok(i) = self.connections.binary_search_by_key(&seq, |c| c.seq) {
            f(&mut self.connections[i]);
            self.changed(Change::Connection(seq));
        }
    }

    pub(crate) fn connection(&self, seq: u64) -> Option<&Connection> {
        self.connections
            .binary_search_by_key(&seq, |c| c.seq)
            .ok()
            .map(|i| &self.connections[i])
    }

    /// The newest `limit` connections, newest first.
    pub(crate) fn newest_connections(&self, limit: usize) -> impl Iterator<Item = &Connection> {
        self.connections.iter().rev().take(limit)
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
