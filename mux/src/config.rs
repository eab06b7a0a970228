//! Session limits. Every limit has a safe default; each doc comment says what it bounds.

use std::sync::Arc;
use std::time::Duration;

use crate::budget::FloodLimits;
use crate::frame::HEADER_LEN;
use crate::memory::WindowBudget;

/// The receive window every stream starts with, fixed by the protocol so that a new
/// stream can carry data in its very first frame. A larger configured window is
/// announced as extra credit on the opening (SYN / ACK) frame.
pub const PROTOCOL_INITIAL_WINDOW: u32 = 256 * 1024;

/// The largest data frame this implementation ever sends.
pub const MAX_SEND_FRAME: usize = 128 * 1024;

/// Payloads up to this size are copied next to their header so that many small frames
/// leave in one contiguous write; larger payloads are written from their own `Bytes`.
pub const SMALL_PAYLOAD: usize = 1024;

/// The smallest [`Config::max_read_buffer`]: room for a header and some payload.
pub const MIN_READ_BUFFER: usize = 4 * 1024;

/// Limits and timers of one mux session.
#[derive(Debug, Clone)]
pub struct Config {
    /// Maximum concurrently open streams (both directions). Stops a peer from
    /// exhausting memory by opening streams; opens beyond it are reset.
    pub max_streams: usize,
    /// Incoming streams waiting for `accept`. Stops a peer from queueing streams the
    /// application never takes; opens beyond it are reset.
    pub accept_backlog: usize,
    /// Largest data payload accepted from the peer. Bounds how much one frame can make
    /// the receiver buffer before it is validated; larger frames end the session with
    /// a `FRAME_TOO_LARGE` go-away. Must be at least [`MAX_SEND_FRAME`].
    pub max_frame_size: u32,
    /// Receive window of a new stream (at least [`PROTOCOL_INITIAL_WINDOW`]).
    pub initial_stream_window: u32,
    /// Largest receive window one stream may grow to by auto-tuning. Bounds the
    /// memory one stalled stream can hold.
    pub max_stream_window: u32,
    /// Sum of all streams' receive windows above which no window grows. Bounds the
    /// memory of the whole session (together with `max_streams × initial_stream_window`).
    pub max_session_window: u64,
    /// Bytes queued for the connection before writers see `Pending`. Bounds send-side
    /// memory and keeps backpressure honest. While three times this much waits to be
    /// written (data is capped at one `max_send_buffer` in the session and one in the
    /// driver, so only replies to the peer can fill the third), the driver stops
    /// reading: a peer that sends pings or opens but never reads cannot make us queue
    /// replies without bound.
    pub max_send_buffer: usize,
    /// Interval between keepalive pings (each one measures RTT); `None` disables them.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may stay unanswered before the peer is declared dead: a link
    /// that falls silent is found within `keepalive_interval + keepalive_timeout` of
    /// the last answer (the tolerance). Queued output may wait that tolerance without
    /// a single byte of it being written (the peer reads nothing) before the
    /// connection is dropped, keepalive or not: stops a peer that never reads from
    /// holding a session, its queued frames and a socket forever.
    pub keepalive_timeout: Duration,
    /// How long a closing session may take to flush its go-away before the connection
    /// is dropped anyway. Stops a peer that stops reading (or reads a byte a minute)
    /// from holding a failed session open.
    pub close_timeout: Duration,
    /// The most received bytes the driver ever holds undecoded; each read is capped
    /// so that the buffer never grows past it. Payloads are handed to streams as they
    /// arrive, so between reads it holds less than one header; the cap makes that a
    /// hard bound that a peer sending bytes the session cannot use (after a decode
    /// error, say) can never push the buffer (or the copying of it) past.
    pub max_read_buffer: usize,
    /// Budgets for frames that cost work and carry nothing (empty data, zero window
    /// updates, pings, streams opened and reset at once); see [`FloodLimits`].
    /// Exceeding one ends the session with go-away `FLOOD`.
    pub flood: FloodLimits,
    /// A budget of receive windows shared with other sessions (at the Edge: every
    /// agent's). A stream opens only when its initial window fits in it (opens beyond
    /// it fail with [`crate::SessionError::WindowBudget`] or are reset) and windows
    /// grow only into what is left, so the bytes all sessions together can be made
    /// to buffer stay under its limit. `None`: each session is bounded on its own.
    pub window_budget: Option<Arc<WindowBudget>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_streams: 8192,
            accept_backlog: 1024,
            max_frame_size: 1024 * 1024,
            initial_stream_window: PROTOCOL_INITIAL_WINDOW,
            max_stream_window: 16 * 1024 * 1024,
            max_session_window: 64 * 1024 * 1024,
            max_send_buffer: 1024 * 1024,
            keepalive_interval: Some(Duration::from_secs(10)),
            // A tolerance of 15 s with the 10 s interval, as ngrok's heartbeats.
            keepalive_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(3),
            max_read_buffer: 1024 * 1024 + HEADER_LEN,
            flood: FloodLimits::default(),
            window_budget: None,
        }
    }
}

impl Config {
    /// How long after the last sign of life a silent peer is declared dead: the
    /// interval to the next ping plus how long it may stay unanswered.
    pub fn tolerance(&self) -> Duration {
        self.keepalive_interval.unwrap_or_default() + self.keepalive_timeout
    }

    /// Clamps values that would break the protocol to the nearest legal value.
    pub fn normalized(mut self) -> Self {
        self.max_frame_size = self.max_frame_size.max(MAX_SEND_FRAME as u32);
        self.initial_stream_window = self.initial_stream_window.max(PROTOCOL_INITIAL_WINDOW);
        self.max_stream_window = self.max_stream_window.max(self.initial_stream_window);
        self.max_streams = self.max_streams.max(1);
        self.max_send_buffer = self.max_send_buffer.max(MAX_SEND_FRAME);
        self.max_read_buffer = self.max_read_buffer.max(MIN_READ_BUFFER);
        self
    }
}
