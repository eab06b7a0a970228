//! QUIC sessions under the Edge's shared [`WindowBudget`].
//!
//! quinn grants every stream its whole stream window at once and bounds the session
//! by one connection window, so the mux's per-stream accounting has no hook here.
//! Instead each stream the Edge opens takes up to its stream window
//! ([`crate::quic::EDGE_STREAM_WINDOW`]) from the budget (at least the initial window
//! of a mux stream, or the open is refused), and the
//! session's connection window is kept at the sum of what its open streams hold, plus
//! a small floor for the session's own stream. Whatever the agent sends and the viewer
//! leaves unread, the session never buffers more than it took from the budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use netbore_mux::{Config, WindowBudget};
use quinn::{Connection, VarInt};

use crate::TransportError;
use crate::quic::PRE_HELLO_WINDOW;

/// One session's share of the budget.
#[derive(Debug)]
pub(crate) struct SessionWindows {
    budget: Arc<WindowBudget>,
    conn: Connection,
    /// What the session's open streams took from the budget.
    taken: AtomicU64,
    /// The most one stream takes: its quinn stream window at the Edge.
    stream_window: u64,
    /// The least: what a mux stream starts with.
    least: u64,
}

impl SessionWindows {
    /// The budget of `mux` (if it has one) for the Edge's session `conn`.
    pub(crate) fn new(conn: &Connection, mux: &Config) -> Option<Arc<SessionWindows>> {
        let budget = mux.window_budget.clone()?;
        Some(Arc::new(SessionWindows {
            budget,
            conn: conn.clone(),
            taken: AtomicU64::new(0),
            stream_window: u64::from(crate::quic::edge_stream_window(mux)),
            least: u64::from(mux.initial_stream_window),
        }))
    }

    /// The connection window for what the streams hold now.
    fn apply(&self) {
        let window = u64::from(PRE_HELLO_WINDOW) + self.taken.load(Ordering::Acquire);
        self.conn
            .set_receive_window(VarInt::from_u64(window).unwrap_or(VarInt::MAX));
    }

    /// The window of the session once its hello is accepted (no stream open yet).
    pub(crate) fn hello_accepted(&self) {
        self.apply();
    }

    /// Takes a window for one more stream, or refuses when the budget has less than
    /// a mux stream's initial window left.
    pub(crate) fn reserve(self: &Arc<Self>) -> Result<StreamWindow, TransportError> {
        let got = self.budget.take_up_to(self.stream_window);
        if got < self.least {
            self.budget.give_back(got);
            return Err(TransportError::Session(
                netbore_mux::SessionError::WindowBudget(self.budget.granted()),
            ));
        }
        self.taken.fetch_add(got, Ordering::AcqRel);
        self.apply();
        Ok(StreamWindow {
            session: self.clone(),
            amount: got,
        })
    }
}

/// The window one stream took; given back when the stream is dropped.
#[derive(Debug)]
pub(crate) struct StreamWindow {
    session: Arc<SessionWindows>,
    amount: u64,
}

impl Drop for StreamWindow {
    fn drop(&mut self) {
        self.session.taken.fetch_sub(self.amount, Ordering::AcqRel);
        self.session.budget.give_back(self.amount);
        self.session.apply();
    }
}
