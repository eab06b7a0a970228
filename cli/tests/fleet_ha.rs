//! Agents on several nodes (`--ha`, `docs/protocols/fleet.md`, "Agents on several
//! nodes"): in a fleet of three, an agent holds sessions on two nodes by default, and
//! the directory lists both as holders of its tunnel. A node killed with SIGKILL
//! costs no request sent through the others: first the holder the third node relays
//! to (the relay turns to the other holder, and a request in flight on the dead link
//! is sent again there), then the node of the agent's first session (its standby
//! session takes over with nothing to reclaim). After each kill the agent holds a
//! session on every live node it can again.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::balancer::{Balancer, Load, Tally};
use common::fleet::{Fleet, IPS};
use common::web;

/// The nodes serving the tunnel at `public_url`, newest claim first, as the
/// operator's listing (`netbore tunnels list --redis`) shows them.
fn holders(fleet: &Fleet, public_url: &str) -> Vec<usize> {
    let tunnels = fleet.tunnels_listed();
    let Some(nodes) = tunnels
        .iter()
        .find(|t| t["public_url"] == public_url)
        .and_then(|t| t["node"].as_str())
    else {
        return Vec::new();
    };
    nodes
        .split(',')
        .map(|id| {
            IPS.iter()
                .position(|ip| id.starts_with(&format!("{ip}:")))
                .unwrap_or_else(|| panic!("node {id} is one of the fleet's"))
        })
        .collect()
}

/// Every node's log and the agent's, for a failure's message.
fn logs(fleet: &Fleet, agent: &common::HttpAgent) -> String {
    let mut all = String::new();
    for (i, node) in fleet.nodes.iter().enumerate() {
        all += &format!("node {i} ({}):\n{}\n", node.ip, node.server.proc.stderr());
    }
    all + &format!("agent:\n{}", agent.proc.stderr())
}

/// Waits (20 s at most) until the tunnel is served by `n` live nodes, none of them
/// in `dead`, and answers them.
async fn held_by(
    fleet: &Fleet,
    agent: &common::HttpAgent,
    public_url: &str,
    n: usize,
    dead: &[usize],
) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = holders(fleet, public_url);
        if now.len() == n && now.iter().all(|i| !dead.contains(i)) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the tunnel is served by {n} live nodes (now {now:?}, dead {dead:?}); agent:\n{}",
            agent.proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends load through `through` for `before`, kills node `victim` with SIGKILL,
/// goes on for `after`, and answers what the load saw.
async fn kill_under_load(
    fleet: &Fleet,
    host: &str,
    through: Vec<SocketAddr>,
    victim: usize,
    before: Duration,
    after: Duration,
) -> Arc<Tally> {
    let balancer = Arc::new(Balancer {
        ready: through.iter().map(|_| AtomicBool::new(true)).collect(),
        http: through,
        next: AtomicUsize::new(0),
    });
    let running = Load::start(&balancer, host, &[true, true, true, false, false]);
    let tally = running.tally.clone();
    tokio::time::sleep(before).await;
    fleet.nodes[victim].server.proc.signal("KILL");
    let at_kill = tally.ok.load(Ordering::Relaxed);
    tokio::time::sleep(after).await;
    running.finish().await;
    assert!(
        tally.ok.load(Ordering::Relaxed) > at_kill + 200,
        "the load went on after node {victim} died"
    );
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_nodes_that_hold_a_tunnel_fails_no_request_through_the_others() {
    let origin = web::start_origin().await;
    let fleet = Fleet::start(&[]);
    let agent = common::HttpAgent::start(
        &fleet.nodes[0].server,
        &origin.addr.to_string(),
        &["--name", "ha"],
    );
    let host = agent.host.clone();
    let public_url = format!("http://{host}");
    // The first session is on node 0; the standby, by default, on one other node.
    let both = held_by(&fleet, &agent, &public_url, 2, &[]).await;
    assert!(both.contains(&0), "{both:?}");
    let standby = both[0];
    let relay = (0..3).find(|i| !both.contains(i)).unwrap();
    for i in 0..3 {
        let addr = fleet.http_addr(i);
        let deadline = Instant::now() + Duration::from_secs(10);
        while web::get(addr, &host, "/hello").await.status != 200 {
            assert!(
                Instant::now() < deadline,
                "the tunnel answers through {addr}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // 1. The newest holder, the one the third node relays to, dies.
    let through = vec![fleet.http_addr(0), fleet.http_addr(relay)];
    let tally = kill_under_load(
        &fleet,
        &host,
        through,
        standby,
        Duration::from_secs(1),
        Duration::from_secs(7),
    )
    .await;
    tally.assert_none_failed_or("the standby's node died", || logs(&fleet, &agent));
    // The agent holds a session on the relaying node now too.
    let again = held_by(&fleet, &agent, &public_url, 2, &[standby]).await;
    assert!(again.contains(&0) && again.contains(&relay), "{again:?}");

    // 2. The node of the agent's first session dies: the standby takes over.
    let tally = kill_under_load(
        &fleet,
        &host,
        vec![fleet.http_addr(relay)],
        0,
        Duration::from_secs(1),
        Duration::from_secs(7),
    )
    .await;
    tally.assert_none_failed_or("the first session's node died", || logs(&fleet, &agent));
    held_by(&fleet, &agent, &public_url, 1, &[standby, 0]).await;
    let log = agent.proc.stderr();
    assert!(
        log.contains("a standby session takes over"),
        "the agent promoted its standby session:\n{log}"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_of_two_a_drain_promotes_the_standby_and_the_agent_comes_back_to_both() {
    let origin = web::start_origin().await;
    let mut fleet = Fleet::start_n(2, &[]);
    let agent = common::HttpAgent::start(
        &fleet.nodes[0].server,
        &origin.addr.to_string(),
        &["--name", "pair"],
    );
    let host = agent.host.clone();
    let public_url = format!("http://{host}");
    held_by(&fleet, &agent, &public_url, 2, &[]).await;

    // Node 0, the first session's, drains under load through node 1.
    let balancer = Arc::new(Balancer {
        ready: vec![AtomicBool::new(true)],
        http: vec![fleet.http_addr(1)],
        next: AtomicUsize::new(0),
    });
    let running = Load::start(&balancer, &host, &[true, false]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.nodes[0].server.proc.signal("TERM");
    let code = fleet.nodes[0]
        .server
        .proc
        .wait_exit(Duration::from_secs(40));
    assert_eq!(code, Some(0), "node 0 drained and exited 0");
    let tally = running.finish().await;
    tally.assert_none_failed("node 0 drained");
    let log = agent.proc.stderr();
    assert!(
        log.contains("takes over"),
        "the standby on node 1 took over:\n{log}"
    );

    // Node 0 back: the agent, still running, holds a standby there again.
    fleet.restart(0);
    held_by(&fleet, &agent, &public_url, 2, &[]).await;
    assert_eq!(
        web::get(fleet.http_addr(0), &host, "/hello").await.status,
        200
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_given_several_servers_starts_on_the_next_when_the_first_is_down() {
    let origin = web::start_origin().await;
    let mut fleet = Fleet::start_n(2, &[]);
    let (first, second) = (fleet.nodes[0].server.url(), fleet.nodes[1].server.url());
    // The first --server is gone before the agent starts: nothing told the agent of
    // the second but its own command line.
    fleet.nodes[0].server.proc.kill();
    let mut agent = common::Proc::spawn(&[
        "http",
        &origin.addr.to_string(),
        "--server",
        &first,
        "--server",
        &second,
        "--name",
        "several",
        "--ha",
        "1",
    ]);
    let online = agent.expect_event("online", Duration::from_secs(30));
    assert_eq!(
        online["public_url"],
        format!("http://several.localhost:{}", fleet.http),
        "{online}"
    );
    let r = web::get(
        fleet.http_addr(1),
        &format!("several.localhost:{}", fleet.http),
        "/hello",
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello /hello"));
    assert_eq!(holders(&fleet, online["public_url"].as_str().unwrap()), [1]);
    agent.kill();
}
