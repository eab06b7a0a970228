//! Netbore's control plane: authenticates agents, creates tunnels and mints the
//! short-lived EdDSA tokens Edges verify.
//!
//! It serves `POST /tunnels/create` ([`api`]) and asks a [`Placement`] (the Edge, when
//! co-located) to reserve the public port. It knows nothing of the mux or transports.

pub mod api;
pub mod tokens;

use std::time::Duration;

use axum::http::StatusCode;

use crate::api::{ApiError, CreateTunnelRequest, CreateTunnelResponse, EdgeCandidate};
use crate::tokens::TokenSigner;

/// Why an Edge could not place a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlacementError {
    /// Stable code (`port_in_use`, `port_not_allowed`, `no_port_available`, `internal`).
    pub code: &'static str,
    /// One sentence for a person.
    pub message: String,
}

/// Where tunnels are placed: the Edge reserves public resources for a tunnel until its
/// agent arrives with the token.
pub trait Placement: Send + Sync + 'static {
    /// Reserves a public TCP port for `tunnel_id` (the `requested` one, or one from the
    /// range) and holds it for `hold` while the agent connects.
    fn reserve_tcp_port(
        &self,
        tunnel_id: &str,
        requested: Option<u16>,
        hold: Duration,
    ) -> Result<u16, PlacementError>;
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
        if request.protocol != "tcp" {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "protocol {:?} is not supported by this server; use \"tcp\"",
                    request.protocol
                ),
            ));
        }
        let tunnel_id = format!("tun_{}", self.signer.random_hex(10));
        // Hold the port a little longer than the token lives, so a token that is still
        // valid always finds its port.
        let hold = self.config.token_ttl + Duration::from_secs(5);
        let port = self
            .placement
            .reserve_tcp_port(&tunnel_id, request.remote_port, hold)
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
            .mint(owner, &tunnel_id, "tcp", Some(port), self.config.token_ttl)
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?;
        Ok(CreateTunnelResponse {
            public_url: format!("tcp://{}:{port}", self.config.domain),
            tunnel_id,
            protocol: "tcp".into(),
            edges: self.config.edges.clone(),
            ephemeral_token: token,
            expires_in: self.config.token_ttl.as_secs(),
        })
    }
}
