//! State shared between the driver task, the [`crate::Mux`] handles and the streams:
//! the sans-IO session behind one lock, plus the wakers of everyone waiting on it.

use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use crate::session::{Event, Session, StreamMap};
use crate::splice::Job;

/// Wakers of the tasks using one stream, or the splice that moves its bytes.
#[derive(Debug, Default)]
pub(crate) struct StreamWakers {
    pub(crate) read: Option<Waker>,
    pub(crate) write: Option<Waker>,
    /// The splice and which of its ends this stream is.
    pub(crate) splice: Option<Job>,
}

/// Everything behind the session lock.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) session: Session,
    pub(crate) wakers: StreamMap<StreamWakers>,
    pub(crate) accept_waker: Option<Waker>,
    pub(crate) driver_waker: Option<Waker>,
    /// Live [`crate::Mux`] handles; the session closes when the last one drops.
    pub(crate) handles: usize,
    /// Splice directions made runnable by events, for the driver to run once it has
    /// let go of the lock ([`crate::splice`]).
    pub(crate) splice_jobs: Vec<Job>,
    /// Frames were queued by a splice run from another session's driver, which
    /// moved all it had read at once: the driver sends them without first waiting
    /// for other tasks to add theirs.
    pub(crate) spliced: bool,
}

impl Inner {
    /// Wakes whoever each pending session event concerns.
    pub(crate) fn dispatch_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::IncomingStream | Event::GoAway(_) => wake(&mut self.accept_waker),
                Event::Readable(id) => {
                    if let Some(w) = self.wakers.get_mut(&id) {
                        match &w.splice {
                            // Data from this end moves on.
                            Some((splice, end)) => self.splice_jobs.push((splice.clone(), *end)),
                            None => wake(&mut w.read),
                        }
                    }
                }
                Event::Writable(id) => {
                    if let Some(w) = self.wakers.get_mut(&id) {
                        match &w.splice {
                            // Data for this end, from the other, may move again.
                            Some((splice, end)) => {
                                self.splice_jobs.push((splice.clone(), 1 - *end));
                            }
                            None => wake(&mut w.write),
                        }
                    }
                }
            }
        }
    }

    /// Wakes the driver when the session has something for it to do.
    pub(crate) fn wake_driver_if_needed(&mut self) {
        if self.session.has_transmit() || self.session.is_closing() {
            wake(&mut self.driver_waker);
        }
    }

    /// Wakes every waiting task (the session ended).
    pub(crate) fn wake_all(&mut self) {
        wake(&mut self.accept_waker);
        for w in self.wakers.values_mut() {
            wake(&mut w.read);
            wake(&mut w.write);
        }
    }
}

/// The lock around [`Inner`].
#[derive(Debug)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    pub(crate) fn new(session: Session) -> Self {
        Shared {
            inner: Mutex::new(Inner {
                session,
                wakers: StreamMap::default(),
                accept_waker: None,
                driver_waker: None,
                handles: 1,
                splice_jobs: Vec::new(),
                spliced: false,
            }),
        }
    }

    /// Locks the session. A panic while locked cannot leave the session half-updated
    /// in a way that matters more than the panic itself, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Wakes and clears a waker slot.
pub(crate) fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

/// Stores `waker` in `slot` unless an equivalent one is already there.
pub(crate) fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// The current time on tokio's clock, so tests with a paused clock drive the
/// session's timers too.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
