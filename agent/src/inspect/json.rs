//! The inspector's records as its API shows them (the shape of ngrok's agent API,
//! with bodies and WebSocket messages besides), and as `curl` commands.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::store::{Body, Connection, Exchange, ParsedHead};
use super::{Inspector, TunnelInfo};

/// Header fields whose values are hidden unless `--inspect-secrets`.
const SECRET_FIELDS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];
/// What a hidden value shows.
pub(crate) const REDACTED: &str = "[redacted]";

/// Settings that shape what is shown.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) secrets: bool,
    pub(crate) tunnels: &'a [TunnelInfo],
}

impl View<'_> {
    /// The value of field `name` as shown.
    pub(crate) fn value<'v>(&self, name: &str, value: &'v [u8]) -> std::borrow::Cow<'v, str> {
        if !self.secrets && SECRET_FIELDS.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            return REDACTED.into();
        }
        String::from_utf8_lossy(value)
    }

    pub(crate) fn tunnel_name(&self, index: usize) -> String {
        self.tunnels
            .get(index)
            .map_or_else(|| format!("tunnel {index}"), |t| t.name.clone())
    }

    /// The public URL a request of tunnel `index` was made to (`target` appended).
    pub(crate) fn url(&self, index: usize, target: &str) -> String {
        let base = self
            .tunnels
            .get(index)
            .map_or("", |t| t.public_url.trim_end_matches('/'));
        format!("{base}{target}")
    }
}

/// `id` of a request record in the API.
pub(crate) fn request_id(seq: u64) -> String {
    format!("r_{seq:08}")
}

/// `id` of a connection record in the API.
pub(crate) fn connection_id(seq: u64) -> String {
    format!("c_{seq:08}")
}

/// The sequence number in an `r_…` or `c_…` id.
pub(crate) fn parse_id(id: &str, prefix: &str) -> Option<u64> {
    id.strip_prefix(prefix)?.parse().ok()
}

fn headers(view: View<'_>, head: &ParsedHead) -> Value {
    let mut map = Map::new();
    for (name, value) in &head.headers {
        let entry = map
            .entry(canonical(name))
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = entry {
            values.push(Value::String(view.value(name, value).into_owned()));
        }
    }
    Value::Object(map)
}

/// `content-type` → `Content-Type`, as ngrok's API shows names.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

pub(crate) fn body(b: &Body) -> Value {
    let text = std::str::from_utf8(&b.captured).ok();
    json!({
        "size": b.size,
        "truncated": b.truncated,
        "text": text,
        "base64": if text.is_none() { Some(STANDARD.encode(&b.captured)) } else { None },
    })
}

/// The head as shown (secret values hidden) followed by the captured body.
fn raw(view: View<'_>, first_line: &str, head: &ParsedHead, b: &Body) -> String {
    let mut out = format!("{first_line}\r\n").into_bytes();
    for (name, value) in &head.headers {
        out.extend_from_slice(format!("{name}: {}\r\n", view.value(name, value)).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&b.captured);
    STANDARD.encode(out)
}

/// One request record; with `with_raw`, the `raw` fields too.
pub(crate) fn exchange(view: View<'_>, e: &Exchange, with_raw: bool) -> Value {
    let req = e.request.request();
    let id = request_id(e.seq);
    let mut request = json!({
        "method": req.method,
        "proto": req.version,
        "uri": req.target,
        "headers": headers(view, &req),
        "body": body(&e.request_body),
    });
    if with_raw {
        let line = format!("{} {} {}", req.method, req.target, req.version);
        request["raw"] = raw(view, &line, &req, &e.request_body).into();
    }
    let response = e.response.as_ref().map(|head| {
        let res = head.response();
        let status = format!("{} {}", res.status, res.reason);
        let mut v = json!({
            "status": status,
            "status_code": res.status,
            "proto": res.version,
            "headers": headers(view, &res),
            "body": body(&e.response_body),
        });
        if with_raw {
            let line = format!("{} {status}", res.version);
            v["raw"] = raw(view, &line, &res, &e.response_body).into();
        }
        v
    });
    let websocket = (!e.websocket.is_empty()).then(|| {
        let messages: Vec<Value> = e
            .websocket
            .iter()
            .map(|m| {
                json!({
                    "from": if m.from_viewer { "viewer" } else { "origin" },
                    "time": rfc3339(m.time),
                    "type": m.kind,
                    "size": m.size,
                    "text": if m.kind == "binary" { None } else { std::str::from_utf8(&m.captured).ok() },
                })
            })
            .collect();
        json!({ "messages": messages })
    });
    json!({
        "uri": format!("/api/requests/http/{id}"),
        "id": id,
        "tunnel_name": view.tunnel_name(e.tunnel),
        "remote_addr": e.remote_addr(),
        "start": rfc3339(e.started),
        "duration": e.duration.map_or(0, |d| d.as_nanos() as u64),
        "replay_of": e.replay_of.map(request_id),
        "error": e.error,
        "request": request,
        "response": response,
        "websocket": websocket,
    })
}

/// What a list row needs of a request record, without headers or bodies: the live
/// feed's and the page's list's shape (`"summary": true`; the record itself is at
/// its `uri`).
pub(crate) fn summary(view: View<'_>, e: &Exchange) -> Value {
    let req = e.request.request_line();
    let id = request_id(e.seq);
    let response = e.response.as_ref().map(|head| {
        let (status, reason) = head.status_line();
        json!({
            "status": format!("{status} {reason}"),
            "status_code": status,
            "body": { "size": e.response_body.size },
        })
    });
    json!({
        "summary": true,
        "uri": format!("/api/requests/http/{id}"),
        "id": id,
        "tunnel_name": view.tunnel_name(e.tunnel),
        "remote_addr": e.remote_addr(),
        "start": rfc3339(e.started),
        "duration": e.duration.map_or(0, |d| d.as_nanos() as u64),
        "replay_of": e.replay_of.map(request_id),
        "error": e.error,
        "request": { "method": req.0, "uri": req.1, "body": { "size": e.request_body.size } },
        "response": response,
        "websocket": (!e.websocket.is_empty()).then(|| json!({ "count": e.websocket.len() })),
    })
}

/// One TCP connection record.
pub(crate) fn connection(view: View<'_>, c: &Connection) -> Value {
    json!({
        "id": connection_id(c.seq),
        "tunnel_name": view.tunnel_name(c.tunnel),
        "remote_addr": c.remote_addr,
        "start": rfc3339(c.started),
        "duration": c.duration.map_or(0, |d| d.as_nanos() as u64),
        "bytes_in": c.bytes_in,
        "bytes_out": c.bytes_out,
        "open": c.duration.is_none(),
    })
}

/// `GET /api/tunnels`.
pub(crate) fn tunnels(inspector: &Inspector) -> Value {
    let tunnels: Vec<Value> = inspector
        .tunnels()
        .iter()
        .map(|t| {
            let proto = t.public_url.split("://").next().unwrap_or_default();
            let addr = match t.protocol {
                netbore_control::api::Protocol::Http => format!("http://{}", t.local),
                _ => t.local.clone(),
            };
            json!({
                "name": t.name,
                "uri": format!("/api/tunnels/{}", t.name),
                "public_url": t.public_url,
                "proto": proto,
                "config": { "addr": addr, "inspect": t.inspect },
            })
        })
        .collect();
    json!({ "tunnels": tunnels, "uri": "/api/tunnels" })
}

/// Header fields `curl` sets itself or the Edge added.
const NOT_FOR_CURL: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
    "x-netbore-client-ip",
    "x-netbore-agent-ip",
];

/// A `curl` command that sends the request again to its public URL.
pub(crate) fn curl(view: View<'_>, e: &Exchange) -> String {
    let req = e.request.request();
    let mut out = String::from("curl");
    if req.method != "GET" {
        let _ = write!(out, " -X {}", quote(&req.method));
    }
    let _ = write!(out, " {}", quote(&view.url(e.tunnel, &req.target)));
    for (name, value) in &req.headers {
        if NOT_FOR_CURL.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            continue;
        }
        let _ = write!(
            out,
            " \\\n  -H {}",
            quote(&format!("{name}: {}", view.value(name, value)))
        );
    }
    if !e.request_body.captured.is_empty() {
        match std::str::from_utf8(&e.request_body.captured) {
            Ok(text) => {
                let _ = write!(out, " \\\n  --data-binary {}", quote(text));
            }
            Err(_) => {
                let _ = write!(
                    out,
                    " \\\n  --data-binary @body.bin  # {} bytes of binary body",
                    e.request_body.size
                );
            }
        }
        if e.request_body.truncated {
            out.push_str(" \\\n  # the body is cut at --inspect-body-limit");
        }
    }
    out.push('\n');
    out
}

/// `s` in single quotes for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `2026-12-05T06:00:00.123Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let c = netbore_control::civil::utc(since.as_secs());
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_450_400_123);
        assert_eq!(rfc3339(t), "2026-12-05T06:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn names_are_shown_canonically() {
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("X-NETBORE-thing"), "X-Netbore-Thing");
    }
}
