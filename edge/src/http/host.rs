//! Which tunnel a request is for: the host-name label in front of the Edge's domain,
//! taken from `Host` (HTTP/1.1) or `:authority` (h2).

/// Longest host a viewer may send that is still considered. Longer ones are refused
/// before any work.
pub const MAX_HOST_LEN: usize = 255;

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

    proptest! {
        #[test]
        fn any_host_is_answered_without_panic(host in ".{0,300}") {
            if let Some(name) = tunnel_name(&host, "example.com") {
                prop_assert!(is_valid_label(&name));
            }
        }
    }
}
