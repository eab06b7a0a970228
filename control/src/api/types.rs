//! The JSON bodies of the control API, as `docs/openapi.yaml` describes them.

use serde::{Deserialize, Serialize};

/// The protocol of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Raw TCP on a public port.
    Tcp,
    /// HTTP routed by host name (`NAME.DOMAIN`).
    Http,
    /// TLS passed through unopened, routed by the SNI name (`NAME.DOMAIN`) on the
    /// Edge's HTTPS port: the origin holds its own certificate.
    Tls,
}

impl Protocol {
    /// The protocol as it appears in JSON and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Tls => "tls",
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
    /// `tcp`, `http` or `tls`.
    pub protocol: Protocol,
    /// The name of an HTTP or TLS tunnel (`NAME.DOMAIN`); random if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A specific public port for a TCP tunnel; allocated from the server's range if absent.
    #[serde(
        default,
        deserialize_with = "port::optional",
        skip_serializing_if = "Option::is_none"
    )]
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

    /// A TLS passthrough tunnel named `name` (or a random name).
    pub fn tls(name: Option<String>) -> Self {
        CreateTunnelRequest {
            protocol: Protocol::Tls,
            name,
            remote_port: None,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCandidate {
    /// `host:port` of the Edge's agent listener.
    pub addr: String,
    /// Transports the Edge offers there, most preferred first.
    pub transports: Vec<String>,
    /// The Edge's certificate comes from its development CA, which agents trust only
    /// when given it (`--ca`); agents on `auto` without it skip the TLS transports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub development_ca: bool,
    /// The fleet node's id (absent on a single server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The node's region (`--region`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The node's control API, where an agent creates its tunnels again when the node
    /// it used is gone (absent on a single server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_url: Option<String>,
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

/// Where a tunnel is at its Edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelState {
    /// No agent serves it.
    Offline,
    /// Created; its agent has not connected yet.
    Pending,
    /// An agent serves it.
    Online,
}

/// A tunnel as `GET /tunnels` and `GET /tunnels/{id}` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelInfo {
    /// The tunnel's id.
    pub tunnel_id: String,
    /// `tcp` or `http`.
    pub protocol: Protocol,
    /// The name of an HTTP tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where viewers reach the tunnel.
    pub public_url: String,
    /// `online`, `pending` or `offline`.
    pub status: TunnelState,
    /// The agent's address as the Edge sees it (online tunnels, unless the server
    /// masks agent addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_addr: Option<String>,
    /// When the agent came online, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_since: Option<u64>,
    /// When the tunnel was first created, seconds since the epoch.
    pub created_at: u64,
}

/// Answer to `GET /tunnels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelList {
    /// The caller's tunnels, oldest first.
    pub tunnels: Vec<TunnelInfo>,
}

/// Body of `POST /names`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRequest {
    /// The DNS label to reserve.
    pub name: String,
}

/// A reserved name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameInfo {
    /// The DNS label, lowercase.
    pub name: String,
    /// When it was reserved, seconds since the epoch.
    pub created_at: u64,
}

/// Answer to `GET /names`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameList {
    /// The caller's names, alphabetically.
    pub names: Vec<NameInfo>,
}

/// A port number as JSON Schema sees an integer: `597` and `597.0` alike.
mod port {
    use serde::Deserializer;
    use serde::de::{Error, Unexpected, Visitor};

    struct PortVisitor;

    impl<'de> Visitor<'de> for PortVisitor {
        type Value = Option<u16>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a port number (an integer from 0 to 65535) or null")
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(PortVisitor)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            u16::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            u16::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.fract() == 0.0 && (0.0..=65535.0).contains(&v) {
                // Exact: an integral value in range.
                Ok(Some(v as u16))
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }

    /// Deserializes an optional port.
    pub(super) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        d.deserialize_option(PortVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_port_takes_integral_numbers_only() {
        let parse = |s: &str| serde_json::from_str::<CreateTunnelRequest>(s);
        assert_eq!(
            parse(r#"{"protocol":"tcp","remote_port":597}"#)
                .unwrap()
                .remote_port,
            Some(597)
        );
        assert_eq!(
            parse(r#"{"protocol":"tcp","remote_port":597.0}"#)
                .unwrap()
                .remote_port,
            Some(597)
        );
        assert_eq!(
            parse(r#"{"protocol":"tcp","remote_port":null}"#)
                .unwrap()
                .remote_port,
            None
        );
        assert_eq!(parse(r#"{"protocol":"tcp"}"#).unwrap().remote_port, None);
        for bad in ["597.5", "65536", "-1", "\"80\"", "1e10"] {
            let body = format!(r#"{{"protocol":"tcp","remote_port":{bad}}}"#);
            assert!(parse(&body).is_err(), "{bad}");
        }
    }
}

/// Answer to `POST /admin/drain`: the node drains now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainAnswer {
    /// Always `true`.
    pub draining: bool,
    /// The node that drains: the one whose control API answered (absent on a
    /// single server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}
