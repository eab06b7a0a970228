//! Serving the control API on its port: HTTPS for every client, plain HTTP only for
//! clients on the same machine (loopback) unless the operator allows it everywhere,
//! so API keys and recreate tokens never cross a network in clear text by default.
//! The first byte of a connection tells the two apart (a TLS record starts with
//! `0x16`; an HTTP request with a letter).
//!
//! Everything a client can make the server hold is bounded: connections in all and
//! per client address (an IPv6 client by its /64), the time to send the first byte,
//! the TLS handshake and the request head, and the time the whole exchange may take,
//! body included. One request per connection: agents make one call and go, and an
//! idle keep-alive connection would hold a slot for nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::rate::client_key;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// How the control API is served.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The certificate HTTPS clients see (ALPN is set to `http/1.1` here). Without it
    /// only plain HTTP is served (and only to loopback clients unless
    /// `insecure_http`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Serve plain HTTP to clients on any address, not only loopback: their API keys
    /// cross the network readable by anyone on the path (`--insecure-http-control`).
    pub insecure_http: bool,
    /// Connections served at once. Stops a flood of connections from taking every
    /// descriptor of the process.
    pub max_connections: usize,
    /// Connections one client address (IPv6: one /64) may hold at once. Stops one
    /// client from taking every slot of `max_connections`.
    pub max_connections_per_ip: usize,
    /// Time a client has to send its first byte, again to finish the TLS handshake,
    /// and again to send its request head. Stops slowloris clients.
    pub header_timeout: Duration,
    /// Time the whole exchange may take, request body and answer included. Stops a
    /// client that trickles its body.
    pub request_timeout: Duration,
}

/// Default of [`ServeConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of [`ServeConfig::max_connections_per_ip`].
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 32;
/// Default of [`ServeConfig::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`ServeConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            tls: None,
            insecure_http: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// Connections held per client address, released when a [`Slot`] drops.
#[derive(Debug, Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

/// One client's hold on a connection slot.
struct Slot {
    clients: Arc<PerClient>,
    key: IpAddr,
}

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let key = client_key(ip);
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            clients: self.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.clients.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// Serves `app` on `listener` until the listener fails. Every connection's task ends
/// within `header_timeout` × 3 + `request_timeout`.
pub async fn serve(listener: TcpListener, app: Router, config: ServeConfig) -> std::io::Result<()> {
    let tls = config.tls.clone().map(|tls| {
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(tls))
    });
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let clients = Arc::new(PerClient::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_transient(&e) => {
                // Out of descriptors or a connection reset before accept: wait for
                // some to close rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "control API at its connection cap; refused one");
            continue;
        };
        let Some(slot) = clients.take(peer.ip(), config.max_connections_per_ip) else {
            tracing::debug!(%peer, "control API client at its connection cap; refused one");
            continue;
        };
        let (app, tls, config) = (app.clone(), tls.clone(), config.clone());
        tokio::spawn(async move {
            connection(stream, peer, app, tls.as_ref(), &config).await;
            drop((slot, permit));
        });
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    !matches!(
        e.kind(),
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::PermissionDenied
    )
}

/// What the control API does with a connection, told by its first byte
/// ([`route_connection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A TLS handshake, and the server has a certificate: HTTPS.
    Tls,
    /// Plain HTTP from a client allowed it (loopback, or any with `insecure_http`).
    Http,
    /// Plain HTTP from another machine: answered with a 400 saying to use HTTPS; the
    /// request is never read.
    RefuseHttp,
    /// A TLS handshake to a server without a certificate: closed without a byte.
    Close,
}

/// Decides what a connection from `peer` whose first byte is `first` gets, on a server
/// with a certificate or not (`has_tls`) that serves plain HTTP to every address or not
/// (`insecure_http`). Only a TLS record (`0x16`) is taken for TLS; everything else is
/// taken for plain HTTP.
pub fn route_connection(first: u8, has_tls: bool, insecure_http: bool, peer: IpAddr) -> Route {
    match (first == TLS_HANDSHAKE, has_tls) {
        (true, true) => Route::Tls,
        (true, false) => Route::Close,
        (false, _) if insecure_http || is_loopback(peer) => Route::Http,
        (false, _) => Route::RefuseHttp,
    }
}

/// Whether `ip` is this machine.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<&TlsAcceptor>,
    config: &ServeConfig,
) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    let first = match tokio::time::timeout(config.header_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => first[0],
        _ => return,
    };
    let app = app.layer(axum::Extension(ConnectInfo(peer)));
    let route = route_connection(first, tls.is_some(), config.insecure_http, peer.ip());
    match (route, tls) {
        (Route::Tls, Some(acceptor)) => {
            let accepted =
                tokio::time::timeout(config.header_timeout, acceptor.accept(stream)).await;
            if let Ok(Ok(tls_stream)) = accepted {
                exchange(TokioIo::new(tls_stream), app, config).await;
            }
        }
        (Route::Tls, None) | (Route::Close, _) => {}
        (Route::Http, _) => exchange(TokioIo::new(stream), app, config).await,
        (Route::RefuseHttp, _) => refuse_plain_http(stream, config).await,
    }
}

/// One request and its answer, under the header and request deadlines.
async fn exchange<I>(io: I, app: Router, config: &ServeConfig)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let serving = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(false)
        .serve_connection(io, service);
    let _ = tokio::time::timeout(config.request_timeout, serving).await;
}

/// Answers a plain-HTTP request from another machine with the error shape, saying to
/// use HTTPS; the request itself is never read.
async fn refuse_plain_http(mut stream: TcpStream, config: &ServeConfig) {
    let body = serde_json::json!({"error": {
        "code": "bad_request",
        "message": "this control API takes HTTPS from other machines so API keys never cross the network in clear text; use https:// in --server",
    }})
    .to_string();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(config.header_timeout, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Read (a bounded amount of) what the client sent, so closing does not reset
        // the connection before it has read the answer.
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        std::io::Result::Ok(())
    })
    .await;
}
