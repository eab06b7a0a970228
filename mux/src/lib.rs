//! The Netbore stream multiplexer: many bidirectional, flow-controlled streams over one
//! reliable byte stream (a TCP connection, or WebSocket messages).
//!
//! It has three layers: [`frame`] (the codec, documented byte by byte in
//! `docs/protocols/mux.md`), [`Session`] (a sans-IO state machine: bytes and `now` in,
//! frames and events out), and a thin tokio layer ([`Mux`], [`MuxStream`], [`Driver`]).
//! It knows nothing of tunnels, tokens or what the streams carry; QUIC does not use it
//! (QUIC streams are native).

pub mod budget;
pub mod buffer;
pub mod config;
mod driver;
pub mod error;
pub mod frame;
pub mod memory;
mod mux;
pub mod session;
mod shared;
mod splice;
mod stream;
mod stream_state;
pub mod write_queue;

pub use budget::{FloodKind, FloodLimits};
pub use config::Config;
pub use driver::Driver;
pub use error::{SessionError, StreamError};
pub use frame::{GoAwayCode, StreamId};
pub use memory::WindowBudget;
pub use mux::Mux;
pub use session::{Event, ReadOutcome, Role, Session, Stats};
pub use splice::{Spliced, splice};
pub use stream::MuxStream;
