//! The `ws`/`wss` transports: the Netbore mux as a byte stream over WebSocket binary
//! messages. [`WsIo`] turns a WebSocket into `AsyncRead + AsyncWrite` so the mux runs
//! over it unchanged.
//!
//! Mapping: each write becomes one binary message of at most [`MAX_WRITE_MESSAGE`]
//! bytes; reads concatenate binary message payloads in order (message boundaries mean
//! nothing). Pings are answered by the WebSocket layer; a close message or the end of
//! the connection reads as end of stream; a text message is a protocol error.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, http};

/// The request path of the agent's WebSocket upgrade.
pub const WS_PATH: &str = "/_netbore/agent";

/// Largest binary message a write produces. Larger writes are split; the mux sees a
/// short write and sends the rest next.
pub const MAX_WRITE_MESSAGE: usize = 256 * 1024;

/// Largest message (and frame) accepted from the peer. Bounds what one message makes
/// the receiver buffer before the mux sees a byte; four times [`MAX_WRITE_MESSAGE`]
/// leaves room for peers that write larger messages.
pub const MAX_READ_MESSAGE: usize = 1024 * 1024;

/// The WebSocket settings both ends use.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_READ_MESSAGE))
        .max_frame_size(Some(MAX_READ_MESSAGE))
}

/// A WebSocket as a byte stream (see the module docs for the mapping).
#[derive(Debug)]
pub struct WsIo<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    pending: Bytes,
    /// The peer closed, or the connection ended.
    eof: bool,
}

impl<S> WsIo<S> {
    /// Wraps an established WebSocket.
    pub fn new(inner: WebSocketStream<S>) -> Self {
        WsIo {
            inner,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                // The WebSocket layer queues the pong itself and sends it on the next
                // read or write.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer sent a WebSocket text message; Netbore carries binary messages only",
                    )));
                }
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => self.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsIo<S> {
    /// Sends `data` as one binary message once the WebSocket can take it.
    fn poll_send(&mut self, cx: &mut Context<'_>, data: Bytes) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(data))
            .map_err(to_io)?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_ready(cx)).map_err(to_io)?;
        let n = buf.len().min(MAX_WRITE_MESSAGE);
        ready!(this.poll_send(cx, Bytes::copy_from_slice(&buf[..n])))?;
        Poll::Ready(Ok(n))
    }

    /// Gathers the slices (a mux frame header and its payload, typically) into one
    /// message instead of one message a slice.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_ready(cx)).map_err(to_io)?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut message = BytesMut::with_capacity(total.min(MAX_WRITE_MESSAGE));
        for b in bufs {
            let room = MAX_WRITE_MESSAGE - message.len();
            if room == 0 {
                break;
            }
            message.extend_from_slice(&b[..b.len().min(room)]);
        }
        let n = message.len();
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        ready!(this.poll_send(cx, message.freeze()))?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.inner).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}

/// The client side of the upgrade: `GET WS_PATH` to `host` (`HOST:PORT`) over `io`.
pub async fn client_handshake<S>(io: S, secure: bool, host: &str) -> Result<WsIo<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let scheme = if secure { "wss" } else { "ws" };
    let url = format!("{scheme}://{host}{WS_PATH}");
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(url, io, Some(ws_config())).await?;
    Ok(WsIo::new(ws))
}

/// The server side of the upgrade: accepts `GET WS_PATH` and answers 404 to any other
/// path.
pub async fn server_handshake<S>(io: S) -> Result<WsIo<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The callback's signature is tungstenite's; the large error is its response type.
    #[allow(clippy::result_large_err)]
    let check_path = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == WS_PATH {
            Ok(resp)
        } else {
            let mut not_found = ErrorResponse::new(Some(format!(
                "Netbore agents connect to {WS_PATH}; nothing else is served here\n"
            )));
            *not_found.status_mut() = http::StatusCode::NOT_FOUND;
            Err(not_found)
        }
    };
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(io, check_path, Some(ws_config())).await?;
    Ok(WsIo::new(ws))
}
