//! What the nodes of a Netbore fleet share through Redis besides the control store:
//! the node list with heartbeats, the tunnel directory (which node holds which
//! tunnel, fenced by generations), and pub/sub announcements of its changes. The
//! Edge and the control plane see it only through their traits
//! ([`netbore_edge::fleet::Directory`], [`netbore_control::Nodes`]).
//!
//! `docs/protocols/registry.md` ("The fleet") lists the keys and scripts. In short:
//! each node heartbeats its record every [`HEARTBEAT`]; a node silent for [`LEASE`]
//! is dead to the others, and so are the routes it published, at once, without
//! touching them. A route is taken with a new generation from one counter and
//! removed only by the node and generation that took it, so a node cut off from
//! Redis can never remove or overwrite the entry of the node that took its tunnel
//! over. Each node keeps a replica of the whole route table, loaded when it
//! subscribes and kept current by the announcements, so the forwarding path never
//! waits on Redis, and keeps working from the replica while Redis is away.
//!
//! Two threads per node, owned by [`Fleet`] and stopped when it is dropped: the
//! worker (heartbeats, the node list, publishing this node's routes, publishing them
//! all again when Redis lost them) and the subscriber.

mod acme;
mod calls;
mod keys;
mod replica;
mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use netbore_control::api::EdgeCandidate;
use netbore_control::tokens::TrustedKeys;
use netbore_edge::fleet::{Directory, Holder, RouteKey, StoreUnavailable};
use serde::{Deserialize, Serialize};

use crate::replica::Replica;
use crate::worker::Command;

/// How often a node writes its heartbeat and reads the node list.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long after its last heartbeat a node, and every tunnel it published, is dead
/// to the others.
pub const LEASE: Duration = Duration::from_secs(5);

/// How long a public name or port stays reserved for its tunnel after the node
/// holding it stopped refreshing the reservation (it died, or the tunnel went
/// offline): its agent reclaims it elsewhere well within this.
pub const RESERVATION_GRACE: Duration = Duration::from_secs(30);

/// How long connecting to Redis and each command may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// A node as the node list describes it (JSON in its record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id (`--node-id`).
    pub id: String,
    /// Random, new each time the node starts: routes published by an earlier run are
    /// not this run's.
    #[serde(default)]
    pub incarnation: String,
    /// `--region`, or empty.
    #[serde(default)]
    pub region: String,
    /// `HOST:PORT` agents and other nodes dial.
    pub agent_addr: String,
    /// The node's control API.
    pub control_url: String,
    /// Transports offered to agents, most preferred first.
    #[serde(default)]
    pub transports: Vec<String>,
    /// The agent listener's certificate comes from the node's development CA.
    #[serde(default)]
    pub development_ca: bool,
    /// The fingerprint of the certificate the agent listener shows (links pin it).
    pub link_cert: String,
    /// The raw Ed25519 public key this node signs tunnel tokens with, in hex: the
    /// other nodes accept its tokens while the node is alive.
    #[serde(default)]
    pub signing_key: String,
    /// Tunnels the node holds.
    #[serde(default)]
    pub load: u64,
    /// The node is draining: it takes no new tunnels.
    #[serde(default)]
    pub draining: bool,
}

/// Why a node could not join its fleet.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Redis did not answer.
    #[error("could not reach Redis at {url}: {reason}; check --redis and that Redis is running")]
    Unreachable {
        /// The URL, password hidden.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The node id would break the directory's format.
    #[error(
        "the node id {0:?} is not usable; use letters, digits, '.', '-', '_' and ':' (at most 64)"
    )]
    BadNodeId(String),
}

/// Whether `id` can be a node id: it is written space-separated in route entries.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

/// State the threads and the traits share.
#[derive(Debug)]
struct Shared {
    node: NodeInfo,
    mask_agent: bool,
    replica: RwLock<Replica>,
    /// Moves on after every change of `replica`, under its lock
    /// ([`Directory::version`]).
    version: AtomicU64,
    secret: RwLock<Option<Vec<u8>>>,
    stop: AtomicBool,
    /// Set by the worker when Redis lost its data: the subscriber loads the route
    /// table again.
    reload: AtomicBool,
    /// Routes this node holds (its load).
    held: AtomicU64,
    /// The node is draining: its record says so, and it is no candidate.
    draining: AtomicBool,
    /// The token signing keys of the other live nodes, kept current by the worker.
    trusted: TrustedKeys,
    /// The other live nodes that take tunnels, by id, kept current by the worker.
    others: tokio::sync::watch::Sender<Vec<netbore_edge::fleet::FleetNode>>,
}

impl Shared {
    /// Changes the replica with `f`, then moves its version on while still holding
    /// the lock: a version read after the change is visible is a new one.
    /// A change that panics half-way moves the version on too.
    fn change_replica<R>(&self, f: impl FnOnce(&mut Replica) -> R) -> R {
        struct MoveOn<'a>(&'a AtomicU64);
        impl Drop for MoveOn<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Release);
            }
        }
        let mut replica = self.replica.write().unwrap_or_else(|e| e.into_inner());
        // Dropped before the lock is.
        let _move_on = MoveOn(&self.version);
        f(&mut replica)
    }
}

/// This node's membership of a fleet. Dropping it stops its threads (the node's
/// record then expires after [`LEASE`]).
#[derive(Debug)]
pub struct Fleet {
    shared: Arc<Shared>,
    commands: Mutex<mpsc::Sender<Command>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The connection of the calls the Edge waits for (token ids, reservations).
    calls: calls::Calls,
    /// A connection of its own for ACME's calls, some of which a stranger can cause
    /// (a challenge fetched here): they never hold up the calls agents wait for.
    acme_calls: calls::Calls,
    /// A connection of its own for the control API's fleet-wide rate limit, which
    /// any client causes and every API request waits for: quick to give up.
    rate_calls: calls::Calls,
}

impl Fleet {
    /// Joins the fleet in the Redis at `url` as `node` (its `incarnation` is made
    /// here): writes the node's record, reads the link secret and the node list, then
    /// starts the threads. Agents' addresses go into the directory unless
    /// `mask_agent`. `trusted` is kept to the signing keys of the other live nodes.
    pub fn join(
        url: &str,
        mut node: NodeInfo,
        mask_agent: bool,
        trusted: TrustedKeys,
    ) -> Result<Arc<Fleet>, FleetError> {
        if !valid_node_id(&node.id) {
            return Err(FleetError::BadNodeId(node.id));
        }
        node.incarnation = random_hex(8);
        let client = redis::Client::open(url).map_err(|e| FleetError::Unreachable {
            url: redact(url),
            reason: e.to_string(),
        })?;
        let shared = Arc::new(Shared {
            node,
            mask_agent,
            replica: RwLock::default(),
            version: AtomicU64::new(0),
            secret: RwLock::default(),
            stop: AtomicBool::new(false),
            reload: AtomicBool::new(false),
            held: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            trusted,
            others: tokio::sync::watch::Sender::new(Vec::new()),
        });
        let (tx, rx) = mpsc::channel();
        let mut worker = worker::Worker::new(client.clone(), shared.clone(), rx);
        worker
            .first_contact()
            .map_err(|e| FleetError::Unreachable {
                url: redact(url),
                reason: e.to_string(),
            })?;
        let calls = calls::Calls::new(client.clone());
        let acme_calls = calls::Calls::new(client.clone());
        let rate_calls = calls::Calls::quick(client.clone());
        let mut threads = Vec::new();
        threads.push(
            std::thread::Builder::new()
                .name("fleet-worker".into())
                .spawn(move || worker.run())
                .expect("spawning a thread works"),
        );
        let subscriber = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("fleet-subscriber".into())
                .spawn(move || worker::subscribe(client, subscriber))
                .expect("spawning a thread works"),
        );
        Ok(Arc::new(Fleet {
            shared,
            commands: Mutex::new(tx),
            threads: Mutex::new(threads),
            calls,
            acme_calls,
            rate_calls,
        }))
    }

    /// Marks this node draining in its record (written at once): the other nodes
    /// stop handing it out as a candidate, and so does its own control plane.
    pub fn set_draining(&self) {
        self.shared.draining.store(true, Ordering::Release);
        self.send(Command::Heartbeat);
    }

    /// This node's record.
    pub fn node(&self) -> &NodeInfo {
        &self.shared.node
    }

    /// The live nodes, this one included.
    pub fn live_nodes(&self) -> Vec<NodeInfo> {
        let replica = self
            .shared
            .replica
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut nodes: Vec<NodeInfo> = replica.nodes().cloned().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    fn send(&self, command: Command) {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        let _ = commands.send(command);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the worker; the subscriber sees the flag within its read timeout.
        drop(std::mem::replace(
            &mut *self.commands.lock().unwrap_or_else(|e| e.into_inner()),
            mpsc::channel().0,
        ));
        for thread in self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = thread.join();
        }
    }
}

impl Directory for Fleet {
    fn watch_nodes(&self) -> tokio::sync::watch::Receiver<Vec<netbore_edge::fleet::FleetNode>> {
        self.shared.others.subscribe()
    }

    fn other_nodes(&self) -> Vec<netbore_edge::fleet::FleetNode> {
        netbore_control::Nodes::others(self)
            .into_iter()
            .filter_map(|c| {
                Some(netbore_edge::fleet::FleetNode {
                    id: c.node?,
                    control_url: c.control_url?,
                })
            })
            .collect()
    }

    fn node_id(&self) -> &str {
        &self.shared.node.id
    }

    fn link_secret(&self) -> Option<Vec<u8>> {
        self.shared
            .secret
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn publish(&self, route: &RouteKey, tunnel_id: &str, agent: Option<SocketAddr>) {
        self.send(Command::Publish {
            key: route.to_string(),
            tunnel_id: tunnel_id.to_string(),
            agent: agent.filter(|_| !self.shared.mask_agent),
        });
    }

    fn withdraw(&self, route: &RouteKey, tunnel_id: &str) {
        self.send(Command::Withdraw {
            key: route.to_string(),
            tunnel_id: tunnel_id.to_string(),
        });
    }

    fn holders(&self, route: &RouteKey) -> Vec<Holder> {
        let replica = self
            .shared
            .replica
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let me = &self.shared.node;
        let mut holders: Vec<(bool, bool, Holder)> = replica
            .holders(&route.to_string())
            .filter(|(_, node)| node.id != me.id)
            .map(|(entry, node)| {
                let holder = Holder {
                    node: node.id.clone(),
                    addr: node.agent_addr.clone(),
                    cert: node.link_cert.clone(),
                    tunnel_id: entry.tunnel_id.clone(),
                    generation: entry.generation,
                    agent: entry.agent,
                };
                (node.draining, node.region != me.region, holder)
            })
            .collect();
        // Stable: the newest claim first among equals.
        holders.sort_by_key(|(draining, far, _)| (*draining, *far));
        holders.into_iter().map(|(_, _, h)| h).collect()
    }

    fn version(&self) -> Option<u64> {
        Some(self.shared.version.load(Ordering::Acquire))
    }

    fn is_holder(&self, route: &RouteKey, node: &str, generation: u64) -> bool {
        let replica = self
            .shared
            .replica
            .read()
            .unwrap_or_else(|e| e.into_inner());
        replica
            .holders(&route.to_string())
            .any(|(e, n)| n.id == node && e.generation == generation)
    }

    fn remote_tcp_ports(&self) -> Vec<u16> {
        let replica = self
            .shared
            .replica
            .read()
            .unwrap_or_else(|e| e.into_inner());
        replica.remote_tcp_ports(&self.shared.node.id)
    }

    fn use_tokens(&self, ids: &[(String, u64)]) -> Result<bool, StoreUnavailable> {
        self.calls.record(ids)
    }

    fn give_back_tokens(&self, ids: &[String]) {
        self.calls.forget(ids);
    }

    fn reserve(
        &self,
        route: &RouteKey,
        tunnel_id: &str,
        hold: Duration,
    ) -> Result<bool, StoreUnavailable> {
        let what = keys::reserved_as(&route.to_string()).expect("a route key has a kind");
        self.calls
            .reserve(&what, tunnel_id, hold.max(RESERVATION_GRACE))
    }
}

impl netbore_control::rate::SharedRate for Fleet {
    fn take(&self, client: std::net::IpAddr, rate: f64, burst: f64) -> Result<(), Duration> {
        match self.rate_calls.take_rate(&client.to_string(), rate, burst) {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(wait),
            // Redis away or busy: each node's own bucket still holds.
            Err(_) => Ok(()),
        }
    }
}

impl netbore_control::Nodes for Fleet {
    fn others(&self) -> Vec<EdgeCandidate> {
        best_first(&self.shared.node, self.live_nodes())
            .into_iter()
            .map(|n| EdgeCandidate {
                addr: n.agent_addr,
                transports: n.transports,
                development_ca: n.development_ca,
                node: Some(n.id),
                region: Some(n.region).filter(|r| !r.is_empty()),
                control_url: Some(n.control_url),
            })
            .collect()
    }

    fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    fn serving(&self, tunnel_id: &str) -> Option<(String, Option<SocketAddr>)> {
        let replica = self
            .shared
            .replica
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let (entry, node) = replica
            .serving(tunnel_id)
            .find(|(_, node)| node.id != self.shared.node.id)?;
        Some((node.id.clone(), entry.agent))
    }
}

/// Which live nodes serve each tunnel now (comma-separated, newest claim first), by
/// tunnel id, read once from the fleet's Redis at `url` (for operators' listings; a
/// node's own lookups use its replica).
pub fn serving_nodes(url: &str) -> Result<HashMap<String, String>, FleetError> {
    let unreachable = |e: redis::RedisError| FleetError::Unreachable {
        url: redact(url),
        reason: e.to_string(),
    };
    let client = redis::Client::open(url).map_err(unreachable)?;
    let mut conn = worker::connect(&client).map_err(unreachable)?;
    let read = |conn: &mut redis::Connection| -> redis::RedisResult<HashMap<String, String>> {
        let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(conn)?;
        let now = seconds * 1000 + micros / 1000;
        let lease = LEASE.as_millis() as u64;
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys::nodes())
            .arg(now.saturating_sub(lease))
            .arg("+inf")
            .query(conn)?;
        // No live node (the whole fleet down, or Redis just restarted): none serves.
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(keys::node(id), "incarnation");
        }
        let incarnations: Vec<Option<String>> = pipe.query(conn)?;
        let live: HashMap<String, String> = ids
            .into_iter()
            .zip(incarnations)
            .filter_map(|(id, inc)| Some((id, inc?)))
            .collect();
        let routes: HashMap<String, String> =
            redis::cmd("HGETALL").arg(keys::routes()).query(conn)?;
        let mut serving: HashMap<String, String> = HashMap::new();
        for e in routes
            .values()
            .flat_map(|v| replica::RouteEntry::parse_all(v))
            .filter(|e| live.get(&e.node) == Some(&e.incarnation))
        {
            serving
                .entry(e.tunnel_id)
                .and_modify(|nodes| {
                    nodes.push(',');
                    nodes.push_str(&e.node);
                })
                .or_insert(e.node);
        }
        Ok(serving)
    };
    read(&mut conn).map_err(unreachable)
}

/// `n` random bytes as lowercase hex.
fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lowercase or uppercase hex; `None` when it is not hex.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `url` with its password, if any, as `***`.
fn redact(url: &str) -> String {
    netbore_control::store::redact_url(url)
}

/// Parses the node list's JSON records, skipping unreadable ones.
fn parse_nodes(records: HashMap<String, String>) -> Vec<NodeInfo> {
    records
        .into_values()
        .filter_map(|info| serde_json::from_str(&info).ok())
        .collect()
}

/// The candidates `me` hands agents besides itself, best first: the live nodes that
/// are not draining, `me`'s region first, then the least loaded (ties by id).
fn best_first(me: &NodeInfo, live: Vec<NodeInfo>) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = live
        .into_iter()
        .filter(|n| n.id != me.id && !n.draining)
        .collect();
    nodes.sort_by(|a, b| {
        (a.region != me.region, a.load, &a.id).cmp(&(b.region != me.region, b.load, &b.id))
    });
    nodes
}

#[cfg(test)]
mod candidate_tests {
    use super::*;

    fn node(id: &str, region: &str, load: u64, draining: bool) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            region: region.into(),
            load,
            draining,
            ..NodeInfo::default()
        }
    }

    #[test]
    fn candidates_are_the_own_region_first_then_the_least_loaded_without_draining_ones() {
        let me = node("me", "eu", 0, false);
        let live = vec![
            node("us-idle", "us", 0, false),
            node("eu-busy", "eu", 90, false),
            me.clone(),
            node("eu-idle", "eu", 3, false),
            node("eu-draining", "eu", 0, true),
            node("us-busy", "us", 50, false),
            node("eu-idle-too", "eu", 3, false),
        ];
        let ids: Vec<String> = best_first(&me, live).into_iter().map(|n| n.id).collect();
        assert_eq!(
            ids,
            ["eu-idle", "eu-idle-too", "eu-busy", "us-idle", "us-busy"]
        );
    }
}
