//! Fuzzes the mux frame codec (`netbore_mux::frame::FrameDecoder`).
//!
//! Input layout:
//! - byte 0 picks the decoder's `max_frame_size` (see [`limit`]);
//! - byte 1 is `n`, the length (mod 8) of a split pattern, followed by `n` bytes of
//!   chunk sizes (0 counts as 1); an empty pattern feeds the wire one byte at a time;
//! - everything after is the wire.
//!
//! The wire is decoded twice: in one piece, and in chunks following the split
//! pattern. Invariants:
//! - every decoded frame re-encodes (`Frame::encode`) to exactly the bytes it was
//!   decoded from, and its header is what `Header::decode` says about those bytes;
//! - data payloads never exceed the limit;
//! - an error is exactly `Header::decode`'s verdict on the next 12 bytes and consumes
//!   nothing; `Ok(None)` only ever means "a frame is incomplete";
//! - both feeding schedules produce the same frames and end the same way.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use netbore_mux::config::MAX_SEND_FRAME;
use netbore_mux::frame::{
    Frame, FrameDecoder, FrameError, FrameType, GoAwayCode, HEADER_LEN, Header,
};

/// How a decoding run ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The decoder waits for more bytes; the incomplete frame starts at this offset.
    NeedMore(usize),
    /// The header at this offset is invalid.
    Failed(usize, FrameError),
}

fn limit(selector: u8) -> u32 {
    let arg = u32::from(selector >> 2);
    match selector & 3 {
        0 => arg,        // 0..=63: tiny limits, most data frames refused
        1 => arg * 1024, // up to 63 KiB
        2 => MAX_SEND_FRAME as u32,
        _ => u32::MAX, // never refuses on size
    }
}

fn header_at(wire: &[u8], at: usize) -> [u8; HEADER_LEN] {
    wire[at..at + HEADER_LEN].try_into().expect("12 bytes")
}

fn check_frame(frame: &Frame, raw: &[u8], limit: u32) {
    let mut encoded = Vec::with_capacity(raw.len());
    frame.encode(&mut encoded);
    assert_eq!(
        encoded, raw,
        "frame {frame:?} does not re-encode to the bytes it was decoded from"
    );
    let header =
        Header::decode(&header_at(raw, 0), limit).expect("decoded frame has a valid header");
    assert_eq!(header, frame.header());
    match frame {
        Frame::Data { payload, .. } => {
            assert!(
                payload.len() as u64 <= u64::from(limit),
                "data payload of {} bytes exceeds the limit of {limit}",
                payload.len()
            );
            assert_eq!(raw.len(), HEADER_LEN + payload.len());
        }
        _ => assert_eq!(raw.len(), HEADER_LEN),
    }
    if let Frame::GoAway { code } = frame {
        // Any code is representable; the name must not panic on unknown values.
        let _ = GoAwayCode(code.0).name();
    }
}

/// Decodes `wire`, feeding it in chunks whose sizes `next_chunk` returns.
fn run(wire: &[u8], limit: u32, mut next_chunk: impl FnMut() -> usize) -> (Vec<Frame>, End) {
    let mut dec = FrameDecoder::new(limit);
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    let mut frame_start = 0usize;
    let mut frames = Vec::new();
    loop {
        loop {
            let consumed_before = fed - buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let end = fed - buf.len();
                    check_frame(&frame, &wire[frame_start..end], limit);
                    frames.push(frame);
                    frame_start = end;
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(
                        fed - buf.len(),
                        consumed_before,
                        "a failed decode consumed bytes"
                    );
                    assert_eq!(
                        consumed_before, frame_start,
                        "error in the middle of a frame"
                    );
                    assert!(wire.len() >= frame_start + HEADER_LEN);
                    assert_eq!(
                        Header::decode(&header_at(wire, frame_start), limit),
                        Err(e.clone()),
                        "decoder error differs from Header::decode"
                    );
                    let code = e.go_away_code();
                    match e {
                        FrameError::TooLarge { len, max } => {
                            assert_eq!(code, GoAwayCode::FRAME_TOO_LARGE);
                            assert!(len > max);
                            assert_eq!(max, limit);
                        }
                        _ => assert_eq!(code, GoAwayCode::PROTOCOL_ERROR),
                    }
                    // The decoder stays failed on the same bytes.
                    assert_eq!(dec.decode(&mut buf), Err(e.clone()));
                    return (frames, End::Failed(frame_start, e));
                }
            }
        }
        assert!(
            dec.bytes_wanted(buf.len()) > 0,
            "decoder returned Ok(None) yet wants no more bytes"
        );
        if fed == wire.len() {
            break;
        }
        let n = next_chunk().clamp(1, wire.len() - fed);
        buf.extend_from_slice(&wire[fed..fed + n]);
        fed += n;
    }
    // What is left must really be an incomplete frame.
    let rest = &wire[frame_start..];
    if rest.len() >= HEADER_LEN {
        let h = Header::decode(&header_at(rest, 0), limit)
            .expect("incomplete frame has a valid header");
        assert_eq!(
            h.ty,
            FrameType::Data,
            "only data frames can be incomplete after a header"
        );
        assert!((h.length as usize) > rest.len() - HEADER_LEN);
    }
    (frames, End::NeedMore(frame_start))
}

fuzz_target!(|data: &[u8]| {
    let [selector, pattern_len, rest @ ..] = data else {
        return;
    };
    let limit = limit(*selector);
    let n = usize::from(*pattern_len % 8).min(rest.len());
    let (pattern, wire) = rest.split_at(n);

    let whole = run(wire, limit, || usize::MAX);
    let mut i = 0usize;
    let split = run(wire, limit, || {
        let size = if pattern.is_empty() {
            1
        } else {
            usize::from(pattern[i % pattern.len()]).max(1)
        };
        i += 1;
        size
    });
    assert_eq!(whole, split, "feeding in pieces changed the outcome");
});
