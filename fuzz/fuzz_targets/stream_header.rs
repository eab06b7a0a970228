//! Fuzzes the viewer stream header (`netbore_transport::proto::StreamHeader`).
//!
//! Invariants for `decode` on arbitrary bytes:
//! - `Some((h, n))`: `n` is 12 (IPv4) or 24 (IPv6), `h.encode() == bytes[..n]`,
//!   decoding `bytes[..n]` gives the same answer and every shorter prefix asks for
//!   more bytes;
//! - `None`: the bytes are a strict prefix of a well-formed header;
//! - `Err`: `InvalidData`, because the version or the address family is wrong.
//!
//! The async `StreamHeader::read` must agree with `decode` on the same bytes.

#![no_main]

use std::future::Future;
use std::io::ErrorKind;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use netbore_transport::proto::{STREAM_HEADER_VERSION, StreamHeader};

/// Runs a future over in-memory I/O, which never waits.
fn poll_once<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("in-memory I/O returned Pending"),
    }
}

/// Length of a header whose first six bytes are `head`, if they are valid.
fn expected_len(head: &[u8]) -> Option<usize> {
    if head[0] != STREAM_HEADER_VERSION {
        return None;
    }
    match head[5] {
        4 => Some(12),
        6 => Some(24),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let decoded = StreamHeader::decode(data);
    let read = poll_once(StreamHeader::read(&mut &data[..]));
    match decoded {
        Ok(Some((h, n))) => {
            assert_eq!(Some(n), expected_len(data), "wrong header length {n}");
            assert_eq!(n, if h.viewer.is_ipv4() { 12 } else { 24 });
            assert_eq!(
                h.encode(),
                data[..n],
                "{h:?} does not re-encode to its bytes"
            );
            let again = StreamHeader::decode(&data[..n]).expect("prefix decodes");
            assert_eq!(again, Some((h, n)));
            for k in 0..n {
                let short = StreamHeader::decode(&data[..k]);
                assert!(
                    matches!(short, Ok(None)),
                    "a {k}-byte prefix of a valid header did not ask for more: {short:?}"
                );
            }
            assert_eq!(read.expect("read agrees with decode"), h);
        }
        Ok(None) => {
            if data.len() >= 6 {
                let len = expected_len(data).expect("None only for a valid start");
                assert!(data.len() < len);
            }
            let e = read.expect_err("read of an incomplete header");
            assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
            assert!(data.len() >= 6 && expected_len(data).is_none());
            let r = read.expect_err("read of an invalid header");
            assert_eq!(r.kind(), ErrorKind::InvalidData, "{r}");
        }
    }
});
