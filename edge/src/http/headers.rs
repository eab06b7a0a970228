//! The header policy of HTTP tunnels: what the Edge adds, replaces and removes between
//! viewer and origin.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus
/// `Expect`, which the Edge answers itself.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// The prefix of headers only the Edge may set.
const NETBORE_PREFIX: &str = "x-netbore-";

/// What the Edge knows about a request it forwards.
#[derive(Debug, Clone, Copy)]
pub struct ForwardContext<'a> {
    /// The viewer's address.
    pub viewer: IpAddr,
    /// The agent's address, or `None` when the server masks agent addresses.
    pub agent: Option<IpAddr>,
    /// The host the viewer asked for.
    pub host: &'a str,
    /// `http` or `https`.
    pub proto: &'static str,
}

/// Rewrites a viewer's request headers for the origin. `upgrade` keeps the
/// `Upgrade`/`Connection` pair of a protocol switch (WebSocket).
pub fn prepare_request(headers: &mut HeaderMap, cx: &ForwardContext<'_>, upgrade: bool) {
    let upgrade_to = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    remove_hop_by_hop(headers);
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(NETBORE_PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    let viewer = cx.viewer.to_string();
    let forwarded_for = match headers.get("x-forwarded-for").map(|v| v.to_str()) {
        Some(Ok(prior)) if !prior.trim().is_empty() => format!("{prior}, {viewer}"),
        _ => viewer.clone(),
    };
    set(headers, "x-forwarded-for", &forwarded_for);
    set(headers, "x-forwarded-proto", cx.proto);
    set(headers, "x-forwarded-host", cx.host);
    set(headers, "x-netbore-client-ip", &viewer);
    if let Some(agent) = cx.agent {
        set(headers, "x-netbore-agent-ip", &agent.to_string());
    }
    if !headers.contains_key(header::HOST) {
        set(headers, "host", cx.host);
    }
    if let Some(protocol) = upgrade_to {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Rewrites an origin's response headers for the viewer.
pub fn prepare_response(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_to = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    remove_hop_by_hop(headers);
    if let Some(protocol) = upgrade_to {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes hop-by-hop headers, including any a `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// True when a request asks to switch protocols (WebSocket and the like).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(agent: Option<IpAddr>) -> ForwardContext<'static> {
        ForwardContext {
            viewer: "203.0.113.7".parse().unwrap(),
            agent,
            host: "app.localhost:8080",
            proto: "http",
        }
    }

    #[test]
    fn forwarding_headers_are_added_and_spoofs_removed() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.insert("x-netbore-agent-ip", "6.6.6.6".parse().unwrap());
        h.insert("X-Netbore-Anything", "x".parse().unwrap());
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "secret".parse().unwrap());
        h.insert("expect", "100-continue".parse().unwrap());
        prepare_request(&mut h, &cx(Some("198.51.100.2".parse().unwrap())), false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 203.0.113.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.localhost:8080");
        assert_eq!(h["x-netbore-client-ip"], "203.0.113.7");
        assert_eq!(h["x-netbore-agent-ip"], "198.51.100.2");
        assert!(!h.contains_key("x-netbore-anything"));
        assert!(!h.contains_key("x-private"));
        assert!(!h.contains_key("connection"));
        assert!(!h.contains_key("expect"));
        assert_eq!(h["host"], "app.localhost:8080");
    }

    #[test]
    fn a_masked_agent_appears_in_no_header() {
        let mut h = HeaderMap::new();
        h.insert("x-netbore-agent-ip", "6.6.6.6".parse().unwrap());
        prepare_request(&mut h, &cx(None), false);
        assert!(!h.contains_key("x-netbore-agent-ip"));
        assert!(!h.values().any(|v| v == "6.6.6.6"));
    }

    #[test]
    fn upgrades_keep_their_upgrade_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(wants_upgrade(&h));
        prepare_request(&mut h, &cx(None), true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }
}
