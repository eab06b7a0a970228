//! Netbore's control plane: authenticates callers (API keys or anonymous), creates,
//! lists and deletes tunnels, reserves names, and mints the short-lived EdDSA tokens
//! Edges verify.
//!
//! It serves the control API ([`api`], described by `docs/openapi.yaml`), keeps keys,
//! names and tunnel records in a [`store::Store`], and asks a [`Placement`] (the Edge,
//! when co-located) to hold each tunnel's public port or name. It knows nothing of the
//! mux or transports.

pub mod api;
mod auth;
pub mod civil;
pub mod client_addr;
mod limits;
pub mod names;
pub mod private_fs;
pub mod rate;
pub mod replay;
mod reservations;
mod revocation;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod tokens;
mod tunnels;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::rand::SystemRandom;

use crate::api::{EdgeCandidate, Protocol};
pub use crate::auth::Caller;
use crate::client_addr::Cidr;
use crate::limits::AnonymousTunnels;
use crate::rate::{RateConfig, RateLimiter, SharedRate};
pub use crate::reservations::Reserved;
pub use crate::revocation::RevocationSweep;
use crate::store::Store;
use crate::tokens::TokenSigner;

/// Why an Edge could not place a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlacementError {
    /// Stable code (`PortInUse`, `PortNotAllowed`, `NoPortAvailable`, `NameTaken`,
    /// `ProtocolNotServed`, `Internal`).
    pub code: netbore_codes::ErrorCode,
    /// One sentence for a person.
    pub message: String,
}

/// What the control plane asks an Edge to hold for a new tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceRequest {
    /// The tunnel's id. Placing an id the Edge already holds replaces the old holder
    /// (an agent reclaiming its tunnel with a recreate token).
    pub tunnel_id: String,
    /// `tcp` or `http`.
    pub protocol: Protocol,
    /// The host name label of an HTTP tunnel (already validated and free in the store).
    pub name: Option<String>,
    /// The public port asked for by a TCP tunnel; any port from the range if absent.
    pub port: Option<u16>,
    /// How long to hold the reservation while the agent connects.
    pub hold: Duration,
}

/// Where an Edge placed a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Where viewers reach it (`tcp://DOMAIN:PORT`, `http://NAME.DOMAIN[:PORT]`).
    pub public_url: String,
    /// The public port of a TCP tunnel.
    pub port: Option<u16>,
}

/// A tunnel's state at its Edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelStatus {
    /// No agent holds it.
    Offline,
    /// Placed; its agent has not said hello yet.
    Pending,
    /// An agent serves it.
    Online {
        /// The agent's address as the Edge sees it.
        agent: SocketAddr,
        /// When it came online, seconds since the epoch.
        since: u64,
    },
    /// Another node of the fleet serves it.
    Elsewhere {
        /// That node's id.
        node: String,
        /// The agent's address, when that node did not mask it.
        agent: Option<SocketAddr>,
    },
}

/// Why the control plane takes a tunnel away from its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The tunnel was deleted through the API; its agent should stop.
    Deleted,
    /// Another agent reclaimed the tunnel with its recreate token.
    Replaced,
    /// The API key that owns the tunnel was revoked; its agent should stop.
    KeyRevoked,
}

/// Where tunnels are placed: the Edge reserves public resources for a tunnel until its
/// agent arrives with the token, and reports and ends tunnels for the control plane.
pub trait Placement: Send + Sync + 'static {
    /// Reserves the tunnel's public port or host name for `request.hold`.
    fn place(&self, request: &PlaceRequest) -> Result<Placed, PlacementError>;

    /// The tunnel's state.
    fn status(&self, tunnel_id: &str) -> TunnelStatus;

    /// Takes the tunnel offline at once and tells its agent why. False if the Edge did
    /// not hold it.
    fn disconnect(&self, tunnel_id: &str, reason: DisconnectReason) -> bool;
}

/// The other nodes of a fleet, as the control plane sees them.
pub trait Nodes: Send + Sync + 'static {
    /// The live nodes other than this one that take new tunnels (not draining), best
    /// first: this node's region first, then the least loaded.
    fn others(&self) -> Vec<EdgeCandidate>;

    /// Whether this node is draining: it is then no candidate while another node is.
    fn draining(&self) -> bool;

    /// The live node other than this one whose Edge serves `tunnel_id` now, and the
    /// agent's address when that node did not mask it.
    fn serving(&self, tunnel_id: &str) -> Option<(String, Option<SocketAddr>)>;
}

/// Default of [`ControlConfig::max_tunnels_per_anonymous_ipv6_48`].
pub const DEFAULT_MAX_TUNNELS_PER_ANONYMOUS_IPV6_48: usize = 20;
/// Default of [`ControlConfig::max_anonymous_tunnels`].
pub const DEFAULT_MAX_ANONYMOUS_TUNNELS: usize = 1000;
/// Default of [`ControlConfig::max_tunnel_records`].
pub const DEFAULT_MAX_TUNNEL_RECORDS: usize = 100_000;

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Let callers without an API key create tunnels.
    pub allow_anonymous: bool,
    /// Public host name of the Edge (used in public URLs).
    pub domain: String,
    /// Edges handed to agents, most preferred first.
    pub edges: Vec<EdgeCandidate>,
    /// Lifetime of ephemeral tokens.
    pub token_ttl: Duration,
    /// Leave agents' addresses out of API answers (`agent_addr`).
    pub mask_agent_ip: bool,
    /// Most live (pending or online) tunnels one API key may hold. Stops one key from
    /// taking every public port or name of the server.
    pub max_tunnels_per_key: usize,
    /// Most live tunnels anonymous callers from one IP address may hold. Stops one
    /// anonymous client from taking every public port or name of the server.
    pub max_tunnels_per_anonymous_ip: usize,
    /// Most live tunnels anonymous callers from one IPv6 /48 may hold (each /64 in it
    /// also has [`Self::max_tunnels_per_anonymous_ip`]). Stops one client whose
    /// provider routed it a /48 from taking the server with 65,536 /64s.
    pub max_tunnels_per_anonymous_ipv6_48: usize,
    /// Most live anonymous tunnels on the server, all callers together. Stops many
    /// addresses (a botnet, a cloud account's worth of IPs) from taking every public
    /// port or name; API keys keep working past it.
    pub max_anonymous_tunnels: usize,
    /// Most names one API key may reserve. Stops one key from squatting the namespace.
    pub max_names_per_key: usize,
    /// Most tunnel records (with their recreate tokens) kept per owner; past it the
    /// oldest offline ones are forgotten. Stops one client from growing the store
    /// without bound by creating tunnels it never deletes.
    pub max_records_per_owner: usize,
    /// Most tunnel records in the store, all owners together; past it creates are
    /// refused (503). Stops many owners, each under its own quota, from filling the
    /// disk.
    pub max_tunnel_records: usize,
    /// Load balancers whose `X-Forwarded-For` is believed ([`client_addr`]). Empty:
    /// the header is ignored and every client is its TCP peer. Stops a client that
    /// reaches the API directly from choosing the address its limits count.
    pub trusted_proxies: Vec<Cidr>,
    /// Per-client rate of control API requests. Stops one client from keeping the
    /// control plane busy for everyone else.
    pub api_rate: RateConfig,
    /// Names no tunnel may take or reserve (lowercase), such as `www` or `wpad`:
    /// stops a stranger's tunnel from passing for the operator's own services
    /// ([`names::DEFAULT_DENIED_NAMES`]).
    pub denied_names: Vec<String>,
    /// The ids of the API keys that may ask this node to drain (`POST /admin/drain`).
    /// Empty: none may; a node then drains only on a signal.
    pub admin_keys: Vec<String>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            allow_anonymous: false,
            domain: "localhost".into(),
            edges: Vec::new(),
            token_ttl: tokens::DEFAULT_TTL,
            mask_agent_ip: false,
            max_tunnels_per_key: 20,
            max_tunnels_per_anonymous_ip: 5,
            max_tunnels_per_anonymous_ipv6_48: DEFAULT_MAX_TUNNELS_PER_ANONYMOUS_IPV6_48,
            max_anonymous_tunnels: DEFAULT_MAX_ANONYMOUS_TUNNELS,
            max_names_per_key: 100,
            max_records_per_owner: 200,
            max_tunnel_records: DEFAULT_MAX_TUNNEL_RECORDS,
            trusted_proxies: Vec::new(),
            api_rate: RateConfig::default(),
            denied_names: names::DEFAULT_DENIED_NAMES
                .split(',')
                .map(String::from)
                .collect(),
            admin_keys: Vec::new(),
        }
    }
}

/// The control plane's state.
pub struct Control {
    config: ControlConfig,
    signer: TokenSigner,
    placement: Box<dyn Placement>,
    store: Arc<dyn Store>,
    rng: SystemRandom,
    rate: RateLimiter,
    /// The anonymous tunnels this process placed that may still be live.
    anonymous: AnonymousTunnels,
    /// Held while a tunnel is created or deleted, so two creates of one owner cannot
    /// both pass the limit check, and a name check and its placement are one step.
    lifecycle: Mutex<()>,
    /// The fleet's other nodes, when this node is part of one.
    nodes: std::sync::OnceLock<Arc<dyn Nodes>>,
    /// The fleet's count of each client's API requests, when this node is part of one.
    shared_rate: std::sync::OnceLock<Arc<dyn SharedRate>>,
    /// Notified when an admin key asks this node to drain.
    drain: tokio::sync::Notify,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// A control plane signing with `signer`, placing tunnels with `placement` and
    /// keeping its state in `store`.
    pub fn new(
        config: ControlConfig,
        signer: TokenSigner,
        placement: Box<dyn Placement>,
        store: Arc<dyn Store>,
    ) -> Self {
        let rate = RateLimiter::new(config.api_rate);
        Control {
            config,
            signer,
            placement,
            store,
            rng: SystemRandom::new(),
            rate,
            anonymous: AnonymousTunnels::default(),
            lifecycle: Mutex::new(()),
            drain: tokio::sync::Notify::new(),
            nodes: std::sync::OnceLock::new(),
            shared_rate: std::sync::OnceLock::new(),
        }
    }

    /// The tunnel's state: at this node's Edge, or else at another node of the fleet
    /// (so limits and listings count tunnels wherever they are served).
    pub fn status(&self, tunnel_id: &str) -> TunnelStatus {
        match self.placement.status(tunnel_id) {
            TunnelStatus::Offline => match self.nodes.get().and_then(|n| n.serving(tunnel_id)) {
                Some((node, agent)) => TunnelStatus::Elsewhere { node, agent },
                None => TunnelStatus::Offline,
            },
            local => local,
        }
    }

    /// Asks this node to drain, for `caller` (`POST /admin/drain`): only a key listed
    /// with `--admin-key` may. Asking again while it drains changes nothing. Answers
    /// the node's id in its fleet.
    pub fn request_drain(&self, caller: &Caller) -> Result<Option<String>, api::ApiError> {
        let id = caller.require_key("draining a node")?;
        if !self.config.admin_keys.iter().any(|k| k == id) {
            return Err(api::ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                netbore_codes::ErrorCode::Forbidden,
                "this API key may not drain the node; use a key the server names with --admin-key",
            ));
        }
        tracing::info!(key = %id, "an admin key asked this node to drain");
        self.drain.notify_one();
        Ok(self.config.edges.first().and_then(|e| e.node.clone()))
    }

    /// Completes when an admin key has asked this node to drain.
    pub async fn drain_requested(&self) {
        self.drain.notified().await;
    }

    /// Makes this control plane hand agents the fleet's other nodes after its own
    /// Edge. Set once; later calls are ignored.
    pub fn set_nodes(&self, nodes: Arc<dyn Nodes>) {
        let _ = self.nodes.set(nodes);
    }

    /// The Edges handed to agents: this node's, then the fleet's other live nodes;
    /// only the others while this node drains and there are others.
    pub fn candidates(&self) -> Vec<EdgeCandidate> {
        let mut edges = self.config.edges.clone();
        if let Some(nodes) = self.nodes.get() {
            let others = nodes.others();
            if nodes.draining() && !others.is_empty() {
                return others;
            }
            edges.extend(others);
        }
        edges
    }

    /// The live nodes that take this node's tunnels while it drains; `None` when it
    /// does not drain or no other node takes them.
    fn moving_to(&self) -> Option<Vec<EdgeCandidate>> {
        let nodes = self.nodes.get().filter(|n| n.draining())?;
        Some(nodes.others()).filter(|others| !others.is_empty())
    }

    /// The settings.
    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// The signer (Edges built in the same process take its verifier).
    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The API rate limiter.
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.rate
    }

    /// Makes the API's rate limit count each client's requests at every node of the
    /// fleet too.
    pub fn set_shared_rate(&self, shared: Arc<dyn SharedRate>) {
        let _ = self.shared_rate.set(shared);
    }

    /// The fleet's count of API requests, when this node is part of a fleet.
    pub fn shared_rate(&self) -> Option<&Arc<dyn SharedRate>> {
        self.shared_rate.get()
    }
}
