//! [`splice`]: joins two streams, usually of two sessions, so that what arrives on
//! one is sent on the other, both ways, by the sessions' drivers themselves.
//!
//! A fleet node relaying a link's stream into an agent's session did this with a
//! task per stream: every chunk woke the task, which read it from one session and
//! wrote it into the other. A splice has no task. A stream's readable and writable
//! events, which would wake a reader or a writer, become jobs the driver that found
//! them runs once it has let go of its session's lock: read what the source stream
//! holds, queue it on the sink stream, wake the sink's driver. Flow control is the
//! sessions' own: a chunk the sink's window cannot take yet waits here (at most one
//! per direction), and the source's window credits its peer only for what was read,
//! so a slow side holds the other back rather than filling memory. Chunks are copied
//! as they cross (the relay task copied them too): a chunk received is a slice of
//! its session's read block, and one kept by a slow sink would keep the whole
//! block.
//!
//! Only one session's lock is ever held at a time, the splice's own lock is taken
//! before either, and nothing takes it while holding a session's, so two drivers
//! running the two directions at once cannot deadlock.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};

use crate::config::SMALL_PAYLOAD;
use crate::error::StreamError;
use crate::frame::StreamId;
use crate::session::ReadOutcome;
use crate::shared::{Shared, register, wake};
use crate::stream::MuxStream;

/// A job for a driver: a splice and the direction to run (from that end to the other).
pub(crate) type Job = (Arc<Splice>, usize);

/// One of the two streams.
#[derive(Debug)]
struct End {
    shared: Arc<Shared>,
    id: StreamId,
}

/// What moves in one direction.
#[derive(Debug, Default)]
struct Half {
    /// Read from the source and not yet taken by the sink.
    pending: Bytes,
    /// The source's FIN was passed on.
    finished: bool,
}

#[derive(Debug, Default)]
struct State {
    halves: [Half; 2],
    /// Set once both directions finished or either failed; the streams are released.
    done: Option<Result<(), StreamError>>,
    /// The [`Spliced`] future waiting for the end.
    waker: Option<Waker>,
}

/// Two spliced streams.
#[derive(Debug)]
pub(crate) struct Splice {
    ends: [End; 2],
    state: Mutex<State>,
}

/// Splices `a` and `b`: from now on their sessions' drivers move every byte and the
/// FIN of each to the other. The future ends when both directions have finished, or
/// with the first error, after which both streams are reset. Dropping it early
/// resets both.
pub fn splice(a: MuxStream, b: MuxStream) -> Spliced {
    let (a_id, a_shared, a_rest) = a.detach();
    let (b_id, b_shared, b_rest) = b.detach();
    let splice = Arc::new(Splice {
        ends: [
            End {
                shared: a_shared,
                id: a_id,
            },
            End {
                shared: b_shared,
                id: b_id,
            },
        ],
        state: Mutex::new(State {
            halves: [
                Half {
                    pending: a_rest,
                    finished: false,
                },
                Half {
                    pending: b_rest,
                    finished: false,
                },
            ],
            ..State::default()
        }),
    });
    for (k, end) in splice.ends.iter().enumerate() {
        let mut inner = end.shared.lock();
        if let Some(w) = inner.wakers.get_mut(&end.id) {
            w.splice = Some((splice.clone(), k));
        }
    }
    // What arrived before the splice raised no event it will see.
    splice.run(0, None);
    splice.run(1, None);
    Spliced { splice }
}

impl Splice {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs direction `k` until its source has nothing more or its sink takes no
    /// more. `home` is the session whose driver runs the job, if one does: that
    /// driver goes round again by itself, so it is not woken.
    pub(crate) fn run(&self, k: usize, home: Option<&Shared>) {
        let mut state = self.lock();
        if state.done.is_some() {
            return;
        }
        let (from, to) = (&self.ends[k], &self.ends[1 - k]);
        let is_home = |end: &End| home.is_some_and(|h| std::ptr::eq(h, &*end.shared));
        // A source that is not read now (its FIN passed on, or a chunk waiting for
        // the sink) still passes on a reset: its peer gave up on the stream, and the
        // other end must not wait on it.
        if (state.halves[k].finished || !state.halves[k].pending.is_empty())
            && from.shared.lock().session.is_reset(from.id)
        {
            return self.end(&mut state, Err(StreamError::Reset), home);
        }
        if state.halves[k].finished {
            return;
        }
        loop {
            if state.halves[k].pending.is_empty() {
                let mut inner = from.shared.lock();
                let outcome = inner.session.read(from.id, crate::shared::now);
                if !is_home(from) {
                    // Reading may have made a window credit due.
                    inner.wake_driver_if_needed();
                }
                drop(inner);
                match outcome {
                    Ok(ReadOutcome::Data(chunk)) => state.halves[k].pending = owned(chunk),
                    Ok(ReadOutcome::Fin) => {
                        let mut inner = to.shared.lock();
                        let finished = inner.session.finish(to.id);
                        if !is_home(to) {
                            inner.wake_driver_if_needed();
                        }
                        drop(inner);
                        if let Err(e) = finished {
                            return self.end(&mut state, Err(e), home);
                        }
                        state.halves[k].finished = true;
                        if state.halves[1 - k].finished {
                            self.end(&mut state, Ok(()), home);
                        }
                        return;
                    }
                    Ok(ReadOutcome::Blocked) => return,
                    Err(e) => return self.end(&mut state, Err(e), home),
                }
            }
            let mut inner = to.shared.lock();
            let taken = inner.session.write_bytes(to.id, &state.halves[k].pending);
            if !is_home(to) {
                inner.spliced |= home.is_some();
                inner.wake_driver_if_needed();
            }
            drop(inner);
            match taken {
                // The sink's window is full: its writable event brings us back.
                Ok(0) => {
                    let waiting = std::mem::take(&mut state.halves[k].pending);
                    state.halves[k].pending = Bytes::copy_from_slice(&waiting);
                    return;
                }
                Ok(n) => state.halves[k].pending.advance(n),
                Err(e) => return self.end(&mut state, Err(e), home),
            }
        }
    }

    /// Ends the splice with `result`: releases both streams (resetting them after an
    /// error), forgets the splice in both sessions and wakes the [`Spliced`] future.
    fn end(&self, state: &mut State, result: Result<(), StreamError>, home: Option<&Shared>) {
        if state.done.is_some() {
            return;
        }
        for end in &self.ends {
            let mut inner = end.shared.lock();
            if result.is_err() {
                inner.session.reset(end.id);
            }
            inner.session.release(end.id);
            inner.wakers.remove(&end.id);
            crate::session::shrink_when_sparse(&mut inner.wakers);
            if !home.is_some_and(|h| std::ptr::eq(h, &*end.shared)) {
                inner.wake_driver_if_needed();
            }
        }
        for half in &mut state.halves {
            half.pending = Bytes::new();
        }
        state.done = Some(result);
        wake(&mut state.waker);
    }
}

/// A chunk to pass on, made not to keep its read block: one the sink's session
/// would keep as a slice is copied now; a small one the sink copies as it takes it
/// (and a chunk left waiting for the sink is copied then).
fn owned(chunk: Bytes) -> Bytes {
    if chunk.len() > SMALL_PAYLOAD {
        Bytes::copy_from_slice(&chunk)
    } else {
        chunk
    }
}

/// The future of a [`splice`]: ready when both directions have ended.
#[derive(Debug)]
#[must_use = "dropping the future resets both streams"]
pub struct Spliced {
    splice: Arc<Splice>,
}

impl Future for Spliced {
    type Output = Result<(), StreamError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.splice.lock();
        match &state.done {
            Some(result) => Poll::Ready(result.clone()),
            None => {
                register(&mut state.waker, cx.waker());
                Poll::Pending
            }
        }
    }
}

impl Drop for Spliced {
    fn drop(&mut self) {
        let mut state = self.splice.lock();
        self.splice.end(&mut state, Err(StreamError::Reset), None);
    }
}

#[cfg(test)]
#[path = "splice_tests.rs"]
mod tests;
