//! A server's drain (`docs/deploy.md`, "Draining a node"): one signal every
//! listener, agent session and viewer connection of the node watches, and the count
//! of the work the node waits for before it exits.
//!
//! - **Running**: everything serves.
//! - **Draining** ([`Drain::start`]): the node takes no new tunnels, tells each agent
//!   to move, closes keep-alive viewer connections after their current request, and
//!   keeps serving what is in flight (and new viewers, which it forwards to where
//!   the tunnels went).
//! - **Stopping** ([`Drain::stop`]): agent sessions close; the process exits.
//!
//! Work is counted by guards ([`Drain::work`]): a viewer connection (HTTP, HTTPS, TLS
//! passthrough, a TCP tunnel's or a mirrored port's) and a stream another node relays
//! here each hold one while they live, so "idle" means no viewer is being served.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

/// The phase of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving.
    Running,
    /// Finishing what is in flight; agents move elsewhere.
    Draining,
    /// Closing its sessions; about to exit.
    Stopping,
}

/// A node's drain signal and in-flight count. Clones share both.
#[derive(Debug, Clone)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: watch::Sender<Phase>,
    /// Woken once, when draining starts (viewer connections wait on it without a
    /// watch receiver each).
    draining: Notify,
    /// Draining or stopping, for the per-request check.
    started: std::sync::atomic::AtomicBool,
    /// Viewer connections and relayed streams.
    work: Counter,
    /// Agent sessions (they close when the node stops).
    sessions: Counter,
}

/// A count and the waiters for it to reach zero.
#[derive(Debug, Default)]
struct Counter {
    count: AtomicUsize,
    zero: Notify,
}

impl Counter {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn remove(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.zero.notify_waiters();
        }
    }

    fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    async fn zero(&self) {
        loop {
            let notified = self.zero.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            inner: Arc::new(Inner {
                phase: watch::Sender::new(Phase::Running),
                draining: Notify::new(),
                started: std::sync::atomic::AtomicBool::new(false),
                work: Counter::default(),
                sessions: Counter::default(),
            }),
        }
    }
}

impl Drain {
    /// Starts draining; `false` if it had started already.
    pub fn start(&self) -> bool {
        let started = self.inner.phase.send_if_modified(|p| {
            if *p == Phase::Running {
                *p = Phase::Draining;
                true
            } else {
                false
            }
        });
        if started {
            self.inner.started.store(true, Ordering::Release);
            self.inner.draining.notify_waiters();
        }
        started
    }

    /// Starts stopping (draining first if it had not started).
    pub fn stop(&self) {
        self.start();
        self.inner.phase.send_if_modified(|p| {
            let changed = *p != Phase::Stopping;
            *p = Phase::Stopping;
            changed
        });
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    /// Whether draining (or stopping) has started.
    pub fn is_draining(&self) -> bool {
        self.inner.started.load(Ordering::Acquire)
    }

    /// Completes once the phase is `phase` or later.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.inner.phase.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = rx.wait_for(|p| *p >= phase).await;
    }

    /// A future that completes when draining starts, for connections that poll it
    /// only when woken by it: enable it, then check [`Self::is_draining`] (a start in
    /// between wakes it).
    pub fn draining_notice(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.draining.notified()
    }

    /// Counts one piece of work (a viewer connection, a relayed stream) until the
    /// guard drops.
    pub fn work(&self) -> Work {
        self.inner.work.add();
        Work {
            inner: self.inner.clone(),
            session: false,
        }
    }

    /// Counts one agent session until the guard drops.
    pub fn session(&self) -> Work {
        self.inner.sessions.add();
        Work {
            inner: self.inner.clone(),
            session: true,
        }
    }

    /// Pieces of work in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.work.get()
    }

    /// Completes when no work is in flight.
    pub async fn idle(&self) {
        self.inner.work.zero().await;
    }

    /// Completes when every agent session has ended.
    pub async fn sessions_closed(&self) {
        self.inner.sessions.zero().await;
    }
}

/// One piece of work (or agent session) a draining node waits for; counted until
/// dropped.
#[derive(Debug)]
pub struct Work {
    inner: Arc<Inner>,
    session: bool,
}

impl Work {
    /// Whether the node drains (no clone of the drain needed to ask).
    pub fn is_draining(&self) -> bool {
        self.inner.started.load(Ordering::Acquire)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if self.session {
            self.inner.sessions.remove();
        } else {
            self.inner.work.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn phases_move_forward_and_idle_waits_for_the_last_guard() {
        let drain = Drain::default();
        assert_eq!(drain.phase(), Phase::Running);
        let first = drain.work();
        let second = drain.work();
        assert_eq!(drain.in_flight(), 2);
        let notice = drain.draining_notice();
        tokio::pin!(notice);
        notice.as_mut().enable();
        assert!(drain.start());
        assert!(!drain.start(), "a second start changes nothing");
        tokio::time::timeout(Duration::from_secs(1), notice)
            .await
            .expect("an enabled notice hears the start");
        tokio::time::timeout(Duration::from_secs(1), drain.reached(Phase::Draining))
            .await
            .expect("draining is reached");
        let idle = tokio::spawn({
            let drain = drain.clone();
            async move { drain.idle().await }
        });
        drop(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!idle.is_finished(), "one piece of work is still in flight");
        drop(second);
        tokio::time::timeout(Duration::from_secs(1), idle)
            .await
            .expect("idle once the last guard drops")
            .unwrap();
        let session = drain.session();
        drain.stop();
        assert_eq!(drain.phase(), Phase::Stopping);
        let closed = tokio::spawn({
            let drain = drain.clone();
            async move { drain.sessions_closed().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closed.is_finished(), "a session is still open");
        drop(session);
        tokio::time::timeout(Duration::from_secs(1), closed)
            .await
            .expect("closed once the last session ends")
            .unwrap();
        drain.start();
        assert_eq!(drain.phase(), Phase::Stopping, "never back to draining");
    }
}
