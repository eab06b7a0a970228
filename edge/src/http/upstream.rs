//! Upstream HTTP/1.1 from the Edge to an agent: each connection is one stream of the
//! agent's session (opened with a [`StreamHeader`]), kept alive and reused from a small
//! per-tunnel pool. The agent pipes each stream to the origin byte for byte.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
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

/// The body of a request sent upstream: the viewer's, or none for a request sent again
/// on a new connection (only bodiless ones are).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// The sending half of one upstream HTTP/1.1 connection.
type Upstream = SendRequest<UpstreamBody>;

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
    idle: Mutex<Vec<Upstream>>,
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
        let (sender, response) = tokio::time::timeout(timeout, self.exchange(request, viewer))
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))??;
        // The connection is reusable once the response body has been read; a protocol
        // switch takes it over for good.
        let reuse = (response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS)
            .then(|| (self.clone(), sender));
        Ok(response.map(|body| PooledBody::new(body, reuse)))
    }

    /// Sends `request` over a pooled connection, else a new one, and waits for the
    /// response head.
    ///
    /// Every request runs this, so its future stays small: the rare steps (a new
    /// connection) are boxed. A future is copied whole each time it is moved, and
    /// this one is nested inside the viewer request's future and each of its callers'.
    async fn exchange(
        &self,
        request: Request<Incoming>,
        viewer: SocketAddr,
    ) -> Result<(Upstream, Response<Incoming>), UpstreamError> {
        let request = request.map(Either::Left);
        let Some(mut sender) = self.take_idle() else {
            return Box::pin(self.exchange_on_new(request, viewer)).await;
        };
        // The origin may close an idle connection just as a request goes out on it;
        // a request that is safe to repeat is then sent again on a new connection.
        let again = Repeatable::of(&request);
        match sender.try_send_request(request).await {
            Ok(response) => Ok((sender, response)),
            Err(mut e) => match (e.take_message(), again) {
                // Never sent: the pooled connection was closed; use a new one.
                (Some(request), _) => Box::pin(self.exchange_on_new(request, viewer)).await,
                // Sent, and the connection closed without an answer.
                (None, Some(again)) if e.error().is_incomplete_message() => {
                    tracing::debug!(tunnel = %self.name, "a pooled connection closed under a request; sending it again");
                    Box::pin(self.exchange_on_new(again.request(), viewer)).await
                }
                (None, _) => Err(UpstreamError::Broken(e.into_error())),
            },
        }
    }

    /// Sends `request` over a new connection and waits for the response head.
    async fn exchange_on_new(
        &self,
        request: Request<UpstreamBody>,
        viewer: SocketAddr,
    ) -> Result<(Upstream, Response<Incoming>), UpstreamError> {
        let mut sender = self.connect(viewer).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(UpstreamError::Broken)?;
        Ok((sender, response))
    }

    /// The most recently pooled connection that is ready. Looks only as far back as
    /// it must: closed connections met on the way are dropped, and one whose last
    /// response just ended (not ready yet) stays for a later request.
    fn take_idle(&self) -> Option<Upstream> {
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

    fn put_idle(&self, sender: Upstream) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.config.max_idle && !self.session.is_closed() {
            idle.push(sender);
        }
    }

    /// Opens a stream to the agent and starts HTTP/1.1 on it.
    async fn connect(&self, viewer: SocketAddr) -> Result<Upstream, UpstreamError> {
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

/// The head of a bodiless request with an idempotent method (RFC 9110, section 9.2.2),
/// kept to send it again.
struct Repeatable {
    method: hyper::Method,
    uri: hyper::Uri,
    headers: hyper::HeaderMap,
}

impl Repeatable {
    /// A copy of `request`'s head when it is safe to send twice.
    fn of<B: Body>(request: &Request<B>) -> Option<Repeatable> {
        use hyper::Method;
        let idempotent = matches!(
            *request.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        (idempotent && request.body().is_end_stream()).then(|| Repeatable {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        })
    }

    fn request(self) -> Request<UpstreamBody> {
        let mut request = Request::new(Either::Right(Empty::new()));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.headers_mut() = self.headers;
        request
    }
}

/// A response body from the origin that hands its connection back to the tunnel's pool
/// when it has been read to the end (a body dropped early closes the connection).
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    reuse: Option<(Arc<HttpTunnel>, Upstream)>,
}

impl PooledBody {
    fn new(inner: Incoming, reuse: Option<(Arc<HttpTunnel>, Upstream)>) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn request(method: &str, body: &'static str) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.method_mut() = method.parse().unwrap();
        *r.uri_mut() = "/path?q=1".parse().unwrap();
        r.headers_mut()
            .insert("x-forwarded-for", "192.0.2.1".parse().unwrap());
        r
    }

    #[test]
    fn only_bodiless_idempotent_requests_are_sent_twice() {
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            let again = Repeatable::of(&request(method, ""))
                .expect(method)
                .request();
            assert_eq!(again.method().as_str(), method);
            assert_eq!(again.uri(), "/path?q=1");
            assert_eq!(again.headers()["x-forwarded-for"], "192.0.2.1");
            assert!(again.body().is_end_stream());
        }
        for method in ["POST", "PATCH", "CONNECT"] {
            assert!(Repeatable::of(&request(method, "")).is_none(), "{method}");
        }
        // A body could not be sent again: it has been read once already.
        assert!(Repeatable::of(&request("PUT", "data")).is_none());
        assert!(Repeatable::of(&request("GET", "data")).is_none());
    }
}
