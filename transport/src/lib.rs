//! Netbore's transports: how an Agent and an Edge hold one long-lived session that
//! carries many bidirectional streams.
//!
//! A transport connects (agent side, [`Dial`]) or accepts (edge side, [`Listener`],
//! every transport on one port) and yields a [`Session`]; a session opens and accepts
//! [`Stream`]s. Each implementation provides the [`TransportSession`] /
//! [`TransportStream`] traits; [`Session`] and [`Stream`] are enums over the
//! implementations (static dispatch, no `Box<dyn>` on the data path). Four transports
//! are the Netbore mux over one byte stream, recorded by [`TransportKind`]: `tcp`
//! (plain TCP), `tls` (TLS, ALPN `netbore/1`), `ws`/`wss` (WebSocket binary messages,
//! [`ws`]), optionally through an HTTP `CONNECT` [`proxy`]. The fifth, [`quic`], maps
//! each stream onto a native QUIC stream over UDP on the same port number. The wire types both ends share (handshake, stream
//! header, error codes) live in [`proto`]; [`pipe`] is the bidirectional copy both ends
//! use. This crate knows nothing of tokens, routing or the control plane.

pub mod cut;
mod dial;
pub mod link;
mod listener;
pub mod mux_session;
pub mod pipe;
pub mod proto;
pub mod proxy;
pub mod quic;
mod quic_socket;
mod quic_windows;
mod session;
pub mod tcp;
pub mod tls;
pub mod traits;
pub mod ws;

pub use dial::Dial;
pub use listener::{Listener, ListenerConfig, Sniffed, sniff};
pub use session::{Session, Stream, TransportKind, UnknownTransport};
pub use traits::{TransportSession, TransportStream};

/// Whether `host` (a name or an IP address, IPv6 with or without brackets) is this
/// machine: a loopback address or `localhost`. Traffic to it never crosses a network,
/// so plain `http://`, `tcp` and `ws` are allowed to it. Names under `.localhost` are
/// not counted: a resolver without special handling may send them to DNS.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return match ip {
            std::net::IpAddr::V4(v4) => v4.is_loopback(),
            std::net::IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        };
    }
    host.trim_end_matches('.').eq_ignore_ascii_case("localhost")
}

/// [`is_loopback_host`] of the host of `HOST:PORT`.
pub fn is_loopback_addr(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    is_loopback_host(host)
}

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Connecting or accepting failed at the socket level.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The session ended or refused the operation.
    #[error(transparent)]
    Session(#[from] netbore_mux::SessionError),
    /// The HTTP proxy gave no tunnel.
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
    /// The Edge's certificate failed verification.
    #[error(
        "the Edge's certificate at {addr} is not trusted ({reason}); pass --ca FILE with the CA that signed it (for a development server: netbore ca path)"
    )]
    UntrustedCertificate {
        /// The Edge dialed.
        addr: String,
        /// What rustls found wrong.
        reason: String,
    },
    /// A TLS transport was asked for without TLS settings.
    #[error("the transport needs TLS settings and none were given")]
    TlsNotConfigured,
    /// The WebSocket upgrade failed.
    #[error("the WebSocket upgrade failed: {0}")]
    WebSocket(String),
    /// The QUIC connection failed or ended.
    #[error("the QUIC connection failed: {0}")]
    Quic(String),
    /// The peer allowed no more streams, and none ended within this time.
    #[error("the agent allows no more streams and none ended within {0:?}")]
    StreamLimit(std::time::Duration),
    /// The transport cannot run through an HTTP proxy.
    #[error("{0} cannot run through an HTTP proxy; choose wss or tls, or unset the proxy")]
    NotThroughProxy(TransportKind),
}

/// Why a live session could not open one more stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The Edge's window budget has no room for another stream's window.
    Memory,
    /// The session has as many streams open as it (or its peer) allows.
    Streams,
}

impl TransportError {
    /// The reason, when opening a stream failed only because the session is busy:
    /// the viewer should hear "try again shortly", not "the agent is offline".
    pub fn busy(&self) -> Option<Busy> {
        match self {
            TransportError::Session(netbore_mux::SessionError::WindowBudget(_)) => {
                Some(Busy::Memory)
            }
            TransportError::Session(netbore_mux::SessionError::TooManyStreams(_))
            | TransportError::StreamLimit(_) => Some(Busy::Streams),
            _ => None,
        }
    }
}
