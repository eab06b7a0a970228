//! The session against a peer that sends what it cannot use: input after a decode
//! error, more than the read buffer may hold, replies it never reads.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::budget::FloodLimits;
use crate::frame::FrameError;

fn server(config: Config) -> (Session, Instant) {
    let now = Instant::now();
    let config = Config {
        keepalive_interval: None,
        ..config
    };
    (Session::new(Role::Server, config, now), now)
}

fn ping(opaque: u32) -> Frame {
    Frame::Ping {
        flags: Flags::empty(),
        opaque,
    }
}

fn encode(frames: &[Frame]) -> BytesMut {
    let mut buf = BytesMut::new();
    for f in frames {
        f.encode(&mut buf);
    }
    buf
}

const BAD_HEADER: [u8; HEADER_LEN] = [9, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];

#[test]
fn a_decode_error_is_final_and_later_input_is_discarded() {
    let (mut s, now) = server(Config::default());
    let mut buf = encode(&[ping(1)]);
    buf.extend_from_slice(&BAD_HEADER);
    buf.extend_from_slice(&[0xee; 64 * 1024]);
    let e = s.handle_input(&mut buf, now).unwrap_err();
    assert_eq!(e, SessionError::Frame(FrameError::Version(9)));
    assert!(buf.is_empty(), "undecodable bytes stayed in the buffer");
    assert!(!s.wants_input());
    assert_eq!(s.input_room(0, 0), 0);
    let mut out = VecDeque::new();
    let queued = s.poll_transmit(&mut out);
    assert_eq!(queued, 2 * HEADER_LEN, "the pong and the go-away");

    // Whatever comes later, valid or not, is dropped unread and answered by nothing.
    for _ in 0..100 {
        let mut more = encode(&[ping(2)]);
        more.extend_from_slice(&[0xee; 16 * 1024]);
        assert_eq!(s.handle_input(&mut more, now), Ok(()));
        assert!(more.is_empty());
        assert_eq!(s.input_room(0, 0), 0);
    }
    assert!(!s.has_transmit());
    assert_eq!(s.error(), Some(&e));
}

#[test]
fn replies_a_peer_never_reads_stop_the_reading() {
    let config = Config {
        max_send_buffer: MAX_SEND_FRAME,
        flood: FloodLimits {
            pings: u32::MAX,
            ..FloodLimits::default()
        },
        ..Config::default()
    };
    let (mut s, now) = server(config);
    let bound = 3 * MAX_SEND_FRAME;
    let mut fed = 0;
    // Feed pings the way the driver would: only while the session has room.
    while s.input_room(0, 0) > 0 {
        let mut buf = encode(&[ping(fed)]);
        s.handle_input(&mut buf, now).unwrap();
        fed += 1;
        assert!(fed < 1_000_000, "the session never stopped reading");
    }
    assert_eq!(s.stats().queued_bytes, bound);
    // The driver takes the pongs but cannot write them: still no room to read.
    let mut out = VecDeque::new();
    let unsent = s.poll_transmit(&mut out);
    assert_eq!(unsent, bound);
    assert_eq!(s.input_room(0, unsent), 0);
    // Written at last: reading resumes.
    assert!(s.input_room(0, 0) > 0);
}

#[test]
fn the_read_cap_bounds_what_the_driver_may_read() {
    let config = Config {
        max_read_buffer: 64 * 1024,
        ..Config::default()
    };
    let (s, _) = server(config);
    assert_eq!(s.input_room(0, 0), 64 * 1024);
    assert_eq!(s.input_room(11, 0), 64 * 1024 - 11);
    assert_eq!(s.input_room(64 * 1024, 0), 0);
    // A cap below one header and some payload is raised to the minimum.
    let (s, _) = server(Config {
        max_read_buffer: 1,
        ..Config::default()
    });
    assert_eq!(s.config().max_read_buffer, crate::config::MIN_READ_BUFFER);
}

/// Valid traffic for a server session: a stream opened with data, then data frames
/// of the given sizes and pings.
fn valid_frames(sizes: &[usize]) -> Vec<Frame> {
    let mut frames = vec![Frame::Data {
        stream: StreamId(1),
        flags: Flags::SYN,
        payload: Bytes::from_static(b"open"),
    }];
    for (i, &n) in sizes.iter().enumerate() {
        frames.push(Frame::Data {
            stream: StreamId(1),
            flags: Flags::empty(),
            payload: Bytes::from(vec![i as u8; n]),
        });
        frames.push(ping(i as u32));
    }
    frames
}

proptest! {
    /// A driver loop over arbitrary reads: valid frames (data split over reads),
    /// then a bad header, then junk. The buffer never exceeds the cap, holds less
    /// than a header between reads, and once the header is seen nothing is read.
    #[test]
    fn the_read_buffer_never_exceeds_its_cap_and_reading_stops_after_an_error(
        sizes in proptest::collection::vec(1usize..40_000, 0..6),
        reads in proptest::collection::vec(1usize..200_000, 1..40),
        junk in 0usize..3_000_000,
    ) {
        let cap = crate::config::MIN_READ_BUFFER * 4;
        let (mut s, now) = server(Config {
            max_read_buffer: cap,
            ..Config::default()
        });
        let mut wire = encode(&valid_frames(&sizes));
        let valid_len = wire.len();
        wire.extend_from_slice(&BAD_HEADER);
        wire.extend_from_slice(&vec![0xab; junk]);
        let mut wire = wire.freeze();
        let mut buf = BytesMut::new();
        let mut consumed = 0;
        let mut failed = false;
        for want in reads.iter().cycle().take(2000) {
            let room = s.input_room(buf.len(), 0);
            if failed {
                prop_assert_eq!(room, 0);
                break;
            }
            prop_assert!(room > 0, "no room before any error");
            let n = (*want).min(room).min(wire.len());
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&wire.split_to(n));
            consumed += n;
            prop_assert!(buf.len() <= cap);
            match s.handle_input(&mut buf, now) {
                Ok(()) => prop_assert!(buf.len() < HEADER_LEN),
                Err(_) => {
                    prop_assert!(consumed > valid_len);
                    prop_assert!(buf.is_empty());
                    failed = true;
                }
            }
            // The application keeps up, so data frames never exceed the window.
            while let Some(id) = s.accept_stream() {
                let _ = id;
            }
            while let Ok(ReadOutcome::Data(_)) = s.read(StreamId(1), now) {}
        }
        if consumed >= valid_len + HEADER_LEN {
            prop_assert!(failed, "the bad header was read but not refused");
        }
    }
}
