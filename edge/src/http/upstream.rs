//! Upstream HTTP/1.1 from the Edge to an agent: each connection is one stream of the
//! agent's session (opened with a [`StreamHeader`]), kept alive and reused from a small
//! per-tunnel pool. The agent pipes each stream to the origin byte for byte.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use netbore_transport::Session;
use netbore_transport::proto::StreamHeader;
use tokio::io::AsyncWriteExt;

/// Limits of upstream connections.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Idle keep-alive connections kept per tunnel. Bounds the streams (and the
    /// origin's connections) an idle tunnel holds open.
    pub max_idle: usize,
    /// How long the origin may take to start its response before the viewer gets a
    /// 504. Stops a hung origin from hanging viewers.
    pub response_timeout: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            max_idle: 64,
            response_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a request could not be sent to the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The agent's session is gone or refused a new stream.
    #[error("the agent is offline ({0})")]
    AgentOffline(String),
    /// The origin did not start a response in time.
    #[error("the origin did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection to the agent broke before a response arrived.
    #[error("the connection through the agent broke before a response arrived ({0})")]
    Broken(hyper::Error),
}

/// An HTTP tunnel served by an agent session.
#[derive(Debug)]
pub struct HttpTunnel {
    tunnel_id: String,
    name: String,
    session: Session,
    slot: u32,
    agent: SocketAddr,
    agent_ip: hyper::header::HeaderValue,
    config: UpstreamConfig,
    idle: Mutex<Vec<SendRequest<Incoming>>>,
}

impl HttpTunnel {
    /// A tunnel whose streams carry `slot` on `session`.
    pub fn new(
        tunnel_id: String,
        name: String,
        session: Session,
        slot: u32,
        agent: SocketAddr,
        config: UpstreamConfig,
    ) -> Self {
        HttpTunnel {
            tunnel_id,
            name,
            session,
            slot,
            agent,
            agent_ip: super::headers::ip_header(agent.ip()),
            config,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The tunnel's id.
    pub fn tunnel_id(&self) -> &str {
        &self.tunnel_id
    }

    /// The tunnel's host-name label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The agent's address.
    pub fn agent(&self) -> SocketAddr {
        self.agent
    }

    /// The agent's IP address as a header value.
    pub fn agent_ip(&self) -> &hyper::header::HeaderValue {
        &self.agent_ip
    }

    /// True once the agent's session has ended.
    pub fn is_offline(&self) -> bool {
        self.session.is_closed()
    }

    /// Sends `request` to the origin and waits for the response head. A pooled
    /// connection that turns out closed is replaced by a new one, once.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<Incoming>,
        viewer: SocketAddr,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let timeout = self.config.response_timeout;
        let attempt = async {
            let mut request = request;
            let (mut sender, pooled) = match self.take_idle() {
                Some(s) => (s, true),
                None => (self.connect(viewer).await?, false),
            };
            let response = match sender.try_send_request(request).await {
                Ok(r) => r,
                Err(mut e) => match e.take_message() {
                    // Never sent: the pooled connection was closed; use a new one.
                    Some(back) if pooled => {
                        request = back;
                        sender = self.connect(viewer).await?;
                        sender
                            .send_request(request)
                            .await
                            .map_err(UpstreamError::Broken)?
                    }
                    _ => return Err(UpstreamError::Broken(e.into_error())),
                },
            };
            Ok((sender, response))
        };
        let (sender, response) = tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))??;
        // The connection is reusable once the response body has been read; a protocol
        // switch takes it over for good.
        let reuse = (response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS)
            .then(|| (self.clone(), sender));
        Ok(response.map(|body| PooledBody::new(body, reuse)))
    }

    /// The most recently pooled connection that is ready. Looks only as far back as
    /// it must: closed connections met on the way are dropped, and one whose last
    /// response just ended (not ready yet) stays for a later request.
    fn take_idle(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            if idle[i].is_closed() {
                // The last entry, already looked at, moves into this place.
                idle.swap_remove(i);
            } else if idle[i].is_ready() {
                return Some(idle.swap_remove(i));
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.config.max_idle && !self.session.is_closed() {
            idle.push(sender);
        }
    }

    /// Opens a stream to the agent and starts HTTP/1.1 on it.
    async fn connect(&self, viewer: SocketAddr) -> Result<SendRequest<Incoming>, UpstreamError> {
        let offline = |e: &dyn std::fmt::Display| UpstreamError::AgentOffline(e.to_string());
        let mut stream = self.session.open().await.map_err(|e| offline(&e))?;
        let header = StreamHeader {
            slot: self.slot,
            viewer,
        };
        stream
            .write_all(&header.encode())
            .await
            .map_err(|e| offline(&e))?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Broken)?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// A response body from the origin that hands its connection back to the tunnel's pool
/// when it has been read to the end (a body dropped early closes the connection).
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    reuse: Option<(Arc<HttpTunnel>, SendRequest<Incoming>)>,
}

impl PooledBody {
    fn new(inner: Incoming, reuse: Option<(Arc<HttpTunnel>, SendRequest<Incoming>)>) -> Self {
        let mut body = PooledBody { inner, reuse };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((tunnel, sender)) = self.reuse.take() {
            tunnel.put_idle(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.reuse = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
