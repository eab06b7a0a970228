//! A real HTTP origin for tests (hyper on loopback) and a small HTTP client.
//!
//! Origin routes:
//! - `/echo`: streams the request body back as the response body;
//! - `/sink`: reads the body and answers `LEN HASH` ([`Checksum`]);
//! - `/headers`: the request headers as a JSON object (values joined by `\n`);
//! - `/bytes/N`: N bytes of [`chunk_pattern`] repeated, streamed in 64 KiB chunks;
//! - `/sse`: five server-sent events, 300 ms apart;
//! - `/slow/MS`: answers after MS milliseconds;
//! - `/connections`: how many TCP connections the origin has accepted;
//! - `/status/N`: an answer with status N;
//! - `/ws`: a WebSocket echo;
//! - anything else: `hello` with the path.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use netbore_test_support::Checksum;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// 64 KiB of a fixed pattern that `/bytes/N` repeats.
pub fn chunk_pattern() -> Bytes {
    Bytes::from(
        (0..64 * 1024u32)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// A running origin.
pub struct Origin {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the origin on `127.0.0.1:0`.
pub async fn start_origin() -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let count = connections.clone();
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            let count = count.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let count = count.clone();
                    async move { Ok::<_, Infallible>(route(req, count).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Origin {
        addr,
        connections,
        task,
    }
}

type OriginBody = Either<Incoming, Either<Full<Bytes>, Either<PatternBody, ChannelBody>>>;

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<OriginBody> {
    let mut r = Response::new(Either::Right(Either::Left(Full::new(body.into()))));
    *r.status_mut() = status;
    r
}

async fn route(mut req: Request<Incoming>, count: Arc<AtomicU64>) -> Response<OriginBody> {
    let path = req.uri().path().to_string();
    if path == "/echo" {
        return Response::new(Either::Left(req.into_body()));
    }
    if path == "/sink" {
        // Reads the whole body; answers its length and checksum.
        let mut sum = Checksum::default();
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        sum.update(&data);
                    }
                }
                Err(_) => return full(StatusCode::BAD_REQUEST, "body broke"),
            }
        }
        return full(StatusCode::OK, format!("{} {:x}", sum.len, sum.hash));
    }
    if path == "/headers" {
        let mut map = serde_json::Map::new();
        for name in req.headers().keys() {
            let values: Vec<&str> = req
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or("?"))
                .collect();
            map.insert(name.to_string(), values.join("\n").into());
        }
        return full(StatusCode::OK, serde_json::Value::Object(map).to_string());
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: u64 = n.parse().unwrap_or(0);
        let mut r = Response::new(Either::Right(Either::Right(Either::Left(PatternBody {
            left: n,
            chunk: chunk_pattern(),
        }))));
        r.headers_mut()
            .insert("content-length", n.to_string().parse().unwrap());
        return r;
    }
    if path == "/sse" {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            for i in 0..5 {
                let event = format!("data: event {i}\n\n");
                if tx.send(Bytes::from(event)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let mut r = Response::new(Either::Right(Either::Right(Either::Right(ChannelBody {
            rx,
        }))));
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return r;
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        return full(StatusCode::OK, "slow answer");
    }
    if path == "/connections" {
        return full(StatusCode::OK, count.load(Ordering::Relaxed).to_string());
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
        return full(status.unwrap_or(StatusCode::BAD_REQUEST), "as asked");
    }
    if path == "/ws" {
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            return full(StatusCode::BAD_REQUEST, "not a websocket request");
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(io) = upgrade.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(io),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    if ws.send(msg).await.is_err() {
                        return;
                    }
                } else if msg.is_close() {
                    return;
                }
            }
        });
        let mut r = full(StatusCode::SWITCHING_PROTOCOLS, "");
        let h = r.headers_mut();
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("sec-websocket-accept", accept.parse().unwrap());
        return r;
    }
    full(StatusCode::OK, format!("hello {path}"))
}

/// `left` bytes of a repeated 64 KiB pattern.
pub struct PatternBody {
    left: u64,
    chunk: Bytes,
}

impl PatternBody {
    /// `len` bytes of [`chunk_pattern`] repeated.
    pub fn new(len: u64) -> Self {
        PatternBody {
            left: len,
            chunk: chunk_pattern(),
        }
    }

    /// The checksum of `len` bytes of the pattern.
    pub fn checksum(len: u64) -> Checksum {
        let chunk = chunk_pattern();
        let mut sum = Checksum::default();
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            sum.update(&chunk[..n]);
            left -= n as u64;
        }
        sum
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

/// A body fed from a channel (for events sent over time).
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// Reads `response` to its end.
    pub async fn from_response(response: Response<Incoming>) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on a new connection to `addr`, with `Host: host`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    request_on(stream, method, host, path, headers, body).await
}

/// One HTTP/1.1 request on `stream`, a connection already open (plain TCP or TLS),
/// with `Host: host`.
pub async fn request_on<S>(
    stream: S,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut sender = http1_on(stream).await;
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = sender
        .send_request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    Reply::from_response(response).await
}

/// An HTTP/1.1 client connection to `addr`, driven in the background.
pub async fn connect_http1<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    http1_on(TcpStream::connect(addr).await.unwrap()).await
}

/// An HTTP/1.1 client connection on `stream`, driven in the background.
async fn http1_on<S, B>(stream: S) -> hyper::client::conn::http1::SendRequest<B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

/// `GET path` with `Host: host`.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    request(addr, "GET", host, path, &[], Bytes::new()).await
}
