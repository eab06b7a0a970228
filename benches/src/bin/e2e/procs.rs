//! The processes the harness starts: spawning, events, CPU, stopping them all.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

pub(crate) struct Proc(
    pub(crate) Child,
    pub(crate) std::sync::mpsc::Receiver<serde_json::Value>,
);

/// The processes the harness has started and not yet stopped, for [`stop_on_signal`].
pub(crate) static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Stops every started process when the harness is interrupted or terminated (by
/// Ctrl-C or `timeout`, say), then exits: they would otherwise outlive it and skew
/// later runs.
pub(crate) fn stop_on_signal() {
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
    pub(crate) fn new(child: Child, events: std::sync::mpsc::Receiver<serde_json::Value>) -> Proc {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id());
        Proc(child, events)
    }

    pub(crate) fn spawn(bin: &std::path::Path, args: &[&str]) -> Proc {
        Self::spawn_env(bin, args, &[])
    }

    /// Like [`Proc::spawn`], with `env` set (settings read from the environment are
    /// ignored by builds that do not know them, so A/B runs against older ones work).
    pub(crate) fn spawn_env(bin: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
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

    pub(crate) fn wait_for(&self, event: &str) -> serde_json::Value {
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

/// A free loopback port (bound and released; fine for a benchmark on one machine).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawns a peer's process with its output discarded.
pub(crate) fn spawn_quiet(bin: &str, args: &[&str]) -> Option<Proc> {
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
pub(crate) async fn wait_ready(public: SocketAddr) -> bool {
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
