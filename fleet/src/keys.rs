//! The fleet's keys in Redis and the scripts that change them
//! (`docs/protocols/registry.md`, "The fleet").
//!
//! Every key starts with `netbore:{fleet}:`: the `{fleet}` hash tag puts them in one
//! Redis Cluster slot, so every script's keys sit on one node.

use std::sync::LazyLock;

use redis::Script;

/// Every key of the fleet starts with this.
pub(crate) const PREFIX: &str = "netbore:{fleet}:";

/// Sorted set: node id → the Redis time of its last heartbeat, in milliseconds.
pub(crate) fn nodes() -> String {
    format!("{PREFIX}nodes")
}

/// Hash: one node's `incarnation` and `info` (JSON of [`crate::NodeInfo`]).
pub(crate) fn node(id: &str) -> String {
    format!("{PREFIX}node:{id}")
}

/// Hash: route key (`http:NAME`, `tls:NAME`, `tcp:PORT`) → `NODE INCARNATION
/// GENERATION TUNNEL_ID AGENT` (AGENT is `-` when masked).
pub(crate) fn routes() -> String {
    format!("{PREFIX}routes")
}

/// String: the last generation handed out.
pub(crate) fn generation() -> String {
    format!("{PREFIX}generation")
}

/// String: the secret links between nodes are proven with (hex).
pub(crate) fn secret() -> String {
    format!("{PREFIX}secret")
}

/// The pub/sub channel route changes are announced on: `set KEY VALUE`,
/// `del KEY NODE INCARNATION GENERATION`.
pub(crate) fn channel() -> String {
    format!("{PREFIX}routes")
}

/// Writes a node's record and heartbeat, and drops nodes silent for six leases.
/// `KEYS`: nodes, node:<id>. `ARGV`: id, incarnation, lease in ms, info.
/// Answers 1 when the record was missing or of another incarnation (a new node, or
/// a Redis that lost its data): the node must publish its tunnels again.
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
local known = redis.call('HGET', KEYS[2], 'incarnation')
redis.call('HSET', KEYS[2], 'incarnation', ARGV[2], 'info', ARGV[4])
redis.call('PEXPIRE', KEYS[2], lease * 6)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - lease * 6)
if known ~= ARGV[2] then return 1 end
return 0
",
    )
});

/// Takes a route for this node with a new generation and announces it. A route's
/// value is its holders, `;`-separated, each `NODE INCARNATION GENERATION TUNNEL_ID
/// AGENT`: other nodes' holders of the same tunnel stay (an agent with sessions on
/// several nodes, `--ha`) while their nodes are in the node list (those of nodes
/// that left it are dropped, each announced with `del`); holders of another tunnel
/// are superseded; this node's own earlier holder is replaced.
/// `KEYS`: routes, generation, nodes. `ARGV`: route key, `NODE INCARNATION`,
/// `TUNNEL_ID AGENT`, channel, mode. Mode `take` takes the route whoever has it (an
/// agent brought the tunnel online here now); `keep` takes it only when no other
/// listed node holds another tunnel there (writing routes again after Redis lost them
/// or a connection broke, which must not undo a claim by another tunnel in between),
/// and keeps this node's entry with its generation when it is still there, so a
/// holder that claimed since stays the newest. Answers the generation, or -1 when
/// `keep` found another tunnel's holder.
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local node = string.match(ARGV[2], '^(%S+)')
local tunnel = string.match(ARGV[3], '^(%S+)')
local kept = {}
local gone = {}
local mine = nil
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  for e in string.gmatch(old, '[^;]+') do
    local n, owner, t = string.match(e, '^((%S+) %S+ %S+) (%S+)')
    if owner and owner ~= node and redis.call('ZSCORE', KEYS[3], owner) then
      if t == tunnel then
        table.insert(kept, e)
      elseif ARGV[5] == 'keep' then
        return -1
      end
    elseif owner and owner ~= node then
      table.insert(gone, n)
    elseif ARGV[5] == 'keep' and t == tunnel and string.sub(e, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. ' ' then
      mine = e
    end
  end
end
local g
local v
if mine then
  -- Written again as it was: a holder that claimed since stays the newest.
  v = mine
  g = tonumber(string.match(mine, '^%S+ %S+ (%S+)'))
else
  g = redis.call('INCR', KEYS[2])
  v = ARGV[2] .. ' ' .. g .. ' ' .. ARGV[3]
end
table.insert(kept, v)
redis.call('HSET', KEYS[1], ARGV[1], table.concat(kept, ';'))
redis.call('PUBLISH', ARGV[4], 'set ' .. ARGV[1] .. ' ' .. v)
for _, n in ipairs(gone) do
  redis.call('PUBLISH', ARGV[4], 'del ' .. ARGV[1] .. ' ' .. n)
end
return g
",
    )
});

/// Drops this node's holder of a route if it is still this node's entry for that
/// tunnel (a node cut off from the fleet never removes its successor's entry), and
/// announces it; the other holders stay.
/// `KEYS`: routes. `ARGV`: route key, `NODE INCARNATION GENERATION` (or `NODE
/// INCARNATION` when the node never learnt the generation: a claim whose answer was
/// lost), channel, tunnel id. The announcement names the generation removed. Answers
/// 1 when removed.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local kept = {}
local gone = nil
for e in string.gmatch(v, '[^;]+') do
  local node, inc, gen, tunnel = string.match(e, '^(%S+) (%S+) (%S+) (%S+)')
  if not gone and tunnel == ARGV[4] and string.sub(e, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. ' ' then
    gone = node .. ' ' .. inc .. ' ' .. gen
  else
    table.insert(kept, e)
  end
end
if not gone then
  -- Gone already (a claim dropped it while this node was out of the node list):
  -- announced anyway, so no replica keeps it.
  local n, inc, gen = string.match(ARGV[2], '^(%S+) (%S+) (%S+)$')
  if gen then
    redis.call('PUBLISH', ARGV[3], 'del ' .. ARGV[1] .. ' ' .. n .. ' ' .. inc .. ' ' .. gen)
  end
  return 0
end
if #kept == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], table.concat(kept, ';'))
end
redis.call('PUBLISH', ARGV[3], 'del ' .. ARGV[1] .. ' ' .. gone)
return 1
",
    )
});

/// String: a used token id (`jti`), kept until its token has expired.
pub(crate) fn token_id(jti: &str) -> String {
    format!("{PREFIX}jti:{jti}")
}

/// Records single-use token ids, all or none. `KEYS`: `jti:<id>` for each token.
/// `ARGV`: the caller's random value, then how many seconds (at least 1) each id
/// must be kept, in `KEYS` order (durations, not times: the nodes' clocks and
/// Redis's need not agree). Answers 1 when no id was recorded
/// before, or only with this caller's value (a retried call), and all are recorded
/// now; 0 when one was used by another call (nothing is written).
pub(crate) static USE_TOKENS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and v ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[i + 1])
end
return 1
",
    )
});

/// String: the tunnel id a public name or port is reserved for. `what` is
/// `name:NAME` (HTTP and TLS tunnels share names) or `port:PORT`.
pub(crate) fn reservation(what: &str) -> String {
    format!("{PREFIX}reserved:{what}")
}

/// The route key of this node's held routes that a reservation `what` covers
/// (`name:NAME` → `http:NAME`; a TLS tunnel's `tls:NAME` is checked by the caller
/// through this too only for HTTP, which is enough to skip a needless release).
pub(crate) fn reservation_route(what: &str) -> Option<String> {
    let (kind, rest) = what.split_once(':')?;
    match kind {
        "name" => Some(format!("http:{rest}")),
        "port" => Some(format!("tcp:{rest}")),
        _ => None,
    }
}

/// What the route key `route` (`http:NAME`, `tls:NAME`, `tcp:PORT`) reserves.
pub(crate) fn reserved_as(route: &str) -> Option<String> {
    let (kind, rest) = route.split_once(':')?;
    match kind {
        "http" | "tls" => Some(format!("name:{rest}")),
        "tcp" => Some(format!("port:{rest}")),
        _ => None,
    }
}

/// String: a control API client's fleet-wide bucket, as the Redis time (in
/// microseconds) its next request is due at the rate: a cell rate algorithm.
pub(crate) fn rate(client: &str) -> String {
    format!("{PREFIX}rate:{client}")
}

/// Takes one request from a client's fleet-wide bucket, on Redis's clock so that
/// every node counts alike. `KEYS`: `rate:<client>`. `ARGV`: microseconds between
/// two requests at the rate, and the burst's length in microseconds (the burst times
/// that). Answers 0 when the request may go, else the microseconds to wait.
pub(crate) static TAKE_RATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local due = tonumber(redis.call('GET', KEYS[1]) or '0')
if due < now then due = now end
local later = due + tonumber(ARGV[1])
local over = later - now - tonumber(ARGV[2])
if over > 0 then return math.ceil(over) end
redis.call('SET', KEYS[1], string.format('%.0f', later), 'PX', math.ceil((later - now) / 1000) + 1)
return 0
",
    )
});

/// Reserves a public name or port for a tunnel. `KEYS`: `reserved:<what>`. `ARGV`:
/// tunnel id, milliseconds to hold it. Answers 0 when it is reserved for another
/// tunnel; else 1, and the reservation lasts at least that long from now.
pub(crate) static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
if v and redis.call('PTTL', KEYS[1]) >= tonumber(ARGV[2]) then return 1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// Drops a reservation if it is still this tunnel's. `KEYS`: `reserved:<what>`.
/// `ARGV`: tunnel id. Answers 1 when dropped.
pub(crate) static UNRESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
",
    )
});

/// String: the fleet's ACME account (JSON: directory and credentials).
pub(crate) fn acme_account() -> String {
    format!("{PREFIX}acme:account")
}

/// Hash: `chain` and `key` (PEM) of the ACME certificate of a name.
pub(crate) fn acme_certificate(name: &str) -> String {
    format!("{PREFIX}acme:cert:{name}")
}

/// String: the answer to an ACME challenge being validated (`kind` `http01` by
/// token, `alpn` by name); expires.
pub(crate) fn acme_challenge(kind: &str, id: &str) -> String {
    format!("{PREFIX}acme:challenge:{kind}:{id}")
}

/// String: the id of the node ordering a name's certificate now; expires.
pub(crate) fn acme_order(name: &str) -> String {
    format!("{PREFIX}acme:order:{name}")
}

/// String: a name whose order failed lately (the directory's limits on failed
/// validations are the account's, which every node shares); expires.
pub(crate) fn acme_failed(name: &str) -> String {
    format!("{PREFIX}acme:failed:{name}")
}
