//! The Edge's side of a fleet: what it needs from the shared directory (which node
//! holds which tunnel), and the node-to-node link that carries viewers to the node
//! holding their tunnel ([`link`]).
//!
//! A single node has no [`Directory`]: every lookup is local and nothing here runs.
//! With one (the `netbore-fleet` crate's, over Redis), the [`Registry`] publishes
//! each tunnel it brings online and withdraws it when it goes offline, and a viewer
//! whose tunnel is not held here is relayed to the holder ([`remote`]).
//!
//! [`Registry`]: crate::Registry

pub mod link;
pub mod mirror;
pub mod remote;

use std::fmt;
use std::net::SocketAddr;

/// What a route key names: a tunnel's public resource, the same at every node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKey {
    /// An HTTP tunnel's host-name label.
    Http(String),
    /// A TLS passthrough tunnel's host-name label.
    Tls(String),
    /// A TCP tunnel's public port.
    Tcp(u16),
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteKey::Http(name) => write!(f, "http:{name}"),
            RouteKey::Tls(name) => write!(f, "tls:{name}"),
            RouteKey::Tcp(port) => write!(f, "tcp:{port}"),
        }
    }
}

impl RouteKey {
    /// Parses [`RouteKey`]'s display form.
    pub fn parse(text: &str) -> Option<RouteKey> {
        let (kind, rest) = text.split_once(':')?;
        match kind {
            "http" if !rest.is_empty() => Some(RouteKey::Http(rest.to_string())),
            "tls" if !rest.is_empty() => Some(RouteKey::Tls(rest.to_string())),
            "tcp" => rest.parse().ok().map(RouteKey::Tcp),
            _ => None,
        }
    }
}

pub use netbore_transport::proto::FleetNode;

/// Another node that holds a tunnel now, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The node's id.
    pub node: String,
    /// `HOST:PORT` of its agent listener, where links are opened.
    pub addr: String,
    /// The fingerprint of the certificate it shows there ([`netbore_transport::tls::fingerprint`]).
    pub cert: String,
    /// The tunnel's id.
    pub tunnel_id: String,
    /// The generation of the directory entry: a different one means the tunnel moved
    /// (or came back), so anything cached for the old one is dropped.
    pub generation: u64,
    /// The agent's address, when the holder did not mask it.
    pub agent: Option<SocketAddr>,
}

/// The fleet's shared store could not be reached to record a token's use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the fleet's shared store did not answer ({0}); try again shortly")]
pub struct StoreUnavailable(pub String);

/// The fleet's shared directory as the Edge uses it. Calls never block on the
/// network (publishing is queued, lookups read a local replica), except the
/// recording of used tokens, which the Edge makes from a blocking thread.
pub trait Directory: Send + Sync + fmt::Debug + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;

    /// The live nodes other than this one that take tunnels (not draining), best
    /// first: where agents hold more sessions and a draining node's agents move.
    fn other_nodes(&self) -> Vec<FleetNode>;

    /// [`Directory::other_nodes`] as they change, by id (so a change of load order
    /// alone is no change): what each agent session is told.
    fn watch_nodes(&self) -> tokio::sync::watch::Receiver<Vec<FleetNode>>;

    /// The control APIs of [`Directory::other_nodes`].
    fn other_controls(&self) -> Vec<String> {
        self.other_nodes()
            .into_iter()
            .map(|n| n.control_url)
            .collect()
    }

    /// The secret links are proven with ([`netbore_transport::link::link_proof`]);
    /// `None` until the node has read it from the fleet.
    fn link_secret(&self) -> Option<Vec<u8>>;

    /// A tunnel came online on this node.
    fn publish(&self, route: &RouteKey, tunnel_id: &str, agent: Option<SocketAddr>);

    /// A tunnel this node published went offline here.
    fn withdraw(&self, route: &RouteKey, tunnel_id: &str);

    /// The live nodes other than this one that hold `route` now, best first: nodes
    /// not draining, then this node's region, then the newest claim. Several when
    /// the tunnel's agent holds sessions on several nodes (`--ha`) or is moving.
    fn holders(&self, route: &RouteKey) -> Vec<Holder>;

    /// The best of [`Directory::holders`].
    fn holder(&self, route: &RouteKey) -> Option<Holder> {
        self.holders(route).into_iter().next()
    }

    /// A number that changes whenever what [`Directory::holders`] and
    /// [`Directory::is_holder`] answer may have changed (after the change is visible),
    /// so an answer checked at one version holds while the version stays; `None`
    /// when the directory keeps no such number (every answer must be asked again).
    fn version(&self) -> Option<u64> {
        None
    }

    /// Whether `node` holds `route` now with the claim of `generation`: whether what
    /// was cached for that holder may still be used.
    fn is_holder(&self, route: &RouteKey, node: &str, generation: u64) -> bool {
        self.holders(route)
            .iter()
            .any(|h| h.node == node && h.generation == generation)
    }

    /// The public ports of the TCP tunnels live nodes other than this one hold.
    fn remote_tcp_ports(&self) -> Vec<u16>;

    /// Records the ids of tokens a hello presents as used at every node, all or
    /// none: `Ok(true)` when none was used before at any node, `Ok(false)` when one
    /// was. Each id is `(jti, Unix second after which it may be forgotten)`. Blocks
    /// on the network.
    fn use_tokens(&self, ids: &[(String, u64)]) -> Result<bool, StoreUnavailable>;

    /// Reserves `route`'s public name or port (HTTP and TLS tunnels share names) for
    /// `tunnel_id`, for at least `hold`, before the tunnel is placed: `Ok(false)` when
    /// it is reserved for another tunnel. The holder keeps the reservation while the
    /// tunnel lives, and for a grace period after (its agent may reclaim it at another
    /// node). Blocks on the network.
    fn reserve(
        &self,
        route: &RouteKey,
        tunnel_id: &str,
        hold: std::time::Duration,
    ) -> Result<bool, StoreUnavailable>;

    /// Forgets ids [`Directory::use_tokens`] recorded whose tunnels could not be
    /// claimed after all, so the tokens may be presented again. Blocks on the network;
    /// a failure only leaves the ids recorded until they expire.
    fn give_back_tokens(&self, ids: &[String]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys_round_trip() {
        for key in [
            RouteKey::Http("shop".into()),
            RouteKey::Tls("db".into()),
            RouteKey::Tcp(20001),
        ] {
            assert_eq!(RouteKey::parse(&key.to_string()), Some(key));
        }
        assert_eq!(RouteKey::parse("http:"), None);
        assert_eq!(RouteKey::parse("tcp:x"), None);
        assert_eq!(RouteKey::parse("udp:1"), None);
    }
}
