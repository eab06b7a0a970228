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

/// The node a tunnel moved away from (it drains) still relays, to the session the
/// agent moved from, a stream that a node which has not yet heard of the move sends
/// it: refusing that stream would fail a request no origin saw. A stream for a
/// tunnel it does not serve at all is answered "not held", so the relaying node can
/// try another holder. A late node is played by the test: it opens a fleet link to
/// node 0 with the fleet's secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_a_tunnel_moved_from_relays_a_late_node_s_stream_to_the_session_it_left() {
    use netbore_transport::link::{LinkRoute, link_proof};
    use netbore_transport::proto::StreamHeader;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let origin = web::start_origin().await;
    // Node 0 lingers while draining, so it is there to be reached after the move.
    let fleet = Fleet::start_n(2, &["--drain-timeout", "30", "--drain-linger", "10"]);
    let agent = common::HttpAgent::start(
        &fleet.nodes[0].server,
        &origin.addr.to_string(),
        &["--name", "late"],
    );
    // And a TCP tunnel, whose port at node 0 must stay open after the move.
    let (echo, _echo) = netbore_test_support::echo_origin().await;
    let tcp_agent = common::Proc::spawn(&[
        "tcp",
        &echo.to_string(),
        "--server",
        &fleet.nodes[0].server.url(),
    ]);
    let online = tcp_agent.expect_event("online", Duration::from_secs(20));
    let port: u16 = online["public_url"]
        .as_str()
        .and_then(|u| u.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap();
    // Both served by both nodes: node 0 (the first sessions) and node 1 (standbys).
    let urls = [
        format!("http://{}", agent.host),
        online["public_url"].as_str().unwrap().to_string(),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = fleet.tunnels_listed();
        let nodes = |url: &str| {
            listed
                .iter()
                .find(|t| t["public_url"] == url)
                .and_then(|t| t["node"].as_str())
                .map_or(0, |n| n.split(',').count())
        };
        if urls.iter().all(|u| nodes(u) == 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both nodes serve both tunnels: {listed:?}; agents:\n{}\n{}",
            agent.proc.stderr(),
            tcp_agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The proof's key is the secret's text as stored (`docs/protocols/fleet.md`).
    let secret = fleet
        .redis
        .get("netbore:{fleet}:secret")
        .expect("the fleet has a link secret")
        .into_bytes();
    let node0 = &fleet.nodes[0].server;
    let to = node0.listening["node"].as_str().unwrap();
    let proof = link_proof(&secret, "late-node", to);
    let (link, hello, reply) = common::hello::link_hello(node0, "late-node", proof).await;
    assert!(matches!(reply, HelloReply::Ok { .. }), "{reply:?}");
    let viewer = StreamHeader {
        slot: 0,
        viewer: "192.0.2.7:40000".parse().unwrap(),
    };

    // A stream for an HTTP tunnel node 0 does not serve is answered "not held" where
    // the agent's status would be: the relaying node then tries another holder.
    let mut stream = link.open().await.unwrap();
    let mut head = LinkRoute("http:nowhere".into()).encode().unwrap();
    head.extend_from_slice(&viewer.encode());
    head.extend_from_slice(b"GET / HTTP/1.1\r\nhost: nowhere\r\n\r\n");
    stream.write_all(&head).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(1))), "{read:?}");
    assert_eq!(answer, [proto::ORIGIN_NOT_HELD]);

    node0.proc.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while node0
        .proc
        .stderr()
        .matches("tunnel moved to another node")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "node 0 lets both tunnels go to node 1; node 0 said:\n{}\nagents:\n{}\n{}",
            node0.proc.stderr(),
            agent.proc.stderr(),
            tcp_agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved = Instant::now();

    // The late node relays a viewer's request as if node 0 still held the tunnel.
    let mut stream = link.open().await.unwrap();
    let mut head = LinkRoute("http:late".into()).encode().unwrap();
    head.extend_from_slice(&viewer.encode());
    head.extend_from_slice(
        format!(
            "GET /late HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            agent.host
        )
        .as_bytes(),
    );
    stream.write_all(&head).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        matches!(read, Ok(Ok(_))) && answer.first() == Some(&proto::ORIGIN_CONNECTED),
        "the stream reached the agent ({read:?}): {text:?}; node 0 said:\n{}",
        node0.proc.stderr()
    );
    assert!(
        text.contains("HTTP/1.1 200") && text.ends_with("hello /late"),
        "{text:?}"
    );

    // The TCP tunnel's port at node 0 stays open and relays to node 1, also once its
    // port's hand-over has had time to lapse (a second).
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(moved.elapsed())).await;
    let at_node0: SocketAddr = format!("{}:{port}", IPS[0]).parse().unwrap();
    assert!(
        common::echoes(at_node0).await,
        "node 0's port of the moved TCP tunnel echoes; node 0 said:\n{}",
        node0.proc.stderr()
    );
    drop((stream, hello, link));
    drop((agent, tcp_agent));
}
