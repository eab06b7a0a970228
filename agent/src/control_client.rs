//! A minimal client of the control API (HTTP/1.1 with hyper).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use netbore_codes::ErrorCode;
use netbore_control::api::{CreateTunnelRequest, CreateTunnelResponse, ErrorResponse};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

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
    /// `https://`: the control API is spoken over TLS.
    pub tls: bool,
}

impl ControlUrl {
    /// Whether the control plane is on this machine, where plain `http://` crosses
    /// no network.
    pub fn is_loopback(&self) -> bool {
        netbore_transport::is_loopback_host(&self.host)
    }
}

impl std::str::FromStr for ControlUrl {
    type Err = String;

    /// `https://HOST[:PORT]`, `http://HOST[:PORT]`, or `HOST[:PORT]`, which means
    /// https unless the host is this machine. The port defaults to the scheme's.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rest, scheme) = if let Some(r) = s.strip_prefix("https://") {
            (r, Some(true))
        } else if let Some(r) = s.strip_prefix("http://") {
            (r, Some(false))
        } else if s.contains("://") {
            return Err(format!(
                "{s} has a scheme the control plane does not speak; write https://HOST:PORT"
            ));
        } else {
            (s, None)
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse()
                    .map_err(|_| format!("{s} has an invalid port; write https://HOST:PORT"))?;
                (
                    h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    Some(port),
                )
            }
            _ => (authority.to_string(), None),
        };
        if host.is_empty() {
            return Err(format!("{s:?} names no host; write https://HOST:PORT"));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
        {
            return Err(format!(
                "{s:?} has a host that is not a name or an address; write https://HOST:PORT"
            ));
        }
        let tls = scheme.unwrap_or_else(|| !netbore_transport::is_loopback_host(&host));
        let port = port.unwrap_or(if tls { 443 } else { 80 });
        Ok(ControlUrl { host, port, tls })
    }
}

impl std::fmt::Display for ControlUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// A byte stream to the control plane: plain TCP or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Connects to `url`, over TLS checked by `tls` when the URL says https.
async fn connect(
    url: &ControlUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Io>, AgentError> {
    let unreachable = |e: &dyn std::fmt::Display| AgentError::ControlUnreachable {
        url: url.to_string(),
        reason: e.to_string(),
    };
    let stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| unreachable(&e))?;
    let _ = stream.set_nodelay(true);
    if !url.tls {
        return Ok(Box::new(stream));
    }
    let config =
        tls.ok_or_else(|| unreachable(&"no TLS settings for an https:// control plane"))?;
    let name = ServerName::try_from(url.host.clone()).map_err(|e| unreachable(&e))?;
    match TlsConnector::from(config.clone())
        .connect(name, stream)
        .await
    {
        Ok(tls_stream) => Ok(Box::new(tls_stream)),
        Err(e) if e.to_string().contains("invalid peer certificate") => Err(AgentError::Refused {
            code: ErrorCode::UntrustedCertificate,
            message: format!(
                "the control plane's certificate at {url} is not trusted ({e}); pass --ca FILE with the CA that signed it, or --ca-fingerprint with the fingerprint the server prints"
            ),
        }),
        Err(e) => Err(unreachable(&e)),
    }
}

/// Asks the control plane for a tunnel, with an API key or anonymously.
///
/// An `https://` URL is spoken over TLS checked by `tls` (ALPN `http/1.1`); a plain
/// `http://` one only to this machine, unless `insecure_http` allows it anywhere:
/// the API key and recreate tokens would cross the network in clear text.
pub async fn create_tunnel(
    url: &ControlUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
    insecure_http: bool,
    api_key: Option<&str>,
    request: &CreateTunnelRequest,
) -> Result<CreateTunnelResponse, AgentError> {
    let unreachable = |e: &dyn std::fmt::Display| AgentError::ControlUnreachable {
        url: url.to_string(),
        reason: e.to_string(),
    };
    if !url.tls && !url.is_loopback() && !insecure_http {
        return Err(AgentError::Refused {
            code: ErrorCode::InsecureControl,
            message: format!(
                "{url} would send the API key and tunnel tokens across the network in clear text; use https:// (or, knowingly, --insecure-http)"
            ),
        });
    }
    let stream = connect(url, tls).await?;
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
            code: ErrorCode::BadRequest,
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
                port: 7834,
                tls: false,
            }
        );
        let u: ControlUrl = "example.com".parse().unwrap();
        assert_eq!((u.port, u.tls), (443, true), "https unless on this machine");
        let u: ControlUrl = "example.com:7834".parse().unwrap();
        assert_eq!(u.to_string(), "https://example.com:7834");
        let u: ControlUrl = "localhost:7834".parse().unwrap();
        assert!(!u.tls, "plain on loopback");
        let u: ControlUrl = "http://[::1]:9/".parse().unwrap();
        assert_eq!(
            u,
            ControlUrl {
                host: "::1".into(),
                port: 9,
                tls: false,
            }
        );
        let u: ControlUrl = "https://x".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("x", 443, true));
        assert!("ftp://x".parse::<ControlUrl>().is_err());
        assert!("http://:80".parse::<ControlUrl>().is_err());
        assert!("http://h:port".parse::<ControlUrl>().is_err());
        assert!("https://a b:7834".parse::<ControlUrl>().is_err());
        assert!("https://a\nb:7834".parse::<ControlUrl>().is_err());
    }

    #[tokio::test]
    async fn plain_http_to_another_machine_is_refused_before_connecting() {
        let url: ControlUrl = "http://192.0.2.1:9".parse().unwrap();
        let request = CreateTunnelRequest::tcp(None);
        let e = create_tunnel(&url, None, false, Some("nbk_secret"), &request)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "insecure_control");
        assert!(e.to_string().contains("https://"), "{e}");
    }
}
