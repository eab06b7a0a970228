//! `--fleet`: the node-to-node hop of a fleet (`docs/protocols/fleet.md`). Two nodes
//! share a `redis-server` and an agent serves an HTTP tunnel on the first; viewers go
//! through the holder, or through the other node, which relays every request over
//! its link. Each contender gets its own Redis and nodes, so their CPU is their own.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::{Contender, Proc, free_port, netbore_server_with, spawn_quiet};

/// A fleet of two nodes of `bin` with an HTTP tunnel on the first, viewed through
/// the first (`hop` false) or the second, named `label` and which; the agent on
/// `transport` (trusting the first node's development CA), else on what it picks.
/// `None` when `redis-server` is not installed.
pub(crate) async fn http(
    label: &str,
    bin: &std::path::Path,
    origin: SocketAddr,
    data: &str,
    hop: bool,
    transport: Option<&str>,
) -> Option<Contender> {
    let port = free_port();
    let dir = format!("{data}/redis");
    std::fs::create_dir_all(&dir).ok()?;
    let redis = spawn_quiet(
        "redis-server",
        &[
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("redis://127.0.0.1:{port}/0");
    let node =
        |n: &str| netbore_server_with(bin, "localhost", &format!("{data}/{n}"), &["--redis", &url]);
    let (holder, holding) = node("a");
    let (other, relaying) = node("b");
    let control = format!("http://{}", holding["control"].as_str()?);
    let state = format!("{data}/agent-state");
    // One session (`NETBORE_HA=1`): the tunnel is held by the first node only, so
    // viewers through the second are relayed.
    let origin = origin.to_string();
    let ca = format!("{data}/a/ca.pem");
    let mut args = vec!["http", &origin, "--server", &control, "--state-dir", &state];
    if let Some(t) = transport {
        args.extend_from_slice(&["--transport", t, "--ca", &ca]);
    }
    let agent = Proc::spawn_env(bin, &args, &[("NETBORE_HA", "1")]);
    let online = agent.wait_for("online");
    let host = online["public_url"]
        .as_str()?
        .trim_start_matches("http://")
        .to_string();
    let (entry, entry_name) = if hop {
        (&relaying, "b")
    } else {
        (&holding, "a")
    };
    let public: SocketAddr = entry["http"].as_str()?.parse().ok()?;
    // The other node learns the route from the directory within moments.
    if !answers(public, &host).await {
        eprintln!("the fleet's tunnel did not answer through node {entry_name}");
        return None;
    }
    let (name, procs) = if hop {
        ("via another node", vec![other, agent, holder, redis])
    } else {
        ("via the holder", vec![holder, agent, other, redis])
    };
    Some(Contender {
        name: format!("{label} {name}"),
        procs,
        public,
        control: None,
        http_host: Some(host),
        inspector: None,
    })
}

/// The fleet's two contenders of `bin` (via the holder, via another node), and of
/// `baseline` too when given: the hop's cost in both builds, data under `dd`.
pub(crate) async fn contenders(
    bin: &std::path::Path,
    baseline: Option<&std::path::Path>,
    origin: SocketAddr,
    dd: &str,
    agent_over: Option<&str>,
) -> Vec<Contender> {
    let builds = std::iter::once(("netbore http", bin, "fleet"))
        .chain(baseline.map(|b| ("baseline netbore http", b, "baseline-fleet")));
    let mut contenders = Vec::new();
    for (label, path, dir) in builds {
        for hop in [false, true] {
            let data = format!("{dd}/{dir}-{hop}");
            match http(label, path, origin, &data, hop, agent_over).await {
                Some(c) => contenders.push(c),
                None => eprintln!(
                    "a fleet contender did not start (it needs redis-server: apt-get install redis-server)"
                ),
            }
        }
    }
    contenders
}

/// Whether `GET /1k` for `host` through `public` answers 200 within ten seconds.
async fn answers(public: SocketAddr, host: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = tokio::net::TcpStream::connect(public).await {
            let request = format!("GET /1k HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut head = [0u8; 12];
            if s.write_all(request.as_bytes()).await.is_ok()
                && s.read_exact(&mut head).await.is_ok()
                && head.ends_with(b" 200")
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
