//! The directory on a real `redis-server`, in process: three nodes' `Fleet`s publish,
//! move and withdraw routes; a stale node's withdrawal cannot remove its successor's
//! entry; a Redis that lost everything is filled again; a dead node's routes die with
//! its lease.

use std::time::{Duration, Instant};

use netbore_edge::fleet::{Directory, RouteKey};
use netbore_fleet::{Fleet, LEASE, NodeInfo};
use netbore_test_support::redis::RedisServer;

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        agent_addr: format!("{id}:7835"),
        control_url: format!("http://{id}:7834"),
        link_cert: format!("sha256:{id}"),
        ..NodeInfo::default()
    }
}

/// Waits until `check` holds, for at most `limit`.
fn eventually(limit: Duration, what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn holder_node(directory: &Fleet, key: &RouteKey) -> Option<String> {
    directory.holder(key).map(|h| h.node)
}

#[test]
fn routes_follow_their_holder_and_stale_withdrawals_change_nothing() {
    let redis = RedisServer::start();
    let a = Fleet::join(&redis.url, node("a"), false).unwrap();
    let b = Fleet::join(&redis.url, node("b"), false).unwrap();
    let c = Fleet::join(&redis.url, node("c"), false).unwrap();
    let shop = RouteKey::Http("shop".into());
    let second = Duration::from_secs(2);

    a.publish(&shop, "t1", Some("192.0.2.1:5000".parse().unwrap()));
    eventually(second, "c sees a as the holder", || {
        holder_node(&c, &shop).as_deref() == Some("a")
    });
    let h = c.holder(&shop).unwrap();
    assert_eq!(h.addr, "a:7835");
    assert_eq!(h.cert, "sha256:a");
    assert_eq!(h.tunnel_id, "t1");
    assert_eq!(h.agent, Some("192.0.2.1:5000".parse().unwrap()));
    // A node is never its own remote holder.
    assert_eq!(a.holder(&shop), None);

    // The tunnel moves to b (its agent reclaimed it there).
    b.publish(&shop, "t1", None);
    eventually(second, "a and c follow the move", || {
        holder_node(&a, &shop).as_deref() == Some("b")
            && holder_node(&c, &shop).as_deref() == Some("b")
    });
    let moved = c.holder(&shop).unwrap();
    assert!(moved.generation > h.generation);
    // a's session ends late: its withdrawal must not remove b's entry.
    a.withdraw(&shop, "t1");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(holder_node(&c, &shop).as_deref(), Some("b"));
    // b's own withdrawal does.
    b.withdraw(&shop, "t1");
    eventually(second, "the route disappears", || c.holder(&shop).is_none());
}

#[test]
fn a_redis_that_lost_everything_is_filled_again_and_dead_nodes_lose_their_routes() {
    let redis = RedisServer::start();
    let a = Fleet::join(&redis.url, node("a"), false).unwrap();
    let db = RouteKey::Tcp(20_001);
    a.publish(&db, "t2", None);
    let b = Fleet::join(&redis.url, node("b"), false).unwrap();
    eventually(Duration::from_secs(2), "b sees the route", || {
        holder_node(&b, &db).as_deref() == Some("a")
    });
    assert_eq!(b.remote_tcp_ports(), vec![20_001]);

    // Redis restarted without persistence: every node writes itself and its routes
    // again, and a node joining afterwards finds them.
    let mut conn = redis.connection();
    let () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    eventually(Duration::from_secs(5), "a republishes", || {
        let c = Fleet::join(&redis.url, node("c"), false).unwrap();
        let seen = holder_node(&c, &db).as_deref() == Some("a");
        drop(c);
        seen
    });

    // a stops (as if killed: no withdrawal); its routes die with its lease.
    let stopped = Instant::now();
    drop(a);
    eventually(LEASE + Duration::from_secs(3), "a's route expires", || {
        b.holder(&db).is_none()
    });
    assert!(stopped.elapsed() >= LEASE - Duration::from_secs(2));
    assert!(b.remote_tcp_ports().is_empty());
}

#[test]
fn links_are_proven_with_one_secret_for_the_whole_fleet() {
    let redis = RedisServer::start();
    let a = Fleet::join(&redis.url, node("a"), false).unwrap();
    let b = Fleet::join(&redis.url, node("b"), false).unwrap();
    let secret = a.link_secret().unwrap();
    assert_eq!(secret.len(), 64);
    assert_eq!(b.link_secret(), Some(secret));
    let other = RedisServer::start();
    let stranger = Fleet::join(&other.url, node("a"), false).unwrap();
    assert_ne!(stranger.link_secret(), a.link_secret());
    assert!(Fleet::join(&redis.url, node("bad id"), false).is_err());
}

#[test]
fn a_node_cut_off_from_redis_does_not_take_back_a_tunnel_that_moved() {
    let redis = RedisServer::start();
    let a = Fleet::join(&redis.url, node("a"), false).unwrap();
    let b = Fleet::join(&redis.url, node("b"), false).unwrap();
    let c = Fleet::join(&redis.url, node("c"), false).unwrap();
    let shop = RouteKey::Http("shop".into());
    a.publish(&shop, "t1", None);
    eventually(Duration::from_secs(2), "c sees a", || {
        holder_node(&c, &shop).as_deref() == Some("a")
    });
    // The agent moved to b while a still had its old session.
    b.publish(&shop, "t1", None);
    eventually(Duration::from_secs(2), "c sees b", || {
        holder_node(&c, &shop).as_deref() == Some("b")
    });
    // Every node's connection breaks; each writes its routes again when it
    // reconnects. a's must not take the route back from b.
    let mut conn = redis.connection();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut conn)
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(holder_node(&c, &shop).as_deref(), Some("b"));
    let entry: String = redis::cmd("HGET")
        .arg("netbore:{fleet}:routes")
        .arg("http:shop")
        .query(&mut conn)
        .unwrap();
    assert!(entry.starts_with("b "), "{entry}");
    drop(a);
}
