//! The directory on a real `redis-server`, in process: three nodes' `Fleet`s publish,
//! move and withdraw routes; a stale node's withdrawal cannot remove its successor's
//! entry; a Redis that lost everything is filled again; a dead node's routes die with
//! its lease; token ids are used once in the whole fleet, and each node trusts the
//! signing keys of the live others.

use std::time::{Duration, Instant};

use netbore_control::tokens::{TokenSigner, TrustedKeys, unix_now};
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
    let a = Fleet::join(&redis.url, node("a"), false, TrustedKeys::default()).unwrap();
    let b = Fleet::join(&redis.url, node("b"), false, TrustedKeys::default()).unwrap();
    let c = Fleet::join(&redis.url, node("c"), false, TrustedKeys::default()).unwrap();
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

    // What a relaying node caches for a holder stays usable while the version
    // stays.
    assert!(c.is_holder(&shop, "a", h.generation));
    let checked = c.version().expect("the fleet's directory keeps a version");

    // The tunnel moves to b (its agent reclaimed it there).
    b.publish(&shop, "t1", None);
    eventually(second, "a and c follow the move", || {
        holder_node(&a, &shop).as_deref() == Some("b")
            && holder_node(&c, &shop).as_deref() == Some("b")
    });
    let moved = c.holder(&shop).unwrap();
    assert!(moved.generation > h.generation);
    // The holders changed, so the version did.
    assert_ne!(c.version(), Some(checked));
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
    let a = Fleet::join(&redis.url, node("a"), false, TrustedKeys::default()).unwrap();
    let db = RouteKey::Tcp(20_001);
    a.publish(&db, "t2", None);
    let b = Fleet::join(&redis.url, node("b"), false, TrustedKeys::default()).unwrap();
    eventually(Duration::from_secs(2), "b sees the route", || {
        holder_node(&b, &db).as_deref() == Some("a")
    });
    assert_eq!(b.remote_tcp_ports(), vec![20_001]);

    // Redis restarted without persistence: every node writes itself and its routes
    // again, and a node joining afterwards finds them.
    let mut conn = redis.connection();
    let () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    eventually(Duration::from_secs(5), "a republishes", || {
        let c = Fleet::join(&redis.url, node("c"), false, TrustedKeys::default()).unwrap();
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
    let a = Fleet::join(&redis.url, node("a"), false, TrustedKeys::default()).unwrap();
    let b = Fleet::join(&redis.url, node("b"), false, TrustedKeys::default()).unwrap();
    let secret = a.link_secret().unwrap();
    assert_eq!(secret.len(), 64);
    assert_eq!(b.link_secret(), Some(secret));
    let other = RedisServer::start();
    let stranger = Fleet::join(&other.url, node("a"), false, TrustedKeys::default()).unwrap();
    assert_ne!(stranger.link_secret(), a.link_secret());
    assert!(Fleet::join(&redis.url, node("bad id"), false, TrustedKeys::default()).is_err());
}

#[test]
fn a_node_cut_off_from_redis_does_not_take_back_a_tunnel_that_moved() {
    let redis = RedisServer::start();
    let a = Fleet::join(&redis.url, node("a"), false, TrustedKeys::default()).unwrap();
    let b = Fleet::join(&redis.url, node("b"), false, TrustedKeys::default()).unwrap();
    let c = Fleet::join(&redis.url, node("c"), false, TrustedKeys::default()).unwrap();
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
    // reconnects. a's must not take the route back from b: a still holds the tunnel
    // (its old session), so it stays a holder, but b's claim stays the newest.
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
    let newest = entry
        .split(';')
        .max_by_key(|h| h.split(' ').nth(2).and_then(|g| g.parse::<u64>().ok()))
        .unwrap();
    assert!(newest.starts_with("b "), "{entry}");
    drop(a);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn token_ids_are_used_once_fleet_wide_and_nodes_trust_each_others_signing_keys() {
    let redis = RedisServer::start();
    let (sign_a, sign_b) = (TokenSigner::generate(), TokenSigner::generate());
    let (trust_a, trust_b) = (TrustedKeys::default(), TrustedKeys::default());
    let with_key = |id: &str, signer: &TokenSigner| NodeInfo {
        signing_key: hex(signer.public_key()),
        ..node(id)
    };
    let a = Fleet::join(&redis.url, with_key("a", &sign_a), false, trust_a.clone()).unwrap();
    let b = Fleet::join(&redis.url, with_key("b", &sign_b), false, trust_b.clone()).unwrap();
    eventually(
        Duration::from_secs(3),
        "each node trusts the other's key",
        || {
            trust_a.kids() == vec![sign_b.kid().to_string()]
                && trust_b.kids() == vec![sign_a.kid().to_string()]
        },
    );

    let later = unix_now() + 60;
    let ids = |names: &[&str]| -> Vec<(String, u64)> {
        names.iter().map(|n| (n.to_string(), later)).collect()
    };
    assert_eq!(a.use_tokens(&ids(&["j1", "j2"])), Ok(true));
    // Used at a: refused at b, and at a again; a set with one used id records none.
    assert_eq!(b.use_tokens(&ids(&["j1"])), Ok(false));
    assert_eq!(a.use_tokens(&ids(&["j2"])), Ok(false));
    assert_eq!(b.use_tokens(&ids(&["j3", "j2"])), Ok(false));
    assert_eq!(b.use_tokens(&ids(&["j3"])), Ok(true));
    // Given back (its tunnel could not be claimed): usable again, once.
    a.give_back_tokens(&["j1".to_string()]);
    assert_eq!(b.use_tokens(&ids(&["j1"])), Ok(true));
    assert_eq!(a.use_tokens(&ids(&["j1"])), Ok(false));
    // Ids leave Redis when their tokens have expired.
    assert_eq!(
        a.use_tokens(&[("short".to_string(), unix_now() + 1)]),
        Ok(true)
    );
    let mut conn = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("netbore:{fleet}:jti:short")
        .query(&mut conn)
        .unwrap();
    assert!((0..=2).contains(&ttl), "ttl {ttl}");

    // A node that died stays trusted (tokens it minted just before still open their
    // tunnels at the node its agents move to), after it left the node list.
    drop(b);
    std::thread::sleep(LEASE + Duration::from_secs(2));
    assert_eq!(trust_a.kids(), vec![sign_b.kid().to_string()]);
    // Redis gone: using a token is a clear failure, fast the second time.
    drop(redis);
    assert!(a.use_tokens(&ids(&["j9"])).is_err());
    let started = Instant::now();
    assert!(a.use_tokens(&ids(&["j10"])).is_err());
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[test]
fn names_and_ports_are_reserved_for_one_tunnel_across_the_fleet_and_outlive_their_holder() {
    let redis = RedisServer::start();
    let a = Fleet::join(&redis.url, node("a"), false, TrustedKeys::default()).unwrap();
    let b = Fleet::join(&redis.url, node("b"), false, TrustedKeys::default()).unwrap();
    let (port, shop) = (RouteKey::Tcp(20_001), RouteKey::Http("shop".into()));
    let hold = Duration::from_secs(1);
    assert_eq!(a.reserve(&port, "t1", hold), Ok(true));
    assert_eq!(b.reserve(&port, "t2", hold), Ok(false));
    // The same tunnel (moving to b, or adopted there) keeps it.
    assert_eq!(b.reserve(&port, "t1", hold), Ok(true));
    // HTTP and TLS tunnels share names.
    assert_eq!(a.reserve(&shop, "t3", hold), Ok(true));
    assert_eq!(
        b.reserve(&RouteKey::Tls("shop".into()), "t4", hold),
        Ok(false)
    );
    assert_eq!(
        b.reserve(&RouteKey::Http("other".into()), "t4", hold),
        Ok(true)
    );

    let mut conn = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut pttl = |what: &str| -> i64 {
        redis::cmd("PTTL")
            .arg(format!("netbore:{{fleet}}:reserved:{what}"))
            .query(&mut conn)
            .unwrap()
    };
    // While a serves t1, it renews the reservation every third of the grace: past
    // one renewal period it is still (nearly) a full grace ahead, where without
    // renewals less than two thirds would be left.
    a.publish(&port, "t1", None);
    std::thread::sleep(Duration::from_millis(11_500));
    let grace = netbore_fleet::RESERVATION_GRACE.as_millis() as i64;
    assert!(pttl("port:20001") > grace - 2500, "{}", pttl("port:20001"));
    // A tunnel that goes offline on its node frees its name at once, as on a single
    // server.
    let other = RouteKey::Http("other".into());
    b.publish(&other, "t4", None);
    std::thread::sleep(Duration::from_millis(300));
    b.withdraw(&other, "t4");
    eventually(Duration::from_secs(2), "the name is free again", || {
        a.reserve(&other, "t5", hold) == Ok(true)
    });
    // After a stops (dies: nothing withdrawn), the port stays t1's for the grace.
    drop(a);
    std::thread::sleep(Duration::from_millis(1500));
    let left = pttl("port:20001");
    assert!(left > 0 && left <= grace, "{left}");
    assert_eq!(b.reserve(&port, "t2", hold), Ok(false));
}

#[test]
fn acme_state_is_shared_between_nodes() {
    use netbore_edge::acme::{AcmeShare, SharedChallenge};
    let redis = RedisServer::start();
    let a = Fleet::join(&redis.url, node("a"), false, TrustedKeys::default()).unwrap();
    let b = Fleet::join(&redis.url, node("b"), false, TrustedKeys::default()).unwrap();
    a.put_challenge(SharedChallenge::Http01, "tok", "tok.thumb");
    assert_eq!(
        b.challenge(SharedChallenge::Http01, "tok").as_deref(),
        Some("tok.thumb")
    );
    assert_eq!(b.challenge(SharedChallenge::TlsAlpn01, "tok"), None);
    let later = unix_now() + 3600;
    a.put_certificate("app.example", "https://ca/dir", "CHAIN", "KEY", later);
    assert_eq!(
        b.certificate("app.example", "https://ca/dir"),
        Some(("CHAIN".to_string(), "KEY".to_string()))
    );
    // Another directory's certificate is not this fleet's.
    assert_eq!(b.certificate("app.example", "https://other/dir"), None);
    // One node orders a name at a time; a retried claim is its own.
    assert!(a.claim_order("app.example"));
    assert!(a.claim_order("app.example"));
    assert!(!b.claim_order("app.example"));
    a.end_order("app.example");
    assert!(b.claim_order("app.example"));
    assert!(!a.failed_recently("bad.example"));
    b.put_failed("bad.example");
    assert!(a.failed_recently("bad.example"));
}

#[test]
fn the_operators_listing_of_serving_nodes_answers_with_no_live_node() {
    // The whole fleet down, or Redis just restarted: nothing serves, and saying so
    // is an answer, not an error.
    let redis = RedisServer::start();
    assert!(netbore_fleet::serving_nodes(&redis.url).unwrap().is_empty());
    let a = Fleet::join(&redis.url, node("a"), false, TrustedKeys::default()).unwrap();
    a.publish(&RouteKey::Tcp(20_002), "t9", None);
    eventually(Duration::from_secs(3), "a's route is listed", || {
        netbore_fleet::serving_nodes(&redis.url)
            .unwrap()
            .get("t9")
            .is_some_and(|n| n == "a")
    });
}
