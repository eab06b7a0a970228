//! [`Store`] in Redis, shared by every node of a fleet (`netbore server --redis URL`).
//!
//! `docs/protocols/registry.md` lists every key, its type and fields, and the script
//! that changes it. In short:
//!
//! - Every key starts with `netbore:{store}:`. The `{store}` hash tag puts the whole
//!   store in one Redis Cluster slot, so each script's keys sit on one node, as
//!   Cluster requires. The store is small (keys, names, tunnel records) and written a
//!   few times a second at most, so one slot costs nothing and keeps every change one
//!   atomic script.
//! - Records are Redis hashes with one field for each column of the SQLite schema (a
//!   `None` field is absent), so `redis-cli HGETALL` reads them and a script changes a
//!   single field (`revoked`, `public_url`) without decoding JSON in Lua. Indexes are
//!   sorted sets scored by creation time (oldest first, ties by id, as SQLite orders),
//!   sets, and hashes from a hash to an id.
//! - Every change that touches more than one key runs as one Lua script (EVALSHA,
//!   loaded again on NOSCRIPT). A script checks everything before its first write, so
//!   an error cannot leave half a change. Scripts name every key they touch in `KEYS`,
//!   as Cluster requires; where those keys depend on stored data (the names a key
//!   holds, a tunnel's indexes), the client reads them first and the script checks
//!   they still hold, answering "retry" when another node changed them in between.
//!
//! One connection behind a mutex, like the SQLite store: control-plane calls are few
//! and short. Connecting, reading and writing time out after [`IO_TIMEOUT`], so a
//! Redis that stopped answering fails calls instead of hanging them; a connection
//! that failed is dropped and the next call opens a new one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::{Client, Connection, ConnectionLike, ErrorKind, RedisError, RedisResult};

use super::{ApiKeyRecord, Reserve, ReservedName, Store, StoreError, TunnelRecord};
use crate::api::Protocol;

mod schema;
mod transport;

pub use transport::check_transport;

use schema::{
    DELETE_TUNNEL, INIT, INSERT_KEY, INSERT_TUNNEL, RELEASE_NAME, RESERVE_NAME, REVOKE_KEY,
    SET_PUBLIC_URL, keys,
};

/// The schema version this code writes (`netbore:{store}:schema`).
const SCHEMA_VERSION: u64 = 1;

/// How long connecting to Redis, and each read or write on the connection, may take.
/// A few seconds: the revocation sweep and `/readyz` call the store many times a
/// minute and must learn quickly that Redis is gone.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a script that found its keys changed by another node is run again
/// before the call fails (each retry re-reads what changed; conflicts need another
/// node writing the same key's names or the same tunnel in that instant).
const MAX_RETRIES: usize = 16;

/// The store in a Redis database, shared by every process that opens the same one.
pub struct RedisStore {
    client: Client,
    /// The URL with any password hidden, for messages.
    url: String,
    /// `None` until the first call, and after a call found the connection broken.
    conn: Mutex<Option<Connection>>,
    /// The store's epoch as this handle last read it ([`keys::epoch`]).
    epoch: Mutex<String>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// `url` with the password of its user part, if any, replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let user = match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => rest[..at].to_string(),
    };
    format!("{scheme}://{user}@{}", &rest[at + 1..])
}

/// What went wrong, in words a person reads after "could not reach Redis at URL: ".
fn describe(e: &RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused".to_string()
    } else if e.is_timeout() {
        format!("no answer within {} s", IO_TIMEOUT.as_secs())
    } else {
        e.to_string()
    }
}

/// Whether the connection is still usable after `e`: only when Redis answered with
/// an error reply is the protocol known to be in step.
fn keeps_connection(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

/// A field of a stored hash (`what` names the record, for the error).
fn field<'a>(
    record: &'a HashMap<String, String>,
    what: &str,
    name: &str,
) -> Result<&'a str, StoreError> {
    record
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt(format!("{what} has no {name}")))
}

fn number<T: std::str::FromStr>(value: &str, what: &str, name: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} has {name} {value:?}, not a number")))
}

fn key_from_hash(h: &HashMap<String, String>) -> Result<ApiKeyRecord, StoreError> {
    let what = "an API key";
    Ok(ApiKeyRecord {
        id: field(h, what, "id")?.to_string(),
        label: field(h, what, "label")?.to_string(),
        secret_hash: field(h, what, "secret_hash")?.to_string(),
        created_at: number(field(h, what, "created_at")?, what, "created_at")?,
        revoked: field(h, what, "revoked")? != "0",
    })
}

fn name_from_hash(h: &HashMap<String, String>) -> Result<ReservedName, StoreError> {
    let what = "a reserved name";
    Ok(ReservedName {
        name: field(h, what, "name")?.to_string(),
        key_id: field(h, what, "key_id")?.to_string(),
        created_at: number(field(h, what, "created_at")?, what, "created_at")?,
    })
}

fn tunnel_from_hash(h: &HashMap<String, String>) -> Result<TunnelRecord, StoreError> {
    let tunnel_id = field(h, "a tunnel", "tunnel_id")?.to_string();
    let what = &format!("tunnel {tunnel_id}");
    let protocol = match field(h, what, "protocol")? {
        "tcp" => Protocol::Tcp,
        "http" => Protocol::Http,
        "tls" => Protocol::Tls,
        other => {
            return Err(StoreError::Corrupt(format!(
                "{what} has unknown protocol {other:?}"
            )));
        }
    };
    Ok(TunnelRecord {
        owner: field(h, what, "owner")?.to_string(),
        protocol,
        name: h.get("name").cloned(),
        remote_port: h
            .get("remote_port")
            .map(|p| number(p, what, "remote_port"))
            .transpose()?,
        public_url: field(h, what, "public_url")?.to_string(),
        recreate_hash: field(h, what, "recreate_hash")?.to_string(),
        created_at: number(field(h, what, "created_at")?, what, "created_at")?,
        tunnel_id,
    })
}

/// Whether a call may run twice: a read may, so a stale connection (Redis restarted
/// since the last call) costs no failed call; a write may not, as its first run may
/// have happened before the answer was lost.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotent {
    Yes,
    No,
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://[:PASSWORD@]HOST[:PORT][/DB]`, or
    /// `redis+unix:///PATH`) and checks or writes the schema version there.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        let client = Client::open(url).map_err(|e| StoreError::Unreachable {
            url: shown.clone(),
            reason: format!("not a Redis URL ({})", describe(&e)),
        })?;
        let store = RedisStore {
            client,
            url: shown,
            conn: Mutex::new(None),
            epoch: Mutex::new(String::new()),
        };
        let epoch = store.init()?;
        *store.epoch.lock().unwrap_or_else(|p| p.into_inner()) = epoch;
        Ok(store)
    }

    /// Writes the schema version and an epoch where they are missing, checks the
    /// version, and answers the epoch.
    fn init(&self) -> Result<String, StoreError> {
        let fresh = crate::secrets::random_bytes(&ring::rand::SystemRandom::new(), 16)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let fresh = crate::secrets::hex(&fresh);
        let (stored, epoch): (String, String) = self.run(Idempotent::Yes, |c| {
            INIT.key(keys::schema())
                .key(keys::epoch())
                .arg(SCHEMA_VERSION)
                .arg(&fresh)
                .invoke(c)
        })?;
        let version: u64 = number(&stored, "the store", "schema version")?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "schema version {version} is newer than this netbore ({SCHEMA_VERSION}); run a newer netbore"
            )));
        }
        Ok(epoch)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        // The guarded value is a connection or nothing; a panic while holding it
        // leaves at worst a connection mid-reply, which the next error replaces.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let unreachable = |e: RedisError| StoreError::Unreachable {
            url: self.url.clone(),
            reason: describe(&e),
        };
        let conn = self
            .client
            .get_connection_with_timeout(IO_TIMEOUT)
            .map_err(unreachable)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(unreachable)?;
        Ok(conn)
    }

    /// Runs `op` on the connection, opening one if there is none, and keeps the
    /// connection only if it is still in step with Redis afterwards.
    fn run<T>(
        &self,
        idempotent: Idempotent,
        op: impl Fn(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut slot = self.lock();
        let mut may_retry = idempotent == Idempotent::Yes;
        loop {
            let (mut conn, reused) = match slot.take() {
                Some(conn) => (conn, true),
                None => (self.connect()?, false),
            };
            match op(&mut conn) {
                Ok(v) => {
                    *slot = Some(conn);
                    return Ok(v);
                }
                Err(e) if keeps_connection(&e) && conn.is_open() => {
                    *slot = Some(conn);
                    return Err(self.failed(&e));
                }
                // The connection is dropped: a read on one that was open since an
                // earlier call (Redis may have restarted) is tried once on a new one.
                Err(_) if reused && may_retry => may_retry = false,
                Err(e) if e.is_io_error() => {
                    return Err(StoreError::Unreachable {
                        url: self.url.clone(),
                        reason: describe(&e),
                    });
                }
                Err(e) => return Err(self.failed(&e)),
            }
        }
    }

    fn failed(&self, e: &RedisError) -> StoreError {
        StoreError::Backend(format!("Redis at {}: {}", self.url, describe(e)))
    }

    /// Runs a script that answers -1 when keys it was given changed before it ran,
    /// building it again from a fresh read each time.
    fn retrying(
        &self,
        what: &str,
        attempt: impl Fn(&mut Connection) -> RedisResult<i64>,
    ) -> Result<i64, StoreError> {
        for _ in 0..MAX_RETRIES {
            let outcome = self.run(Idempotent::No, &attempt)?;
            if outcome != -1 {
                return Ok(outcome);
            }
        }
        Err(StoreError::Backend(format!(
            "{what} kept racing other writers in Redis at {}; try again",
            self.url
        )))
    }

    /// The records stored under `ids`, in that order, skipping any deleted since the
    /// ids were read.
    fn hashes(
        conn: &mut Connection,
        ids: &[String],
        key: impl Fn(&str) -> String,
    ) -> RedisResult<Vec<HashMap<String, String>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(key(id));
        }
        let all: Vec<HashMap<String, String>> = pipe.query(conn)?;
        Ok(all.into_iter().filter(|h| !h.is_empty()).collect())
    }

    fn tunnels_in(&self, index: &str) -> Result<Vec<TunnelRecord>, StoreError> {
        let found = self.run(Idempotent::Yes, |c| {
            let ids: Vec<String> = redis::cmd("ZRANGE").arg(index).arg(0).arg(-1).query(c)?;
            Self::hashes(c, &ids, keys::tunnel)
        })?;
        found.iter().map(tunnel_from_hash).collect()
    }

    fn tunnel_at(&self, key: &str) -> Result<Option<TunnelRecord>, StoreError> {
        let found: HashMap<String, String> =
            self.run(Idempotent::Yes, |c| redis::cmd("HGETALL").arg(key).query(c))?;
        if found.is_empty() {
            return Ok(None);
        }
        tunnel_from_hash(&found).map(Some)
    }
}

impl Store for RedisStore {
    fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let outcome: i64 = self.run(Idempotent::No, |c| {
            INSERT_KEY
                .key(keys::api_key(&key.id))
                .key(keys::api_keys())
                .key(keys::keys_by_hash())
                .arg(&key.id)
                .arg(&key.label)
                .arg(&key.secret_hash)
                .arg(key.created_at)
                .arg(u8::from(key.revoked))
                .invoke(c)
        })?;
        match outcome {
            0 => Ok(()),
            1 => Err(StoreError::Backend(format!(
                "an API key with id {} already exists",
                key.id
            ))),
            _ => Err(StoreError::Backend(
                "an API key with the same secret already exists".into(),
            )),
        }
    }

    fn key_by_hash(&self, secret_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let found = self.run(Idempotent::Yes, |c| {
            let id: Option<String> = redis::cmd("HGET")
                .arg(keys::keys_by_hash())
                .arg(secret_hash)
                .query(c)?;
            match id {
                Some(id) => redis::cmd("HGETALL").arg(keys::api_key(&id)).query(c),
                None => Ok(HashMap::new()),
            }
        })?;
        if found.is_empty() {
            return Ok(None);
        }
        key_from_hash(&found).map(Some)
    }

    fn key_by_id(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let found: HashMap<String, String> = self.run(Idempotent::Yes, |c| {
            redis::cmd("HGETALL").arg(keys::api_key(id)).query(c)
        })?;
        if found.is_empty() {
            return Ok(None);
        }
        key_from_hash(&found).map(Some)
    }

    fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let found = self.run(Idempotent::Yes, |c| {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(keys::api_keys())
                .arg(0)
                .arg(-1)
                .query(c)?;
            Self::hashes(c, &ids, keys::api_key)
        })?;
        found.iter().map(key_from_hash).collect()
    }

    fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let outcome = self.retrying("revoking the API key", |c| {
            let names: Vec<String> = redis::cmd("SMEMBERS").arg(keys::names_of(id)).query(c)?;
            let mut call = REVOKE_KEY.prepare_invoke();
            call.key(keys::api_key(id))
                .key(keys::names_of(id))
                .key(keys::revocations())
                .arg(id);
            for name in &names {
                call.key(keys::name(name)).arg(name);
            }
            call.invoke(c)
        })?;
        Ok(outcome == 1)
    }

    fn reserve_name(
        &self,
        name: &str,
        key_id: &str,
        now: u64,
        max_per_key: usize,
    ) -> Result<Reserve, StoreError> {
        let outcome: i64 = self.run(Idempotent::No, |c| {
            RESERVE_NAME
                .key(keys::name(name))
                .key(keys::names_of(key_id))
                .key(keys::api_key(key_id))
                .arg(name)
                .arg(key_id)
                .arg(now)
                .arg(u64::try_from(max_per_key).unwrap_or(u64::MAX))
                .invoke(c)
        })?;
        match outcome {
            0 => Ok(Reserve::Reserved),
            1 => Ok(Reserve::AlreadyYours),
            2 => Ok(Reserve::Taken),
            3 => Ok(Reserve::LimitReached),
            _ => Err(StoreError::Backend(format!(
                "cannot reserve {name} for {key_id}: there is no such API key"
            ))),
        }
    }

    fn name_reservation(&self, name: &str) -> Result<Option<ReservedName>, StoreError> {
        let found: HashMap<String, String> = self.run(Idempotent::Yes, |c| {
            redis::cmd("HGETALL").arg(keys::name(name)).query(c)
        })?;
        if found.is_empty() {
            return Ok(None);
        }
        name_from_hash(&found).map(Some)
    }

    fn names_of(&self, key_id: &str) -> Result<Vec<ReservedName>, StoreError> {
        let found = self.run(Idempotent::Yes, |c| {
            let names: Vec<String> = redis::cmd("SMEMBERS")
                .arg(keys::names_of(key_id))
                .query(c)?;
            Self::hashes(c, &names, keys::name)
        })?;
        let mut names = found
            .iter()
            .map(name_from_hash)
            .collect::<Result<Vec<_>, _>>()?;
        // A name released and taken by another key between the two reads is not ours.
        names.retain(|n| n.key_id == key_id);
        names.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(names)
    }

    fn release_name(&self, name: &str, key_id: &str) -> Result<bool, StoreError> {
        let outcome: i64 = self.run(Idempotent::No, |c| {
            RELEASE_NAME
                .key(keys::name(name))
                .key(keys::names_of(key_id))
                .arg(name)
                .arg(key_id)
                .invoke(c)
        })?;
        Ok(outcome == 1)
    }

    fn insert_tunnel(&self, t: &TunnelRecord) -> Result<(), StoreError> {
        let outcome: i64 = self.run(Idempotent::No, |c| {
            let mut call = INSERT_TUNNEL.prepare_invoke();
            call.key(keys::tunnel(&t.tunnel_id))
                .key(keys::tunnels())
                .key(keys::tunnels_by_recreate())
                .key(keys::tunnels_of(&t.owner));
            if let Some(name) = &t.name {
                call.key(keys::tunnels_named(name));
            }
            call.arg(&t.tunnel_id)
                .arg(&t.owner)
                .arg(t.protocol.as_str())
                .arg(&t.public_url)
                .arg(&t.recreate_hash)
                .arg(t.created_at)
                .arg(t.name.as_deref().unwrap_or(""))
                .arg(t.remote_port.map(|p| p.to_string()).unwrap_or_default())
                .invoke(c)
        })?;
        match outcome {
            0 => Ok(()),
            1 => Err(StoreError::Backend(format!(
                "a tunnel with id {} already exists",
                t.tunnel_id
            ))),
            _ => Err(StoreError::Backend(
                "a tunnel with the same recreate token already exists".into(),
            )),
        }
    }

    fn tunnel(&self, tunnel_id: &str) -> Result<Option<TunnelRecord>, StoreError> {
        self.tunnel_at(&keys::tunnel(tunnel_id))
    }

    fn tunnel_by_recreate_hash(
        &self,
        recreate_hash: &str,
    ) -> Result<Option<TunnelRecord>, StoreError> {
        let found = self.run(Idempotent::Yes, |c| {
            let id: Option<String> = redis::cmd("HGET")
                .arg(keys::tunnels_by_recreate())
                .arg(recreate_hash)
                .query(c)?;
            match id {
                Some(id) => redis::cmd("HGETALL").arg(keys::tunnel(&id)).query(c),
                None => Ok(HashMap::new()),
            }
        })?;
        if found.is_empty() {
            return Ok(None);
        }
        let tunnel = tunnel_from_hash(&found)?;
        // Deleted, and the id reused by another tunnel, between the two reads.
        Ok(Some(tunnel).filter(|t| t.recreate_hash == recreate_hash))
    }

    fn tunnels_of(&self, owner: &str) -> Result<Vec<TunnelRecord>, StoreError> {
        let mut found = self.tunnels_in(&keys::tunnels_of(owner))?;
        found.retain(|t| t.owner == owner);
        Ok(found)
    }

    fn tunnels_named(&self, name: &str) -> Result<Vec<TunnelRecord>, StoreError> {
        let mut found = self.tunnels_in(&keys::tunnels_named(name))?;
        found.retain(|t| t.name.as_deref() == Some(name));
        Ok(found)
    }

    fn all_tunnels(&self) -> Result<Vec<TunnelRecord>, StoreError> {
        self.tunnels_in(&keys::tunnels())
    }

    fn set_public_url(&self, tunnel_id: &str, public_url: &str) -> Result<(), StoreError> {
        let _changed: i64 = self.run(Idempotent::Yes, |c| {
            SET_PUBLIC_URL
                .key(keys::tunnel(tunnel_id))
                .arg(public_url)
                .invoke(c)
        })?;
        Ok(())
    }

    fn delete_tunnel(&self, tunnel_id: &str) -> Result<bool, StoreError> {
        let key = keys::tunnel(tunnel_id);
        let outcome = self.retrying("deleting the tunnel", |c| {
            let fields: HashMap<String, String> = redis::cmd("HGETALL").arg(&key).query(c)?;
            let (Some(owner), Some(recreate_hash)) =
                (fields.get("owner"), fields.get("recreate_hash"))
            else {
                // Absent (or a record without its indexes' fields, which only a
                // hand edit makes): nothing to delete.
                return Ok(0);
            };
            let mut call = DELETE_TUNNEL.prepare_invoke();
            call.key(&key)
                .key(keys::tunnels())
                .key(keys::tunnels_by_recreate())
                .key(keys::tunnels_of(owner))
                .arg(tunnel_id)
                .arg(owner)
                .arg(recreate_hash);
            if let Some(name) = fields.get("name") {
                call.key(keys::tunnels_named(name)).arg(name);
            }
            call.invoke(c)
        })?;
        Ok(outcome == 1)
    }

    fn count_tunnels(&self) -> Result<u64, StoreError> {
        self.run(Idempotent::Yes, |c| {
            redis::cmd("ZCARD").arg(keys::tunnels()).query(c)
        })
    }

    fn change_marker(&self) -> Result<Option<u64>, StoreError> {
        // Only the revocation script writes it, on every revocation by any process.
        let count: Option<u64> = self.run(Idempotent::Yes, |c| {
            redis::cmd("GET").arg(keys::revocations()).query(c)
        })?;
        Ok(Some(count.unwrap_or(0)))
    }

    fn health(&self) -> Result<(), StoreError> {
        // An answer proves Redis is up; a missing schema key means the store's data
        // is gone (flushed, evicted, or a restart without persistence), which the
        // nodes must not paper over by serving from an empty store.
        let present: bool = self.run(Idempotent::Yes, |c| {
            redis::cmd("EXISTS").arg(keys::schema()).query(c)
        })?;
        if present {
            Ok(())
        } else {
            Err(StoreError::Backend(format!(
                "Redis at {} no longer holds the netbore store (was it flushed or restarted without persistence?)",
                self.url
            )))
        }
    }

    fn recover(&self) -> Result<bool, StoreError> {
        // The first node (or `netbore key`) to find the store gone writes a new
        // epoch; every node sees it differ from the one it read last.
        let epoch = self.init()?;
        let mut seen = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == epoch {
            return Ok(false);
        }
        *seen = epoch;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/2"),
            "redis://127.0.0.1:6379/2"
        );
        assert_eq!(
            redact_url("redis://:s3cret@redis.internal:6379/0"),
            "redis://:***@redis.internal:6379/0"
        );
        assert_eq!(
            redact_url("redis://netbore:p@ss@host/1"),
            "redis://netbore:***@host/1"
        );
        assert_eq!(redact_url("redis://user@host"), "redis://user@host");
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock"),
            "redis+unix:///run/redis.sock"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn every_key_carries_the_one_hash_tag() {
        let all = [
            keys::schema(),
            keys::epoch(),
            keys::api_key("k_1"),
            keys::api_keys(),
            keys::keys_by_hash(),
            keys::revocations(),
            keys::name("shop"),
            keys::names_of("k_1"),
            keys::tunnel("tun_1"),
            keys::tunnels(),
            keys::tunnels_by_recreate(),
            keys::tunnels_of("anonymous:2001:db8::1"),
            keys::tunnels_named("web"),
        ];
        for key in all {
            // Redis Cluster hashes the text between the first `{` and the next `}`.
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            assert_eq!(&key[open + 1..close], "store", "{key}");
        }
    }

    #[test]
    fn a_bad_url_is_one_sentence_naming_the_flag() {
        let e = RedisStore::open("http://example.com").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("could not reach Redis at http://example.com"),
            "{msg}"
        );
        assert!(msg.contains("--redis"), "{msg}");
    }

    #[test]
    fn an_unreachable_redis_fails_fast_and_clearly() {
        // A port nobody listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
        let started = std::time::Instant::now();
        let msg = RedisStore::open(&url).unwrap_err().to_string();
        assert!(
            started.elapsed() < IO_TIMEOUT * 2,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            msg,
            format!(
                "could not reach Redis at redis://:***@127.0.0.1:{port}/0: connection refused; check --redis and that Redis is running"
            )
        );
    }
}
