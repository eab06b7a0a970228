//! A lean HTTP/1.1 client for bodiless requests (GET, HEAD, DELETE, OPTIONS, TRACE),
//! most of what viewers send. It writes the request head, reads the response head with
//! `httparse` and frames the body itself, handing on the bytes the stream delivers
//! without copying them. Requests with a body, upgrades and CONNECT stay with hyper.
//!
//! Framing follows RFC 9112 §6.3, strictly: a connection is reused only after a
//! response framed by `Content-Length` or chunked coding was read to its end, on
//! HTTP/1.1 without `Connection: close`. Anything ambiguous (differing lengths, a length
//! beside a transfer coding, bytes past the end of a response) ends the connection, so a
//! response can never be read as part of the next one.

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Most bytes a response head may take.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields a response head may carry.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of chunk extensions and trailers one chunked body may carry (they are
/// read and dropped).
pub const MAX_CHUNK_META: usize = 16 * 1024;

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

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked coding.
    Chunked,
    /// Everything until the connection closes.
    UntilClose,
}

/// A parsed response head: the response without its body, how the body is framed, and
/// whether the connection may carry another request afterwards.
#[derive(Debug)]
pub struct Head {
    /// Status, version and headers.
    pub response: Response<()>,
    /// How the body ends.
    pub framing: Framing,
    /// True when the connection may be reused once the body has been read.
    pub reusable: bool,
}

/// Parses one response head at the start of `input`. `Ok(None)`: more bytes needed.
/// On success, also returns how many bytes the head took. Header values are slices of
/// `input`, not copies.
pub fn parse_head(input: &Bytes, head_request: bool) -> Result<Option<(Head, usize)>, H1Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Err(H1Error::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(H1Error::HeadTooLarge),
        Err(e) => return Err(H1Error::BadHead(parse_error(e))),
    };
    if len > MAX_HEAD {
        return Err(H1Error::HeadTooLarge);
    }
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(H1Error::BadHead("status"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| H1Error::BadHead("header name"))?;
        let value = HeaderValue::from_maybe_shared(input.slice_ref(field.value))
            .map_err(|_| H1Error::BadHead("header value"))?;
        headers.append(name, value);
    }
    let (framing, reusable) = framing(head_request, status, version, &headers)?;
    match framing {
        // A length beside a transfer coding does not describe what the viewer gets.
        Framing::Chunked | Framing::UntilClose => {
            headers.remove(header::CONTENT_LENGTH);
        }
        // A repeated or listed length, all the same, is passed on as one value.
        Framing::Length(n) if !single_value(&headers, header::CONTENT_LENGTH) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        Framing::Length(_) => {}
        // Without a body, the length (of what a GET would get) is not checked for
        // framing; it is passed on only when it is one valid number.
        Framing::Empty => {
            let valid = single_value(&headers, header::CONTENT_LENGTH)
                && headers
                    .get(header::CONTENT_LENGTH)
                    .is_some_and(|v| parse_length(v.as_bytes()).is_some());
            if !valid {
                headers.remove(header::CONTENT_LENGTH);
            }
        }
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    let head = Head {
        response,
        framing,
        reusable,
    };
    Ok(Some((head, len)))
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status",
        httparse::Error::Token => "token",
        httparse::Error::Version => "version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// The body framing of a response (RFC 9112 §6.3) and whether its connection may be
/// reused after it.
fn framing(
    head_request: bool,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<(Framing, bool), H1Error> {
    let mut reusable = keeps_alive(version, headers);
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, reusable));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // A length beside a transfer coding is a smuggling attempt or a broken
        // server: the coding frames this body, and the connection ends after it.
        if headers.contains_key(header::CONTENT_LENGTH) {
            reusable = false;
        }
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|c| c.trim_ascii())
            .rfind(|c| !c.is_empty());
        return Ok(match last {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") && version == Version::HTTP_11 => {
                (Framing::Chunked, reusable)
            }
            _ => (Framing::UntilClose, false),
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_length(part.trim_ascii()).ok_or(H1Error::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::BadLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), reusable),
        None => (Framing::UntilClose, false),
    })
}

fn single_value(headers: &HeaderMap, name: HeaderName) -> bool {
    let mut values = headers.get_all(name).iter();
    values.next().is_some_and(|v| !v.as_bytes().contains(&b',')) && values.next().is_none()
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// True unless the response ends its connection: HTTP/1.1 without `Connection: close`,
/// or HTTP/1.0 with `Connection: keep-alive`.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if version == Version::HTTP_11 {
        !has("close")
    } else {
        has("keep-alive")
    }
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

    /// Reads the response head, skipping interim (1xx) responses.
    ///
    /// A head split over several chunks is gathered and parsed once its blank line has
    /// arrived, so an origin sending it a byte at a time costs linear time, not
    /// quadratic.
    pub async fn read_head(&mut self, head_request: bool) -> Result<Head, H1Error> {
        let mut partial = BytesMut::new();
        let mut received = false;
        loop {
            if !self.rest.is_empty() {
                if let Some((head, len)) = parse_head(&self.rest, head_request)? {
                    self.rest.advance(len);
                    if head.response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(H1Error::UnaskedSwitch);
                    }
                    if head.response.status().is_informational() {
                        continue;
                    }
                    return Ok(head);
                }
                partial.extend_from_slice(&std::mem::take(&mut self.rest));
            }
            let chunk = match poll_fn(|cx| self.io.poll_read_chunk(cx)).await {
                Ok(chunk) => chunk,
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
            if partial.is_empty() {
                self.rest = chunk;
                continue;
            }
            let from = partial.len().saturating_sub(3);
            partial.extend_from_slice(&chunk);
            if has_blank_line(&partial[from..]) {
                self.rest = partial.split().freeze();
            } else if partial.len() > MAX_HEAD {
                return Err(H1Error::HeadTooLarge);
            }
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

/// True when `bytes` hold the end of a head: an empty line, ended by CRLF or LF (a
/// malformed end still goes to the parser, which rejects it).
fn has_blank_line(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
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

/// What one step of chunked decoding found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The input is used up; more is needed.
    NeedMore,
    /// The body ended (after its trailers, which are dropped).
    End,
}

/// Decodes the chunked transfer coding (RFC 9112 §7.1) from input that arrives in
/// pieces, handing data on without copying. Strict: sizes in hex, lines ending in CRLF.
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    state: ChunkState,
    /// Bytes of extensions and trailers seen so far.
    meta: usize,
}

#[derive(Debug, Default, Clone, Copy)]
enum ChunkState {
    #[default]
    SizeStart,
    Size(u64),
    SizeSpace(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf(bool),
    End,
}

impl ChunkDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkDecoder::default()
    }

    /// Consumes from `input` up to the next piece of data, the end of the body, or the
    /// end of `input`.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Decoded, H1Error> {
        use ChunkState::*;
        loop {
            if let Data(remaining) = self.state {
                if input.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = remaining.min(input.len() as u64) as usize;
                let data = input.split_to(n);
                self.state = if remaining == n as u64 {
                    DataCr
                } else {
                    Data(remaining - n as u64)
                };
                return Ok(Decoded::Data(data));
            }
            if let End = self.state {
                return Ok(Decoded::End);
            }
            let Some(&b) = input.first() else {
                return Ok(Decoded::NeedMore);
            };
            input.advance(1);
            self.state = match (self.state, b) {
                (SizeStart, _) => Size(u64::from(hex(b).ok_or(bad("chunk size"))?)),
                (Size(n), _) if hex(b).is_some() => {
                    if n >> 60 != 0 {
                        return Err(bad("chunk size too large"));
                    }
                    Size(n << 4 | u64::from(hex(b).unwrap_or(0)))
                }
                (Size(n) | SizeSpace(n), b' ' | b'\t') => {
                    self.meta_byte()?;
                    SizeSpace(n)
                }
                (Size(n) | SizeSpace(n), b';') => Extension(n),
                (Size(n) | SizeSpace(n) | Extension(n), b'\r') => SizeLf(n),
                (Extension(_), b'\n') => return Err(bad("bare line feed")),
                (Extension(n), _) => {
                    self.meta_byte()?;
                    Extension(n)
                }
                (SizeLf(0), b'\n') => TrailerStart,
                (SizeLf(n), b'\n') => Data(n),
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => SizeStart,
                (TrailerStart, b'\r') => TrailerLf(true),
                (Trailer, b'\r') => TrailerLf(false),
                (TrailerStart | Trailer, b'\n') => return Err(bad("bare line feed")),
                (TrailerStart | Trailer, _) => {
                    self.meta_byte()?;
                    Trailer
                }
                (TrailerLf(true), b'\n') => End,
                (TrailerLf(false), b'\n') => TrailerStart,
                _ => return Err(bad("unexpected byte")),
            };
        }
    }

    fn meta_byte(&mut self) -> Result<(), H1Error> {
        self.meta += 1;
        if self.meta > MAX_CHUNK_META {
            return Err(bad("too many extension or trailer bytes"));
        }
        Ok(())
    }
}

fn bad(what: &'static str) -> H1Error {
    H1Error::BadChunk(what)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncRead, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};

    fn head(text: &str) -> Result<Option<(Head, usize)>, H1Error> {
        parse_head(&Bytes::copy_from_slice(text.as_bytes()), false)
    }

    fn framing_of(text: &str) -> (Framing, bool) {
        let (h, _) = head(text).unwrap().unwrap();
        (h.framing, h.reusable)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        use Framing::*;
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                (Length(5), true),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                (Length(5), true),
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", (Empty, true)),
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
                (Empty, true),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                (Chunked, true),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n",
                (Chunked, true),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                (UntilClose, false),
            ),
            (
                "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                (UntilClose, false),
            ),
            // A length beside a coding: the coding frames it, and the connection ends.
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
                (Chunked, false),
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", (UntilClose, false)),
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
                (Length(1), false),
            ),
            (
                "HTTP/1.1 200 OK\r\nconnection: foo, Close\r\ncontent-length: 1\r\n\r\n",
                (Length(1), false),
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
                (Length(1), false),
            ),
            (
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
                (Length(1), true),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(framing_of(text), want, "{text:?}");
        }
        let input = Bytes::from_static(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
        let (h, _) = parse_head(&input, true).unwrap().unwrap();
        assert_eq!(h.framing, Empty, "a response to HEAD has no body");
        assert_eq!(h.response.headers()["content-length"], "5");
    }

    #[test]
    fn lengths_reaching_the_viewer_are_single_and_consistent() {
        let (h, _) = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        let lengths: Vec<_> = h
            .response
            .headers()
            .get_all("content-length")
            .iter()
            .collect();
        assert_eq!(lengths, ["5"]);
        let (h, _) =
            head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(!h.response.headers().contains_key("content-length"));
        // Found by fuzzing: lengths of bodiless answers are not checked for framing, so
        // only one valid one is passed on.
        let (h, _) =
            head("HTTP/1.1 304 Not Modified\r\ncontent-length: \r\ncontent-length: 9\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(!h.response.headers().contains_key("content-length"));
        let (h, _) = head("HTTP/1.1 200 OK\r\ncontent-length: 03\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn bad_heads_are_typed_errors() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length:\r\n\r\n",
        ] {
            assert!(matches!(head(text), Err(H1Error::BadLength)), "{text:?}");
        }
        assert!(matches!(
            head("SSH-2.0-OpenSSH\r\n\r\n"),
            Err(H1Error::BadHead(_))
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nbad header\r\n\r\n"),
            Err(H1Error::BadHead(_))
        ));
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(head(&many), Err(H1Error::HeadTooLarge)));
        let long = format!("HTTP/1.1 200 OK\r\na: {}", "x".repeat(MAX_HEAD + 1));
        assert!(matches!(head(&long), Err(H1Error::HeadTooLarge)));
        assert!(matches!(head("HTTP/1.1 200 OK\r\na: b\r\n"), Ok(None)));
    }

    fn decode_in_pieces(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), H1Error> {
        let mut decoder = ChunkDecoder::new();
        let mut out = Vec::new();
        for (i, part) in input.chunks(piece).enumerate() {
            let mut part = Bytes::copy_from_slice(part);
            loop {
                match decoder.decode(&mut part)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::End => {
                        // What is left of this piece, and every later piece.
                        let later = input.len().saturating_sub((i + 1) * piece);
                        return Ok((out, part.len() + later));
                    }
                }
            }
        }
        Err(H1Error::Incomplete)
    }

    #[test]
    fn chunked_bodies_decode_the_same_in_any_pieces() {
        let body = b"5;name=value\r\nhello\r\n6\r\n world\r\nA \t;x\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for piece in 1..=body.len() {
            let (out, left) = decode_in_pieces(body, piece).unwrap();
            assert_eq!(out, b"hello world0123456789", "pieces of {piece}");
            assert_eq!(
                left, 4,
                "pieces of {piece}: bytes after the body stay unread"
            );
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_typed_errors() {
        for input in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
        ] {
            assert!(
                matches!(decode_in_pieces(input, 3), Err(H1Error::BadChunk(_))),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = [b"1;".as_slice(), &vec![b'x'; MAX_CHUNK_META + 1], b"\r\n"].concat();
        assert!(matches!(
            decode_in_pieces(&long, 1000),
            Err(H1Error::BadChunk(_))
        ));
    }

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
