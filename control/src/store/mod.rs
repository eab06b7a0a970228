//! The control plane's durable state behind one trait: API keys, reserved names and
//! tunnel records (with the hash of each recreate token).
//!
//! Two backends, with the same semantics (`control/tests/store.rs` runs every test
//! against both):
//!
//! - [`SqliteStore`] keeps it in one file in the data directory, so a restart loses
//!   no key, name or recreate token. The default, for a single node.
//! - [`RedisStore`] keeps it in Redis (`netbore server --redis URL`), so several
//!   nodes share one set of keys, names and tunnel records; each change is one
//!   atomic Lua script, and every key carries one Redis Cluster hash tag. The schema
//!   is in `docs/protocols/registry.md`.
//!
//! [`open`] picks one the way the server's flags say. Secrets never reach the store:
//! keys and recreate tokens arrive here already hashed.

mod redis;
mod remembering;
mod sqlite;

pub use redis::{RedisStore, check_transport, redact_url};
pub use remembering::{Kept, Remembering, SEEN_GRACE};
pub use sqlite::SqliteStore;

use std::path::Path;
use std::sync::Arc;

use crate::api::Protocol;

/// The store the server's flags select: the Redis at `redis_url` when given (shared
/// by every node pointed at it), else the SQLite file at `sqlite_path`.
pub fn open(redis_url: Option<&str>, sqlite_path: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match redis_url {
        Some(url) => Arc::new(RedisStore::open(url)?),
        None => Arc::new(SqliteStore::open(sqlite_path)?),
    })
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the store {path}: {reason}; check the --data-dir permissions")]
    Open {
        /// The database file.
        path: String,
        /// What the backend said.
        reason: String,
    },
    /// The Redis URL names another machine without TLS, and plain text was not
    /// allowed.
    #[error(
        "{url} reaches Redis on another machine without TLS, so the fleet's secrets would cross the network readable; use rediss://, or pass --redis-plaintext if that network is private"
    )]
    Plaintext {
        /// The Redis URL, its password hidden.
        url: String,
    },
    /// The shared store's Redis could not be reached, or its URL is not one.
    #[error("could not reach Redis at {url}: {reason}; check --redis and that Redis is running")]
    Unreachable {
        /// The Redis URL, its password hidden.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A read or write failed.
    #[error("the store failed: {0}")]
    Backend(String),
    /// A record holds a value this version cannot read.
    #[error("the store holds a record this version cannot read: {0}")]
    Corrupt(String),
}

/// An API key as stored: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public id (`k_…`), shown in listings and used as the owner of its tunnels.
    pub id: String,
    /// Free text chosen at creation.
    pub label: String,
    /// SHA-256 of the secret, lowercase hex.
    pub secret_hash: String,
    /// Creation time, seconds since the epoch.
    pub created_at: u64,
    /// A revoked key authenticates nothing.
    pub revoked: bool,
}

/// A name held for one API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedName {
    /// The DNS label.
    pub name: String,
    /// The key holding it.
    pub key_id: String,
    /// Reservation time, seconds since the epoch.
    pub created_at: u64,
}

/// What [`Store::reserve_name`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// The name is now held for the key.
    Reserved,
    /// The key already held it; nothing changed.
    AlreadyYours,
    /// Another key holds it.
    Taken,
    /// The key already holds its quota of names.
    LimitReached,
}

/// A tunnel as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelRecord {
    /// The tunnel's id (`tun_…`).
    pub tunnel_id: String,
    /// Who created it: an API key id, or `anonymous:<ip>`.
    pub owner: String,
    /// `tcp` or `http`.
    pub protocol: Protocol,
    /// Host name label of an HTTP tunnel.
    pub name: Option<String>,
    /// Public port of a TCP tunnel.
    pub remote_port: Option<u16>,
    /// Where viewers reach it.
    pub public_url: String,
    /// SHA-256 of the recreate token, lowercase hex.
    pub recreate_hash: String,
    /// Creation time, seconds since the epoch.
    pub created_at: u64,
}

/// Durable state of the control plane. Calls are synchronous and short.
pub trait Store: Send + Sync + 'static {
    /// Stores a new API key.
    fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// The key whose secret hashes to `secret_hash`, revoked or not.
    fn key_by_hash(&self, secret_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// The key with id `id`, revoked or not.
    fn key_by_id(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Every key, oldest first.
    fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Revokes a key and releases its reserved names. False if no such key exists.
    fn revoke_key(&self, id: &str) -> Result<bool, StoreError>;

    /// Reserves `name` for `key_id` unless another key holds it or the key already
    /// holds `max_per_key` names.
    fn reserve_name(
        &self,
        name: &str,
        key_id: &str,
        now: u64,
        max_per_key: usize,
    ) -> Result<Reserve, StoreError>;

    /// The reservation of `name`, if any.
    fn name_reservation(&self, name: &str) -> Result<Option<ReservedName>, StoreError>;

    /// The names `key_id` holds, alphabetically.
    fn names_of(&self, key_id: &str) -> Result<Vec<ReservedName>, StoreError>;

    /// Releases `name` if `key_id` holds it. False otherwise.
    fn release_name(&self, name: &str, key_id: &str) -> Result<bool, StoreError>;

    /// Stores a new tunnel.
    fn insert_tunnel(&self, tunnel: &TunnelRecord) -> Result<(), StoreError>;

    /// The tunnel `tunnel_id`.
    fn tunnel(&self, tunnel_id: &str) -> Result<Option<TunnelRecord>, StoreError>;

    /// The tunnel whose recreate token hashes to `recreate_hash`.
    fn tunnel_by_recreate_hash(
        &self,
        recreate_hash: &str,
    ) -> Result<Option<TunnelRecord>, StoreError>;

    /// The tunnels `owner` created, oldest first.
    fn tunnels_of(&self, owner: &str) -> Result<Vec<TunnelRecord>, StoreError>;

    /// The tunnels named `name`, oldest first.
    fn tunnels_named(&self, name: &str) -> Result<Vec<TunnelRecord>, StoreError>;

    /// Records where a reclaimed tunnel is reachable now (the server's domain or ports
    /// may have changed since it was created).
    fn set_public_url(&self, tunnel_id: &str, public_url: &str) -> Result<(), StoreError>;

    /// Deletes the tunnel (its recreate token stops working). False if absent.
    fn delete_tunnel(&self, tunnel_id: &str) -> Result<bool, StoreError>;

    /// Every tunnel record, oldest first (operators' listings).
    fn all_tunnels(&self) -> Result<Vec<TunnelRecord>, StoreError>;

    /// How many tunnel records the store holds, all owners together. Cheap: the
    /// server asks on every create.
    fn count_tunnels(&self) -> Result<u64, StoreError>;

    /// A value that changes whenever a key may have been revoked since it was last
    /// read: at least on every revocation, made through this store or by another
    /// process on the same backend (other writes may change it too). Only equality
    /// between two reads means anything. Cheap: the running server reads it many
    /// times a second and looks at the keys only when it moved.
    ///
    /// `None`: the backend has no cheap marker, and callers look at the keys every
    /// time.
    fn change_marker(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Whether the store answers now (for `/readyz`): `Err` says why not.
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Writes the store's schema again when the backend lost all its data (a Redis
    /// flushed, or restarted without persistence): `Ok(true)` when it did, and the
    /// caller then writes back what it still holds ([`Remembering::restore`]).
    fn recover(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// So holders of an `Arc<dyn Store>` can derive `Debug`; the store's contents are not
/// shown.
impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Store")
    }
}
