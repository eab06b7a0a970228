//! The Netbore Edge: accepts agent sessions, checks their hello (token verification),
//! and turns every viewer connection on a tunnel's public TCP port into a stream to the
//! agent.
//!
//! It does not mint tokens (it holds only the control plane's public key) and does not
//! parse what viewers send on TCP tunnels; HTTP ingress arrives as its own module.

pub mod handshake;
pub mod ports;
mod tcp_tunnel;

use std::sync::Arc;
use std::time::Duration;

use netbore_control::tokens::TokenVerifier;
use netbore_mux::GoAwayCode;
use netbore_transport::Session;

pub use ports::{PortPool, PortRange};

/// Streams an agent may open that the Edge has not accepted yet. The Edge expects one
/// (the hello); a small backlog stops an agent from making the Edge buffer a window of
/// data for each of many streams nobody will read.
pub const AGENT_ACCEPT_BACKLOG: usize = 4;

/// The mux settings of agent sessions at the Edge: `base` with the Edge's backlog.
pub fn agent_session_config(base: netbore_mux::Config) -> netbore_mux::Config {
    netbore_mux::Config {
        accept_backlog: AGENT_ACCEPT_BACKLOG,
        ..base
    }
}

/// Settings of an Edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Public host name used in public URLs.
    pub domain: String,
    /// How long a new agent connection may take to send its hello. Stops idle or
    /// garbage connections from holding a session open.
    pub hello_timeout: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            domain: "localhost".into(),
            hello_timeout: Duration::from_secs(10),
        }
    }
}

/// An Edge: verifier, public ports and settings.
#[derive(Debug)]
pub struct Edge {
    config: EdgeConfig,
    verifier: TokenVerifier,
    ports: PortPool,
}

impl Edge {
    /// An Edge verifying tokens with `verifier` and serving tunnels on `ports`.
    pub fn new(config: EdgeConfig, verifier: TokenVerifier, ports: PortPool) -> Arc<Self> {
        Arc::new(Edge {
            config,
            verifier,
            ports,
        })
    }

    /// Accepts agent sessions from `listener` forever.
    pub async fn serve(self: Arc<Self>, listener: netbore_transport::tcp::Listener) {
        loop {
            match listener.accept().await {
                Ok(session) => {
                    tokio::spawn(self.clone().run_session(session));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting an agent connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Runs one agent session: hello, then its tunnels until the session ends.
    pub async fn run_session(self: Arc<Self>, session: Session) {
        let peer = session.peer_addr();
        let bound = match handshake::accept_hello(&self, &session).await {
            Ok(bound) => bound,
            Err(e) => {
                tracing::info!(agent = %peer, code = %e.code, "agent refused: {}", e.message);
                session.close(GoAwayCode::CLOSED_BY_APPLICATION);
                return;
            }
        };
        let mut tunnels = tokio::task::JoinSet::new();
        // The agent has no reason to open more streams after its hello: refuse them.
        let extra = session.clone();
        tunnels.spawn(async move {
            while let Some(mut stream) = extra.accept().await {
                stream.reset();
            }
        });
        for t in bound.tunnels {
            tracing::info!(tunnel_id = %t.tunnel_id, public_url = %t.public_url, agent = %peer, "tunnel online");
            tunnels.spawn(tcp_tunnel::run(
                session.clone(),
                t.slot,
                t.listener,
                t.tunnel_id,
            ));
        }
        let reason = session.closed().await;
        // Dropping the set aborts every tunnel task: public ports close and viewers
        // are disconnected at once.
        drop(tunnels);
        drop(bound.hello_stream);
        tracing::info!(agent = %peer, %reason, "agent session ended; its tunnels are offline");
    }
}
