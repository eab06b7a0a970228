//! The store's schema in Redis: the name of every key, and the Lua scripts that
//! change several keys at once (`docs/protocols/registry.md` has both in tables).
//!
//! Each script checks everything before its first write, so an error cannot leave
//! half a change, and names every key it touches in `KEYS`, as Redis Cluster requires.
//! The doc comment of each says what it answers.

use std::sync::LazyLock;

use redis::Script;

/// The names of the store's keys.
pub(super) mod keys {
    /// Every key of the store starts with this; `{store}` is the hash tag.
    pub(crate) const PREFIX: &str = "netbore:{store}:";

    fn key(kind: &str, id: &str) -> String {
        format!("{PREFIX}{kind}:{id}")
    }

    /// String: the schema version.
    pub(crate) fn schema() -> String {
        format!("{PREFIX}schema")
    }
    /// String: random, written with the schema version where there is none: another
    /// value than a node last read means the store lost its data and was written
    /// again since.
    pub(crate) fn epoch() -> String {
        format!("{PREFIX}epoch")
    }
    /// Hash: one API key.
    pub(crate) fn api_key(id: &str) -> String {
        key("key", id)
    }
    /// Sorted set: every key id, scored by creation time.
    pub(crate) fn api_keys() -> String {
        format!("{PREFIX}keys")
    }
    /// Hash: secret hash → key id.
    pub(crate) fn keys_by_hash() -> String {
        format!("{PREFIX}keys-by-hash")
    }
    /// String: how many revocations were made (the change marker).
    pub(crate) fn revocations() -> String {
        format!("{PREFIX}revocations")
    }
    /// Hash: one reserved name.
    pub(crate) fn name(name: &str) -> String {
        key("name", name)
    }
    /// Set: the names one key holds.
    pub(crate) fn names_of(key_id: &str) -> String {
        key("names-of", key_id)
    }
    /// Hash: one tunnel record.
    pub(crate) fn tunnel(id: &str) -> String {
        key("tunnel", id)
    }
    /// Sorted set: every tunnel id, scored by creation time.
    pub(crate) fn tunnels() -> String {
        format!("{PREFIX}tunnels")
    }
    /// Hash: recreate-token hash → tunnel id.
    pub(crate) fn tunnels_by_recreate() -> String {
        format!("{PREFIX}tunnels-by-recreate")
    }
    /// Sorted set: the tunnels of one owner, scored by creation time.
    pub(crate) fn tunnels_of(owner: &str) -> String {
        key("tunnels-of", owner)
    }
    /// Sorted set: the tunnels with one name, scored by creation time.
    pub(crate) fn tunnels_named(name: &str) -> String {
        key("tunnels-named", name)
    }
}

/// Writes the schema version and an epoch unless they are there; answers the stored
/// ones.
pub(super) static INIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: schema, epoch. ARGV: version, a new random epoch.
redis.call('SET', KEYS[1], ARGV[1], 'NX')
redis.call('SET', KEYS[2], ARGV[2], 'NX')
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
",
    )
});

/// 0 stored; 1 the id exists; 2 the secret hash exists.
pub(super) static INSERT_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: key:<id>, keys, keys-by-hash. ARGV: id, label, secret_hash, created_at, revoked.
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return 2 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'label', ARGV[2], 'secret_hash', ARGV[3],
  'created_at', ARGV[4], 'revoked', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
return 0
",
    )
});

/// -1 retry (the key's names changed since the client read them); 0 no such key
/// (its names, if any, are released all the same); 1 revoked.
pub(super) static REVOKE_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: key:<id>, names-of:<id>, revocations, then name:<n> for each name the client
-- read from names-of:<id>. ARGV: id, then those names in the same order.
if redis.call('SCARD', KEYS[2]) ~= #KEYS - 3 then return -1 end
for i = 4, #KEYS do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i - 2]) == 0 then return -1 end
end
for i = 4, #KEYS do
  if redis.call('HGET', KEYS[i], 'key_id') == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'revoked', '1')
redis.call('INCR', KEYS[3])
return 1
",
    )
});

/// 0 reserved; 1 already the key's; 2 another key's; 3 quota reached; -2 no such key.
pub(super) static RESERVE_NAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: name:<name>, names-of:<key_id>, key:<key_id>.
-- ARGV: name, key_id, now, max_per_key.
local holder = redis.call('HGET', KEYS[1], 'key_id')
if holder == ARGV[2] then return 1 end
if holder then return 2 end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 3 end
if redis.call('EXISTS', KEYS[3]) == 0 then return -2 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'key_id', ARGV[2], 'created_at', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 0
",
    )
});

/// 1 released; 0 the key does not hold the name.
pub(super) static RELEASE_NAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: name:<name>, names-of:<key_id>. ARGV: name, key_id.
if redis.call('HGET', KEYS[1], 'key_id') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
",
    )
});

/// 0 stored; 1 the id exists; 2 the recreate hash exists.
pub(super) static INSERT_TUNNEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: tunnel:<id>, tunnels, tunnels-by-recreate, tunnels-of:<owner>, and
-- tunnels-named:<name> when the tunnel has a name.
-- ARGV: tunnel_id, owner, protocol, public_url, recreate_hash, created_at, name (when
-- it has one, else ''), remote_port ('' for none).
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if redis.call('HEXISTS', KEYS[3], ARGV[5]) == 1 then return 2 end
redis.call('HSET', KEYS[1], 'tunnel_id', ARGV[1], 'owner', ARGV[2], 'protocol', ARGV[3],
  'public_url', ARGV[4], 'recreate_hash', ARGV[5], 'created_at', ARGV[6])
if KEYS[5] then redis.call('HSET', KEYS[1], 'name', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'remote_port', ARGV[8]) end
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
if KEYS[5] then redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1]) end
return 0
",
    )
});

/// 1 deleted; 0 no such tunnel; -1 retry (the record is not the one the client read).
pub(super) static DELETE_TUNNEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: tunnel:<id>, tunnels, tunnels-by-recreate, tunnels-of:<owner>, and
-- tunnels-named:<name> when the record the client read has a name.
-- ARGV: tunnel_id, owner, recreate_hash, name (when it has one).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local f = redis.call('HMGET', KEYS[1], 'owner', 'recreate_hash', 'name')
if f[1] ~= ARGV[2] or f[2] ~= ARGV[3] then return -1 end
if KEYS[5] then
  if f[3] ~= ARGV[4] then return -1 end
elseif f[3] then
  return -1
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[1])
if KEYS[5] then redis.call('ZREM', KEYS[5], ARGV[1]) end
return 1
",
    )
});

/// 1 changed; 0 no such tunnel (nothing is created).
pub(super) static SET_PUBLIC_URL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: tunnel:<id>. ARGV: public_url.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'public_url', ARGV[1])
return 1
",
    )
});
