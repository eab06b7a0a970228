//! `netbore server --redis`: this node's place in a fleet (`docs/protocols/fleet.md`).
//! The node's flags, its record in the node list, and the wiring of the fleet's
//! directory into the Edge's registry and the control plane's candidates.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use netbore_fleet::{Fleet, NodeInfo};

/// Flags of a fleet node (used with `--redis`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FleetArgs {
    /// This node's id in the fleet (letters, digits, '.', '-', '_', ':'; default:
    /// the advertised host and the agent port, e.g. 10.0.0.5:7835).
    #[arg(long, requires = "redis")]
    pub(crate) node_id: Option<String>,
    /// Host name or address other nodes and agents reach this node at (default: the
    /// agent listener's address, when it is not a wildcard such as 0.0.0.0).
    #[arg(long, requires = "redis")]
    pub(crate) advertise: Option<String>,
    /// This node's region: agents are offered the nodes of the region of the node
    /// they asked first.
    #[arg(long, requires = "redis", default_value = "")]
    pub(crate) region: String,
}

impl FleetArgs {
    /// The host this node advertises, given its agent listener's address.
    pub(crate) fn advertised_host(&self, agent: SocketAddr) -> anyhow::Result<String> {
        if let Some(host) = &self.advertise {
            return Ok(host.clone());
        }
        anyhow::ensure!(
            !agent.ip().is_unspecified(),
            "a fleet node listening for agents on {agent} must say where others reach it; pass --advertise HOST"
        );
        Ok(match agent {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        })
    }
}

/// What the node tells the fleet about itself.
pub(crate) struct NodeSpec {
    pub(crate) host: String,
    pub(crate) agent: SocketAddr,
    pub(crate) control: SocketAddr,
    pub(crate) transports: Vec<String>,
    pub(crate) development_ca: bool,
    pub(crate) link_cert: String,
    /// The raw public key this node signs tunnel tokens with.
    pub(crate) signing_key: Vec<u8>,
}

/// Joins the fleet in the Redis at `url`.
pub(crate) fn join(
    url: &str,
    args: &FleetArgs,
    spec: NodeSpec,
    mask_agent_ip: bool,
    trusted: netbore_control::tokens::TrustedKeys,
) -> anyhow::Result<Arc<Fleet>> {
    let id = args
        .node_id
        .clone()
        .unwrap_or_else(|| format!("{}:{}", spec.host, spec.agent.port()));
    let host_ip = spec
        .host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .ok();
    // Loopback clients may use plain http:// with the control API; others use TLS.
    let scheme = if host_ip.is_some_and(|ip| ip.is_loopback()) {
        "http"
    } else {
        "https"
    };
    let node = NodeInfo {
        id,
        region: args.region.clone(),
        agent_addr: format!("{}:{}", spec.host, spec.agent.port()),
        control_url: format!("{scheme}://{}:{}", spec.host, spec.control.port()),
        transports: spec.transports,
        development_ca: spec.development_ca,
        link_cert: spec.link_cert,
        signing_key: spec
            .signing_key
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        ..NodeInfo::default()
    };
    Fleet::join(url, node, mask_agent_ip, trusted).context("could not join the fleet")
}
