//! Fuzzes the two first looks at untrusted bytes on a transport: the agent judging an
//! HTTP proxy's answer to `CONNECT` (`netbore_transport::proxy::parse_answer`) and the
//! Edge telling a connection's transport by its first byte (`netbore_transport::sniff`).
//!
//! Input: `[chunk, flags, answer...]`. `chunk + 1` is the size of the reads the bytes
//! are fed in (as the agent's read loop would get them); bit 0 of `flags` inserts a
//! filler header after the first line so the answer ends near `MAX_PROXY_RESPONSE`,
//! `flags >> 1` bytes either side of it.
//!
//! Invariants, beyond "no panic":
//! - a complete head ends with its first blank line, within the bytes given and
//!   within `MAX_PROXY_RESPONSE`, and parsing just the head gives the same answer;
//! - `Incomplete` only below `MAX_PROXY_RESPONSE` bytes, `TooLong` only at or above;
//!   the parser never reports `TrailingBytes` (that is the caller's check);
//! - a refusal has a code in `100..=999` other than 200 and a status of at most 64
//!   printable ASCII characters starting with that code;
//! - fed in reads of any size, the first verdict other than `Incomplete` is the
//!   verdict on the whole input: the split of the bytes never changes the answer;
//! - `sniff` follows its table, and the first byte of a complete proxy answer is no
//!   transport the Edge would accept.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netbore_transport::proxy::{Answer, BadAnswer, MAX_PROXY_RESPONSE, Parsed, parse_answer};
use netbore_transport::{Sniffed, sniff};

/// Builds the answer bytes from the input (see the layout above).
fn answer_bytes(flags: u8, raw: &[u8]) -> Vec<u8> {
    if flags & 1 == 0 {
        return raw.to_vec();
    }
    let split = raw
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(raw.len(), |i| i + 2);
    // "X: " + filler + "\r\n" puts the end of the filler line near the limit.
    let target = (MAX_PROXY_RESPONSE - 64) + usize::from(flags >> 1);
    let filler = target.saturating_sub(split + 5);
    let mut out = Vec::with_capacity(raw.len() + filler + 5);
    out.extend_from_slice(&raw[..split]);
    out.extend_from_slice(b"X: ");
    out.resize(out.len() + filler, b'a');
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&raw[split..]);
    out
}

fn check_verdict(buf: &[u8], verdict: &Result<Parsed, BadAnswer>) {
    match verdict {
        Ok(Parsed::Complete { answer, head_len }) => {
            let n = *head_len;
            assert!(
                n <= buf.len(),
                "head of {n} bytes claimed from {}",
                buf.len()
            );
            assert!(
                n <= MAX_PROXY_RESPONSE,
                "head of {n} bytes is over the limit"
            );
            assert!(
                buf[..n].ends_with(b"\r\n\r\n"),
                "head does not end with a blank line"
            );
            assert!(
                !buf[..n - 1]
                    .windows(4)
                    .any(|w| w[0] == b'\r' && w == b"\r\n\r\n"),
                "head runs past its first blank line"
            );
            assert_eq!(
                parse_answer(&buf[..n]).as_ref(),
                Ok(&Parsed::Complete {
                    answer: answer.clone(),
                    head_len: n
                }),
                "the head alone gives another answer"
            );
            if let Answer::Refused { code, status } = answer {
                assert!((100..=999).contains(code) && *code != 200, "code {code}");
                assert!(status.len() <= 64, "status of {} bytes", status.len());
                assert!(
                    status.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
                    "unprintable status {status:?}"
                );
                assert!(
                    status.starts_with(&code.to_string()),
                    "{status:?} vs {code}"
                );
            }
        }
        Ok(Parsed::Incomplete) => {
            assert!(
                buf.len() < MAX_PROXY_RESPONSE,
                "incomplete at {} bytes",
                buf.len()
            )
        }
        Err(BadAnswer::TooLong) => {
            assert!(
                buf.len() >= MAX_PROXY_RESPONSE,
                "too long at {} bytes",
                buf.len()
            )
        }
        Err(BadAnswer::TrailingBytes) => panic!("the parser reported trailing bytes"),
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [chunk, flags, raw @ ..] = data else {
        return;
    };
    let buf = answer_bytes(*flags, raw);
    let whole = parse_answer(&buf);
    check_verdict(&buf, &whole);

    // Reads of `chunk + 1` bytes, but at most ~64 of them so a long input stays fast.
    let step = (usize::from(*chunk) + 1).max(buf.len() / 64).max(1);
    let mut fed = 0;
    let first = loop {
        fed = (fed + step).min(buf.len());
        let verdict = parse_answer(&buf[..fed]);
        check_verdict(&buf[..fed], &verdict);
        if verdict != Ok(Parsed::Incomplete) || fed == buf.len() {
            break verdict;
        }
    };
    assert_eq!(
        first, whole,
        "the verdict after {fed} bytes differs from the whole's"
    );

    if let Some(&b) = buf.first() {
        let expected = match b {
            0x16 => Sniffed::Tls,
            b'G' => Sniffed::Http,
            v if v == netbore_mux::frame::VERSION => Sniffed::Mux,
            _ => Sniffed::Unknown,
        };
        assert_eq!(sniff(b), expected, "sniff(0x{b:02x})");
        if matches!(whole, Ok(Parsed::Complete { .. })) {
            assert_eq!(
                sniff(b),
                Sniffed::Unknown,
                "a proxy answer sniffs as a transport"
            );
        }
    }
});
