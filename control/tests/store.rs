//! Both stores through the trait, with the same tests: SQLite on a real file, Redis on
//! a real `redis-server` (one per test). Keys kept only as hashes, reservations and
//! their conflicts and quota, recreate lookups, orderings, the change marker, and
//! everything surviving a reopen. Then what only a shared store does: two handles on
//! one Redis (two nodes) seeing each other's writes at once, racing for names, and
//! health when Redis goes away.

use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use netbore_control::api::Protocol;
use netbore_control::secrets::{create_api_key, hash_secret};
use netbore_control::store::{
    ApiKeyRecord, RedisStore, Reserve, SqliteStore, Store, StoreError, TunnelRecord,
};
use netbore_test_support::redis::RedisServer;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("netbore-store-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn db(&self) -> PathBuf {
        self.0.join("netbore.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where one backend under test keeps its data.
enum Backend {
    Sqlite(TempDir),
    Redis(RedisServer),
}

impl Backend {
    /// Another handle on the same data: another connection to the file, or another
    /// node's client of the same Redis.
    fn open(&self) -> Box<dyn Store> {
        match self {
            Backend::Sqlite(dir) => Box::new(SqliteStore::open(&dir.db()).unwrap()),
            Backend::Redis(server) => Box::new(RedisStore::open(&server.url).unwrap()),
        }
    }

    /// Every byte the backend holds (open handles dropped first, so SQLite's WAL is
    /// what it wrote).
    fn stored_bytes(&self) -> Vec<u8> {
        match self {
            Backend::Sqlite(dir) => {
                let mut bytes = std::fs::read(dir.db()).unwrap();
                bytes.extend(std::fs::read(dir.0.join("netbore.db-wal")).unwrap_or_default());
                bytes
            }
            Backend::Redis(server) => redis_dump(server),
        }
    }
}

/// Every key, member, field and value in the Redis, concatenated.
fn redis_dump(server: &RedisServer) -> Vec<u8> {
    let mut c = server.connection();
    let mut out = Vec::new();
    let all: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(!all.is_empty(), "the store wrote nothing to Redis");
    for key in all {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut c).unwrap();
        let parts: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET").arg(&key).query(&mut c).unwrap()],
            "hash" => redis::cmd("HGETALL").arg(&key).query(&mut c).unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut c).unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut c)
                .unwrap(),
            other => panic!("the store made a {other} key, which no test expects"),
        };
        out.extend(key);
        for p in parts {
            out.extend(p);
        }
    }
    out
}

/// Runs each listed test once on SQLite and once on Redis, as `NAME::sqlite` and
/// `NAME::redis`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::Backend::Sqlite(super::TempDir::new(stringify!($name))));
            }
            #[test]
            fn redis() {
                super::$name(&super::Backend::Redis(super::RedisServer::start()));
            }
        }
    )*};
}

on_both_backends!(
    keys_are_stored_as_hashes_and_found_by_hash,
    revoking_a_key_marks_it_and_frees_its_names,
    reservations_conflict_between_keys_and_respect_the_quota,
    tunnels_are_found_by_recreate_hash_owner_and_name,
    listings_come_in_their_documented_order,
    duplicates_and_unknown_records_are_refused_or_ignored,
    the_change_marker_moves_when_another_handle_revokes_a_key,
    everything_survives_a_reopen,
);

fn tunnel(id: &str, owner: &str, name: Option<&str>, token: &str) -> TunnelRecord {
    TunnelRecord {
        tunnel_id: id.into(),
        owner: owner.into(),
        protocol: if name.is_some() {
            Protocol::Http
        } else {
            Protocol::Tcp
        },
        name: name.map(Into::into),
        remote_port: if name.is_some() { None } else { Some(20_001) },
        public_url: "tcp://example.com:20001".into(),
        recreate_hash: hash_secret(token),
        created_at: 1_700_000_000,
    }
}

fn key_record(id: &str, created_at: u64) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        label: format!("label of {id}"),
        secret_hash: hash_secret(&format!("nbk_{id}")),
        created_at,
        revoked: false,
    }
}

fn keys_are_stored_as_hashes_and_found_by_hash(backend: &Backend) {
    let store = backend.open();
    let key = create_api_key(&*store, "laptop").unwrap();
    assert!(key.secret.starts_with("nbk_"));
    assert!(key.secret.len() > 64);

    let found = store
        .key_by_hash(&hash_secret(&key.secret))
        .unwrap()
        .unwrap();
    assert_eq!(found, key.record);
    assert_eq!(found.label, "laptop");
    assert!(!found.revoked);
    assert_eq!(store.key_by_id(&key.record.id).unwrap().unwrap(), found);
    assert!(
        store
            .key_by_hash(&hash_secret("nbk_wrong"))
            .unwrap()
            .is_none()
    );
    assert!(store.key_by_id("k_missing").unwrap().is_none());
    drop(store);

    // The secret itself is nowhere in what the backend holds.
    let stored = backend.stored_bytes();
    assert!(
        !stored
            .windows(key.secret.len())
            .any(|w| w == key.secret.as_bytes()),
        "the API key secret was written to the store"
    );
}

fn revoking_a_key_marks_it_and_frees_its_names(backend: &Backend) {
    let store = backend.open();
    let key = create_api_key(&*store, "").unwrap();
    let id = &key.record.id;
    assert_eq!(
        store.reserve_name("blog", id, 1, 10).unwrap(),
        Reserve::Reserved
    );
    assert_eq!(
        store.reserve_name("docs", id, 1, 10).unwrap(),
        Reserve::Reserved
    );
    assert!(store.revoke_key(id).unwrap());
    assert!(!store.revoke_key("k_missing").unwrap());
    let listed = store.list_keys().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked);
    assert!(store.key_by_id(id).unwrap().unwrap().revoked);
    assert!(store.name_reservation("blog").unwrap().is_none());
    assert!(store.name_reservation("docs").unwrap().is_none());
    assert!(store.names_of(id).unwrap().is_empty());
    // Revoking again answers that the key exists; nothing else changes.
    assert!(store.revoke_key(id).unwrap());
}

fn reservations_conflict_between_keys_and_respect_the_quota(backend: &Backend) {
    let store = backend.open();
    let a = create_api_key(&*store, "a").unwrap().record.id;
    let b = create_api_key(&*store, "b").unwrap().record.id;
    assert_eq!(
        store.reserve_name("shop", &a, 10, 2).unwrap(),
        Reserve::Reserved
    );
    assert_eq!(
        store.reserve_name("shop", &a, 11, 2).unwrap(),
        Reserve::AlreadyYours
    );
    assert_eq!(
        store.reserve_name("shop", &b, 12, 2).unwrap(),
        Reserve::Taken
    );
    assert_eq!(
        store.reserve_name("docs", &a, 13, 2).unwrap(),
        Reserve::Reserved
    );
    assert_eq!(
        store.reserve_name("more", &a, 14, 2).unwrap(),
        Reserve::LimitReached
    );
    // A name the key holds is still its own at the quota, and one another key holds
    // is taken before any quota counts.
    assert_eq!(
        store.reserve_name("docs", &a, 15, 2).unwrap(),
        Reserve::AlreadyYours
    );
    assert_eq!(
        store.reserve_name("shop", &b, 15, 0).unwrap(),
        Reserve::Taken
    );

    let names = store.names_of(&a).unwrap();
    let listed: Vec<_> = names.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(listed, ["docs", "shop"]);
    assert_eq!(names[1].created_at, 10);
    let shop = store.name_reservation("shop").unwrap().unwrap();
    assert_eq!((shop.name.as_str(), shop.key_id.as_str()), ("shop", &*a));
    assert!(store.name_reservation("nope").unwrap().is_none());

    assert!(
        !store.release_name("shop", &b).unwrap(),
        "b does not hold it"
    );
    assert!(!store.release_name("nope", &a).unwrap());
    assert!(store.release_name("shop", &a).unwrap());
    assert_eq!(
        store.reserve_name("shop", &b, 15, 2).unwrap(),
        Reserve::Reserved
    );
    // A released name frees a place in the quota.
    assert_eq!(
        store.reserve_name("more", &a, 16, 2).unwrap(),
        Reserve::Reserved
    );
}

fn tunnels_are_found_by_recreate_hash_owner_and_name(backend: &Backend) {
    let store = backend.open();
    assert_eq!(store.count_tunnels().unwrap(), 0);
    store
        .insert_tunnel(&tunnel("tun_1", "k_a", Some("web"), "nbr_one"))
        .unwrap();
    store
        .insert_tunnel(&tunnel("tun_2", "anonymous:10.0.0.1", None, "nbr_two"))
        .unwrap();
    assert_eq!(store.count_tunnels().unwrap(), 2);

    let found = store
        .tunnel_by_recreate_hash(&hash_secret("nbr_one"))
        .unwrap()
        .unwrap();
    assert_eq!(found, tunnel("tun_1", "k_a", Some("web"), "nbr_one"));
    assert!(
        store
            .tunnel_by_recreate_hash(&hash_secret("nbr_nope"))
            .unwrap()
            .is_none()
    );
    assert_eq!(store.tunnels_of("k_a").unwrap().len(), 1);
    assert_eq!(
        store.tunnels_of("anonymous:10.0.0.1").unwrap()[0].tunnel_id,
        "tun_2"
    );
    assert!(store.tunnels_of("k_nobody").unwrap().is_empty());
    assert_eq!(store.tunnels_named("web").unwrap()[0].tunnel_id, "tun_1");
    assert!(store.tunnels_named("nope").unwrap().is_empty());
    assert_eq!(
        store.tunnel("tun_2").unwrap().unwrap(),
        tunnel("tun_2", "anonymous:10.0.0.1", None, "nbr_two")
    );
    assert!(store.tunnel("tun_nope").unwrap().is_none());

    store
        .set_public_url("tun_1", "http://web.example.org")
        .unwrap();
    assert_eq!(
        store.tunnel("tun_1").unwrap().unwrap().public_url,
        "http://web.example.org"
    );
    assert!(store.delete_tunnel("tun_1").unwrap());
    assert!(!store.delete_tunnel("tun_1").unwrap());
    assert_eq!(store.count_tunnels().unwrap(), 1);
    assert!(
        store
            .tunnel_by_recreate_hash(&hash_secret("nbr_one"))
            .unwrap()
            .is_none(),
        "a deleted tunnel's recreate token stops working"
    );
    assert!(store.tunnel("tun_1").unwrap().is_none());
    assert!(store.tunnels_of("k_a").unwrap().is_empty());
    assert!(store.tunnels_named("web").unwrap().is_empty());

    // The id and the recreate token are free again.
    store
        .insert_tunnel(&tunnel("tun_1", "k_b", Some("web"), "nbr_one"))
        .unwrap();
    assert_eq!(store.tunnels_named("web").unwrap()[0].owner, "k_b");
}

fn listings_come_in_their_documented_order(backend: &Backend) {
    let store = backend.open();
    // Keys oldest first, ties by id.
    for (id, at) in [("k_c", 20), ("k_b", 10), ("k_a", 20), ("k_d", 5)] {
        store.insert_key(&key_record(id, at)).unwrap();
    }
    let ids: Vec<_> = store
        .list_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, ["k_d", "k_b", "k_a", "k_c"]);

    // Names alphabetically.
    for name in ["zeta", "alpha", "mid"] {
        store.reserve_name(name, "k_a", 1, 10).unwrap();
    }
    let names: Vec<_> = store
        .names_of("k_a")
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);

    // Tunnels oldest first, ties by id, by owner and by name alike.
    for (id, at, token) in [("tun_c", 30, "c"), ("tun_b", 10, "b"), ("tun_a", 30, "a")] {
        let mut t = tunnel(id, "k_a", Some("site"), token);
        t.created_at = at;
        store.insert_tunnel(&t).unwrap();
    }
    let of: Vec<_> = store
        .tunnels_of("k_a")
        .unwrap()
        .into_iter()
        .map(|t| t.tunnel_id)
        .collect();
    assert_eq!(of, ["tun_b", "tun_a", "tun_c"]);
    let named: Vec<_> = store
        .tunnels_named("site")
        .unwrap()
        .into_iter()
        .map(|t| t.tunnel_id)
        .collect();
    assert_eq!(named, of);
    // And every owner's together, for operators.
    let mut other = tunnel("tun_z", "anonymous:10.0.0.1", None, "z");
    other.created_at = 20;
    store.insert_tunnel(&other).unwrap();
    let all: Vec<_> = store
        .all_tunnels()
        .unwrap()
        .into_iter()
        .map(|t| t.tunnel_id)
        .collect();
    assert_eq!(all, ["tun_b", "tun_z", "tun_a", "tun_c"]);
}

fn duplicates_and_unknown_records_are_refused_or_ignored(backend: &Backend) {
    let store = backend.open();
    let key = key_record("k_one", 1);
    store.insert_key(&key).unwrap();
    assert!(store.insert_key(&key).is_err(), "the same id twice");
    let same_secret = ApiKeyRecord {
        id: "k_two".into(),
        ..key.clone()
    };
    assert!(
        store.insert_key(&same_secret).is_err(),
        "the same secret twice"
    );
    assert!(store.key_by_id("k_two").unwrap().is_none());
    assert_eq!(store.list_keys().unwrap(), [key]);

    // A name is reserved only for a key that exists.
    assert!(store.reserve_name("ghost", "k_missing", 1, 10).is_err());
    assert!(store.name_reservation("ghost").unwrap().is_none());

    let t = tunnel("tun_1", "k_one", Some("web"), "nbr_1");
    store.insert_tunnel(&t).unwrap();
    assert!(store.insert_tunnel(&t).is_err(), "the same id twice");
    let same_token = tunnel("tun_2", "k_one", None, "nbr_1");
    assert!(
        store.insert_tunnel(&same_token).is_err(),
        "the same recreate token twice"
    );
    assert!(store.tunnel("tun_2").unwrap().is_none());
    assert_eq!(store.count_tunnels().unwrap(), 1);

    // Changing what is not there changes nothing and creates nothing.
    store
        .set_public_url("tun_nope", "http://x.example")
        .unwrap();
    assert!(store.tunnel("tun_nope").unwrap().is_none());
    assert!(!store.delete_tunnel("tun_nope").unwrap());
    assert!(!store.release_name("web", "k_one").unwrap());
    assert_eq!(store.count_tunnels().unwrap(), 1);
}

fn the_change_marker_moves_when_another_handle_revokes_a_key(backend: &Backend) {
    // The server's handle, and `netbore key` in another process (or another node).
    let server = backend.open();
    let cli = backend.open();
    let marker = |s: &dyn Store| s.change_marker().unwrap().expect("both backends have one");
    let key = create_api_key(&*cli, "k").unwrap().record;
    let before = marker(&*server);
    assert_eq!(marker(&*server), before, "nothing happened in between");

    assert!(cli.revoke_key(&key.id).unwrap());
    let after_cli = marker(&*server);
    assert_ne!(after_cli, before, "another handle's revocation");
    assert_eq!(marker(&*server), after_cli);

    let other = create_api_key(&*cli, "other").unwrap().record;
    let after_create = marker(&*server);
    assert!(server.revoke_key(&other.id).unwrap());
    assert_ne!(
        marker(&*server),
        after_create,
        "this handle's own revocation"
    );
}

fn everything_survives_a_reopen(backend: &Backend) {
    let key = {
        let store = backend.open();
        let key = create_api_key(&*store, "ci").unwrap();
        store.reserve_name("kept", &key.record.id, 5, 10).unwrap();
        store
            .insert_tunnel(&tunnel("tun_k", &key.record.id, Some("kept"), "nbr_k"))
            .unwrap();
        key
    };
    // Opening twice at once works too (the CLI while the server runs).
    let store = backend.open();
    let other = backend.open();
    assert_eq!(
        store
            .key_by_hash(&hash_secret(&key.secret))
            .unwrap()
            .unwrap()
            .id,
        key.record.id
    );
    assert_eq!(
        store.name_reservation("kept").unwrap().unwrap().key_id,
        key.record.id
    );
    assert_eq!(
        store
            .tunnel_by_recreate_hash(&hash_secret("nbr_k"))
            .unwrap()
            .unwrap()
            .tunnel_id,
        "tun_k"
    );
    other.revoke_key(&key.record.id).unwrap();
    assert!(
        store
            .key_by_hash(&hash_secret(&key.secret))
            .unwrap()
            .unwrap()
            .revoked
    );
    store.health().unwrap();
}

// What only the shared store does.

#[test]
fn two_nodes_see_each_others_keys_names_and_tunnels_at_once() {
    let redis = RedisServer::start();
    let a = RedisStore::open(&redis.url).unwrap();
    let b = RedisStore::open(&redis.url).unwrap();

    let key = create_api_key(&a, "fleet").unwrap();
    let other = create_api_key(&b, "other").unwrap().record.id;
    let id = &key.record.id;
    assert_eq!(
        b.key_by_hash(&hash_secret(&key.secret))
            .unwrap()
            .unwrap()
            .id,
        *id
    );
    assert_eq!(a.list_keys().unwrap(), b.list_keys().unwrap());
    assert_eq!(a.list_keys().unwrap().len(), 2);

    assert_eq!(
        a.reserve_name("shop", id, 1, 10).unwrap(),
        Reserve::Reserved
    );
    assert_eq!(
        b.reserve_name("shop", &other, 2, 10).unwrap(),
        Reserve::Taken
    );
    assert_eq!(
        b.reserve_name("shop", id, 2, 10).unwrap(),
        Reserve::AlreadyYours
    );
    assert_eq!(b.names_of(id).unwrap(), a.names_of(id).unwrap());

    a.insert_tunnel(&tunnel("tun_a", id, Some("shop"), "nbr_a"))
        .unwrap();
    assert_eq!(b.count_tunnels().unwrap(), 1);
    assert_eq!(b.tunnels_of(id).unwrap()[0].tunnel_id, "tun_a");
    assert_eq!(
        b.tunnel_by_recreate_hash(&hash_secret("nbr_a"))
            .unwrap()
            .unwrap()
            .tunnel_id,
        "tun_a"
    );
    b.set_public_url("tun_a", "https://shop.example.org")
        .unwrap();
    assert_eq!(
        a.tunnel("tun_a").unwrap().unwrap().public_url,
        "https://shop.example.org"
    );
    assert!(b.delete_tunnel("tun_a").unwrap());
    assert!(a.tunnel("tun_a").unwrap().is_none());
    assert_eq!(a.count_tunnels().unwrap(), 0);

    // A revocation on one node frees the names for the other at once.
    let before = a.change_marker().unwrap();
    assert!(b.revoke_key(id).unwrap());
    assert_ne!(a.change_marker().unwrap(), before);
    assert!(a.key_by_id(id).unwrap().unwrap().revoked);
    assert_eq!(
        a.reserve_name("shop", &other, 3, 10).unwrap(),
        Reserve::Reserved
    );
}

#[test]
fn concurrent_reservations_from_two_nodes_never_share_a_name_or_pass_the_quota() {
    const NAMES: usize = 40;
    const QUOTA: usize = 7;
    let redis = RedisServer::start();
    let setup = RedisStore::open(&redis.url).unwrap();
    let keys: Vec<String> = (0..3)
        .map(|i| create_api_key(&setup, &format!("k{i}")).unwrap().record.id)
        .collect();
    let nodes: Vec<Arc<RedisStore>> = (0..2)
        .map(|_| Arc::new(RedisStore::open(&redis.url).unwrap()))
        .collect();

    // Every key tries every name from both nodes at once, each thread in its own order.
    let threads = nodes.len() * keys.len();
    let start = Arc::new(Barrier::new(threads));
    let mut handles = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for (k, key) in keys.iter().enumerate() {
            let (node, key, start) = (node.clone(), key.clone(), start.clone());
            handles.push(std::thread::spawn(move || {
                let step = [1, 3, 7, 9, 11, 13][(n * 3 + k) % 6];
                start.wait();
                let mut won = Vec::new();
                for i in 0..NAMES {
                    let name = format!("n{}", (i * step + n + k) % NAMES);
                    if node.reserve_name(&name, &key, 1, QUOTA).unwrap() == Reserve::Reserved {
                        won.push(name);
                    }
                }
                (key, won)
            }));
        }
    }
    let mut winner = std::collections::HashMap::new();
    let mut won_by_key = std::collections::HashMap::<String, usize>::new();
    for h in handles {
        let (key, won) = h.join().unwrap();
        *won_by_key.entry(key.clone()).or_default() += won.len();
        for name in won {
            if let Some(first) = winner.insert(name.clone(), key.clone()) {
                panic!("{name} was reserved for {first} and for {key}");
            }
        }
    }
    for key in &keys {
        let held = setup.names_of(key).unwrap();
        assert_eq!(held.len(), QUOTA, "every key fills its quota and no more");
        assert_eq!(won_by_key[key], QUOTA);
        for n in held {
            assert_eq!(winner[&n.name], *key);
        }
    }
    assert_eq!(winner.len(), QUOTA * keys.len());
}

#[test]
fn health_fails_once_redis_is_gone_and_notices_a_store_that_lost_its_data() {
    let mut redis = RedisServer::start();
    let store = RedisStore::open(&redis.url).unwrap();
    store.health().unwrap();
    let key = create_api_key(&store, "k").unwrap().record.id;

    redis.kill();
    let started = std::time::Instant::now();
    let err = store.health().unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("could not reach Redis at redis+unix://"),
        "{msg}"
    );
    assert!(
        msg.ends_with("check --redis and that Redis is running"),
        "{msg}"
    );
    assert!(store.key_by_id(&key).is_err());
    assert!(store.change_marker().is_err());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a dead Redis fails calls quickly: {:?}",
        started.elapsed()
    );

    // An empty Redis where the store was: the handle reconnects by itself, and health
    // says the data is gone rather than serving from an empty store.
    redis.restart();
    let msg = store.health().unwrap_err().to_string();
    assert!(msg.contains("no longer holds the netbore store"), "{msg}");
    assert!(store.key_by_id(&key).unwrap().is_none());
    // Opening the store again starts it afresh.
    let fresh = RedisStore::open(&redis.url).unwrap();
    fresh.health().unwrap();
    store.health().unwrap();
}

#[test]
fn a_store_written_by_a_newer_netbore_is_refused() {
    let redis = RedisServer::start();
    RedisStore::open(&redis.url).unwrap();
    let mut c = redis.connection();
    let () = redis::cmd("SET")
        .arg("netbore:{store}:schema")
        .arg(2)
        .query(&mut c)
        .unwrap();
    let msg = RedisStore::open(&redis.url).unwrap_err().to_string();
    assert!(msg.contains("newer than this netbore"), "{msg}");
}

#[test]
fn every_key_the_store_writes_carries_the_one_hash_tag() {
    let redis = RedisServer::start();
    let store = RedisStore::open(&redis.url).unwrap();
    let key = create_api_key(&store, "k").unwrap().record.id;
    store.reserve_name("shop", &key, 1, 10).unwrap();
    store
        .insert_tunnel(&tunnel("tun_1", &key, Some("shop"), "nbr_1"))
        .unwrap();
    store
        .insert_tunnel(&tunnel("tun_2", "anonymous:2001:db8::1", None, "nbr_2"))
        .unwrap();
    store
        .revoke_key(&create_api_key(&store, "x").unwrap().record.id)
        .unwrap();
    let mut c = redis.connection();
    let all: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(all.len() >= 12, "{all:?}");
    for key in all {
        // Redis Cluster hashes only the text between the first `{` and the next `}`.
        assert!(key.starts_with("netbore:{store}:"), "{key}");
    }
}
