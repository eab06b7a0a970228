//! Upstream HTTP/1.1 from the Edge to an agent: each connection is one stream of the
//! agent's session (opened with a [`StreamHeader`]), kept alive and reused from a small
//! per-tunnel pool. The agent pipes each stream to the origin byte for byte, after its
//! origin status ([`AgentStream`]).
//!
//! Bodiless requests go over the lean client of [`super::h1`]; requests with a body,
//! upgrades and CONNECT over hyper's. Each has its own pool. Both give up a request
//! after [`h1::MAX_INTERIM`] interim (1xx) responses; hyper's client is held to it by
//! [`InterimCap`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use netbore_transport::Session;
use netbore_transport::proto::StreamHeader;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::agent_stream::{AgentStream, NotHeld, OriginUnreachable};
use super::h1;
use crate::limits::{StreamCount, StreamGuard};

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
    /// The session is alive but cannot take one more stream now: the Edge's window
    /// budget is spent, or the agent allows no more streams.
    #[error("the tunnel cannot take another stream now")]
    Busy(netbore_transport::Busy),
    /// The origin did not start a response in time.
    #[error("the origin did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection to the agent broke before a response arrived, or the response
    /// head was not valid HTTP/1.1.
    #[error("the connection through the agent broke before a response arrived ({0})")]
    Broken(BoxError),
    /// The agent could not connect to the origin; its sentence names the address it
    /// tried.
    #[error("{0}")]
    OriginUnreachable(String),
    /// The node the request was relayed to does not serve the tunnel now (see
    /// [`NotHeld`]).
    #[error("{0}")]
    NotHeld(NotHeld),
    /// The link to the node holding the tunnel ended before a response arrived
    /// (that node died or stopped), or that node no longer serves the tunnel: the
    /// request may go to another node holding the same tunnel.
    #[error("the link to the node holding the tunnel ended before a response arrived")]
    LinkLost(Resend),
}

/// A bodiless request already encoded for the origin, kept so a safe one (`GET`,
/// `HEAD`, `OPTIONS`) can be sent again through another holder of the tunnel.
#[derive(Debug)]
pub struct Resend {
    head: Bytes,
    head_request: bool,
    /// Whether its method is safe (RFC 9110, section 9.2.1): sending it twice
    /// changes nothing at the origin.
    safe: bool,
    /// When it was first sent: a second try gets what is left of the response
    /// timeout, not a new one.
    sent: tokio::time::Instant,
}

impl UpstreamError {
    /// A connection that broke: [`UpstreamError::OriginUnreachable`] when the agent
    /// said so, else [`UpstreamError::Broken`].
    fn broken(e: BoxError) -> Self {
        // `H1Error::Io` is transparent: its `source` skips the `io::Error` it holds.
        let inner: &(dyn std::error::Error + 'static) = match e.downcast_ref::<h1::H1Error>() {
            Some(h1::H1Error::Io(io)) => io,
            _ => &*e,
        };
        if let Some(u) = OriginUnreachable::find(inner) {
            return UpstreamError::OriginUnreachable(u.message.clone());
        }
        if NotHeld::within(inner) {
            return UpstreamError::NotHeld(NotHeld);
        }
        UpstreamError::Broken(e)
    }
}

/// The body of a request sent upstream: the viewer's, or none for a request sent again
/// on a new connection (only bodiless ones are).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// The sending half of one upstream HTTP/1.1 connection of hyper's client, and the
/// interim-response cap of the request in flight on it.
#[derive(Debug)]
struct Upstream {
    sender: SendRequest<UpstreamBody>,
    interim: Arc<InterimCap>,
}

impl Upstream {
    /// Sends `request`, counting its interim responses, and waits for the response
    /// head; see [`SendRequest::try_send_request`].
    async fn try_send(
        &mut self,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>> {
        self.interim.watch(&mut request);
        self.sender.try_send_request(request).await
    }

    /// The error for a request answered with more than [`h1::MAX_INTERIM`] interim
    /// responses, whatever hyper made of it (an error, or the final response that came
    /// in the same read as the last interim ones). The connection is then dropped: its
    /// reads fail from now on.
    fn check_interim(&self) -> Result<(), UpstreamError> {
        if self.interim.is_exceeded() {
            return Err(UpstreamError::Broken(Box::new(h1::H1Error::TooManyInterim)));
        }
        Ok(())
    }
}

/// Holds hyper's HTTP/1.1 client to [`h1::MAX_INTERIM`] interim (1xx) responses a
/// request, as the lean client is. Hyper skips every 1xx response before the final one
/// with no limit (its only bound is on one head's size), so an origin sending endless
/// `100 Continue`s would hold the request, and the Edge's parsing, until the response
/// timeout. Here each request's `on_informational` callback counts them; past the cap
/// the connection's reads fail ([`Capped`]), so hyper gives up the request and the
/// connection at its next read.
#[derive(Debug, Default)]
struct InterimCap {
    exceeded: AtomicBool,
}

impl InterimCap {
    /// Counts the interim responses to `request` once it is sent on this connection.
    /// Replaces the count a request meant for another connection carried.
    fn watch<B>(self: &Arc<Self>, request: &mut Request<B>) {
        let cap = self.clone();
        let seen = AtomicUsize::new(0);
        hyper::ext::on_informational(request, move |_| {
            if seen.fetch_add(1, Ordering::Relaxed) >= h1::MAX_INTERIM {
                cap.exceeded.store(true, Ordering::Release);
            }
        });
    }

    /// True once a request on the connection had more than [`h1::MAX_INTERIM`].
    fn is_exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }
}

/// The stream under one connection of hyper's client: the agent's, with reads that
/// fail once its [`InterimCap`] is exceeded.
#[derive(Debug)]
struct Capped<S> {
    io: S,
    interim: Arc<InterimCap>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.interim.is_exceeded() {
            return Poll::Ready(Err(io::Error::other(h1::H1Error::TooManyInterim)));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One upstream connection of the lean client.
type LeanConn = h1::Conn<AgentStream>;

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    idle_lean: Mutex<Vec<LeanConn>>,
    streams: Arc<StreamCount>,
    /// The tunnel's place in the metrics, while it is served.
    metrics: netbore_metrics::TunnelGuard,
    /// For a tunnel another node holds: what starts each stream on the link to it
    /// ([`crate::fleet::link`]), before the stream header.
    preamble: Option<Vec<u8>>,
}

impl HttpTunnel {
    /// A tunnel another node holds, reached over `link` (a session to that node)
    /// whose streams start with `preamble`.
    pub fn via_link(
        tunnel_id: String,
        name: String,
        link: Session,
        agent: SocketAddr,
        config: UpstreamConfig,
        preamble: Vec<u8>,
    ) -> Self {
        HttpTunnel {
            preamble: Some(preamble),
            ..HttpTunnel::new(tunnel_id, name, link, 0, agent, config)
        }
    }

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
            metrics: netbore_metrics::server().tunnels.add(&tunnel_id, "http"),
            tunnel_id,
            name,
            session,
            slot,
            agent,
            agent_ip: super::headers::ip_header(agent.ip()),
            config,
            idle: Mutex::new(Vec::new()),
            idle_lean: Mutex::new(Vec::new()),
            streams: Arc::default(),
            preamble: None,
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

    /// One more request in flight (or WebSocket), unless `max` are already.
    pub fn try_stream(&self, max: usize) -> Option<StreamGuard> {
        self.streams.try_take(max)
    }

    /// The tunnel's counters.
    pub fn stats(&self) -> &Arc<netbore_metrics::TunnelStats> {
        self.metrics.stats()
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
        if h1::handles(&request) {
            // The encoded head is all the exchange needs, also to send it again.
            let method = request.method();
            let head_request = method == hyper::Method::HEAD;
            let safe = matches!(
                *method,
                hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
            );
            let mut encoded = bytes::BytesMut::new();
            h1::encode_head(&request, &mut encoded);
            drop(request);
            if self.preamble.is_none() {
                // An agent's own session: nothing to send again elsewhere, so no
                // copy of the head or start time is kept.
                let exchange = self.exchange_lean(encoded.freeze(), head_request, viewer);
                let (conn, head) = tokio::time::timeout(timeout, exchange)
                    .await
                    .map_err(|_| UpstreamError::Timeout(timeout))??;
                let body = h1::Body::new(conn, &head);
                return Ok(head.response.map(|()| PooledBody::lean(body, self.clone())));
            }
            let resend = Resend {
                head: encoded.freeze(),
                head_request,
                safe,
                sent: tokio::time::Instant::now(),
            };
            return self.resend(resend, viewer).await;
        }
        // Boxed: hyper's path is large, and inline it would grow the future of every
        // request, bodiless ones on the lean path too.
        let exchange = Box::pin(self.exchange(request, viewer));
        let (sender, response) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))??;
        // The connection is reusable once the response body has been read; a protocol
        // switch takes it over for good.
        let reuse = (response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS)
            .then(|| (self.clone(), sender));
        Ok(response.map(|body| PooledBody::new(body, reuse)))
    }

    /// Sends a bodiless request encoded by [`Self::send`] (first there, or again
    /// after [`UpstreamError::LinkLost`] through another holder) and waits for the
    /// response head.
    pub async fn resend(
        self: &Arc<Self>,
        request: Resend,
        viewer: SocketAddr,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let timeout = self.config.response_timeout;
        let deadline = request.sent + timeout;
        let exchange = self.exchange_lean(request.head.clone(), request.head_request, viewer);
        match tokio::time::timeout_at(deadline, exchange).await {
            Err(_) => Err(UpstreamError::Timeout(timeout)),
            Ok(Ok((conn, head))) => {
                let body = h1::Body::new(conn, &head);
                Ok(head.response.map(|()| PooledBody::lean(body, self.clone())))
            }
            // No byte of a response has reached the viewer yet.
            Ok(Err(UpstreamError::AgentOffline(_) | UpstreamError::Broken(_)))
                if request.safe && self.preamble.is_some() && self.session.is_closed() =>
            {
                Err(UpstreamError::LinkLost(request))
            }
            // Nor did the request reach an agent: any method may go elsewhere.
            Ok(Err(UpstreamError::NotHeld(_))) if self.preamble.is_some() => {
                Err(UpstreamError::LinkLost(request))
            }
            Ok(Err(e)) => Err(e),
        }
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
        let Some(mut upstream) = self.take_idle() else {
            return Box::pin(self.exchange_on_new(request, viewer)).await;
        };
        // The origin may close an idle connection just as a request goes out on it;
        // a request that is safe to repeat is then sent again on a new connection.
        let again = Repeatable::of(&request);
        let sent = upstream.try_send(request).await;
        upstream.check_interim()?;
        match sent {
            Ok(response) => Ok((upstream, response)),
            Err(mut e) => match (e.take_message(), again) {
                // Never sent: the pooled connection was closed; use a new one.
                (Some(request), _) => Box::pin(self.exchange_on_new(request, viewer)).await,
                // Sent, and the connection closed without an answer.
                (None, Some(again)) if e.error().is_incomplete_message() => {
                    tracing::debug!(tunnel_id = %self.tunnel_id, tunnel = %self.name, "a pooled connection closed under a request; sending it again");
                    Box::pin(self.exchange_on_new(again.request(), viewer)).await
                }
                (None, _) => Err(UpstreamError::broken(e.into_error().into())),
            },
        }
    }

    /// Sends `request` over a new connection and waits for the response head.
    async fn exchange_on_new(
        &self,
        request: Request<UpstreamBody>,
        viewer: SocketAddr,
    ) -> Result<(Upstream, Response<Incoming>), UpstreamError> {
        let mut upstream = self.connect(viewer).await?;
        let sent = upstream.try_send(request).await;
        upstream.check_interim()?;
        let response = sent.map_err(|e| UpstreamError::broken(e.into_error().into()))?;
        Ok((upstream, response))
    }

    /// Sends bodiless `request` over a pooled lean connection, else a new one, and
    /// reads the response head. Every method the lean client takes is idempotent, so a
    /// pooled connection the origin closed before answering is replaced, once.
    async fn exchange_lean(
        &self,
        request: Bytes,
        head_request: bool,
        viewer: SocketAddr,
    ) -> Result<(LeanConn, h1::Head), UpstreamError> {
        if let Some(mut conn) = self.take_idle_lean() {
            match Self::round_trip(&mut conn, &request, head_request).await {
                Ok(head) => return Ok((conn, head)),
                Err(h1::H1Error::Closed) => {
                    tracing::debug!(tunnel_id = %self.tunnel_id, tunnel = %self.name, "a pooled connection closed under a request; sending it again");
                }
                Err(e) => return Err(UpstreamError::broken(e.into())),
            }
        }
        let mut conn = Box::pin(self.open(viewer)).await.map(h1::Conn::new)?;
        let head = Self::round_trip(&mut conn, &request, head_request)
            .await
            .map_err(|e| UpstreamError::broken(e.into()))?;
        Ok((conn, head))
    }

    /// Writes the encoded request head on `conn` and reads the response's.
    async fn round_trip(
        conn: &mut LeanConn,
        request: &[u8],
        head_request: bool,
    ) -> Result<h1::Head, h1::H1Error> {
        // Nothing was answered when the request could not even be written.
        conn.send_head(request)
            .await
            .map_err(|_| h1::H1Error::Closed)?;
        conn.read_head(head_request).await
    }

    /// The most recently pooled connection that is ready. Looks only as far back as
    /// it must: closed connections met on the way are dropped, and one whose last
    /// response just ended (not ready yet) stays for a later request.
    fn take_idle(&self) -> Option<Upstream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            if idle[i].sender.is_closed() {
                // The last entry, already looked at, moves into this place.
                idle.swap_remove(i);
            } else if idle[i].sender.is_ready() {
                return Some(idle.swap_remove(i));
            }
        }
        None
    }

    /// The most recently pooled lean connection that is still open and quiet.
    fn take_idle_lean(&self) -> Option<LeanConn> {
        let mut idle = self.idle_lean.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut conn) = idle.pop() {
            if conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle_lean(&self, conn: LeanConn) {
        let mut idle = self.idle_lean.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.config.max_idle && !self.session.is_closed() {
            idle.push(conn);
        }
    }

    fn put_idle(&self, upstream: Upstream) {
        if upstream.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.config.max_idle && !self.session.is_closed() {
            idle.push(upstream);
        }
    }

    /// Opens a stream to the agent for a connection to the origin.
    async fn open(&self, viewer: SocketAddr) -> Result<AgentStream, UpstreamError> {
        let offline = |e: &dyn std::fmt::Display| UpstreamError::AgentOffline(e.to_string());
        let mut stream = self.session.open().await.map_err(|e| match e.busy() {
            Some(busy) => {
                if busy == netbore_transport::Busy::Memory {
                    netbore_metrics::server().budget_refusals.inc();
                }
                UpstreamError::Busy(busy)
            }
            None => offline(&e),
        })?;
        let header = StreamHeader {
            slot: self.slot,
            viewer,
        };
        let written = match &self.preamble {
            None => stream.write_all(&header.encode()).await,
            Some(preamble) => {
                let mut head = preamble.clone();
                head.extend_from_slice(&header.encode());
                stream.write_all(&head).await
            }
        };
        written.map_err(|e| offline(&e))?;
        Ok(AgentStream::new(stream, self.metrics.stats().clone()))
    }

    /// Opens a stream to the agent and starts hyper's HTTP/1.1 client on it.
    async fn connect(&self, viewer: SocketAddr) -> Result<Upstream, UpstreamError> {
        let io = self.open(viewer).await?;
        let interim = Arc::new(InterimCap::default());
        let stream = Capped {
            io,
            interim: interim.clone(),
        };
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::broken(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Upstream { sender, interim })
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
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Hyper {
        body: Incoming,
        reuse: Option<(Arc<HttpTunnel>, Upstream)>,
    },
    Lean {
        body: h1::Body<AgentStream>,
        tunnel: Arc<HttpTunnel>,
    },
}

impl PooledBody {
    fn new(body: Incoming, reuse: Option<(Arc<HttpTunnel>, Upstream)>) -> Self {
        let mut body = PooledBody {
            inner: Inner::Hyper { body, reuse },
        };
        if body.is_end_stream() {
            body.release();
        }
        body
    }

    fn lean(body: h1::Body<AgentStream>, tunnel: Arc<HttpTunnel>) -> Self {
        let mut body = PooledBody {
            inner: Inner::Lean { body, tunnel },
        };
        if body.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        match &mut self.inner {
            Inner::Hyper { reuse, .. } => {
                if let Some((tunnel, sender)) = reuse.take() {
                    tunnel.put_idle(sender);
                }
            }
            Inner::Lean { body, tunnel } => {
                if let Some(conn) = body.finish() {
                    tunnel.put_idle_lean(conn);
                }
            }
        }
    }
}

impl Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = match &mut self.inner {
            Inner::Hyper { body, reuse } => match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    *reuse = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
            Inner::Lean { body, .. } => match body.poll_data(cx) {
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        if self.is_end_stream() {
            self.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Lean { body, .. } => body.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Lean { body, .. } => match body.exact_len() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
