//! HAR 1.2 export of captured exchanges (http://www.softwareishard.com/blog/har-12-spec/),
//! the format browsers' developer tools import.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::json::{View, rfc3339};
use super::store::{Body, Exchange, ParsedHead};

/// The start of a HAR log, up to its entries (each from [`entry`], oldest first,
/// separated by commas, then [`TAIL`]).
pub(crate) fn head() -> String {
    let creator = json!({ "name": "netbore", "version": env!("CARGO_PKG_VERSION") });
    format!(r#"{{"log":{{"version":"1.2","creator":{creator},"entries":["#)
}

/// The end of a HAR log, after its entries.
pub(crate) const TAIL: &str = "]}}";

/// The HAR entry of one exchange.
pub(crate) fn entry(view: View<'_>, e: &Exchange) -> Value {
    let req = e.request.request();
    let ms = e.duration.map_or(-1.0, |d| d.as_secs_f64() * 1000.0);
    let query: Vec<Value> = req
        .target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            json!({ "name": decode(name), "value": decode(value) })
        })
        .collect();
    let mut request = json!({
        "method": req.method,
        "url": view.url(e.tunnel, &req.target),
        "httpVersion": req.version,
        "cookies": [],
        "headers": fields(view, &req),
        "queryString": query,
        "headersSize": e.request.raw.len(),
        "bodySize": e.request_body.size,
    });
    if e.request_body.size > 0 {
        let mime = req
            .header("content-type")
            .unwrap_or("application/octet-stream");
        request["postData"] = json!({
            "mimeType": mime,
            "text": String::from_utf8_lossy(&e.request_body.captured),
        });
    }
    let response = match &e.response {
        Some(head) => {
            let res = head.response();
            json!({
                "status": res.status,
                "statusText": res.reason,
                "httpVersion": res.version,
                "cookies": [],
                "headers": fields(view, &res),
                "content": content(&res, &e.response_body),
                "redirectURL": res.header("location").unwrap_or_default(),
                "headersSize": head.raw.len(),
                "bodySize": e.response_body.size,
            })
        }
        // No response: HAR's aborted request.
        None => json!({
            "status": 0,
            "statusText": "",
            "httpVersion": req.version,
            "cookies": [],
            "headers": [],
            "content": { "size": 0, "mimeType": "" },
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        }),
    };
    let mut entry = json!({
        "startedDateTime": rfc3339(e.started),
        "time": ms.max(0.0),
        "request": request,
        "response": response,
        "cache": {},
        "timings": { "send": 0, "wait": ms, "receive": 0 },
    });
    if let Some(error) = &e.error {
        entry["comment"] = error.clone().into();
    }
    entry
}

fn fields(view: View<'_>, head: &ParsedHead) -> Vec<Value> {
    head.headers
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": view.value(name, value) }))
        .collect()
}

fn content(head: &ParsedHead, body: &Body) -> Value {
    let mime = head.header("content-type").unwrap_or_default();
    let mut content = json!({ "size": body.size, "mimeType": mime });
    match std::str::from_utf8(&body.captured) {
        Ok(text) => content["text"] = text.into(),
        Err(_) => {
            content["text"] = STANDARD.encode(&body.captured).into();
            content["encoding"] = "base64".into();
        }
    }
    if body.truncated {
        content["comment"] = "cut at --inspect-body-limit".into();
    }
    content
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn query_components_decode() {
        assert_eq!(decode("a%20b+c"), "a b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%C3%A9"), "é");
        assert_eq!(decode("%é%"), "%é%");
    }
}
