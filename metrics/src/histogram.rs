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

    /// Sum in seconds, count, and each bucket's own count (the encoder makes them
    /// cumulative).
    pub(crate) fn encoded(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let upper = DURATION_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
                (upper, *c)
            })
            .collect();
        let count = self.counts.iter().sum();
        (self.sum_micros as f64 / 1e6, count, buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_buckets_are_cumulative_and_end_at_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot().encoded();
        assert_eq!(count, 3);
        assert!((sum - 60.033).abs() < 1e-6);
        assert_eq!(buckets[0], (0.005, 1));
        assert_eq!(buckets[3], (0.05, 1));
        assert_eq!(*buckets.last().unwrap(), (f64::INFINITY, 1));
        // What a scrape shows: the encoder accumulates.
        let mut out = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Exposed(h)));
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("t_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"0.05\"} 2\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("t_count 3\n"), "{out}");
    }

    #[derive(Debug)]
    struct Exposed(Histogram);

    impl prometheus_client::collector::Collector for Exposed {
        fn encode(
            &self,
            mut encoder: prometheus_client::encoding::DescriptorEncoder,
        ) -> Result<(), std::fmt::Error> {
            let (sum, count, buckets) = self.0.snapshot().encoded();
            encoder
                .encode_descriptor(
                    "t",
                    "test",
                    None,
                    prometheus_client::metrics::MetricType::Histogram,
                )?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum, count, &buckets, None,
                )
        }
    }
}
