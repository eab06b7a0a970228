//! The server's metrics: Edge and control plane.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::basic::{Counter, Gauge};
use crate::keyed::{KeyedCounters, KeyedGauges};
use crate::tunnels::TunnelTable;

/// How a viewer reached the Edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerProtocol {
    /// Plain HTTP ingress.
    Http,
    /// HTTPS ingress terminated at the Edge.
    Https,
    /// A TCP tunnel's public port.
    Tcp,
    /// TLS passthrough (a `tls` tunnel on the HTTPS port).
    Tls,
}

impl ViewerProtocol {
    const ALL: [ViewerProtocol; 4] = [
        ViewerProtocol::Http,
        ViewerProtocol::Https,
        ViewerProtocol::Tcp,
        ViewerProtocol::Tls,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ViewerProtocol::Http => "http",
            ViewerProtocol::Https => "https",
            ViewerProtocol::Tcp => "tcp",
            ViewerProtocol::Tls => "tls",
        }
    }
}

/// Everything the server counts. See `docs/metrics.md`.
#[derive(Debug)]
pub struct ServerMetrics {
    /// Online tunnels and their traffic.
    pub tunnels: TunnelTable,
    /// Agent sessions by transport.
    pub agent_sessions: KeyedGauges,
    viewer_total: [Counter; 4],
    viewer_open: [Gauge; 4],
    /// Streams open between the Edge and agents (viewer connections, requests in
    /// flight, WebSockets).
    pub streams_open: Gauge,
    /// Agent hellos refused, by error code.
    pub handshake_failures: KeyedCounters,
    /// Tokens refused, by reason.
    pub token_refusals: KeyedCounters,
    /// Control API requests by route and status.
    pub api_requests: KeyedCounters,
    /// Requests refused by a rate limit, by limit.
    pub rate_limited: KeyedCounters,
    /// ACME orders by result.
    pub acme_orders: KeyedCounters,
    /// Certificates' expiry (Unix seconds) by name.
    pub certificate_expiry: KeyedGauges,
    /// Viewer streams refused because the window budget was spent.
    pub budget_refusals: Counter,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            tunnels: TunnelTable::default(),
            agent_sessions: KeyedGauges::new(&["transport"]),
            viewer_total: Default::default(),
            viewer_open: Default::default(),
            streams_open: Gauge::default(),
            handshake_failures: KeyedCounters::new(&["code"]),
            token_refusals: KeyedCounters::new(&["reason"]),
            api_requests: KeyedCounters::new(&["route", "status"]),
            rate_limited: KeyedCounters::new(&["limit"]),
            acme_orders: KeyedCounters::new(&["result"]),
            certificate_expiry: KeyedGauges::new(&["name"]),
            budget_refusals: Counter::default(),
        }
    }
}

/// One open viewer connection, counted until dropped.
#[derive(Debug)]
pub struct ViewerConnection(&'static Gauge);

impl Drop for ViewerConnection {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// One agent session, counted under its transport until dropped.
#[derive(Debug)]
pub struct AgentSession(&'static str);

impl Drop for AgentSession {
    fn drop(&mut self) {
        crate::server().agent_sessions.add(&[self.0], -1.0);
    }
}

impl ServerMetrics {
    /// Counts a viewer connection accepted over `protocol`; it stays open in the
    /// gauge until the returned value is dropped.
    pub fn viewer_connection(&'static self, protocol: ViewerProtocol) -> ViewerConnection {
        let i = protocol as usize;
        self.viewer_total[i].inc();
        self.viewer_open[i].add(1);
        ViewerConnection(&self.viewer_open[i])
    }

    /// Counts an agent session on `transport` until the returned value is dropped.
    pub fn agent_session(&'static self, transport: &'static str) -> AgentSession {
        self.agent_sessions.add(&[transport], 1.0);
        AgentSession(transport)
    }

    /// Viewer connections accepted over `protocol` so far.
    pub fn viewer_connections(&self, protocol: ViewerProtocol) -> u64 {
        self.viewer_total[protocol as usize].get()
    }
}

impl Collector for &'static ServerMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.tunnels.encode(&mut encoder, "netbore_")?;
        self.agent_sessions.encode(
            &mut encoder,
            "netbore_agent_sessions",
            "Agent sessions by transport",
        )?;
        let mut m = encoder.encode_descriptor(
            "netbore_viewer_connections",
            "Viewer connections accepted, by protocol",
            None,
            MetricType::Counter,
        )?;
        for p in ViewerProtocol::ALL {
            m.encode_family(&[("protocol", p.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(&self.viewer_total[p as usize].get(), None)?;
        }
        let mut m = encoder.encode_descriptor(
            "netbore_viewer_connections_open",
            "Viewer connections open now, by protocol",
            None,
            MetricType::Gauge,
        )?;
        for p in ViewerProtocol::ALL {
            m.encode_family(&[("protocol", p.as_str())])?
                .encode_gauge(&self.viewer_open[p as usize].get())?;
        }
        encoder
            .encode_descriptor(
                "netbore_streams_open",
                "Streams open between the Edge and agents",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.streams_open.get())?;
        encoder
            .encode_descriptor(
                "netbore_buffer_budget_refusals",
                "Viewer streams refused because --max-buffered-bytes was spent",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&self.budget_refusals.get(), None)?;
        self.handshake_failures.encode(
            &mut encoder,
            "netbore_handshake_failures",
            "Agent hellos refused, by error code",
        )?;
        self.token_refusals.encode(
            &mut encoder,
            "netbore_token_refusals",
            "Tokens refused, by reason",
        )?;
        self.api_requests.encode(
            &mut encoder,
            "netbore_api_requests",
            "Control API requests by route and status",
        )?;
        self.rate_limited.encode(
            &mut encoder,
            "netbore_rate_limited",
            "Control API requests refused by a rate limit, by limit",
        )?;
        self.acme_orders.encode(
            &mut encoder,
            "netbore_acme_orders",
            "ACME certificate orders by result",
        )?;
        self.certificate_expiry.encode(
            &mut encoder,
            "netbore_certificate_expiry_seconds",
            "When each served certificate expires, in Unix seconds",
        )?;
        Ok(())
    }
}
