//! Reaching the Edge through an HTTP `CONNECT` proxy, as networks that allow only web
//! traffic require. The agent asks the proxy for a tunnel to the Edge
//! (`CONNECT host:port HTTP/1.1`), reads its answer, and then speaks its transport
//! (TLS, WebSocket, or the mux) over the tunnelled socket as if it were direct.

use std::fmt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest proxy answer (status line and headers) read before giving up. Stops a
/// broken or hostile proxy from making the agent buffer without end.
pub const MAX_PROXY_RESPONSE: usize = 16 * 1024;

/// An HTTP proxy, `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    addr: String,
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.addr)
    }
}

/// Why the proxy could not give a tunnel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy URL is not one Netbore can use.
    #[error(
        "{0:?} is not a usable proxy; write http://HOST:PORT (https:// proxies and credentials in the URL are not supported)"
    )]
    BadUrl(String),
    /// The proxy could not be reached or broke the connection.
    #[error("could not talk to the proxy {proxy}: {cause}")]
    Io {
        /// The proxy.
        proxy: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// The proxy answered, but not with 200.
    #[error(
        "the proxy {proxy} refused to open a tunnel to {target} ({status}); check that it allows CONNECT to this host and port"
    )]
    Refused {
        /// The proxy.
        proxy: String,
        /// Where the tunnel was to go.
        target: String,
        /// Its status line, e.g. `403 Forbidden`.
        status: String,
    },
    /// The proxy's answer was not HTTP, too long, or followed by unexpected bytes.
    #[error("the proxy {proxy} gave an answer that is not HTTP/1.x ({detail}); check --proxy")]
    Malformed {
        /// The proxy.
        proxy: String,
        /// What was wrong.
        detail: &'static str,
    },
}

impl Proxy {
    /// Parses `http://HOST:PORT`, `http://HOST` (port 80) or `HOST:PORT`.
    pub fn parse(url: &str) -> Result<Proxy, ProxyError> {
        let bad = || ProxyError::BadUrl(url.to_string());
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(bad()),
            None => url,
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let has_port = match authority.rsplit_once(':') {
            Some((host, port)) => {
                if host.is_empty() || port.parse::<u16>().is_err() {
                    // `[::1]` alone has a colon but no port.
                    if !authority.ends_with(']') {
                        return Err(bad());
                    }
                    false
                } else {
                    !authority.ends_with(']')
                }
            }
            None => false,
        };
        let addr = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Proxy { addr })
    }

    /// The proxy the environment asks for to reach `target` (`HOST:PORT`):
    /// `HTTPS_PROXY` (or `https_proxy`), unless `NO_PROXY` (or `no_proxy`) lists the
    /// host or the host is loopback. `None` also when the variable is empty.
    pub fn from_env(target: &str) -> Result<Option<Proxy>, ProxyError> {
        let get = |upper: &str, lower: &str| {
            std::env::var(upper)
                .ok()
                .or_else(|| std::env::var(lower).ok())
                .filter(|v| !v.trim().is_empty())
        };
        let Some(url) = get("HTTPS_PROXY", "https_proxy") else {
            return Ok(None);
        };
        let no_proxy = get("NO_PROXY", "no_proxy").unwrap_or_default();
        if bypasses(target, &no_proxy) {
            return Ok(None);
        }
        Proxy::parse(url.trim()).map(Some)
    }

    /// Opens a TCP connection to the proxy and asks it for a tunnel to `target`
    /// (`HOST:PORT`); returns the socket once the proxy has said 200.
    pub async fn connect(&self, target: &str) -> Result<TcpStream, ProxyError> {
        let io_err = |cause| ProxyError::Io {
            proxy: self.to_string(),
            cause,
        };
        let mut stream = TcpStream::connect(&self.addr).await.map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        let request =
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: netbore\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io_err)?;
        let malformed = |detail| ProxyError::Malformed {
            proxy: self.to_string(),
            detail,
        };
        // Read until the blank line. The Edge does not speak first on any transport,
        // so bytes after it mean the proxy is not a CONNECT proxy.
        let mut buf = Vec::with_capacity(1024);
        let head_len = loop {
            if buf.len() >= MAX_PROXY_RESPONSE {
                return Err(malformed("its headers are too long"));
            }
            let mut chunk = [0u8; 1024];
            let want = chunk.len().min(MAX_PROXY_RESPONSE - buf.len());
            let n = stream.read(&mut chunk[..want]).await.map_err(io_err)?;
            if n == 0 {
                return Err(io_err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "it closed the connection before answering",
                )));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        match parse_answer(&buf[..head_len]).map_err(malformed)? {
            Answer::Established => {}
            Answer::Refused(status) => {
                return Err(ProxyError::Refused {
                    proxy: self.to_string(),
                    target: target.to_string(),
                    status,
                });
            }
        }
        if buf.len() > head_len {
            return Err(malformed("bytes followed its answer"));
        }
        Ok(stream)
    }
}

/// What a proxy answered to `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `200`: the tunnel is open.
    Established,
    /// Any other status: the code and reason phrase, printable ASCII only and at most
    /// 64 characters, fit for an error sentence.
    Refused(String),
}

/// Parses a proxy's answer head (status line and headers, through the blank line).
/// Headers are ignored; only the status line matters.
pub fn parse_answer(head: &[u8]) -> Result<Answer, &'static str> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or("no status line")?;
    // Lossy: a reason phrase in another encoding still tells a refusal.
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("no HTTP/1.x status line");
    }
    if code == "200" {
        return Ok(Answer::Established);
    }
    let reason: String = parts
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(60)
        .collect();
    Ok(Answer::Refused(
        format!("{code} {}", reason.trim()).trim().to_string(),
    ))
}

/// True when `target` (`HOST:PORT`) should not go through a proxy: a loopback host,
/// or a host matching an entry of `no_proxy` (comma-separated; `*` matches all; an
/// entry matches the host itself and its subdomains, a leading dot optional).
pub fn bypasses(target: &str, no_proxy: &str) -> bool {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback
        || no_proxy.split(',').map(str::trim).any(|entry| {
            let entry = entry.trim_start_matches('.').to_ascii_lowercase();
            let entry = entry.rsplit_once(':').map_or(entry.as_str(), |(h, _)| h);
            entry == "*"
                || (!entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}"))))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse() {
        assert_eq!(Proxy::parse("http://p:3128").unwrap().addr, "p:3128");
        assert_eq!(Proxy::parse("p:3128").unwrap().addr, "p:3128");
        assert_eq!(Proxy::parse("http://p/").unwrap().addr, "p:80");
        assert_eq!(Proxy::parse("http://[::1]").unwrap().addr, "[::1]:80");
        assert_eq!(Proxy::parse("http://[::1]:8").unwrap().addr, "[::1]:8");
        assert!(Proxy::parse("https://p:3128").is_err());
        assert!(Proxy::parse("http://u:pw@p:3128").is_err());
        assert!(Proxy::parse("http://p:x").is_err());
    }

    #[test]
    fn proxy_answers_parse() {
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Ok(Answer::Established)
        );
        assert_eq!(
            parse_answer(b"HTTP/1.0 200\r\nX: y\r\n\r\n"),
            Ok(Answer::Established)
        );
        assert_eq!(
            parse_answer(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
            Ok(Answer::Refused("403 Forbidden".into()))
        );
        assert_eq!(
            parse_answer(b"HTTP/1.1 407 Auth\x1b[31m\tneeded\r\n\r\n"),
            Ok(Answer::Refused("407 Auth[31mneeded".into()))
        );
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 2x0 OK\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/2 200\r\n\r\n").is_err());
    }

    proptest::proptest! {
        /// Any bytes give an answer or an error, never a panic, and a refusal is
        /// always short printable text.
        #[test]
        fn any_answer_parses_without_panic(
            head in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            code in 100u16..1000,
            reason in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let _ = parse_answer(&head);
            let mut status = format!("HTTP/1.1 {code} ").into_bytes();
            status.extend_from_slice(&reason);
            status.extend_from_slice(b"\r\n\r\n");
            match parse_answer(&status) {
                Ok(Answer::Refused(s)) => {
                    proptest::prop_assert!(code != 200);
                    proptest::prop_assert!(s.len() <= 64);
                    proptest::prop_assert!(s.chars().all(|c| c.is_ascii_graphic() || c == ' '));
                }
                Ok(Answer::Established) => proptest::prop_assert_eq!(code, 200),
                Err(e) => proptest::prop_assert!(false, "a valid status line was refused: {}", e),
            }
        }
    }

    #[test]
    fn no_proxy_rules() {
        assert!(bypasses("127.0.0.1:7835", ""));
        assert!(bypasses("localhost:7835", ""));
        assert!(bypasses("[::1]:7835", ""));
        assert!(!bypasses("edge.example.com:443", ""));
        assert!(bypasses("edge.example.com:443", "example.com"));
        assert!(bypasses("edge.example.com:443", "other.org, .example.com"));
        assert!(!bypasses("edge.example.com:443", "ample.com"));
        assert!(bypasses("edge.example.com:443", "*"));
    }
}
