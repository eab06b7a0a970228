//! End-to-end throughput harness: the same load direct to an origin, through a Netbore
//! TCP tunnel (over each transport: tcp, tls, ws, wss, quic) and through a Netbore HTTP tunnel
//! (real `netbore server`, `netbore tcp` and `netbore http` processes), interleaved in
//! one run so the ratio is fair on a noisy machine.
//!
//! Usage: `cargo build --release -p netbore && cargo build --release -p netbore-benches && target/release/e2e [--seconds S] [--rounds N] [--peers] [--baseline OTHER_NETBORE]`
//! (`--peers` adds bore and rathole (tcp, websocket, websocket over TLS, noise) when they are on the PATH;
//! `--quick` measures only the two single-connection bulk figures over tcp and quic;
//! `--floor R` exits non-zero when a netbore rate falls below R × direct in any figure, a gross-regression
//! guard far below the real ratios so noise never trips it;
//! `--max-idle-rss MIB` exits non-zero when an idle netbore server or agent holds more than MIB MiB
//! resident, a gross-regression guard for memory (idle near 6 MiB; a binary without its code layout near 12).)
//! (`--baseline` runs a second netbore binary, e.g. one built from an older commit, in the same run and over the same transports;
//! `--origin-only` serves just the harness's origin (`/1k`, `/1m`) for tools run by hand;
//! `--inspector-ab` adds `netbore http` with the request inspector off beside the default (on);
//! `--only TEXT` runs only the figures whose name contains TEXT, without the memory table;
//! `--peer NAME` (repeatable) adds one peer: bore, rathole-tcp, rathole-websocket,
//! rathole-websocket-tls or rathole-noise;
//! `--over LIST` picks the transports measured besides tcp (default `tls,ws,wss,quic`; `none`);
//! `--write-doc docs/benchmarks.md` replaces the generated block of that file with the tables.)
//! Prints a Markdown table and one JSON line per figure.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BUF: usize = 256 * 1024;

/// Origin: 'U' = read and discard until EOF; 'D' = write until the peer goes;
/// 'G' = an HTTP/1.1 server answering `GET /1k` and `GET /1m` (keep-alive unless the
/// request says `Connection: close`).
mod fleet;
mod soak;

async fn origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                // Out of file descriptors: wait for some to close rather than stop.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut kind = [0u8; 1];
                if s.read_exact(&mut kind).await.is_err() {
                    return;
                }
                if kind[0] == b'G' {
                    http_origin(s).await;
                    return;
                }
                let mut buf = vec![0u8; BUF];
                if kind[0] == b'U' {
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = s.shutdown().await;
                } else {
                    while s.write_all(&buf).await.is_ok() {}
                }
            });
        }
    });
    addr
}

/// The origin's two complete responses (head and body in one buffer, written with one
/// call): `GET /1m` gets 1 MiB, anything else 1 KiB. Built once: the harness's own CPU
/// per request competes with the relay under test for the same two cores, so it is
/// kept to the minimum a real server needs.
fn canned_responses() -> &'static (Vec<u8>, Vec<u8>) {
    static RESPONSES: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    RESPONSES.get_or_init(|| {
        let response = |fill: u8, len: usize| {
            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
            r.resize(r.len() + len, fill);
            r
        };
        (response(b'x', 1024), response(b'y', 1024 * 1024))
    })
}

/// The end of the first HTTP head in `buf` (after its blank line), if complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Where `needle` (lowercase ASCII) first occurs in `haystack`, ignoring ASCII case.
fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Reads from `s` into `buf` (through `chunk`) until `buf` holds a whole HTTP head;
/// returns where it ends.
async fn read_head(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) -> std::io::Result<usize> {
    loop {
        if let Some(end) = head_end(buf) {
            return Ok(end);
        }
        let n = s.read(chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Serves HTTP/1.1 requests on `s`, whose first byte ('G') was already read.
async fn http_origin(mut s: TcpStream) {
    let (small, large) = canned_responses();
    let mut buf = Vec::with_capacity(4096);
    buf.push(b'G');
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(end) = read_head(&mut s, &mut buf, &mut chunk).await else {
            return;
        };
        let head = &buf[..end];
        let response = if head.starts_with(b"GET /1m") {
            large
        } else {
            small
        };
        let close = find_ignore_case(head, b"connection: close").is_some();
        buf.drain(..end);
        if s.write_all(response).await.is_err() {
            return;
        }
        if close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// The `Content-Length` of an HTTP head, 0 when it has none.
fn content_length(head: &[u8]) -> usize {
    const NAME: &[u8] = b"\r\ncontent-length:";
    let Some(at) = find_ignore_case(head, NAME) else {
        return 0;
    };
    let value = &head[at + NAME.len()..];
    let value = value.split(|&b| b == b'\r').next().unwrap_or_default();
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads one HTTP/1.1 response with a Content-Length body from `s`, with `chunk` as
/// the read buffer; `buf` keeps what arrived beyond it.
async fn read_response(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) -> std::io::Result<()> {
    let end = read_head(s, buf, chunk).await?;
    let len = content_length(&buf[..end]);
    // The body need not be kept: count it, holding only what follows it.
    let mut missing = (end + len).saturating_sub(buf.len());
    buf.drain(..(end + len).min(buf.len()));
    while missing > 0 {
        let n = s.read(chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let body = n.min(missing);
        missing -= body;
        buf.extend_from_slice(&chunk[body..n]);
    }
    Ok(())
}

/// Runs `conns` clients issuing `GET path` for `secs`; returns requests/s and the
/// latencies (seconds) of every request.
async fn http_load(
    addr: SocketAddr,
    host: &str,
    conns: usize,
    path: &'static str,
    keep_alive: bool,
    secs: f64,
) -> (f64, Vec<f64>) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let request = if keep_alive {
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
        } else {
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        };
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            while Instant::now() < deadline {
                let t = Instant::now();
                if conn.is_none() {
                    let Ok(s) = TcpStream::connect(addr).await else {
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    buf.clear();
                    conn = Some(s);
                }
                let s = conn.as_mut().expect("connected above");
                let ok = s.write_all(request.as_bytes()).await.is_ok()
                    && read_response(s, &mut buf, &mut chunk).await.is_ok();
                if ok {
                    lat.push(t.elapsed().as_secs_f64());
                }
                if !ok || !keep_alive {
                    conn = None;
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all.len() as f64 / started.elapsed().as_secs_f64(), all)
}

/// Bytes per second moved in one direction for `secs`; an error when the relay cuts
/// the connection.
async fn measure(addr: SocketAddr, upload: bool, secs: f64) -> std::io::Result<f64> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(if upload { b"U" } else { b"D" }).await?;
    let mut buf = vec![0u8; BUF];
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut total = 0u64;
    if upload {
        while Instant::now() < deadline {
            s.write_all(&buf).await?;
            total += buf.len() as u64;
        }
        s.shutdown().await?;
        // The origin closes after it has read everything: the clock stops there.
        let _ = s.read(&mut buf).await;
    } else {
        while Instant::now() < deadline {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the download ended early",
                ));
            }
            total += n as u64;
        }
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Bytes per second moved in one direction over `conns` parallel connections.
async fn measure_parallel(
    addr: SocketAddr,
    upload: bool,
    conns: usize,
    secs: f64,
) -> std::io::Result<f64> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        tasks.spawn(measure(addr, upload, secs));
    }
    // Dropping the set (a figure that timed out) stops the transfers with it.
    let mut total = 0.0;
    while let Some(done) = tasks.join_next().await {
        total += done.map_err(std::io::Error::other)??;
    }
    Ok(total)
}

/// One row of the results table.
#[derive(Clone, Copy)]
enum Figure {
    /// Bulk transfer over `conns` connections, upload or download.
    Bulk { upload: bool, conns: usize },
    /// HTTP requests for `path` from `conns` clients.
    Http {
        conns: usize,
        path: &'static str,
        keep_alive: bool,
    },
}

impl Figure {
    fn name(self) -> String {
        match self {
            Figure::Bulk { upload, conns } => format!(
                "bulk {}, {conns} conn{}",
                if upload {
                    "upload (viewer→origin)"
                } else {
                    "download (origin→viewer)"
                },
                if conns > 1 { "s" } else { "" }
            ),
            Figure::Http {
                conns,
                path,
                keep_alive,
            } => format!(
                "HTTP GET {path}, {conns} conn{}, {}",
                if conns > 1 { "s" } else { "" },
                if keep_alive {
                    "keep-alive"
                } else {
                    "new connection per request"
                }
            ),
        }
    }
}

/// What one figure measured: the rate, how much work that was (GB or thousands of
/// requests, for CPU per unit), and latency percentiles for HTTP.
struct Sample {
    rate: f64,
    units: f64,
    p50: f64,
    p99: f64,
}

async fn run_figure(f: Figure, addr: SocketAddr, host: &str, secs: f64) -> std::io::Result<Sample> {
    Ok(match f {
        Figure::Bulk { upload, conns } => {
            let rate = measure_parallel(addr, upload, conns, secs).await?;
            Sample {
                rate,
                units: rate * secs / 1e9,
                p50: 0.0,
                p99: 0.0,
            }
        }
        Figure::Http {
            conns,
            path,
            keep_alive,
        } => {
            let (rate, mut lat) = http_load(addr, host, conns, path, keep_alive, secs).await;
            lat.sort_by(|a, b| a.total_cmp(b));
            let pct = |p: f64| {
                lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0.0)
            };
            Sample {
                rate,
                units: rate * secs / 1e3,
                p50: pct(0.5),
                p99: pct(0.99),
            }
        }
    })
}

/// Formats a rate for the table.
fn show(f: Figure, s: &Sample) -> String {
    match f {
        Figure::Bulk { .. } => format!("{:.2} Gbit/s", s.rate * 8e-9),
        Figure::Http { .. } => format!(
            "{:.1} k req/s (p50 {:.2} ms, p99 {:.2} ms)",
            s.rate / 1e3,
            s.p50 * 1e3,
            s.p99 * 1e3
        ),
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

struct Proc(Child, std::sync::mpsc::Receiver<serde_json::Value>);

/// The processes the harness has started and not yet stopped, for [`stop_on_signal`].
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Stops every started process when the harness is interrupted or terminated (by
/// Ctrl-C or `timeout`, say), then exits: they would otherwise outlive it and skew
/// later runs.
fn stop_on_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        let pids = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for pid in pids {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        eprintln!(
            "e2e: interrupted; stopped {} processes",
            RUNNING.lock().map_or(0, |r| r.len())
        );
        std::process::exit(130);
    });
}

impl Proc {
    /// Tracks `child` until it is dropped.
    fn new(child: Child, events: std::sync::mpsc::Receiver<serde_json::Value>) -> Proc {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id());
        Proc(child, events)
    }

    fn spawn(bin: &std::path::Path, args: &[&str]) -> Proc {
        Self::spawn_env(bin, args, &[])
    }

    /// Like [`Proc::spawn`], with `env` set (settings read from the environment are
    /// ignored by builds that do not know them, so A/B runs against older ones work).
    fn spawn_env(bin: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .arg("--json")
            .envs(env.iter().copied())
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("netbore runs");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Proc::new(child, rx)
    }

    fn wait_for(&self, event: &str) -> serde_json::Value {
        loop {
            let v = self
                .1
                .recv_timeout(Duration::from_secs(20))
                .expect("event arrives");
            if v["event"] == event {
                return v;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let pid = self.0.id();
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != pid);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Idle viewer streams opened through each relay for the memory table.
const IDLE_STREAMS: usize = 10_000;

/// [`IDLE_STREAMS`], or fewer when the open-file limit cannot hold both ends of each
/// stream in this process.
fn idle_streams() -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<usize>().ok())
                })
        })
        .unwrap_or(1024);
    IDLE_STREAMS.min(limit.saturating_sub(2000) / 2).max(100)
}

/// Markers around the generated tables in `docs/benchmarks.md`.
const DOC_BEGIN: &str =
    "<!-- e2e:begin (generated by target/release/e2e --write-doc; do not edit) -->";
const DOC_END: &str = "<!-- e2e:end -->";

/// The tables of a run, printed as they are made and kept for `--write-doc`.
#[derive(Default)]
struct Report(String);

impl Report {
    fn line(&mut self, text: &str) {
        println!("{text}");
        self.0.push_str(text);
        self.0.push('\n');
    }

    /// Replaces the generated block of `path` with this run's tables.
    fn write_into(&self, path: &std::path::Path, command: &str) -> std::io::Result<()> {
        let doc = std::fs::read_to_string(path)?;
        let (Some(begin), Some(end)) = (doc.find(DOC_BEGIN), doc.find(DOC_END)) else {
            return Err(std::io::Error::other(format!(
                "it has no {DOC_BEGIN} … {DOC_END} block"
            )));
        };
        let when = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let block = format!(
            "{DOC_BEGIN}\nRun of {when}: `{command}`\n\n{}{DOC_END}",
            self.0
        );
        let updated = format!("{}{block}{}", &doc[..begin], &doc[end + DOC_END.len()..]);
        std::fs::write(path, updated)
    }
}

/// One relay under test: its processes and the public address viewers use.
struct Contender {
    name: String,
    procs: Vec<Proc>,
    public: SocketAddr,
    /// The control API, for netbore contenders.
    control: Option<String>,
    /// The `Host` an HTTP tunnel answers to; `None` for TCP tunnels.
    http_host: Option<String>,
}

impl Contender {
    /// Netbore's own contenders (compared against the best peer).
    fn is_netbore(&self) -> bool {
        self.name.contains("netbore")
    }

    /// HTTP tunnels carry only the HTTP figures.
    fn serves(&self, f: Figure) -> bool {
        self.http_host.is_none() || matches!(f, Figure::Http { .. })
    }

    fn host(&self) -> &str {
        self.http_host.as_deref().unwrap_or("bench")
    }

    fn cpu(&self) -> f64 {
        self.procs.iter().map(|p| cpu_seconds(p.0.id())).sum()
    }

    /// Resident memory of (server, agent) in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let rss = |p: &Proc| {
            std::fs::read_to_string(format!("/proc/{}/status", p.0.id()))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                })
                .unwrap_or(0)
        };
        (rss(&self.procs[0]), rss(&self.procs[1]))
    }
}

/// Opens `n` connections through `public` that stay idle (the origin waits for data).
/// Stops early when a relay refuses more; the caller divides by what was opened.
async fn idle_viewers(public: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(public).await else {
            break;
        };
        if s.write_all(b"U").await.is_err() {
            break;
        }
        out.push(s);
    }
    // Let every stream reach the origin.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    out
}

/// Starts `netbore server` from `bin` on loopback (every port chosen by the OS) for
/// `domain`; returns it and its `listening` event.
/// Flags that lift the Edge's per-client, per-tunnel and anonymous caps, for a binary
/// that has them (a `--baseline` built before they existed has not): the harness is
/// one client on one address opening thousands of connections through one tunnel.
const LIFTED_CAPS: &[&str] = &[
    "--max-viewer-connections",
    "100000",
    "--max-viewer-connections-per-ip",
    "100000",
    "--max-viewer-streams-per-ip",
    "100000",
    "--max-streams-per-tunnel",
    "100000",
    "--max-anonymous-tunnels",
    "100000",
];

/// The caps of [`LIFTED_CAPS`] that `bin server` accepts.
fn lifted_caps(bin: &std::path::Path) -> Vec<&'static str> {
    let help = Command::new(bin)
        .args(["server", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    LIFTED_CAPS
        .chunks(2)
        .filter(|flag| {
            help.contains(&format!("{} ", flag[0])) || help.contains(&format!("{}\n", flag[0]))
        })
        .flatten()
        .copied()
        .collect()
}

fn netbore_server(bin: &std::path::Path, domain: &str, data: &str) -> (Proc, serde_json::Value) {
    netbore_server_with(bin, domain, data, &[])
}

/// [`netbore_server`] with `extra` flags.
fn netbore_server_with(
    bin: &std::path::Path,
    domain: &str,
    data: &str,
    extra: &[&str],
) -> (Proc, serde_json::Value) {
    let caps = lifted_caps(bin);
    let server = Proc::spawn(
        bin,
        &[
            "server",
            "--control-addr",
            "127.0.0.1:0",
            "--agent-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--tcp-ports",
            "0",
            "--tcp-bind-ip",
            "127.0.0.1",
            "--domain",
            domain,
            "--allow-anonymous",
            // The memory table brings 1,000 tunnels online from one address at once.
            "--max-tunnels-per-anonymous-ip",
            "5000",
            "--api-rate",
            "100000",
            "--api-burst",
            "100000",
            "--data-dir",
            data,
        ]
        .into_iter()
        .chain(caps.iter().copied())
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    let listening = server.wait_for("listening");
    (server, listening)
}

/// Starts `netbore server` and `netbore tcp` from `bin` in front of `origin`.
fn netbore(name: &str, bin: &std::path::Path, origin: SocketAddr, data: &str) -> Contender {
    netbore_over(name, bin, origin, data, None)
}

/// Like [`netbore`], with the agent on `transport` (trusting the server's development
/// CA), or the default transport when `None`.
fn netbore_over(
    name: &str,
    bin: &std::path::Path,
    origin: SocketAddr,
    data: &str,
    transport: Option<&str>,
) -> Contender {
    let (server, listening) = netbore_server(bin, "127.0.0.1", data);
    let url = format!("http://{}", listening["control"].as_str().unwrap());
    let state = format!("{data}/agent-state");
    let ca = format!("{data}/ca.pem");
    let origin = origin.to_string();
    let mut args = vec!["tcp", &origin, "--server", &url, "--state-dir", &state];
    if let Some(t) = transport {
        args.extend_from_slice(&["--transport", t, "--ca", &ca]);
    }
    let agent = Proc::spawn(bin, &args);
    let online = agent.wait_for("online");
    let public = online["public_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("tcp://")
        .parse()
        .unwrap();
    Contender {
        name: name.into(),
        procs: vec![server, agent],
        public,
        control: Some(url),
        http_host: None,
    }
}

/// Starts `netbore server` and `netbore http` from `bin` in front of `origin`: the
/// Edge parses every request and routes it by host name.
fn netbore_http(name: &str, bin: &std::path::Path, origin: SocketAddr, data: &str) -> Contender {
    netbore_http_with(name, bin, origin, data, &[])
}

/// [`netbore_http`] with `extra` flags for the agent.
fn netbore_http_with(
    name: &str,
    bin: &std::path::Path,
    origin: SocketAddr,
    data: &str,
    extra: &[&str],
) -> Contender {
    let (server, listening) = netbore_server(bin, "localhost", data);
    let control = listening["control"].as_str().unwrap().to_string();
    let public = listening["http"].as_str().unwrap().parse().unwrap();
    let url = format!("http://{control}");
    let state = format!("{data}/agent-state");
    let origin = origin.to_string();
    let mut args = vec!["http", &origin, "--server", &url, "--state-dir", &state];
    args.extend_from_slice(extra);
    let agent = Proc::spawn(bin, &args);
    let online = agent.wait_for("online");
    let host = online["public_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    Contender {
        name: name.into(),
        procs: vec![server, agent],
        public,
        control: None,
        http_host: Some(host),
    }
}

/// Brings `n` TCP tunnels online on a netbore server through sessions of up to 60
/// tunnels each, and returns the sessions and their hello streams (the tunnels stay
/// up while they live).
async fn open_tunnels(
    control: &str,
    n: usize,
) -> Vec<(netbore_transport::Session, netbore_transport::Stream)> {
    use netbore_transport::proto::{self, Hello, HelloReply, PROTOCOL_VERSION};
    let url: netbore_agent::ControlUrl = control.parse().unwrap();
    let request = netbore_control::api::CreateTunnelRequest::tcp(None);
    let mut sessions = Vec::new();
    let mut left = n;
    while left > 0 {
        let batch = left.min(60);
        let mut tokens = Vec::with_capacity(batch);
        let mut edge = String::new();
        for _ in 0..batch {
            let created =
                netbore_agent::control_client::create_tunnel(&url, None, false, None, &request)
                    .await
                    .unwrap();
            edge = created.edges[0].addr.clone();
            tokens.push(created.ephemeral_token);
        }
        let session = netbore_transport::tcp::connect(edge.as_str(), Default::default())
            .await
            .unwrap();
        let mut stream = session.open().await.unwrap();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            tokens,
            agent: "e2e".into(),
            link: None,
        };
        proto::write_message(&mut stream, &hello).await.unwrap();
        let reply: HelloReply = proto::read_message(&mut stream).await.unwrap();
        assert!(matches!(reply, HelloReply::Ok { .. }), "{reply:?}");
        sessions.push((session, stream));
        left -= batch;
    }
    sessions
}

/// A free loopback port (bound and released; fine for a benchmark on one machine).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawns a peer's process with its output discarded.
fn spawn_quiet(bin: &str, args: &[&str]) -> Option<Proc> {
    let child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let (_tx, rx) = std::sync::mpsc::channel();
    Some(Proc::new(child, rx))
}

/// Waits until a transfer through `public` reaches the origin (the peer is ready).
async fn wait_ready(public: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(public)).await
            && s.write_all(b"U").await.is_ok()
            && s.write_all(b"ready").await.is_ok()
            && s.shutdown().await.is_ok()
        {
            let mut b = [0u8; 1];
            // The origin closes after reading; a relay without a client resets or hangs.
            if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// bore (`bore server` + `bore local`), when `bore` is on the PATH.
async fn bore(origin: SocketAddr) -> Option<Contender> {
    let port = free_port();
    let server = spawn_quiet(
        "bore",
        &["server", "--bind-addr", "127.0.0.1", "--min-port", "1024"],
    )?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = spawn_quiet(
        "bore",
        &[
            "local",
            &origin.port().to_string(),
            "--local-host",
            "127.0.0.1",
            "--to",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ],
    )?;
    let public: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(public).await.then(|| Contender {
        name: "bore".into(),
        procs: vec![server, client],
        public,
        control: None,
        http_host: None,
    })
}

/// rathole with the given transport (`tcp`, `websocket`, `websocket-tls` (websocket
/// over TLS, the counterpart of Netbore's wss), or `noise`, its encrypted one), when
/// `rathole` is on the PATH.
async fn rathole(origin: SocketAddr, transport: &str, dir: &std::path::Path) -> Option<Contender> {
    let (ctrl, port) = (free_port(), free_port());
    std::fs::create_dir_all(dir).ok()?;
    let kind = transport.trim_end_matches("-tls");
    let (server_extra, client_extra) = match transport {
        "websocket-tls" => {
            let (pfx, ca) = rathole_identity(dir)?;
            (
                format!(
                    "\n[server.transport.websocket]\ntls = true\n[server.transport.tls]\npkcs12 = \"{pfx}\"\npkcs12_password = \"bench\"\n"
                ),
                format!(
                    "\n[client.transport.websocket]\ntls = true\n[client.transport.tls]\ntrusted_root = \"{ca}\"\nhostname = \"localhost\"\n"
                ),
            )
        }
        "websocket" => (
            "\n[server.transport.websocket]\ntls = false\n".to_string(),
            "\n[client.transport.websocket]\ntls = false\n".to_string(),
        ),
        "noise" => {
            let (private, public) = rathole_keypair()?;
            (
                format!("\n[server.transport.noise]\nlocal_private_key = \"{private}\"\n"),
                format!("\n[client.transport.noise]\nremote_public_key = \"{public}\"\n"),
            )
        }
        _ => (String::new(), String::new()),
    };
    let server = format!(
        "[server]\nbind_addr = \"127.0.0.1:{ctrl}\"\n[server.transport]\ntype = \"{kind}\"\n{server_extra}\n[server.services.bench]\ntoken = \"bench\"\nbind_addr = \"127.0.0.1:{port}\"\n"
    );
    let client = format!(
        "[client]\nremote_addr = \"127.0.0.1:{ctrl}\"\n[client.transport]\ntype = \"{kind}\"\n{client_extra}\n[client.services.bench]\ntoken = \"bench\"\nlocal_addr = \"{origin}\"\n"
    );
    let (sp, cp) = (
        dir.join(format!("server-{transport}.toml")),
        dir.join(format!("client-{transport}.toml")),
    );
    std::fs::write(&sp, server).ok()?;
    std::fs::write(&cp, client).ok()?;
    let server = spawn_quiet("rathole", &["--server", sp.to_str()?])?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = spawn_quiet("rathole", &["--client", cp.to_str()?])?;
    let public: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(public).await.then(|| Contender {
        name: format!("rathole {transport}"),
        procs: vec![server, client],
        public,
        control: None,
        http_host: None,
    })
}

/// A TLS identity for rathole's websocket-over-TLS server, made with the `openssl`
/// command: a self-signed certificate for `localhost` (which the client trusts) and
/// its PKCS#12 bundle, as file paths.
fn rathole_identity(dir: &std::path::Path) -> Option<(String, String)> {
    let (key, cert, pfx) = (
        dir.join("rathole-key.pem"),
        dir.join("rathole-cert.pem"),
        dir.join("rathole-identity.pfx"),
    );
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let (key, cert, pfx) = (key.to_str()?, cert.to_str()?, pfx.to_str()?);
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
    ]) && openssl(&[
        "pkcs12",
        "-export",
        "-passout",
        "pass:bench",
        "-inkey",
        key,
        "-in",
        cert,
        "-out",
        pfx,
    ]);
    made.then(|| (pfx.to_string(), cert.to_string()))
}

/// A noise key pair from `rathole --genkey`: (private, public), base64.
fn rathole_keypair() -> Option<(String, String)> {
    let out = std::process::Command::new("rathole")
        .arg("--genkey")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.ends_with(':'));
    Some((keys.next()?.to_string(), keys.next()?.to_string()))
}

/// Says what was wrong with the command line, with the usage, and exits with status 2.
fn usage_error(what: &str) -> ! {
    eprintln!(
        "e2e: {what}; usage: e2e [--seconds S] [--rounds N] [--quick] [--peers | --peer NAME ...] [--only TEXT] [--over tls,ws,wss,quic|none] [--write-doc PATH] [--floor RATIO] [--max-idle-rss MIB] [--baseline OTHER_NETBORE] [--origin-only] [--inspector-ab] [--soak MINUTES [--soak-restart SECONDS]]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    stop_on_signal();
    let mut secs = 3.0;
    let mut rounds = 3;
    let mut baseline: Option<std::path::PathBuf> = None;
    let mut peers: Vec<String> = Vec::new();
    let mut quick = false;
    let mut floor: Option<f64> = None;
    let mut max_idle_rss_mib: Option<f64> = None;
    let mut only: Option<String> = None;
    let mut fleet = false;
    let mut inspector_ab = false;
    let mut soak: Option<u64> = None;
    let mut soak_restart = 300u64;
    let mut over: Vec<String> = ["tls", "ws", "wss", "quic"].map(String::from).to_vec();
    let mut write_doc: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                secs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage_error("--seconds needs a number"))
            }
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage_error("--rounds needs a whole number"))
            }
            "--peers" => {
                peers = [
                    "bore",
                    "rathole-tcp",
                    "rathole-websocket",
                    "rathole-websocket-tls",
                    "rathole-noise",
                ]
                .map(String::from)
                .to_vec()
            }
            "--peer" => peers.push(
                args.next()
                    .unwrap_or_else(|| usage_error("--peer needs a peer's name")),
            ),
            "--only" => {
                only = Some(
                    args.next()
                        .unwrap_or_else(|| usage_error("--only needs a text")),
                )
            }
            "--over" => {
                over = args
                    .next()
                    .unwrap_or_else(|| {
                        usage_error("--over needs a list such as tls,ws,wss,quic or none")
                    })
                    .split(',')
                    .filter(|t| !t.is_empty() && *t != "none")
                    .map(String::from)
                    .collect()
            }
            "--write-doc" => {
                write_doc = Some(
                    args.next()
                        .unwrap_or_else(|| usage_error("--write-doc needs a path"))
                        .into(),
                )
            }
            "--quick" => quick = true,
            // Two fleets of two nodes on one Redis each, an HTTP tunnel on the first
            // node: viewers through the holder, and through the other node (the hop).
            "--fleet" => fleet = true,
            "--inspector-ab" => inspector_ab = true,
            // A three-node fleet under mixed load for MINUTES, one node drained and
            // started again every --soak-restart seconds (docs/benchmarks.md).
            "--soak" => {
                soak = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage_error("--soak needs minutes")),
                )
            }
            "--soak-restart" => {
                soak_restart = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage_error("--soak-restart needs seconds"))
            }
            "--origin-only" => {
                // The harness's origin alone, for measuring by hand (h2load, wrk, oha).
                let addr = origin().await;
                println!("origin listening on http://{addr} (/1k, /1m); Ctrl-C stops it");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
            "--floor" => {
                floor = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage_error("--floor needs a ratio")),
                )
            }
            "--max-idle-rss" => {
                max_idle_rss_mib = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage_error("--max-idle-rss needs a size in MiB")),
                )
            }
            "--baseline" => {
                baseline = Some(
                    args.next()
                        .unwrap_or_else(|| {
                            usage_error("--baseline needs the path of another netbore binary")
                        })
                        .into(),
                )
            }
            other => usage_error(&format!("{other} is not a flag of e2e")),
        }
    }
    let bin = std::env::current_exe().unwrap().with_file_name("netbore");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release -p netbore"
    );
    let origin = origin().await;
    if let Some(minutes) = soak {
        soak::run(&bin, origin, minutes, Duration::from_secs(soak_restart)).await;
        return;
    }
    let data = std::env::temp_dir().join(format!("netbore-e2e-{}", std::process::id()));
    // Each contender's server keeps its data in a directory of its own under `data`,
    // so one removal at the end clears them all.
    let dd = data.to_str().unwrap().to_string();
    let mut contenders = vec![netbore("netbore tcp", &bin, origin, &format!("{dd}/tcp"))];
    if quick {
        // CI's guard covers the other forwarding path too (QUIC streams, no mux).
        contenders.push(netbore_over(
            "netbore tcp over quic",
            &bin,
            origin,
            &format!("{dd}/quic"),
            Some("quic"),
        ));
    } else {
        for transport in &over {
            contenders.push(netbore_over(
                &format!("netbore tcp over {transport}"),
                &bin,
                origin,
                &format!("{dd}/{transport}"),
                Some(transport),
            ));
        }
        contenders.push(netbore_http(
            "netbore http",
            &bin,
            origin,
            &format!("{dd}/http"),
        ));
        if inspector_ab {
            contenders.push(netbore_http_with(
                "netbore http, inspector off",
                &bin,
                origin,
                &format!("{dd}/http-no-inspector"),
                &["--inspect", "off"],
            ));
        }
    }
    if fleet {
        for hop in [false, true] {
            match fleet::http(&bin, origin, &format!("{dd}/fleet-{hop}"), hop).await {
                Some(c) => contenders.push(c),
                None => eprintln!(
                    "the fleet contenders need redis-server: apt-get install redis-server"
                ),
            }
        }
    }
    if let Some(path) = &baseline {
        contenders.push(netbore(
            "baseline netbore tcp",
            path,
            origin,
            &format!("{dd}/baseline"),
        ));
        if !quick {
            // Every transport of the run, so a change to one of them is compared too.
            for transport in &over {
                contenders.push(netbore_over(
                    &format!("baseline netbore tcp over {transport}"),
                    path,
                    origin,
                    &format!("{dd}/baseline-{transport}"),
                    Some(transport),
                ));
            }
            contenders.push(netbore_http(
                "baseline netbore http",
                path,
                origin,
                &format!("{dd}/baseline-http"),
            ));
        }
    }
    for peer in &peers {
        if peer == "bore" {
            match bore(origin).await {
                Some(c) => contenders.push(c),
                None => eprintln!("bore is not installed or did not start: cargo install bore-cli"),
            }
        } else if let Some(transport) = peer.strip_prefix("rathole-") {
            match rathole(origin, transport, &data).await {
                Some(c) => contenders.push(c),
                None => eprintln!(
                    "rathole ({transport}) is not installed or did not start: cargo install rathole"
                ),
            }
        } else {
            usage_error(&format!(
                "{peer} is not a peer e2e knows (bore, rathole-tcp, rathole-websocket, rathole-websocket-tls, rathole-noise)"
            ));
        }
    }

    // Memory: idle, then with idle viewer connections open through each relay.
    let idle_conns = if quick { 0 } else { idle_streams() };
    // `--only` is for iterating on one figure: no memory table.
    let contenders_for_memory = if only.is_some() {
        &[][..]
    } else {
        &contenders[..]
    };
    let mut mem_rows = Vec::new();
    let mut over_memory = Vec::new();
    for c in contenders_for_memory {
        let (s0, a0) = c.rss_kib();
        if c.is_netbore()
            && let Some(max) = max_idle_rss_mib
        {
            for (role, kib) in [("server", s0), ("agent", a0)] {
                let mib = kib as f64 / 1024.0;
                if mib > max {
                    over_memory.push(format!(
                        "{}: the idle {role} holds {mib:.1} MiB, above the ceiling of {max} MiB",
                        c.name
                    ));
                }
            }
        }
        let mut row = format!(
            "| {} | {:.1} MiB | {:.1} MiB |",
            c.name,
            s0 as f64 / 1024.0,
            a0 as f64 / 1024.0
        );
        if idle_conns > 0 && c.http_host.is_some() {
            row += " — | — | — |";
        } else if idle_conns > 0 {
            // Tunnels first, then connections, both kept open until both are measured,
            // so memory freed by one is never reused by the other.
            let tunnels = match &c.control {
                Some(control) => Some(open_tunnels(control, 1000).await),
                None => None,
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (s1, _) = c.rss_kib();
            let viewers = idle_viewers(c.public, idle_conns).await;
            let (s2, a2) = c.rss_kib();
            let opened = viewers.len().max(1);
            let per =
                |after: u64, before: u64, n: usize| after.saturating_sub(before) as f64 / n as f64;
            let per_tunnel = match tunnels {
                Some(_) => format!("{:.1} KiB", per(s1, s0, 1000)),
                None => "—".into(),
            };
            row += &format!(
                " {:.1} KiB | {:.1} KiB | {per_tunnel} |",
                per(s2, s1, opened),
                per(a2, a0, opened)
            );
            drop(viewers);
            drop(tunnels);
        }
        eprintln!(
            "{}",
            serde_json::json!({"memory": c.name, "server_idle_kib": s0, "agent_idle_kib": a0})
        );
        mem_rows.push(row);
    }
    let mut report = Report::default();
    if idle_conns > 0 {
        report.line(&format!(
            "| relay | server RSS idle | agent RSS idle | server per idle stream ({idle_conns} open) | agent per idle stream | server per idle tunnel (1,000 tunnels) |\n|---|---|---|---|---|---|"
        ));
    } else if !mem_rows.is_empty() {
        report.line("| relay | server RSS idle | agent RSS idle |\n|---|---|---|");
    }
    for r in mem_rows {
        report.line(&r);
    }
    report.line("");
    let mut header = String::from("| figure | direct |");
    let mut rule = String::from("|---|---|");
    let has_peers = contenders.iter().any(|c| !c.is_netbore());
    for c in &contenders {
        let ratio = if c.is_netbore() && has_peers {
            "× direct / × best peer"
        } else {
            "× direct"
        };
        header += &format!(" {} | {ratio} | CPU (s/GB, s/1k req) |", c.name);
        rule += "---|---|---|";
    }
    report.line(&format!("{header}\n{rule}"));
    let mut figures = vec![
        Figure::Bulk {
            upload: true,
            conns: 1,
        },
        Figure::Bulk {
            upload: false,
            conns: 1,
        },
    ];
    if !quick {
        figures.extend([
            Figure::Bulk {
                upload: true,
                conns: 8,
            },
            Figure::Bulk {
                upload: false,
                conns: 8,
            },
            Figure::Http {
                conns: 64,
                path: "/1k",
                keep_alive: true,
            },
            Figure::Http {
                conns: 16,
                path: "/1k",
                keep_alive: false,
            },
            // One client at a time: the set-up latency of a tunnelled connection
            // rather than the machine's CPU decides this one.
            Figure::Http {
                conns: 1,
                path: "/1k",
                keep_alive: false,
            },
            Figure::Http {
                conns: 16,
                path: "/1m",
                keep_alive: true,
            },
        ]);
    }
    if let Some(text) = &only {
        figures.retain(|f| f.name().contains(text.as_str()));
    }
    let mut regressions = Vec::new();
    // A contender that wedges (a peer that never recovers from the idle-connection
    // load, say) is dropped from the later figures instead of hanging the run.
    let mut stalled = vec![false; contenders.len()];
    let limit = Duration::from_secs_f64(secs * 4.0 + 20.0);
    for figure in figures {
        let name = figure.name();
        let mut direct = Vec::new();
        let mut samples: Vec<Vec<Sample>> = (0..contenders.len()).map(|_| Vec::new()).collect();
        let mut cpus = vec![Vec::new(); contenders.len()];
        for _ in 0..rounds {
            let sample = run_figure(figure, origin, "bench", secs).await;
            direct.push(sample.unwrap_or_else(|e| {
                eprintln!(
                    "e2e: {name} failed without a relay ({e}); the machine is out of resources"
                );
                std::process::exit(1)
            }));
            for (i, c) in contenders.iter().enumerate() {
                if !c.serves(figure) || stalled[i] {
                    continue;
                }
                let before = c.cpu();
                let sample = match tokio::time::timeout(
                    limit,
                    run_figure(figure, c.public, c.host(), secs),
                )
                .await
                {
                    Ok(Ok(sample)) => sample,
                    Ok(Err(e)) => {
                        eprintln!(
                            "{}: {name} failed ({e}); it is left out of this and later figures",
                            c.name
                        );
                        stalled[i] = true;
                        continue;
                    }
                    Err(_) => {
                        eprintln!(
                            "{}: {name} did not finish within {limit:?}; it is left out of this and later figures",
                            c.name
                        );
                        stalled[i] = true;
                        continue;
                    }
                };
                cpus[i].push((c.cpu() - before) / sample.units.max(1e-9));
                samples[i].push(sample);
            }
        }
        let pick = |mut v: Vec<Sample>| {
            v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            v.swap_remove(v.len() / 2)
        };
        let d = pick(direct);
        let picked: Vec<Option<Sample>> = contenders
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (c.serves(figure) && !samples[i].is_empty())
                    .then(|| pick(std::mem::take(&mut samples[i])))
            })
            .collect();
        // The best peer of this row: the fastest contender that is not netbore.
        let best_peer = contenders
            .iter()
            .zip(&picked)
            .filter(|(c, _)| !c.is_netbore())
            .filter_map(|(_, s)| s.as_ref().map(|s| s.rate))
            .fold(None, |best: Option<f64>, r| {
                Some(best.map_or(r, |b| b.max(r)))
            });
        let mut row = format!("| {name} | {} |", show(figure, &d));
        for (i, c) in contenders.iter().enumerate() {
            let Some(s) = &picked[i] else {
                row += " — | — | — |";
                continue;
            };
            let cpu = median(cpus[i].clone());
            let ratio = match best_peer {
                Some(p) if c.is_netbore() => {
                    format!("{:.2}× / {:.2}×", s.rate / d.rate, s.rate / p)
                }
                _ => format!("{:.2}×", s.rate / d.rate),
            };
            row += &format!(" {} | {ratio} | {cpu:.2} |", show(figure, s));
            if c.is_netbore()
                && let Some(f) = floor
                && s.rate / d.rate < f
            {
                regressions.push(format!(
                    "{name}: {:.3}× direct is below the floor of {f}×",
                    s.rate / d.rate
                ));
            }
            eprintln!(
                "{}",
                serde_json::json!({"figure": name, "contender": c.name, "direct": d.rate, "rate": s.rate,
                    "ratio_to_direct": s.rate / d.rate, "ratio_to_best_peer": best_peer.map(|p| s.rate / p),
                    "cpu_per_unit": cpu, "p50_s": s.p50, "p99_s": s.p99})
            );
        }
        report.line(&row);
    }
    drop(contenders);
    if let Some(path) = &write_doc {
        let command: Vec<String> = std::env::args().collect();
        if let Err(e) = report.write_into(path, &command.join(" ")) {
            eprintln!("could not update {}: {e}", path.display());
            std::process::exit(1);
        }
        eprintln!("updated the table in {}", path.display());
    }
    let _ = std::fs::remove_dir_all(&data);
    regressions.extend(over_memory);
    if !regressions.is_empty() {
        for line in &regressions {
            eprintln!("regression: {line}");
        }
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_found_in_any_case() {
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n"),
            1024
        );
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\ncontent-length:7\r\nx: y\r\n\r\n"),
            7
        );
        assert_eq!(content_length(b"HTTP/1.1 204 No Content\r\n\r\n"), 0);
    }

    #[tokio::test]
    async fn responses_are_read_one_by_one_from_the_origin() {
        let addr = origin().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Two requests at once: the second response may arrive with the first.
        s.write_all(b"GET /1k HTTP/1.1\r\nHost: a\r\n\r\nGET /1m HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        read_response(&mut s, &mut buf, &mut chunk).await.unwrap();
        read_response(&mut s, &mut buf, &mut chunk).await.unwrap();
        assert!(
            buf.is_empty(),
            "{} bytes beyond the two responses",
            buf.len()
        );
        // The origin closes after a request that asks it to.
        s.write_all(b"GET /1k HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut s, &mut buf, &mut chunk).await.unwrap();
        assert_eq!(s.read(&mut chunk).await.unwrap(), 0);
    }
}
