//! The control API (axum): `POST /tunnels/create`. Errors share one JSON shape,
//! `{"error": {"code": "...", "message": "..."}}`, with stable codes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::Control;

/// The protocol of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Raw TCP on a public port.
    Tcp,
    /// HTTP routed by host name (`NAME.DOMAIN`).
    Http,
}

impl Protocol {
    /// The protocol as it appears in JSON and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of `POST /tunnels/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTunnelRequest {
    /// `tcp` or `http`.
    pub protocol: Protocol,
    /// The name of an HTTP tunnel (`NAME.DOMAIN`); random if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A specific public port for a TCP tunnel; allocated from the server's range if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// The secret returned by an earlier create: reclaims that tunnel's id and URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recreate_token: Option<String>,
}

impl CreateTunnelRequest {
    /// A TCP tunnel on `remote_port` (or any port from the server's range).
    pub fn tcp(remote_port: Option<u16>) -> Self {
        CreateTunnelRequest {
            protocol: Protocol::Tcp,
            name: None,
            remote_port,
            recreate_token: None,
        }
    }

    /// An HTTP tunnel named `name` (or a random name).
    pub fn http(name: Option<String>) -> Self {
        CreateTunnelRequest {
            protocol: Protocol::Http,
            name,
            remote_port: None,
            recreate_token: None,
        }
    }
}

/// One Edge an agent may connect to, in preference order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCandidate {
    /// `host:port` of the Edge's agent listener.
    pub addr: String,
    /// Transports the Edge offers there, most preferred first.
    pub transports: Vec<String>,
}

/// Answer to `POST /tunnels/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTunnelResponse {
    /// The tunnel's id.
    pub tunnel_id: String,
    /// `tcp` or `http`.
    pub protocol: Protocol,
    /// The name of an HTTP tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where viewers reach the tunnel, e.g. `tcp://example.com:5432` or
    /// `http://name.example.com`.
    pub public_url: String,
    /// Edges to connect to, most preferred first.
    pub edges: Vec<EdgeCandidate>,
    /// Single-use EdDSA JWT for the Edge handshake.
    pub ephemeral_token: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// Secret that reclaims this tunnel later; returned once, on the first create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recreate_token: Option<String>,
}

/// The one error shape of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ApiErrorBody,
}

/// Code and sentence of an API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// Stable code (`bad_request`, `unauthorized`, `port_in_use`, ...).
    pub code: String,
    /// One sentence: what happened and what to do.
    pub message: String,
}

/// An API error with its HTTP status.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: ApiErrorBody {
                code: self.code.into(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The API's routes.
pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/tunnels/create", post(create_tunnel))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such API endpoint; see docs/openapi.yaml",
            )
        })
        .with_state(control)
}

async fn create_tunnel(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<CreateTunnelRequest>, JsonRejection>,
) -> Result<Json<CreateTunnelResponse>, ApiError> {
    let owner = if headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server does not issue API keys yet; connect without one to a server started with --allow-anonymous",
        ));
    } else if control.config.allow_anonymous {
        format!("anonymous:{}", client.ip())
    } else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server does not accept anonymous tunnels; ask its operator to start it with --allow-anonymous",
        ));
    };
    let Json(request) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the request body is not valid: {}", e.body_text()),
        )
    })?;
    control.create_tunnel(&owner, &request).map(Json)
}
