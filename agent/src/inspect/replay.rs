//! Replay: a captured request sent again, as it was or edited, from the agent straight
//! to its tunnel's origin (not through the Edge), and captured like any other.

use std::time::Duration;

use netbore_transport::pipe::Tap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Inspector;
use super::capture::HttpTap;

/// How long a replay may take, connection to the end of the response.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);
/// Header fields the replay frames itself.
const FRAMING: &[&str] = &["content-length", "transfer-encoding"];

/// What to change in the request before it is sent again.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Edits {
    /// The request to replay.
    pub(crate) id: String,
    /// Another method.
    pub(crate) method: Option<String>,
    /// Another path and query.
    pub(crate) uri: Option<String>,
    /// Header fields replacing all of the request's.
    pub(crate) headers: Option<Vec<(String, String)>>,
    /// Another body.
    pub(crate) body: Option<String>,
    /// ngrok's API names the tunnel to replay to; Netbore replays to the tunnel the
    /// request came through.
    #[serde(default)]
    pub(crate) tunnel_name: Option<String>,
}

/// Why a replay could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    #[error("no request {0} is kept; it may have left the history")]
    NotFound(String),
    #[error(
        "the request's body was not captured whole (it was larger than --inspect-body-limit, or its connection ended first), so it cannot be replayed as it was; replay it with an edited body"
    )]
    Truncated,
    #[error("{0}")]
    BadEdit(String),
    #[error("the agent could not reach the local service at {addr} ({reason}); is it running?")]
    Origin { addr: String, reason: String },
}

/// Sends request `seq` again with `edits`; returns the new record's sequence number
/// once its response has ended (or [`REPLAY_TIMEOUT`] has passed).
pub(crate) async fn replay(
    inspector: &Inspector,
    seq: u64,
    edits: &Edits,
) -> Result<u64, ReplayError> {
    let exchange = inspector
        .exchange(seq)
        .ok_or_else(|| ReplayError::NotFound(edits.id.clone()))?;
    if let Some(name) = &edits.tunnel_name
        && !inspector.tunnels().iter().any(|t| &t.name == name)
    {
        return Err(ReplayError::BadEdit(format!(
            "there is no tunnel named {name:?}; leave tunnel_name out to replay to the request's own"
        )));
    }
    let original = exchange.request.request();
    let body = match &edits.body {
        Some(b) => b.clone().into_bytes(),
        None if exchange.request_body.truncated => return Err(ReplayError::Truncated),
        None => exchange.request_body.captured.to_vec(),
    };
    let method = edits.method.as_deref().unwrap_or(&original.method);
    let target = edits.uri.as_deref().unwrap_or(&original.target);
    if !is_token(method) {
        return Err(ReplayError::BadEdit(format!(
            "{method:?} is not an HTTP method; write one like GET or POST"
        )));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ReplayError::BadEdit(format!(
            "{target:?} is not a path; write one that starts with / and has no spaces"
        )));
    }
    let fields: Vec<(String, Vec<u8>)> = match &edits.headers {
        // A hidden value sent back as shown means "as it was".
        Some(h) => h
            .iter()
            .map(|(n, v)| {
                let value = match original
                    .headers
                    .iter()
                    .find(|(o, _)| o.eq_ignore_ascii_case(n))
                {
                    Some((_, was)) if v == super::json::REDACTED => was.clone(),
                    _ => v.clone().into_bytes(),
                };
                (n.clone(), value)
            })
            .collect(),
        None => original.headers.clone(),
    };
    let mut request = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    let mut had_length = false;
    for (name, value) in &fields {
        if !is_token(name) || value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(ReplayError::BadEdit(format!(
                "the header {name:?} is not valid; names are letters, digits and dashes, and values are one line"
            )));
        }
        if FRAMING.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            had_length = true;
            continue;
        }
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    if had_length || !body.is_empty() {
        request.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&body);

    let addr = inspector
        .tunnels()
        .get(exchange.tunnel)
        .map(|t| t.local.clone())
        .ok_or_else(|| ReplayError::NotFound(edits.id.clone()))?;
    let mut tap = HttpTap::new(
        inspector.clone(),
        exchange.tunnel,
        exchange.viewer,
        Some(seq),
    );
    let origin_error = |e: std::io::Error| ReplayError::Origin {
        addr: addr.clone(),
        reason: e.to_string(),
    };
    let mut socket = tokio::time::timeout(REPLAY_TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| origin_error(std::io::ErrorKind::TimedOut.into()))?
        .map_err(origin_error)?;
    tap.read_from_stream(&request);
    let new = tap.last_seq().unwrap_or(seq);
    let exchanged = async {
        socket.write_all(&request).await?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            tap.read_from_socket(&buf[..n]);
            if tap.idle() {
                return Ok(());
            }
        }
    };
    // A failure shows on the new record (the tap notes a missing response).
    let _ = tokio::time::timeout(REPLAY_TIMEOUT, exchanged).await;
    drop(tap);
    Ok(new)
}

/// An HTTP token (RFC 9110 5.6.2): a method or a field name.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
