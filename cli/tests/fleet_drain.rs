//! A rolling restart of a three-node fleet under load (`docs/deploy.md`,
//! "Draining a node"): each node in turn gets SIGTERM, drains (its agent moves to
//! another node before the old session goes, in-flight requests finish), exits 0 and
//! starts again, while clients send keep-alive and new-connection requests through
//! every node a readiness check calls ready, as a load balancer would. Not one
//! request fails, and a slow request in flight on each restarted node completes.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::balancer::{Balancer, Load, health_checks};
use common::fleet::{Fleet, IPS};
use common::web;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_under_load_fails_no_request() {
    let origin = web::start_origin().await;
    let mut fleet = Fleet::start(&[]);
    let agent = common::HttpAgent::start(
        &fleet.nodes[0].server,
        &origin.addr.to_string(),
        &["--name", "roll"],
    );
    let host = agent.host.clone();
    let http: Vec<SocketAddr> = (0..3).map(|i| fleet.http_addr(i)).collect();
    let metrics: Vec<SocketAddr> = IPS
        .iter()
        .map(|ip| format!("{ip}:{}", fleet.metrics).parse().unwrap())
        .collect();
    for addr in &http {
        let deadline = Instant::now() + Duration::from_secs(10);
        while web::get(*addr, &host, "/hello").await.status != 200 {
            assert!(
                Instant::now() < deadline,
                "the tunnel answers through {addr}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let balancer = Arc::new(Balancer {
        http: http.clone(),
        ready: (0..3).map(|_| AtomicBool::new(true)).collect(),
        next: AtomicUsize::new(0),
    });
    let mut running = Load::start(&balancer, &host, &[true, true, true, false, false]);
    let tally = running.tally.clone();
    let stop = running.stop.clone();
    running
        .tasks
        .spawn(health_checks(balancer.clone(), metrics, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    for (k, &slow_addr) in http.iter().enumerate() {
        let before = tally.ok.load(Ordering::Relaxed);
        // A request the origin answers after 3 s, in flight on the node restarted.
        let slow_host = host.clone();
        let slow = tokio::spawn(async move { web::get(slow_addr, &slow_host, "/slow/3000").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let node = &mut fleet.nodes[k];
        let status = std::process::Command::new("kill")
            .args(["-TERM", &node.server.proc.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let code = node.server.proc.wait_exit(Duration::from_secs(40));
        let stopped = node.server.proc.stderr();
        assert_eq!(
            code,
            Some(0),
            "node {k} drained and exited 0; stderr:\n{stopped}\nagent:\n{}",
            agent.proc.stderr()
        );
        let slow = slow.await.unwrap();
        assert_eq!(
            (slow.status, slow.text().as_str()),
            (200, "slow answer"),
            "the slow request on node {k} completed; node {k} said:\n{stopped}\nagent:\n{}",
            agent.proc.stderr()
        );
        fleet.restart(k);
        // Back in the balancer, and the tunnel answers through it again.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !balancer.ready[k].load(Ordering::Acquire)
            || web::get(slow_addr, &host, "/hello").await.status != 200
        {
            assert!(
                Instant::now() < deadline,
                "node {k} serves again after its restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            tally.ok.load(Ordering::Relaxed) > before + 100,
            "the load went on while node {k} restarted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tally = running.finish().await;
    tally.assert_none_failed("a rolling restart");
    let ok = tally.ok.load(Ordering::Relaxed);
    assert!(ok > 1000, "only {ok} requests went through");
    drop(agent);
}
