//! What the console knows from the agent's events: the session's status and each
//! tunnel's public URL. Plain data, changed only by [`State::handle_event`].

use std::time::{Duration, Instant};

use netbore_agent::{AgentEvent, TunnelSpec};
use netbore_control::api::Protocol;

/// Where the session to the Edge stands, as the console says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// Dialing the Edge for the first time.
    Connecting,
    /// The session is up.
    Online,
    /// The session was lost or could not be made; the next try is at `retry_at`.
    Reconnecting {
        /// Attempt number (1 for the first retry).
        attempt: u32,
        /// What went wrong, one sentence.
        reason: String,
        /// When the next attempt starts.
        retry_at: Instant,
    },
}

/// One tunnel's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TunnelRow {
    /// Its protocol.
    pub(crate) protocol: Protocol,
    /// The origin, `HOST:PORT`.
    pub(crate) local: String,
    /// The Edge's id for it, once it has been online.
    pub(crate) tunnel_id: Option<String>,
    /// Where viewers reach it, once it has been online.
    pub(crate) public_url: Option<String>,
    /// Why the Edge took it away for good, if it did.
    pub(crate) closed: Option<String>,
}

/// The session and its tunnels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct State {
    /// The session's status.
    pub(crate) status: Status,
    /// The transport of the session last online (`quic`, `wss`, ...).
    pub(crate) transport: Option<&'static str>,
    /// The tunnels, in the order they were asked for.
    pub(crate) tunnels: Vec<TunnelRow>,
}

impl State {
    /// The state before the first event: connecting, every tunnel waiting.
    pub(crate) fn new(tunnels: &[TunnelSpec]) -> Self {
        State {
            status: Status::Connecting,
            transport: None,
            tunnels: tunnels
                .iter()
                .map(|t| TunnelRow {
                    protocol: t.protocol,
                    local: t.local.clone(),
                    tunnel_id: None,
                    public_url: None,
                    closed: None,
                })
                .collect(),
        }
    }

    /// Takes in one agent event that happened at `now`.
    pub(crate) fn handle_event(&mut self, event: &AgentEvent, now: Instant) {
        match event {
            AgentEvent::Online {
                tunnel_id,
                public_url,
                local,
                transport,
                ..
            } => {
                self.status = Status::Online;
                self.transport = Some(transport.as_str());
                // The tunnel with this id, else the first with this origin that has
                // had none yet (events come in the order the tunnels were asked for).
                let row = match self.row_of(tunnel_id) {
                    Some(i) => Some(i),
                    None => self
                        .tunnels
                        .iter()
                        .position(|t| t.tunnel_id.is_none() && t.local == *local),
                };
                match row {
                    Some(i) => {
                        let t = &mut self.tunnels[i];
                        t.tunnel_id = Some(tunnel_id.clone());
                        t.public_url = Some(public_url.clone());
                        t.closed = None;
                    }
                    // Not one of the tunnels asked for: show it all the same.
                    None => self.tunnels.push(TunnelRow {
                        protocol: protocol_of(public_url),
                        local: local.clone(),
                        tunnel_id: Some(tunnel_id.clone()),
                        public_url: Some(public_url.clone()),
                        closed: None,
                    }),
                }
            }
            AgentEvent::TunnelClosed {
                tunnel_id, message, ..
            } => {
                if let Some(i) = self.row_of(tunnel_id) {
                    self.tunnels[i].closed = Some(message.clone());
                }
            }
            AgentEvent::Reconnecting {
                attempt,
                delay,
                reason,
            } => {
                self.status = Status::Reconnecting {
                    attempt: *attempt,
                    reason: reason.clone(),
                    retry_at: now + *delay,
                };
            }
        }
    }

    fn row_of(&self, tunnel_id: &str) -> Option<usize> {
        self.tunnels
            .iter()
            .position(|t| t.tunnel_id.as_deref() == Some(tunnel_id))
    }

    /// Whether any tunnel carries HTTP (its requests are listed).
    pub(crate) fn has_http(&self) -> bool {
        self.tunnels.iter().any(|t| t.protocol == Protocol::Http)
    }

    /// Whether any tunnel carries raw TCP or TLS (its connections are listed).
    pub(crate) fn has_tcp(&self) -> bool {
        self.tunnels.iter().any(|t| t.protocol != Protocol::Http)
    }
}

/// The protocol a public URL's scheme names (`http` for `https://` too).
fn protocol_of(public_url: &str) -> Protocol {
    match public_url.split_once("://").map(|(scheme, _)| scheme) {
        Some("tcp") => Protocol::Tcp,
        Some("tls") => Protocol::Tls,
        _ => Protocol::Http,
    }
}

/// How long until `at`, from `now` (zero once past).
pub(crate) fn until(at: Instant, now: Instant) -> Duration {
    at.saturating_duration_since(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbore_transport::TransportKind;

    fn online(id: &str, url: &str, local: &str) -> AgentEvent {
        AgentEvent::Online {
            tunnel_id: id.into(),
            public_url: url.into(),
            local: local.into(),
            transport: TransportKind::Quic,
            name: None,
        }
    }

    #[test]
    fn events_move_the_status_and_fill_the_tunnels_in_order() {
        let specs = [
            TunnelSpec::http("127.0.0.1:3000".into(), None),
            TunnelSpec::tcp("127.0.0.1:3000".into(), None),
        ];
        let mut s = State::new(&specs);
        let now = Instant::now();
        assert_eq!(s.status, Status::Connecting);
        s.handle_event(&online("t1", "http://a.example", "127.0.0.1:3000"), now);
        s.handle_event(&online("t2", "tcp://example:9", "127.0.0.1:3000"), now);
        assert_eq!(s.status, Status::Online);
        assert_eq!(s.transport, Some("quic"));
        assert_eq!(s.tunnels[0].public_url.as_deref(), Some("http://a.example"));
        assert_eq!(s.tunnels[1].public_url.as_deref(), Some("tcp://example:9"));

        s.handle_event(
            &AgentEvent::Reconnecting {
                attempt: 2,
                delay: Duration::from_secs(3),
                reason: "gone".into(),
            },
            now,
        );
        assert!(matches!(s.status, Status::Reconnecting { attempt: 2, .. }));
        // Back online over the same tunnels: matched by id, nothing added.
        s.handle_event(&online("t2", "tcp://example:9", "127.0.0.1:3000"), now);
        s.handle_event(
            &AgentEvent::TunnelClosed {
                tunnel_id: "t1".into(),
                code: "tunnel_deleted".into(),
                message: "deleted".into(),
            },
            now,
        );
        assert_eq!(s.tunnels.len(), 2);
        assert_eq!(s.tunnels[0].closed.as_deref(), Some("deleted"));
        assert_eq!(s.status, Status::Online);
        assert!(s.has_http() && s.has_tcp());
    }
}
