//! The inspector's history: captured exchanges and TCP connections, oldest first
//! out once their bytes pass the memory budget, with a change feed for live views.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast;

/// What a record costs besides its bytes (the struct, its vectors, the list slot).
const RECORD_OVERHEAD: usize = 256;
/// The history copies heads and bodies into blocks of this size, one after the
/// other: writing a record touches memory in order instead of wherever the
/// allocator finds room, and dropping the oldest records frees whole blocks.
const BLOCK: usize = 64 * 1024;
/// Pieces larger than this get an allocation of their own.
const OWN_ALLOCATION: usize = BLOCK / 8;
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

impl Exchange {
    fn bytes(&self) -> usize {
        RECORD_OVERHEAD
            + self.request.raw.len()
            + self.request_body.captured.len()
            + self.response.as_ref().map_or(0, |h| h.raw.len())
            + self.response_body.captured.len()
            + self
                .websocket
                .iter()
                .map(|m| m.captured.capacity() + 64)
                .sum::<usize>()
    }
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

/// The history, behind the inspector's lock.
#[derive(Debug)]
pub(crate) struct Store {
    budget: usize,
    used: usize,
    next_seq: u64,
    exchanges: VecDeque<(Exchange, usize)>,
    connections: VecDeque<Connection>,
    feed: broadcast::Sender<Change>,
    /// One more reference per open [`Feed`].
    feeds: Arc<()>,
    /// The rest of the block new records' bytes are copied into.
    block: BytesMut,
}

impl Store {
    pub(crate) fn new(budget: usize) -> Self {
        Store {
            budget,
            used: 0,
            next_seq: 1,
            exchanges: VecDeque::new(),
            connections: VecDeque::new(),
            feed: broadcast::channel(FEED_CAPACITY).0,
            feeds: Arc::new(()),
            block: BytesMut::new(),
        }
    }

    /// A copy of `data` for a record: in the current block, or a new one.
    pub(crate) fn copy(&mut self, data: &[u8]) -> Bytes {
        if data.is_empty() {
            return Bytes::new();
        }
        if data.len() > OWN_ALLOCATION {
            return Bytes::copy_from_slice(data);
        }
        if self.block.capacity() < data.len() {
            self.block = BytesMut::with_capacity(BLOCK);
        }
        self.block.extend_from_slice(data);
        self.block.split().freeze()
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

    /// Adds `exchange` (its `seq` is assigned here) and returns its sequence number.
    pub(crate) fn add(&mut self, mut exchange: Exchange) -> u64 {
        let seq = self.next();
        exchange.seq = seq;
        let bytes = exchange.bytes();
        self.used += bytes;
        self.exchanges.push_back((exchange, bytes));
        self.evict();
        self.changed(Change::Request(seq));
        seq
    }

    /// Changes exchange `seq` with `f`, if it is still kept.
    pub(crate) fn update(&mut self, seq: u64, f: impl FnOnce(&mut Exchange)) {
        let Some(i) = self.position(seq) else {
            return;
        };
        let (exchange, bytes) = &mut self.exchanges[i];
        f(exchange);
        let now = exchange.bytes();
        self.used = self.used - *bytes + now;
        *bytes = now;
        self.evict();
        self.changed(Change::Request(seq));
    }

    fn position(&self, seq: u64) -> Option<usize> {
        // Sequence numbers are mostly consecutive: try where `seq` would be then.
        let first = self.exchanges.front()?.0.seq;
        let guess = usize::try_from(seq.checked_sub(first)?).ok()?;
        if self.exchanges.get(guess).is_some_and(|(e, _)| e.seq == seq) {
            return Some(guess);
        }
        self.exchanges
            .binary_search_by_key(&seq, |(e, _)| e.seq)
            .ok()
    }

    fn evict(&mut self) {
        // The newest record stays even when it alone is over the budget.
        while self.used > self.budget && self.exchanges.len() > 1 {
            if let Some((_, bytes)) = self.exchanges.pop_front() {
                self.used -= bytes;
            }
        }
    }

    pub(crate) fn get(&self, seq: u64) -> Option<&Exchange> {
        self.position(seq).map(|i| &self.exchanges[i].0)
    }

    /// The newest `limit` exchanges, newest first.
    pub(crate) fn newest(&self, limit: usize) -> impl Iterator<Item = &Exchange> {
        self.exchanges.iter().rev().take(limit).map(|(e, _)| e)
    }

    pub(crate) fn clear(&mut self) {
        self.exchanges.clear();
        self.connections.clear();
        self.block = BytesMut::new();
        self.used = 0;
        self.changed(Change::Cleared);
    }

    /// Exchanges kept.
    pub(crate) fn len(&self) -> usize {
        self.exchanges.len()
    }

    /// Bytes the history holds, by the budget's measure.
    pub(crate) fn used(&self) -> usize {
        self.used
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
mod tests {
    use super::*;

    fn exchange(body: usize) -> Exchange {
        Exchange {
            seq: 0,
            tunnel: 0,
            viewer: [192, 0, 2, 1].into(),
            started: SystemTime::now(),
            duration: None,
            replay_of: None,
            request: Head::default(),
            request_body: Body {
                size: body as u64,
                captured: vec![b'x'; body].into(),
                truncated: false,
            },
            response: None,
            response_body: Body::default(),
            websocket: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn the_oldest_go_first_once_the_budget_is_spent() {
        let mut store = Store::new(10_000);
        let seqs: Vec<u64> = (0..10).map(|_| store.add(exchange(1000))).collect();
        assert!(store.used() <= 10_000, "{}", store.used());
        let kept: Vec<u64> = store.newest(100).map(|e| e.seq).collect();
        assert_eq!(kept[0], seqs[9], "the newest is kept");
        assert!(kept.len() < 10 && kept.len() >= 7, "{kept:?}");
        assert!(store.get(seqs[0]).is_none());
        // Growing a record past the budget evicts older ones, never the record.
        store.update(seqs[9], |e| e.response_body.captured = vec![0; 9000].into());
        assert_eq!(store.newest(100).count(), 1);
        assert!(store.get(seqs[9]).is_some());
    }

    #[test]
    fn changes_reach_subscribers() {
        let mut store = Store::new(1 << 20);
        let mut feed = store.subscribe();
        let seq = store.add(exchange(1));
        store.update(seq, |e| e.duration = Some(Duration::from_millis(3)));
        store.clear();
        assert_eq!(feed.try_recv().unwrap(), Change::Request(seq));
        assert_eq!(feed.try_recv().unwrap(), Change::Request(seq));
        assert_eq!(feed.try_recv().unwrap(), Change::Cleared);
        assert_eq!(store.used(), 0);
    }
}
