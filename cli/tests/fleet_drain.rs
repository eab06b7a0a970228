//! A rolling restart of a three-node fleet under load (`docs/deploy.md`,
//! "Draining a node"): each node in turn gets SIGTERM, drains (its agent moves to
//! another node before the old session goes, in-flight requests finish), exits 0 and
//! starts again, while clients send keep-alive and new-connection requests through
//! every node a readiness check calls ready, as a load balancer would. Not one
//! request fails, and a slow request in flight on each restarted node completes.
//! A draining node sends an agent's reclaim to the other nodes without cutting the
//! session the agent moves from.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::balancer::{Balancer, Load, health_checks};
use common::fleet::{Fleet, IPS};
use common::web;
use netbore_agent::control_client::create_tunnel;
use netbore_control::api::CreateTunnelRequest;
use netbore_transport::proto::{self, EdgeNotice, HelloReply};

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
        node.server.proc.signal("TERM");
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
    tally.assert_none_failed_or("a rolling restart", || {
        let mut all = String::new();
        for (i, node) in fleet.nodes.iter().enumerate() {
            all += &format!(
                "node {i} since its restart:\n{}\n",
                node.server.proc.stderr()
            );
        }
        all + &format!("agent:\n{}", agent.proc.stderr())
    });
    let ok = tally.ok.load(Ordering::Relaxed);
    assert!(ok > 1000, "only {ok} requests went through");
    drop(agent);
}

/// A draining node asked to reclaim a tunnel its Edge serves (an agent that reaches
/// the fleet through one name, a load balancer's, comes back to it) answers with the
/// other nodes only and keeps its session serving: placing the tunnel again here
/// would cut the very session the agent moves from, streams in flight and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_sends_a_reclaim_elsewhere_and_keeps_serving() {
    let mut fleet = Fleet::start_n(2, &["--drain-timeout", "30"]);
    let node0 = &fleet.nodes[0].server;
    let url = node0.url().parse().unwrap();
    // Node 0 knows node 1 at its next heartbeat, within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let created = create_tunnel(&url, None, false, None, &CreateTunnelRequest::tcp(None))
        .await
        .unwrap();
    assert_eq!(created.edges.len(), 2, "node 1 is a candidate");
    let session = netbore_transport::tcp::connect(node0.agent, Default::default())
        .await
        .unwrap();
    let (session, mut hello, reply) =
        common::hello::hello_on(session, vec![created.ephemeral_token]).await;
    assert!(matches!(reply, HelloReply::Ok { .. }), "{reply:?}");

    node0.proc.signal("TERM");
    let readyz: SocketAddr = format!("{}:{}", IPS[0], fleet.metrics).parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while web::get(readyz, "metrics", "/readyz").await.status != 503 {
        assert!(Instant::now() < deadline, "node 0 drains");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let reclaim = CreateTunnelRequest {
        recreate_token: created.recreate_token.clone(),
        ..CreateTunnelRequest::tcp(None)
    };
    let again = create_tunnel(&url, None, false, None, &reclaim)
        .await
        .expect("the draining node answers the reclaim");
    assert_eq!(again.tunnel_id, created.tunnel_id);
    assert_eq!(again.public_url, created.public_url);
    let node1 = format!("{}:{}", IPS[1], fleet.agent);
    let edges: Vec<&str> = again.edges.iter().map(|e| e.addr.as_str()).collect();
    assert_eq!(
        edges,
        [node1.as_str()],
        "only the other node is a candidate"
    );

    // The session on node 0 is not told its tunnel was replaced, and node 0 still
    // serves the tunnel in the fleet's directory.
    let quiet = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match proto::read_message::<EdgeNotice>(&mut hello).await {
                Ok(EdgeNotice::TunnelClosed { code, message, .. }) => {
                    panic!("node 0 closed the tunnel ({code:?}): {message}")
                }
                Ok(_) => {}
                Err(e) => panic!("the hello stream ended: {e}"),
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "no notice closed the tunnel");
    let listed = fleet.tunnels_listed();
    let entry = listed
        .iter()
        .find(|t| t["tunnel_id"] == created.tunnel_id.as_str())
        .unwrap_or_else(|| panic!("the tunnel is listed: {listed:?}"));
    assert_eq!(
        entry["node"],
        format!("{}:{}", IPS[0], fleet.agent),
        "node 0 still serves the tunnel: {listed:?}"
    );
    assert!(!session.is_closed());

    // Another agent's reclaim (from another address) replaces the session here as
    // anywhere: the last reclaim wins, draining or not.
    let token = created.recreate_token.as_deref().unwrap();
    let reclaim = serde_json::json!({"protocol": "tcp", "recreate_token": token});
    let control = node0.control;
    let answer = tokio::task::spawn_blocking(move || {
        let from = "127.0.0.9".parse().ok();
        common::http_request_from(
            from,
            control,
            "POST",
            "/tunnels/create",
            None,
            Some(&reclaim),
        )
    })
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match proto::read_message::<EdgeNotice>(&mut hello).await {
                Ok(EdgeNotice::TunnelClosed { code, .. }) => return code,
                Ok(_) => {}
                Err(e) => panic!("the hello stream ended: {e}"),
            }
        }
    })
    .await
    .expect("the session is told its tunnel was replaced");
    assert_eq!(closed, netbore_codes::ErrorCode::Replaced);
    drop((session, hello));
    let code = fleet.nodes[0]
        .server
        .proc
        .wait_exit(Duration::from_secs(35));
    assert_eq!(code, Some(0), "node 0 exits once its session is gone");
}
