//! Per-stream bookkeeping of the sans-IO session: receive buffer, flow-control
//! credit in both directions, and half-close / reset flags.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

/// State of one stream inside a [`crate::Session`].
#[derive(Debug)]
pub(crate) struct StreamState {
    /// Received chunks not yet read, in order.
    pub(crate) recv: VecDeque<Bytes>,
    /// Sum of the lengths in `recv`.
    pub(crate) recv_buffered: usize,
    /// Current receive window (grows by auto-tuning).
    pub(crate) recv_window: u32,
    /// Bytes the peer may still send before it must wait for credit.
    pub(crate) recv_credit: u32,
    /// Bytes read by the application and not yet credited back.
    pub(crate) recv_consumed: u32,
    /// When credit was last sent (drives window auto-tuning).
    pub(crate) last_credit_at: Option<Instant>,
    /// The peer half-closed.
    pub(crate) recv_fin: bool,
    /// At least one byte of data arrived (a reset before that is a rapid reset).
    pub(crate) recv_any: bool,
    /// Bytes we may still send.
    pub(crate) send_credit: u32,
    /// A write found no credit; the next window update must wake the writer.
    pub(crate) send_blocked: bool,
    /// We half-closed.
    pub(crate) send_fin: bool,
    /// Aborted by either side.
    pub(crate) reset: bool,
    /// The application dropped its handle.
    pub(crate) released: bool,
    /// Window bytes taken from the shared budget for this stream, given back when it
    /// is freed.
    pub(crate) charged: u32,
    /// How many chunks at the front of `recv` own their memory (were compacted).
    pub(crate) owned: usize,
    /// When the oldest chunk that still shares a read buffer arrived, if any.
    pub(crate) unowned_since: Option<Instant>,
}

impl StreamState {
    pub(crate) fn new(recv_window: u32, send_credit: u32) -> Self {
        StreamState {
            recv: VecDeque::new(),
            recv_buffered: 0,
            recv_window,
            recv_credit: recv_window,
            recv_consumed: 0,
            last_credit_at: None,
            recv_fin: false,
            recv_any: false,
            send_credit,
            send_blocked: false,
            send_fin: false,
            reset: false,
            released: false,
            charged: 0,
            owned: 0,
            unowned_since: None,
        }
    }

    /// Drops buffered data (on reset); returns how many bytes were dropped.
    pub(crate) fn clear_recv(&mut self) -> usize {
        let n = self.recv_buffered;
        self.recv.clear();
        self.recv_buffered = 0;
        self.owned = 0;
        self.unowned_since = None;
        n
    }

    /// Queues a received chunk (a slice of the driver's read buffer).
    pub(crate) fn push_recv(&mut self, chunk: Bytes, now: Instant) {
        self.recv_buffered += chunk.len();
        self.recv.push_back(chunk);
        self.unowned_since.get_or_insert(now);
    }

    /// Takes the oldest received chunk.
    pub(crate) fn pop_recv(&mut self) -> Option<Bytes> {
        let chunk = self.recv.pop_front()?;
        self.recv_buffered -= chunk.len();
        if self.owned > 0 {
            self.owned -= 1;
        } else if self.recv.is_empty() {
            self.unowned_since = None;
        }
        Some(chunk)
    }

    /// Copies the chunks that still share read buffers into one of their own, so
    /// that a stream nobody reads pins only the bytes it holds, not the (larger)
    /// buffers they were read into. Returns the bytes copied.
    pub(crate) fn compact(&mut self) -> usize {
        self.unowned_since = None;
        let shared = self.recv.len() - self.owned;
        if shared == 0 {
            return 0;
        }
        let len: usize = self.recv.iter().skip(self.owned).map(Bytes::len).sum();
        let mut joined = bytes::BytesMut::with_capacity(len);
        for chunk in self.recv.drain(self.owned..) {
            joined.extend_from_slice(&chunk);
        }
        self.recv.push_back(joined.freeze());
        self.owned = self.recv.len();
        len
    }
}
