//! Counters and gauges keyed by label values that are not known in advance (error
//! codes, API routes, certificate names). Changed once per handshake, API call or
//! certificate, never per byte or request, so a mutex is cheap here. The number of
//! keys is capped: past the cap, new keys count under `other`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

/// Most distinct keys one family holds.
const MAX_KEYS: usize = 1000;

fn key_of(map_len: usize, has: bool, values: &[&str]) -> Vec<String> {
    if has || map_len < MAX_KEYS {
        values.iter().map(|v| (*v).to_string()).collect()
    } else {
        values.iter().map(|_| "other".to_string()).collect()
    }
}

/// Monotonic counts per label values.
#[derive(Debug)]
pub struct KeyedCounters {
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl KeyedCounters {
    /// A family with these label names.
    pub const fn new(labels: &'static [&'static str]) -> Self {
        KeyedCounters {
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one to the count of `values` (one per label name, in order).
    pub fn inc(&self, values: &[&str]) {
        debug_assert_eq!(values.len(), self.labels.len());
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let owned: Vec<String> = values.iter().map(|v| (*v).to_string()).collect();
        let key = key_of(map.len(), map.contains_key(&owned), values);
        *map.entry(key).or_default() += 1;
    }

    /// The count of `values`.
    pub fn get(&self, values: &[&str]) -> u64 {
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let owned: Vec<String> = values.iter().map(|v| (*v).to_string()).collect();
        map.get(&owned).copied().unwrap_or(0)
    }

    pub(crate) fn encode(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
    ) -> Result<(), std::fmt::Error> {
        let map = self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (values, count) in &map {
            let labels: Vec<(&str, &str)> = self
                .labels
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            metric
                .encode_family(&labels)?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(count, None)?;
        }
        Ok(())
    }
}

/// Values per label values, each set, changed or removed by its owner.
#[derive(Debug)]
pub struct KeyedGauges {
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl KeyedGauges {
    /// A family with these label names.
    pub const fn new(labels: &'static [&'static str]) -> Self {
        KeyedGauges {
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds `delta` to the value of `values`; a value back at zero is removed.
    pub fn add(&self, values: &[&str], delta: f64) {
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let owned: Vec<String> = values.iter().map(|v| (*v).to_string()).collect();
        let key = key_of(map.len(), map.contains_key(&owned), values);
        let v = map.entry(key.clone()).or_default();
        *v += delta;
        if *v == 0.0 {
            map.remove(&key);
        }
    }

    /// Sets the value of `values`.
    pub fn set(&self, values: &[&str], value: f64) {
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let owned: Vec<String> = values.iter().map(|v| (*v).to_string()).collect();
        let key = key_of(map.len(), map.contains_key(&owned), values);
        map.insert(key, value);
    }

    /// Removes the value of `values`.
    pub fn remove(&self, values: &[&str]) {
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let owned: Vec<String> = values.iter().map(|v| (*v).to_string()).collect();
        map.remove(&owned);
    }

    /// The value of `values`, if set.
    pub fn get(&self, values: &[&str]) -> Option<f64> {
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let owned: Vec<String> = values.iter().map(|v| (*v).to_string()).collect();
        map.get(&owned).copied()
    }

    pub(crate) fn encode(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
    ) -> Result<(), std::fmt::Error> {
        let map = self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (values, value) in &map {
            let labels: Vec<(&str, &str)> = self
                .labels
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            metric.encode_family(&labels)?.encode_gauge(value)?;
        }
        Ok(())
    }
}
