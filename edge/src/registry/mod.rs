//! The Edge's table of tunnels: what the control plane placed, which agent session
//! serves each tunnel now, and the HTTP routes by host name.
//!
//! A tunnel moves `Pending` (placed, waiting for its agent) → `Online` (an agent said
//! hello with its token) → `Offline` (the session ended or the hold lapsed). Placing an
//! id that is already online replaces the old agent (a recreate). Every change bumps
//! the entry's generation, so a late event from an old session never touches a newer
//! one.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use netbore_control::api::Protocol;
use netbore_control::store::Store;
use netbore_control::tokens::{Claims, unix_now};
use netbore_control::{
    DisconnectReason, PlaceRequest, Placed, Placement, PlacementError, TunnelStatus,
};
use netbore_transport::Session;
use netbore_transport::proto::{ErrorBody, ErrorCode};
use tokio::sync::mpsc;

use crate::PortPool;
use crate::limits::StreamCount;

mod fleet;
mod moved;

pub use moved::{MOVED_RELAY, Moved};

use crate::fleet::remote::Remote;
use crate::fleet::{Directory, RouteKey};
use crate::http::upstream::HttpTunnel;
use crate::tls_tunnel::TlsTunnel;

/// A message from the registry to the session that serves a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    /// The tunnel to take offline.
    pub tunnel_id: String,
    /// Why.
    pub reason: DisconnectReason,
}

/// What the session serving a tunnel gives the registry at the hello.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// The agent session.
    pub session: Session,
    /// The agent's address.
    pub agent: SocketAddr,
    /// Where [`Closing`] messages for the session's tunnels go.
    pub closing: mpsc::UnboundedSender<Closing>,
}

/// A tunnel claimed by a hello.
#[derive(Debug)]
pub enum Claimed {
    /// A TCP tunnel and its public port's listener (a duplicate of the one the
    /// registry holds, so a replacing agent takes over without the port ever closing).
    Tcp {
        /// The public listener.
        listener: TcpListener,
    },
    /// An HTTP tunnel, routed from now on.
    Http,
    /// A TLS passthrough tunnel, routed by SNI from now on.
    Tls,
}

/// The route of one host name.
#[derive(Debug, Clone)]
pub enum Route {
    /// An agent serves the name.
    Online(Arc<HttpTunnel>),
    /// An agent serves the name as a TLS passthrough tunnel.
    Tls(Arc<TlsTunnel>),
    /// The name's tunnel exists but no agent serves it now.
    Offline,
}

/// How long an offline tunnel's name keeps answering "agent offline" (502) rather
/// than "no tunnel" (404).
pub const OFFLINE_RETENTION: Duration = Duration::from_secs(3600);

#[derive(Debug)]
enum Phase {
    Pending,
    Online {
        agent: SocketAddr,
        since: u64,
        closing: mpsc::UnboundedSender<Closing>,
    },
    Offline {
        since: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    protocol: Protocol,
    name: Option<String>,
    listener: Option<Arc<TcpListener>>,
    generation: u64,
    phase: Phase,
    /// In a fleet, the directory generation of another node's entry for this
    /// tunnel's route when it was placed here (a tunnel moving here): only a newer
    /// one means another node adopted it since.
    placed_over: Option<u64>,
    /// The timer that releases the placement if its agent never comes: stopped when
    /// the agent comes, or the entry is replaced, so no task waits out the token's
    /// lifetime for a tunnel already served.
    expiry: Option<tokio::task::AbortHandle>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(expiry) = self.expiry.take() {
            expiry.abort();
        }
    }
}

/// Gives back most of a table's room once three quarters of it stand empty: after
/// a peak of tunnels, a node's tables return to the size of what is online (a halving
/// at most every time the count falls by half, so removals stay cheap on average).
fn shrink_when_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

#[derive(Debug, Default)]
struct Tables {
    tunnels: HashMap<String, Entry>,
    /// Host name → tunnel id, for names whose tunnel is pending, online or recently
    /// offline.
    names: HashMap<String, String>,
    next_generation: u64,
}

/// Settings the registry needs to build public URLs.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Public host name of the Edge.
    pub domain: String,
    /// The public port of HTTP ingress (left out of URLs when 80); `None` when this
    /// Edge serves no HTTP tunnels.
    pub http_port: Option<u16>,
    /// The public port of HTTPS ingress (left out of URLs when 443). When set, HTTP
    /// tunnels' public URLs are `https://`.
    pub https_port: Option<u16>,
    /// Settings of the upstream HTTP connections to agents.
    pub upstream: crate::http::upstream::UpstreamConfig,
}

/// The tunnel table. Clones share it.
#[derive(Debug, Clone)]
pub struct Registry {
    config: Arc<RegistryConfig>,
    ports: PortPool,
    tables: Arc<Mutex<Tables>>,
    /// The hot path of HTTP ingress reads only this map.
    routes: Arc<RwLock<HashMap<String, Route>>>,
    /// Online tunnels by route key ([`RouteKey`]'s text), for streams other nodes
    /// relay here over a fleet link.
    links: Arc<RwLock<HashMap<String, LinkTarget>>>,
    /// Tunnels that moved to another node, by route key: their old sessions, for
    /// streams relayed by nodes that have not heard of the move ([`MOVED_RELAY`]).
    moved: Arc<RwLock<HashMap<String, moved::MovedTarget>>>,
    /// The fleet's directory and the tunnels other nodes hold, when this node is
    /// part of a fleet.
    remote: Arc<OnceLock<Arc<Remote>>>,
    /// The fleet's control store: a tunnel is adopted from another node's token only
    /// while its record exists (one deleted there must not come back here).
    records: Arc<OnceLock<Arc<dyn Store>>>,
}

/// When a released tunnel's link target goes.
#[derive(Debug, Clone, Copy)]
enum Unlink {
    Now,
    /// Kept aside for [`MOVED_RELAY`] at most, for streams relayed by nodes that
    /// have not heard of the move yet ([`Registry::release_moved`]).
    Moved,
}

/// Where a stream relayed from another node for a tunnel goes: the agent session
/// serving it and the slot its streams carry.
#[derive(Debug, Clone)]
pub struct LinkTarget {
    /// The tunnel.
    pub tunnel_id: String,
    /// The agent's session.
    pub session: Session,
    /// The tunnel's slot on it.
    pub slot: u32,
    /// For a TCP or TLS tunnel (one relayed stream per viewer connection), the count
    /// the per-tunnel stream cap applies to streams other nodes relay here (shared
    /// with its viewers here for TLS), so a fleet's nodes together cannot give it
    /// many times the cap. `None` for HTTP: a relayed stream is a pooled upstream
    /// connection of the relaying node, which counts requests itself.
    pub streams: Option<Arc<StreamCount>>,
    generation: u64,
}

impl Registry {
    /// An empty table binding TCP tunnels' ports from `ports`.
    pub fn new(config: RegistryConfig, ports: PortPool) -> Self {
        Registry {
            config: Arc::new(config),
            ports,
            tables: Arc::default(),
            routes: Arc::default(),
            links: Arc::default(),
            moved: Arc::default(),
            remote: Arc::default(),
            records: Arc::default(),
        }
    }

    /// Makes this registry part of a fleet: tunnels brought online here are published
    /// to `directory` and withdrawn when they go offline, and tunnels other nodes
    /// hold are reached over links dialed with `link_mux` settings. Set once, before
    /// agents connect; later calls are ignored.
    pub fn set_directory(
        &self,
        directory: Arc<dyn Directory>,
        link_mux: netbore_mux::Config,
        records: Arc<dyn Store>,
    ) {
        let remote = Remote::new(directory, link_mux, self.config.upstream.clone());
        let _ = self.remote.set(Arc::new(remote));
        let _ = self.records.set(records);
    }

    /// The fleet's directory, when this node is part of one.
    pub fn directory(&self) -> Option<&Arc<dyn Directory>> {
        self.remote.get().map(|r| r.directory())
    }

    /// The tunnels other nodes of the fleet hold, when this node is part of one.
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        self.remote.get()
    }

    /// The tunnel of route key `key` online here.
    pub fn link_target(&self, key: &str) -> Option<LinkTarget> {
        self.links
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// The route key of a tunnel of `protocol` with `name` or public `port`.
    fn route_key(protocol: Protocol, name: Option<&str>, port: Option<u16>) -> Option<RouteKey> {
        match protocol {
            Protocol::Http => name.map(|n| RouteKey::Http(n.to_string())),
            Protocol::Tls => name.map(|n| RouteKey::Tls(n.to_string())),
            Protocol::Tcp => port.map(RouteKey::Tcp),
        }
    }

    /// The public host name.
    pub fn domain(&self) -> &str {
        &self.config.domain
    }

    /// The route of host-name label `name`.
    pub fn route(&self, name: &str) -> Option<Route> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_route(&self, name: &str, route: Option<Route>) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        match route {
            Some(r) => routes.insert(name.to_string(), r),
            None => {
                let gone = routes.remove(name);
                shrink_when_sparse(&mut routes);
                gone
            }
        };
    }

    /// The public URL of a tunnel.
    fn public_url(&self, protocol: Protocol, name: Option<&str>, port: Option<u16>) -> String {
        let domain = &self.config.domain;
        match protocol {
            Protocol::Tcp => format!("tcp://{domain}:{}", port.unwrap_or(0)),
            Protocol::Http => {
                let name = name.unwrap_or("");
                match (self.config.https_port, self.config.http_port) {
                    (Some(443), _) => format!("https://{name}.{domain}"),
                    (Some(p), _) => format!("https://{name}.{domain}:{p}"),
                    (None, Some(80) | None) => format!("http://{name}.{domain}"),
                    (None, Some(p)) => format!("http://{name}.{domain}:{p}"),
                }
            }
            Protocol::Tls => format!(
                "tls://{}.{domain}:{}",
                name.unwrap_or(""),
                self.config.https_port.unwrap_or(443)
            ),
        }
    }

    /// Takes `tunnel_id` offline if it is still pending here in the placement of
    /// `generation` (checked and done under one lock, so a hello claiming it in
    /// between keeps it): true when it was.
    fn release_pending(&self, tunnel_id: &str, generation: u64) -> bool {
        let mut tables = self.tables();
        let Some(entry) = tables.tunnels.get_mut(tunnel_id) else {
            return false;
        };
        if !matches!(entry.phase, Phase::Pending) || entry.generation != generation {
            return false;
        }
        entry.phase = Phase::Offline {
            since: Instant::now(),
        };
        entry.listener = None;
        if let Some(name) = entry.name.clone() {
            self.set_route(&name, Some(Route::Offline));
        }
        true
    }

    /// The tunnels placed here that are waiting for their agent or online.
    pub fn held_tunnel_ids(&self) -> std::collections::HashSet<String> {
        self.tables()
            .tunnels
            .iter()
            .filter(|(_, e)| !matches!(e.phase, Phase::Offline { .. }))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether `tunnel_id` is placed here and waits for its agent.
    pub fn is_pending(&self, tunnel_id: &str) -> bool {
        self.tables()
            .tunnels
            .get(tunnel_id)
            .is_some_and(|e| matches!(e.phase, Phase::Pending))
    }

    /// Claims the tunnel a verified token names for the session in `handle`; `slot`
    /// is the number its streams carry.
    pub fn claim(
        &self,
        claims: &Claims,
        slot: u32,
        handle: &SessionHandle,
    ) -> Result<(Claimed, String, u64), ErrorBody> {
        let gone = || ErrorBody {
            code: ErrorCode::UnknownTunnel,
            message: format!(
                "tunnel {} is no longer reserved on this Edge (its agent came too late); reconnect to get it again",
                claims.tid
            ),
        };
        let mut tables = self.tables();
        let entry = tables.tunnels.get_mut(&claims.tid).ok_or_else(gone)?;
        if !matches!(entry.phase, Phase::Pending) || entry.protocol.as_str() != claims.proto {
            return Err(gone());
        }
        let generation = entry.generation;
        // A TCP tunnel's viewers here are counted by its accept loop; streams relayed
        // from other nodes get a count of their own, under the same cap.
        let mut streams = Some(Arc::default());
        let claimed = match entry.protocol {
            Protocol::Tcp => {
                let listener = entry
                    .listener
                    .as_ref()
                    .and_then(|l| l.try_clone().ok())
                    .ok_or_else(gone)?;
                Claimed::Tcp { listener }
            }
            Protocol::Http => {
                let name = entry.name.clone().ok_or_else(gone)?;
                let tunnel = HttpTunnel::new(
                    claims.tid.clone(),
                    name.clone(),
                    handle.session.clone(),
                    slot,
                    handle.agent,
                    self.config.upstream.clone(),
                );
                streams = None;
                self.set_route(&name, Some(Route::Online(Arc::new(tunnel))));
                Claimed::Http
            }
            Protocol::Tls => {
                let name = entry.name.clone().ok_or_else(gone)?;
                let tunnel = TlsTunnel::new(claims.tid.clone(), handle.session.clone(), slot);
                streams = Some(tunnel.stream_count());
                self.set_route(&name, Some(Route::Tls(Arc::new(tunnel))));
                Claimed::Tls
            }
        };
        let port = entry
            .listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port());
        let url = self.public_url(entry.protocol, entry.name.as_deref(), port);
        if let Some(key) = Self::route_key(entry.protocol, entry.name.as_deref(), port) {
            let target = LinkTarget {
                tunnel_id: claims.tid.clone(),
                session: handle.session.clone(),
                slot,
                streams,
                generation,
            };
            self.links
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.to_string(), target);
            if let Some(directory) = self.directory() {
                directory.publish(&key, &claims.tid, Some(handle.agent));
            }
        }
        entry.phase = Phase::Online {
            agent: handle.agent,
            since: unix_now(),
            closing: handle.closing.clone(),
        };
        if let Some(expiry) = entry.expiry.take() {
            expiry.abort();
        }
        Ok((claimed, url, generation))
    }

    /// The session serving `tunnel_id` (at `generation`) ended: the tunnel goes offline
    /// and its public port closes. Does nothing if a newer placement replaced it.
    pub fn release(&self, tunnel_id: &str, generation: u64) {
        self.release_as(tunnel_id, generation, Unlink::Now);
    }

    fn release_as(&self, tunnel_id: &str, generation: u64, unlink: Unlink) -> Option<Moved> {
        let mut tables = self.tables();
        let entry = tables.tunnels.get_mut(tunnel_id)?;
        if entry.generation != generation {
            return None;
        }
        let port = entry
            .listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port());
        let mut moved = None;
        if matches!(entry.phase, Phase::Online { .. })
            && let Some(key) = Self::route_key(entry.protocol, entry.name.as_deref(), port)
        {
            moved = self.unlink(key, generation, tunnel_id, unlink);
        }
        entry.phase = Phase::Offline {
            since: Instant::now(),
        };
        entry.listener = None;
        if let Some(name) = entry.name.clone() {
            self.set_route(&name, Some(Route::Offline));
        }
        moved
    }

    /// Withdraws the tunnel's session of `generation` from the fleet's directory and
    /// stops relaying links' streams to it, now or (`Moved`) after a while, through
    /// the returned [`Moved`].
    fn unlink(
        &self,
        key: RouteKey,
        generation: u64,
        tunnel_id: &str,
        when: Unlink,
    ) -> Option<Moved> {
        let key_text = key.to_string();
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        if links
            .get(&key_text)
            .is_none_or(|t| t.generation != generation)
        {
            return None;
        }
        let target = links.remove(&key_text);
        shrink_when_sparse(&mut links);
        drop(links);
        let moved = match (when, target) {
            (Unlink::Moved, Some(target)) => Some(self.keep_moved(key_text, target)),
            _ => None,
        };
        if let Some(directory) = self.directory() {
            directory.withdraw(&key, tunnel_id);
        }
        moved
    }

    /// Forgets offline tunnels older than [`OFFLINE_RETENTION`].
    fn prune(&self, tables: &mut Tables) {
        let now = Instant::now();
        let stale: Vec<String> = tables
            .tunnels
            .iter()
            .filter(|(_, e)| {
                matches!(e.phase, Phase::Offline { since } if now.duration_since(since) > OFFLINE_RETENTION)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.forget(tables, &id);
        }
    }

    /// Removes a tunnel and, if it still owns it, its name's route.
    fn forget(&self, tables: &mut Tables, tunnel_id: &str) {
        let Some(mut entry) = tables.tunnels.remove(tunnel_id) else {
            return;
        };
        shrink_when_sparse(&mut tables.tunnels);
        if let Some(name) = entry.name.take()
            && tables.names.get(&name).map(String::as_str) == Some(tunnel_id)
        {
            tables.names.remove(&name);
            shrink_when_sparse(&mut tables.names);
            self.set_route(&name, None);
        }
    }

    /// Releases a pending tunnel whose agent did not arrive within its hold.
    fn expire_pending(&self, tunnel_id: &str, generation: u64) {
        let tables = self.tables();
        let pending = tables
            .tunnels
            .get(tunnel_id)
            .is_some_and(|e| e.generation == generation && matches!(e.phase, Phase::Pending));
        drop(tables);
        if pending {
            tracing::info!(%tunnel_id, "released a tunnel whose agent never came");
            self.release(tunnel_id, generation);
        }
    }
}

impl Placement for Registry {
    fn place(&self, request: &PlaceRequest) -> Result<Placed, PlacementError> {
        // In a fleet, the name or port is reserved in the shared store first, before
        // the table's lock is taken: nothing waits on Redis behind it.
        let prebound = self.reserve_for(request)?;
        let mut tables = self.tables();
        self.prune(&mut tables);
        let id = request.tunnel_id.as_str();
        let name = match request.protocol {
            Protocol::Http | Protocol::Tls => {
                if request.protocol == Protocol::Http && self.config.http_port.is_none() {
                    return Err(PlacementError {
                        code: ErrorCode::ProtocolNotServed,
                        message: "this server serves no HTTP tunnels; ask its operator to start it with --http-addr".into(),
                    });
                }
                if request.protocol == Protocol::Tls && self.config.https_port.is_none() {
                    return Err(PlacementError {
                        code: ErrorCode::ProtocolNotServed,
                        message: "this server serves no TLS tunnels; ask its operator to start it with --https-addr".into(),
                    });
                }
                let Some(name) = request.name.clone() else {
                    return Err(PlacementError {
                        code: ErrorCode::Internal,
                        message: "a named tunnel was placed without a name; try again".into(),
                    });
                };
                if let Some(holder) = tables.names.get(&name)
                    && holder != id
                    && tables
                        .tunnels
                        .get(holder)
                        .is_some_and(|e| !matches!(e.phase, Phase::Offline { .. }))
                {
                    return Err(PlacementError {
                        code: ErrorCode::NameTaken,
                        message: format!(
                            "the name {name} is in use by another tunnel; pick another --name"
                        ),
                    });
                }
                // Another node of the fleet serves the name for another tunnel.
                if self.held_elsewhere_by_another(
                    &[RouteKey::Http(name.clone()), RouteKey::Tls(name.clone())],
                    id,
                ) {
                    return Err(PlacementError {
                        code: ErrorCode::NameTaken,
                        message: format!(
                            "the name {name} is in use by another tunnel; pick another --name"
                        ),
                    });
                }
                Some(name)
            }
            Protocol::Tcp => None,
        };
        // A recreate replaces whoever serves the tunnel now; a TCP tunnel keeps its
        // listener so the port never closes in between.
        let mut listener = None;
        if let Some(old) = tables.tunnels.get_mut(id) {
            let old_port = old
                .listener
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.port());
            if let Phase::Online { closing, .. } = &old.phase {
                let _ = closing.send(Closing {
                    tunnel_id: id.to_string(),
                    reason: DisconnectReason::Replaced,
                });
                if let Some(key) = Self::route_key(old.protocol, old.name.as_deref(), old_port) {
                    let _ = self.unlink(key, old.generation, id, Unlink::Now);
                }
            }
            if request.protocol == Protocol::Tcp
                && old_port.is_some()
                && (request.port.is_none() || request.port == old_port)
            {
                listener = old.listener.take();
            }
            let old_name = old.name.clone();
            if let Some(old_name) = old_name
                && Some(&old_name) != name.as_ref()
            {
                self.forget(&mut tables, id);
            }
        }
        if request.protocol == Protocol::Tcp && listener.is_none() {
            // A port this node mirrors for another node's tunnel (the tunnel moving
            // here, say) is taken over without closing.
            if let Some(port) = request.port
                && self.held_elsewhere_by_another(&[RouteKey::Tcp(port)], id)
            {
                return Err(PlacementError {
                    code: ErrorCode::PortInUse,
                    message: format!(
                        "public port {port} is in use by another tunnel; ask for another port or none"
                    ),
                });
            }
            // Only the tunnel itself (moving here) takes its port's mirror over.
            let mirrored = request
                .port
                .filter(|p| {
                    self.directory()
                        .and_then(|d| d.holder(&RouteKey::Tcp(*p)))
                        .is_some_and(|h| h.tunnel_id == id)
                })
                .and_then(|p| self.remote()?.mirrors().take(p));
            listener = Some(Arc::new(match (mirrored, prebound) {
                (Some(l), _) => l,
                (None, Some(l)) => l,
                (None, None) => self.ports.bind_for(id, request.port)?,
            }));
        }
        let port = listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port());
        tables.next_generation += 1;
        let generation = tables.next_generation;
        let placed_over = Self::route_key(request.protocol, name.as_deref(), port)
            .and_then(|key| self.directory()?.holder(&key))
            .map(|h| h.generation);
        tables.tunnels.insert(
            id.to_string(),
            Entry {
                protocol: request.protocol,
                name: name.clone(),
                listener,
                generation,
                phase: Phase::Pending,
                placed_over,
                expiry: None,
            },
        );
        if let Some(name) = &name {
            tables.names.insert(name.clone(), id.to_string());
            // Viewers of a pending name see "agent offline" until the hello arrives.
            self.set_route(name, Some(Route::Offline));
        }
        drop(tables);
        let registry = self.clone();
        let tunnel_id = id.to_string();
        let hold = request.hold;
        let expiry = tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            registry.expire_pending(&tunnel_id, generation);
        })
        .abort_handle();
        match self.tables().tunnels.get_mut(id) {
            Some(entry)
                if entry.generation == generation && matches!(entry.phase, Phase::Pending) =>
            {
                entry.expiry = Some(expiry)
            }
            _ => expiry.abort(),
        }
        Ok(Placed {
            public_url: self.public_url(request.protocol, name.as_deref(), port),
            port,
        })
    }

    fn status(&self, tunnel_id: &str) -> TunnelStatus {
        match self.tables().tunnels.get(tunnel_id).map(|e| &e.phase) {
            Some(Phase::Pending) => TunnelStatus::Pending,
            Some(Phase::Online { agent, since, .. }) => TunnelStatus::Online {
                agent: *agent,
                since: *since,
            },
            Some(Phase::Offline { .. }) | None => TunnelStatus::Offline,
        }
    }

    fn disconnect(&self, tunnel_id: &str, reason: DisconnectReason) -> bool {
        let mut tables = self.tables();
        let Some(entry) = tables.tunnels.get(tunnel_id) else {
            return false;
        };
        if let Phase::Online { closing, .. } = &entry.phase {
            let _ = closing.send(Closing {
                tunnel_id: tunnel_id.to_string(),
                reason,
            });
        }
        self.forget(&mut tables, tunnel_id);
        true
    }
}

#[cfg(test)]
mod tests;
