//! Three `netbore server` nodes on 127.0.0.2, 127.0.0.3 and 127.0.0.4 (the same port
//! numbers) sharing one real `redis-server`: a tunnel held by one node answers
//! through all three over the node-to-node link, candidates list the other nodes,
//! and when the holding node is killed the agent moves to a survivor with the same
//! URL.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fleet::{Fleet, IPS};
use common::web::{self, Reply};
use common::{TempDir, free_port};

async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    web::request(addr, "GET", host, path, &[], Vec::new()).await
}

/// Polls `addr` until the tunnel answers 200, for at most `limit`.
async fn answers_within(addr: SocketAddr, host: &str, limit: Duration) -> Reply {
    let start = Instant::now();
    loop {
        let r = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => Some(web::request_on(s, "GET", host, "/hello", &[], Vec::new()).await),
            Err(_) => None,
        };
        match r {
            Some(r) if r.status == 200 => return r,
            other if start.elapsed() > limit => {
                panic!("{host} did not answer through {addr} within {limit:?}: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_tunnel_held_by_one_node_answers_through_all_three() {
    let origin = web::start_origin().await;
    let fleet = Fleet::start(&["--max-tunnels-per-anonymous-ip", "50"]);
    let first = &fleet.nodes[0].server;
    // One session (`--ha 1`): one node holds the tunnel, the others relay.
    let agent = common::HttpAgent::start(
        first,
        &origin.addr.to_string(),
        &["--name", "shop", "--ha", "1"],
    );
    let host = format!("shop.localhost:{}", fleet.http);
    assert_eq!(agent.host, host);

    for i in 0..3 {
        let r = answers_within(fleet.http_addr(i), &host, Duration::from_secs(5)).await;
        assert_eq!(r.text(), "hello /hello", "through node {i}");
        // The viewer's address reaches the origin, not the relaying node's.
        let r = get(fleet.http_addr(i), &host, "/headers").await;
        assert_eq!(r.status, 200);
        let headers = r.json();
        assert_eq!(
            headers["x-forwarded-for"], "127.0.0.1",
            "through node {i}: {headers}"
        );
    }
    // A 1 MiB body passes the link both ways intact.
    let body: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let r = web::request(
        fleet.http_addr(2),
        "POST",
        &host,
        "/echo",
        &[],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the echoed body differs");
    // Another node will not give the name to a stranger.
    let taken = fleet.nodes[1].server.api(
        "POST",
        "/tunnels/create",
        None,
        Some(&serde_json::json!({"protocol": "http", "name": "shop"})),
    );
    taken.assert_error(409, "name_taken");
    // A name no node holds is a 404 everywhere.
    let r = get(
        fleet.http_addr(1),
        &format!("nobody.localhost:{}", fleet.http),
        "/",
    )
    .await;
    assert_eq!(r.status, 404);

    // The create answer lists every node, the asked one first, each with its control
    // API.
    let edges = fleet.candidates(0);
    let addrs: Vec<&str> = edges.iter().map(|e| e["addr"].as_str().unwrap()).collect();
    assert_eq!(addrs.len(), 3, "{edges:?}");
    assert_eq!(addrs[0], format!("127.0.0.2:{}", fleet.agent));
    for ip in IPS {
        assert!(
            addrs.contains(&format!("{ip}:{}", fleet.agent).as_str()),
            "{edges:?}"
        );
    }
    for e in &edges {
        let url = e["control_url"].as_str().unwrap();
        let ip = e["addr"].as_str().unwrap().split(':').next().unwrap();
        assert_eq!(url, format!("http://{ip}:{}", fleet.control));
    }

    // The operator's listing names the node serving each tunnel; the candidates'
    // tunnels, whose agents never came, are offline.
    let tunnels = fleet.tunnels_listed();
    let shop: Vec<_> = tunnels
        .iter()
        .filter(|t| t["public_url"] == format!("http://{host}"))
        .collect();
    assert_eq!(shop.len(), 1, "{tunnels:?}");
    assert_eq!(
        shop[0]["node"],
        format!("127.0.0.2:{}", fleet.agent),
        "{tunnels:?}"
    );
    assert!(
        tunnels.iter().filter(|t| t["node"].is_null()).count() >= 1,
        "{tunnels:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_holding_node_moves_the_tunnel_with_its_url_to_a_survivor() {
    let origin = web::start_origin().await;
    let mut fleet = Fleet::start(&["--max-tunnels-per-anonymous-ip", "50"]);
    assert_eq!(fleet.candidates(0).len(), 3);
    // The agent knows only the first node; it learns the others from it. One
    // session (`--ha 1`), so its failover is a reclaim at a survivor (fleet_ha.rs
    // kills nodes under an agent with sessions on two).
    let mut agent = common::HttpAgent::spawn(
        &fleet.nodes[0].server,
        &origin.addr.to_string(),
        &["--name", "shop", "--transport", "tcp", "--ha", "1"],
    );
    let online = agent.expect_event("online", Duration::from_secs(20));
    let url = online["public_url"].as_str().unwrap().to_string();
    let host = format!("shop.localhost:{}", fleet.http);
    answers_within(fleet.http_addr(2), &host, Duration::from_secs(5)).await;

    // kill -9 of the node holding the tunnel, which is also the agent's --server.
    let killed = Instant::now();
    fleet.nodes[0].server.proc.kill();
    let again = agent.expect_event("online", Duration::from_secs(15));
    assert_eq!(again["public_url"], url.as_str(), "{again}");
    for i in [1, 2] {
        let r = answers_within(fleet.http_addr(i), &host, Duration::from_secs(10)).await;
        assert_eq!(r.text(), "hello /hello");
    }
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the tunnel answered again after {took:?}"
    );
    agent.kill();
}

/// Polls until a TCP tunnel echoes through `addr`, for at most `limit`.
async fn echoes_within(addr: SocketAddr, limit: Duration) {
    let start = Instant::now();
    while !common::echoes(addr).await {
        assert!(
            start.elapsed() < limit,
            "no echo through {addr} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_tunnel_answers_on_its_port_at_every_node_and_keeps_it_through_failover() {
    let (origin, _echo) = netbore_test_support::echo_origin().await;
    let mut fleet = Fleet::start(&["--max-tunnels-per-anonymous-ip", "50"]);
    assert_eq!(fleet.candidates(0).len(), 3);
    let mut agent = common::Proc::spawn(&[
        "tcp",
        &origin.to_string(),
        "--server",
        &fleet.nodes[0].server.url(),
        "--transport",
        "tcp",
    ]);
    let online = agent.expect_event("online", Duration::from_secs(20));
    let url = online["public_url"].as_str().unwrap().to_string();
    let port: u16 = url.rsplit_once(':').unwrap().1.parse().unwrap();
    for ip in IPS {
        // Every node opens the port within a poll of the directory.
        echoes_within(
            format!("{ip}:{port}").parse().unwrap(),
            Duration::from_secs(5),
        )
        .await;
    }

    // No other node hands the port to another tunnel.
    let taken = fleet.nodes[2].server.api(
        "POST",
        "/tunnels/create",
        None,
        Some(&serde_json::json!({"protocol": "tcp", "remote_port": port})),
    );
    taken.assert_error(409, "port_in_use");

    fleet.nodes[0].server.proc.kill();
    let again = agent.expect_event("online", Duration::from_secs(15));
    assert_eq!(again["public_url"], url.as_str(), "{again}");
    for ip in &IPS[1..] {
        echoes_within(
            format!("{ip}:{port}").parse().unwrap(),
            Duration::from_secs(10),
        )
        .await;
    }
    agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_tokens_and_links_hold_across_nodes_and_redis_down_is_one_clear_answer() {
    use netbore_transport::proto::{ErrorCode, HelloReply};

    let origin = web::start_origin().await;
    let mut fleet = Fleet::start(&["--max-tunnels-per-key", "1"]);
    let keys_dir = TempDir::new("fleet-keys");
    let (code, events) = common::key_cmd(
        &keys_dir,
        &["create", "--label", "one", "--redis", &fleet.redis.url],
    );
    assert_eq!(code, 0, "{events:?}");
    let key = events[0]["key"].as_str().unwrap().to_string();
    let _agent = common::HttpAgent::start(
        &fleet.nodes[0].server,
        &origin.addr.to_string(),
        &["--key", &key, "--name", "one"],
    );
    let host = format!("one.localhost:{}", fleet.http);
    answers_within(fleet.http_addr(1), &host, Duration::from_secs(5)).await;

    // The key's one tunnel is served by node 0: node 1 refuses it a second.
    let second = fleet.nodes[1].server.api(
        "POST",
        "/tunnels/create",
        Some(&key),
        Some(&serde_json::json!({"protocol": "http"})),
    );
    second.assert_error(403, "limit_reached");
    // And lists it as online.
    let listed = fleet.nodes[1]
        .server
        .api("GET", "/tunnels", Some(&key), None);
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.body["tunnels"][0]["status"], "online", "{listed:?}");

    // A token minted by node 2 opens its tunnel at node 1 (every node trusts every
    // live node's signing key), with the public URL node 2 gave it; it is used up in
    // the whole fleet, so replayed at node 0 it is refused. (Node 1 learns node 2's
    // key with its record, at its next heartbeat once both run: until then it
    // refuses the token as signed by a key it does not know, and uses nothing up.)
    let minted = fleet.nodes[2].server.api(
        "POST",
        "/tunnels/create",
        None,
        Some(&serde_json::json!({"protocol": "tcp"})),
    );
    assert_eq!(minted.status, 200, "{minted:?}");
    let token = minted.body["ephemeral_token"].as_str().unwrap().to_string();
    let learnt = Instant::now() + Duration::from_secs(3);
    let (adopted, _stream, reply) = loop {
        let answer = common::hello::open_hello(&fleet.nodes[1].server, vec![token.clone()]).await;
        match &answer.2 {
            HelloReply::Error(e) if e.code == ErrorCode::BadToken && Instant::now() < learnt => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break answer,
        }
    };
    match &reply {
        HelloReply::Ok { tunnels } => {
            assert_eq!(tunnels.len(), 1, "{reply:?}");
            assert_eq!(
                tunnels[0].public_url, minted.body["public_url"],
                "{reply:?}"
            );
        }
        other => panic!("node 1 refused node 2's token: {other:?}"),
    }
    // This session serves the tunnel as an agent would: it echoes every stream. Every
    // node reaches the tunnel on its port, node 2 too, whose own placement of it gives
    // way to a relay once node 1 serves it.
    let serving = adopted.clone();
    tokio::spawn(async move {
        while let Some(mut stream) = serving.accept().await {
            tokio::spawn(async move {
                if netbore_transport::proto::StreamHeader::read(&mut stream)
                    .await
                    .is_ok()
                {
                    let (mut from, mut to) = tokio::io::split(stream);
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                }
            });
        }
    });
    let port: u16 = minted.body["public_url"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    for ip in IPS {
        echoes_within(
            format!("{ip}:{port}").parse().unwrap(),
            Duration::from_secs(5),
        )
        .await;
    }
    for replayed_at in [0, 1] {
        let reply =
            common::hello::hello(&fleet.nodes[replayed_at].server, vec![token.clone()]).await;
        assert!(
            matches!(&reply, HelloReply::Error(e) if e.code == ErrorCode::TokenReused),
            "replayed at node {replayed_at}: {reply:?}"
        );
    }
    // A tunnel deleted on the node that made it does not come back from its unused
    // token at another node: adoption needs the tunnel's record.
    let (code, events) = common::key_cmd(
        &keys_dir,
        &["create", "--label", "two", "--redis", &fleet.redis.url],
    );
    assert_eq!(code, 0, "{events:?}");
    let key2 = events[0]["key"].as_str().unwrap().to_string();
    let made = fleet.nodes[2].server.api(
        "POST",
        "/tunnels/create",
        Some(&key2),
        Some(&serde_json::json!({"protocol": "tcp"})),
    );
    assert_eq!(made.status, 200, "{made:?}");
    let id = made.body["tunnel_id"].as_str().unwrap();
    let deleted = fleet.nodes[2]
        .server
        .api("DELETE", &format!("/tunnels/{id}"), Some(&key2), None);
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let token = made.body["ephemeral_token"].as_str().unwrap().to_string();
    let reply = common::hello::hello(&fleet.nodes[1].server, vec![token]).await;
    assert!(
        matches!(&reply, HelloReply::Error(e) if e.code == ErrorCode::UnknownTunnel),
        "{reply:?}"
    );

    // A token signed by a key no node publishes is refused.
    let stranger = netbore_control::tokens::TokenSigner::generate();
    let (forged, _) = stranger
        .mint(
            "anonymous:127.0.0.1",
            "tun_forged",
            "tcp",
            Some(20001),
            None,
            Duration::from_secs(60),
        )
        .unwrap();
    let reply = common::hello::hello(&fleet.nodes[1].server, vec![forged]).await;
    assert!(
        matches!(&reply, HelloReply::Error(e) if e.code == ErrorCode::BadToken),
        "{reply:?}"
    );

    // Whoever reaches an agent port cannot open a link without the fleet's secret.
    let (_session, _stream, reply) =
        common::hello::link_hello(&fleet.nodes[1].server, "intruder", "00".repeat(32)).await;
    assert!(
        matches!(&reply, HelloReply::Error(e) if e.code == ErrorCode::Unauthorized),
        "{reply:?}"
    );

    // Redis gone: a create is one clear refusal, the live tunnel keeps answering
    // through every node from their copies of the directory.
    // Two nodes asked for one port at once (neither tunnel online yet, so no route
    // tells them apart): the fleet reserves it for the first, the second is refused.
    let port = free_port();
    let first = fleet.nodes[0].server.api(
        "POST",
        "/tunnels/create",
        None,
        Some(&serde_json::json!({"protocol": "tcp", "remote_port": port})),
    );
    assert_eq!(first.status, 200, "{first:?}");
    let second = fleet.nodes[1].server.api(
        "POST",
        "/tunnels/create",
        None,
        Some(&serde_json::json!({"protocol": "tcp", "remote_port": port})),
    );
    second.assert_error(409, "port_in_use");
    // Likewise a name.
    let named = |i: usize| {
        fleet.nodes[i].server.api(
            "POST",
            "/tunnels/create",
            None,
            Some(&serde_json::json!({"protocol": "http", "name": "race"})),
        )
    };
    assert_eq!(named(2).status, 200);
    named(0).assert_error(409, "name_taken");

    let create_at = |i: usize| {
        let made = fleet.nodes[i].server.api(
            "POST",
            "/tunnels/create",
            None,
            Some(&serde_json::json!({"protocol": "tcp"})),
        );
        assert_eq!(made.status, 200, "{made:?}");
        made.body["ephemeral_token"].as_str().unwrap().to_string()
    };
    let (own, foreign) = (create_at(1), create_at(2));
    fleet.redis.kill();
    // A token cannot be used up fleet-wide now. Node 1's own token for a tunnel
    // pending there still opens it (checked against node 1's own record of used
    // ids); another node's token is refused with the store's code.
    let (_own_session, _own_stream, reply) =
        common::hello::open_hello(&fleet.nodes[1].server, vec![own]).await;
    assert!(matches!(&reply, HelloReply::Ok { .. }), "{reply:?}");
    let reply = common::hello::hello(&fleet.nodes[1].server, vec![foreign]).await;
    assert!(
        matches!(&reply, HelloReply::Error(e) if e.code == ErrorCode::StoreUnavailable),
        "{reply:?}"
    );
    let refused = fleet.nodes[1].server.api(
        "POST",
        "/tunnels/create",
        None,
        Some(&serde_json::json!({"protocol": "http"})),
    );
    refused.assert_error(503, "store_unavailable");
    for i in 0..3 {
        let r = get(fleet.http_addr(i), &host, "/hello").await;
        assert_eq!(r.status, 200, "through node {i} with Redis down");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnels_stream_cap_holds_at_its_holder_for_streams_other_nodes_relay() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (origin, _echo) = netbore_test_support::echo_origin().await;
    let fleet = Fleet::start(&["--max-streams-per-tunnel", "2"]);
    let _agent = common::Proc::spawn(&[
        "tcp",
        &origin.to_string(),
        "--server",
        &fleet.nodes[0].server.url(),
        "--transport",
        "tcp",
    ]);
    let online = _agent.expect_event("online", Duration::from_secs(20));
    let url = online["public_url"].as_str().unwrap().to_string();
    let port: u16 = url.rsplit_once(':').unwrap().1.parse().unwrap();
    let at = |i: usize| -> SocketAddr { format!("{}:{port}", IPS[i]).parse().unwrap() };
    for i in 0..3 {
        echoes_within(at(i), Duration::from_secs(5)).await;
    }
    // An open connection that has echoed once (so it holds a stream at the holder).
    // The streams of the echoes above close at the holder moments after their
    // connections do; until then the cap may cut this one, so it tries again.
    let hold = |addr: SocketAddr| async move {
        let start = Instant::now();
        loop {
            // (A connection cut at once fails its connect with a reset.)
            if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                let mut got = [0u8; 4];
                let echoed = s.write_all(b"ping").await.is_ok()
                    && matches!(
                        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await,
                        Ok(Ok(_))
                    );
                if echoed {
                    return s;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no stream came free at the holder within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Two viewers through node 1 take the tunnel's two streams at its holder.
    let _first = hold(at(1)).await;
    let _second = hold(at(1)).await;
    // Node 2 has streams to spare, but the holder does not: the relayed connection
    // is cut without an echo.
    assert!(
        !common::echoes(at(2)).await,
        "a third stream was relayed past the cap"
    );
    drop((_first, _second));
    // Once they end, the tunnel echoes through every node again.
    for i in 0..3 {
        echoes_within(at(i), Duration::from_secs(5)).await;
    }
}

/// Polls `GET /readyz` of node `i` until it answers 200, for at most `limit`.
async fn ready_within(fleet: &Fleet, i: usize, limit: Duration) {
    let addr: SocketAddr = format!("{}:{}", IPS[i], fleet.metrics).parse().unwrap();
    let start = Instant::now();
    loop {
        let status = web::get(addr, "metrics", "/readyz").await.status;
        if status == 200 {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "node {i} was not ready within {limit:?}: /readyz {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_is_filled_again_without_restarting_a_node() {
    let origin = web::start_origin().await;
    let mut fleet = Fleet::start(&["--max-tunnels-per-anonymous-ip", "50"]);
    assert_eq!(fleet.candidates(0).len(), 3);
    let agent_args = |name: &'static str| ["--name", name, "--transport", "tcp", "--ha", "1"];
    // Two tunnels, held by two different nodes.
    let mut agents = Vec::new();
    let mut ids = Vec::new();
    for (node, name) in [(0, "shop"), (1, "blog")] {
        let agent = common::HttpAgent::spawn(
            &fleet.nodes[node].server,
            &origin.addr.to_string(),
            &agent_args(name),
        );
        let online = agent.expect_event("online", Duration::from_secs(20));
        ids.push(online["tunnel_id"].as_str().unwrap().to_string());
        agents.push(agent);
    }
    let host = |name: &str| format!("{name}.localhost:{}", fleet.http);
    for i in 0..3 {
        answers_within(fleet.http_addr(i), &host("shop"), Duration::from_secs(5)).await;
    }

    // Redis comes back with nothing in it (no persistence).
    fleet.redis.kill();
    fleet.redis.restart();
    let back = Instant::now();
    for i in 0..3 {
        ready_within(&fleet, i, Duration::from_secs(10)).await;
        for name in ["shop", "blog"] {
            let r = answers_within(fleet.http_addr(i), &host(name), Duration::from_secs(10)).await;
            assert_eq!(r.text(), "hello /hello");
        }
    }
    // Each holder wrote its tunnel's record back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed: Vec<String> = fleet
            .tunnels_listed()
            .iter()
            .filter_map(|t| t["tunnel_id"].as_str().map(str::to_string))
            .collect();
        if ids.iter().all(|id| listed.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "records back: {listed:?}, wanted {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        back.elapsed() < Duration::from_secs(10),
        "{:?}",
        back.elapsed()
    );
    // New tunnels work, at any node, through every node.
    let news = common::HttpAgent::spawn(
        &fleet.nodes[2].server,
        &origin.addr.to_string(),
        &agent_args("news"),
    );
    news.expect_event("online", Duration::from_secs(20));
    agents.push(news);
    for i in 0..3 {
        answers_within(fleet.http_addr(i), &host("news"), Duration::from_secs(10)).await;
    }
    // Killed, the holder's tunnel is reclaimed at a survivor: the same tunnel (its
    // record was written back), not a new one under the same name.
    fleet.nodes[0].server.proc.kill();
    let again = agents[0].expect_event("online", Duration::from_secs(15));
    assert_eq!(again["tunnel_id"], ids[0].as_str(), "{again}");
    for i in [1, 2] {
        answers_within(fleet.http_addr(i), &host("shop"), Duration::from_secs(10)).await;
    }
    for mut agent in agents {
        agent.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_rate_limit_counts_a_clients_requests_at_every_node() {
    // Each node alone would let a client send 4 at once; the fleet lets it send 4
    // in all (and one more a second).
    let fleet = Fleet::start(&["--api-rate", "1", "--api-burst", "4"]);
    let mut refused = Vec::new();
    let start = Instant::now();
    for i in 0..9 {
        // Three requests at each node: never more than one node's burst.
        let node = i % 3;
        let r = fleet.nodes[node].server.api("GET", "/tunnels", None, None);
        if r.status == 429 {
            r.assert_error(429, "rate_limited");
            assert!(r.header("retry-after").is_some(), "{r:?}");
            refused.push(i);
        } else {
            assert_eq!(r.status, 401, "{r:?}");
        }
    }
    // The burst, and one more for each second the requests took.
    let allowed = 9 - refused.len();
    let most = 4 + start.elapsed().as_secs_f64().ceil() as usize;
    assert!(
        allowed <= most && allowed < 9,
        "the fleet let through {allowed} of 9 requests, at most {most} expected: refused {refused:?}"
    );
    assert!(!refused.contains(&0), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anonymous_limit_per_address_counts_tunnels_online_at_every_node() {
    let origin = web::start_origin().await;
    let fleet = Fleet::start(&["--max-tunnels-per-anonymous-ip", "2"]);
    // Two anonymous tunnels from this address, online at two different nodes.
    let mut agents = Vec::new();
    for (i, name) in [(0, "one"), (1, "two")] {
        let agent = common::HttpAgent::spawn(
            &fleet.nodes[i].server,
            &origin.addr.to_string(),
            &["--name", name, "--transport", "tcp", "--ha", "1"],
        );
        agent.expect_event("online", Duration::from_secs(20));
        agents.push(agent);
    }
    // The third node holds none of them, and still refuses a third.
    let refused = fleet.nodes[2].server.api(
        "POST",
        "/tunnels/create",
        None,
        Some(&serde_json::json!({"protocol": "http"})),
    );
    let message = refused.assert_error(403, "limit_reached");
    assert!(message.contains("already hold 2 live tunnels"), "{message}");
    // One goes offline: the address may have another, at any node.
    agents[0].kill();
    let start = Instant::now();
    loop {
        let made = fleet.nodes[2].server.api(
            "POST",
            "/tunnels/create",
            None,
            Some(&serde_json::json!({"protocol": "http"})),
        );
        if made.status == 200 {
            break;
        }
        made.assert_error(403, "limit_reached");
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the limit still counted the tunnel whose agent was killed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for mut agent in agents {
        agent.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_name_each_node_by_its_id_and_put_its_region_first() {
    let redis = common::redis::RedisServer::start();
    let (control, agent, http) = (free_port(), free_port(), free_port());
    // alpha and gamma in one region, beta in another; gamma advertises a name.
    let flags: [&[&str]; 3] = [
        &["--node-id", "alpha", "--region", "eu"],
        &["--node-id", "beta", "--region", "us"],
        &[
            "--node-id",
            "gamma",
            "--region",
            "eu",
            "--advertise",
            "gamma.example",
        ],
    ];
    let nodes: Vec<_> = IPS
        .iter()
        .zip(flags)
        .map(|(ip, f)| {
            let mut args = vec!["--max-tunnels-per-anonymous-ip", "50"];
            args.extend_from_slice(f);
            common::fleet::start_node(&redis.url, ip, control, agent, http, &args)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let edges = loop {
        let made = nodes[0].api(
            "POST",
            "/tunnels/create",
            None,
            Some(&serde_json::json!({"protocol": "http"})),
        );
        assert_eq!(made.status, 200, "{made:?}");
        let edges = made.body["edges"].as_array().unwrap().clone();
        if edges.len() == 3 {
            break edges;
        }
        assert!(Instant::now() < deadline, "{edges:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ids: Vec<&str> = edges.iter().map(|e| e["node"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alpha", "gamma", "beta"], "{edges:?}");
    assert_eq!(
        edges[1]["addr"],
        format!("gamma.example:{agent}"),
        "{edges:?}"
    );
    // Off this machine the control API is reached over TLS only.
    assert_eq!(
        edges[1]["control_url"],
        format!("https://gamma.example:{control}"),
        "{edges:?}"
    );
    assert_eq!(edges[2]["addr"], format!("127.0.0.3:{agent}"), "{edges:?}");
}
