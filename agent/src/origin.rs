//! Streams from the Edge to the Origin: read the stream header, dial the origin, pipe.

use std::time::Duration;

use netbore_transport::proto::StreamHeader;
use netbore_transport::{Session, Stream, pipe};
use tokio::net::TcpStream;

/// Accepts streams until the session ends, each piped to its tunnel's origin.
pub(crate) async fn serve(session: &Session, origins: Vec<String>, timeout: Duration) {
    let origins: std::sync::Arc<[String]> = origins.into();
    while let Some(stream) = session.accept().await {
        tokio::spawn(forward(stream, origins.clone(), timeout));
    }
}

async fn forward(mut stream: Stream, origins: std::sync::Arc<[String]>, timeout: Duration) {
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
    let socket = match tokio::time::timeout(timeout, TcpStream::connect(origin.as_str())).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(
                "could not reach the local service at {origin} for viewer {}: {e}; is it running?",
                header.viewer
            );
            stream.reset();
            return;
        }
        Err(_) => {
            tracing::warn!(
                "the local service at {origin} did not accept a connection within {timeout:?} for viewer {}; is it overloaded?",
                header.viewer
            );
            stream.reset();
            return;
        }
    };
    let _ = socket.set_nodelay(true);
    if let Err(e) = pipe::join(socket, stream).await {
        tracing::debug!(viewer = %header.viewer, error = %e, "viewer stream ended with an error");
    }
}
