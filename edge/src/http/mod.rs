//! HTTP ingress: viewers speak HTTP/1.1 or h2c to the Edge, which routes each request
//! by host name to its tunnel and forwards it over a pooled HTTP/1.1 connection through
//! the agent. Bodies stream both ways with the mux's flow control as backpressure;
//! WebSocket upgrades pass through as a byte pipe.

pub mod headers;
pub mod host;
pub mod pages;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::registry::{Registry, Route};
use headers::ForwardContext;
use pages::Failure;
use upstream::{HttpTunnel, PooledBody, UpstreamError};

/// The body of every response the Edge sends a viewer: the origin's, or the Edge's
/// own page.
pub type ViewerBody = Either<PooledBody, Full<Bytes>>;

/// Settings of HTTP ingress.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Keep the agent's address out of every header (`--mask-agent-ip`).
    pub mask_agent_ip: bool,
    /// How long a viewer may take to send a request's headers. Stops slow-header
    /// (slowloris) viewers from holding connections.
    pub header_timeout: Duration,
    /// Most viewer connections served at once; further ones wait in the listen queue.
    pub max_connections: usize,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            mask_agent_ip: false,
            header_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// Serves viewers on `listener` forever.
pub async fn serve(listener: TcpListener, registry: Registry, config: IngressConfig) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((socket, viewer)) => {
                let registry = registry.clone();
                let config = config.clone();
                tokio::spawn(async move {
                    serve_connection(socket, viewer, registry, config).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a viewer failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn serve_connection(
    socket: tokio::net::TcpStream,
    viewer: SocketAddr,
    registry: Registry,
    config: Arc<IngressConfig>,
) {
    let _ = socket.set_nodelay(true);
    let header_timeout = config.header_timeout;
    let service = hyper::service::service_fn(move |request| {
        let registry = registry.clone();
        let config = config.clone();
        async move {
            Ok::<_, std::convert::Infallible>(handle(request, viewer, &registry, &config).await)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(socket), service)
        .await
    {
        tracing::debug!(%viewer, error = %e, "viewer connection ended with an error");
    }
}

/// Answers one viewer request.
pub async fn handle(
    request: Request<Incoming>,
    viewer: SocketAddr,
    registry: &Registry,
    config: &IngressConfig,
) -> Response<ViewerBody> {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    let Some(host) = host else {
        return page(Failure::bad_host(), &request);
    };
    let Some(name) = host::tunnel_name(&host, registry.domain()) else {
        return page(Failure::no_tunnel(&host), &request);
    };
    match registry.route(&name) {
        None => page(Failure::no_tunnel(&host), &request),
        Some(Route::Offline) => page(Failure::agent_offline(&host), &request),
        Some(Route::Online(tunnel)) => forward(request, viewer, &host, &tunnel, config).await,
    }
}

fn page(failure: Failure, request: &Request<Incoming>) -> Response<ViewerBody> {
    failure.into_response(request.headers()).map(Either::Right)
}

async fn forward(
    mut request: Request<Incoming>,
    viewer: SocketAddr,
    host: &str,
    tunnel: &Arc<HttpTunnel>,
    config: &IngressConfig,
) -> Response<ViewerBody> {
    let accept = request.headers().get(header::ACCEPT).cloned();
    let failure_page = |failure: Failure| {
        let mut h = hyper::HeaderMap::new();
        if let Some(a) = accept.clone() {
            h.insert(header::ACCEPT, a);
        }
        failure.into_response(&h).map(Either::Right)
    };
    let upgrade = headers::wants_upgrade(request.headers());
    let viewer_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let cx = ForwardContext {
        viewer: viewer.ip(),
        agent: (!config.mask_agent_ip).then(|| tunnel.agent().ip()),
        host,
        proto: "http",
    };
    headers::prepare_request(request.headers_mut(), &cx, upgrade);
    // Upstream is HTTP/1.1 in origin form, whatever the viewer spoke.
    *request.version_mut() = hyper::Version::HTTP_11;
    if let Some(pq) = request.uri().path_and_query().cloned() {
        *request.uri_mut() = hyper::Uri::from(pq);
    }
    let mut response = match tunnel.send(request, viewer).await {
        Ok(r) => r,
        Err(UpstreamError::AgentOffline(_)) => return failure_page(Failure::agent_offline(host)),
        Err(UpstreamError::Timeout(after)) => return failure_page(Failure::origin_timeout(after)),
        // A connection that broke because the agent's session ended is the agent
        // going offline, not a fault of the origin.
        Err(UpstreamError::Broken(_)) if tunnel.is_offline() => {
            return failure_page(Failure::agent_offline(host));
        }
        Err(UpstreamError::Broken(e)) => {
            return failure_page(Failure::upstream_broken(&e.to_string()));
        }
    };
    if response
        .headers()
        .get("x-netbore-error")
        .is_some_and(|v| v == "origin_unreachable")
    {
        let message = response
            .headers()
            .get("x-netbore-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("the agent could not reach the tunnel's local service; is it running?")
            .to_string();
        return failure_page(Failure::origin_unreachable(message));
    }
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    headers::prepare_response(response.headers_mut(), switching);
    if switching {
        match viewer_upgrade {
            Some(viewer_upgrade) => {
                let origin_upgrade = hyper::upgrade::on(&mut response);
                tokio::spawn(splice_upgraded(viewer_upgrade, origin_upgrade));
            }
            None => {
                return failure_page(Failure::upstream_broken(
                    "the service switched protocols without being asked",
                ));
            }
        }
    }
    response
        .headers_mut()
        .append("via", HeaderValue::from_static("1.1 netbore"));
    // The viewer's connection has its own version; an HTTP/1.0 origin must not turn
    // it into a 1.0 reply.
    *response.version_mut() = hyper::Version::HTTP_11;
    response.map(Either::Left)
}

/// Pipes a switched-protocol connection (WebSocket) between viewer and origin.
async fn splice_upgraded(viewer: hyper::upgrade::OnUpgrade, origin: hyper::upgrade::OnUpgrade) {
    let (viewer, origin) = match tokio::try_join!(viewer, origin) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "a protocol switch did not complete");
            return;
        }
    };
    let mut viewer = TokioIo::new(viewer);
    let mut origin = TokioIo::new(origin);
    if let Err(e) = tokio::io::copy_bidirectional(&mut viewer, &mut origin).await {
        tracing::debug!(error = %e, "an upgraded connection ended with an error");
    }
}
