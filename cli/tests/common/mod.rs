//! Test tooling: runs the real `netbore` binary as server and agent on loopback
//! (port 0 everywhere) and reads their `--json` events.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netbore_test_support::{Checksum, read_all};
use serde_json::Value;

pub mod balancer;
pub mod fleet;
pub mod hello;
pub mod pebble;
pub mod redis;
pub mod tls_origin;
pub mod web;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_netbore")
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("netbore-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `netbore` process: its stdout events arrive on a channel, its stderr is
/// kept in a file. Killed on drop.
pub struct Proc {
    pub child: Child,
    events: mpsc::Receiver<Value>,
    stderr_path: PathBuf,
    _dir: TempDir,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        let mut command = Command::new(bin());
        command.args(args);
        Self::spawn_command(command)
    }

    /// Runs `netbore ARGS` under the file-creation mask `umask` (octal, e.g. "000").
    pub fn spawn_with_umask(umask: &str, args: &[&str]) -> Proc {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(bin())
            .args(args);
        Self::spawn_command(command)
    }

    /// Runs `command` (which runs the binary) with `--json` appended.
    pub fn spawn_command(mut command: Command) -> Proc {
        let dir = TempDir::new("proc");
        let stderr_path = dir.0.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = command
            .arg("--json")
            .env("NETBORE_STATE_DIR", dir.0.join("state"))
            .env(
                "RUST_LOG",
                "warn,netbore=info,netbore_edge=info,netbore_agent=info",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("netbore binary runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            events,
            stderr_path,
            _dir: dir,
        }
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<Value> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Waits for an event named `name`, failing the test after `timeout`.
    pub fn expect_event(&self, name: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == name => return v,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no {name:?} event within {timeout:?}; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the process signal `name` (`TERM`, `KILL`, `INT`, …).
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit and returns its code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `netbore server` on loopback with every port chosen by the OS.
pub struct Server {
    pub proc: Proc,
    pub control: SocketAddr,
    pub agent: SocketAddr,
    pub http: SocketAddr,
    /// HTTPS ingress, when started with `--https-addr`.
    pub https: Option<SocketAddr>,
    pub data_dir: TempDir,
    /// The server's `listening` event.
    pub listening: Value,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let data_dir = TempDir::new("data");
        Self::start_in(data_dir, "127.0.0.1:0", "127.0.0.1:0", extra)
    }

    /// Starts a server on the given addresses with `data_dir`.
    pub fn start_in(data_dir: TempDir, control: &str, agent: &str, extra: &[&str]) -> Server {
        Self::start_opts(data_dir, control, agent, "127.0.0.1:0", true, extra)
    }

    /// Starts a server with every choice explicit: its HTTP ingress address, and
    /// whether it accepts anonymous agents.
    pub fn start_opts(
        data_dir: TempDir,
        control: &str,
        agent: &str,
        http: &str,
        allow_anonymous: bool,
        extra: &[&str],
    ) -> Server {
        let dd = data_dir.0.to_str().unwrap().to_string();
        let mut args = vec![
            "server",
            "--control-addr",
            control,
            "--agent-addr",
            agent,
            "--http-addr",
            http,
            "--data-dir",
            &dd,
        ];
        if !extra.contains(&"--tcp-ports") {
            args.extend_from_slice(&["--tcp-ports", "0"]);
        }
        if !extra.contains(&"--tcp-bind-ip") {
            args.extend_from_slice(&["--tcp-bind-ip", "127.0.0.1"]);
        }
        if !extra.contains(&"--domain") {
            args.extend_from_slice(&["--domain", "127.0.0.1"]);
        }
        if allow_anonymous {
            args.push("--allow-anonymous");
        }
        args.extend_from_slice(extra);
        let proc = Proc::spawn(&args);
        let ev = proc.expect_event("listening", Duration::from_secs(20));
        Server {
            control: ev["control"].as_str().unwrap().parse().unwrap(),
            agent: ev["agent"].as_str().unwrap().parse().unwrap(),
            http: ev["http"].as_str().unwrap().parse().unwrap(),
            https: ev["https"].as_str().map(|a| a.parse().unwrap()),
            proc,
            data_dir,
            listening: ev,
        }
    }

    /// Stops the server and hands back its data directory (to start another on it).
    pub fn stop(self) -> TempDir {
        let Server {
            mut proc, data_dir, ..
        } = self;
        proc.kill();
        data_dir
    }

    /// Runs `netbore key ARGS --data-dir DATA_DIR --json` and returns its exit code
    /// and its JSON events.
    pub fn key(&self, args: &[&str]) -> (i32, Vec<Value>) {
        key_cmd(&self.data_dir, args)
    }

    /// Creates an API key through the CLI and returns its secret.
    pub fn create_key(&self, label: &str) -> String {
        let (code, events) = self.key(&["create", "--label", label]);
        assert_eq!(code, 0, "{events:?}");
        events[0]["key"].as_str().unwrap().to_string()
    }

    /// One control API request.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> HttpResponse {
        http_request(self.control, method, path, key, body)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.control)
    }
}

/// A `netbore tcp` agent.
pub struct Agent {
    pub proc: Proc,
    pub public: SocketAddr,
    pub online: Value,
}

impl Agent {
    pub fn start(server: &Server, local: &str, extra: &[&str]) -> Agent {
        let url = server.url();
        let mut args = vec!["tcp", local, "--server", &url];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(&args);
        let online = proc.expect_event("online", Duration::from_secs(20));
        let public = public_addr(&online);
        Agent {
            proc,
            public,
            online,
        }
    }
}

/// A `netbore http` agent.
pub struct HttpAgent {
    pub proc: Proc,
    /// `NAME.localhost[:PORT]`, for the Host header (the HTTPS port when the server
    /// serves HTTPS).
    pub host: String,
    pub online: Value,
}

impl HttpAgent {
    /// Starts `netbore http LOCAL` against a server started with `--domain localhost`.
    pub fn start(server: &Server, local: &str, extra: &[&str]) -> HttpAgent {
        let proc = Self::spawn(server, local, extra);
        let online = proc.expect_event("online", Duration::from_secs(20));
        let url = online["public_url"].as_str().unwrap();
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .unwrap()
            .to_string();
        HttpAgent { proc, host, online }
    }

    /// Spawns `netbore http LOCAL` without waiting.
    pub fn spawn(server: &Server, local: &str, extra: &[&str]) -> Proc {
        let url = server.url();
        let mut args = vec!["http", local, "--server", &url];
        args.extend_from_slice(extra);
        Proc::spawn(&args)
    }
}

/// `tcp://127.0.0.1:PORT` from an online event.
pub fn public_addr(online: &Value) -> SocketAddr {
    let url = online["public_url"].as_str().unwrap();
    url.strip_prefix("tcp://").unwrap().parse().unwrap()
}

/// Lowest and one past the highest port [`free_port`] hands out: below the kernel's
/// ephemeral range (32768 and up by default), where sockets bound to port 0 land.
const FREE_PORTS: std::ops::Range<u32> = 16_000..32_000;

/// Finds a loopback port nobody listens on, for a process that must be told its
/// port before it binds it. The port comes from below the ephemeral range, so a
/// socket another test binds to port 0 meanwhile (a server's HTTP listener, say)
/// cannot take it, and no port is handed out twice in one test process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let span = (FREE_PORTS.end - FREE_PORTS.start) as u64;
    // Each test process starts elsewhere in the range, away from ports an earlier
    // one may still hold in TIME_WAIT.
    let _ = NEXT.compare_exchange(
        0,
        u64::from(std::process::id()) * 97 % span + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = (FREE_PORTS.start as u64 + NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FREE_PORTS:?}");
}

/// Runs `netbore key ARGS --data-dir DIR --json`: exit code and JSON events.
pub fn key_cmd(data_dir: &TempDir, args: &[&str]) -> (i32, Vec<Value>) {
    let out = Command::new(bin())
        .arg("key")
        .args(args)
        .arg("--data-dir")
        .arg(&data_dir.0)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .expect("netbore binary runs");
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (out.status.code().unwrap_or(-1), events)
}

/// An HTTP answer: status, lowercase header names, body parsed as JSON (`Null` if
/// empty or not JSON).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the one error shape with this status and code, and a one-sentence
    /// message; returns the message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let error = self.body["error"]
            .as_object()
            .unwrap_or_else(|| panic!("no error object: {self:?}"));
        assert_eq!(error.len(), 2, "{self:?}");
        assert_eq!(error["code"], code, "{self:?}");
        let message = error["message"].as_str().expect("message").to_string();
        assert!(
            !message.is_empty() && !message.contains('\n'),
            "{message:?}"
        );
        assert!(
            !message.ends_with('.'),
            "one sentence, no trailing period: {message:?}"
        );
        message
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> HttpResponse {
    http_request_from(None, addr, method, path, key, body)
}

/// [`http_request`] from a socket bound to `from` (another loopback address stands
/// for another machine).
pub fn http_request_from(
    from: Option<std::net::IpAddr>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = match from {
        None => std::net::TcpStream::connect(addr).unwrap(),
        Some(ip) => {
            use socket2::{Domain, Socket, Type};
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
            socket.bind(&SocketAddr::new(ip, 0).into()).unwrap();
            socket.connect(&addr.into()).unwrap();
            socket.into()
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(key) = key {
        req.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP head");
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    HttpResponse {
        status,
        headers,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    }
}

/// The body of a chunked answer.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// An origin for flow-control tests: a connection whose first byte is `S` gets an
/// endless stream, any other gets `fast` bytes and EOF. Returns its address and how
/// many bytes it has pushed into the endless streams.
pub async fn stalling_origin(fast: usize) -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap().to_string();
    let pushed_to_stalled = Arc::new(AtomicU64::new(0));
    let pushed = pushed_to_stalled.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let pushed = pushed.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut kind = [0u8; 1];
                s.read_exact(&mut kind).await.unwrap();
                let buf = vec![b'x'; 64 * 1024];
                if kind[0] == b'S' {
                    while s.write_all(&buf).await.is_ok() {
                        pushed.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    }
                } else {
                    for _ in 0..fast / buf.len() {
                        s.write_all(&buf).await.unwrap();
                    }
                    s.shutdown().await.unwrap();
                }
            });
        }
    });
    (origin, pushed_to_stalled)
}

/// Waits (5 s at most) until `pushed` stops growing: the stalled streams have filled
/// every buffer and window on their path (no event tells when that happens).
pub async fn wait_until_still(pushed: &AtomicU64) {
    let mut last = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = pushed.load(Ordering::Relaxed);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
}

/// Reads a [`stalling_origin`]'s fast stream through `public`: its checksum and how long
/// it took, or `None` if it did not end within 30 s.
pub async fn read_fast_stream(public: SocketAddr) -> Option<(Checksum, Duration)> {
    use tokio::io::AsyncWriteExt;
    let started = Instant::now();
    let mut fast = tokio::net::TcpStream::connect(public).await.unwrap();
    fast.write_all(b"F").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), read_all(&mut fast))
        .await
        .ok()?;
    Some((got, started.elapsed()))
}

/// Sends process `pid` the signal `name` (`TERM`, `KILL`, `INT`, …), as `kill -NAME`.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Echoes 64 KiB through `addr` and checks every byte came back.
pub async fn echoes(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let sent: Vec<u8> = (0..65_536u32).map(|i| (i % 253) as u8).collect();
    if s.write_all(&sent).await.is_err() {
        return false;
    }
    let mut got = vec![0u8; sent.len()];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await;
    matches!(read, Ok(Ok(_))) && got == sent
}
