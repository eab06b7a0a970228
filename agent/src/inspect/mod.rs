//! The request inspector: what went through the agent's HTTP tunnels, kept in memory
//! for a person to look at, replay and export (`http://127.0.0.1:4040`), and what its
//! TCP tunnels carried, connection by connection. The HTTP capture taps the bytes the
//! agent pipes (the HTTP/1.1 the Edge speaks to it) without changing them; TCP
//! tunnels stay a plain byte pipe and only count.

pub mod api;
mod body;
pub(crate) mod capture;
mod fields;
mod handoff;
mod har;
mod json;
mod lines;
mod paged;
pub(crate) mod queued_tap;
mod replay;
mod store;
mod websocket;
pub(crate) mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use netbore_control::api::Protocol;

use store::Store;
pub use store::{Body, Change, Connection, Exchange, Feed, Head, ParsedHead, WsMessage};

/// Default of [`InspectConfig::body_limit`].
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Default of [`InspectConfig::db_size`].
pub const DEFAULT_DB_SIZE: usize = 50 * 1024 * 1024;
/// Where the inspector listens by default; the next ports up to
/// [`DEFAULT_PORT_LAST`] are tried when it is taken.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4040);
/// The last port tried after [`DEFAULT_ADDR`].
pub const DEFAULT_PORT_LAST: u16 = 4049;

/// Settings of the inspector.
#[derive(Debug, Clone)]
pub struct InspectConfig {
    /// Bytes of each body kept (`--inspect-body-limit`).
    pub body_limit: usize,
    /// Memory the inspector may hold (`--inspect-db-size`): the queue its capture
    /// thread reads (a sixteenth per batch, at least 256 KiB), what the allocator
    /// spends (a sixteenth), and the history, oldest first out, with the rest (at
    /// least a quarter; a budget under 1 MiB is passed by the queue's minimum).
    /// Besides it: each open stream's parser, which holds at most a body limit
    /// per direction until the body is stored.
    pub db_size: usize,
    /// Show `Authorization` and `Cookie` values (`--inspect-secrets`); hidden
    /// otherwise (they are kept for replay, never shown).
    pub secrets: bool,
}

impl Default for InspectConfig {
    fn default() -> Self {
        InspectConfig {
            body_limit: DEFAULT_BODY_LIMIT,
            db_size: DEFAULT_DB_SIZE,
            secrets: false,
        }
    }
}

/// A tunnel as the inspector's API lists it.
#[derive(Debug, Clone)]
pub struct TunnelInfo {
    /// Its name (the config file's table name, or the tunnel id).
    pub name: String,
    /// Where viewers reach it; empty until it is online.
    pub public_url: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// The origin, `HOST:PORT`.
    pub local: String,
    /// Whether its HTTP requests are captured.
    pub inspect: bool,
}

/// A finished or running request, for the console.
#[derive(Debug, Clone)]
pub struct RequestSummary {
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Response status, once it has come.
    pub status: Option<u16>,
    /// How long it took, once it has ended.
    pub duration: Option<Duration>,
    /// When it started.
    pub started: SystemTime,
}

/// Requests [`Inspector::stats`] looks at, newest first.
const STATS_WINDOW: usize = 1000;

/// Counts and latency of the requests in the history, for the console.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Requests kept in the history.
    pub total: usize,
    /// Of the newest thousand, not finished yet.
    pub open: usize,
    /// Latency percentiles of the finished ones among the newest thousand.
    pub p50: Option<Duration>,
    /// 90th percentile.
    pub p90: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
}

/// Bytes a TCP tunnel's connection moved each way, counted as they pass.
#[derive(Debug, Default)]
pub(crate) struct ByteCount {
    /// The connection's record (0: none).
    pub(crate) connection: u64,
    /// From the viewer (read from the stream).
    pub(crate) from_viewer: u64,
    /// To the viewer (read from the origin).
    pub(crate) to_viewer: u64,
}

impl netbore_transport::pipe::Tap for ByteCount {
    fn read_from_stream(&mut self, data: &[u8]) {
        self.from_viewer += data.len() as u64;
    }

    fn read_from_socket(&mut self, data: &[u8]) {
        self.to_viewer += data.len() as u64;
    }
}

/// The inspector: cheap to clone, shared by the agent's streams and its web server.
#[derive(Debug, Clone)]
pub struct Inspector {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: InspectConfig,
    store: Mutex<Store>,
    tunnels: Mutex<Vec<TunnelInfo>>,
    addr: OnceLock<SocketAddr>,
    /// HTTP streams' bytes on their way to the capture thread.
    queue: Arc<worker::Queue>,
}

impl Inspector {
    /// An inspector with an empty history.
    pub fn new(config: InspectConfig) -> Self {
        // The clocks' pairing is read now, before any bytes are timed.
        let _ = capture::wall_clock(std::time::Instant::now());
        // The budget covers the capture's queue, the history and what the
        // allocator spends on them (a sixteenth); the history gets what is left.
        let room = worker::Room::for_budget(config.db_size);
        let history = config
            .db_size
            .saturating_sub(room.most() + config.db_size / 16)
            .max(config.db_size / 4);
        Inspector {
            inner: Arc::new(Inner {
                store: Mutex::new(Store::new(history)),
                config,
                tunnels: Mutex::new(Vec::new()),
                addr: OnceLock::new(),
                queue: Arc::new(worker::Queue::new(room)),
            }),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &InspectConfig {
        &self.inner.config
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves a usable history.
        self.inner
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits (briefly) until every request that passed before the call is in the
    /// history: the capture reads them on a thread of its own, a few milliseconds
    /// behind.
    pub async fn settle(&self) {
        self.inner.queue.settle().await;
    }

    /// Starts capturing one HTTP stream of tunnel `tunnel` as forwarding does
    /// (`None` when the capture thread cannot run). For the criterion benches, which
    /// measure what forwarding pays for the capture.
    #[doc(hidden)]
    pub fn capture_stream(
        &self,
        tunnel: usize,
        viewer: std::net::IpAddr,
    ) -> Option<impl netbore_transport::pipe::Tap + use<>> {
        queued_tap::QueuedTap::new(self, tunnel, viewer)
    }

    /// Hears every change to the history.
    pub fn subscribe(&self) -> Feed {
        self.store().subscribe()
    }

    /// Where its web page and API are served, once they are.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.inner.addr.get().copied()
    }

    /// `http://ADDR`, once it is served.
    pub fn url(&self) -> Option<String> {
        self.addr().map(|a| format!("http://{a}"))
    }

    pub(crate) fn set_addr(&self, addr: SocketAddr) {
        let _ = self.inner.addr.set(addr);
    }

    /// Sets the tunnels it lists (the agent's, in order).
    pub fn set_tunnels(&self, tunnels: Vec<TunnelInfo>) {
        *self.tunnels_mut() = tunnels;
    }

    fn tunnels_mut(&self) -> MutexGuard<'_, Vec<TunnelInfo>> {
        self.inner
            .tunnels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The tunnels it lists.
    pub fn tunnels(&self) -> Vec<TunnelInfo> {
        self.tunnels_mut().clone()
    }

    /// Records tunnel `index`'s public URL once it is online.
    pub fn tunnel_online(&self, index: usize, public_url: &str) {
        if let Some(t) = self.tunnels_mut().get_mut(index) {
            t.public_url = public_url.to_string();
        }
    }

    /// Whether tunnel `index` is inspected: its HTTP requests captured, or its TCP
    /// connections counted.
    pub(crate) fn inspects(&self, index: usize) -> bool {
        self.tunnels_mut().get(index).is_some_and(|t| t.inspect)
    }

    /// A copy of exchange `seq`, if it is still kept.
    pub fn exchange(&self, seq: u64) -> Option<Exchange> {
        self.copy(seq, false)
    }

    /// The sequence numbers of the newest `limit` exchanges, newest first.
    pub(crate) fn newest_seqs(&self, limit: usize) -> Vec<u64> {
        self.store().newest_records(limit).map(|r| r.seq).collect()
    }

    /// A copy of exchange `seq`, if it is still kept (`outline`: without its
    /// bodies' bytes, their sizes kept: for a list row, where bodies are copied only
    /// when a person opens the record).
    pub(crate) fn copy(&self, seq: u64, outline: bool) -> Option<Exchange> {
        let store = self.store();
        if outline {
            store.get_outline(seq)
        } else {
            store.get(seq)
        }
    }

    /// Copies of the newest `limit` exchanges, newest first.
    pub fn exchanges(&self, limit: usize) -> Vec<Exchange> {
        self.store().newest(limit).collect()
    }

    /// Copies of the newest `limit` TCP connections, newest first.
    pub fn connections(&self, limit: usize) -> Vec<Connection> {
        self.store().newest_connections(limit).cloned().collect()
    }

    /// A copy of connection `seq`.
    pub fn connection(&self, seq: u64) -> Option<Connection> {
        self.store().connection(seq).cloned()
    }

    /// Forgets every request and connection.
    pub fn clear(&self) {
        self.store().clear();
    }

    /// Memory the history holds, as the allocator counts it: the 64 KiB blocks its
    /// records' bytes are kept in, its list of records and what they hold besides.
    /// At most its share of [`InspectConfig::db_size`] (or one record, when that
    /// alone is more).
    pub fn used(&self) -> usize {
        self.store().used()
    }

    /// The newest `n` requests, newest first, for the console.
    pub fn recent(&self, n: usize) -> Vec<RequestSummary> {
        self.store()
            .newest_outlines(n)
            .map(|e| {
                let (method, target) = e.request.request_line();
                RequestSummary {
                    method: method.to_string(),
                    target: target.to_string(),
                    status: e.response.as_ref().map(|r| r.status_line().0),
                    duration: e.duration,
                    started: e.started,
                }
            })
            .collect()
    }

    /// Counts and latency percentiles of the history, for the console: the count of
    /// all it keeps, the rest from the newest [`STATS_WINDOW`] (so a redraw costs
    /// the same whatever the history holds).
    pub fn stats(&self) -> Stats {
        let store = self.store();
        let mut durations: Vec<Duration> = Vec::with_capacity(STATS_WINDOW);
        let mut stats = Stats {
            total: store.len(),
            ..Stats::default()
        };
        for e in store.newest_records(STATS_WINDOW) {
            match e.duration {
                Some(d) => durations.push(d),
                None if e.error().is_none() => stats.open += 1,
                None => {}
            }
        }
        drop(store);
        durations.sort_unstable();
        let at = |q: f64| {
            (!durations.is_empty())
                .then(|| durations[((durations.len() - 1) as f64 * q).round() as usize])
        };
        stats.p50 = at(0.5);
        stats.p90 = at(0.9);
        stats.p99 = at(0.99);
        stats
    }

    /// Records a TCP connection of tunnel `tunnel` from `viewer`, open now.
    pub(crate) fn connection_opened(&self, tunnel: usize, viewer: SocketAddr) -> u64 {
        self.store().add_connection(Connection {
            seq: 0,
            tunnel,
            remote_addr: viewer.ip().to_string(),
            started: SystemTime::now(),
            duration: None,
            bytes_in: 0,
            bytes_out: 0,
        })
    }

    /// Records that connection `seq` ended after moving these bytes.
    pub(crate) fn connection_closed(&self, seq: u64, bytes_in: u64, bytes_out: u64) {
        self.store().update_connection(seq, |c| {
            c.duration = c.started.elapsed().ok();
            c.bytes_in = bytes_in;
            c.bytes_out = bytes_out;
        });
    }
}
