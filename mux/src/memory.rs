//! A budget of receive windows shared by many sessions.
//!
//! Every byte of receive window a session grants is a byte the peer may make it
//! buffer, and a slow reader on the far side of the stream (a viewer who never reads a
//! download) decides how long it stays buffered. A [`WindowBudget`] shared by every
//! session of a process bounds the sum: a stream opens only when its initial window
//! fits, and windows grow only into what is left. The sum of granted windows is an
//! upper bound of the bytes held, so the bound holds whatever the peers do.
//!
//! Taking and giving back are single atomic operations, done when a stream opens or
//! closes and when a window grows, never per frame.

use std::sync::atomic::{AtomicU64, Ordering};

/// Receive-window bytes that all the sessions sharing it may grant together.
#[derive(Debug)]
pub struct WindowBudget {
    limit: u64,
    granted: AtomicU64,
}

impl WindowBudget {
    /// A budget of `limit` bytes, none granted.
    pub fn new(limit: u64) -> Self {
        WindowBudget {
            limit,
            granted: AtomicU64::new(0),
        }
    }

    /// The bytes the budget allows in all.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The bytes granted now.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }

    /// Takes exactly `n` bytes, or nothing when fewer are left. True when taken.
    pub fn take(&self, n: u64) -> bool {
        self.granted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| {
                let next = g.checked_add(n)?;
                (next <= self.limit).then_some(next)
            })
            .is_ok()
    }

    /// Takes up to `n` bytes, as many as are left; returns how many were taken.
    pub fn take_up_to(&self, n: u64) -> u64 {
        let mut taken = 0;
        let _ = self
            .granted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| {
                taken = n.min(self.limit.saturating_sub(g));
                (taken > 0).then_some(g + taken)
            });
        taken
    }

    /// Gives back `n` bytes taken earlier.
    pub fn give_back(&self, n: u64) {
        if n > 0 {
            let before = self.granted.fetch_sub(n, Ordering::AcqRel);
            debug_assert!(before >= n, "gave back more than was taken");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_what_fits_and_gets_it_back() {
        let budget = WindowBudget::new(100);
        assert!(budget.take(60));
        assert!(!budget.take(41), "over the limit");
        assert_eq!(budget.take_up_to(50), 40);
        assert_eq!(budget.take_up_to(1), 0);
        assert_eq!(budget.granted(), 100);
        budget.give_back(100);
        assert_eq!(budget.granted(), 0);
        assert!(budget.take(100));
    }

    #[test]
    fn concurrent_takers_never_exceed_the_limit() {
        let budget = std::sync::Arc::new(WindowBudget::new(1000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = budget.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.take(7)).count() as u64)
            })
            .collect();
        let taken: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken * 7, budget.granted());
        assert!(budget.granted() <= 1000 && budget.granted() > 1000 - 7);
    }
}
