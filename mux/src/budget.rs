//! Flood budgets: frames that cost the receiver work but carry nothing useful.
//!
//! A peer can keep a session busy without ever moving a byte of stream data: empty
//! DATA frames, zero-increment WINDOW_UPDATEs, PINGs (each one makes us queue a PONG)
//! and streams opened and reset at once (the HTTP/2 "rapid reset" shape). Each is
//! legal once, so none is a protocol error; in bulk they are a CPU and memory attack
//! (CVE-2019-9512/9518, CVE-2023-44487 in HTTP/2). Like h2 and Pingora, the session
//! counts them and ends with go-away `FLOOD` when a peer spends more than its budget.
//!
//! The rule is deliberately simple: per kind, at most `limit` frames in any window
//! of [`FloodLimits::window`], counted in fixed windows (a window starts at the first
//! counted frame after the previous one ended, so a burst straddling two windows may
//! reach twice the limit, never more). Useful frames (data with a payload, credit,
//! opens that carry data) are never counted, so normal traffic cannot trip a budget
//! however fast it flows.

use std::time::{Duration, Instant};

use crate::frame::Frame;

/// The kinds of useless frames the session counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FloodKind {
    /// DATA frames with no payload and no flag.
    EmptyData,
    /// WINDOW_UPDATE frames with a zero increment and no flag.
    ZeroWindowUpdate,
    /// PING frames other than the answer to our own outstanding ping.
    Ping,
    /// Streams the peer opened and reset before sending a byte of data on them.
    ResetOpen,
    /// Frames without payload that change nothing: for a stream that is gone or reset,
    /// a repeated FIN, or credit on top of a window already at its maximum.
    Ignored,
}

impl FloodKind {
    const COUNT: usize = 5;

    fn index(self) -> usize {
        match self {
            FloodKind::EmptyData => 0,
            FloodKind::ZeroWindowUpdate => 1,
            FloodKind::Ping => 2,
            FloodKind::ResetOpen => 3,
            FloodKind::Ignored => 4,
        }
    }

    /// The kind of `frame` when it is an empty DATA or a zero WINDOW_UPDATE frame
    /// without flags: a frame that does nothing at all.
    pub(crate) fn of_empty_frame(frame: &Frame) -> Option<FloodKind> {
        match frame {
            Frame::Data { flags, payload, .. } if payload.is_empty() && flags.0 == 0 => {
                Some(FloodKind::EmptyData)
            }
            Frame::WindowUpdate {
                flags,
                increment: 0,
                ..
            } if flags.0 == 0 => Some(FloodKind::ZeroWindowUpdate),
            _ => None,
        }
    }

    /// A short human name.
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::EmptyData => "empty data frames",
            FloodKind::ZeroWindowUpdate => "zero-increment window updates",
            FloodKind::Ping => "pings",
            FloodKind::ResetOpen => "streams opened and reset",
            FloodKind::Ignored => "frames that change nothing",
        }
    }
}

impl std::fmt::Display for FloodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How many useless frames of each kind a peer may send per [`FloodLimits::window`]
/// before the session ends with go-away `FLOOD`. A correct Netbore peer sends none of
/// the first two kinds at all, one ping per keepalive interval, and data on every
/// stream it opens, so the defaults leave wide room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodLimits {
    /// The counting window.
    pub window: Duration,
    /// Empty DATA frames (no payload, no flag) per window. Stops a peer from burning
    /// our CPU with frames that cost a decode and a stream lookup each and do nothing.
    pub empty_data: u32,
    /// Zero-increment WINDOW_UPDATE frames (no flag) per window. Stops the same CPU
    /// flood with window updates (h2's and Pingora's "empty frames" protection).
    pub zero_window_updates: u32,
    /// PINGs per window (other than the answer to ours). Each one makes us queue a
    /// PONG: stops a peer from making us build replies faster than it reads them
    /// (the HTTP/2 ping flood, CVE-2019-9512). Keepalive at the fastest interval the
    /// CLI allows (1 s) sends 10 per default window.
    pub pings: u32,
    /// Streams the peer opens and resets before sending any data on them, per window.
    /// Stops the rapid-reset attack (CVE-2023-44487): each open makes the application
    /// accept a stream and start work that the reset throws away.
    pub reset_opens: u32,
    /// Frames without payload that change nothing (for a stream already gone or
    /// reset, a repeated FIN, credit past the largest window) per window. Stops the
    /// same CPU flood with frames that are not literally empty. A correct peer sends
    /// a few such frames after each stream the Edge resets (those already in flight),
    /// so the default leaves room for thousands of resets per window.
    pub ignored: u32,
}

impl Default for FloodLimits {
    fn default() -> Self {
        FloodLimits {
            window: Duration::from_secs(10),
            empty_data: 100,
            zero_window_updates: 100,
            pings: 50,
            reset_opens: 200,
            ignored: 5000,
        }
    }
}

impl FloodLimits {
    fn limit(&self, kind: FloodKind) -> u32 {
        match kind {
            FloodKind::EmptyData => self.empty_data,
            FloodKind::ZeroWindowUpdate => self.zero_window_updates,
            FloodKind::Ping => self.pings,
            FloodKind::ResetOpen => self.reset_opens,
            FloodKind::Ignored => self.ignored,
        }
    }
}

/// The counters of one session. Touched only by the frame kinds above, never by data
/// with a payload: the hot path pays nothing.
#[derive(Debug, Clone)]
pub(crate) struct FloodBudget {
    limits: FloodLimits,
    window_start: Option<Instant>,
    counts: [u32; FloodKind::COUNT],
}

impl FloodBudget {
    pub(crate) fn new(limits: FloodLimits) -> Self {
        FloodBudget {
            limits,
            window_start: None,
            counts: [0; FloodKind::COUNT],
        }
    }

    /// Counts one frame of `kind` at `now`; `Err(kind)` once the budget is spent.
    pub(crate) fn spend(&mut self, kind: FloodKind, now: Instant) -> Result<(), FloodKind> {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < self.limits.window => {}
            _ => {
                self.window_start = Some(now);
                self.counts = [0; FloodKind::COUNT];
            }
        }
        let count = &mut self.counts[kind.index()];
        *count = count.saturating_add(1);
        if *count > self.limits.limit(kind) {
            return Err(kind);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::error::SessionError;
    use crate::frame::{Flags, GoAwayCode, StreamId};
    use crate::session::{Role, Session};
    use bytes::{Bytes, BytesMut};

    fn limits() -> FloodLimits {
        FloodLimits {
            window: Duration::from_secs(10),
            empty_data: 3,
            zero_window_updates: 3,
            pings: 3,
            reset_opens: 3,
            ignored: 3,
        }
    }

    #[test]
    fn a_budget_refills_after_its_window() {
        let t0 = Instant::now();
        let mut b = FloodBudget::new(limits());
        for _ in 0..3 {
            b.spend(FloodKind::Ping, t0).unwrap();
        }
        // Other kinds have budgets of their own.
        b.spend(FloodKind::EmptyData, t0).unwrap();
        assert_eq!(
            b.spend(FloodKind::Ping, t0 + Duration::from_secs(9)),
            Err(FloodKind::Ping)
        );
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            b.spend(FloodKind::Ping, t1).unwrap();
        }
        assert!(b.spend(FloodKind::Ping, t1).is_err());
    }

    /// A server session under the test limits, its keepalive off.
    fn server() -> (Session, Instant) {
        server_with(limits())
    }

    fn server_with(flood: FloodLimits) -> (Session, Instant) {
        let now = Instant::now();
        let cfg = Config {
            keepalive_interval: None,
            flood,
            ..Config::default()
        };
        (Session::new(Role::Server, cfg, now), now)
    }

    fn wire(frames: &[Frame]) -> BytesMut {
        let mut buf = BytesMut::new();
        for f in frames {
            f.encode(&mut buf);
        }
        buf
    }

    /// The go-away code among the frames `s` queued, if any.
    fn go_away_sent(s: &mut Session) -> Option<GoAwayCode> {
        let mut out = std::collections::VecDeque::new();
        s.poll_transmit(&mut out);
        let mut bytes = BytesMut::new();
        for c in out {
            bytes.extend_from_slice(&c);
        }
        let mut dec = crate::frame::FrameDecoder::new(u32::MAX);
        let mut code = None;
        while let Ok(Some(f)) = dec.decode(&mut bytes) {
            if let Frame::GoAway { code: c } = f {
                code = Some(c);
            }
        }
        code
    }

    /// Feeds `make(i)` for i in 0.. until the session fails; returns the frame count
    /// fed and the error.
    fn flood(s: &mut Session, now: Instant, make: impl Fn(u32) -> Vec<Frame>) -> SessionError {
        for i in 0..1000 {
            let mut buf = wire(&make(i));
            if let Err(e) = s.handle_input(&mut buf, now) {
                return e;
            }
        }
        panic!("1000 rounds of a flood were accepted");
    }

    #[test]
    fn each_flood_kind_ends_in_a_flood_go_away() {
        type Flood = fn(u32) -> Vec<Frame>;
        let floods: [(FloodKind, Flood); 7] = [
            // Credit for a stream that never existed.
            (FloodKind::Ignored, |_| {
                vec![Frame::WindowUpdate {
                    stream: StreamId(999),
                    flags: Flags::empty(),
                    increment: 1,
                }]
            }),
            // A FIN on a stream already finished.
            (FloodKind::Ignored, |_| {
                vec![Frame::Data {
                    stream: StreamId(1),
                    flags: Flags::FIN,
                    payload: Bytes::new(),
                }]
            }),
            // Credit past the largest window.
            (FloodKind::Ignored, |_| {
                vec![Frame::WindowUpdate {
                    stream: StreamId(1),
                    flags: Flags::empty(),
                    increment: u32::MAX,
                }]
            }),
            (FloodKind::EmptyData, |_| {
                vec![Frame::Data {
                    stream: StreamId(1),
                    flags: Flags::empty(),
                    payload: Bytes::new(),
                }]
            }),
            (FloodKind::ZeroWindowUpdate, |_| {
                vec![Frame::WindowUpdate {
                    stream: StreamId(1),
                    flags: Flags::empty(),
                    increment: 0,
                }]
            }),
            (FloodKind::Ping, |i| {
                vec![Frame::Ping {
                    flags: Flags::empty(),
                    opaque: i,
                }]
            }),
            (FloodKind::ResetOpen, |i| {
                let stream = StreamId(3 + 2 * i);
                vec![
                    Frame::WindowUpdate {
                        stream,
                        flags: Flags::SYN,
                        increment: 0,
                    },
                    Frame::WindowUpdate {
                        stream,
                        flags: Flags::RST,
                        increment: 0,
                    },
                ]
            }),
        ];
        for (kind, make) in floods {
            let (mut s, now) = server();
            // Stream 1 exists, so the frames above hit a live stream.
            let mut open = wire(&[Frame::Data {
                stream: StreamId(1),
                flags: Flags::SYN,
                payload: Bytes::from_static(b"hello"),
            }]);
            s.handle_input(&mut open, now).unwrap();
            let e = flood(&mut s, now, make);
            assert_eq!(e, SessionError::Flood(kind));
            assert_eq!(e.go_away_code(), GoAwayCode::FLOOD);
            assert!(s.is_closing());
            assert_eq!(go_away_sent(&mut s), Some(GoAwayCode::FLOOD), "{kind}");
        }
    }

    #[test]
    fn an_open_and_reset_in_one_frame_counts_too() {
        let (mut s, now) = server();
        let e = flood(&mut s, now, |i| {
            vec![Frame::WindowUpdate {
                stream: StreamId(1 + 2 * i),
                flags: Flags::SYN | Flags::RST,
                increment: 0,
            }]
        });
        assert_eq!(e, SessionError::Flood(FloodKind::ResetOpen));
    }

    #[test]
    fn normal_traffic_never_spends_a_budget() {
        let (mut s, mut now) = server_with(FloodLimits::default());
        // Keepalive pings every second (the fastest the CLI allows) for an hour.
        for i in 0..3600 {
            let mut buf = wire(&[Frame::Ping {
                flags: Flags::empty(),
                opaque: i,
            }]);
            s.handle_input(&mut buf, now).unwrap();
            now += Duration::from_secs(1);
        }
        // Thousands of streams, each opened with data, then reset or finished;
        // data frames with payloads, credit, and empty frames that carry a flag.
        for i in 0..5000u32 {
            let stream = StreamId(1 + 2 * i);
            let mut frames = vec![
                Frame::Data {
                    stream,
                    flags: Flags::SYN,
                    payload: Bytes::from_static(b"header"),
                },
                Frame::WindowUpdate {
                    stream,
                    flags: Flags::empty(),
                    increment: 1,
                },
                Frame::Data {
                    stream,
                    flags: Flags::empty(),
                    payload: Bytes::from_static(b"more"),
                },
            ];
            frames.push(if i % 2 == 0 {
                Frame::WindowUpdate {
                    stream,
                    flags: Flags::RST,
                    increment: 0,
                }
            } else {
                Frame::Data {
                    stream,
                    flags: Flags::FIN,
                    payload: Bytes::new(),
                }
            });
            let mut buf = wire(&frames);
            s.handle_input(&mut buf, now).unwrap();
            while let Some(id) = s.accept_stream() {
                s.release(id);
            }
        }
        assert!(!s.is_closing(), "{:?}", s.error());
    }
}
