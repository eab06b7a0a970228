//! The lock of the capture queue. Forwarding copies a request's bytes into the
//! queue under it, and a lock released by a locked instruction (a `std` mutex's
//! swap) makes forwarding wait, right after the copy, until every line it wrote
//! has been taken back from the capture thread's core: about a third of what
//! forwarding paid for the capture (`cargo bench -p netbore-benches --bench
//! inspect`, `docs/benchmarks.md` finding 43). Here release is a plain store.
//!
//! It never blocks forwarding for long: [`Handoff::try_lock`] gives up after
//! [`PATIENCE`] of spinning (its caller then lets the bytes pass uncaptured), so a
//! holder that was preempted (the capture thread runs at the lowest priority) costs
//! forwarding that much at most. [`Handoff::lock`] waits, sleeping between tries so
//! that a preempted holder gets the core back (a waiter that only yielded would keep
//! it from a holder of lower priority); it is for what happens once per stream or
//! per batch.

#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long [`Handoff::try_lock`] spins before it gives up: a holder keeps the
/// lock for the copy of one read at most (a few microseconds for the largest).
pub(crate) const PATIENCE: Duration = Duration::from_micros(20);
/// Spins between two looks at the clock.
const SPINS: u32 = 64;
/// How long [`Handoff::lock`] sleeps between two tries.
const NAP: Duration = Duration::from_micros(50);

/// A value behind a lock whose release is a plain store.
#[derive(Debug, Default)]
pub(crate) struct Handoff<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a `Guard`, and at most one guard exists
// at a time (`locked` is set by a compare-exchange and cleared by the guard's drop),
// so sharing the lock between threads shares `T` only as `Mutex<T>` would.
unsafe impl<T: Send> Sync for Handoff<T> {}

impl<T> Handoff<T> {
    fn acquire(&self) -> bool {
        !self.locked.load(Ordering::Relaxed)
            && self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// The value, unless the lock stays taken for [`PATIENCE`].
    pub(crate) fn try_lock(&self) -> Option<Guard<'_, T>> {
        if self.acquire() {
            return Some(Guard(self, PhantomData));
        }
        let start = Instant::now();
        loop {
            for _ in 0..SPINS {
                std::hint::spin_loop();
                if self.acquire() {
                    return Some(Guard(self, PhantomData));
                }
            }
            if start.elapsed() > PATIENCE {
                return None;
            }
        }
    }

    /// The value if the lock is free now (no spinning).
    pub(crate) fn try_lock_now(&self) -> Option<Guard<'_, T>> {
        self.acquire().then(|| Guard(self, PhantomData))
    }

    /// The value, once the lock is free (sleeping between tries).
    pub(crate) fn lock(&self) -> Guard<'_, T> {
        loop {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            std::thread::sleep(NAP);
        }
    }
}

/// Holds the lock; releases it when dropped. Like `std`'s `MutexGuard` it stays on
/// the thread that took it (so it cannot be held across an `.await` of a task that
/// moves between threads) and is shared between threads only when `T` may be.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub(crate) struct Guard<'a, T>(&'a Handoff<T>, PhantomData<*const ()>);

// SAFETY: a shared guard gives only `&T`, which other threads may hold when `T: Sync`.
unsafe impl<T: Sync> Sync for Guard<'_, T> {}

impl<T> Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock, so no other reference to the value exists.
        unsafe { &*self.0.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { &mut *self.0.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // A release store: what was written under the lock is seen by the next
        // holder, and nothing here waits for those writes to leave this core.
        self.0.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn holders_never_overlap() {
        let shared = Arc::new(Handoff::<(u64, u64)>::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        let mut guard = shared.lock();
                        let pair: &mut (u64, u64) = &mut guard;
                        // Two fields written apart: a second holder would see them differ.
                        assert_eq!(pair.0, pair.1);
                        pair.0 += 1;
                        std::hint::black_box(&mut *pair);
                        pair.1 += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*shared.lock(), (200_000, 200_000));
    }

    #[test]
    fn try_lock_gives_up_while_another_holds_it() {
        let shared = Handoff::<u32>::default();
        let held = shared.lock();
        assert!(shared.try_lock().is_none());
        assert!(shared.try_lock_now().is_none());
        drop(held);
        drop(shared.try_lock_now().expect("free"));
        *shared.try_lock().expect("free again") += 1;
        assert_eq!(*shared.lock(), 1);
    }
}
