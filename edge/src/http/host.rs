//! Which tunnel a request is for: the host-name label in front of the Edge's domain,
//! taken from the request's one canonical [`Authority`].
//!
//! A request names its host in up to two places: the `Host` header, and the
//! authority of its target (HTTP/1.1 absolute form, h2 `:authority`). Were they
//! allowed to differ, the Edge could route by one while the origin (or a cache in
//! front of it) believed the other. So [`request_authority`] accepts a request only
//! when every place it names a host names the same one, and the Edge forwards that
//! one as the only `Host`.

use std::fmt;

/// Longest host a viewer may send that is still considered. Longer ones are refused
/// before any work.
pub const MAX_HOST_LEN: usize = 255;

/// The host a request names, canonical: the host name in lowercase without a trailing
/// dot, and the port as a number. `Blog.Example.COM.:08080` is `blog.example.com:8080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// `host[:port]`, canonical.
    canonical: String,
    /// Length of the host name at the front of `canonical`.
    host_len: usize,
    port: Option<u16>,
}

/// Why a request has no usable authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// The request names no host.
    #[error("the request names no host")]
    Missing,
    /// A host is not a `name[:port]` (too long, empty, a bad port, user info, an IP
    /// literal in brackets, or a byte no host name holds).
    #[error("the request's host is malformed")]
    Malformed,
    /// The request carries more than one `Host` header.
    #[error("the request carries more than one Host header")]
    Duplicate,
    /// The `Host` header names another host than the request target or `:authority`.
    #[error("the Host header differs from the request target's authority")]
    Mismatch,
}

impl Authority {
    /// Parses one `Host` value or request-target authority.
    pub fn parse(raw: &[u8]) -> Result<Authority, AuthorityError> {
        if raw.is_empty() || raw.len() > MAX_HOST_LEN {
            return Err(AuthorityError::Malformed);
        }
        let (host, port) = match raw.iter().rposition(|&b| b == b':') {
            Some(i) => {
                let digits = &raw[i + 1..];
                if digits.is_empty() || digits.len() > 5 {
                    return Err(AuthorityError::Malformed);
                }
                let mut port = 0u32;
                for &d in digits {
                    if !d.is_ascii_digit() {
                        return Err(AuthorityError::Malformed);
                    }
                    port = port * 10 + u32::from(d - b'0');
                }
                let port = u16::try_from(port).map_err(|_| AuthorityError::Malformed)?;
                (&raw[..i], Some(port))
            }
            None => (raw, None),
        };
        let host = host.strip_suffix(b".").unwrap_or(host);
        // Non-empty labels of letters, digits, `-` and `_`, between single dots: what
        // DNS names hold. This refuses user info (`@`), IP-literal brackets, spaces,
        // empty labels, and any other byte.
        if host.is_empty()
            || host.starts_with(b".")
            || host.ends_with(b".")
            || host.windows(2).any(|w| w == b"..")
            || !host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(AuthorityError::Malformed);
        }
        // Every request is routed by this: bytes are lowercased in place and the port
        // written by hand, with no per-character push and no formatting machinery.
        let mut canonical = Vec::with_capacity(host.len() + 6);
        canonical.extend_from_slice(host);
        canonical.make_ascii_lowercase();
        if let Some(port) = port {
            canonical.push(b':');
            push_decimal(&mut canonical, port);
        }
        // ASCII only: the checks above let no other byte through.
        let canonical = String::from_utf8(canonical).map_err(|_| AuthorityError::Malformed)?;
        Ok(Authority {
            canonical,
            host_len: host.len(),
            port,
        })
    }

    /// The host name: lowercase, without port or trailing dot.
    pub fn hostname(&self) -> &str {
        &self.canonical[..self.host_len]
    }

    /// The port, when the request names one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `host[:port]`, canonical: what the origin receives as `Host`.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }
}

/// Appends `n` in decimal, without leading zeros.
fn push_decimal(out: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

/// The one authority a request names: its target's authority (`target`: HTTP/1.1
/// absolute or authority form, h2 `:authority`) and its `Host` header values
/// (`hosts`) must agree, once made canonical, and there is at most one `Host`.
pub fn request_authority<'a>(
    target: Option<&[u8]>,
    mut hosts: impl Iterator<Item = &'a [u8]>,
) -> Result<Authority, AuthorityError> {
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::Duplicate);
    }
    let host = host.map(Authority::parse).transpose()?;
    match (target.map(Authority::parse).transpose()?, host) {
        (Some(target), Some(host)) if target != host => Err(AuthorityError::Mismatch),
        (Some(authority), _) | (None, Some(authority)) => Ok(authority),
        (None, None) => Err(AuthorityError::Missing),
    }
}

/// The tunnel name a canonical host name addresses under `domain`: the single label in
/// front of it, e.g. `app` for `app.example.com` under `example.com`.
pub fn tunnel_label<'a>(hostname: &'a str, domain: &str) -> Option<&'a str> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let split = hostname.len().checked_sub(domain.len() + 1)?;
    let (label, rest) = hostname.split_at_checked(split)?;
    let rest = rest.strip_prefix('.')?;
    (rest.eq_ignore_ascii_case(domain) && is_valid_label(label)).then_some(label)
}

/// The tunnel name `host` addresses under `domain`, e.g. `app` for
/// `App.example.com:8080` under `example.com`. `None` when the host is malformed or
/// not a single label under the domain.
pub fn tunnel_name(host: &str, domain: &str) -> Option<String> {
    if host.len() > MAX_HOST_LEN || host.is_empty() {
        return None;
    }
    let host = strip_port(host)?;
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let label = host
        .strip_suffix(&domain.to_ascii_lowercase())?
        .strip_suffix('.')?;
    is_valid_label(label).then(|| label.to_string())
}

/// The host name of `host` (a `Host` header or `:authority`): lowercase, without
/// port or trailing dot. `None` when malformed.
pub fn hostname(host: &str) -> Option<String> {
    if host.len() > MAX_HOST_LEN || host.is_empty() {
        return None;
    }
    let host = strip_port(host)?;
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Removes a `:port` suffix; refuses IPv6 literals and malformed ports.
fn strip_port(host: &str) -> Option<&str> {
    if host.starts_with('[') {
        return None;
    }
    match host.rsplit_once(':') {
        Some((h, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(h)
        }
        None => Some(host),
    }
}

pub use netbore_control::names::is_valid as is_valid_label;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_come_from_one_label_under_the_domain() {
        let d = "localhost";
        assert_eq!(tunnel_name("app.localhost", d).as_deref(), Some("app"));
        assert_eq!(tunnel_name("App.LocalHost:8080", d).as_deref(), Some("app"));
        assert_eq!(tunnel_name("app.localhost.", d).as_deref(), Some("app"));
        assert_eq!(
            tunnel_name("my-app.tunnel.example.com", "tunnel.example.com").as_deref(),
            Some("my-app")
        );
        for bad in [
            "localhost",
            ".localhost",
            "a.b.localhost",
            "app.otherhost",
            "xlocalhost",
            "-a.localhost",
            "a-.localhost",
            "a_b.localhost",
            "app.localhost:",
            "app.localhost:80x",
            "[::1]:80",
            "",
        ] {
            assert_eq!(tunnel_name(bad, d), None, "{bad}");
        }
        assert_eq!(tunnel_name(&"a".repeat(300), d), None);
    }

    #[test]
    fn hostnames_lose_port_case_and_trailing_dot() {
        assert_eq!(
            hostname("App.LocalHost.:8443").as_deref(),
            Some("app.localhost")
        );
        assert_eq!(hostname("a.example.com").as_deref(), Some("a.example.com"));
        for bad in ["", ":80", "[::1]:80", "a.b:x", "a.b:"] {
            assert_eq!(hostname(bad), None, "{bad}");
        }
    }

    fn authority(target: Option<&str>, hosts: &[&str]) -> Result<String, AuthorityError> {
        request_authority(
            target.map(str::as_bytes),
            hosts.iter().map(|h| h.as_bytes()),
        )
        .map(|a| a.to_string())
    }

    #[test]
    fn authorities_lose_case_trailing_dot_and_leading_port_zeros() {
        let a = Authority::parse(b"Blog.Example.COM.:08080").unwrap();
        assert_eq!(a.as_str(), "blog.example.com:8080");
        assert_eq!(a.hostname(), "blog.example.com");
        assert_eq!(a.port(), Some(8080));
        let a = Authority::parse(b"APP.localhost.").unwrap();
        assert_eq!((a.as_str(), a.port()), ("app.localhost", None));
        for (raw, canonical) in [
            ("a.b:0", "a.b:0"),
            ("a.b:00000", "a.b:0"),
            ("a.b:7", "a.b:7"),
            ("a.b:00443", "a.b:443"),
            ("A-b_C.D:65535", "a-b_c.d:65535"),
        ] {
            assert_eq!(
                Authority::parse(raw.as_bytes()).unwrap().as_str(),
                canonical
            );
        }
        for bad in [
            "",
            ".",
            ":80",
            "a.b:",
            "a.b:x",
            "a.b:65536",
            "a.b:123456",
            "[::1]:80",
            "user@a.localhost",
            "a b.localhost",
            "a/b",
            "a.localhost:80:80",
            "é.localhost",
            ".a.localhost",
            "a..localhost",
            "a.localhost..",
        ] {
            assert_eq!(
                Authority::parse(bad.as_bytes()),
                Err(AuthorityError::Malformed),
                "{bad}"
            );
        }
        assert!(Authority::parse("a".repeat(300).as_bytes()).is_err());
    }

    #[test]
    fn a_request_names_one_authority_or_is_refused() {
        use AuthorityError::*;
        assert_eq!(
            authority(None, &["App.localhost:80"]).unwrap(),
            "app.localhost:80"
        );
        assert_eq!(
            authority(Some("app.localhost"), &[]).unwrap(),
            "app.localhost"
        );
        // The same host in both places, written differently, is one authority.
        assert_eq!(
            authority(Some("app.localhost:8080"), &["APP.localhost.:8080"]).unwrap(),
            "app.localhost:8080"
        );
        assert_eq!(authority(None, &[]), Err(Missing));
        assert_eq!(
            authority(None, &["a.localhost", "a.localhost"]),
            Err(Duplicate)
        );
        assert_eq!(
            authority(None, &["a.localhost", "b.localhost"]),
            Err(Duplicate)
        );
        assert_eq!(
            authority(Some("a.localhost"), &["b.localhost"]),
            Err(Mismatch)
        );
        assert_eq!(
            authority(Some("a.localhost:1"), &["a.localhost:2"]),
            Err(Mismatch)
        );
        assert_eq!(
            authority(Some("a.localhost"), &["a.localhost:80"]),
            Err(Mismatch)
        );
        assert_eq!(
            authority(Some("a.localhost"), &["bad host"]),
            Err(Malformed)
        );
        assert_eq!(authority(Some("u@a.localhost"), &[]), Err(Malformed));
        assert_eq!(authority(None, &[""]), Err(Malformed));
    }

    #[test]
    fn labels_come_from_canonical_host_names() {
        let d = "localhost";
        assert_eq!(tunnel_label("app.localhost", d), Some("app"));
        assert_eq!(tunnel_label("app.localhost", "LocalHost."), Some("app"));
        assert_eq!(
            tunnel_label("my-app.tunnel.example.com", "tunnel.example.com"),
            Some("my-app")
        );
        for bad in [
            "localhost",
            ".localhost",
            "a.b.localhost",
            "xlocalhost",
            "a_b.localhost",
            "app.otherhost",
            "",
        ] {
            assert_eq!(tunnel_label(bad, d), None, "{bad}");
        }
        // Every spelling of a host routes like its canonical form.
        for spelling in [
            "Blog.Example.COM.:8080",
            "blog.example.com",
            "BLOG.EXAMPLE.COM:80",
            "blog.example.com.",
        ] {
            let a = Authority::parse(spelling.as_bytes()).unwrap();
            assert_eq!(
                tunnel_label(a.hostname(), "example.com"),
                Some("blog"),
                "{spelling}"
            );
        }
    }

    proptest! {
        #[test]
        fn canonical_authorities_are_fixed_points(raw in "[a-zA-Z0-9._:-]{0,40}") {
            if let Ok(a) = Authority::parse(raw.as_bytes()) {
                let again = Authority::parse(a.as_str().as_bytes()).unwrap();
                prop_assert_eq!(&again, &a);
                prop_assert_eq!(a.as_str().to_ascii_lowercase(), a.as_str());
                prop_assert!(!a.hostname().ends_with('.'));
            }
        }

        #[test]
        fn any_host_is_answered_without_panic(host in ".{0,300}") {
            if let Some(name) = tunnel_name(&host, "example.com") {
                prop_assert!(is_valid_label(&name));
            }
        }
    }
}
