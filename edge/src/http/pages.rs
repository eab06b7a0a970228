//! The pages the Edge answers itself when it cannot forward a request: a small HTML
//! page, or JSON when the viewer asks for it, always with `X-Netbore-Error: <code>`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

/// A failure the Edge reports to a viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable code, also sent as `X-Netbore-Error`.
    pub code: &'static str,
    /// One sentence: what happened and what to do.
    pub message: String,
}

impl Failure {
    /// No tunnel is online at `host`.
    pub fn no_tunnel(host: &str) -> Self {
        Failure {
            status: StatusCode::NOT_FOUND,
            code: "tunnel_not_found",
            message: format!(
                "no tunnel is online at {host}; check the address, or start one with `netbore http`"
            ),
        }
    }

    /// The tunnel exists but its agent is not connected.
    pub fn agent_offline(host: &str) -> Self {
        Failure {
            status: StatusCode::BAD_GATEWAY,
            code: "agent_offline",
            message: format!(
                "the agent serving {host} is offline; it may be reconnecting, so try again shortly"
            ),
        }
    }

    /// The agent could not reach its origin (its own sentence names the address).
    pub fn origin_unreachable(message: String) -> Self {
        Failure {
            status: StatusCode::BAD_GATEWAY,
            code: "origin_unreachable",
            message,
        }
    }

    /// The connection through the agent broke.
    pub fn upstream_broken(detail: &str) -> Self {
        Failure {
            status: StatusCode::BAD_GATEWAY,
            code: "upstream_broken",
            message: format!(
                "the connection to the tunnel's service broke before it answered ({detail}); try again"
            ),
        }
    }

    /// The origin took too long to answer.
    pub fn origin_timeout(after: std::time::Duration) -> Self {
        Failure {
            status: StatusCode::GATEWAY_TIMEOUT,
            code: "origin_timeout",
            message: format!(
                "the tunnel's service did not answer within {} s; it may be overloaded",
                after.as_secs_f64()
            ),
        }
    }

    /// The tunnel at `host` serves `max` streams already.
    pub fn tunnel_busy(host: &str, max: usize) -> Self {
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "tunnel_busy",
            message: format!(
                "the tunnel at {host} is serving as many requests as it may at once ({max}); try again shortly"
            ),
        }
    }

    /// The Edge's window budget is spent: it buffers as much for tunnels as it may.
    pub fn edge_busy() -> Self {
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "edge_busy",
            message: "the server is carrying as much tunnel traffic as its memory allows; try again shortly"
                .into(),
        }
    }

    /// The agent of the tunnel at `host` allows no more streams at once.
    pub fn agent_busy(host: &str) -> Self {
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "tunnel_busy",
            message: format!(
                "the agent of the tunnel at {host} takes no more requests at once; try again shortly"
            ),
        }
    }

    /// The viewer's address holds `max` streams already.
    pub fn viewer_busy(max: usize) -> Self {
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "viewer_busy",
            message: format!(
                "your address has as many requests in flight as it may ({max}); wait for some to finish"
            ),
        }
    }

    /// A request on a TLS connection set up for `sni` names another host.
    pub fn misdirected(host: &str, sni: &str) -> Self {
        Failure {
            status: StatusCode::MISDIRECTED_REQUEST,
            code: "misdirected_request",
            message: format!(
                "this connection was set up for {sni} and cannot serve {host}; retry on a new connection to {host}"
            ),
        }
    }

    /// The request has no usable `Host`.
    pub fn bad_host() -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            code: "bad_host",
            message:
                "the request names no valid host; send a Host header with the tunnel's address"
                    .into(),
        }
    }

    /// The request names more than one host: two `Host` headers, or a `Host` that
    /// differs from its target's authority (`why` says which).
    pub fn ambiguous_host(why: &str) -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            code: "ambiguous_host",
            message: format!(
                "{why}; send one Host header naming the same host as the request target"
            ),
        }
    }

    /// The response for a viewer whose request carried `request_headers`.
    pub fn into_response(self, request_headers: &HeaderMap) -> Response<Full<Bytes>> {
        let json = request_headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/json"));
        let (content_type, body) = if json {
            let body = serde_json::json!({
                "error": { "code": self.code, "message": self.message }
            });
            ("application/json", body.to_string())
        } else {
            let title = self.status.canonical_reason().unwrap_or("Error");
            let body = format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{status} {title}</title></head>\n\
                 <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">\
                 <h1>{status} {title}</h1><p>{message}</p><p><small>netbore · {code}</small></p></body></html>\n",
                status = self.status.as_u16(),
                message = escape_html(&self.message),
                code = self.code,
            );
            ("text/html; charset=utf-8", body)
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("x-netbore-error", HeaderValue::from_static(self.code));
        response
    }
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_html_unless_json_is_asked_for() {
        let mut json = HeaderMap::new();
        json.insert(header::ACCEPT, "application/json".parse().unwrap());
        let r = Failure::no_tunnel("x.localhost").into_response(&json);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()["x-netbore-error"], "tunnel_not_found");
        let r = Failure::no_tunnel("<x>").into_response(&HeaderMap::new());
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
    }
}
