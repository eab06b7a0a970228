//! Netbore's Prometheus metrics.
//!
//! Counting happens on the forwarding path, so every count there is one relaxed atomic
//! add on a value the caller already holds (a tunnel's [`TunnelStats`], a protocol's
//! slot): no lock, no map look-up. Counts that happen once per session, handshake or
//! API call go to keyed families behind a mutex. Everything is read only when
//! `/metrics` is scraped, and written out by `prometheus-client` in the Prometheus
//! text format (0.0.4). `docs/metrics.md` describes each metric.
//!
//! The server's and the agent's metrics are process-wide ([`server`], [`agent`]): one
//! process runs one role, and the counting sites need no handle threaded to them.

mod agent;
mod basic;
mod histogram;
mod keyed;
mod process;
mod server;
mod tunnels;

pub use agent::{AgentMetrics, SessionState};
pub use basic::{Counter, Gauge, GaugeGuard};
pub use histogram::{DURATION_BUCKETS, Histogram};
pub use keyed::{KeyedCounters, KeyedGauges};
pub use server::{AgentSession, ServerMetrics, ViewerConnection, ViewerProtocol};
pub use tunnels::{DEFAULT_TUNNEL_LABELS, TunnelGuard, TunnelStats, TunnelTable};

use std::sync::LazyLock;

use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

static SERVER: LazyLock<ServerMetrics> = LazyLock::new(ServerMetrics::default);
static AGENT: LazyLock<AgentMetrics> = LazyLock::new(AgentMetrics::default);

/// The server's metrics (Edge and control plane), process-wide.
pub fn server() -> &'static ServerMetrics {
    &SERVER
}

/// The agent's metrics, process-wide.
pub fn agent() -> &'static AgentMetrics {
    &AGENT
}

/// Which metrics a process exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `netbore server`: [`server`]'s metrics and the process's.
    Server,
    /// An agent command: [`agent`]'s metrics and the process's.
    Agent,
}

/// The metrics of `role` and of the process, in the Prometheus text format.
pub fn render(role: Role) -> String {
    let mut registry = Registry::default();
    match role {
        Role::Server => registry.register_collector(Box::new(&*SERVER)),
        Role::Agent => registry.register_collector(Box::new(&*AGENT)),
    }
    registry.register_collector(Box::new(process::Process));
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}
