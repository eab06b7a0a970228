//! Netbore's control plane: authenticates agents, creates tunnels and mints the
//! short-lived EdDSA tokens Edges verify.
//!
//! It serves `POST /tunnels/create` ([`api`]) and asks a [`Placement`] (the Edge, when
//! co-located) to reserve the public port. It knows nothing of the mux or transports.

pub mod api;
pub mod tokens;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;

use crate::api::{ApiError, CreateTunnelRequest, CreateTunnelResponse, EdgeCandidate, Protocol};
use crate::tokens::TokenSigner;

/// Why an Edge could not place a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlacementError {
    /// Stable code (`port_in_use`, `port_not_allowed`, `no_port_available`,
    /// `name_taken`, `internal`).
    pub code: &'static str,
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
}

/// Why the control plane takes a tunnel away from its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The tunnel was deleted through the API; its agent should stop.
    Deleted,
    /// Another agent reclaimed the tunnel with its recreate token.
    Replaced,
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

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Let agents without an API key create tunnels.
    pub allow_anonymous: bool,
    /// Public host name of the Edge (used in public URLs).
    pub domain: String,
    /// Edges handed to agents, most preferred first.
    pub edges: Vec<EdgeCandidate>,
    /// Lifetime of ephemeral tokens.
    pub token_ttl: Duration,
}

/// The control plane's state.
pub struct Control {
    config: ControlConfig,
    signer: TokenSigner,
    placement: Box<dyn Placement>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// A control plane signing with `signer` and placing tunnels with `placement`.
    pub fn new(config: ControlConfig, signer: TokenSigner, placement: Box<dyn Placement>) -> Self {
        Control {
            config,
            signer,
            placement,
        }
    }

    /// The signer (Edges built in the same process take its verifier).
    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    /// Creates a tunnel for `owner`.
    pub fn create_tunnel(
        &self,
        owner: &str,
        request: &CreateTunnelRequest,
    ) -> Result<CreateTunnelResponse, ApiError> {
        let tunnel_id = format!("tun_{}", self.signer.random_hex(10));
        let name = match request.protocol {
            Protocol::Http => Some(
                request
                    .name
                    .clone()
                    .unwrap_or_else(|| self.signer.random_hex(4)),
            ),
            Protocol::Tcp => None,
        };
        // Hold the reservation a little longer than the token lives, so a token that is
        // still valid always finds it.
        let hold = self.config.token_ttl + Duration::from_secs(5);
        let placed = self
            .placement
            .place(&PlaceRequest {
                tunnel_id: tunnel_id.clone(),
                protocol: request.protocol,
                name: name.clone(),
                port: request.remote_port,
                hold,
            })
            .map_err(|e| {
                let status = match e.code {
                    "internal" => StatusCode::INTERNAL_SERVER_ERROR,
                    "no_port_available" => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::CONFLICT,
                };
                ApiError::new(status, e.code, e.message)
            })?;
        let (token, _) = self
            .signer
            .mint(
                owner,
                &tunnel_id,
                request.protocol.as_str(),
                placed.port,
                name.as_deref(),
                self.config.token_ttl,
            )
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?;
        Ok(CreateTunnelResponse {
            public_url: placed.public_url,
            tunnel_id,
            protocol: request.protocol,
            name,
            edges: self.config.edges.clone(),
            ephemeral_token: token,
            expires_in: self.config.token_ttl.as_secs(),
            recreate_token: None,
        })
    }
}
