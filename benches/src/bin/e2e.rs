//! End-to-end throughput harness: the same bulk transfer direct to an origin and
//! through a Netbore TCP tunnel (real `netbore server` and `netbore tcp` processes),
//! interleaved in one run so the ratio is fair on a noisy machine.
//!
//! Usage: `cargo build --release -p netbore -p netbore-benches && target/release/e2e [--seconds S] [--rounds N]`
//! Prints a Markdown table and one JSON line per figure.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BUF: usize = 256 * 1024;

/// Origin: 'U' = read and discard until EOF; 'D' = write until the peer goes.
async fn origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut kind = [0u8; 1];
                if s.read_exact(&mut kind).await.is_err() {
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

/// Bytes per second moved in one direction for `secs`.
async fn measure(addr: SocketAddr, upload: bool, secs: f64) -> f64 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(if upload { b"U" } else { b"D" }).await.unwrap();
    let mut buf = vec![0u8; BUF];
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut total = 0u64;
    if upload {
        while Instant::now() < deadline {
            s.write_all(&buf).await.unwrap();
            total += buf.len() as u64;
        }
        s.shutdown().await.unwrap();
        // The origin closes after it has read everything: the clock stops there.
        let _ = s.read(&mut buf).await;
    } else {
        while Instant::now() < deadline {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "download ended early");
            total += n as u64;
        }
    }
    total as f64 / started.elapsed().as_secs_f64()
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

impl Proc {
    fn spawn(bin: &std::path::Path, args: &[&str]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .arg("--json")
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
        Proc(child, rx)
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
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut secs = 3.0;
    let mut rounds = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                secs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds N")
            }
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            other => panic!("unknown flag {other}; use --seconds S --rounds N"),
        }
    }
    let bin = std::env::current_exe().unwrap().with_file_name("netbore");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release -p netbore"
    );
    let origin = origin().await;
    let data = std::env::temp_dir().join(format!("netbore-e2e-{}", std::process::id()));
    let dd = data.to_str().unwrap().to_string();
    let server = Proc::spawn(
        &bin,
        &[
            "server",
            "--control-addr",
            "127.0.0.1:0",
            "--agent-addr",
            "127.0.0.1:0",
            "--tcp-ports",
            "0",
            "--tcp-bind-ip",
            "127.0.0.1",
            "--domain",
            "127.0.0.1",
            "--allow-anonymous",
            "--data-dir",
            &dd,
        ],
    );
    let control = server.wait_for("listening")["control"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("http://{control}");
    let agent = Proc::spawn(&bin, &["tcp", &origin.to_string(), "--server", &url]);
    let online = agent.wait_for("online");
    let public: SocketAddr = online["public_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("tcp://")
        .parse()
        .unwrap();

    println!("| figure | direct | netbore tcp | ratio | netbore CPU s/GB (server+agent) |");
    println!("|---|---|---|---|---|");
    for (name, upload) in [
        ("bulk upload, 1 conn (viewer→origin)", true),
        ("bulk download, 1 conn (origin→viewer)", false),
    ] {
        let (mut direct, mut tunnel, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            direct.push(measure(origin, upload, secs).await);
            let before = cpu_seconds(server.0.id()) + cpu_seconds(agent.0.id());
            let rate = measure(public, upload, secs).await;
            let used = cpu_seconds(server.0.id()) + cpu_seconds(agent.0.id()) - before;
            tunnel.push(rate);
            cpu.push(used / (rate * secs / 1e9));
        }
        let (d, t, c) = (median(direct), median(tunnel), median(cpu));
        println!(
            "| {name} | {:.2} Gbit/s | {:.2} Gbit/s | {:.2}× | {:.2} |",
            d * 8e-9,
            t * 8e-9,
            t / d,
            c
        );
        eprintln!(
            "{}",
            serde_json::json!({"figure": name, "direct_gbit": d * 8e-9, "netbore_tcp_gbit": t * 8e-9, "ratio": t / d, "cpu_s_per_gb": c})
        );
    }
    drop(agent);
    drop(server);
    let _ = std::fs::remove_dir_all(data);
}
