//! The agent's metrics.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::basic::{Counter, Gauge};
use crate::histogram::Histogram;
use crate::keyed::KeyedCounters;
use crate::tunnels::TunnelTable;

/// Where the agent's session to the Edge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Dialing the Edge for the first time.
    Connecting,
    /// A session is up and its tunnels are online.
    Online,
    /// The session was lost; the agent is dialing again.
    Reconnecting,
}

impl SessionState {
    const ALL: [SessionState; 3] = [
        SessionState::Connecting,
        SessionState::Online,
        SessionState::Reconnecting,
    ];

    fn as_str(self) -> &'static str {
        match self {
            SessionState::Connecting => "connecting",
            SessionState::Online => "online",
            SessionState::Reconnecting => "reconnecting",
        }
    }
}

/// Everything an agent counts. See `docs/metrics.md`.
#[derive(Debug)]
pub struct AgentMetrics {
    state: Mutex<(SessionState, &'static str)>,
    rtt_micros: AtomicU64,
    /// Sessions lost and dialed again, by reason.
    pub reconnects: KeyedCounters,
    /// Streams from the Edge open now.
    pub streams_open: Gauge,
    /// Bytes per tunnel (`in`: from viewers to the origin).
    pub tunnels: TunnelTable,
    /// Connections to the origin that failed.
    pub origin_failures: Counter,
    /// Time to connect to the origin.
    pub origin_connect: Histogram,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            state: Mutex::new((SessionState::Connecting, "")),
            rtt_micros: AtomicU64::new(0),
            reconnects: KeyedCounters::new(&["reason"]),
            streams_open: Gauge::default(),
            tunnels: TunnelTable::default(),
            origin_failures: Counter::default(),
            origin_connect: Histogram::default(),
        }
    }
}

impl AgentMetrics {
    /// Records the session's state and the transport it runs on ("" before one).
    pub fn set_state(&self, state: SessionState, transport: &'static str) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (state, transport);
    }

    /// The session's state now.
    pub fn state(&self) -> SessionState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Records the latest round-trip time to the Edge.
    pub fn set_rtt(&self, rtt: Duration) {
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.rtt_micros.store(micros, Ordering::Relaxed);
    }

    /// The latest round-trip time to the Edge; `None` before the first measure.
    pub fn rtt(&self) -> Option<Duration> {
        match self.rtt_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}

impl Collector for &'static AgentMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (state, transport) = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut m = encoder.encode_descriptor(
            "netbore_agent_session_state",
            "1 for the state the agent's session is in (with its transport), 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for s in SessionState::ALL {
            let on = i64::from(s == state);
            m.encode_family(&[("state", s.as_str()), ("transport", transport)])?
                .encode_gauge(&on)?;
        }
        encoder
            .encode_descriptor(
                "netbore_agent_rtt_seconds",
                "Latest round-trip time to the Edge",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(self.rtt_micros.load(Ordering::Relaxed) as f64 / 1e6))?;
        self.reconnects.encode(
            &mut encoder,
            "netbore_agent_reconnects",
            "Sessions lost and dialed again, by reason",
        )?;
        encoder
            .encode_descriptor(
                "netbore_agent_streams_open",
                "Streams from the Edge open now",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.streams_open.get())?;
        self.tunnels.encode(&mut encoder, "netbore_agent_")?;
        encoder
            .encode_descriptor(
                "netbore_agent_origin_failures",
                "Connections to the origin that failed",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&self.origin_failures.get(), None)?;
        let (sum, count, buckets) = self.origin_connect.snapshot().encoded();
        encoder
            .encode_descriptor(
                "netbore_agent_origin_connect_seconds",
                "Time to connect to the origin",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        Ok(())
    }
}
