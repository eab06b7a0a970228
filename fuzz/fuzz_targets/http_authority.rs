//! Fuzzes the canonical-authority rules of the Edge (`netbore_edge::http::host`): which
//! one host a viewer's request names, from its target's authority (HTTP/1.1 absolute
//! form, h2 `:authority`) and its `Host` headers, and what the origin then receives.
//!
//! Input: lines; the first is the target's authority (empty: none), each further line
//! (up to 4) one `Host` header value.
//!
//! Invariants on arbitrary bytes:
//! - `request_authority` never panics; more than one `Host` is always refused;
//! - an accepted authority is canonical: lowercase, no trailing dot or empty label, a
//!   fixed point of `Authority::parse`, and equal to the canonical form of every place
//!   the request names a host (so a request cannot be routed by one host and seen by
//!   the origin under another);
//! - a tunnel label found under the domain is a valid DNS label, and the host name is
//!   exactly `<label>.<domain>`;
//! - after `prepare_request`, the origin gets exactly one `Host`: the canonical one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netbore_edge::http::headers::{ForwardContext, ip_header, prepare_request};
use netbore_edge::http::host::{Authority, AuthorityError, is_valid_label, request_authority, tunnel_label};

const DOMAIN: &str = "tunnel.example.com";

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let target = lines.next().filter(|t| !t.is_empty());
    let hosts: Vec<&[u8]> = lines.take(4).collect();
    let result = request_authority(target, hosts.iter().copied());
    if hosts.len() > 1 {
        assert_eq!(result, Err(AuthorityError::Duplicate));
        return;
    }
    let Ok(authority) = result else {
        return;
    };
    let canonical = authority.as_str();
    assert_eq!(canonical, canonical.to_ascii_lowercase());
    let hostname = authority.hostname();
    assert!(!hostname.is_empty() && !hostname.starts_with('.') && !hostname.ends_with('.'));
    assert!(!hostname.contains(".."));
    assert_eq!(Authority::parse(canonical.as_bytes()).as_ref(), Ok(&authority));
    for named in target.iter().chain(hosts.iter()) {
        assert_eq!(Authority::parse(named).as_ref(), Ok(&authority), "{named:?}");
    }
    if let Some(label) = tunnel_label(hostname, DOMAIN) {
        assert!(is_valid_label(label), "{label:?}");
        assert_eq!(hostname, format!("{label}.{DOMAIN}"));
    }

    let mut headers = hyper::HeaderMap::new();
    for host in &hosts {
        if let Ok(v) = hyper::header::HeaderValue::from_bytes(host) {
            headers.append(hyper::header::HOST, v);
        }
    }
    let viewer = ip_header("203.0.113.1".parse().unwrap());
    let cx = ForwardContext {
        viewer: &viewer,
        agent: None,
        host: canonical,
        proto: "http",
    };
    prepare_request(&mut headers, &cx, false);
    let sent: Vec<_> = headers.get_all(hyper::header::HOST).iter().collect();
    assert_eq!(sent, [canonical]);
});
