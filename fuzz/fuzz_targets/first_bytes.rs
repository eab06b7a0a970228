//! Fuzzes what the Edge makes of a connection's first bytes, before any token is seen:
//! the agent port telling a connection's transport by its first byte
//! (`netbore_transport::sniff`), the WebSocket upgrade request a `ws`/`wss` agent
//! connection starts with (tungstenite's request parse, and Netbore's
//! `ws::server_handshake` run over an in-memory stream), and the control API's choice
//! between HTTPS, plain HTTP and a refusal (`netbore_control::serve::route_connection`).
//!
//! Input: `[flags, chunk, address (16 bytes), bytes...]`. `bytes` are the connection's
//! first bytes. Bit 0 of `flags`: the control API has a certificate; bit 1: it serves
//! plain HTTP to every address (`insecure_http`); bit 2: the client's address is the
//! IPv4 address of the first 4 address bytes, else the IPv6 address of all 16.
//! `chunk + 1` is the size of the writes that bring `bytes` to the WebSocket handshake
//! (at least a 64th of them, so a long input stays fast).
//!
//! Invariants, beyond "no panic" and "no hang":
//! - `sniff` follows its table, and its transports' first bytes are distinct: a TLS
//!   record (`0x16`, a ClientHello) always goes to TLS, on both ports;
//! - the control API takes `0x16` for TLS when it has a certificate and closes it
//!   without a byte when not (a ClientHello is never answered in clear text); any other
//!   byte is plain HTTP, served only to loopback clients unless `insecure_http`, else
//!   refused;
//! - the WebSocket handshake succeeds only for a complete `GET` request head for
//!   `WS_PATH` that tungstenite's checks accept, and then answers exactly `101`; a valid
//!   upgrade for another path gets a `404`; it writes nothing for anything else; the
//!   head it parses is the shortest complete prefix of the bytes;
//! - when no bytes follow the request head, how the bytes are cut into writes never
//!   changes the outcome nor a byte of the answer; bytes that arrived with the head
//!   (before the `101`) fail the handshake;
//! - an upgrade the handshake accepts sniffs as `Http` on the agent port (unless it
//!   starts with the empty lines HTTP allows before a request line).

#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use netbore_control::serve::{Route, route_connection};
use netbore_transport::ws::{WS_PATH, server_handshake};
use netbore_transport::{Sniffed, sniff};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, create_response};

/// tungstenite's read size: a request of at most this many bytes, written at once, is
/// read at once.
const READ_CHUNK: usize = 4096;

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime without drivers builds"),
    );
}

/// Whether `ip` is this machine, written independently of the control API's check.
fn loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6 == Ipv6Addr::LOCALHOST || (s[..6] == [0, 0, 0, 0, 0, 0xffff] && s[6] >> 8 == 127)
        }
    }
}

fn check_sniff(first: u8) {
    let version = netbore_mux::frame::VERSION;
    assert!(
        version != 0x16 && version != b'G',
        "transports share a first byte"
    );
    let expected = match first {
        0x16 => Sniffed::Tls,
        b'G' => Sniffed::Http,
        v if v == version => Sniffed::Mux,
        _ => Sniffed::Unknown,
    };
    assert_eq!(sniff(first), expected, "sniff(0x{first:02x})");
}

fn check_control(first: u8, has_tls: bool, insecure_http: bool, peer: IpAddr) {
    let route = route_connection(first, has_tls, insecure_http, peer);
    assert_eq!(
        route,
        route_connection(first, has_tls, insecure_http, peer),
        "not deterministic"
    );
    let expected = match (first, has_tls) {
        (0x16, true) => Route::Tls,
        (0x16, false) => Route::Close,
        _ if insecure_http || loopback(peer) => Route::Http,
        _ => Route::RefuseHttp,
    };
    assert_eq!(
        route, expected,
        "0x{first:02x} from {peer}, tls {has_tls}, insecure {insecure_http}"
    );
    // Both ports agree on what is TLS.
    if has_tls {
        assert_eq!(route == Route::Tls, sniff(first) == Sniffed::Tls);
    }
}

/// How the handshake ended, and every byte the Edge wrote.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    accepted: bool,
    answer: Vec<u8>,
}

/// Runs Netbore's server side of the upgrade on `bytes`, written `step` bytes at a
/// time and then closed.
fn handshake(bytes: &[u8], step: usize) -> Outcome {
    RUNTIME.with(|rt| {
        rt.borrow().block_on(async {
            let (mut agent, edge) = tokio::io::duplex(1 << 20);
            let writer = async {
                for piece in bytes.chunks(step) {
                    // The Edge may have given up already; the rest is not read.
                    if agent.write_all(piece).await.is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                let _ = agent.shutdown().await;
                agent
            };
            let (mut agent, result) = tokio::join!(writer, server_handshake(edge));
            let accepted = result.is_ok();
            // The Edge's end closes: the agent reads what was written, then the end.
            drop(result);
            let mut answer = Vec::new();
            agent
                .read_to_end(&mut answer)
                .await
                .expect("an in-memory stream reads");
            Outcome { accepted, answer }
        })
    })
}

fn check_upgrade(bytes: &[u8], chunk: u8) {
    let parsed = Request::try_parse(bytes);
    // The head parsed is the shortest complete prefix, and parses alone the same.
    let head_len = match &parsed {
        Ok(Some((n, _))) => {
            let n = *n;
            assert!(
                n > 0 && n <= bytes.len(),
                "head of {n} bytes from {}",
                bytes.len()
            );
            assert!(matches!(Request::try_parse(&bytes[..n]), Ok(Some((m, _))) if m == n));
            assert!(
                !matches!(Request::try_parse(&bytes[..n - 1]), Ok(Some(_))),
                "a shorter head is complete"
            );
            Some(n)
        }
        _ => None,
    };
    // What tungstenite's checks make of a complete head, and whether its path is ours.
    let verdict = match &parsed {
        Ok(Some((_, request))) => {
            assert_eq!(request.method().as_str(), "GET");
            Some((
                create_response(request).is_ok(),
                request.uri().path() == WS_PATH,
            ))
        }
        _ => None,
    };

    let whole = handshake(bytes, bytes.len().max(1));
    let step = (usize::from(chunk) + 1).max(bytes.len() / 64).max(1);
    let split = handshake(bytes, step);

    for (outcome, step) in [(&whole, bytes.len()), (&split, step)] {
        match verdict {
            Some((true, true)) if outcome.accepted => assert!(
                outcome
                    .answer
                    .starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"),
                "accepted with {:?}",
                String::from_utf8_lossy(&outcome.answer)
            ),
            Some((true, true)) => assert!(
                outcome.answer.is_empty() && head_len < Some(bytes.len()),
                "a valid upgrade with nothing after it failed (writes of {step}): {:?}",
                String::from_utf8_lossy(&outcome.answer)
            ),
            Some((true, false)) => {
                assert!(!outcome.accepted, "a path other than {WS_PATH} upgraded");
                let not_found = outcome.answer.starts_with(b"HTTP/1.1 404 Not Found\r\n");
                assert!(
                    not_found || (outcome.answer.is_empty() && head_len < Some(bytes.len())),
                    "another path got {:?}",
                    String::from_utf8_lossy(&outcome.answer)
                );
            }
            _ => {
                assert!(!outcome.accepted, "accepted without a valid upgrade head");
                assert!(
                    outcome.answer.is_empty(),
                    "answered an invalid head: {:?}",
                    String::from_utf8_lossy(&outcome.answer)
                );
            }
        }
    }
    match head_len {
        // Nothing after the head (or no complete head): the cut never matters.
        None => assert_eq!(whole, split, "writes of {step} changed the outcome"),
        Some(n) if n == bytes.len() => {
            assert_eq!(whole, split, "writes of {step} changed the outcome")
        }
        // Bytes that came with the head, read with it, fail the handshake.
        Some(_) if bytes.len() <= READ_CHUNK => {
            assert!(!whole.accepted, "bytes before the 101 were taken");
        }
        Some(_) => {}
    }
    if whole.accepted || split.accepted {
        assert!(
            sniff(bytes[0]) == Sniffed::Http || matches!(bytes[0], b'\r' | b'\n'),
            "an upgrade the agent port would not take: first byte 0x{:02x}",
            bytes[0]
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, chunk], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let Some((address, bytes)) = rest.split_first_chunk::<16>() else {
        return;
    };
    let peer = if flags & 4 != 0 {
        IpAddr::V4(Ipv4Addr::new(
            address[0], address[1], address[2], address[3],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(*address))
    };
    let Some(&first) = bytes.first() else {
        return;
    };
    check_sniff(first);
    check_control(first, flags & 1 != 0, flags & 2 != 0, peer);
    check_upgrade(bytes, chunk);
});
