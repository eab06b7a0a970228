//! `--soak MINUTES`: a three-node fleet under mixed load for a long run, one node
//! drained (SIGTERM) and started again every `--soak-restart` seconds, round robin.
//! Clients send through the nodes whose `/readyz` answers 200, as a load balancer
//! would: keep-alive and new-connection 1 KiB GETs, and a 1 MiB GET now and then.
//! Every ten seconds it samples each process's resident memory and descriptors and
//! the requests served and failed; at the end it prints the samples, each restart
//! (exit status, time to exit) and a summary (`docs/benchmarks.md`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Proc, free_port, spawn_quiet};

const IPS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

/// The ports every node uses on its own address.
#[derive(Clone, Copy)]
struct Ports {
    control: u16,
    agent: u16,
    http: u16,
    metrics: u16,
}

/// Counts of the load.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

fn start_node(bin: &std::path::Path, ip: &str, ports: Ports, redis: &str, data: &str) -> Proc {
    let addr = |port: u16| format!("{ip}:{port}");
    let node = Proc::spawn(
        bin,
        &[
            "server",
            "--redis",
            redis,
            "--control-addr",
            &addr(ports.control),
            "--agent-addr",
            &addr(ports.agent),
            "--http-addr",
            &addr(ports.http),
            "--metrics-addr",
            &addr(ports.metrics),
            "--tcp-ports",
            "0",
            "--tcp-bind-ip",
            ip,
            "--domain",
            "localhost",
            "--allow-anonymous",
            "--data-dir",
            &format!("{data}/{ip}"),
        ],
    );
    node.wait_for("listening");
    node
}

/// Resident KiB and open descriptors of `pid`.
fn footprint(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

/// `GET /readyz` answers 200.
async fn ready(metrics: SocketAddr) -> bool {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(metrics)).await
    else {
        return false;
    };
    let ask = b"GET /readyz HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n";
    let mut head = [0u8; 12];
    s.write_all(ask).await.is_ok()
        && matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut head)).await,
            Ok(Ok(_))
        )
        && head.ends_with(b" 200")
}

/// One GET on `s`: `Ok(keep)` with a 200 and the whole body (`keep`: the server
/// lets the connection be used again).
async fn get(s: &mut TcpStream, host: &str, path: &str, tally: &Tally) -> std::io::Result<bool> {
    let ask = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(ask.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(std::io::Error::other(
            head.lines().next().unwrap_or("").to_string(),
        ));
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no content-length"))?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    tally.bytes.fetch_add(len as u64, Ordering::Relaxed);
    Ok(!head.contains("connection: close"))
}

/// A client until `stop`: through a ready node, up to 100 requests a connection
/// (`keep_alive`) or one; every 100th request is the 1 MiB one.
async fn client(
    http: Vec<SocketAddr>,
    readiness: Arc<Vec<AtomicBool>>,
    host: String,
    keep_alive: bool,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0usize;
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Some(i) = (0..http.len())
            .map(|k| (next + k) % http.len())
            .find(|i| readiness[*i].load(Ordering::Acquire))
        else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        next = i + 1;
        let Ok(mut s) = TcpStream::connect(http[i]).await else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        for k in 0..if keep_alive { 100 } else { 1 } {
            if k > 0 && !readiness[i].load(Ordering::Acquire) {
                break;
            }
            n += 1;
            let path = if n.is_multiple_of(100) { "/1m" } else { "/1k" };
            match get(&mut s, &host, path, &tally).await {
                Ok(keep) => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                    if !keep {
                        break;
                    }
                }
                Err(e) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("soak: a request through {} failed: {e}", http[i]);
                    break;
                }
            }
            // Mixed load, not a saturating one: two cores run everything here.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Runs the soak for `minutes`, restarting a node every `restart_every`.
pub(crate) async fn run(
    bin: &std::path::Path,
    origin: SocketAddr,
    minutes: u64,
    restart_every: Duration,
) {
    let data = std::env::temp_dir().join(format!("netbore-soak-{}", std::process::id()));
    let dd = data.to_str().unwrap().to_string();
    std::fs::create_dir_all(format!("{dd}/redis")).unwrap();
    let redis_port = free_port();
    let _redis = spawn_quiet(
        "redis-server",
        &[
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &format!("{dd}/redis"),
        ],
    )
    .expect("redis-server runs (apt-get install redis-server)");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let redis = format!("redis://127.0.0.1:{redis_port}/0");
    let ports = Ports {
        control: free_port(),
        agent: free_port(),
        http: free_port(),
        metrics: free_port(),
    };
    let mut nodes: Vec<Proc> = IPS
        .iter()
        .map(|ip| start_node(bin, ip, ports, &redis, &dd))
        .collect();
    let agent = Proc::spawn(
        bin,
        &[
            "http",
            &origin.to_string(),
            "--server",
            &format!("http://{}:{}", IPS[0], ports.control),
            "--name",
            "soak",
            "--inspect",
            "off",
        ],
    );
    let online = agent.wait_for("online");
    let host = online["public_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let http: Vec<SocketAddr> = IPS
        .iter()
        .map(|ip| format!("{ip}:{}", ports.http).parse().unwrap())
        .collect();
    let metrics: Vec<SocketAddr> = IPS
        .iter()
        .map(|ip| format!("{ip}:{}", ports.metrics).parse().unwrap())
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let readiness: Arc<Vec<AtomicBool>> =
        Arc::new(IPS.iter().map(|_| AtomicBool::new(false)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (readiness, stop, metrics) = (readiness.clone(), stop.clone(), metrics.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (i, m) in metrics.iter().enumerate() {
                    readiness[i].store(ready(*m).await, Ordering::Release);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for keep_alive in [true, true, true, true, false, false] {
        tasks.spawn(client(
            http.clone(),
            readiness.clone(),
            host.clone(),
            keep_alive,
            tally.clone(),
            stop.clone(),
        ));
    }

    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let mut next_restart = started + restart_every;
    let mut next_sample = started;
    let mut restarts: Vec<String> = Vec::new();
    let mut samples: Vec<String> = Vec::new();
    let mut rss_range: Vec<(u64, u64)> = vec![(u64::MAX, 0); IPS.len() + 1];
    let mut fds_range: Vec<(usize, usize)> = vec![(usize::MAX, 0); IPS.len() + 1];
    let mut turn = 0;
    println!(
        "| minute | requests served | failed | MiB moved | RSS MiB (node .2, .3, .4, agent) | descriptors (node .2, .3, .4, agent) |"
    );
    println!("|---|---|---|---|---|---|");
    while Instant::now() < end {
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(10);
            let pids: Vec<u32> = nodes.iter().chain([&agent]).map(|p| p.0.id()).collect();
            let prints: Vec<(u64, usize)> = pids.iter().map(|p| footprint(*p)).collect();
            for (k, (rss, fds)) in prints.iter().enumerate() {
                rss_range[k] = (rss_range[k].0.min(*rss), rss_range[k].1.max(*rss));
                fds_range[k] = (fds_range[k].0.min(*fds), fds_range[k].1.max(*fds));
            }
            let line = format!(
                "| {:.1} | {} | {} | {} | {} | {} |",
                started.elapsed().as_secs_f64() / 60.0,
                tally.ok.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed),
                tally.bytes.load(Ordering::Relaxed) >> 20,
                prints
                    .iter()
                    .map(|(r, _)| format!("{:.1}", *r as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(", "),
                prints
                    .iter()
                    .map(|(_, f)| f.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            println!("{line}");
            samples.push(line);
        }
        if Instant::now() >= next_restart && Instant::now() + Duration::from_secs(30) < end {
            next_restart += restart_every;
            let k = turn % IPS.len();
            turn += 1;
            let pid = nodes[k].0.id();
            let asked = Instant::now();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let status = loop {
                if let Ok(Some(status)) = nodes[k].0.try_wait() {
                    break status.code();
                }
                if asked.elapsed() > Duration::from_secs(60) {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let exited = asked.elapsed();
            nodes[k] = start_node(bin, IPS[k], ports, &redis, &dd);
            let back = asked.elapsed();
            let line = format!(
                "node {} at minute {:.1}: exit status {status:?} {:.1} s after SIGTERM, ready again after {:.1} s",
                IPS[k],
                asked.duration_since(started).as_secs_f64() / 60.0,
                exited.as_secs_f64(),
                back.as_secs_f64()
            );
            eprintln!("soak: {line}");
            restarts.push(line);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    println!();
    for r in &restarts {
        println!("- {r}");
    }
    println!();
    let names = ["node .2", "node .3", "node .4", "agent"];
    for (k, name) in names.iter().enumerate() {
        println!(
            "- {name}: RSS {:.1}–{:.1} MiB, descriptors {}–{}",
            rss_range[k].0 as f64 / 1024.0,
            rss_range[k].1 as f64 / 1024.0,
            fds_range[k].0,
            fds_range[k].1
        );
    }
    println!(
        "- {} requests served, {} failed, {} MiB moved in {minutes} minutes",
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.bytes.load(Ordering::Relaxed) >> 20
    );
    drop(agent);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&data);
}
