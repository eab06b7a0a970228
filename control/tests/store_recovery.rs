//! A shared store that lost all its data (a real `redis-server` flushed, as one
//! restarted without persistence would be): [`Remembering`] writes the schema back
//! and the records of the tunnels the node still holds, and nothing else.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netbore_control::api::Protocol;
use netbore_control::secrets::hash_secret;
use netbore_control::store::{RedisStore, Remembering, SEEN_GRACE, Store, TunnelRecord};
use netbore_test_support::redis::RedisServer;

fn record(id: &str, name: &str) -> TunnelRecord {
    TunnelRecord {
        tunnel_id: id.into(),
        owner: "anonymous:127.0.0.1".into(),
        protocol: Protocol::Http,
        name: Some(name.into()),
        remote_port: None,
        public_url: format!("http://{name}.example.com"),
        recreate_hash: hash_secret(&format!("token of {id}")),
        created_at: 1_700_000_000,
    }
}

fn held(ids: &'static [&'static str]) -> impl Fn() -> HashSet<String> {
    move || ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_flushed_redis_gets_back_its_schema_and_the_held_tunnels_records() {
    let redis = RedisServer::start();
    let store = Remembering::new(Arc::new(RedisStore::open(&redis.url).unwrap()));
    let (a, b) = (record("tun_a", "shop"), record("tun_b", "blog"));
    store.insert_tunnel(&a).unwrap();
    store.insert_tunnel(&b).unwrap();
    store
        .set_public_url("tun_a", "https://shop.example.com")
        .unwrap();
    let now = Instant::now();

    // Nothing lost: nothing written.
    let kept = store.keep(&held(&["tun_a"]), now).unwrap();
    assert!(!kept.recovered && kept.restored == 0, "{kept:?}");

    let () = redis::cmd("FLUSHALL")
        .query(&mut redis.connection())
        .unwrap();
    assert!(store.health().is_err(), "an emptied store is not healthy");
    assert!(store.tunnel("tun_a").unwrap().is_none());

    // Only tun_a is held here: it comes back, with the URL it had, found by its
    // recreate token too; tun_b (held elsewhere, or gone) does not.
    let kept = store.keep(&held(&["tun_a"]), now).unwrap();
    assert!(kept.recovered, "{kept:?}");
    assert_eq!(kept.restored, 1);
    store.health().unwrap();
    let back = store.tunnel("tun_a").unwrap().expect("tun_a written back");
    assert_eq!(back.public_url, "https://shop.example.com");
    assert_eq!(
        store
            .tunnel_by_recreate_hash(&a.recreate_hash)
            .unwrap()
            .map(|t| t.tunnel_id),
        Some("tun_a".to_string())
    );
    assert_eq!(store.tunnels_named("shop").unwrap().len(), 1);
    assert!(store.tunnel("tun_b").unwrap().is_none());

    // Another node's view of the same Redis sees them.
    let other = RedisStore::open(&redis.url).unwrap();
    assert!(other.tunnel("tun_a").unwrap().is_some());

    // Once written back, the next look writes nothing.
    let kept = store.keep(&held(&["tun_a"]), now).unwrap();
    assert!(!kept.recovered && kept.restored == 0, "{kept:?}");
}

#[test]
fn records_of_tunnels_not_held_here_are_forgotten_after_the_grace_and_deleted_ones_at_once() {
    let redis = RedisServer::start();
    let store = Remembering::new(Arc::new(RedisStore::open(&redis.url).unwrap()));
    for (id, name) in [("tun_a", "a"), ("tun_b", "b"), ("tun_c", "c")] {
        store.insert_tunnel(&record(id, name)).unwrap();
    }
    assert_eq!(store.remembered(), 3);
    store.delete_tunnel("tun_c").unwrap();
    assert_eq!(store.remembered(), 2);
    // Within the grace both stay (an agent may still come for tun_b).
    store.keep(&held(&["tun_a"]), Instant::now()).unwrap();
    assert_eq!(store.remembered(), 2);
    let later = Instant::now() + SEEN_GRACE + Duration::from_secs(1);
    store.keep(&held(&["tun_a"]), later).unwrap();
    assert_eq!(store.remembered(), 1);

    // A record read here (a reclaim, say) is remembered again.
    store.tunnel("tun_b").unwrap().unwrap();
    assert_eq!(store.remembered(), 2);
}

#[test]
fn redis_gone_is_an_error_and_the_write_back_waits_for_it() {
    let mut redis = RedisServer::start();
    let store = Remembering::new(Arc::new(RedisStore::open(&redis.url).unwrap()));
    store.insert_tunnel(&record("tun_a", "shop")).unwrap();
    redis.kill();
    assert!(store.keep(&held(&["tun_a"]), Instant::now()).is_err());
    // Back empty (no persistence).
    redis.restart();
    let kept = store.keep(&held(&["tun_a"]), Instant::now()).unwrap();
    assert!(kept.recovered && kept.restored == 1, "{kept:?}");
    assert!(store.tunnel("tun_a").unwrap().is_some());
}

#[test]
fn every_node_writes_back_its_own_tunnels_whoever_found_the_loss_first() {
    let redis = RedisServer::start();
    let open = || Remembering::new(Arc::new(RedisStore::open(&redis.url).unwrap()));
    let (a, b) = (open(), open());
    a.insert_tunnel(&record("tun_a", "shop")).unwrap();
    b.insert_tunnel(&record("tun_b", "blog")).unwrap();
    let () = redis::cmd("FLUSHALL")
        .query(&mut redis.connection())
        .unwrap();
    // An operator's command opens the store first (`netbore key create --redis`):
    // it writes the schema and a new epoch, and neither node found it missing.
    RedisStore::open(&redis.url).unwrap();
    let now = Instant::now();
    let kept_a = a.keep(&held(&["tun_a"]), now).unwrap();
    let kept_b = b.keep(&held(&["tun_b"]), now).unwrap();
    assert!(kept_a.recovered && kept_a.restored == 1, "{kept_a:?}");
    assert!(kept_b.recovered && kept_b.restored == 1, "{kept_b:?}");
    assert!(a.tunnel("tun_b").unwrap().is_some());
    assert!(b.tunnel("tun_a").unwrap().is_some());
}

#[test]
fn a_tunnel_deleted_before_the_write_back_stays_deleted() {
    let redis = RedisServer::start();
    let store = Remembering::new(Arc::new(RedisStore::open(&redis.url).unwrap()));
    store.insert_tunnel(&record("tun_a", "shop")).unwrap();
    let () = redis::cmd("FLUSHALL")
        .query(&mut redis.connection())
        .unwrap();
    // Deleted through the API while the store was empty (nothing to delete there).
    assert!(!store.delete_tunnel("tun_a").unwrap());
    let kept = store.keep(&held(&["tun_a"]), Instant::now()).unwrap();
    assert!(kept.recovered && kept.restored == 0, "{kept:?}");
    assert!(store.tunnel("tun_a").unwrap().is_none());
}
