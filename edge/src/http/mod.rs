//! HTTP ingress: viewers speak HTTP/1.1 or h2c to the Edge, or either over TLS
//! (HTTPS, h2 and HTTP/1.1 by ALPN, certificates from [`crate::certs`]); the Edge
//! routes each request by host name to its tunnel and forwards it over a pooled
//! HTTP/1.1 connection through the agent. Bodies stream both ways with the mux's flow
//! control as backpressure; WebSocket upgrades pass through as a byte pipe.

pub mod agent_stream;
pub mod h1;
pub mod headers;
pub mod host;
pub mod pages;
pub mod tls;
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

use crate::certs::CertManager;
use crate::registry::{Registry, Route};
use headers::ForwardContext;
use host::AuthorityError;
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
    /// Most viewer connections served at once, plain and TLS together; further ones
    /// wait in the listen queue.
    pub max_connections: usize,
    /// How long a viewer may take to send its TLS hello, and again to finish the
    /// handshake (`--tls-handshake-timeout`). Stops silent connections from holding
    /// connection slots.
    pub tls_handshake_timeout: Duration,
    /// Answer plain HTTP requests for tunnels with a 308 to HTTPS on this public port
    /// (`--redirect-http`); `None` serves plain HTTP.
    pub redirect_https_port: Option<u16>,
    /// Pending ACME HTTP-01 challenges, answered on plain HTTP before any routing
    /// (and before `--redirect-http`); `None` without an ACME source.
    pub acme_challenges: Option<Arc<crate::acme::Http01Challenges>>,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            mask_agent_ip: false,
            header_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            tls_handshake_timeout: Duration::from_secs(10),
            redirect_https_port: None,
            acme_challenges: None,
        }
    }
}

/// What the Edge knows about the viewer connection a request came on.
#[derive(Debug, Clone)]
pub struct ViewerConn {
    /// The viewer's address.
    pub viewer: SocketAddr,
    /// The SNI name of the TLS handshake, lowercase; `None` on plain HTTP.
    pub tls_name: Option<Arc<str>>,
    /// The viewer's IP address as a header value, made once for all its requests.
    pub viewer_ip: HeaderValue,
}

impl ViewerConn {
    /// A viewer connection from `viewer`, over TLS for `tls_name` when given.
    pub fn new(viewer: SocketAddr, tls_name: Option<Arc<str>>) -> Self {
        ViewerConn {
            viewer,
            tls_name,
            viewer_ip: headers::ip_header(viewer.ip()),
        }
    }
}

/// The TLS settings of an HTTPS listener.
#[derive(Debug)]
struct TlsIngress {
    config: Arc<rustls::ServerConfig>,
    certs: Arc<CertManager>,
}

/// HTTP ingress: plain and TLS listeners sharing one routing table and one budget of
/// connections. Clones share everything.
#[derive(Debug, Clone)]
pub struct Ingress {
    registry: Registry,
    config: Arc<IngressConfig>,
    slots: Arc<Semaphore>,
}

impl Ingress {
    /// Ingress routing by `registry`.
    pub fn new(registry: Registry, config: IngressConfig) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
        Ingress {
            registry,
            config: Arc::new(config),
            slots,
        }
    }

    /// Serves plain-HTTP viewers on `listener` forever.
    pub async fn serve(self, listener: TcpListener) {
        self.serve_both(listener, None).await;
    }

    /// Serves plain-HTTP viewers on `plain` and, when given, HTTPS viewers on the
    /// second listener with certificates from its manager, forever.
    pub async fn serve_both(
        self,
        plain: TcpListener,
        https: Option<(TcpListener, Arc<CertManager>)>,
    ) {
        let (https, tls) = match https {
            Some((listener, certs)) => (
                Some(listener),
                Some(Arc::new(TlsIngress {
                    config: certs.server_config(),
                    certs,
                })),
            ),
            None => (None, None),
        };
        loop {
            // One loop takes a slot and then accepts from whichever listener is ready:
            // one loop per listener would each hold a slot while idle, and with a budget
            // of one, starve the other.
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                return;
            };
            let (accepted, tls) = tokio::select! {
                a = plain.accept() => (a, None),
                a = accept_some(https.as_ref()) => (a, tls.clone()),
            };
            match accepted {
                Ok((socket, viewer)) => {
                    let ingress = self.clone();
                    tokio::spawn(async move {
                        let _ = socket.set_nodelay(true);
                        match tls {
                            None => {
                                let conn = ViewerConn::new(viewer, None);
                                ingress.serve_io(socket, conn).await;
                            }
                            Some(tls) => ingress.serve_tls_connection(socket, viewer, &tls).await,
                        }
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

    async fn serve_tls_connection(
        &self,
        mut socket: tokio::net::TcpStream,
        viewer: SocketAddr,
        tls: &TlsIngress,
    ) {
        let limit = self.config.tls_handshake_timeout;
        let hello = match tokio::time::timeout(limit, tls::read_client_hello(&mut socket)).await {
            Ok(Ok(hello)) => hello,
            Ok(Err(e)) => {
                tracing::debug!(%viewer, error = %e, "TLS viewer refused");
                return;
            }
            Err(_) => {
                tracing::debug!(%viewer, "TLS viewer sent no hello in time");
                return;
            }
        };
        let sni = hello.sni.clone();
        if let Some(name) = sni
            .as_deref()
            .and_then(|s| host::tunnel_name(s, self.registry.domain()))
            && let Some(Route::Tls(tunnel)) = self.registry.route(&name)
        {
            tunnel.forward(socket, viewer, hello.bytes).await;
            return;
        }
        // Only the names of tunnels are made ready (an ACME order): a viewer inventing
        // names under the domain must not spend the Edge's orders. A TLS-ALPN-01
        // validation must not wait for the order it is part of.
        let routed = sni
            .as_deref()
            .and_then(|s| host::tunnel_name(s, self.registry.domain()))
            .is_some_and(|name| self.registry.route(&name).is_some());
        if let Some(sni) = &sni
            && routed
            && !hello.acme_tls_alpn
        {
            tls.certs.prepare(sni).await;
        }
        // Without a name, or with one outside the Edge's domain, the resolver has no
        // certificate and the handshake ends with an alert.
        let handshake = tls::handshake(socket, hello, tls.config.clone());
        let stream = match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%viewer, ?sni, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%viewer, ?sni, "TLS handshake timed out");
                return;
            }
        };
        let Some(sni) = sni else { return };
        if stream.get_ref().1.alpn_protocol() == Some(crate::certs::ACME_TLS_ALPN) {
            // The validation ends with the handshake (RFC 8737, section 3).
            tracing::info!(%viewer, %sni, "TLS-ALPN-01 validation handshake answered");
            return;
        }
        let conn = ViewerConn::new(viewer, Some(sni.into()));
        self.serve_io(stream, conn).await;
    }

    /// Serves HTTP/1.1 or h2 (told apart by the h2 preface, which ALPN's choice
    /// implies) on one connection.
    async fn serve_io<I>(&self, io: I, conn: ViewerConn)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let viewer = conn.viewer;
        let conn = Arc::new(conn);
        let registry = self.registry.clone();
        let config = self.config.clone();
        let service = hyper::service::service_fn(move |request| {
            let registry = registry.clone();
            let config = config.clone();
            let conn = conn.clone();
            async move {
                Ok::<_, std::convert::Infallible>(handle(request, &conn, &registry, &config).await)
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_timeout);
        if let Err(e) = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .await
        {
            tracing::debug!(%viewer, error = %e, "viewer connection ended with an error");
        }
    }
}

/// Accepts from `listener`, or waits forever when there is none.
async fn accept_some(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves plain-HTTP viewers on `listener` forever.
pub async fn serve(listener: TcpListener, registry: Registry, config: IngressConfig) {
    Ingress::new(registry, config).serve(listener).await;
}

/// Answers one viewer request.
pub async fn handle(
    request: Request<Incoming>,
    conn: &ViewerConn,
    registry: &Registry,
    config: &IngressConfig,
) -> Response<ViewerBody> {
    if conn.tls_name.is_none()
        && let Some(challenges) = &config.acme_challenges
        && let Some(answer) = acme_challenge(challenges, &request)
    {
        return answer;
    }
    let target = request.uri().authority().map(|a| a.as_str().as_bytes());
    let hosts = request.headers().get_all(header::HOST).iter();
    let authority = match host::request_authority(target, hosts.map(HeaderValue::as_bytes)) {
        Ok(authority) => authority,
        Err(e @ (AuthorityError::Duplicate | AuthorityError::Mismatch)) => {
            return page(Failure::ambiguous_host(&e.to_string()), &request);
        }
        Err(_) => return page(Failure::bad_host(), &request),
    };
    // A connection set up for one name serves that name only: a browser reusing it
    // for another host (h2 coalescing under a wildcard certificate) must not reach
    // another tenant's tunnel.
    if let Some(sni) = &conn.tls_name
        && authority.hostname() != &**sni
    {
        return page(Failure::misdirected(authority.as_str(), sni), &request);
    }
    let Some(name) = host::tunnel_label(authority.hostname(), registry.domain()) else {
        return page(Failure::no_tunnel(authority.as_str()), &request);
    };
    if conn.tls_name.is_none()
        && let Some(port) = config.redirect_https_port
    {
        return redirect_to_https(authority.hostname(), port, &request);
    }
    let proto = if conn.tls_name.is_some() {
        "https"
    } else {
        "http"
    };
    let host = authority.as_str();
    match registry.route(name) {
        // A TLS tunnel's name is served only as TLS, by the HTTPS listener's
        // passthrough: never through an HTTP request.
        None | Some(Route::Tls(_)) => page(Failure::no_tunnel(host), &request),
        Some(Route::Offline) => page(Failure::agent_offline(host), &request),
        Some(Route::Online(tunnel)) => forward(request, conn, host, proto, &tunnel, config).await,
    }
}

/// The key authorization of a pending HTTP-01 challenge, when `request` fetches
/// one; any other token falls through to routing (an origin may answer its own).
fn acme_challenge(
    challenges: &crate::acme::Http01Challenges,
    request: &Request<Incoming>,
) -> Option<Response<ViewerBody>> {
    let token = request
        .uri()
        .path()
        .strip_prefix(crate::acme::HTTP01_PREFIX)?;
    let body = challenges.respond(token)?;
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(response)
}

/// `308 Permanent Redirect` to the same path on HTTPS (method and body kept), on
/// canonical `hostname`.
fn redirect_to_https(
    hostname: &str,
    port: u16,
    request: &Request<Incoming>,
) -> Response<ViewerBody> {
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{hostname}{port}{path}");
    let Ok(location) = HeaderValue::from_str(&location) else {
        return page(Failure::bad_host(), request);
    };
    let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    response
}

fn page(failure: Failure, request: &Request<Incoming>) -> Response<ViewerBody> {
    failure.into_response(request.headers()).map(Either::Right)
}

async fn forward(
    mut request: Request<Incoming>,
    conn: &ViewerConn,
    host: &str,
    proto: &'static str,
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
    // `host` is the request's one canonical authority: the origin gets it as its only
    // `Host`.
    let cx = ForwardContext {
        viewer: &conn.viewer_ip,
        agent: (!config.mask_agent_ip).then(|| tunnel.agent_ip()),
        host,
        proto,
    };
    headers::prepare_request(request.headers_mut(), &cx, upgrade);
    // Upstream is HTTP/1.1 in origin form, whatever the viewer spoke.
    *request.version_mut() = hyper::Version::HTTP_11;
    if let Some(pq) = request.uri().path_and_query().cloned() {
        *request.uri_mut() = hyper::Uri::from(pq);
    }
    let mut response = match tunnel.send(request, conn.viewer).await {
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
        // Said by the agent before any origin byte: no origin can forge it.
        Err(UpstreamError::OriginUnreachable(message)) => {
            return failure_page(Failure::origin_unreachable(message));
        }
    };
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
