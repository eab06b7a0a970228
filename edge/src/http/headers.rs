//! The header policy of HTTP tunnels: what the Edge adds, replaces and removes between
//! viewer and origin.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The prefix of headers only the Edge may set.
const NETBORE_PREFIX: &str = "x-netbore-";

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_NETBORE_CLIENT_IP: HeaderName = HeaderName::from_static("x-netbore-client-ip");
const X_NETBORE_AGENT_IP: HeaderName = HeaderName::from_static("x-netbore-agent-ip");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Most headers [`prepare_request`] adds to a request that switches no protocol:
/// `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`, `Host`, `X-Forwarded-Host`,
/// `X-Netbore-Client-IP` and `X-Netbore-Agent-IP`.
const FORWARDING_HEADERS: usize = 7;

/// What the Edge knows about a request it forwards.
#[derive(Debug, Clone, Copy)]
pub struct ForwardContext<'a> {
    /// The viewer's address as a header value (made once per viewer connection).
    pub viewer: &'a HeaderValue,
    /// The agent's address as a header value, or `None` when the server masks agent
    /// addresses.
    pub agent: Option<&'a HeaderValue>,
    /// The request's one canonical authority ([`super::host::Authority`]): routed
    /// by, and sent to the origin as its only `Host`.
    pub host: &'a str,
    /// `http` or `https`.
    pub proto: &'static str,
}

/// An address as a header value, made once per connection or tunnel rather than once
/// per request.
pub fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value")
}

/// Rewrites a viewer's request headers for the origin. `upgrade` keeps the
/// `Upgrade`/`Connection` pair of a protocol switch (WebSocket).
///
/// A viewer's `Forwarded` is removed (its `for=` could name any address, and the Edge
/// does not speak for a chain it cannot check) and `X-Real-IP` is set to the viewer's
/// address as the Edge saw it, replacing any the viewer sent.
pub fn prepare_request(headers: &mut HeaderMap, cx: &ForwardContext<'_>, upgrade: bool) {
    let upgrade_to = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    // Spoofed `X-Netbore-*` and `Forwarded` headers go with the hop-by-hop ones.
    remove_hop_by_hop(headers, true);
    // Room for every header added below, made at once: a map grown one insert at a
    // time reallocates and rehashes at each doubling (three times for a request
    // that came with only `Host` on a map hyper recycled from a small response).
    let switch = if upgrade_to.is_some() { 2 } else { 0 };
    headers.reserve(FORWARDING_HEADERS + switch);
    // One look-up for the viewer's chain and its replacement.
    match headers.entry(X_FORWARDED_FOR) {
        header::Entry::Occupied(mut prior) => {
            let chained = match prior.get().to_str() {
                Ok(chain) if !chain.trim().is_empty() => {
                    let viewer = cx.viewer.to_str().unwrap_or_default();
                    HeaderValue::from_str(&format!("{chain}, {viewer}")).ok()
                }
                _ => Some(cx.viewer.clone()),
            };
            if let Some(v) = chained {
                prior.insert(v);
            }
        }
        header::Entry::Vacant(slot) => {
            slot.insert(cx.viewer.clone());
        }
    }
    headers.insert(X_REAL_IP, cx.viewer.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(cx.proto));
    // The host usually is the viewer's own and only `Host` value, already
    // canonical: it stays. Either way the origin gets exactly one `Host`, the
    // routed one.
    let mut sent = headers.get_all(header::HOST).iter();
    let routed = match (sent.next(), sent.next()) {
        (Some(only), None) if only.as_bytes() == cx.host.as_bytes() => Some(only.clone()),
        _ => HeaderValue::from_str(cx.host).ok().inspect(|host| {
            headers.insert(header::HOST, host.clone());
        }),
    };
    match routed {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        // Never: a canonical authority is a valid header value.
        None => {
            headers.remove(header::HOST);
            headers.remove(X_FORWARDED_HOST);
        }
    }
    headers.insert(X_NETBORE_CLIENT_IP, cx.viewer.clone());
    if let Some(agent) = cx.agent {
        headers.insert(X_NETBORE_AGENT_IP, agent.clone());
    }
    if let Some(protocol) = upgrade_to {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Rewrites an origin's response headers for the viewer. Every `X-Netbore-*` header
/// an origin sent is removed: viewers must be able to trust that those come from the
/// Edge (its error pages carry `X-Netbore-Error`).
pub fn prepare_response(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_to = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    remove_hop_by_hop(headers, false);
    if let Some(protocol) = upgrade_to {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus
/// `Expect`, which the Edge answers itself. `text` is `name` as a string.
fn is_hop_by_hop(name: &HeaderName, text: &str) -> bool {
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == header::EXPECT
        || matches!(text, "keep-alive" | "proxy-connection")
}

/// Removes hop-by-hop headers, including any a `Connection` header names, and every
/// `X-Netbore-*` header; with `request`, a viewer's `Forwarded` as well. One pass over
/// the names; nothing is allocated when there is nothing to remove.
fn remove_hop_by_hop(headers: &mut HeaderMap, request: bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    let mut connection = false;
    for name in headers.keys() {
        connection |= *name == header::CONNECTION;
        // One look-up of a standard name's text for both tests.
        let text = name.as_str();
        if is_hop_by_hop(name, text)
            || text.starts_with(NETBORE_PREFIX)
            || (request && *name == header::FORWARDED)
        {
            doomed.push(name.clone());
        }
    }
    if connection {
        doomed.extend(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
        );
    }
    for name in doomed {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(agent: Option<&HeaderValue>) -> ForwardContext<'_> {
        static VIEWER: std::sync::LazyLock<HeaderValue> =
            std::sync::LazyLock::new(|| ip_header("203.0.113.7".parse().unwrap()));
        ForwardContext {
            viewer: &VIEWER,
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
        let agent = ip_header("198.51.100.2".parse().unwrap());
        prepare_request(&mut h, &cx(Some(&agent)), false);
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
    fn the_origin_gets_one_host_the_routed_one() {
        let mut h = HeaderMap::new();
        h.append("host", "APP.localhost.:8080".parse().unwrap());
        h.append("host", "evil.example".parse().unwrap());
        prepare_request(&mut h, &cx(None), false);
        let hosts: Vec<_> = h.get_all("host").iter().collect();
        assert_eq!(hosts, ["app.localhost:8080"]);
        assert_eq!(h["x-forwarded-host"], "app.localhost:8080");
        // The viewer's own value is reused when it already is the routed one.
        let mut h = HeaderMap::new();
        let sent = HeaderValue::from_static("app.localhost:8080");
        h.insert("host", sent.clone());
        prepare_request(&mut h, &cx(None), false);
        assert_eq!(h.get_all("host").iter().count(), 1);
        assert_eq!(h["host"], sent);
    }

    #[test]
    fn viewer_forwarded_and_real_ip_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.append("forwarded", "for=10.9.9.9;host=evil".parse().unwrap());
        h.append("Forwarded", "for=10.8.8.8".parse().unwrap());
        h.append("x-real-ip", "10.9.9.9".parse().unwrap());
        h.append("x-real-ip", "10.8.8.8".parse().unwrap());
        prepare_request(&mut h, &cx(None), false);
        assert!(!h.contains_key("forwarded"));
        let real: Vec<_> = h.get_all("x-real-ip").iter().collect();
        assert_eq!(real, ["203.0.113.7"]);
        assert!(
            !h.values().any(|v| v.as_bytes().starts_with(b"10.")),
            "{h:?}"
        );
    }

    #[test]
    fn origin_netbore_headers_never_reach_the_viewer() {
        let mut h = HeaderMap::new();
        h.insert("x-netbore-error", "origin_unreachable".parse().unwrap());
        h.insert("X-Netbore-Message", "forged".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        prepare_response(&mut h, false);
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("x-netbore-")),
            "{h:?}"
        );
        assert_eq!(h["content-type"], "text/plain");
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
