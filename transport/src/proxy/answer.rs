//! The proxy's answer to `CONNECT`, judged from the bytes read so far. Pure: the read
//! loop in [`Proxy::connect`](super::Proxy::connect), the property tests and the
//! fuzzer all run this same function.

use super::MAX_PROXY_RESPONSE;

/// The start every status line must have.
const VERSION_PREFIX: &[u8] = b"HTTP/1.";

/// What a proxy answered to `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `200`: the tunnel is open.
    Established,
    /// Any other status.
    Refused {
        /// The status code, `100..=999`, never 200.
        code: u16,
        /// The code and reason phrase, e.g. `403 Forbidden`: printable ASCII only and
        /// at most 64 characters, fit for an error sentence.
        status: String,
    },
}

/// How far the bytes read so far go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The answer looks right so far but its blank line has not come: read more.
    /// Only ever said of fewer than [`MAX_PROXY_RESPONSE`] bytes.
    Incomplete,
    /// The head is complete.
    Complete {
        /// What the proxy said.
        answer: Answer,
        /// Length of the head, through its blank line; never more than the bytes
        /// given nor [`MAX_PROXY_RESPONSE`]. Bytes after it are not part of the answer.
        head_len: usize,
    },
}

/// Why a proxy's answer is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadAnswer {
    /// The first line is not (or cannot become) an HTTP/1.x status line.
    #[error("no HTTP/1.x status line")]
    NotHttp,
    /// No blank line within [`MAX_PROXY_RESPONSE`] bytes.
    #[error("its headers are too long")]
    TooLong,
    /// A `200` came with bytes after it, before the agent said anything: whatever
    /// answered is not a CONNECT proxy. Found by the caller, not by [`parse_answer`].
    #[error("bytes followed its answer")]
    TrailingBytes,
}

/// Judges the bytes a proxy has sent so far in answer to `CONNECT`: a complete head,
/// more to read, or an answer that cannot be HTTP.
///
/// Only the status line matters; headers are skipped. Bytes past
/// [`MAX_PROXY_RESPONSE`] are never looked at. A first line that cannot become a
/// status line is refused at once, without waiting for more (a server that is not a
/// proxy may send a banner and then wait). The verdict does not depend on how the
/// bytes were split across reads: once a prefix gets a verdict other than
/// [`Parsed::Incomplete`], every longer input gets the same one.
pub fn parse_answer(buf: &[u8]) -> Result<Parsed, BadAnswer> {
    let seen = &buf[..buf.len().min(MAX_PROXY_RESPONSE)];
    let line_end = find(seen, b"\r\n");
    let line = &seen[..line_end.unwrap_or(seen.len())];
    if !line.starts_with(&VERSION_PREFIX[..line.len().min(VERSION_PREFIX.len())]) {
        return Err(BadAnswer::NotHttp);
    }
    if line_end.is_some() {
        let answer = status_line(line)?;
        if let Some(i) = find(seen, b"\r\n\r\n") {
            return Ok(Parsed::Complete {
                answer,
                head_len: i + 4,
            });
        }
    }
    if buf.len() >= MAX_PROXY_RESPONSE {
        Err(BadAnswer::TooLong)
    } else {
        Ok(Parsed::Incomplete)
    }
}

/// Reads `HTTP/1.x CODE [REASON]`.
fn status_line(line: &[u8]) -> Result<Answer, BadAnswer> {
    // Lossy: a reason phrase in another encoding still tells a refusal.
    let line = String::from_utf8_lossy(line);
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    // Three digits, the first not 0: codes run from 100 (RFC 9110, section 15).
    if !version.starts_with("HTTP/1.")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
        || code.starts_with('0')
    {
        return Err(BadAnswer::NotHttp);
    }
    if code == "200" {
        return Ok(Answer::Established);
    }
    let reason: String = parts
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(60)
        .collect();
    Ok(Answer::Refused {
        // Three ASCII digits, checked above: 100..=999.
        code: code.parse().map_err(|_| BadAnswer::NotHttp)?,
        status: format!("{code} {}", reason.trim()).trim().to_string(),
    })
}

/// Where `needle` (not empty) first occurs in `haystack`. Compares whole windows only
/// where the first byte matches: the head is scanned again after every read.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.first() == needle.first() && w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Answer, usize) {
        match parse_answer(buf) {
            Ok(Parsed::Complete { answer, head_len }) => (answer, head_len),
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn refused(code: u16, status: &str) -> Answer {
        Answer::Refused {
            code,
            status: status.into(),
        }
    }

    #[test]
    fn whole_answers_parse() {
        let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
        assert_eq!(complete(ok), (Answer::Established, ok.len()));
        assert_eq!(
            complete(b"HTTP/1.0 200\r\nX: y\r\n\r\n"),
            (Answer::Established, 22)
        );
        assert_eq!(
            complete(b"HTTP/1.1 403 Forbidden\r\n\r\n").0,
            refused(403, "403 Forbidden")
        );
        assert_eq!(
            complete(b"HTTP/1.1 407 Auth\x1b[31m\tneeded\r\n\r\n").0,
            refused(407, "407 Auth[31mneeded")
        );
        assert_eq!(complete(b"HTTP/1.1 502\r\n\r\n").0, refused(502, "502"));
    }

    #[test]
    fn bytes_after_the_head_are_not_part_of_it() {
        let head = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 5\r\n\r\n";
        let mut buf = head.to_vec();
        buf.extend_from_slice(b"hello");
        assert_eq!(
            complete(&buf),
            (
                refused(407, "407 Proxy Authentication Required"),
                head.len()
            )
        );
    }

    #[test]
    fn partial_answers_ask_for_more() {
        for partial in [
            &b""[..],
            b"H",
            b"HTTP/1.",
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 200 OK\r",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nVia: x\r\n\r",
        ] {
            assert_eq!(parse_answer(partial), Ok(Parsed::Incomplete), "{partial:?}");
        }
    }

    #[test]
    fn what_cannot_be_http_is_refused_at_once() {
        for bad in [
            &b"SSH-2.0-OpenSSH"[..],
            b"\x16\x03\x01",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n",
            b"HTTP/1.1\r\n",
            b"\r\n\r\n",
            b"http/1.1 200 OK\r\n\r\n",
        ] {
            assert_eq!(parse_answer(bad), Err(BadAnswer::NotHttp), "{bad:?}");
        }
    }

    /// Found by the `proxy_answer` fuzz target: `020` passed as a refusal with code
    /// 20, outside the `100..=999` that `Answer::Refused` promises.
    #[test]
    fn a_code_with_a_leading_zero_is_no_status() {
        for bad in [&b"HTTP/1.1 020 OK\r\n\r\n"[..], b"HTTP/1.1 000\r\n\r\n"] {
            assert_eq!(parse_answer(bad), Err(BadAnswer::NotHttp), "{bad:?}");
        }
        assert_eq!(
            complete(b"HTTP/1.1 100 Continue\r\n\r\n").0,
            refused(100, "100 Continue")
        );
        assert_eq!(
            complete(b"HTTP/1.1 999 Odd\r\n\r\n").0,
            refused(999, "999 Odd")
        );
    }

    #[test]
    fn a_head_longer_than_the_limit_is_refused() {
        let mut buf = b"HTTP/1.1 200 OK\r\n".to_vec();
        while buf.len() < MAX_PROXY_RESPONSE - 1 {
            buf.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        buf.truncate(MAX_PROXY_RESPONSE - 1);
        assert_eq!(parse_answer(&buf), Ok(Parsed::Incomplete));
        buf.push(b'a');
        assert_eq!(parse_answer(&buf), Err(BadAnswer::TooLong));
        // A blank line just past the limit is never looked at.
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_answer(&buf), Err(BadAnswer::TooLong));
        // One that ends exactly at the limit counts.
        buf.truncate(MAX_PROXY_RESPONSE - 4);
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(complete(&buf), (Answer::Established, MAX_PROXY_RESPONSE));
    }

    proptest::proptest! {
        /// Any bytes give a verdict, never a panic; a complete head ends with the
        /// blank line within what was given; a refusal is short printable text.
        #[test]
        fn any_bytes_get_a_sound_verdict(
            buf in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            match parse_answer(&buf) {
                Ok(Parsed::Complete { answer, head_len }) => {
                    proptest::prop_assert!(head_len <= buf.len());
                    proptest::prop_assert!(buf[..head_len].ends_with(b"\r\n\r\n"));
                    if let Answer::Refused { code, status } = answer {
                        proptest::prop_assert!(code != 200 && (100..1000).contains(&code));
                        proptest::prop_assert!(status.len() <= 64);
                    }
                }
                Ok(Parsed::Incomplete) => {
                    proptest::prop_assert!(buf.len() < MAX_PROXY_RESPONSE);
                }
                Err(_) => {}
            }
        }

        /// Every status line with a valid code parses, whatever its reason phrase, and
        /// the verdict is the same however the bytes were split across reads.
        #[test]
        fn valid_status_lines_parse_the_same_in_any_split(
            code in 100u16..1000,
            reason in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            split in 0usize..400,
        ) {
            let mut buf = format!("HTTP/1.1 {code} ").into_bytes();
            buf.extend(reason.iter().filter(|b| **b != b'\r' && **b != b'\n'));
            buf.extend_from_slice(b"\r\nVia: test\r\n\r\n");
            let whole = parse_answer(&buf);
            match &whole {
                Ok(Parsed::Complete { answer: Answer::Refused { code: c, status }, .. }) => {
                    proptest::prop_assert!(code != 200);
                    proptest::prop_assert_eq!(*c, code);
                    proptest::prop_assert!(status.len() <= 64);
                    proptest::prop_assert!(status.starts_with(&code.to_string()));
                    proptest::prop_assert!(status.chars().all(|c| c.is_ascii_graphic() || c == ' '));
                }
                Ok(Parsed::Complete { answer: Answer::Established, head_len }) => {
                    proptest::prop_assert_eq!(code, 200);
                    proptest::prop_assert_eq!(*head_len, buf.len());
                }
                other => proptest::prop_assert!(false, "a valid answer gave {:?}", other),
            }
            let prefix = &buf[..split.min(buf.len())];
            match parse_answer(prefix) {
                Ok(Parsed::Incomplete) => {}
                verdict => proptest::prop_assert_eq!(verdict, whole),
            }
        }
    }
}
