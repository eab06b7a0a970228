//! HTTP ingress: viewers speak HTTP/1.1 or h2c to the Edge, or either over TLS
//! (HTTPS, h2 and HTTP/1.1 by ALPN, certificates from [`crate::certs`]); the Edge
//! routes each request by host name to its tunnel and forwards it over a pooled
//! HTTP/1.1 connection through the agent. Bodies stream both ways with the mux's flow
//! control as backpressure; WebSocket upgrades pass through as a byte pipe.

pub mod agent_stream;
pub mod body;
pub mod deadline;
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
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::certs::CertManager;
use crate::drain::{Drain, Work};
use crate::limits::{Refused, ViewerLimits, ViewerSlot};
use crate::proxy_protocol::ProxyProtocol;
use crate::registry::{Registry, Route};
pub use body::ViewerBody;
use body::{InFlight, Streams};
use deadline::Timeouts;
use headers::ForwardContext;
use host::AuthorityError;
use pages::Failure;
use upstream::{HttpTunnel, UpstreamError};

/// Default of [`IngressConfig::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Default of [`IngressConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`IngressConfig::upgrade_idle_timeout`].
pub const DEFAULT_UPGRADE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default of [`IngressConfig::h2_keepalive`].
pub const DEFAULT_H2_KEEPALIVE: Duration = Duration::from_secs(30);
/// Default of [`IngressConfig::tls_handshake_timeout`].
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a plain-HTTP viewer over its address's connection cap is sent, in one
/// non-blocking write, before its connection is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
x-netbore-error: too_many_connections\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Settings of HTTP ingress.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Keep the agent's address out of every header (`--mask-agent-ip`).
    pub mask_agent_ip: bool,
    /// How long a viewer may take to send a request's head, and, from the moment
    /// its connection is accepted (after TLS, when there is TLS), to start its first
    /// request: version detection and the h2 preface included. Stops slow-header
    /// (slowloris) and silent viewers from holding connections.
    pub header_timeout: Duration,
    /// How long a connection may stay without a request in flight (HTTP/1.1
    /// keep-alive and h2 alike) before the Edge closes it. Stops idle connections
    /// from holding slots.
    pub idle_timeout: Duration,
    /// How long a switched-protocol connection (WebSocket) may pass no byte either
    /// way before the Edge closes it. Stops idle upgraded connections from holding
    /// slots and streams forever.
    pub upgrade_idle_timeout: Duration,
    /// Interval of h2 keep-alive pings, and how long each may wait for its
    /// acknowledgement. Stops a vanished h2 viewer from holding its requests.
    pub h2_keepalive: Duration,
    /// The viewer budget (connections in all and per address, streams per address
    /// and per tunnel), shared with TCP tunnels. Over the global cap, further
    /// connections wait in the listen queue; over any other, they are refused.
    pub limits: ViewerLimits,
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
    /// PROXY protocol v2 from trusted proxies on the HTTP and HTTPS listeners
    /// (`--proxy-protocol`); `None` reads no header from anyone.
    pub proxy_protocol: Option<ProxyProtocol>,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            mask_agent_ip: false,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            upgrade_idle_timeout: DEFAULT_UPGRADE_IDLE_TIMEOUT,
            h2_keepalive: DEFAULT_H2_KEEPALIVE,
            limits: ViewerLimits::default(),
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            redirect_https_port: None,
            acme_challenges: None,
            proxy_protocol: None,
        }
    }
}

/// What the Edge knows about the viewer connection a request came on. It holds the
/// connection's slot of the viewer budget, so the slot is released only when the
/// connection, every request on it and any protocol switch it made have ended.
#[derive(Debug)]
pub struct ViewerConn {
    /// The viewer's address.
    pub viewer: SocketAddr,
    /// The SNI name of the TLS handshake, lowercase; `None` on plain HTTP.
    pub tls_name: Option<Arc<str>>,
    /// The viewer's IP address as a header value, made once for all its requests.
    pub viewer_ip: HeaderValue,
    /// Requests in flight, for the connection's deadlines.
    pub(crate) activity: deadline::Activity,
    slot: ViewerSlot,
    /// Counted as work a draining node waits for.
    work: Work,
}

impl ViewerConn {
    /// A viewer connection from `viewer` holding `slot` and counted as `work`, over
    /// TLS for `tls_name` when given.
    pub fn new(
        viewer: SocketAddr,
        tls_name: Option<Arc<str>>,
        slot: ViewerSlot,
        work: Work,
    ) -> Self {
        ViewerConn {
            viewer,
            tls_name,
            viewer_ip: headers::ip_header(viewer.ip()),
            activity: deadline::Activity::default(),
            slot,
            work,
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
    drain: Drain,
}

impl Ingress {
    /// Ingress routing by `registry`, its connections counted by and closing with
    /// `drain`.
    pub fn new(registry: Registry, config: IngressConfig, drain: Drain) -> Self {
        Ingress {
            registry,
            config: Arc::new(config),
            drain,
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
            let Some(permit) = self.config.limits.acquire().await else {
                return;
            };
            let (accepted, tls) = tokio::select! {
                a = plain.accept() => (a, None),
                a = accept_some(https.as_ref()) => (a, tls.clone()),
            };
            match accepted {
                Ok((socket, peer)) => {
                    let ingress = self.clone();
                    let proxied = self.config.proxy_protocol.as_ref();
                    if let Some(proxy_protocol) = proxied.filter(|p| p.expects_header(peer.ip())) {
                        // The global slot is held while the header is read; the
                        // address's share is the viewer's, once it is named.
                        let proxy_protocol = proxy_protocol.clone();
                        tokio::spawn(async move {
                            let mut socket = socket;
                            let viewer = match proxy_protocol.viewer(&mut socket, peer).await {
                                Ok(viewer) => viewer,
                                Err(e) => {
                                    tracing::debug!(proxy = %peer, error = %e, "PROXY header refused; connection closed");
                                    return;
                                }
                            };
                            let slot = match ingress.config.limits.admit(permit, viewer.ip()) {
                                Ok(slot) => slot,
                                Err(e) => return refuse(&socket, viewer, e, tls.is_none()),
                            };
                            let work = ingress.drain.work();
                            match tls {
                                None => ingress.serve_plain(socket, viewer, slot, work).await,
                                // Boxed: plain connections behind the proxy stay small.
                                Some(tls) => {
                                    Box::pin(ingress.serve_tls(socket, viewer, slot, work, tls))
                                        .await
                                }
                            }
                        });
                        continue;
                    }
                    let slot = match self.config.limits.admit(permit, peer.ip()) {
                        Ok(slot) => slot,
                        Err(e) => {
                            refuse(&socket, peer, e, tls.is_none());
                            continue;
                        }
                    };
                    let work = self.drain.work();
                    // A task the size of its own kind of connection, plain or TLS.
                    match tls {
                        None => tokio::spawn(ingress.serve_plain(socket, peer, slot, work)),
                        Some(tls) => tokio::spawn(ingress.serve_tls(socket, peer, slot, work, tls)),
                    };
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a viewer failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Serves one plain-HTTP viewer connection holding `slot`, counted as `work`.
    async fn serve_plain(
        self,
        socket: TcpStream,
        viewer: SocketAddr,
        slot: ViewerSlot,
        work: Work,
    ) {
        let _ = socket.set_nodelay(true);
        let _counted =
            netbore_metrics::server().viewer_connection(netbore_metrics::ViewerProtocol::Http);
        let conn = ViewerConn::new(viewer, None, slot, work);
        self.serve_io(socket, conn).await;
    }

    /// Serves one TLS viewer connection (HTTPS, or passthrough to a TLS tunnel)
    /// holding `slot`, counted as `work`.
    async fn serve_tls(
        self,
        socket: TcpStream,
        viewer: SocketAddr,
        slot: ViewerSlot,
        work: Work,
        tls: Arc<TlsIngress>,
    ) {
        let _ = socket.set_nodelay(true);
        self.serve_tls_connection(socket, viewer, slot, work, &tls)
            .await
    }

    /// The TLS passthrough tunnel `name`, served here or by another node.
    async fn tls_route(&self, name: &str) -> Option<Arc<crate::tls_tunnel::TlsTunnel>> {
        match self.registry.route(name) {
            Some(Route::Tls(tunnel)) => Some(tunnel),
            Some(Route::Online(_)) => None,
            // Boxed: the link's dial would otherwise sit in every connection's future.
            _ => Box::pin(self.registry.remote()?.tls(name)).await,
        }
    }

    async fn serve_tls_connection(
        &self,
        mut socket: TcpStream,
        viewer: SocketAddr,
        slot: ViewerSlot,
        work: Work,
        tls: &TlsIngress,
    ) {
        let limit = self.config.tls_handshake_timeout;
        // The hello's read and the handshake are boxed: their state is large and
        // short-lived, and the connection's task would otherwise keep its size.
        let hello = match tokio::time::timeout(limit, Box::pin(tls::read_client_hello(&mut socket)))
            .await
        {
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
            && let Some(tunnel) = self.tls_route(&name).await
        {
            let max = slot.caps().max_streams_per_tunnel;
            let (Some(_client), Some(_tunnel)) = (slot.try_stream(), tunnel.try_stream(max)) else {
                tracing::debug!(tunnel_id = tunnel.tunnel_id(), %viewer, tunnel = %name, "TLS viewer over a stream cap; closed");
                return;
            };
            tunnel.forward(socket, viewer, hello.bytes).await;
            return;
        }
        // Only the names of tunnels are made ready (an ACME order): a viewer inventing
        // names under the domain must not spend the Edge's orders. A TLS-ALPN-01
        // validation must not wait for the order it is part of.
        let routed = sni
            .as_deref()
            .and_then(|s| host::tunnel_name(s, self.registry.domain()))
            .is_some_and(|name| self.registry.serves_somewhere(&name));
        if let Some(sni) = &sni
            && routed
        {
            // Boxed: an ACME order may run inside, and is rare.
            if hello.acme_tls_alpn {
                // A validation of an order another node of the fleet placed.
                Box::pin(tls.certs.prepare_alpn(sni)).await;
            } else {
                Box::pin(tls.certs.prepare(sni)).await;
            }
        }
        // Without a name, or with one outside the Edge's domain, the resolver has no
        // certificate and the handshake ends with an alert.
        let handshake = Box::pin(tls::handshake(socket, hello, tls.config.clone()));
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
        let _counted =
            netbore_metrics::server().viewer_connection(netbore_metrics::ViewerProtocol::Https);
        let conn = ViewerConn::new(viewer, Some(sni.into()), slot, work);
        // Boxed: a passthrough viewer's task need not be the size of an HTTPS one.
        Box::pin(self.serve_io(stream, conn)).await;
    }

    /// Serves HTTP/1.1 or h2 (told apart by the h2 preface, which ALPN's choice
    /// implies) on one connection.
    async fn serve_io<I>(&self, io: I, conn: ViewerConn)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let viewer = conn.viewer;
        let conn = Arc::new(conn);
        // One reference per connection to what every request reads: a request then
        // takes one reference count of its connection's, not one of each table the
        // registry shares with every other connection (whose counts the cores would
        // pass back and forth).
        let shared = Arc::new((self.registry.clone(), self.config.clone()));
        let service_conn = conn.clone();
        let service = hyper::service::service_fn(move |request| {
            let shared = shared.clone();
            let request_in_flight = InFlight::begin(service_conn.clone());
            let conn = service_conn.clone();
            let h1 = request.version() < hyper::Version::HTTP_2;
            if !h1 {
                conn.activity.set_h2();
            }
            async move {
                let (registry, config) = &*shared;
                let mut response = handle(request, &conn, registry, config).await;
                if h1
                    && conn.work.is_draining()
                    && response.status() != StatusCode::SWITCHING_PROTOCOLS
                {
                    // The node drains: this connection ends with this answer.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| body.ending(request_in_flight)),
                )
            }
        });
        let config = &self.config;
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(config.h2_keepalive)
            .keep_alive_timeout(config.h2_keepalive);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let timeouts = Timeouts {
            first_request: config.header_timeout,
            idle: config.idle_timeout,
        };
        let driven = deadline::drive(connection, &conn.activity, timeouts, &self.drain, |c| {
            c.graceful_shutdown();
        });
        match driven.await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::debug!(%viewer, error = %e, "viewer connection ended with an error");
            }
            None => tracing::debug!(%viewer, "viewer connection closed at its deadline"),
        }
    }
}

/// Closes the connection of a viewer over a cap at once; a plain-HTTP one is first
/// offered a 503 in one write that never waits (nothing is buffered for it).
fn refuse(socket: &TcpStream, viewer: SocketAddr, why: Refused, plain: bool) {
    tracing::debug!(%viewer, reason = %why, "viewer connection refused");
    if plain {
        let _ = socket.try_write(TOO_MANY_CONNECTIONS);
    }
}

/// Accepts from `listener`, or waits forever when there is none.
async fn accept_some(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves plain-HTTP viewers on `listener` forever.
pub async fn serve(listener: TcpListener, registry: Registry, config: IngressConfig) {
    Ingress::new(registry, config, Drain::default())
        .serve(listener)
        .await;
}

/// Answers one viewer request.
pub async fn handle(
    request: Request<Incoming>,
    conn: &Arc<ViewerConn>,
    registry: &Registry,
    config: &IngressConfig,
) -> Response<ViewerBody> {
    if conn.tls_name.is_none()
        && let Some(challenges) = &config.acme_challenges
        && let Some(answer) = acme_challenge(challenges, &request).await
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
    let local = registry.route(name);
    if let Some(Route::Online(tunnel)) = &local {
        return forward(request, conn, host, proto, tunnel, None, config).await;
    }
    // Not served here: another node of the fleet may hold it.
    if !matches!(local, Some(Route::Tls(_)))
        && let Some(remote) = registry.remote()
        // Boxed, and built only when the cache has no live holder: the link's dial
        // (TLS and all) would otherwise be part of every request's future.
        && let Some(tunnel) = match remote.http_cached(name) {
            Some(tunnel) => Some(tunnel),
            None => Box::pin(remote.http(name)).await,
        }
    {
        return forward(request, conn, host, proto, &tunnel, Some(remote), config).await;
    }
    match local {
        // A TLS tunnel's name is served only as TLS, by the HTTPS listener's
        // passthrough: never through an HTTP request.
        None | Some(Route::Tls(_)) => page(Failure::no_tunnel(host), &request),
        Some(Route::Offline) | Some(Route::Online(_)) => {
            page(Failure::agent_offline(host), &request)
        }
    }
}

/// The key authorization of a pending HTTP-01 challenge (this node's, or in a
/// fleet another node's), when `request` fetches one; any other token falls through
/// to routing (an origin may answer its own).
async fn acme_challenge(
    challenges: &crate::acme::Http01Challenges,
    request: &Request<Incoming>,
) -> Option<Response<ViewerBody>> {
    let token = request
        .uri()
        .path()
        .strip_prefix(crate::acme::HTTP01_PREFIX)?;
    let body = challenges.answer(token).await?;
    let mut response = Response::new(ViewerBody::page(Full::new(Bytes::from(body))));
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
    let mut response = Response::new(ViewerBody::page(Full::new(Bytes::new())));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    response
}

fn page(failure: Failure, request: &Request<Incoming>) -> Response<ViewerBody> {
    failure
        .into_response(request.headers())
        .map(ViewerBody::page)
}

/// Forwards one request ([`forward_request`]) and counts it: every answer to the tunnel's viewers (the
/// Edge's own error pages too) by status class, and the time to its head.
async fn forward(
    request: Request<Incoming>,
    conn: &Arc<ViewerConn>,
    host: &str,
    proto: &'static str,
    tunnel: &Arc<HttpTunnel>,
    remote: Option<&crate::fleet::remote::Remote>,
    config: &IngressConfig,
) -> Response<ViewerBody> {
    let started = std::time::Instant::now();
    let response = forward_request(request, conn, host, proto, tunnel, remote, config).await;
    tunnel
        .stats()
        .request(response.status().as_u16(), started.elapsed());
    response
}

async fn forward_request(
    mut request: Request<Incoming>,
    conn: &Arc<ViewerConn>,
    host: &str,
    proto: &'static str,
    tunnel: &Arc<HttpTunnel>,
    remote: Option<&crate::fleet::remote::Remote>,
    config: &IngressConfig,
) -> Response<ViewerBody> {
    let accept = request.headers().get(header::ACCEPT).cloned();
    let failure_page = |failure: Failure| {
        let mut h = hyper::HeaderMap::new();
        if let Some(a) = accept.clone() {
            h.insert(header::ACCEPT, a);
        }
        failure.into_response(&h).map(ViewerBody::page)
    };
    let caps = conn.slot.caps();
    let Some(tunnel_stream) = tunnel.try_stream(caps.max_streams_per_tunnel) else {
        return failure_page(Failure::tunnel_busy(host, caps.max_streams_per_tunnel));
    };
    let Some(client_stream) = conn.slot.try_stream() else {
        return failure_page(Failure::viewer_busy(caps.max_streams_per_ip));
    };
    let streams = Streams {
        tunnel: tunnel_stream,
        client: client_stream,
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
    let mut sent = tunnel.send(request, conn.viewer).await;
    // The node holding the tunnel went away under the request: another node holding
    // the same tunnel (its agent's other session) gets it, once.
    if let (Err(UpstreamError::LinkLost(_)), Some(remote)) = (&sent, remote)
        && let Err(UpstreamError::LinkLost(resend)) = sent
    {
        sent = match Box::pin(remote.http_instead(tunnel.name(), tunnel)).await {
            Some(next) => Box::pin(next.resend(resend, conn.viewer)).await,
            None => Err(UpstreamError::AgentOffline("no other node holds it".into())),
        };
    }
    let mut response = match sent {
        Ok(r) => r,
        Err(
            UpstreamError::AgentOffline(_) | UpstreamError::LinkLost(_) | UpstreamError::NotHeld(_),
        ) => {
            return failure_page(Failure::agent_offline(host));
        }
        Err(UpstreamError::Timeout(after)) => return failure_page(Failure::origin_timeout(after)),
        Err(UpstreamError::Busy(netbore_transport::Busy::Memory)) => {
            return failure_page(Failure::edge_busy());
        }
        Err(UpstreamError::Busy(netbore_transport::Busy::Streams)) => {
            return failure_page(Failure::agent_busy(host));
        }
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
    let mut streams = Some(streams);
    if switching {
        match viewer_upgrade {
            Some(viewer_upgrade) => {
                let origin_upgrade = hyper::upgrade::on(&mut response);
                // The pipe holds the request (so the connection's slot and deadline
                // wait for it) and its streams until it ends.
                let held = (InFlight::begin(conn.clone()), streams.take());
                let idle = config.upgrade_idle_timeout;
                tokio::spawn(splice_upgraded(viewer_upgrade, origin_upgrade, idle, held));
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
    response.map(|body| ViewerBody::origin(body, streams))
}

/// Pipes a switched-protocol connection (WebSocket) between viewer and origin until
/// both close or no byte has moved for `idle`; `held` is released at the end.
async fn splice_upgraded(
    viewer: hyper::upgrade::OnUpgrade,
    origin: hyper::upgrade::OnUpgrade,
    idle: Duration,
    held: (InFlight, Option<Streams>),
) {
    let (viewer, origin) = match tokio::try_join!(viewer, origin) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "a protocol switch did not complete");
            return;
        }
    };
    let viewer = TokioIo::new(viewer);
    let mut origin = TokioIo::new(origin);
    match deadline::splice_until_idle(viewer, &mut origin, idle).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!(?idle, "an upgraded connection was idle; closed"),
        Err(e) => tracing::debug!(error = %e, "an upgraded connection ended with an error"),
    }
    drop(held);
}

#[cfg(test)]
mod size_tests {
    use crate::future_size::{PER_CONNECTION_MAX, of5, of6};

    #[test]
    fn a_viewer_connection_task_is_small() {
        let plain = of5(super::Ingress::serve_plain);
        assert!(
            plain <= PER_CONNECTION_MAX,
            "a plain HTTP viewer connection's task takes {plain} bytes; box the rare path that made it grow"
        );
        let tls = of6(super::Ingress::serve_tls);
        assert!(
            tls <= PER_CONNECTION_MAX,
            "a TLS viewer connection's task takes {tls} bytes; box the rare path that made it grow"
        );
    }
}
