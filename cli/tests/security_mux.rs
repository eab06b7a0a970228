//! An unauthenticated peer attacks the Edge's mux on the agent port (`tcp` transport:
//! no preamble, the first byte is the mux version byte). It floods pings without
//! reading a byte, then sends a frame header no decoder accepts and keeps sending.
//! The Edge's memory stays flat, it closes the connection within seconds, and it
//! still serves a normal agent afterwards.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Agent, Server, free_port};
use netbore_mux::frame::{Flags, Frame, FrameType, GoAwayCode, HEADER_LEN, Header};

const MIB: u64 = 1024;

/// The go-away codes among the frames of `bytes` (a reply read from the Edge).
fn go_away_codes(bytes: &[u8]) -> Vec<GoAwayCode> {
    let mut codes = Vec::new();
    for raw in bytes.chunks_exact(HEADER_LEN) {
        let raw: &[u8; HEADER_LEN] = raw.try_into().unwrap();
        match Header::decode(raw, u32::MAX) {
            Ok(h) if h.ty == FrameType::GoAway => codes.push(GoAwayCode(h.length)),
            Ok(h) if h.ty == FrameType::Data && h.length > 0 => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    codes
}

/// Writes `chunk` again and again, never reading, until the Edge closes the
/// connection (a write fails other than by timing out), `max` chunks went out or
/// `deadline` passed; calls `sample` after every attempt. Returns the bytes written
/// and whether the connection was found closed.
fn send_until_closed(
    s: &mut TcpStream,
    chunk: &[u8],
    max: usize,
    deadline: Instant,
    mut sample: impl FnMut(),
) -> (usize, bool) {
    let mut sent = 0;
    for _ in 0..max {
        if Instant::now() > deadline {
            break;
        }
        match s.write(chunk) {
            Ok(0) => return (sent, true),
            Ok(n) => sent += n,
            // The Edge reads no more (as it should after a bad header): keep pushing.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (sent, true),
        }
        sample();
    }
    (sent, false)
}

#[test]
fn a_ping_flood_then_garbage_costs_the_edge_little_and_is_cut_within_seconds() {
    let server = Server::start();
    let rss_before = server.proc.rss_kib();
    let mut peak = rss_before;
    let mut sample = || peak = peak.max(server.proc.rss_kib());

    let mut s = TcpStream::connect(server.agent).unwrap();
    s.set_nodelay(true).unwrap();
    // A write the Edge does not take within this returns WouldBlock; we try again.
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    // 1. Pings, never reading the pongs: 4,096 pings a write, at most 12 MiB or 3 s.
    let mut pings = Vec::with_capacity(4096 * HEADER_LEN);
    for opaque in 0..4096 {
        Frame::Ping {
            flags: Flags::empty(),
            opaque,
        }
        .encode(&mut pings);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    let (flooded, mut closed) = send_until_closed(&mut s, &pings, 256, deadline, &mut sample);
    assert!(flooded > 0, "the Edge took no ping at all");

    // 2. A header no decoder accepts (mux version, unknown type), then more bytes,
    // still never reading, until the Edge closes the connection (or 10 s pass).
    let garbage = [0, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    let junk = vec![0xeeu8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    if !closed {
        closed = send_until_closed(&mut s, &garbage, 1, deadline, &mut sample).1;
    }
    if !closed {
        closed = send_until_closed(&mut s, &junk, 4096, deadline, &mut sample).1;
    }
    let elapsed = started.elapsed();
    assert!(
        closed,
        "the Edge still held the connection after {elapsed:?}"
    );
    // Ping flood (3 s at most) plus the closing bound (3 s) and slack.
    assert!(elapsed < Duration::from_secs(8), "closed after {elapsed:?}");

    // What part of the reply is still readable ends in a flood (or protocol error)
    // go-away, never another reason.
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..1000 {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => reply.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    for code in go_away_codes(&reply) {
        assert!(
            code == GoAwayCode::FLOOD || code == GoAwayCode::PROTOCOL_ERROR,
            "go-away {code}"
        );
    }

    sample();
    let grown = peak.saturating_sub(rss_before);
    assert!(
        grown < 16 * MIB,
        "the Edge grew by {grown} KiB (from {rss_before} KiB) under the attack"
    );

    // The Edge is unharmed: a normal agent comes online.
    let origin = format!("127.0.0.1:{}", free_port());
    Agent::start(&server, &origin, &["--transport", "tcp"]);
}
