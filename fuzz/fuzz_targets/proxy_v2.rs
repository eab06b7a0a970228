//! Fuzzes the PROXY protocol v2 header a trusted proxy sends the Edge's viewer
//! listeners (`netbore_edge::proxy_protocol`): `decode` on arbitrary bytes, and the
//! async `read_header` over the same bytes.
//!
//! Input: the bytes a connection starts with. Half the inputs are taken as they are;
//! when the first byte is odd, the rest is put after the 12-byte signature, so the
//! fuzzer reaches the version, family and length checks at once.
//!
//! Invariants, beyond "no panic" and "no hang":
//! - `Done { source, header_len }`: `header_len` is 16 plus the big-endian length of
//!   bytes 14 and 15, within the input and `MAX_HEADER`; decoding the header alone
//!   gives the same answer, and every shorter prefix is `Incomplete` and asks for more
//!   than it has and no more than `header_len`; `source` is the source address and
//!   port of a `PROXY` (`0x21`) header for TCP over IPv4 (`0x11`) or IPv6 (`0x21`),
//!   read here independently, and `None` for anything else;
//! - `Incomplete { needed }`: more than the input, at most `MAX_HEADER`;
//! - an error is decided on the shortest prefix that has it: that prefix and every
//!   longer one (the whole input) give the same error, every shorter one is
//!   `Incomplete`;
//! - `read_header` agrees with `decode`, and consumes exactly `header_len` bytes when
//!   it succeeds: never a byte of what follows.

#![no_main]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use netbore_edge::proxy_protocol::{
    Decoded, FIXED_LEN, MAX_HEADER, ReadError, SIGNATURE, decode, read_header,
};

/// Runs a future over in-memory I/O, which never waits.
fn poll_once<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("in-memory I/O returned Pending"),
    }
}

/// The client a whole header names, read from the specification's layout.
fn expected_source(header: &[u8]) -> Option<SocketAddr> {
    let payload = &header[FIXED_LEN..];
    match (header[12], header[13]) {
        (0x21, 0x11) => {
            let ip = Ipv4Addr::new(payload[0], payload[1], payload[2], payload[3]);
            let port = u16::from_be_bytes([payload[8], payload[9]]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        (0x21, 0x21) => {
            let ip: [u8; 16] = payload[..16].try_into().expect("36 bytes at least");
            let port = u16::from_be_bytes([payload[32], payload[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

fn check(bytes: &[u8]) {
    let decoded = decode(bytes);
    let mut rest = bytes;
    let read = poll_once(read_header(&mut rest));
    match decoded {
        Ok(Decoded::Done { source, header_len }) => {
            let announced = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
            assert_eq!(header_len, FIXED_LEN + announced);
            assert!(header_len <= bytes.len() && header_len <= MAX_HEADER);
            assert_eq!(bytes[..12], SIGNATURE);
            assert_eq!(source, expected_source(&bytes[..header_len]));
            assert_eq!(decode(&bytes[..header_len]), decoded);
            for k in 0..header_len {
                match decode(&bytes[..k]) {
                    Ok(Decoded::Incomplete { needed }) => {
                        assert!(needed > k && needed <= header_len, "{k}: needs {needed}");
                    }
                    other => panic!("prefix of {k} bytes of a header: {other:?}"),
                }
            }
            assert_eq!(read.expect("read_header agrees"), source);
            assert_eq!(rest.len(), bytes.len() - header_len, "read past the header");
        }
        Ok(Decoded::Incomplete { needed }) => {
            assert!(
                needed > bytes.len() && needed <= MAX_HEADER,
                "needs {needed}"
            );
            assert!(
                matches!(read, Err(ReadError::Io(_))),
                "an incomplete header read as {read:?}"
            );
        }
        Err(e) => {
            let first = (0..=bytes.len())
                .find(|&k| decode(&bytes[..k]).is_err())
                .expect("the whole input fails");
            assert_eq!(decode(&bytes[..first]), Err(e), "decided late");
            for k in 0..first {
                assert!(matches!(
                    decode(&bytes[..k]),
                    Ok(Decoded::Incomplete { .. })
                ));
            }
            match read {
                Err(ReadError::Header(r)) => assert_eq!(r, e),
                other => panic!("{e} read as {other:?}"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&flag, rest)) if flag & 1 == 1 => check(&[&SIGNATURE[..], rest].concat()),
        _ => check(data),
    }
});
