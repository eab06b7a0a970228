//! The SQLite store on a real file: keys kept only as hashes, reservations and their
//! conflicts, recreate lookups, and everything surviving a reopen.

use std::path::PathBuf;

use netbore_control::api::Protocol;
use netbore_control::secrets::{create_api_key, hash_secret};
use netbore_control::store::{Reserve, SqliteStore, Store, TunnelRecord};

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

#[test]
fn keys_are_stored_as_hashes_and_found_by_hash() {
    let dir = TempDir::new("keys");
    let store = SqliteStore::open(&dir.db()).unwrap();
    let key = create_api_key(&store, "laptop").unwrap();
    assert!(key.secret.starts_with("nbk_"));
    assert!(key.secret.len() > 64);

    let found = store
        .key_by_hash(&hash_secret(&key.secret))
        .unwrap()
        .unwrap();
    assert_eq!(found.id, key.record.id);
    assert_eq!(found.label, "laptop");
    assert!(!found.revoked);
    assert!(
        store
            .key_by_hash(&hash_secret("nbk_wrong"))
            .unwrap()
            .is_none()
    );
    drop(store);

    // The secret itself is nowhere in the file.
    let bytes = std::fs::read(dir.db()).unwrap();
    let wal = std::fs::read(dir.0.join("netbore.db-wal")).unwrap_or_default();
    for haystack in [&bytes, &wal] {
        assert!(
            !haystack
                .windows(key.secret.len())
                .any(|w| w == key.secret.as_bytes()),
            "the API key secret was written to the store"
        );
    }
}

#[test]
fn revoking_a_key_marks_it_and_frees_its_names() {
    let dir = TempDir::new("revoke");
    let store = SqliteStore::open(&dir.db()).unwrap();
    let key = create_api_key(&store, "").unwrap();
    let id = &key.record.id;
    assert_eq!(
        store.reserve_name("blog", id, 1, 10).unwrap(),
        Reserve::Reserved
    );
    assert!(store.revoke_key(id).unwrap());
    assert!(!store.revoke_key("k_missing").unwrap());
    let listed = store.list_keys().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked);
    assert!(store.name_reservation("blog").unwrap().is_none());
}

#[test]
fn reservations_conflict_between_keys_and_respect_the_quota() {
    let dir = TempDir::new("names");
    let store = SqliteStore::open(&dir.db()).unwrap();
    let a = create_api_key(&store, "a").unwrap().record.id;
    let b = create_api_key(&store, "b").unwrap().record.id;
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

    let names: Vec<_> = store
        .names_of(&a)
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["docs", "shop"]);
    assert_eq!(store.name_reservation("shop").unwrap().unwrap().key_id, a);

    assert!(
        !store.release_name("shop", &b).unwrap(),
        "b does not hold it"
    );
    assert!(store.release_name("shop", &a).unwrap());
    assert_eq!(
        store.reserve_name("shop", &b, 15, 2).unwrap(),
        Reserve::Reserved
    );
}

#[test]
fn tunnels_are_found_by_recreate_hash_owner_and_name() {
    let dir = TempDir::new("tunnels");
    let store = SqliteStore::open(&dir.db()).unwrap();
    store
        .insert_tunnel(&tunnel("tun_1", "k_a", Some("web"), "nbr_one"))
        .unwrap();
    store
        .insert_tunnel(&tunnel("tun_2", "anonymous:10.0.0.1", None, "nbr_two"))
        .unwrap();

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
    assert_eq!(store.tunnels_named("web").unwrap()[0].tunnel_id, "tun_1");
    assert_eq!(
        store.tunnel("tun_2").unwrap().unwrap().remote_port,
        Some(20_001)
    );

    store
        .set_public_url("tun_1", "http://web.example.org")
        .unwrap();
    assert_eq!(
        store.tunnel("tun_1").unwrap().unwrap().public_url,
        "http://web.example.org"
    );
    assert!(store.delete_tunnel("tun_1").unwrap());
    assert!(!store.delete_tunnel("tun_1").unwrap());
    assert!(
        store
            .tunnel_by_recreate_hash(&hash_secret("nbr_one"))
            .unwrap()
            .is_none(),
        "a deleted tunnel's recreate token stops working"
    );
}

#[test]
fn everything_survives_a_reopen() {
    let dir = TempDir::new("reopen");
    let key = {
        let store = SqliteStore::open(&dir.db()).unwrap();
        let key = create_api_key(&store, "ci").unwrap();
        store.reserve_name("kept", &key.record.id, 5, 10).unwrap();
        store
            .insert_tunnel(&tunnel("tun_k", &key.record.id, Some("kept"), "nbr_k"))
            .unwrap();
        key
    };
    // Opening twice at once works too (the CLI while the server runs).
    let store = SqliteStore::open(&dir.db()).unwrap();
    let other = SqliteStore::open(&dir.db()).unwrap();
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
}
