//! Fuzzes what the Edge does with a viewer's `Host` / `:authority` and headers before
//! routing and forwarding (`netbore_edge::http::{host, headers}`).
//!
//! Invariants on arbitrary bytes:
//! - `tunnel_name` never panics; a name it returns is a valid DNS label, and the host
//!   it came from ends with `.<domain>` (after an optional port and trailing dot);
//! - `prepare_request` never panics, leaves no `X-Netbore-*` header a viewer sent, sets
//!   the forwarding headers, and leaves no hop-by-hop header (unless upgrading).

#![no_main]

use libfuzzer_sys::fuzz_target;
use netbore_edge::http::headers::{ForwardContext, ip_header, prepare_request};
use netbore_edge::http::host::{is_valid_label, tunnel_name};

const DOMAIN: &str = "tunnel.example.com";

fuzz_target!(|data: &[u8]| {
    // First line: the host; the rest: `name: value` header lines.
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let host = lines.next().unwrap_or_default();
    if let Some(name) = tunnel_name(host, DOMAIN) {
        assert!(is_valid_label(&name), "{name:?} from {host:?}");
        let lower = host.to_ascii_lowercase();
        assert!(
            lower.contains(&format!("{name}.{DOMAIN}")),
            "{name:?} from {host:?}"
        );
    }

    let mut headers = hyper::HeaderMap::new();
    for line in lines.take(64) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.trim().as_bytes()),
            hyper::header::HeaderValue::from_bytes(v.trim().as_bytes()),
        ) else {
            continue;
        };
        headers.append(k, v);
    }
    let upgrade = data.first().is_some_and(|b| b & 1 == 1);
    let viewer = ip_header("203.0.113.1".parse().unwrap());
    let cx = ForwardContext {
        viewer: &viewer,
        agent: None,
        host: "app.tunnel.example.com",
        proto: "http",
    };
    prepare_request(&mut headers, &cx, upgrade);
    for (k, v) in &headers {
        let k = k.as_str();
        if k.starts_with("x-netbore-") {
            assert_eq!(k, "x-netbore-client-ip", "viewer header {k} survived");
            assert_eq!(v, "203.0.113.1");
        }
        if !upgrade {
            assert!(
                !matches!(
                    k,
                    "connection" | "upgrade" | "transfer-encoding" | "te" | "keep-alive"
                ),
                "hop-by-hop {k} survived"
            );
        }
    }
    assert!(headers.contains_key("x-forwarded-for"));
    assert_eq!(headers["x-forwarded-proto"], "http");
});
