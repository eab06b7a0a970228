//! Wire types shared by Agent and Edge, written down in `docs/protocols/handshake.md`:
//! the hello exchange on the first stream, the header that opens every viewer stream,
//! and the origin status that starts the agent's side of every HTTP tunnel stream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version of the hello, stream-header and origin-status formats. Version 2 added the
/// [`OriginStatus`] that starts the agent's side of every HTTP tunnel stream.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest handshake message accepted (bytes of JSON). Stops a peer from making the
/// other end buffer an unbounded first message.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// The agent's first message: which tunnels it wants to bring online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the agent.
    pub version: u32,
    /// One ephemeral token per tunnel, as issued by the control plane.
    pub tokens: Vec<String>,
    /// Agent software name and version, for logs.
    pub agent: String,
    /// Set, with no tokens, by a fleet node opening a link to another node
    /// ([`crate::link`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<crate::link::LinkHello>,
}

/// The Edge's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelloReply {
    /// Every tunnel is online; `tunnels[i]` answers `tokens[i]`.
    Ok {
        /// The bound tunnels, in token order.
        tunnels: Vec<BoundTunnel>,
    },
    /// The hello was refused; the session closes after this message.
    Error(ErrorBody),
}

/// A message the Edge sends on the hello stream after [`HelloReply::Ok`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EdgeNotice {
    /// The Edge took a tunnel offline for good; the agent must not bring it back.
    TunnelClosed {
        /// The tunnel.
        tunnel_id: String,
        /// Why ([`ErrorCode::TunnelDeleted`] or [`ErrorCode::Replaced`]).
        code: ErrorCode,
        /// One sentence for a person.
        message: String,
    },
    /// The node is draining (restarting or leaving the fleet): the agent should
    /// move its tunnels to another node with their recreate tokens, say
    /// [`AgentNotice::Moved`], and let this session go once it is idle. The node
    /// keeps serving in flight and new viewers until then.
    Draining {
        /// The draining node's id in its fleet, if it is in one.
        node: Option<String>,
        /// The control APIs of the fleet's other nodes, best first: where to move.
        #[serde(default)]
        controls: Vec<String>,
        /// One sentence for a person.
        message: String,
    },
    /// The fleet's other live nodes that take tunnels, best first: where an agent
    /// holds more sessions (`--ha`) and goes when this node does. Sent after the
    /// hello and whenever the list changes.
    Nodes {
        /// The nodes.
        nodes: Vec<FleetNode>,
    },
}

/// A node of a fleet, as agents learn of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetNode {
    /// The node's id.
    pub id: String,
    /// Its control API, where an agent creates or reclaims its tunnels there.
    pub control_url: String,
}

/// A message the agent sends on the hello stream after [`HelloReply::Ok`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentNotice {
    /// These tunnels of the session are online at another node now: the Edge stops
    /// opening streams for them on this session once its directory shows their new
    /// holder, and forwards their new viewers there.
    Moved {
        /// The tunnels.
        tunnel_ids: Vec<String>,
    },
}

/// A tunnel the Edge bound to this session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundTunnel {
    /// Control-plane id of the tunnel.
    pub tunnel_id: String,
    /// Where viewers reach it, e.g. `tcp://example.com:5432`.
    pub public_url: String,
    /// The number the Edge writes in each [`StreamHeader`] of this tunnel.
    pub slot: u32,
}

/// A typed error with a stable code and one human sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// One sentence saying what happened and what to do.
    pub message: String,
}

pub use netbore_codes::ErrorCode;

/// Why a handshake message could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The stream failed or ended early.
    #[error("the handshake stream failed: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix exceeds [`MAX_MESSAGE_LEN`].
    #[error("handshake message of {0} bytes exceeds the {MAX_MESSAGE_LEN}-byte limit")]
    TooLarge(usize),
    /// The bytes are not the expected JSON.
    #[error("malformed handshake message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes `msg` as a 4-byte big-endian length followed by its JSON.
pub async fn write_message<T: Serialize>(
    io: &mut (impl AsyncWrite + Unpin),
    msg: &T,
) -> std::io::Result<()> {
    let json = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(&json);
    io.write_all(&frame).await?;
    io.flush().await
}

/// Reads one length-prefixed JSON message, refusing anything above [`MAX_MESSAGE_LEN`]
/// before allocating for it.
pub async fn read_message<T: DeserializeOwned>(
    io: &mut (impl AsyncRead + Unpin),
) -> Result<T, MessageError> {
    let len = io.read_u32().await? as usize;
    if len > MAX_MESSAGE_LEN {
        return Err(MessageError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(serde_json::from_slice(&buf)?)
}

/// Opens every stream the Edge starts for a viewer: which tunnel, and who the viewer is.
///
/// Layout (big-endian): version `u8` (=1), slot `u32`, family `u8` (4 or 6),
/// address (4 or 16 bytes), port `u16`. 12 or 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    /// The tunnel's slot from [`BoundTunnel::slot`].
    pub slot: u32,
    /// The viewer's address as the Edge saw it.
    pub viewer: SocketAddr,
}

/// Version byte of [`StreamHeader`].
pub const STREAM_HEADER_VERSION: u8 = 1;

impl StreamHeader {
    /// Encodes the header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.push(STREAM_HEADER_VERSION);
        out.extend_from_slice(&self.slot.to_be_bytes());
        match self.viewer.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&self.viewer.port().to_be_bytes());
        out
    }

    /// Decodes a header from the front of `bytes`; returns it and its length, or
    /// `Ok(None)` when more bytes are needed.
    pub fn decode(bytes: &[u8]) -> std::io::Result<Option<(StreamHeader, usize)>> {
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let Some(head) = bytes.get(..6) else {
            return Ok(None);
        };
        if head[0] != STREAM_HEADER_VERSION {
            return Err(invalid("unsupported stream header version"));
        }
        let slot = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let ip_len = match head[5] {
            4 => 4,
            6 => 16,
            _ => return Err(invalid("unknown address family in stream header")),
        };
        let total = 6 + ip_len + 2;
        let Some(rest) = bytes.get(6..total) else {
            return Ok(None);
        };
        let ip = if ip_len == 4 {
            IpAddr::V4(Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]))
        } else {
            let mut b = [0u8; 16];
            b.copy_from_slice(&rest[..16]);
            IpAddr::V6(Ipv6Addr::from(b))
        };
        let port = u16::from_be_bytes([rest[ip_len], rest[ip_len + 1]]);
        Ok(Some((
            StreamHeader {
                slot,
                viewer: SocketAddr::new(ip, port),
            },
            total,
        )))
    }

    /// Reads a header from the front of a stream (exactly its bytes, nothing more).
    pub async fn read(io: &mut (impl AsyncRead + Unpin)) -> std::io::Result<StreamHeader> {
        let mut buf = [0u8; 24];
        io.read_exact(&mut buf[..6]).await?;
        // Six bytes never complete a header, but they validate version and family.
        StreamHeader::decode(&buf[..6])?;
        let total = 6 + if buf[5] == 4 { 4 } else { 16 } + 2;
        io.read_exact(&mut buf[6..total]).await?;
        match StreamHeader::decode(&buf[..total])? {
            Some((h, _)) => Ok(h),
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// The first bytes the agent writes on every stream of an HTTP tunnel, before any byte
/// of the origin's: whether it reached the origin. Only the agent writes them, before
/// it pipes a single origin byte, so an origin cannot forge "unreachable": whatever it
/// sends comes after [`OriginStatus::Connected`].
///
/// Layout: status `u8`; `0` connected (the origin's bytes follow), `1` unreachable,
/// followed by a message length `u16` (big-endian, at most [`MAX_STATUS_MESSAGE`])
/// and that many bytes of UTF-8, after which the agent ends the stream; `2` not held
/// (a fleet's node on a relayed stream, below), after which the stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginStatus {
    /// The agent connected to the origin; the origin's bytes follow.
    Connected,
    /// The agent could not reach the origin; one sentence naming the address it tried.
    Unreachable(String),
    /// Written in the agent's place by the node of a fleet another node relayed the
    /// stream to (`docs/protocols/fleet.md`): the tunnel is not online there (any
    /// more). Nothing reached an agent, so the relaying node may send the request to
    /// another node holding the tunnel.
    NotHeld,
}

/// Status byte of [`OriginStatus::Connected`].
pub const ORIGIN_CONNECTED: u8 = 0;
/// Status byte of [`OriginStatus::Unreachable`].
pub const ORIGIN_UNREACHABLE: u8 = 1;
/// Status byte of [`OriginStatus::NotHeld`].
pub const ORIGIN_NOT_HELD: u8 = 2;
/// Longest message an [`OriginStatus::Unreachable`] carries (bytes). Bounds what the
/// Edge buffers before a stream's first origin byte.
pub const MAX_STATUS_MESSAGE: usize = 1024;

impl OriginStatus {
    /// Encodes the status; a longer message is cut at a character boundary to
    /// [`MAX_STATUS_MESSAGE`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            OriginStatus::Connected => vec![ORIGIN_CONNECTED],
            OriginStatus::NotHeld => vec![ORIGIN_NOT_HELD],
            OriginStatus::Unreachable(message) => {
                let mut end = message.len().min(MAX_STATUS_MESSAGE);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                let mut out = Vec::with_capacity(3 + end);
                out.push(ORIGIN_UNREACHABLE);
                out.extend_from_slice(&(end as u16).to_be_bytes());
                out.extend_from_slice(&message.as_bytes()[..end]);
                out
            }
        }
    }

    /// Decodes a status from the front of `bytes`; returns it and its length, or
    /// `Ok(None)` when more bytes are needed. Invalid UTF-8 in a message is replaced.
    pub fn decode(bytes: &[u8]) -> std::io::Result<Option<(OriginStatus, usize)>> {
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        match bytes.first() {
            None => Ok(None),
            Some(&ORIGIN_CONNECTED) => Ok(Some((OriginStatus::Connected, 1))),
            Some(&ORIGIN_NOT_HELD) => Ok(Some((OriginStatus::NotHeld, 1))),
            Some(&ORIGIN_UNREACHABLE) => {
                let Some(len) = bytes.get(1..3) else {
                    return Ok(None);
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len > MAX_STATUS_MESSAGE {
                    return Err(invalid("origin status message too long"));
                }
                let Some(message) = bytes.get(3..3 + len) else {
                    return Ok(None);
                };
                let message = String::from_utf8_lossy(message).into_owned();
                Ok(Some((OriginStatus::Unreachable(message), 3 + len)))
            }
            Some(_) => Err(invalid("unknown origin status")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stream_header_round_trips(slot in any::<u32>(), v6 in any::<bool>(), bits in any::<u128>(), port in any::<u16>()) {
            let ip = if v6 { IpAddr::V6(Ipv6Addr::from(bits)) } else { IpAddr::V4(Ipv4Addr::from(bits as u32)) };
            let h = StreamHeader { slot, viewer: SocketAddr::new(ip, port) };
            let bytes = h.encode();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let back = rt.block_on(StreamHeader::read(&mut &bytes[..])).unwrap();
            prop_assert_eq!(back, h);
        }
    }

    proptest! {
        #[test]
        fn origin_status_round_trips(kind in 0..3u8, message in ".{0,1100}") {
            let status = match kind {
                0 => OriginStatus::Connected,
                1 => OriginStatus::Unreachable(message),
                _ => OriginStatus::NotHeld,
            };
            let bytes = status.encode();
            let (back, len) = OriginStatus::decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(len, bytes.len());
            for cut in 0..len {
                prop_assert!(OriginStatus::decode(&bytes[..cut]).unwrap().is_none());
            }
            match (&status, &back) {
                (OriginStatus::Unreachable(sent), OriginStatus::Unreachable(got)) => {
                    prop_assert!(got.len() <= MAX_STATUS_MESSAGE && sent.starts_with(got.as_str()));
                }
                _ => prop_assert_eq!(&back, &status),
            }
        }
    }

    #[test]
    fn unknown_origin_statuses_and_long_messages_are_refused() {
        assert!(OriginStatus::decode(b"HTTP/1.1 502").is_err());
        assert!(OriginStatus::decode(&[1, 0xff, 0xff]).is_err());
    }

    #[tokio::test]
    async fn oversized_message_is_refused_before_allocation() {
        let bytes = (u32::MAX).to_be_bytes();
        let err = read_message::<Hello>(&mut &bytes[..]).await.unwrap_err();
        assert!(matches!(err, MessageError::TooLarge(_)));
    }

    #[tokio::test]
    async fn hello_round_trips() {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            tokens: vec!["t".into()],
            agent: "x".into(),
            link: None,
        };
        let mut buf = Vec::new();
        write_message(&mut buf, &hello).await.unwrap();
        let back: Hello = read_message(&mut &buf[..]).await.unwrap();
        assert_eq!(back, hello);
        let reply = HelloReply::Error(ErrorBody {
            code: ErrorCode::TokenExpired,
            message: "m".into(),
        });
        let json = serde_json::to_string(&reply).unwrap();
        assert_eq!(json, r#"{"error":{"code":"token_expired","message":"m"}}"#);
    }
}
