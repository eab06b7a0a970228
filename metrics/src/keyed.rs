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

/// The map key of `values`: the values themselves, or `other` for each once the
/// family holds [`MAX_KEYS`] keys and these are not among them.
fn key_of<V>(map: &BTreeMap<Vec<String>, V>, values: &[&str]) -> Vec<String> {
    let key: Vec<String> = values.iter().map(|v| (*v).to_string()).collect();
    if map.len() < MAX_KEYS || map.contains_key(&key) {
        key
    } else {
        values.iter().map(|_| "other".to_string()).collect()
    }
}

/// `labels` paired with one key's values, as the encoder takes them.
fn label_set<'a>(labels: &[&'a str], values: &'a [String]) -> Vec<(&'a str, &'a str)> {
    labels
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .collect()
}

/// The map key of `values` for a look-up.
fn lookup(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_string()).collect()
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
        let key = key_of(&map, values);
        *map.entry(key).or_default() += 1;
    }

    /// The count of `values`.
    pub fn get(&self, values: &[&str]) -> u64 {
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&lookup(values)).copied().unwrap_or(0)
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
            let labels = label_set(self.labels, values);
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
        let key = key_of(&map, values);
        let v = map.entry(key.clone()).or_default();
        *v += delta;
        if *v == 0.0 {
            map.remove(&key);
        }
    }

    /// Sets the value of `values`.
    pub fn set(&self, values: &[&str], value: f64) {
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let key = key_of(&map, values);
        map.insert(key, value);
    }

    /// Removes the value of `values`.
    pub fn remove(&self, values: &[&str]) {
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&lookup(values));
    }

    /// The value of `values`, if set.
    pub fn get(&self, values: &[&str]) -> Option<f64> {
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&lookup(values)).copied()
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
            let labels = label_set(self.labels, values);
            metric.encode_family(&labels)?.encode_gauge(value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_past_the_cap_count_under_other() {
        let c = KeyedCounters::new(&["code"]);
        for i in 0..MAX_KEYS {
            c.inc(&[&i.to_string()]);
        }
        c.inc(&["0"]);
        c.inc(&["new"]);
        assert_eq!(c.get(&["0"]), 2);
        assert_eq!(c.get(&["new"]), 0);
        assert_eq!(c.get(&["other"]), 1);
        let g = KeyedGauges::new(&["name"]);
        g.add(&["a"], 1.0);
        g.add(&["a"], -1.0);
        assert_eq!(g.get(&["a"]), None, "a value back at zero is removed");
    }
}
