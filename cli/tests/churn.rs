//! Nothing leaks: 10,000 agent sessions that connect, say hello and leave, and
//! 100,000 viewer connections through a TCP tunnel, and the server's descriptors and
//! tasks come back to where they were, and its memory near it; the agent that served
//! the viewers likewise.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Agent, Server, web};
use netbore_control::api::CreateTunnelRequest;
use netbore_transport::proto::HelloReply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AGENT_CYCLES: usize = 10_000;
const VIEWERS: usize = 100_000;

/// What `/metrics` says about the process: tasks, descriptors, resident bytes.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    tasks: u64,
    fds: u64,
    rss: u64,
}

async fn footprint(metrics: SocketAddr) -> Footprint {
    let text = web::get(metrics, "metrics", "/metrics").await.text();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} in /metrics"))
            .round() as u64
    };
    Footprint {
        tasks: value("netbore_runtime_tasks"),
        fds: value("process_open_fds"),
        rss: value("process_resident_memory_bytes"),
    }
}

/// Waits (30 s at most) for the footprint to come back within `slack` tasks and
/// descriptors of `base`, and returns the last one read.
async fn settles(metrics: SocketAddr, base: Footprint, slack: u64) -> Footprint {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = footprint(metrics).await;
        if (now.tasks <= base.tasks + slack && now.fds <= base.fds + slack)
            || Instant::now() > deadline
        {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An origin that answers each connection's four bytes with the same four and
/// closes. It closes first, so the socket that waits out TIME_WAIT is its own and
/// not the agent's: 100,000 connections from one agent to one origin address would
/// otherwise spend the agent's ephemeral ports faster than the kernel frees them.
async fn echo_origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ping = [0u8; 4];
                if socket.read_exact(&mut ping).await.is_ok() {
                    let _ = socket.write_all(&ping).await;
                }
            });
        }
    });
    addr
}

fn metrics_of(listening: &serde_json::Value) -> SocketAddr {
    listening["metrics"]
        .as_str()
        .unwrap()
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap()
}

/// The last lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// One agent session: reclaims its tunnel with `token`, says hello, leaves.
async fn cycle(url: netbore_agent::ControlUrl, agent: SocketAddr, key: String, token: String) {
    let reclaim = CreateTunnelRequest {
        recreate_token: Some(token),
        ..CreateTunnelRequest::tcp(None)
    };
    // A reclaim that comes while the Edge is still closing the last session can find
    // the tunnel's port busy for a moment; an agent tries again after a backoff.
    let mut tries = 0;
    let created = loop {
        match netbore_agent::control_client::create_tunnel(&url, None, false, Some(&key), &reclaim)
            .await
        {
            Err(netbore_agent::AgentError::Refused {
                code: netbore_codes::ErrorCode::PortInUse,
                ..
            }) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other.expect("a reclaim"),
        }
    };
    let session = netbore_transport::tcp::connect(agent, Default::default())
        .await
        .unwrap();
    let (session, _hello, reply) =
        common::hello::hello_on(session, vec![created.ephemeral_token]).await;
    assert!(matches!(reply, HelloReply::Ok { .. }), "{reply:?}");
    session
        .close_and_flush(netbore_mux::GoAwayCode::NORMAL, Duration::from_secs(1))
        .await;
}

/// One viewer connection from `source`: a ping echoed, then closed.
async fn viewer(public: SocketAddr, source: std::net::IpAddr) -> std::io::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut s = socket.connect(public).await?;
    s.write_all(b"ping").await?;
    let mut back = [0u8; 4];
    s.read_exact(&mut back).await?;
    assert_eq!(&back, b"ping");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_agents_and_a_hundred_thousand_viewers_leave_nothing_behind() {
    let origin = echo_origin().await;
    // Tunnel ports below the system's ephemeral range: with any free port, the
    // port a tunnel gives up between two reclaims can be taken meanwhile by one of
    // the test's own outgoing connections, and the reclaim then finds it in use for
    // as long as that connection lives.
    let server = Server::start_with(&[
        "--tcp-ports",
        "20000-20999",
        "--metrics-addr",
        "127.0.0.1:0",
        "--api-rate",
        "100000",
        "--api-burst",
        "100000",
        "--max-tunnels-per-anonymous-ip",
        "100",
    ]);
    let server_metrics = metrics_of(&server.listening);
    let agent_metrics_port = common::free_port();
    let agent_metrics = format!("127.0.0.1:{agent_metrics_port}");
    let agent = Agent::start(
        &server,
        &origin.to_string(),
        &["--transport", "tcp", "--metrics-addr", &agent_metrics],
    );
    let agent_metrics: SocketAddr = agent_metrics.parse().unwrap();

    // Warm up both paths once, then take the baseline.
    let url: netbore_agent::ControlUrl = server.url().parse().unwrap();
    // Eight owners (API keys), one tunnel each: one owner may hold 2,048 live
    // tokens, and each worker spends 1,250 within seconds.
    let mut recreate = Vec::new();
    for i in 0..8 {
        let key = server.create_key(&format!("churn-{i}"));
        let created = netbore_agent::control_client::create_tunnel(
            &url,
            None,
            false,
            Some(&key),
            &CreateTunnelRequest::tcp(None),
        )
        .await
        .unwrap();
        recreate.push((key, created.recreate_token.unwrap()));
    }
    for (key, token) in &recreate {
        cycle(url.clone(), server.agent, key.clone(), token.clone()).await;
    }
    for _ in 0..100 {
        viewer(agent.public, [127, 0, 0, 1].into()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = footprint(server_metrics).await;
    let agent_base = footprint(agent_metrics).await;

    // 10,000 agent sessions, eight at a time (one tunnel each, reclaimed each time).
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for (key, token) in recreate.clone() {
        let done = done.clone();
        let (url, agent_addr) = (url.clone(), server.agent);
        workers.spawn(async move {
            for _ in 0..AGENT_CYCLES / 8 {
                cycle(url.clone(), agent_addr, key.clone(), token.clone()).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), AGENT_CYCLES as u64);
    let agents_took = started.elapsed();

    // 100,000 viewers, sixteen at a time, each from an address of its own worker.
    let started = Instant::now();
    let failed = Arc::new(AtomicU64::new(0));
    for w in 0..16u8 {
        let public = agent.public;
        let failed = failed.clone();
        workers.spawn(async move {
            for _ in 0..VIEWERS / 16 {
                if let Err(e) = viewer(public, [127, 0, 1, 10 + w].into()).await
                    && failed.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!("first failed viewer: {e}");
                }
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
    let failed = failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "{failed} of {VIEWERS} viewers failed; agent:\n{}\nserver:\n{}",
        tail(&agent.proc.stderr()),
        tail(&server.proc.stderr())
    );
    let viewers_took = started.elapsed();

    let after = settles(server_metrics, base, 4).await;
    let agent_after = settles(agent_metrics, agent_base, 4).await;
    eprintln!(
        "agents {agents_took:?}, viewers {viewers_took:?}; server {base:?} -> {after:?}; agent {agent_base:?} -> {agent_after:?}"
    );
    for (who, base, after) in [("server", base, after), ("agent", agent_base, agent_after)] {
        assert!(
            after.tasks <= base.tasks + 4,
            "{who}: tasks {} -> {}",
            base.tasks,
            after.tasks
        );
        assert!(
            after.fds <= base.fds + 4,
            "{who}: descriptors {} -> {}",
            base.fds,
            after.fds
        );
        // Memory: within 16 MiB of the baseline (the allocator keeps some).
        assert!(
            after.rss <= base.rss + 16 * 1024 * 1024,
            "{who}: RSS {} -> {} bytes",
            base.rss,
            after.rss
        );
    }
    drop(agent);
}
