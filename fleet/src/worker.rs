//! The fleet's two threads: the worker (heartbeats, node list, this node's routes)
//! and the subscriber (the route table replica).
//!
//! Both use the blocking Redis client with [`IO_TIMEOUT`] on every call, and drop a
//! connection after any error that is not Redis's own error reply; the next round
//! opens a new one. While Redis is away the worker keeps what this node holds in
//! memory and writes it all again once Redis answers; the replica keeps serving.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use redis::{Client, Commands, Connection, RedisResult};

use crate::replica::Table;
use crate::{
    HEARTBEAT, IO_TIMEOUT, LEASE, RESERVATION_GRACE, Shared, from_hex, keys, parse_nodes,
    random_hex,
};

/// Claims sent in one pipeline.
const CLAIM_BATCH: usize = 512;

/// How often the reservations of the names and ports this node serves are renewed
/// (a third of [`RESERVATION_GRACE`]: two renewals may fail before one lapses).
const REFRESH_EVERY: Duration = Duration::from_secs(RESERVATION_GRACE.as_secs() / 3);

/// How long a node that left the node list stays trusted to have signed tokens:
/// longer than any token lives.
const KEY_MEMORY: Duration = Duration::from_secs(300);

/// How often the subscriber checks its subscription is alive.
const PING_EVERY: Duration = Duration::from_secs(5);

/// A change to this node's routes, from the Edge's registry.
#[derive(Debug)]
pub(crate) enum Command {
    /// A tunnel came online here.
    Publish {
        key: String,
        tunnel_id: String,
        agent: Option<SocketAddr>,
    },
    /// It went offline here.
    Withdraw { key: String, tunnel_id: String },
    /// The node's record changed (it started draining): heartbeat now.
    Heartbeat,
}

/// A route this node holds.
#[derive(Debug)]
struct Held {
    tunnel_id: String,
    agent: Option<SocketAddr>,
    /// The generation Redis gave it; `None` until written.
    generation: Option<u64>,
    /// Written once already: writing it again must not take it from another node.
    written: bool,
    /// A claim was sent: Redis may hold an entry even when its answer was lost.
    sent: bool,
    /// Another node took it while this one was cut off: not written again.
    lost: bool,
}

/// The worker thread's state.
pub(crate) struct Worker {
    client: Client,
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    conn: Option<Connection>,
    held: HashMap<String, Held>,
    /// Routes withdrawn here and not yet removed from Redis: key, the generation
    /// (`None` when a claim's answer was lost: any of this incarnation's entries for
    /// the tunnel), tunnel id.
    withdrawn: Vec<(String, Option<u64>, String)>,
    /// Every held route must be written again (Redis lost them, or a write failed).
    republish: bool,
    /// Held routes without a generation, to be written.
    due: HashSet<String>,
    /// Reservations to drop: (what, tunnel id), of tunnels gone offline here.
    unreserved: Vec<(String, String)>,
    /// When the reservations of held routes were last renewed.
    refreshed: Option<Instant>,
    /// Other nodes' signing keys, and when each was last in a live node's record.
    keys: HashMap<Vec<u8>, Instant>,
    /// The node's record changed: write it before the next heartbeat is due.
    heartbeat_now: bool,
}

pub(crate) fn connect(client: &Client) -> RedisResult<Connection> {
    connect_within(client, IO_TIMEOUT)
}

/// A connection whose connecting, reads and writes each fail after `timeout`.
pub(crate) fn connect_within(client: &Client, timeout: Duration) -> RedisResult<Connection> {
    let conn = client.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

impl Worker {
    pub(crate) fn new(client: Client, shared: Arc<Shared>, commands: Receiver<Command>) -> Self {
        Worker {
            client,
            shared,
            commands,
            conn: None,
            held: HashMap::new(),
            withdrawn: Vec::new(),
            republish: false,
            due: HashSet::new(),
            refreshed: None,
            keys: HashMap::new(),
            unreserved: Vec::new(),
            heartbeat_now: false,
        }
    }

    /// The first round, before the node serves: record, secret, node list, and the
    /// route table (the subscriber loads it again once subscribed).
    pub(crate) fn first_contact(&mut self) -> RedisResult<()> {
        self.tick()?;
        let conn = self.conn.as_mut().expect("opened by the tick");
        // Evicting keys would forget used token ids and reservations (they expire,
        // so `volatile-*` policies evict them first). Some hosted Redis refuse CONFIG.
        let policy: RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query(conn);
        if let Ok(policy) = policy
            && let Some(value) = policy.get(1)
            && value != "noeviction"
        {
            tracing::warn!(policy = %value, "the fleet's Redis may evict keys (maxmemory-policy); set it to noeviction, or used tokens and reservations can be forgotten under memory pressure");
        }
        let all: HashMap<String, String> = conn.hgetall(keys::routes())?;
        load(&self.shared, all);
        Ok(())
    }

    /// Runs until the fleet is dropped.
    pub(crate) fn run(mut self) {
        let mut next_tick = Instant::now() + HEARTBEAT;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.commands.recv_timeout(wait) {
                Ok(command) => {
                    self.apply(command);
                    // Whatever else is queued goes into the same writes.
                    while let Ok(command) = self.commands.try_recv() {
                        self.apply(command);
                    }
                    if let Err(e) = self.sync() {
                        tracing::warn!(error = %e, "could not write to the fleet's Redis; retrying on the next heartbeat");
                        self.conn = None;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.shared.stop.load(Ordering::Relaxed) {
                return;
            }
            if Instant::now() >= next_tick || std::mem::take(&mut self.heartbeat_now) {
                next_tick = Instant::now() + HEARTBEAT;
                if let Err(e) = self.tick() {
                    tracing::warn!(error = %e, "the fleet's Redis did not answer; tunnels keep being served from this node's copy");
                    self.conn = None;
                }
            }
        }
    }

    /// Opens the connection if there is none.
    fn ensure_conn(&mut self) -> RedisResult<()> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.client)?);
            // Whatever was written before may be gone (a restarted Redis).
            self.republish = true;
        }
        Ok(())
    }

    /// Heartbeat, secret, node list, and any writes that are due.
    fn tick(&mut self) -> RedisResult<()> {
        let mut info = self.shared.node.clone();
        info.load = self.held.len() as u64;
        info.draining = self.shared.draining.load(Ordering::Acquire);
        self.shared.held.store(info.load, Ordering::Relaxed);
        let info = serde_json::to_string(&info).expect("a node record serializes");
        let lease = LEASE.as_millis() as u64;
        let node = self.shared.node.clone();
        self.ensure_conn()?;
        let conn = self.conn.as_mut().expect("opened above");
        let lost: u8 = keys::HEARTBEAT
            .key(keys::nodes())
            .key(keys::node(&node.id))
            .arg(&node.id)
            .arg(&node.incarnation)
            .arg(lease)
            .arg(info)
            .invoke(conn)?;
        let () = redis::cmd("SET")
            .arg(keys::secret())
            .arg(random_hex(32))
            .arg("NX")
            .query(conn)?;
        let secret: String = conn.get(keys::secret())?;
        let secret = secret.into_bytes();
        let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(conn)?;
        let now = seconds * 1000 + micros / 1000;
        let ids: Vec<String> =
            conn.zrangebyscore(keys::nodes(), now.saturating_sub(lease), "+inf")?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(keys::node(id), "info");
        }
        let infos: Vec<Option<String>> = pipe.query(conn)?;
        let records = ids
            .into_iter()
            .zip(infos)
            .filter_map(|(id, info)| info.map(|i| (id, i)))
            .collect();
        let nodes = parse_nodes(records);
        // The keys of live nodes, and of nodes gone for less than KEY_MEMORY: tokens
        // a node minted just before it died still open their tunnels elsewhere.
        let seen = Instant::now();
        for key in nodes
            .iter()
            .filter(|n| n.id != node.id)
            .filter_map(|n| from_hex(&n.signing_key))
        {
            self.keys.insert(key, seen);
        }
        self.keys.retain(|_, at| at.elapsed() < KEY_MEMORY);
        self.shared
            .trusted
            .replace(self.keys.keys().map(Vec::as_slice));
        *self
            .shared
            .secret
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(secret);
        let mut others: Vec<netbore_edge::fleet::FleetNode> = nodes
            .iter()
            .filter(|n| n.id != self.shared.node.id && !n.draining)
            .map(|n| netbore_edge::fleet::FleetNode {
                id: n.id.clone(),
                control_url: n.control_url.clone(),
            })
            .collect();
        others.sort_by(|a, b| a.id.cmp(&b.id));
        self.shared.others.send_if_modified(|known| {
            let changed = *known != others;
            if changed {
                *known = others;
            }
            changed
        });
        self.shared.change_replica(|r| r.set_nodes(nodes));
        if lost == 1 {
            self.republish = true;
            // Redis lost the table (or this is the first heartbeat): the subscriber
            // loads it afresh rather than trust announcements alone.
            self.shared.reload.store(true, Ordering::Relaxed);
        }
        self.sync()?;
        if lost == 1
            || self
                .refreshed
                .is_none_or(|at| at.elapsed() >= REFRESH_EVERY)
        {
            self.refreshed = Some(Instant::now());
            // A failed refresh is retried at the next round; the heartbeat stands.
            if let Err(e) = self.refresh_reservations() {
                tracing::warn!(error = %e, "could not renew this node's name and port reservations; retrying");
                self.refreshed = None;
            }
        }
        Ok(())
    }

    /// Takes a change into this node's routes; [`Self::sync`] writes it.
    fn apply(&mut self, command: Command) {
        match command {
            Command::Publish {
                key,
                tunnel_id,
                agent,
            } => {
                // Taken again here (a recreate): the new claim supersedes the old.
                self.due.insert(key.clone());
                self.held.insert(
                    key,
                    Held {
                        tunnel_id,
                        agent,
                        generation: None,
                        written: false,
                        sent: false,
                        lost: false,
                    },
                );
            }
            Command::Heartbeat => self.heartbeat_now = true,
            Command::Withdraw { key, tunnel_id } => {
                // The tunnel went offline here (not a node dying): its name or port is
                // free again, as on a single server, unless another node serves the
                // same tunnel now (it moved there: a drain).
                let moved = {
                    let replica = self
                        .shared
                        .replica
                        .read()
                        .unwrap_or_else(|e| e.into_inner());
                    replica.holders(&key).any(|(entry, node)| {
                        entry.tunnel_id == tunnel_id && node.id != self.shared.node.id
                    })
                };
                if !moved && let Some(what) = keys::reserved_as(&key) {
                    self.unreserved.push((what, tunnel_id.clone()));
                }
                if self
                    .held
                    .get(&key)
                    .is_some_and(|h| h.tunnel_id == tunnel_id)
                    && let Some(held) = self.held.remove(&key)
                    && (held.generation.is_some() || held.sent || held.written)
                {
                    self.withdrawn.push((key, held.generation, held.tunnel_id));
                }
            }
        }
    }

    /// Writes what is due: withdrawals, then routes without a generation (all of them
    /// after Redis lost them).
    fn sync(&mut self) -> RedisResult<()> {
        let node = self.shared.node.clone();
        let owner = format!("{} {}", node.id, node.incarnation);
        self.ensure_conn()?;
        if self.republish {
            for (key, held) in self.held.iter_mut() {
                held.generation = None;
                self.due.insert(key.clone());
            }
        }
        let conn = self.conn.as_mut().expect("opened above");
        while let Some((key, generation, tunnel_id)) = self.withdrawn.last() {
            let entry_owner = match generation {
                Some(generation) => format!("{owner} {generation}"),
                None => owner.clone(),
            };
            let _: u8 = keys::RELEASE
                .key(keys::routes())
                .arg(key)
                .arg(entry_owner)
                .arg(keys::channel())
                .arg(tunnel_id)
                .invoke(conn)?;
            self.withdrawn.pop();
        }
        while let Some((what, tunnel_id)) = self.unreserved.last() {
            // Not while this node serves the tunnel again (it came back at once).
            let back = keys::reservation_route(what).is_some_and(|route| {
                self.held
                    .get(&route)
                    .is_some_and(|h| &h.tunnel_id == tunnel_id)
            });
            if !back {
                let _: u8 = keys::UNRESERVE
                    .key(keys::reservation(what))
                    .arg(tunnel_id)
                    .invoke(conn)?;
            }
            self.unreserved.pop();
        }
        // Claims go in pipelines of CLAIM_BATCH: publishing many tunnels (after Redis
        // lost them all, say) costs a round trip per batch, not per tunnel.
        let mut batch: Vec<String> = Vec::with_capacity(CLAIM_BATCH);
        let mut due = std::mem::take(&mut self.due).into_iter();
        loop {
            batch.clear();
            batch.extend(
                due.by_ref()
                    .filter(|k| {
                        self.held
                            .get(k)
                            .is_some_and(|h| h.generation.is_none() && !h.lost)
                    })
                    .take(CLAIM_BATCH),
            );
            if batch.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for key in &batch {
                let held = self.held.get_mut(key).expect("filtered above");
                let agent = held
                    .agent
                    .map_or_else(|| "-".to_string(), |a| a.to_string());
                let mode = if held.written { "keep" } else { "take" };
                held.sent = true;
                pipe.invoke_script(
                    keys::CLAIM
                        .key(keys::routes())
                        .key(keys::generation())
                        .key(keys::nodes())
                        .arg(key)
                        .arg(&owner)
                        .arg(format!("{} {agent}", held.tunnel_id))
                        .arg(keys::channel())
                        .arg(mode),
                );
            }
            let sent = keys::CLAIM
                .prepare_invoke()
                .load(conn)
                .and_then(|_| pipe.query::<Vec<i64>>(conn));
            let generations = match sent {
                Ok(g) => g,
                Err(e) => {
                    // Written or not, these are still due, and so is the rest.
                    self.due.extend(batch.drain(..));
                    self.due.extend(due);
                    return Err(e);
                }
            };
            // A short answer leaves the rest of the batch due.
            self.due
                .extend(batch.iter().skip(generations.len()).cloned());
            for (key, generation) in batch.iter().zip(generations) {
                let held = self.held.get_mut(key).expect("filtered above");
                held.written = true;
                match u64::try_from(generation) {
                    Ok(generation) => held.generation = Some(generation),
                    Err(_) => {
                        tracing::info!(route = %key, tunnel_id = %held.tunnel_id, "another tunnel took this route while this node could not reach Redis; not publishing it again");
                        held.lost = true;
                    }
                }
            }
        }
        self.republish = false;
        Ok(())
    }

    /// Keeps the reservation of each name and port this node serves for
    /// [`RESERVATION_GRACE`] from now, in one pipeline.
    fn refresh_reservations(&mut self) -> RedisResult<()> {
        let grace = RESERVATION_GRACE.as_millis() as u64;
        let mut pipe = redis::pipe();
        let mut any = false;
        for (key, held) in self.held.iter().filter(|(_, h)| !h.lost) {
            if let Some(what) = keys::reserved_as(key) {
                pipe.invoke_script(
                    keys::RESERVE
                        .key(keys::reservation(&what))
                        .arg(&held.tunnel_id)
                        .arg(grace),
                )
                .ignore();
                any = true;
            }
        }
        if any {
            self.ensure_conn()?;
            let conn = self.conn.as_mut().expect("opened above");
            keys::RESERVE.prepare_invoke().load(conn)?;
            let () = pipe.query(conn)?;
        }
        Ok(())
    }
}

/// Replaces the replica's route table with the full load `all`, parsed before the
/// lock is taken and the old table dropped after it is released.
fn load(shared: &Shared, all: HashMap<String, String>) {
    let table = Table::parse(all);
    let old = shared.change_replica(|r| r.replace(table));
    drop(old);
}

/// The subscriber thread: subscribes, loads the whole table, applies announcements;
/// on any error waits a heartbeat and starts over (a fresh load), until stopped.
pub(crate) fn subscribe(client: Client, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        if let Err(e) = subscribe_once(&client, &shared) {
            tracing::debug!(error = %e, "the fleet's announcements stopped; subscribing again");
            std::thread::sleep(HEARTBEAT);
        }
    }
}

fn subscribe_once(client: &Client, shared: &Shared) -> RedisResult<()> {
    let mut conn = connect(client)?;
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(keys::channel())?;
    // Announcements from here on queue up on the subscription while the table loads;
    // generations make applying one twice harmless.
    let all: HashMap<String, String> = connect(client)?.hgetall(keys::routes())?;
    load(shared, all);
    pubsub.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut pinged = Instant::now();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if shared.reload.swap(false, Ordering::Relaxed) {
            let all: HashMap<String, String> = connect(client)?.hgetall(keys::routes())?;
            load(shared, all);
        }
        // A subscription that stopped delivering (a half-open connection) shows as a
        // ping without an answer; the caller subscribes and loads again.
        if pinged.elapsed() >= PING_EVERY {
            let _: redis::Value = pubsub.ping()?;
            pinged = Instant::now();
        }
        match pubsub.get_message() {
            Ok(message) => {
                let payload: String = message.get_payload()?;
                if !shared.change_replica(|r| r.apply(&payload)) {
                    tracing::debug!(%payload, "ignored a malformed fleet announcement");
                }
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e),
        }
    }
}
