//! Response heads: [`parse_head`] reads one with `httparse` and works out how its body
//! is framed (RFC 9112 §6.3); [`HeadReader`] gathers one that arrives in pieces, in
//! work linear in its length however it is cut.

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode, Version};

use super::H1Error;

/// Most bytes a response head may take (empty lines before it included).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields a response head may carry.
pub const MAX_HEADERS: usize = 100;
/// Most interim (1xx) responses read before the final response to one request. Stops
/// an origin from holding a request, and the Edge's work on it, with endless
/// `100 Continue`s: one more is an error (a 502), and the connection is not reused.
/// Hyper's client, which sends the requests with a body, is held to it too
/// (`upstream::InterimCap`).
pub const MAX_INTERIM: usize = 16;

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
    // One more for the `Via` the Edge appends: a full map would be reallocated for it.
    let mut headers = HeaderMap::with_capacity(parsed.headers.len() + 1);
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

/// Gathers one response head that arrives in pieces, without I/O: feed it what the
/// stream delivers until it gives the head.
///
/// The cost stays linear in the head's length however the origin cuts it: empty lines
/// before the head are skipped as they arrive (RFC 9112 §2.2) and never buffered, the
/// search for the blank line that ends the head resumes where the last one stopped,
/// and the parser runs on the first piece and then only once that blank line is in.
#[derive(Debug, Default)]
pub struct HeadReader {
    /// The head so far, from its first byte that is neither CR nor LF.
    partial: BytesMut,
    /// Where the search for the blank line resumes in `partial` (two bytes before
    /// its end: a blank line may straddle two pieces).
    scanned: usize,
    /// CR and LF bytes skipped before the head; they count against [`MAX_HEAD`].
    skipped: usize,
    /// How many times the parser ran (the tests hold it to a constant).
    parses: usize,
}

impl HeadReader {
    /// Takes from `input` what belongs to the head. Once the head is complete, returns
    /// it and leaves in `input` what followed it; until then, takes all of `input`.
    pub fn feed(&mut self, input: &mut Bytes, head_request: bool) -> Result<Option<Head>, H1Error> {
        if self.partial.is_empty() {
            let blank = input
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            input.advance(blank);
            self.skipped += blank;
            if self.skipped > MAX_HEAD {
                return Err(H1Error::HeadTooLarge);
            }
            if input.is_empty() {
                return Ok(None);
            }
            // Most heads arrive whole in one piece: parse them where they are.
            self.parses += 1;
            if let Some((head, len)) = parse_head(input, head_request)? {
                input.advance(len);
                *self = HeadReader::default();
                return Ok(Some(head));
            }
            self.partial.extend_from_slice(input);
        } else {
            self.partial.extend_from_slice(input);
            if has_blank_line(&self.partial[self.scanned..]) {
                let mut whole = self.partial.split().freeze();
                self.parses += 1;
                if let Some((head, len)) = parse_head(&whole, head_request)? {
                    whole.advance(len);
                    *input = whole;
                    *self = HeadReader::default();
                    return Ok(Some(head));
                }
                // A blank line the parser did not take as the end: keep gathering,
                // searching on past it.
                self.partial.extend_from_slice(&whole);
            }
        }
        input.clear();
        self.scanned = self.partial.len().saturating_sub(2);
        if self.partial.len() + self.skipped > MAX_HEAD {
            return Err(H1Error::HeadTooLarge);
        }
        Ok(None)
    }
}

/// True when `bytes` hold the end of a head: an empty line, ended by CRLF or LF (a
/// malformed end still goes to the parser, which rejects it). One pass.
fn has_blank_line(bytes: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = bytes[from..].iter().position(|&b| b == b'\n') {
        let after = &bytes[from + at + 1..];
        if after.first() == Some(&b'\n') || after.starts_with(b"\r\n") {
            return true;
        }
        from += at + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Feeds `input` in pieces of `piece` bytes; the head, what followed it, and the
    /// reader (for its counters).
    fn read_in_pieces(input: &[u8], piece: usize) -> (Option<Head>, Bytes, HeadReader) {
        let mut reader = HeadReader::default();
        for (i, part) in input.chunks(piece).enumerate() {
            let mut part = Bytes::copy_from_slice(part);
            let head = reader.feed(&mut part, false).unwrap();
            assert!(
                reader.partial.len() <= 2 || reader.scanned + 2 == reader.partial.len(),
                "the search resumes where it stopped"
            );
            if let Some(head) = head {
                let later = input.len().saturating_sub((i + 1) * piece);
                let rest = [&part[..], &input[input.len() - later..]].concat();
                return (Some(head), rest.into(), reader);
            }
            assert!(
                part.is_empty(),
                "a piece is taken whole until the head is in"
            );
        }
        (None, Bytes::new(), reader)
    }

    #[test]
    fn empty_lines_before_a_head_are_skipped_and_never_parsed_again() {
        let mut input = b"\r\n".repeat(2000);
        input.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        for piece in [1, 2, 3, 7, 4096, input.len()] {
            let (head, rest, reader) = read_in_pieces(&input, piece);
            let head = head.unwrap_or_else(|| panic!("pieces of {piece}"));
            assert_eq!(head.framing, Framing::Length(2));
            assert_eq!(&rest[..], b"ok", "pieces of {piece}");
            // Once on the head's first piece, once when its end is in: never once a byte.
            assert!(
                reader.parses <= 2,
                "pieces of {piece}: {} parses",
                reader.parses
            );
        }
        // Byte by byte, the buffer never held the skipped lines.
        let mut reader = HeadReader::default();
        for &b in &input[..4000] {
            let mut part = Bytes::copy_from_slice(&[b]);
            assert!(reader.feed(&mut part, false).unwrap().is_none());
        }
        assert!(reader.partial.is_empty());
        assert_eq!((reader.skipped, reader.parses), (4000, 0));
    }

    #[test]
    fn a_head_a_byte_at_a_time_is_parsed_at_most_twice() {
        let fields = "x-field: value\r\n".repeat(90);
        let input = format!("HTTP/1.1 200 OK\r\n{fields}content-length: 0\r\n\r\nNEXT");
        let (head, rest, reader) = read_in_pieces(input.as_bytes(), 1);
        assert_eq!(head.unwrap().response.headers().len(), 91);
        assert_eq!(&rest[..], b"NEXT");
        assert_eq!(reader.parses, 0, "the reader starts afresh after a head");
        // Counted before the reset: the first byte, then the blank line.
        let mut reader = HeadReader::default();
        let mut parses = 0;
        for &b in input.as_bytes() {
            let before = reader.parses;
            if reader
                .feed(&mut Bytes::copy_from_slice(&[b]), false)
                .unwrap()
                .is_some()
            {
                parses += 1 + before;
                break;
            }
        }
        assert_eq!(parses, 2);
    }

    #[test]
    fn endless_empty_lines_or_heads_are_cut_off() {
        let mut reader = HeadReader::default();
        let mut lines = Bytes::from(b"\r\n".repeat(MAX_HEAD / 2 + 1));
        assert!(matches!(
            reader.feed(&mut lines, false),
            Err(H1Error::HeadTooLarge)
        ));
        let mut reader = HeadReader::default();
        let mut skipped = Bytes::from(b"\r\n".repeat(MAX_HEAD / 4));
        assert!(reader.feed(&mut skipped, false).unwrap().is_none());
        let mut head = Bytes::from(format!(
            "HTTP/1.1 200 OK\r\na: {}",
            "x".repeat(MAX_HEAD / 2)
        ));
        assert!(matches!(
            reader.feed(&mut head, false),
            Err(H1Error::HeadTooLarge)
        ));
    }

    #[test]
    fn blank_lines_are_found_across_pieces() {
        for text in ["a\n\nb", "a\n\r\nb", "\n\n", "\n\r\n"] {
            assert!(has_blank_line(text.as_bytes()), "{text:?}");
        }
        for text in ["a\r\nb\r\n", "\r\r", "\n\r", "", "\n"] {
            assert!(!has_blank_line(text.as_bytes()), "{text:?}");
        }
    }
}
