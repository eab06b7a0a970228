//! The session against a peer that sends what it cannot use: input after a decode
//! error, more than the read buffer may hold, replies it never reads.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::budget::FloodLimits;
use crate::frame::{Frame, FrameError, HEADER_LEN};

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
            while let Ok(ReadOutcome::Data(_)) = s.read(StreamId(1), || now) {}
        }
        if consumed >= valid_len + HEADER_LEN {
            prop_assert!(failed, "the bad header was read but not refused");
        }
    }
}

/// Moves everything `from` queued into `to`'s input.
fn pump(from: &mut Session, to: &mut Session, now: Instant) {
    let mut out = VecDeque::new();
    from.poll_transmit(&mut out);
    let mut buf = BytesMut::new();
    for chunk in out {
        buf.extend_from_slice(&chunk);
    }
    to.handle_input(&mut buf, now).unwrap();
}

#[test]
fn streams_open_only_while_their_windows_fit_the_shared_budget() {
    let window = u64::from(PROTOCOL_INITIAL_WINDOW);
    let budget = std::sync::Arc::new(crate::WindowBudget::new(3 * window));
    let shared = Config {
        window_budget: Some(budget.clone()),
        ..Config::default()
    };
    let (mut edge, now) = server(shared.clone());
    let (mut other_edge, _) = server(shared);
    let mut agent = Session::new(
        Role::Client,
        Config {
            keepalive_interval: None,
            ..Config::default()
        },
        now,
    );

    // Two sessions share three windows.
    let a = edge.open_stream().unwrap();
    let _b = other_edge.open_stream().unwrap();
    let _c = edge.open_stream().unwrap();
    assert_eq!(budget.granted(), 3 * window);
    assert_eq!(
        other_edge.open_stream(),
        Err(SessionError::WindowBudget(3 * window))
    );
    // A stream the peer opens takes nothing from it (the accept backlog bounds those).
    agent.open_stream().unwrap();
    pump(&mut agent, &mut edge, now);
    assert!(edge.accept_stream().is_some());
    assert_eq!(budget.granted(), 3 * window);

    // A closed stream gives its window back; a dropped session gives back all of its.
    edge.reset(a);
    edge.release(a);
    assert_eq!(budget.granted(), 2 * window);
    assert!(other_edge.open_stream().is_ok());
    assert_eq!(budget.granted(), 3 * window);
    drop(edge);
    assert_eq!(budget.granted(), 2 * window);
    drop(other_edge);
    assert_eq!(budget.granted(), 0);
}

#[test]
fn windows_grow_only_into_what_the_budget_has_left() {
    let window = u64::from(PROTOCOL_INITIAL_WINDOW);
    let budget = std::sync::Arc::new(crate::WindowBudget::new(window + window / 2));
    let (mut edge, mut now) = server(Config {
        window_budget: Some(budget.clone()),
        ..Config::default()
    });
    let mut agent = Session::new(
        Role::Client,
        Config {
            keepalive_interval: None,
            ..Config::default()
        },
        now,
    );
    let id = edge.open_stream().unwrap();
    pump(&mut edge, &mut agent, now);
    // The agent sends fast and the Edge reads at once: the window would double each
    // time, but only half a window is left in the budget.
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..64 {
        let mut sent = 0;
        while sent < chunk.len() {
            let n = agent.write(id, &chunk[sent..]).unwrap();
            if n == 0 {
                break;
            }
            sent += n;
        }
        pump(&mut agent, &mut edge, now);
        while let Ok(ReadOutcome::Data(_)) = edge.read(id, || now) {}
        pump(&mut edge, &mut agent, now);
        now += std::time::Duration::from_micros(10);
    }
    assert_eq!(edge.stats().window_total, window + window / 2);
    assert_eq!(budget.granted(), window + window / 2);
    drop(edge);
    assert_eq!(budget.granted(), 0);
}

#[test]
fn data_left_unread_stops_pinning_the_read_buffer_it_arrived_in() {
    let (mut edge, now) = server(Config::default());
    let mut agent = Session::new(
        Role::Client,
        Config {
            keepalive_interval: None,
            ..Config::default()
        },
        now,
    );
    let id = edge.open_stream().unwrap();
    pump(&mut edge, &mut agent, now);
    agent.write(id, &[1u8; 3000]).unwrap();
    let mut out = VecDeque::new();
    agent.poll_transmit(&mut out);
    // One read buffer, much larger than what the stream keeps.
    let mut buf = BytesMut::with_capacity(256 * 1024);
    for chunk in out {
        buf.extend_from_slice(&chunk);
    }
    edge.handle_input(&mut buf, now).unwrap();
    assert!(buf.is_empty());
    assert!(
        !buf.try_reclaim(256 * 1024),
        "the unread data shares the read buffer"
    );
    // Read promptly nothing is copied; left unread, it is copied out once stalled.
    edge.handle_timeout(now + STALLED / 2);
    assert!(!buf.try_reclaim(256 * 1024));
    let at = edge
        .poll_timeout()
        .expect("a look for stalled streams is due");
    assert!(at <= now + STALLED);
    edge.handle_timeout(now + STALLED);
    assert!(
        buf.try_reclaim(256 * 1024),
        "the stalled stream still pins the read buffer"
    );
    assert_eq!(edge.poll_timeout(), None);
    match edge.read(id, || now + STALLED).unwrap() {
        ReadOutcome::Data(d) => assert_eq!(&d[..], &[1u8; 3000][..]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_peer_heard_from_while_its_answer_queues_is_alive_until_it_falls_silent() {
    let start = Instant::now();
    let config = Config {
        keepalive_interval: Some(Duration::from_secs(10)),
        keepalive_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut s = Session::new(Role::Server, config, start);
    // The first ping goes at once; the answer queues behind the peer's data, but
    // its other frames keep coming.
    s.handle_timeout(start);
    for second in 1..=12 {
        let now = start + Duration::from_secs(second);
        let mut input = encode(&[ping(1000 + second as u32)]);
        s.handle_input(&mut input, now).unwrap();
        s.handle_timeout(now);
        assert!(
            !s.is_closed(),
            "alive at {second} s: the peer keeps sending"
        );
    }
    // Then nothing: dead the unanswered-ping timeout after the last bytes.
    let last = start + Duration::from_secs(12);
    s.handle_timeout(last + Duration::from_millis(4900));
    assert!(s.error().is_none());
    assert_eq!(s.poll_timeout(), Some(last + Duration::from_secs(5)));
    s.handle_timeout(last + Duration::from_secs(5));
    assert_eq!(
        s.error(),
        Some(&SessionError::KeepaliveTimeout(Duration::from_secs(5)))
    );
}

#[test]
fn a_session_that_carried_thousands_of_streams_keeps_no_table_sized_for_them() {
    let (mut edge, _) = server(Config {
        max_streams: 20_000,
        ..Config::default()
    });
    let ids: Vec<StreamId> = (0..10_000).map(|_| edge.open_stream().unwrap()).collect();
    assert!(edge.streams.capacity() >= 10_000);
    for id in ids.iter().skip(10) {
        edge.reset(*id);
        edge.release(*id);
    }
    assert_eq!(edge.streams.len(), 10);
    assert!(
        edge.streams.capacity() < 1_000,
        "room for {} streams kept for 10",
        edge.streams.capacity()
    );
}
