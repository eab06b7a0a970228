//! Netbore's stable error codes: one typed enum the control API, the hello, the
//! Edge, the agent and the CLI share, so no component matches on strings. Each code
//! appears in JSON in `snake_case` (`port_in_use`), in `docs/control.md` and
//! `docs/protocols/handshake.md`.

use serde::{Deserialize, Serialize};

/// Stable error codes shared by the control API, the hello and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The token is malformed, forged, for another audience, or signed with another algorithm.
    BadToken,
    /// The token's lifetime has passed.
    TokenExpired,
    /// The token was already used once.
    TokenReused,
    /// The requested public port is taken.
    PortInUse,
    /// The requested public port is outside the server's range.
    PortNotAllowed,
    /// No public port is free.
    NoPortAvailable,
    /// The tunnel named by the token is not reserved on this Edge (it expired).
    UnknownTunnel,
    /// The request is malformed.
    BadRequest,
    /// Credentials are required.
    Unauthorized,
    /// The caller is known but may not do this (an API key that is not an admin key).
    Forbidden,
    /// The peer speaks another protocol version or sent a malformed handshake.
    ProtocolError,
    /// The requested name is online or reserved by someone else.
    NameTaken,
    /// A limit on tunnels (per key or per anonymous address) is reached.
    LimitReached,
    /// Too many control API requests in a short time.
    RateLimited,
    /// The tunnel or resource does not exist.
    NotFound,
    /// The tunnel was deleted through the API.
    TunnelDeleted,
    /// Another agent reclaimed the tunnel with its recreate token.
    Replaced,
    /// The shared store (the fleet's Redis) did not answer; try again shortly.
    StoreUnavailable,
    /// The server does not serve tunnels of the asked protocol.
    ProtocolNotServed,
    /// The API route does not take this method.
    MethodNotAllowed,
    /// A recreate token was presented for another protocol or name than its tunnel's.
    RecreateMismatch,
    /// The agent does not trust the certificate the server showed.
    UntrustedCertificate,
    /// The agent refused to send credentials to a control plane over plain HTTP off this machine.
    InsecureControl,
    /// The control plane offered no Edge the agent can use with its transport settings.
    NoEdge,
    /// The agent's HTTP proxy refused the connection.
    ProxyRefused,
    /// The agent's HTTP proxy wants credentials it was not given or refused them.
    ProxyCredentials,
    /// The agent's TLS settings (extra CA, pinned certificate) could not be used.
    TlsConfig,
    /// The agent's state directory could not be read or written.
    StateDir,
    /// Something failed inside the server.
    Internal,
    /// A code this build does not know (from a newer peer); its message says what
    /// happened.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadToken => "bad_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenReused => "token_reused",
            ErrorCode::PortInUse => "port_in_use",
            ErrorCode::PortNotAllowed => "port_not_allowed",
            ErrorCode::NoPortAvailable => "no_port_available",
            ErrorCode::UnknownTunnel => "unknown_tunnel",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ProtocolError => "protocol_error",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TunnelDeleted => "tunnel_deleted",
            ErrorCode::Replaced => "replaced",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::ProtocolNotServed => "protocol_not_served",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RecreateMismatch => "recreate_mismatch",
            ErrorCode::UntrustedCertificate => "untrusted_certificate",
            ErrorCode::InsecureControl => "insecure_control",
            ErrorCode::NoEdge => "no_edge",
            ErrorCode::ProxyRefused => "proxy_refused",
            ErrorCode::ProxyCredentials => "proxy_credentials",
            ErrorCode::TlsConfig => "tls_config",
            ErrorCode::StateDir => "state_dir",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_and_write_as_their_json_names_and_unknown_ones_are_kept_apart() {
        for code in [
            ErrorCode::BadToken,
            ErrorCode::StoreUnavailable,
            ErrorCode::ProtocolNotServed,
            ErrorCode::UntrustedCertificate,
            ErrorCode::Internal,
        ] {
            let json = format!("\"{}\"", code.as_str());
            assert_eq!(serde_json::to_string(&code).unwrap(), json);
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        let later: ErrorCode = serde_json::from_str("\"a_code_of_a_newer_server\"").unwrap();
        assert_eq!(later, ErrorCode::Unknown);
    }
}
