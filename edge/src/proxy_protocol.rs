//! PROXY protocol version 2 (HAProxy's binary header) on the Edge's viewer listeners
//! (`--proxy-protocol`): behind a TCP load balancer every viewer would be the
//! balancer, so a connection from one of the operator's trusted proxies starts with a
//! header naming the client, and that client is the viewer from then on (per-address
//! caps, forwarding headers, the stream header the agent gets, logs).
//!
//! [`decode`] is the sans-IO parser: bytes in, [`Decoded::Incomplete`] (how many bytes
//! it needs in all), [`Decoded::Done`] or a typed [`HeaderError`] decided on the first
//! byte that settles it. [`read_header`] drives it over a reader and never reads a
//! byte past the header: what follows (an HTTP request, a TLS hello, a TCP tunnel's
//! bytes) stays in the socket. [`ProxyProtocol`] is the listeners' setting: which
//! peers must send a header, and how long they have.
//!
//! It does not speak version 1 (the text header), check `PP2_TYPE_CRC32C` or read any
//! TLV: TLVs after the addresses are skipped. The wire format is in
//! `docs/protocols/proxy-protocol.md`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use netbore_control::client_addr::Cidr;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The twelve bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part of a header: signature, version and command, family and transport,
/// and the big-endian length of what follows.
pub const FIXED_LEN: usize = 16;

/// Most bytes of addresses and TLVs the Edge takes after the fixed part. The length
/// field allows 65,535; HAProxy's specification asks receivers to take at least 216
/// (a pair of unix socket paths) and senders to fit the whole header in 536 bytes (the
/// smallest IPv4 TCP segment), which leaves room for the TLVs balancers add (AWS NLB's
/// endpoint id, an authority, a unique id). Stops a peer from making the Edge wait for,
/// and hold, up to 64 KiB before the connection is even counted.
pub const MAX_PAYLOAD: usize = 536;

/// Most bytes a header the Edge accepts takes in all.
pub const MAX_HEADER: usize = FIXED_LEN + MAX_PAYLOAD;

/// The protocol version, high nibble of byte 12.
const VERSION: u8 = 2;
/// `LOCAL`: the proxy speaks for itself (a health check); the addresses are ignored.
const CMD_LOCAL: u8 = 0x0;
/// `PROXY`: the connection is relayed for the client the addresses name.
const CMD_PROXY: u8 = 0x1;
/// Highest address family the specification defines (`AF_UNIX`).
const MAX_FAMILY: u8 = 3;
/// Highest transport protocol the specification defines (`DGRAM`).
const MAX_TRANSPORT: u8 = 2;
/// TCP over IPv4: source, destination (4 bytes each), source and destination ports.
const TCP4: u8 = 0x11;
/// TCP over IPv6: source, destination (16 bytes each), source and destination ports.
const TCP6: u8 = 0x21;

/// What [`decode`] made of the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The bytes are a valid start of a header: at least `needed` bytes in all (more
    /// than were given, at most [`MAX_HEADER`]) are needed to go on.
    Incomplete {
        /// Bytes needed in all, counted from the first.
        needed: usize,
    },
    /// A whole header.
    Done {
        /// The client the proxy relays for: `None` for a `LOCAL` header, an
        /// unspecified or unix family, or a transport other than TCP, where the proxy's
        /// own address stands.
        source: Option<SocketAddr>,
        /// The header's length; the connection's own bytes start after it.
        header_len: usize,
    },
}

/// Why bytes are not a PROXY protocol version 2 header. The peer (a trusted proxy)
/// caused it; its connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The bytes do not start with [`SIGNATURE`] (no header, or a version 1 one).
    #[error("the connection does not start with a PROXY protocol v2 signature")]
    BadSignature,
    /// The version nibble of byte 12 is not 2.
    #[error("PROXY protocol version {0:#04x} (byte 12) is not 2")]
    BadVersion(u8),
    /// The command nibble of byte 12 is neither `LOCAL` (0) nor `PROXY` (1).
    #[error("PROXY command {0:#04x} (byte 12) is neither LOCAL nor PROXY")]
    BadCommand(u8),
    /// A `PROXY` header's address family or transport (byte 13) is not one the
    /// specification defines.
    #[error("PROXY address family and transport {0:#04x} (byte 13) are undefined")]
    BadFamily(u8),
    /// The addresses and TLVs are longer than [`MAX_PAYLOAD`].
    #[error("the PROXY header announces {0} bytes of addresses and TLVs, more than {MAX_PAYLOAD}")]
    TooLarge(usize),
    /// A `PROXY` header's length leaves no room for the addresses of its family.
    #[error("the PROXY header's {len} bytes cannot hold the addresses of family {family:#04x}")]
    ShortAddresses {
        /// Byte 13.
        family: u8,
        /// The announced length of addresses and TLVs.
        len: usize,
    },
}

/// Decodes the header at the start of `bytes`, which may hold more (the connection's
/// own bytes). An error is decided on the first byte that settles it: a longer input
/// with the same start gets the same error.
pub fn decode(bytes: &[u8]) -> Result<Decoded, HeaderError> {
    let signed = bytes.len().min(SIGNATURE.len());
    if bytes[..signed] != SIGNATURE[..signed] {
        return Err(HeaderError::BadSignature);
    }
    let Some(&version_command) = bytes.get(12) else {
        return Ok(Decoded::Incomplete { needed: FIXED_LEN });
    };
    if version_command >> 4 != VERSION {
        return Err(HeaderError::BadVersion(version_command));
    }
    let command = version_command & 0x0f;
    if command != CMD_LOCAL && command != CMD_PROXY {
        return Err(HeaderError::BadCommand(version_command));
    }
    // A LOCAL header's family is ignored, whatever it says (the specification).
    let proxied = command == CMD_PROXY;
    let Some(&family) = bytes.get(13) else {
        return Ok(Decoded::Incomplete { needed: FIXED_LEN });
    };
    if proxied && (family >> 4 > MAX_FAMILY || family & 0x0f > MAX_TRANSPORT) {
        return Err(HeaderError::BadFamily(family));
    }
    let Some(&[hi, lo]) = bytes.get(14..FIXED_LEN) else {
        return Ok(Decoded::Incomplete { needed: FIXED_LEN });
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > MAX_PAYLOAD {
        return Err(HeaderError::TooLarge(len));
    }
    let addresses = match family >> 4 {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if proxied && len < addresses {
        return Err(HeaderError::ShortAddresses { family, len });
    }
    let header_len = FIXED_LEN + len;
    let Some(payload) = bytes.get(FIXED_LEN..header_len) else {
        return Ok(Decoded::Incomplete { needed: header_len });
    };
    let source = match family {
        _ if !proxied => None,
        TCP4 => {
            let ip = Ipv4Addr::new(payload[0], payload[1], payload[2], payload[3]);
            let port = u16::from_be_bytes([payload[8], payload[9]]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        TCP6 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&payload[..16]);
            let port = u16::from_be_bytes([payload[32], payload[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    };
    Ok(Decoded::Done { source, header_len })
}

/// Why a trusted proxy's connection gave no viewer address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Reading failed, or the proxy closed the connection before a whole header.
    #[error("the proxy's connection failed before a whole PROXY header: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a header.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// No whole header arrived in time.
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
}

/// Reads one header from `io`, never a byte past it, and returns the client it names
/// (`None`: the proxy's own address stands). Bytes that cannot start a header fail it
/// at once, without waiting for more.
pub async fn read_header<R>(io: &mut R) -> Result<Option<SocketAddr>, ReadError>
where
    R: AsyncRead + Unpin,
{
    let mut buf = [0u8; MAX_HEADER];
    let mut filled = 0;
    loop {
        match decode(&buf[..filled])? {
            Decoded::Done { source, .. } => return Ok(source),
            Decoded::Incomplete { needed } => {
                // `decode` asks for at most MAX_HEADER bytes, always more than it had.
                let n = io.read(&mut buf[filled..needed]).await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                }
                filled += n;
            }
        }
    }
}

/// PROXY protocol on the viewer listeners: which peers must send a header, and how long
/// they have. Clones share the list.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    trusted: Arc<[Cidr]>,
    timeout: Duration,
}

impl ProxyProtocol {
    /// Headers expected from the peers in `trusted` (`--trusted-proxies`), each within
    /// `timeout` of its connection being accepted (`--tls-handshake-timeout`: like a
    /// TLS hello, a balancer sends the header at once). Stops a trusted peer that never
    /// sends one from holding a connection slot.
    pub fn new(trusted: Vec<Cidr>, timeout: Duration) -> Self {
        ProxyProtocol {
            trusted: trusted.into(),
            timeout,
        }
    }

    /// Whether a connection from `peer` must start with a header. A peer outside the
    /// list is never read for one: a client cannot choose its own address.
    pub fn expects_header(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(peer))
    }

    /// The viewer of a connection from trusted proxy `peer`: the client its header
    /// names, or `peer` for a `LOCAL` header (a health check) or an address the Edge
    /// does not route by (unspecified, unix, UDP). The connection's own bytes are left
    /// unread. An error means the connection must be closed.
    pub async fn viewer<R>(&self, io: &mut R, peer: SocketAddr) -> Result<SocketAddr, ReadError>
    where
        R: AsyncRead + Unpin,
    {
        match tokio::time::timeout(self.timeout, read_header(io)).await {
            Ok(read) => Ok(read?.unwrap_or(peer)),
            Err(_) => Err(ReadError::Timeout(self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A header with `command` and `family`, then `addresses` and `tlvs`.
    fn header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap();
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    fn tcp(src: SocketAddr, dst: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
        let (family, mut a) = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (TCP4, [s.octets(), d.octets()].concat()),
            (IpAddr::V6(s), IpAddr::V6(d)) => (TCP6, [s.octets(), d.octets()].concat()),
            _ => panic!("one family"),
        };
        a.extend_from_slice(&src.port().to_be_bytes());
        a.extend_from_slice(&dst.port().to_be_bytes());
        header(CMD_PROXY, family, &a, tlvs)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn done(source: Option<SocketAddr>, header_len: usize) -> Result<Decoded, HeaderError> {
        Ok(Decoded::Done { source, header_len })
    }

    #[test]
    fn an_ipv4_header_names_its_source_and_leaves_what_follows() {
        let h = tcp(addr("203.0.113.7:51000"), addr("192.0.2.1:443"), &[]);
        assert_eq!(h.len(), 28);
        let mut with_request = h.clone();
        with_request.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            decode(&with_request),
            done(Some(addr("203.0.113.7:51000")), 28)
        );
    }

    #[test]
    fn an_ipv6_header_names_its_source() {
        let h = tcp(addr("[2001:db8::7]:443"), addr("[2001:db8::1]:8443"), &[]);
        assert_eq!(h.len(), 52);
        assert_eq!(decode(&h), done(Some(addr("[2001:db8::7]:443")), 52));
    }

    #[test]
    fn tlvs_after_the_addresses_are_skipped() {
        // PP2_TYPE_AUTHORITY "app.example.com", then an AWS endpoint id.
        let mut tlvs = vec![0x02, 0x00, 0x0f];
        tlvs.extend_from_slice(b"app.example.com");
        tlvs.extend_from_slice(&[0xea, 0x00, 0x05, 0x01, b'v', b'p', b'c', b'e']);
        let h = tcp(addr("198.51.100.4:1"), addr("192.0.2.1:80"), &tlvs);
        assert_eq!(
            decode(&h),
            done(Some(addr("198.51.100.4:1")), 28 + tlvs.len())
        );
    }

    #[test]
    fn local_unspec_unix_and_udp_keep_the_proxys_address() {
        // A health check: LOCAL, no addresses; its family is ignored, even undefined.
        assert_eq!(decode(&header(CMD_LOCAL, 0x00, &[], &[])), done(None, 16));
        assert_eq!(
            decode(&header(CMD_LOCAL, 0xff, &[1; 12], &[])),
            done(None, 28)
        );
        // LOCAL with TCP addresses: still the proxy's own connection.
        let mut local = tcp(addr("203.0.113.7:1"), addr("192.0.2.1:2"), &[]);
        local[12] = 0x20;
        assert_eq!(decode(&local), done(None, 28));
        assert_eq!(decode(&header(CMD_PROXY, 0x00, &[], &[])), done(None, 16));
        assert_eq!(
            decode(&header(CMD_PROXY, 0x31, &[0; 216], &[])),
            done(None, 232)
        );
        let mut udp = tcp(addr("203.0.113.7:1"), addr("192.0.2.1:2"), &[]);
        udp[13] = 0x12;
        assert_eq!(decode(&udp), done(None, 28));
    }

    #[test]
    fn truncated_headers_ask_for_what_they_need() {
        let h = tcp(
            addr("203.0.113.7:51000"),
            addr("192.0.2.1:443"),
            &[0x04, 0, 0],
        );
        for k in 0..FIXED_LEN {
            assert_eq!(
                decode(&h[..k]),
                Ok(Decoded::Incomplete { needed: 16 }),
                "{k}"
            );
        }
        for k in FIXED_LEN..h.len() {
            let needed = h.len();
            assert_eq!(decode(&h[..k]), Ok(Decoded::Incomplete { needed }), "{k}");
        }
    }

    #[test]
    fn bad_signatures_versions_and_commands_are_refused_at_once() {
        assert_eq!(
            decode(b"GET / HTTP/1.1\r\n"),
            Err(HeaderError::BadSignature)
        );
        assert_eq!(decode(b"\r\n\r\nG"), Err(HeaderError::BadSignature));
        // Version 1's text header.
        assert_eq!(
            decode(b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\n"),
            Err(HeaderError::BadSignature)
        );
        let good = tcp(addr("203.0.113.7:1"), addr("192.0.2.1:2"), &[]);
        let mut v1 = good[..13].to_vec();
        v1[12] = 0x11;
        assert_eq!(decode(&v1), Err(HeaderError::BadVersion(0x11)));
        let mut cmd = good.clone();
        cmd[12] = 0x22;
        assert_eq!(decode(&cmd[..13]), Err(HeaderError::BadCommand(0x22)));
        let mut family = good.clone();
        family[13] = 0x41;
        assert_eq!(decode(&family[..14]), Err(HeaderError::BadFamily(0x41)));
        family[13] = 0x13;
        assert_eq!(decode(&family), Err(HeaderError::BadFamily(0x13)));
    }

    #[test]
    fn oversize_and_short_lengths_are_refused_before_the_payload() {
        let mut big = header(CMD_LOCAL, 0, &[], &[]);
        big[14..16].copy_from_slice(&(MAX_PAYLOAD as u16 + 1).to_be_bytes());
        assert_eq!(decode(&big), Err(HeaderError::TooLarge(MAX_PAYLOAD + 1)));
        big[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(decode(&big), Err(HeaderError::TooLarge(65_535)));
        let mut at_max = header(CMD_LOCAL, 0, &[], &[]);
        at_max[14..16].copy_from_slice(&(MAX_PAYLOAD as u16).to_be_bytes());
        assert_eq!(
            decode(&at_max),
            Ok(Decoded::Incomplete { needed: MAX_HEADER })
        );
        // Eleven bytes cannot hold two IPv4 addresses and their ports.
        let short = header(CMD_PROXY, TCP4, &[0; 11], &[]);
        assert_eq!(
            decode(&short[..16]),
            Err(HeaderError::ShortAddresses {
                family: TCP4,
                len: 11
            })
        );
        let short6 = header(CMD_PROXY, TCP6, &[0; 12], &[]);
        assert!(matches!(
            decode(&short6),
            Err(HeaderError::ShortAddresses { .. })
        ));
    }

    #[tokio::test]
    async fn the_reader_stops_at_the_header_and_fails_early() {
        let h = tcp(
            addr("203.0.113.7:51000"),
            addr("192.0.2.1:443"),
            &[0x04, 0, 0],
        );
        let (mut proxy, mut edge) = tokio::io::duplex(64);
        let sent = [h.as_slice(), b"hello"].concat();
        tokio::io::AsyncWriteExt::write_all(&mut proxy, &sent)
            .await
            .unwrap();
        let source = read_header(&mut edge).await.unwrap();
        assert_eq!(source, Some(addr("203.0.113.7:51000")));
        let mut rest = [0u8; 5];
        edge.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        // Garbage fails on its first bytes, without waiting for sixteen.
        let (mut proxy, mut edge) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut proxy, b"GET")
            .await
            .unwrap();
        let e = read_header(&mut edge).await.unwrap_err();
        assert!(
            matches!(e, ReadError::Header(HeaderError::BadSignature)),
            "{e}"
        );
        // A header cut short by the end of the connection.
        let e = read_header(&mut &h[..20]).await.unwrap_err();
        assert!(matches!(e, ReadError::Io(_)), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_proxy_is_given_up_on_at_the_deadline() {
        let pp = ProxyProtocol::new(vec!["127.0.0.1".parse().unwrap()], Duration::from_secs(3));
        let (_proxy, mut edge) = tokio::io::duplex(64);
        let peer = addr("127.0.0.1:40000");
        let started = tokio::time::Instant::now();
        let e = pp.viewer(&mut edge, peer).await.unwrap_err();
        assert!(matches!(e, ReadError::Timeout(_)), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        // LOCAL: the proxy itself.
        let local = header(CMD_LOCAL, 0, &[], &[]);
        assert_eq!(pp.viewer(&mut &local[..], peer).await.unwrap(), peer);
    }

    #[test]
    fn only_listed_peers_are_expected_to_send_a_header() {
        let pp = ProxyProtocol::new(
            vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1".parse().unwrap()],
            Duration::from_secs(1),
        );
        assert!(pp.expects_header("10.1.2.3".parse().unwrap()));
        assert!(pp.expects_header("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!pp.expects_header("127.0.0.2".parse().unwrap()));
        assert!(!pp.expects_header("2001:db8::1".parse().unwrap()));
    }

    proptest! {
        #[test]
        fn tcp_headers_round_trip(
            v6 in any::<bool>(),
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(),
            tlvs in proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD - 36),
            after in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (s, d) = if v6 {
                (IpAddr::V6(Ipv6Addr::from(src)), IpAddr::V6(Ipv6Addr::from(dst)))
            } else {
                let s: [u8; 4] = src[..4].try_into().unwrap();
                let d: [u8; 4] = dst[..4].try_into().unwrap();
                (IpAddr::V4(s.into()), IpAddr::V4(d.into()))
            };
            let source = SocketAddr::new(s, ports.0);
            let h = tcp(source, SocketAddr::new(d, ports.1), &tlvs);
            let whole = [h.as_slice(), &after].concat();
            prop_assert_eq!(decode(&whole), done(Some(source), h.len()));
            for k in 0..h.len() {
                let prefix = decode(&h[..k]);
                prop_assert!(
                    matches!(prefix, Ok(Decoded::Incomplete { needed }) if needed > k && needed <= h.len()),
                    "{k}: {prefix:?}"
                );
            }
        }
    }
}
