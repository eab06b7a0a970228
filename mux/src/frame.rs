//! The mux frame codec: a fixed 12-byte header, then (for data frames) the payload.
//!
//! The layout is written down byte by byte in `docs/protocols/mux.md`; this file and
//! that document change together.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of every frame header in bytes.
pub const HEADER_LEN: usize = 12;

/// The protocol version carried in every header.
pub const VERSION: u8 = 0;

/// Identifies a stream inside one session. Id 0 is the session itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl StreamId {
    /// The session-level id used by ping and go-away frames.
    pub const SESSION: StreamId = StreamId(0);
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Frame flags (a bit set carried in the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// Opens a new stream.
    pub const SYN: Flags = Flags(0x1);
    /// Acknowledges a stream open, or answers a ping.
    pub const ACK: Flags = Flags(0x2);
    /// The sender will send no more data on this stream (half-close).
    pub const FIN: Flags = Flags(0x4);
    /// The stream is aborted in both directions.
    pub const RST: Flags = Flags(0x8);
    /// Every flag this version defines; other bits are a protocol error.
    pub const ALL: Flags = Flags(0xF);

    /// No flag set.
    pub const fn empty() -> Self {
        Flags(0)
    }

    /// True when every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with every bit of `other` cleared.
    pub const fn without(self, other: Flags) -> Self {
        Flags(self.0 & !other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

/// The reason carried by a go-away frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAwayCode(pub u32);

impl GoAwayCode {
    /// Orderly shutdown.
    pub const NORMAL: GoAwayCode = GoAwayCode(0);
    /// The peer broke the protocol (bad header, bad stream id, flow control violation).
    pub const PROTOCOL_ERROR: GoAwayCode = GoAwayCode(1);
    /// The sender hit an internal error.
    pub const INTERNAL_ERROR: GoAwayCode = GoAwayCode(2);
    /// A frame exceeded the receiver's maximum frame size.
    pub const FRAME_TOO_LARGE: GoAwayCode = GoAwayCode(3);
    /// The peer did not answer keepalive pings in time.
    pub const KEEPALIVE_TIMEOUT: GoAwayCode = GoAwayCode(4);
    /// The session was closed on purpose by the application (e.g. tunnel deleted).
    pub const CLOSED_BY_APPLICATION: GoAwayCode = GoAwayCode(5);
    /// The peer spent a flood budget: too many frames that do nothing (empty data,
    /// zero window updates, pings, streams opened and reset at once). HTTP/2 calls
    /// this `ENHANCE_YOUR_CALM`.
    pub const FLOOD: GoAwayCode = GoAwayCode(6);

    /// A short human name for the code.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "normal",
            1 => "protocol error",
            2 => "internal error",
            3 => "frame too large",
            4 => "keepalive timeout",
            5 => "closed by application",
            6 => "flood",
            _ => "unknown reason",
        }
    }
}

impl std::fmt::Display for GoAwayCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// The frame types of this version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Stream data; the header's length is the payload length.
    Data = 0,
    /// Flow-control credit for a stream; the length field is the increment.
    WindowUpdate = 1,
    /// Keepalive / RTT probe on stream 0; the length field is an opaque value.
    Ping = 2,
    /// Session shutdown on stream 0; the length field is the [`GoAwayCode`].
    GoAway = 3,
}

/// Why bytes could not be decoded as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The version byte is not [`VERSION`].
    #[error("unsupported mux version {0}")]
    Version(u8),
    /// The type byte names no known frame type.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// Flags outside [`Flags::ALL`] are set.
    #[error("reserved flag bits set: {0:#06x}")]
    ReservedFlags(u16),
    /// A data payload is longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced payload length.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// Flags this frame type does not take (PING takes only ACK, GO_AWAY none).
    #[error("frame type {ty:?} does not take flags {flags:#06x}")]
    FlagsNotAllowed {
        /// The frame type.
        ty: FrameType,
        /// The flags sent.
        flags: u16,
    },
    /// A stream frame on id 0, or a session frame on a stream id.
    #[error("frame type {ty:?} is not allowed on stream {stream}")]
    BadStreamId {
        /// The frame type.
        ty: FrameType,
        /// The offending id.
        stream: StreamId,
    },
}

impl FrameError {
    /// The go-away code a receiver answers this error with.
    pub fn go_away_code(&self) -> GoAwayCode {
        match self {
            FrameError::TooLarge { .. } => GoAwayCode::FRAME_TOO_LARGE,
            _ => GoAwayCode::PROTOCOL_ERROR,
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Frame type.
    pub ty: FrameType,
    /// Flags.
    pub flags: Flags,
    /// Stream the frame belongs to (0 for session frames).
    pub stream: StreamId,
    /// Payload length (data) or the type's value field.
    pub length: u32,
}

impl Header {
    /// Validates and decodes a header. `max_frame_size` bounds data payloads.
    pub fn decode(bytes: &[u8; HEADER_LEN], max_frame_size: u32) -> Result<Header, FrameError> {
        let mut b = &bytes[..];
        let version = b.get_u8();
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let ty = match b.get_u8() {
            0 => FrameType::Data,
            1 => FrameType::WindowUpdate,
            2 => FrameType::Ping,
            3 => FrameType::GoAway,
            other => return Err(FrameError::UnknownType(other)),
        };
        let flags = b.get_u16();
        if flags & !Flags::ALL.0 != 0 {
            return Err(FrameError::ReservedFlags(flags));
        }
        // Session frames carry no stream flags: PING only ACK, GO_AWAY none.
        let allowed = match ty {
            FrameType::Ping => Flags::ACK.0,
            FrameType::GoAway => 0,
            FrameType::Data | FrameType::WindowUpdate => Flags::ALL.0,
        };
        if flags & !allowed != 0 {
            return Err(FrameError::FlagsNotAllowed { ty, flags });
        }
        let stream = StreamId(b.get_u32());
        let length = b.get_u32();
        let on_session = stream == StreamId::SESSION;
        let session_frame = matches!(ty, FrameType::Ping | FrameType::GoAway);
        if on_session != session_frame {
            return Err(FrameError::BadStreamId { ty, stream });
        }
        if ty == FrameType::Data && length > max_frame_size {
            return Err(FrameError::TooLarge {
                len: length,
                max: max_frame_size,
            });
        }
        Ok(Header {
            ty,
            flags: Flags(flags),
            stream,
            length,
        })
    }

    /// Encodes the header into 12 bytes.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(VERSION);
        dst.put_u8(self.ty as u8);
        dst.put_u16(self.flags.0);
        dst.put_u32(self.stream.0);
        dst.put_u32(self.length);
    }

    /// The header as an array.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        self.encode(&mut &mut out[..]);
        out
    }
}

/// One mux frame, payload included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Stream data (may be empty when it only carries flags).
    Data {
        /// Target stream.
        stream: StreamId,
        /// SYN / ACK / FIN / RST.
        flags: Flags,
        /// The bytes, shared with the read buffer they arrived in.
        payload: Bytes,
    },
    /// Flow-control credit (may carry SYN / ACK / FIN / RST too).
    WindowUpdate {
        /// Target stream.
        stream: StreamId,
        /// SYN / ACK / FIN / RST.
        flags: Flags,
        /// Bytes of credit added.
        increment: u32,
    },
    /// A keepalive probe (no flag) or its answer (ACK).
    Ping {
        /// Empty or [`Flags::ACK`].
        flags: Flags,
        /// Echoed by the answer.
        opaque: u32,
    },
    /// The sender is shutting the session down.
    GoAway {
        /// Why.
        code: GoAwayCode,
    },
}

impl Frame {
    /// The header describing this frame.
    pub fn header(&self) -> Header {
        match self {
            Frame::Data {
                stream,
                flags,
                payload,
            } => Header {
                ty: FrameType::Data,
                flags: *flags,
                stream: *stream,
                // Payloads are bounded by the sender's frame size, far below u32::MAX.
                length: payload.len() as u32,
            },
            Frame::WindowUpdate {
                stream,
                flags,
                increment,
            } => Header {
                ty: FrameType::WindowUpdate,
                flags: *flags,
                stream: *stream,
                length: *increment,
            },
            Frame::Ping { flags, opaque } => Header {
                ty: FrameType::Ping,
                flags: *flags,
                stream: StreamId::SESSION,
                length: *opaque,
            },
            Frame::GoAway { code } => Header {
                ty: FrameType::GoAway,
                flags: Flags::empty(),
                stream: StreamId::SESSION,
                length: code.0,
            },
        }
    }

    /// Encodes header and payload into `dst` (copies the payload; the session's
    /// writer uses vectored writes instead).
    pub fn encode(&self, dst: &mut impl BufMut) {
        self.header().encode(dst);
        if let Frame::Data { payload, .. } = self {
            dst.put_slice(payload);
        }
    }
}

/// Decodes frames out of a growing read buffer without copying payloads.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_size: u32,
    pending: Option<Header>,
    pieces: bool,
}

impl FrameDecoder {
    /// A decoder that refuses data payloads above `max_frame_size`.
    pub fn new(max_frame_size: u32) -> Self {
        FrameDecoder {
            max_frame_size,
            pending: None,
            pieces: false,
        }
    }

    /// A decoder that hands out a data frame in pieces as its payload arrives, so the
    /// read buffer never has to hold (or move) a partial payload. The first piece
    /// carries the frame's SYN / ACK, the last its FIN / RST; the payloads add up to
    /// the frame's.
    pub fn in_pieces(max_frame_size: u32) -> Self {
        FrameDecoder {
            pieces: true,
            ..FrameDecoder::new(max_frame_size)
        }
    }

    /// Takes the next complete frame off the front of `buf`, or returns `Ok(None)`
    /// when more bytes are needed. Payloads are split off `buf` as `Bytes`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let header = match self.pending {
            Some(h) => h,
            None => {
                let Some(raw) = buf.get(..HEADER_LEN) else {
                    return Ok(None);
                };
                let raw: &[u8; HEADER_LEN] = raw.try_into().expect("slice of HEADER_LEN");
                let h = Header::decode(raw, self.max_frame_size)?;
                buf.advance(HEADER_LEN);
                h
            }
        };
        let frame = match header.ty {
            FrameType::Data => {
                let len = header.length as usize;
                if buf.len() < len {
                    if !self.pieces || buf.is_empty() {
                        self.pending = Some(header);
                        return Ok(None);
                    }
                    let piece = buf.split().freeze();
                    self.pending = Some(Header {
                        length: (len - piece.len()) as u32,
                        flags: header.flags.without(Flags::SYN | Flags::ACK),
                        ..header
                    });
                    return Ok(Some(Frame::Data {
                        stream: header.stream,
                        flags: header.flags.without(Flags::FIN | Flags::RST),
                        payload: piece,
                    }));
                }
                Frame::Data {
                    stream: header.stream,
                    flags: header.flags,
                    payload: buf.split_to(len).freeze(),
                }
            }
            FrameType::WindowUpdate => Frame::WindowUpdate {
                stream: header.stream,
                flags: header.flags,
                increment: header.length,
            },
            FrameType::Ping => Frame::Ping {
                flags: header.flags,
                opaque: header.length,
            },
            FrameType::GoAway => Frame::GoAway {
                code: GoAwayCode(header.length),
            },
        };
        self.pending = None;
        Ok(Some(frame))
    }

    /// True while a data frame has been handed out in part and more of it is due.
    pub fn pending_data(&self) -> bool {
        self.pending.is_some_and(|h| h.ty == FrameType::Data)
    }

    /// Bytes still needed before the pending data frame is complete (0 if none).
    pub fn bytes_wanted(&self, buffered: usize) -> usize {
        match self.pending {
            Some(h) => (h.length as usize).saturating_sub(buffered),
            None => HEADER_LEN.saturating_sub(buffered),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let stream = 1u32..=u32::MAX;
        let flags = (0u16..=0xF).prop_map(Flags);
        prop_oneof![
            (
                stream.clone(),
                flags.clone(),
                proptest::collection::vec(any::<u8>(), 0..2048)
            )
                .prop_map(|(s, f, p)| Frame::Data {
                    stream: StreamId(s),
                    flags: f,
                    payload: Bytes::from(p)
                }),
            (stream, flags, any::<u32>()).prop_map(|(s, f, i)| Frame::WindowUpdate {
                stream: StreamId(s),
                flags: f,
                increment: i
            }),
            (
                prop_oneof![Just(Flags::empty()), Just(Flags::ACK)],
                any::<u32>()
            )
                .prop_map(|(flags, opaque)| Frame::Ping { flags, opaque }),
            any::<u32>().prop_map(|c| Frame::GoAway {
                code: GoAwayCode(c)
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(frames in proptest::collection::vec(arb_frame(), 1..20), split in 1usize..64) {
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire);
            }
            // Feed the bytes in pieces to exercise partial headers and payloads.
            let mut dec = FrameDecoder::new(1 << 20);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                buf.extend_from_slice(chunk);
                while let Some(f) = dec.decode(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            prop_assert_eq!(out, frames);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn pieces_add_up_to_the_frames(frames in proptest::collection::vec(arb_frame(), 1..20), split in 1usize..64) {
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire);
            }
            let mut dec = FrameDecoder::in_pieces(1 << 20);
            let mut buf = BytesMut::new();
            let mut out: Vec<Frame> = Vec::new();
            // Whether the last data piece still waits for the rest of its frame.
            let mut open_piece = false;
            for chunk in wire.chunks(split) {
                buf.extend_from_slice(chunk);
                while let Some(f) = dec.decode(&mut buf).unwrap() {
                    match (f, open_piece, out.last_mut()) {
                        (
                            Frame::Data { stream, flags, payload },
                            true,
                            Some(Frame::Data { stream: s0, flags: f0, payload: p0 }),
                        ) => {
                            // A later piece: same stream, no opening flags, payload follows on.
                            prop_assert_eq!(stream, *s0);
                            prop_assert!(!flags.contains(Flags::SYN) && !flags.contains(Flags::ACK));
                            *f0 |= flags;
                            *p0 = [&p0[..], &payload[..]].concat().into();
                        }
                        (f, _, _) => {
                            if let Frame::Data { flags, .. } = &f {
                                prop_assert!(!flags.contains(Flags::FIN) || !dec.pending_data());
                            }
                            out.push(f);
                        }
                    }
                    open_piece = dec.pending_data();
                }
                // Nothing but a partial header ever waits in the buffer.
                prop_assert!(buf.len() < HEADER_LEN || dec.pending_data() && buf.is_empty());
            }
            prop_assert_eq!(out, frames);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut dec = FrameDecoder::new(1024);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }
    }

    #[test]
    fn oversized_data_frame_is_refused_before_buffering() {
        let h = Header {
            ty: FrameType::Data,
            flags: Flags::empty(),
            stream: StreamId(1),
            length: 2 << 20,
        };
        let mut buf = BytesMut::from(&h.to_bytes()[..]);
        let err = FrameDecoder::new(1 << 20).decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: 2 << 20,
                max: 1 << 20
            }
        );
        assert_eq!(err.go_away_code(), GoAwayCode::FRAME_TOO_LARGE);
    }

    #[test]
    fn session_frames_refuse_stream_flags() {
        // Found by the frame_decoder fuzz target: a GO_AWAY with SYN decoded and lost
        // its flags, so it did not re-encode to the same bytes.
        let raw = [0, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            Header::decode(&raw, 1024),
            Err(FrameError::FlagsNotAllowed {
                ty: FrameType::GoAway,
                flags: 1
            })
        );
        let raw = [0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 9];
        assert!(matches!(
            Header::decode(&raw, 1024),
            Err(FrameError::FlagsNotAllowed { .. })
        ));
        let ping_ack = [0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9];
        assert!(Header::decode(&ping_ack, 1024).is_ok());
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let mut raw = Header {
            ty: FrameType::Ping,
            flags: Flags::empty(),
            stream: StreamId::SESSION,
            length: 7,
        }
        .to_bytes();
        raw[0] = 9;
        assert_eq!(Header::decode(&raw, 1024), Err(FrameError::Version(9)));
        raw[0] = VERSION;
        raw[1] = 200;
        assert_eq!(
            Header::decode(&raw, 1024),
            Err(FrameError::UnknownType(200))
        );
        raw[1] = FrameType::Data as u8;
        assert!(matches!(
            Header::decode(&raw, 1024),
            Err(FrameError::BadStreamId { .. })
        ));
        raw[1] = FrameType::Ping as u8;
        raw[3] = 0x40;
        assert_eq!(
            Header::decode(&raw, 1024),
            Err(FrameError::ReservedFlags(0x40))
        );
    }
}
