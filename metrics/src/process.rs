//! The process itself: resident memory, open descriptors, CPU time (read from
//! `/proc/self` on Linux; absent elsewhere).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

#[derive(Debug)]
pub(crate) struct Process;

/// Resident bytes, open descriptors and CPU seconds, where the system says.
fn read() -> Option<(u64, u64, f64)> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) start after ')'.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        // The kernel's USER_HZ is 100 on every Linux architecture Netbore runs on.
        Some((pages * 4096, fds, (utime + stime) / 100.0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Every listener, session, viewer connection and relay is a task: a count
        // that does not come back after load is a leak.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = runtime.metrics().num_alive_tasks();
            encoder
                .encode_descriptor(
                    "netbore_runtime_tasks",
                    "Tasks alive on the async runtime",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&(tasks as i64))?;
        }
        let Some((rss, fds, cpu)) = read() else {
            return Ok(());
        };
        encoder
            .encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(rss as i64))?;
        encoder
            .encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(fds as i64))?;
        encoder
            .encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, f64>(&cpu, None)?;
        Ok(())
    }
}
