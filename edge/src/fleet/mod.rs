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

/// The fleet's shared directory as the Edge uses it. Calls never block on the
/// network: publishing is queued, lookups read a local replica.
pub trait Directory: Send + Sync + fmt::Debug + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;

    /// The secret links are proven with ([`netbore_transport::link::link_proof`]);
    /// `None` until the node has read it from the fleet.
    fn link_secret(&self) -> Option<Vec<u8>>;

    /// A tunnel came online on this node.
    fn publish(&self, route: &RouteKey, tunnel_id: &str, agent: Option<SocketAddr>);

    /// A tunnel this node published went offline here.
    fn withdraw(&self, route: &RouteKey, tunnel_id: &str);

    /// The live node other than this one that holds `route` now, if any.
    fn holder(&self, route: &RouteKey) -> Option<Holder>;

    /// The public ports of the TCP tunnels live nodes other than this one hold.
    fn remote_tcp_ports(&self) -> Vec<u16>;
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
