//! A minimal client of the control API (HTTP/1.1 with hyper).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use netbore_control::api::{CreateTunnelRequest, CreateTunnelResponse, ErrorResponse};
use tokio::net::TcpStream;

use crate::AgentError;

/// Largest control API answer read. Stops a broken server from filling memory.
const MAX_RESPONSE: usize = 256 * 1024;

/// Where the control plane listens, parsed from `--server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::str::FromStr for ControlUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = if let Some(r) = s.strip_prefix("http://") {
            r
        } else if s.starts_with("https://") {
            return Err(format!(
                "{s} uses https, which this build does not speak to the control plane yet; use http://"
            ));
        } else {
            s
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse()
                    .map_err(|_| format!("{s} has an invalid port; write http://HOST:PORT"))?;
                (
                    h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    port,
                )
            }
            _ => (authority.to_string(), 80),
        };
        if host.is_empty() {
            return Err(format!("{s:?} names no host; write http://HOST:PORT"));
        }
        Ok(ControlUrl { host, port })
    }
}

impl std::fmt::Display for ControlUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

/// Asks the control plane for a tunnel, with an API key or anonymously.
pub async fn create_tunnel(
    url: &ControlUrl,
    api_key: Option<&str>,
    request: &CreateTunnelRequest,
) -> Result<CreateTunnelResponse, AgentError> {
    let unreachable = |e: &dyn std::fmt::Display| AgentError::ControlUnreachable {
        url: url.to_string(),
        reason: e.to_string(),
    };
    let stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| unreachable(&e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(conn);
    let body = serde_json::to_vec(request).expect("request serializes");
    let mut req = Request::post("/tunnels/create")
        .header(HOST, format!("{}:{}", url.host, url.port))
        .header(CONTENT_TYPE, "application/json");
    if let Some(key) = api_key {
        req = req.header(AUTHORIZATION, format!("Bearer {key}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| AgentError::Refused {
            code: "bad_request".into(),
            message: "the API key contains characters a header cannot carry; check --key".into(),
        })?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|e| unreachable(&format!("unexpected answer: {e}")));
    }
    match serde_json::from_slice::<ErrorResponse>(&bytes) {
        Ok(e) => Err(AgentError::Refused {
            code: e.error.code,
            message: e.error.message,
        }),
        Err(_) => Err(unreachable(&format!("HTTP status {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_urls_parse() {
        let u: ControlUrl = "http://127.0.0.1:7834".parse().unwrap();
        assert_eq!(
            u,
            ControlUrl {
                host: "127.0.0.1".into(),
                port: 7834
            }
        );
        let u: ControlUrl = "example.com".parse().unwrap();
        assert_eq!(u.port, 80);
        let u: ControlUrl = "http://[::1]:9/".parse().unwrap();
        assert_eq!(
            u,
            ControlUrl {
                host: "::1".into(),
                port: 9
            }
        );
        assert!("https://x".parse::<ControlUrl>().is_err());
        assert!("http://:80".parse::<ControlUrl>().is_err());
        assert!("http://h:port".parse::<ControlUrl>().is_err());
    }
}
