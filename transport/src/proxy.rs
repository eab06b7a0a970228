//! Reaching the Edge through an HTTP `CONNECT` proxy, as networks that allow only web
//! traffic require. The agent asks the proxy for a tunnel to the Edge
//! (`CONNECT host:port HTTP/1.1`, with `Proxy-Authorization: Basic ...` when the proxy
//! URL carries a user and password), reads its answer, and then speaks its transport
//! (TLS, WebSocket, or the mux) over the tunnelled socket as if it were direct.
//!
//! The password never leaves this module except inside that header: [`Proxy`]'s
//! `Display` and `Debug` and every [`ProxyError`] show `USER:***`.

mod answer;
mod credentials;

use std::fmt;
use std::net::Ipv6Addr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use answer::{Answer, BadAnswer, Parsed, parse_answer};
use credentials::{Credentials, redact, split_scheme};

/// Largest proxy answer (status line and headers) read before giving up. Stops a
/// broken or hostile proxy from making the agent buffer without end.
pub const MAX_PROXY_RESPONSE: usize = 16 * 1024;

/// The port of a proxy URL that names none.
const DEFAULT_PORT: u16 = 80;

/// An HTTP proxy, `HOST:PORT`, with Basic credentials if its URL had them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    addr: String,
    credentials: Option<Credentials>,
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.credentials {
            Some(c) => write!(f, "http://{}@{}", c.shown(), self.addr),
            None => write!(f, "http://{}", self.addr),
        }
    }
}

/// Why the proxy could not give a tunnel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy URL is not one Netbore can use. Holds the URL with any password
    /// replaced by `***`.
    #[error(
        "{0:?} is not a usable proxy; write http://HOST:PORT or http://USER:PASSWORD@HOST:PORT, percent-encoding special characters in USER and PASSWORD (%25 for %, %3A for : in USER)"
    )]
    BadUrl(String),
    /// The proxy URL names a scheme other than `http://`.
    #[error(
        "{url:?} is an {scheme}:// proxy, which Netbore cannot use; give the proxy's http:// address instead"
    )]
    UnsupportedScheme {
        /// The URL, any password replaced by `***`.
        url: String,
        /// Its scheme, lower case.
        scheme: String,
    },
    /// The proxy could not be reached or broke the connection.
    #[error("could not talk to the proxy {proxy}: {cause}")]
    Io {
        /// The proxy, as [`Proxy`] displays it.
        proxy: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// The proxy answered 407 and the URL had no credentials.
    #[error(
        "the proxy {addr} wants credentials ({status}); put them in the proxy URL: http://USER:PASSWORD@{addr}"
    )]
    CredentialsRequired {
        /// The proxy, `HOST:PORT`.
        addr: String,
        /// Its status line, e.g. `407 Proxy Authentication Required`.
        status: String,
    },
    /// The proxy answered 407 to the credentials from the URL.
    #[error(
        "the proxy {proxy} rejected the credentials given ({status}); check the user and password in the proxy URL"
    )]
    CredentialsRejected {
        /// The proxy, as [`Proxy`] displays it (`http://USER:***@HOST:PORT`).
        proxy: String,
        /// Its status line.
        status: String,
    },
    /// The proxy answered, but with neither 200 nor 407.
    #[error(
        "the proxy {proxy} refused to open a tunnel to {target} ({status}); check that it allows CONNECT to this host and port"
    )]
    Refused {
        /// The proxy, as [`Proxy`] displays it.
        proxy: String,
        /// Where the tunnel was to go.
        target: String,
        /// Its status line, e.g. `403 Forbidden`.
        status: String,
    },
    /// The proxy's answer was not HTTP, too long, or followed by unexpected bytes.
    #[error("the proxy {proxy} gave an answer that is not HTTP/1.x ({detail}); check --proxy")]
    Malformed {
        /// The proxy, as [`Proxy`] displays it.
        proxy: String,
        /// What was wrong.
        detail: BadAnswer,
    },
}

impl Proxy {
    /// Parses `http://[USER[:PASSWORD]@]HOST[:PORT]`, the `http://` optional and the
    /// port 80 when missing; HOST may be a bracketed IPv6 literal. USER and PASSWORD
    /// are percent-decoded; the last `@` ends them, so an `@` in a password may stay
    /// unencoded. A path after the authority is ignored.
    pub fn parse(url: &str) -> Result<Proxy, ProxyError> {
        let bad = || ProxyError::BadUrl(redact(url));
        let rest = match split_scheme(url) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(ProxyError::UnsupportedScheme {
                    url: redact(url),
                    scheme: scheme.to_ascii_lowercase(),
                });
            }
            None => url,
        };
        let (credentials, host_port) = match rest.rsplit_once('@') {
            Some((userinfo, host_port)) => (
                Some(Credentials::parse(userinfo).ok_or_else(bad)?),
                host_port,
            ),
            None => (None, rest),
        };
        let authority = host_port.split(['/', '?', '#']).next().unwrap_or_default();
        let addr = host_and_port(authority).ok_or_else(bad)?;
        Ok(Proxy { addr, credentials })
    }

    /// The proxy's `HOST:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
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

    /// The `CONNECT` request for `target`, with the proxy's credentials if any.
    fn request(&self, target: &str) -> String {
        let mut request =
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: netbore\r\n");
        if let Some(c) = &self.credentials {
            request.push_str("Proxy-Authorization: ");
            request.push_str(&c.authorization());
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request
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
        stream
            .write_all(self.request(target).as_bytes())
            .await
            .map_err(io_err)?;
        let malformed = |detail| ProxyError::Malformed {
            proxy: self.to_string(),
            detail,
        };
        let mut buf = Vec::with_capacity(1024);
        let (answer, head_len) = loop {
            if let Parsed::Complete { answer, head_len } = parse_answer(&buf).map_err(malformed)? {
                break (answer, head_len);
            }
            // Incomplete: fewer than MAX_PROXY_RESPONSE bytes so far, so this reads at
            // least one and never past the limit.
            let mut chunk = [0u8; 1024];
            let want = chunk
                .len()
                .min(MAX_PROXY_RESPONSE.saturating_sub(buf.len()));
            let n = stream.read(&mut chunk[..want]).await.map_err(io_err)?;
            if n == 0 {
                return Err(io_err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "it closed the connection before answering",
                )));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        match answer {
            Answer::Established => {}
            Answer::Refused { code: 407, status } => {
                return Err(match &self.credentials {
                    None => ProxyError::CredentialsRequired {
                        addr: self.addr.clone(),
                        status,
                    },
                    Some(_) => ProxyError::CredentialsRejected {
                        proxy: self.to_string(),
                        status,
                    },
                });
            }
            Answer::Refused { status, .. } => {
                return Err(ProxyError::Refused {
                    proxy: self.to_string(),
                    target: target.to_string(),
                    status,
                });
            }
        }
        // The Edge does not speak first on any transport, so bytes after a 200 mean
        // the proxy is not a CONNECT proxy.
        if buf.len() > head_len {
            return Err(malformed(BadAnswer::TrailingBytes));
        }
        Ok(stream)
    }
}

/// `HOST:PORT` from the authority of a proxy URL: HOST a name, an IPv4 address or a
/// bracketed IPv6 literal, PORT digits (80 when missing). `None` when it is neither.
fn host_and_port(authority: &str) -> Option<String> {
    if authority
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'@')
    {
        return None;
    }
    let port = |p: &str| {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<u16>().ok()
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, after) = bracketed.split_once(']')?;
            ip.parse::<Ipv6Addr>().ok()?;
            let port = match after {
                "" => DEFAULT_PORT,
                _ => port(after.strip_prefix(':')?)?,
            };
            (&authority[..ip.len() + 2], port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, p)) => (host, port(p)?),
                None => (authority, DEFAULT_PORT),
            };
            if host.is_empty() || host.contains([':', '[', ']']) {
                return None;
            }
            (host, port)
        }
    };
    Some(format!("{host}:{port}"))
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

    fn addr(url: &str) -> String {
        Proxy::parse(url).unwrap().addr
    }

    #[test]
    fn proxy_urls_parse() {
        assert_eq!(addr("http://p:3128"), "p:3128");
        assert_eq!(addr("HTTP://p:3128"), "p:3128");
        assert_eq!(addr("p:3128"), "p:3128");
        assert_eq!(addr("http://p/"), "p:80");
        assert_eq!(addr("http://p:3128/path?q#f"), "p:3128");
        assert_eq!(addr("http://10.0.0.1"), "10.0.0.1:80");
        assert_eq!(addr("http://[::1]"), "[::1]:80");
        assert_eq!(addr("http://[::1]:8"), "[::1]:8");
        assert_eq!(addr("http://[2001:db8::5]:3128/"), "[2001:db8::5]:3128");
        assert_eq!(addr("http://u:pw@[::1]:8"), "[::1]:8");
        assert!(
            Proxy::parse("http://u:pw@p:3128")
                .unwrap()
                .credentials
                .is_some()
        );
        assert!(Proxy::parse("http://p:3128").unwrap().credentials.is_none());
        for bad in [
            "",
            "http://",
            "http://p:x",
            "http://p:",
            "http://:3128",
            "http://p:+80",
            "http://p:65536",
            "http://::1",
            "http://[::1",
            "http://[::1]x",
            "http://[::1]:",
            "http://[nope]:80",
            "http://p q:80",
            "http://@p:80",
            "http://u:50%off@p:80",
        ] {
            assert!(
                matches!(Proxy::parse(bad), Err(ProxyError::BadUrl(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_http_proxies_are_taken() {
        for (url, scheme) in [
            ("https://p:3128", "https"),
            ("socks5://u:pw@p:1080", "socks5"),
        ] {
            let err = Proxy::parse(url).unwrap_err();
            assert!(
                matches!(&err, ProxyError::UnsupportedScheme { scheme: s, .. } if s == scheme),
                "{err:?}"
            );
            assert!(!err.to_string().contains("pw"), "{err}");
            assert!(err.to_string().contains("http://"), "{err}");
        }
    }

    #[test]
    fn the_password_is_never_printed() {
        let p = Proxy::parse("http://me%40corp:s3cr%3At@p:3128").unwrap();
        assert_eq!(p.to_string(), "http://me%40corp:***@p:3128");
        assert!(!format!("{p:?}").contains("s3cr"), "{p:?}");
        assert_eq!(
            Proxy::parse("http://token@p:3128").unwrap().to_string(),
            "http://token@p:3128"
        );
        // A URL that does not parse still hides it.
        for bad in ["http://u:s3cret@p:x", "http://u:s3cret@", "u:s3c/ret@p q"] {
            let err = Proxy::parse(bad).unwrap_err();
            assert!(!err.to_string().contains("s3c"), "{err}");
            assert!(!format!("{err:?}").contains("s3c"), "{err:?}");
        }
    }

    #[test]
    fn the_request_carries_basic_credentials_only_when_given() {
        let plain = Proxy::parse("http://p:3128").unwrap().request("e:7835");
        assert_eq!(
            plain,
            "CONNECT e:7835 HTTP/1.1\r\nHost: e:7835\r\nUser-Agent: netbore\r\n\r\n"
        );
        let authed = Proxy::parse("http://Aladdin:open%20sesame@p:3128")
            .unwrap()
            .request("e:7835");
        assert!(
            authed.ends_with("\r\nProxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"),
            "{authed}"
        );
    }

    /// A host and port as a URL writes them.
    fn host_port() -> impl proptest::strategy::Strategy<Value = (String, u16, String)> {
        use proptest::prelude::*;
        let name = "[a-z][a-z0-9-]{0,20}(\\.[a-z0-9-]{1,10}){0,3}";
        let v6 = proptest::array::uniform8(any::<u16>())
            .prop_map(|s| format!("[{}]", Ipv6Addr::from(s)));
        (prop_oneof![name.prop_map(String::from), v6], any::<u16>()).prop_map(|(host, port)| {
            let written = format!("{host}:{port}");
            (host, port, written)
        })
    }

    proptest::proptest! {
        /// Hosts (names and IPv6 literals), ports and percent-encoded credentials
        /// come back out as written; the password shows only as `***`.
        #[test]
        fn urls_round_trip(
            (host, port, written) in host_port(),
            user in "[a-zA-Z0-9.%-]{0,12}",
            password in "[a-zA-Z0-9]{4,12}",
            with_credentials in proptest::bool::ANY,
            with_port in proptest::bool::ANY,
        ) {
            let authority = if with_port { written } else { host.clone() };
            let url = if with_credentials {
                // `%` alone is no escape; write it as `%25`.
                format!("http://{}:{password}@{authority}/", user.replace('%', "%25"))
            } else {
                format!("http://{authority}")
            };
            let p = Proxy::parse(&url).unwrap();
            let port = if with_port { port } else { DEFAULT_PORT };
            proptest::prop_assert_eq!(p.addr(), format!("{host}:{port}"));
            let shown = p.to_string();
            proptest::prop_assert!(!shown.contains(&format!(":{password}@")), "{}", shown);
            proptest::prop_assert_eq!(p.credentials.is_some(), with_credentials);
            proptest::prop_assert_eq!(Proxy::parse(&shown).map(|q| q.addr).ok(), Some(p.addr.clone()));
        }

        /// Whatever is typed, parsing does not panic, and no error repeats a password.
        #[test]
        fn any_url_parses_or_fails_without_the_password(
            before in "\\PC{0,20}",
            after in "\\PC{0,20}",
        ) {
            let url = format!("{before}:S3CRETPW@{after}");
            let shown = match Proxy::parse(&url) {
                Ok(p) => format!("{p} {p:?}"),
                Err(e) => format!("{e} {e:?}"),
            };
            proptest::prop_assert!(!shown.contains("S3CRETPW"), "{}", shown);
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
