//! Errors of the mux session and of its streams.

use std::time::Duration;

use crate::budget::FloodKind;
use crate::frame::{FrameError, GoAwayCode, StreamId};

/// Why a session failed or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer sent bytes that are not a valid frame.
    #[error("the peer sent a malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer sent more data than the stream's window allowed.
    #[error("the peer sent {len} bytes on stream {stream} with only {credit} bytes of credit")]
    FlowControl {
        /// The stream.
        stream: StreamId,
        /// Bytes in the offending frame.
        len: u32,
        /// Credit the peer had left.
        credit: u32,
    },
    /// The peer opened a stream with an id of the wrong parity or a reused id.
    #[error("the peer opened stream {0} with an invalid or reused id")]
    BadStreamOpen(StreamId),
    /// Pings went unanswered.
    #[error("the peer did not answer keepalive pings for {0:?}")]
    KeepaliveTimeout(Duration),
    /// The peer sent more frames of this useless kind than its budget allows.
    #[error("the peer flooded the session with {0}")]
    Flood(FloodKind),
    /// Queued output waited this long without the peer reading a byte of it.
    #[error("the peer read nothing for {0:?}")]
    WriteTimeout(Duration),
    /// The peer sent a go-away with this code and closed.
    #[error("the peer closed the session: {0}")]
    GoAway(GoAwayCode),
    /// This end closed the session with this code.
    #[error("the session was closed locally: {0}")]
    LocalClose(GoAwayCode),
    /// Opening one more stream would exceed the limit.
    #[error("the session already has the maximum of {0} streams open")]
    TooManyStreams(usize),
    /// The shared [`crate::WindowBudget`] has no room for one more stream's window.
    #[error("there is no memory left for another stream ({0} bytes of receive window are granted)")]
    WindowBudget(u64),
    /// Every stream id of this side was used.
    #[error("the session ran out of stream ids")]
    StreamIdsExhausted,
    /// The connection closed without a go-away.
    #[error("the connection closed")]
    ConnectionClosed,
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(String),
    /// The session is closed.
    #[error("the session is closed")]
    Closed,
}

impl SessionError {
    /// The go-away code that announces this error to the peer.
    pub fn go_away_code(&self) -> GoAwayCode {
        match self {
            SessionError::Frame(e) => e.go_away_code(),
            SessionError::FlowControl { .. } | SessionError::BadStreamOpen(_) => {
                GoAwayCode::PROTOCOL_ERROR
            }
            SessionError::KeepaliveTimeout(_) | SessionError::WriteTimeout(_) => {
                GoAwayCode::KEEPALIVE_TIMEOUT
            }
            SessionError::Flood(_) => GoAwayCode::FLOOD,
            SessionError::LocalClose(code) => *code,
            _ => GoAwayCode::INTERNAL_ERROR,
        }
    }
}

/// Why an operation on one stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream was reset by either side.
    #[error("the stream was reset")]
    Reset,
    /// The sending side was already half-closed.
    #[error("the stream's sending side is already closed")]
    Finished,
    /// The stream is not known to the session.
    #[error("stream {0} does not exist")]
    Unknown(StreamId),
    /// The whole session ended.
    #[error("the session ended: {0}")]
    SessionClosed(SessionError),
}

impl From<StreamError> for std::io::Error {
    fn from(e: StreamError) -> Self {
        use std::io::ErrorKind;
        let kind = match &e {
            StreamError::Reset => ErrorKind::ConnectionReset,
            StreamError::Finished => ErrorKind::BrokenPipe,
            StreamError::Unknown(_) => ErrorKind::NotFound,
            StreamError::SessionClosed(_) => ErrorKind::ConnectionAborted,
        };
        std::io::Error::new(kind, e)
    }
}
