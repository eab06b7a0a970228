//! Per-tunnel traffic and request counts, with a `tunnel` label for at most
//! `--metrics-tunnel-labels` tunnels at a time (the busiest) and the rest summed under
//! `tunnel="other"`.
//!
//! The forwarding path counts into the [`TunnelStats`] its tunnel holds (relaxed
//! atomic adds, no look-up). Labels are handed out when `/metrics` is scraped: free
//! label slots go to the busiest unlabelled tunnels. A tunnel keeps its label until it
//! goes offline. What a tunnel counted before it got its label stays in `other`, and a
//! tunnel that goes offline leaves what it counted under `other` there, so every
//! series only ever grows, as a Prometheus counter must.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::basic::Counter;
use crate::histogram::{Histogram, Snapshot};

/// The default `--metrics-tunnel-labels`.
pub const DEFAULT_TUNNEL_LABELS: usize = 100;

/// Response status classes, `1xx` … `5xx`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// What one tunnel counted.
#[derive(Debug, Default)]
pub struct TunnelStats {
    /// Bytes from viewers towards the agent.
    pub bytes_in: Counter,
    /// Bytes from the agent towards viewers.
    pub bytes_out: Counter,
    requests: [Counter; 5],
    /// Edge-observed time from a request to its response head.
    pub duration: Histogram,
}

impl TunnelStats {
    /// Counts one HTTP response with `status` that took `elapsed` to its head.
    pub fn request(&self, status: u16, elapsed: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.requests[class].inc();
        self.duration.observe(elapsed);
    }

    /// Responses counted in the class of `status`.
    pub fn requests_of_class(&self, status: u16) -> u64 {
        self.requests[usize::from((status / 100).clamp(1, 5)) - 1].get()
    }

    fn snapshot(&self) -> Totals {
        Totals {
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            requests: std::array::from_fn(|i| self.requests[i].get()),
            duration: self.duration.snapshot(),
        }
    }
}

/// A snapshot of counts, summable.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    bytes_in: u64,
    bytes_out: u64,
    requests: [u64; 5],
    duration: Snapshot,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        for (a, b) in self.requests.iter_mut().zip(&o.requests) {
            *a += b;
        }
        self.duration.add(&o.duration);
    }

    fn sub(&mut self, o: &Totals) {
        self.bytes_in = self.bytes_in.saturating_sub(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_sub(o.bytes_out);
        for (a, b) in self.requests.iter_mut().zip(&o.requests) {
            *a = a.saturating_sub(*b);
        }
        self.duration.sub(&o.duration);
    }

    fn activity(&self) -> u64 {
        self.bytes_in + self.bytes_out + self.requests.iter().sum::<u64>()
    }
}

#[derive(Debug)]
struct Entry {
    protocol: &'static str,
    stats: Arc<TunnelStats>,
    /// Set once the tunnel has its own label: what it had counted until then (which
    /// stays under `other`).
    labelled_at: Option<Totals>,
}

#[derive(Debug, Default)]
struct Table {
    live: HashMap<String, Entry>,
    /// What offline tunnels left under `other`.
    retired: Totals,
}

/// Every online tunnel's [`TunnelStats`].
#[derive(Debug)]
pub struct TunnelTable {
    table: Mutex<Table>,
    max_labels: AtomicUsize,
    next_id: AtomicU64,
}

impl Default for TunnelTable {
    fn default() -> Self {
        TunnelTable {
            table: Mutex::default(),
            max_labels: AtomicUsize::new(DEFAULT_TUNNEL_LABELS),
            next_id: AtomicU64::new(0),
        }
    }
}

/// A tunnel's place in the [`TunnelTable`]; the tunnel leaves it when this is dropped.
#[derive(Debug)]
pub struct TunnelGuard {
    table: &'static TunnelTable,
    key: String,
    stats: Arc<TunnelStats>,
}

impl TunnelGuard {
    /// The tunnel's counters.
    pub fn stats(&self) -> &Arc<TunnelStats> {
        &self.stats
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.table.remove(&self.key);
    }
}

impl TunnelTable {
    /// Sets how many tunnels may have a label of their own (`--metrics-tunnel-labels`).
    pub fn set_max_labels(&self, n: usize) {
        self.max_labels.store(n, Ordering::Relaxed);
    }

    /// Adds the online tunnel `tunnel_id` (serving `protocol`: http, tcp or tls).
    /// A tunnel id already present (a tunnel that moved to a new session) gets an
    /// entry of its own; its label is its id either way.
    pub fn add(&'static self, tunnel_id: &str, protocol: &'static str) -> TunnelGuard {
        let stats = Arc::new(TunnelStats::default());
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let key = if t.live.contains_key(tunnel_id) {
            let n = self.next_id.fetch_add(1, Ordering::Relaxed);
            format!("{tunnel_id}#{n}")
        } else {
            tunnel_id.to_string()
        };
        t.live.insert(
            key.clone(),
            Entry {
                protocol,
                stats: stats.clone(),
                labelled_at: None,
            },
        );
        TunnelGuard {
            table: self,
            key,
            stats,
        }
    }

    fn remove(&self, key: &str) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = t.live.remove(key) {
            let left = e.labelled_at.unwrap_or_else(|| e.stats.snapshot());
            t.retired.add(&left);
        }
        // After a peak of tunnels the table returns to the size of what is online.
        if t.live.capacity() > 64 && t.live.len() * 4 < t.live.capacity() {
            let keep = t.live.len() * 2;
            t.live.shrink_to(keep);
        }
    }

    /// Online tunnels per protocol.
    pub fn online(&self) -> Vec<(&'static str, usize)> {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        for e in t.live.values() {
            match counts.iter_mut().find(|(p, _)| *p == e.protocol) {
                Some((_, n)) => *n += 1,
                None => counts.push((e.protocol, 1)),
            }
        }
        counts.sort();
        counts
    }

    /// Hands free labels to the busiest unlabelled tunnels; returns the series to
    /// write: each labelled tunnel's counts since it got its label, and `other`.
    fn series(&self) -> Vec<(String, Totals)> {
        let max = self.max_labels.load(Ordering::Relaxed);
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut snapshots: Vec<(&String, &mut Entry, Totals)> = t
            .live
            .iter_mut()
            .map(|(k, e)| {
                let s = e.stats.snapshot();
                (k, e, s)
            })
            .collect();
        let mut labelled = snapshots
            .iter()
            .filter(|(_, e, _)| e.labelled_at.is_some())
            .count();
        if labelled < max {
            snapshots.sort_by_key(|(_, e, s)| {
                (e.labelled_at.is_some(), std::cmp::Reverse(s.activity()))
            });
            for (_, e, s) in snapshots.iter_mut() {
                if labelled >= max || e.labelled_at.is_some() || s.activity() == 0 {
                    break;
                }
                e.labelled_at = Some(s.clone());
                labelled += 1;
            }
        }
        let mut other = Totals::default();
        let mut out = Vec::new();
        for (key, e, s) in snapshots {
            match &e.labelled_at {
                Some(at) => {
                    other.add(at);
                    let mut own = s.clone();
                    own.sub(at);
                    let label = key.split('#').next().unwrap_or(key).to_string();
                    out.push((label, own));
                }
                None => other.add(&s),
            }
        }
        other.add(&t.retired);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(("other".to_string(), other));
        out
    }

    /// Writes the families, named `{prefix}tunnels` and so on.
    pub(crate) fn encode(
        &self,
        encoder: &mut DescriptorEncoder,
        prefix: &str,
    ) -> Result<(), std::fmt::Error> {
        let online = self.online();
        let name = |n: &str| format!("{prefix}{n}");
        let tunnels = name("tunnels");
        let mut m = encoder.encode_descriptor(
            &tunnels,
            "Online tunnels by protocol",
            None,
            MetricType::Gauge,
        )?;
        for protocol in ["http", "tcp", "tls"] {
            let n = online
                .iter()
                .find(|(p, _)| *p == protocol)
                .map_or(0, |x| x.1);
            m.encode_family(&[("protocol", protocol)])?
                .encode_gauge(&(n as i64))?;
        }
        let series = self.series();
        let bytes = name("tunnel_bytes");
        let mut m = encoder.encode_descriptor(
            &bytes,
            "Bytes through tunnels: in from viewers, out to viewers",
            None,
            MetricType::Counter,
        )?;
        for (tunnel, s) in &series {
            for (direction, v) in [("in", s.bytes_in), ("out", s.bytes_out)] {
                m.encode_family(&[("direction", direction), ("tunnel", tunnel.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
            }
        }
        let requests = name("http_requests");
        let mut m = encoder.encode_descriptor(
            &requests,
            "HTTP responses the Edge passed to viewers, by status class",
            None,
            MetricType::Counter,
        )?;
        for (tunnel, s) in &series {
            for (class, v) in CLASSES.iter().zip(&s.requests) {
                m.encode_family(&[("code", *class), ("tunnel", tunnel.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(v, None)?;
            }
        }
        let duration = name("http_request_duration_seconds");
        let mut m = encoder.encode_descriptor(
            &duration,
            "Edge-observed time from an HTTP request to its response head",
            None,
            MetricType::Histogram,
        )?;
        for (tunnel, s) in &series {
            let (sum, count, buckets) = s.duration.encoded();
            m.encode_family(&[("tunnel", tunnel.as_str())])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize) -> &'static TunnelTable {
        let t: &'static TunnelTable = Box::leak(Box::default());
        t.set_max_labels(max);
        t
    }

    fn value(series: &[(String, Totals)], tunnel: &str) -> Option<u64> {
        series
            .iter()
            .find(|(t, _)| t == tunnel)
            .map(|(_, s)| s.bytes_in)
    }

    #[test]
    fn the_table_shrinks_back_after_a_peak_of_tunnels() {
        let t = table(10);
        let guards: Vec<_> = (0..1000).map(|i| t.add(&format!("t{i}"), "tcp")).collect();
        let peak = t.table.lock().unwrap().live.capacity();
        let kept: Vec<_> = guards.into_iter().take(5).collect();
        let now = t.table.lock().unwrap().live.capacity();
        assert!(now <= 64, "{now} of {peak} kept");
        assert_eq!(t.online(), vec![("tcp", kept.len())]);
    }

    #[test]
    fn the_busiest_tunnels_get_labels_and_every_series_only_grows() {
        let t = table(2);
        let a = t.add("a", "tcp");
        let b = t.add("b", "tcp");
        let c = t.add("c", "http");
        a.stats().bytes_in.add(300);
        b.stats().bytes_in.add(200);
        c.stats().bytes_in.add(100);
        let s = t.series();
        // a and b are labelled from now on; what they had stays in `other`.
        assert_eq!(value(&s, "a"), Some(0));
        assert_eq!(value(&s, "b"), Some(0));
        assert_eq!(value(&s, "c"), None);
        assert_eq!(value(&s, "other"), Some(600));

        a.stats().bytes_in.add(5);
        c.stats().bytes_in.add(7);
        let s = t.series();
        assert_eq!(value(&s, "a"), Some(5));
        assert_eq!(value(&s, "other"), Some(607));

        // b goes offline: its slot goes to c; `other` keeps what each left there.
        drop(b);
        let s = t.series();
        assert_eq!(value(&s, "b"), None);
        assert_eq!(value(&s, "c"), Some(0));
        assert_eq!(value(&s, "other"), Some(607));
        assert_eq!(t.online(), vec![("http", 1), ("tcp", 1)]);
        drop((a, c));
        assert_eq!(value(&t.series(), "other"), Some(607));
    }

    #[test]
    fn labels_stop_at_the_cap() {
        let t = table(3);
        let guards: Vec<_> = (0..10)
            .map(|i| {
                let g = t.add(&format!("t{i}"), "http");
                g.stats().request(200, Duration::from_millis(1));
                g
            })
            .collect();
        let s = t.series();
        assert_eq!(s.len(), 4, "three labelled and other");
        assert_eq!(s.last().unwrap().0, "other");
        drop(guards);
    }
}
