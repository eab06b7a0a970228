//! Fuzzes the Edge's lean HTTP/1.1 client on what an origin answers
//! (`netbore_edge::http::h1`): the response head and a chunked body.
//!
//! Input: `[piece size - 1, flags, response...]`; bit 0 of `flags`: the request was HEAD.
//!
//! Invariants on arbitrary bytes:
//! - `parse_head` never panics; a complete head ends within the input and
//!   `MAX_HEAD`, and any prefix of it asks for more or fails, never succeeds;
//! - a `Content-Length` passed on is one number (leading zeros allowed, as RFC 9110
//!   allows them) equal to the framing's length; no length is passed on beside
//!   chunked or until-close framing, and at most one valid one without a body;
//! - a chunked body decodes to the same bytes and the same end whether it arrives
//!   whole or in pieces of any size, never yields more data than it was given, and
//!   leaves the bytes after its end unread.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use netbore_edge::http::h1::{ChunkDecoder, Decoded, Framing, MAX_HEAD, parse_head};

/// Decoded data, and how many input bytes followed the end (`None`: no end, or an
/// error).
fn decode(input: &[u8], piece: usize) -> (Vec<u8>, Option<usize>) {
    let mut decoder = ChunkDecoder::new();
    let mut out = Vec::new();
    let mut consumed = 0;
    for part in input.chunks(piece) {
        let mut part = Bytes::copy_from_slice(part);
        let len = part.len();
        loop {
            match decoder.decode(&mut part) {
                Ok(Decoded::Data(d)) => {
                    assert!(!d.is_empty());
                    out.extend_from_slice(&d);
                }
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::End) => {
                    consumed += len - part.len();
                    return (out, Some(input.len() - consumed));
                }
                Err(_) => return (out, None),
            }
        }
        consumed += len;
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let [piece, flags, response @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece) + 1;
    let head_request = flags & 1 == 1;
    let input = Bytes::copy_from_slice(response);
    let Ok(Some((head, len))) = parse_head(&input, head_request) else {
        return;
    };
    assert!(len <= response.len() && len <= MAX_HEAD);
    for cut in [len - 1, len / 2] {
        assert!(
            !matches!(parse_head(&input.slice(..cut), head_request), Ok(Some(_))),
            "a prefix of {cut} bytes parsed as a whole head of {len}"
        );
    }
    let lengths: Vec<_> = head.response.headers().get_all("content-length").iter().collect();
    match head.framing {
        Framing::Length(n) => {
            let [value] = lengths[..] else {
                panic!("{} lengths passed on", lengths.len());
            };
            assert_eq!(value.to_str().ok().and_then(|v| v.parse().ok()), Some(n));
        }
        Framing::Chunked | Framing::UntilClose => assert!(lengths.is_empty()),
        Framing::Empty => {
            assert!(lengths.len() <= 1);
            assert!(lengths.iter().all(|v| v.to_str().is_ok_and(|v| v.parse::<u64>().is_ok())));
        }
    }
    if head.framing == Framing::Chunked {
        let body = &response[len..];
        let (whole, end) = decode(body, body.len().max(1));
        let (pieces, end_in_pieces) = decode(body, piece);
        assert!(whole.len() <= body.len());
        if end.is_some() {
            assert_eq!(whole, pieces);
            assert_eq!(end, end_in_pieces);
        }
    }
});
