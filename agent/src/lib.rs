//! The Netbore Agent: asks the control plane for tunnels, holds one session to an Edge
//! (reconnecting with backoff when it drops, keeping the same public port), and pipes
//! every stream the Edge opens to the local Origin.
//!
//! It never parses what flows through a tunnel; it is a byte pipe to the origin.

pub mod backoff;
pub mod control_client;
mod origin;

use std::time::Duration;

use netbore_control::api::{CreateTunnelRequest, CreateTunnelResponse};
use netbore_mux::Config as MuxConfig;
use netbore_transport::proto::{self, Hello, HelloReply, PROTOCOL_VERSION};
use netbore_transport::{Session, Stream, TransportKind, tcp};

pub use control_client::ControlUrl;

/// One tunnel the agent keeps online.
#[derive(Debug, Clone)]
pub struct TunnelSpec {
    /// The origin, `HOST:PORT`.
    pub local: String,
    /// The public port asked for (`--remote-port`); allocated by the server if absent.
    pub remote_port: Option<u16>,
}

/// Settings of an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The control plane.
    pub server: ControlUrl,
    /// The tunnels, all carried by one session.
    pub tunnels: Vec<TunnelSpec>,
    /// Mux limits.
    pub mux: MuxConfig,
    /// How long connecting to the Edge, the hello, or an origin may take.
    pub connect_timeout: Duration,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
}

impl AgentConfig {
    /// Defaults for `server` and `tunnels`.
    pub fn new(server: ControlUrl, tunnels: Vec<TunnelSpec>) -> Self {
        AgentConfig {
            server,
            tunnels,
            mux: MuxConfig::default(),
            connect_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What the agent reports as it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// A tunnel is online.
    Online {
        /// Tunnel id.
        tunnel_id: String,
        /// Where viewers reach it.
        public_url: String,
        /// The origin it forwards to.
        local: String,
        /// Transport of the session.
        transport: TransportKind,
    },
    /// The session ended or could not be made; another attempt follows.
    Reconnecting {
        /// Attempt number (1 for the first retry).
        attempt: u32,
        /// Wait before it.
        delay: Duration,
        /// What went wrong, one sentence.
        reason: String,
    },
}

/// Why the agent stopped or a connection attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The control plane could not be reached or answered nonsense.
    #[error(
        "could not reach the control plane at {url}: {reason}; check --server and that the server is running"
    )]
    ControlUnreachable {
        /// The URL tried.
        url: String,
        /// The cause.
        reason: String,
    },
    /// The control plane or the Edge refused with a typed error.
    #[error("{message}")]
    Refused {
        /// Stable code.
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// The Edge could not be reached or the session broke during setup.
    #[error("could not connect to the Edge at {addr}: {reason}")]
    EdgeUnreachable {
        /// The address tried.
        addr: String,
        /// The cause.
        reason: String,
    },
}

impl AgentError {
    /// The stable code of this error, for `--json` output.
    pub fn code(&self) -> &str {
        match self {
            AgentError::ControlUnreachable { .. } => "control_unreachable",
            AgentError::Refused { code, .. } => code,
            AgentError::EdgeUnreachable { .. } => "edge_unreachable",
        }
    }

    /// True when retrying cannot help (bad request, credentials, a port outside the range).
    pub fn is_permanent(&self) -> bool {
        matches!(self, AgentError::Refused { code, .. }
            if matches!(code.as_str(), "bad_request" | "unauthorized" | "port_not_allowed" | "port_in_use" | "protocol_error"))
    }
}

/// Runs the agent until a permanent error: creates the tunnels, keeps the session up,
/// and reconnects with backoff (asking for the same public ports) when it drops.
/// `on_event` hears every state change.
pub async fn run(config: AgentConfig, on_event: impl Fn(AgentEvent)) -> AgentError {
    let mut ports: Vec<Option<u16>> = config.tunnels.iter().map(|t| t.remote_port).collect();
    let mut attempt = 0u32;
    let mut ever_online = false;
    loop {
        let reason = match connect(&config, &ports).await {
            Ok((session, created, hello_stream)) => {
                ever_online = true;
                attempt = 0;
                for (i, c) in created.iter().enumerate() {
                    ports[i] = public_port(&c.public_url);
                    on_event(AgentEvent::Online {
                        tunnel_id: c.tunnel_id.clone(),
                        public_url: c.public_url.clone(),
                        local: config.tunnels[i].local.clone(),
                        transport: session.kind(),
                    });
                }
                let origins: Vec<String> = config.tunnels.iter().map(|t| t.local.clone()).collect();
                origin::serve(&session, origins, config.connect_timeout).await;
                // The hello stream stays open for the life of the session.
                drop(hello_stream);
                format!("the session to the Edge ended ({})", session.closed().await)
            }
            // A permanent refusal on the first attempt is the user's to fix. Once the
            // tunnel has been online, keep trying: the condition may pass.
            Err(e) if e.is_permanent() && !ever_online => return e,
            Err(e) => e.to_string(),
        };
        attempt += 1;
        let delay = backoff::delay(attempt, config.max_backoff);
        on_event(AgentEvent::Reconnecting {
            attempt,
            delay,
            reason,
        });
        tokio::time::sleep(delay).await;
    }
}

/// One connection attempt: create every tunnel, dial the Edge, say hello.
async fn connect(
    config: &AgentConfig,
    ports: &[Option<u16>],
) -> Result<(Session, Vec<CreateTunnelResponse>, Stream), AgentError> {
    let mut created = Vec::with_capacity(ports.len());
    for port in ports {
        let request = CreateTunnelRequest::tcp(*port);
        created.push(control_client::create_tunnel(&config.server, &request).await?);
    }
    let edge = created[0]
        .edges
        .iter()
        .find(|e| e.transports.iter().any(|t| t == "tcp"))
        .ok_or_else(|| AgentError::Refused {
            code: "no_edge".into(),
            message: "the control plane offered no Edge this agent can reach over tcp; check the server's configuration".into(),
        })?
        .addr
        .clone();
    let unreachable = |reason: String| AgentError::EdgeUnreachable {
        addr: edge.clone(),
        reason,
    };
    let timeout = config.connect_timeout;
    let session = tokio::time::timeout(timeout, tcp::connect(edge.as_str(), config.mux.clone()))
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        tokens: created.iter().map(|c| c.ephemeral_token.clone()).collect(),
        agent: concat!("netbore/", env!("CARGO_PKG_VERSION")).into(),
    };
    let exchange = async {
        let mut stream = session
            .open()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        proto::write_message(&mut stream, &hello)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let reply: HelloReply = proto::read_message(&mut stream)
            .await
            .map_err(|e| unreachable(format!("the Edge did not answer the hello: {e}")))?;
        Ok::<_, AgentError>((reply, stream))
    };
    let (reply, hello_stream) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unreachable(format!("the hello got no answer within {timeout:?}")))??;
    match reply {
        HelloReply::Ok { tunnels } => {
            for (c, bound) in created.iter_mut().zip(&tunnels) {
                c.public_url = bound.public_url.clone();
            }
            Ok((session, created, hello_stream))
        }
        HelloReply::Error(body) => Err(AgentError::Refused {
            code: body.code.as_str().into(),
            message: body.message,
        }),
    }
}

/// The port of a `tcp://host:port` URL.
fn public_port(url: &str) -> Option<u16> {
    url.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}
