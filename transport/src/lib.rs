//! Netbore's transports: how an Agent and an Edge hold one long-lived session that
//! carries many bidirectional streams.
//!
//! A transport connects (agent side) or accepts (edge side) and yields a [`Session`];
//! a session opens and accepts [`Stream`]s. Each implementation provides the
//! [`TransportSession`] / [`TransportStream`] traits; [`Session`] and [`Stream`] are
//! enums over the implementations (static dispatch, no `Box<dyn>` on the data path): today `tcp`
//! (the Netbore mux over a TCP connection); `wss` and `quic` join as variants without
//! changing callers. The wire types both ends share (handshake, stream header, error
//! codes) live in [`proto`]; [`pipe`] is the bidirectional copy both ends use.
//! This crate knows nothing of tokens, routing or the control plane.

pub mod mux_session;
pub mod pipe;
pub mod proto;
mod session;
pub mod tcp;
pub mod traits;

pub use session::{Session, Stream, TransportKind};
pub use traits::{TransportSession, TransportStream};

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
}
