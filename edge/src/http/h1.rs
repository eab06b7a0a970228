//! A lean HTTP/1.1 client for bodiless requests (GET, HEAD, DELETE, OPTIONS, TRACE),
//! most of what viewers send. It writes the request head, reads the response head with
//! `httparse` and frames the body itself, handing on the bytes the stream delivers
//! without copying them. Requests with a body, upgrades and CONNECT stay with hyper.
//!
//! Framing follows RFC 9112 §6.3, strictly: a connection is reused only after a
//! response framed by `Content-Length` or chunked coding was read to its end, on
//! HTTP/1.1 without `Connection: close`. Anything ambiguous (differing lengths, a length
//! beside a transfer coding, bytes past the end of a response) ends the connection, so a
//! response can never be read as part of the next one. Response heads are read by
//! [`head`], chunked bodies decoded by [`chunked`].

mod chunked;
mod head;

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::header;
use hyper::{Method, Request, StatusCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

pub use chunked::{ChunkDecoder, Decoded, MAX_CHUNK_META};
pub use head::{Framing, Head, HeadReader, MAX_HEAD, MAX_HEADERS, MAX_INTERIM, parse_head};

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum H1Error {
    /// The connection ended before the first byte of a response.
    #[error("the connection closed before a response arrived")]
    Closed,
    /// The connection ended in the middle of a response.
    #[error("the response was cut off")]
    Incomplete,
    /// The response head is not valid HTTP/1.1.
    #[error("the response head is not valid HTTP/1.1 ({0})")]
    BadHead(&'static str),
    /// The response head is larger than [`MAX_HEAD`] or has more than [`MAX_HEADERS`]
    /// fields.
    #[error("the response head is larger than the Edge accepts")]
    HeadTooLarge,
    /// `Content-Length` is not one non-negative number.
    #[error("the response's Content-Length is invalid")]
    BadLength,
    /// The chunked body does not follow the chunked coding.
    #[error("the response's chunked body is malformed ({0})")]
    BadChunk(&'static str),
    /// More than [`MAX_INTERIM`] interim (1xx) responses came before a final one.
    #[error("the service sent more than {MAX_INTERIM} interim (1xx) responses")]
    TooManyInterim,
    /// A `101 Switching Protocols` answered a request that asked for no upgrade.
    #[error("the service switched protocols without being asked")]
    UnaskedSwitch,
    /// Reading or writing the stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A stream that hands over what it has received as [`Bytes`], without a copy.
pub trait ReadChunk {
    /// The next chunk; `None` at the end of the stream.
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>>;
}

impl ReadChunk for netbore_transport::Stream {
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        netbore_transport::Stream::poll_read_chunk(self, cx)
    }
}

/// True when `request` is one this client sends: no body, no upgrade, a method that
/// carries no content.
pub fn handles<B: hyper::body::Body>(request: &Request<B>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    ) && request.body().is_end_stream()
        && !request.headers().contains_key(header::UPGRADE)
        && !request.headers().contains_key(header::CONTENT_LENGTH)
        && !request.headers().contains_key(header::TRANSFER_ENCODING)
}

/// Writes `request`'s head (origin form, HTTP/1.1) to `out`.
pub fn encode_head<B>(request: &Request<B>, out: &mut BytesMut) {
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    // Method, space, target, " HTTP/1.1\r\n", the fields, and the final "\r\n".
    out.reserve(request.method().as_str().len() + 1 + target.len() + 11 + fields + 2);
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// One HTTP/1.1 connection: the stream and what was read past the last response head.
#[derive(Debug)]
pub struct Conn<S> {
    io: S,
    /// Bytes received and not yet consumed.
    rest: Bytes,
}

impl<S: ReadChunk + AsyncWrite + Unpin> Conn<S> {
    /// A connection over `io`, with nothing read yet.
    pub fn new(io: S) -> Self {
        Conn {
            io,
            rest: Bytes::new(),
        }
    }

    /// True when the connection is still open and quiet, so it can carry a request:
    /// a connection the origin closed, or one that sent bytes nobody asked for, is not.
    pub fn is_reusable(&mut self) -> bool {
        if !self.rest.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.io.poll_read_chunk(&mut cx), Poll::Pending)
    }

    /// Sends a request head made by [`encode_head`].
    pub async fn send_head(&mut self, head: &[u8]) -> io::Result<()> {
        self.io.write_all(head).await?;
        self.io.flush().await
    }

    /// Reads the response head, skipping up to [`MAX_INTERIM`] interim (1xx)
    /// responses. A head split over many chunks costs linear work ([`HeadReader`]).
    pub async fn read_head(&mut self, head_request: bool) -> Result<Head, H1Error> {
        let mut reader = HeadReader::default();
        let mut interim = 0;
        let mut received = false;
        loop {
            if !self.rest.is_empty()
                && let Some(head) = reader.feed(&mut self.rest, head_request)?
            {
                let status = head.response.status();
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(H1Error::UnaskedSwitch);
                }
                if !status.is_informational() {
                    return Ok(head);
                }
                interim += 1;
                if interim > MAX_INTERIM {
                    return Err(H1Error::TooManyInterim);
                }
                continue;
            }
            let chunk = match poll_fn(|cx| self.io.poll_read_chunk(cx)).await {
                Ok(chunk) => chunk,
                // The agent's word that it could not reach the origin, or a node's
                // that it does not serve the tunnel, is kept as it is.
                Err(e) if is_a_status(&e) => return Err(H1Error::Io(e)),
                // A stream reset before any answer is a connection closed under the
                // request, like an end of stream.
                Err(_) if !received => return Err(H1Error::Closed),
                Err(e) => return Err(H1Error::Io(e)),
            };
            let Some(chunk) = chunk else {
                return Err(if received {
                    H1Error::Incomplete
                } else {
                    H1Error::Closed
                });
            };
            received = true;
            self.rest = chunk;
        }
    }

    /// The next bytes of the stream: what was left over, else a fresh chunk.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if !self.rest.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.rest))));
        }
        self.io.poll_read_chunk(cx)
    }
}

/// True when `e` carries the agent's [`OriginUnreachable`](super::agent_stream::OriginUnreachable)
/// or a node's [`NotHeld`](super::agent_stream::NotHeld).
fn is_a_status(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| {
        inner.is::<super::agent_stream::OriginUnreachable>()
            || inner.is::<super::agent_stream::NotHeld>()
    })
}

/// Reads a response body as its framing says; [`Body::finish`] gives the connection
/// back once the body ended cleanly on a reusable connection.
#[derive(Debug)]
pub struct Body<S> {
    conn: Option<Conn<S>>,
    state: BodyState,
    reusable: bool,
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(ChunkDecoder),
    UntilClose,
    Done,
}

impl<S: ReadChunk + AsyncWrite + Unpin> Body<S> {
    /// The body following `head` on `conn`.
    pub fn new(conn: Conn<S>, head: &Head) -> Self {
        let state = match head.framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkDecoder::new()),
            Framing::UntilClose => BodyState::UntilClose,
        };
        Body {
            conn: Some(conn),
            state,
            reusable: head.reusable,
        }
    }

    /// True once the whole body has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// The connection, when the body was read to its end and nothing else arrived.
    pub fn finish(&mut self) -> Option<Conn<S>> {
        if !self.is_done() || !self.reusable {
            return None;
        }
        self.conn.take().filter(|c| c.rest.is_empty())
    }

    /// The body's exact remaining length, when the framing says it.
    pub fn exact_len(&self) -> Option<u64> {
        match self.state {
            BodyState::Length(n) => Some(n),
            BodyState::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body; `None` at its end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, H1Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let next = match &mut self.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Chunked(decoder) if !conn.rest.is_empty() => {
                    match decoder.decode(&mut conn.rest) {
                        Err(e) => return self.fail(e),
                        Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                        Ok(Decoded::NeedMore) => continue,
                        Ok(Decoded::End) => {
                            self.state = BodyState::Done;
                            return Poll::Ready(None);
                        }
                    }
                }
                _ => match conn.poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return self.fail(H1Error::Io(e)),
                    Poll::Ready(Ok(next)) => next,
                },
            };
            match (&mut self.state, next) {
                (BodyState::UntilClose, None) => {
                    self.state = BodyState::Done;
                    return Poll::Ready(None);
                }
                (BodyState::UntilClose, Some(data)) => return Poll::Ready(Some(Ok(data))),
                (_, None) => return self.fail(H1Error::Incomplete),
                (BodyState::Length(remaining), Some(mut data)) => {
                    if data.len() as u64 > *remaining {
                        conn.rest = data.split_off(*remaining as usize);
                    }
                    *remaining -= data.len() as u64;
                    if *remaining == 0 {
                        self.state = BodyState::Done;
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                (_, Some(data)) => conn.rest = data,
            }
        }
    }

    fn fail(&mut self, e: H1Error) -> Poll<Option<Result<Bytes, H1Error>>> {
        self.conn = None;
        self.state = BodyState::Done;
        self.reusable = false;
        Poll::Ready(Some(Err(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use tokio::io::{AsyncRead, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};

    /// A loopback TCP stream that hands over what it reads as chunks.
    struct Tcp(TcpStream);

    impl ReadChunk for Tcp {
        fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
            let mut buf = [0u8; 4096];
            let mut read = ReadBuf::new(&mut buf);
            match std::pin::Pin::new(&mut self.0).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(Ok(None)),
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Some(Bytes::copy_from_slice(read.filled())))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        }
    }

    impl AsyncWrite for Tcp {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// A connection to an origin that answers each request head with the next of
    /// `answers`, written in pieces of `piece` bytes, and closes after the last.
    async fn origin(answers: Vec<&'static [u8]>, piece: usize) -> Conn<Tcp> {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            for answer in answers {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                for part in answer.chunks(piece) {
                    s.write_all(part).await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        });
        Conn::new(Tcp(TcpStream::connect(addr).await.unwrap()))
    }

    fn get(path: &str) -> Bytes {
        let mut request = Request::new(());
        *request.uri_mut() = path.parse().unwrap();
        request
            .headers_mut()
            .insert("host", HeaderValue::from_static("app"));
        let mut out = BytesMut::new();
        encode_head(&request, &mut out);
        out.freeze()
    }

    async fn exchange(
        conn: Conn<Tcp>,
        head_request: bool,
    ) -> (Head, Result<Vec<u8>, H1Error>, Option<Conn<Tcp>>) {
        let mut conn = conn;
        conn.send_head(&get("/")).await.unwrap();
        let head = conn.read_head(head_request).await.unwrap();
        let mut body = Body::new(conn, &head);
        let mut out = Vec::new();
        let result = loop {
            match poll_fn(|cx| body.poll_data(cx)).await {
                Some(Ok(data)) => out.extend_from_slice(&data),
                Some(Err(e)) => break Err(e),
                None => break Ok(out),
            }
        };
        let conn = body.finish();
        (head, result, conn)
    }

    #[test]
    fn request_heads_are_in_origin_form() {
        assert_eq!(
            &get("/a?b=c")[..],
            b"GET /a?b=c HTTP/1.1\r\nhost: app\r\n\r\n"
        );
        // The head is sized before it is written: one allocation, no regrowth.
        let mut request = Request::new(());
        *request.uri_mut() = "/long".parse().unwrap();
        request.headers_mut().insert(
            "cookie",
            HeaderValue::from_static("a=1; b=2; session=0123456789abcdef0123456789abcdef"),
        );
        let mut out = BytesMut::new();
        encode_head(&request, &mut out);
        assert_eq!(out.capacity(), out.len());
    }

    #[tokio::test]
    async fn responses_in_every_framing_are_read_whole_and_connections_reused_only_when_clean() {
        for piece in [1, 7, 4096] {
            let conn = origin(
                vec![
                    b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst",
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\ntrailer: t\r\n\r\n",
                    b"HTTP/1.1 204 No Content\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
                ],
                piece,
            )
            .await;
            let (h, body, conn) = exchange(conn, false).await;
            assert_eq!(h.response.status(), 200, "the interim response is skipped");
            assert_eq!(body.unwrap(), b"first");
            let (_, body, conn) = exchange(conn.expect("reused after a length"), false).await;
            assert_eq!(body.unwrap(), b"abcde");
            let (h, body, conn) = exchange(conn.expect("reused after chunks"), false).await;
            assert_eq!((h.response.status().as_u16(), body.unwrap()), (204, vec![]));
            let (_, body, conn) = exchange(conn.expect("reused after a 204"), false).await;
            assert_eq!(body.unwrap(), b"ok");
            if piece == 4096 {
                // Bytes after the declared length arrived with the body.
                assert!(
                    conn.is_none(),
                    "a connection that said too much is not reused"
                );
            }
        }
    }

    #[tokio::test]
    async fn bodies_until_close_cut_off_bodies_and_silent_closes_are_told_apart() {
        let conn = origin(vec![b"HTTP/1.0 200 OK\r\n\r\nall of it"], 4).await;
        let (_, body, conn) = exchange(conn, false).await;
        assert_eq!(body.unwrap(), b"all of it");
        assert!(conn.is_none());

        let conn = origin(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
            4096,
        )
        .await;
        let (_, body, conn) = exchange(conn, false).await;
        assert!(matches!(body, Err(H1Error::Incomplete)), "{body:?}");
        assert!(conn.is_none());

        let conn = origin(
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab"],
            4096,
        )
        .await;
        let (_, body, _) = exchange(conn, false).await;
        assert!(matches!(body, Err(H1Error::Incomplete)), "{body:?}");

        let mut conn = origin(vec![], 1).await;
        conn.send_head(&get("/")).await.unwrap();
        assert!(matches!(conn.read_head(false).await, Err(H1Error::Closed)));

        let mut conn = origin(vec![b"HTTP/1.1 200 OK\r\ncontent-le"], 4096).await;
        conn.send_head(&get("/")).await.unwrap();
        assert!(matches!(
            conn.read_head(false).await,
            Err(H1Error::Incomplete)
        ));

        let mut conn = origin(
            vec![b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"],
            4096,
        )
        .await;
        conn.send_head(&get("/")).await.unwrap();
        assert!(matches!(
            conn.read_head(false).await,
            Err(H1Error::UnaskedSwitch)
        ));
    }

    #[tokio::test]
    async fn empty_lines_before_a_head_are_skipped_and_interim_answers_capped() {
        let early: &'static [u8] = Box::leak(
            [
                b"\r\n".repeat(500),
                b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM),
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            ]
            .concat()
            .into_boxed_slice(),
        );
        for piece in [1, 4096] {
            let (h, body, _) = exchange(origin(vec![early], piece).await, false).await;
            assert_eq!(h.response.status(), 200, "pieces of {piece}");
            assert_eq!(body.unwrap(), b"ok");
        }
        let endless: &'static [u8] = Box::leak(
            b"HTTP/1.1 100 Continue\r\n\r\n"
                .repeat(1000)
                .into_boxed_slice(),
        );
        let mut conn = origin(vec![endless], 4096).await;
        conn.send_head(&get("/")).await.unwrap();
        assert!(matches!(
            conn.read_head(false).await,
            Err(H1Error::TooManyInterim)
        ));
    }

    #[tokio::test]
    async fn a_head_response_leaves_the_connection_ready() {
        let conn = origin(
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nafter",
            ],
            4096,
        )
        .await;
        let (h, body, conn) = exchange(conn, true).await;
        assert_eq!(h.response.headers()["content-length"], "5");
        assert_eq!(body.unwrap(), b"");
        let mut conn = conn.expect("reused after HEAD");
        assert!(conn.is_reusable());
        let (_, body, _) = exchange(conn, false).await;
        assert_eq!(body.unwrap(), b"after");
    }

    #[tokio::test]
    async fn a_pooled_connection_the_origin_closed_is_not_reused() {
        let conn = origin(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
            4096,
        )
        .await;
        let (_, body, conn) = exchange(conn, false).await;
        assert_eq!(body.unwrap(), b"ok");
        let mut conn = conn.unwrap();
        // The origin closes after its last answer.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!conn.is_reusable());
    }
}
