//! A lock-free histogram of durations: one atomic add per bucket hit, the cumulative
//! counts computed when scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds in seconds, from a quick local answer to a slow origin.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Observations of durations in [`DURATION_BUCKETS`] (plus `+Inf`).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// A histogram's values at one moment, cumulative as Prometheus wants them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) counts: [u64; DURATION_BUCKETS.len() + 1],
    pub(crate) sum_micros: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
            ..Snapshot::default()
        };
        for (c, b) in s.counts.iter_mut().zip(&self.buckets) {
            *c = b.load(Ordering::Relaxed);
        }
        s
    }
}

impl Snapshot {
    pub(crate) fn add(&mut self, other: &Snapshot) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_micros += other.sum_micros;
    }

    pub(crate) fn sub(&mut self, other: &Snapshot) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_sub(*b);
        }
        self.sum_micros = self.sum_micros.saturating_sub(other.sum_micros);
    }

    /// Sum in seconds, count, and the cumulative buckets.
    pub(crate) fn encoded(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut running = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            running += c;
            let upper = DURATION_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((upper, running));
        }
        (self.sum_micros as f64 / 1e6, running, buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot().encoded();
        assert_eq!(count, 3);
        assert!((sum - 60.033).abs() < 1e-6);
        assert_eq!(buckets[0], (0.005, 1));
        assert_eq!(buckets[3], (0.05, 2));
        assert_eq!(*buckets.last().unwrap(), (f64::INFINITY, 3));
    }
}
