//! Streams from the Edge to the Origin: read the stream header, dial the origin, pipe.
//! When an HTTP tunnel's origin cannot be reached, the agent answers the Edge with a
//! 502 that names the address it tried, so the viewer learns what is wrong.

use std::sync::Arc;
use std::time::Duration;

use netbore_control::api::Protocol;
use netbore_transport::proto::StreamHeader;
use netbore_transport::{Session, Stream, pipe};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Where one tunnel's streams go.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// `HOST:PORT`.
    pub(crate) addr: String,
    /// The tunnel's protocol.
    pub(crate) protocol: Protocol,
}

/// Accepts streams until the session ends, each piped to its tunnel's origin.
pub(crate) async fn serve(session: &Session, origins: Vec<Origin>, timeout: Duration) {
    let origins: Arc<[Origin]> = origins.into();
    while let Some(stream) = session.accept().await {
        tokio::spawn(forward(stream, origins.clone(), timeout));
    }
}

async fn forward(mut stream: Stream, origins: Arc<[Origin]>, timeout: Duration) {
    let header = match tokio::time::timeout(timeout, StreamHeader::read(&mut stream)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the Edge opened a stream with a malformed header; dropped it");
            stream.reset();
            return;
        }
        Err(_) => {
            stream.reset();
            return;
        }
    };
    let Some(origin) = origins.get(header.slot as usize) else {
        tracing::warn!(
            slot = header.slot,
            "the Edge opened a stream for an unknown tunnel; dropped it"
        );
        stream.reset();
        return;
    };
    let addr = origin.addr.as_str();
    let failure = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(socket)) => {
            let _ = socket.set_nodelay(true);
            if let Err(e) = pipe::join(socket, stream).await {
                tracing::debug!(viewer = %header.viewer, error = %e, "viewer stream ended with an error");
            }
            return;
        }
        Ok(Err(e)) => {
            format!("the agent could not reach the local service at {addr} ({e}); is it running?")
        }
        Err(_) => format!(
            "the local service at {addr} did not accept a connection within {timeout:?}; is it overloaded?"
        ),
    };
    tracing::warn!("{failure} (viewer {})", header.viewer);
    match origin.protocol {
        Protocol::Http => answer_unreachable(stream, &failure).await,
        Protocol::Tcp | Protocol::Tls => stream.reset(),
    }
}

/// Answers the Edge's HTTP request with a 502 carrying `message`; the Edge turns it
/// into its own error page.
async fn answer_unreachable(mut stream: Stream, message: &str) {
    let body = message.as_bytes();
    // Header values must be visible ASCII; the sentence is built from an address and
    // an OS error, but keep it safe anyway.
    let header_value: String = message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    let head = format!(
        "HTTP/1.1 502 Bad Gateway\r\nx-netbore-error: origin_unreachable\r\nx-netbore-message: {header_value}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}
