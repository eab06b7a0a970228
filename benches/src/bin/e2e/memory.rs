//! The memory table after the load: what each relay gives back once it is idle.

use std::time::Duration;

use crate::Contender;

/// How long after the last figure memory is read again.
pub(crate) const SETTLE: Duration = Duration::from_secs(10);

/// The memory table after the load: each relay's server and agent RSS idle (before
/// any load), at its peak, and [`SETTLE`] after the load ended, with the last as a
/// multiple of idle (what an idle relay gives back).
/// Also answers each netbore contender's server and agent ratio.
pub(crate) async fn after_load(
    contenders: &[Contender],
    idle: &[(u64, u64)],
) -> (String, Vec<(String, &'static str, f64)>) {
    tokio::time::sleep(SETTLE).await;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut table = format!(
        "| relay | server RSS idle → peak → {}s after the load | × idle | agent RSS idle → peak → {}s after | × idle |\n|---|---|---|---|---|",
        SETTLE.as_secs(),
        SETTLE.as_secs()
    );
    let mut ratios = Vec::new();
    for (c, &(s0, a0)) in contenders.iter().zip(idle) {
        let (s1, a1) = c.peak_rss_kib();
        let (s2, a2) = c.rss_kib();
        if c.is_netbore() {
            ratios.push((c.name.clone(), "server", s2 as f64 / s0.max(1) as f64));
            ratios.push((c.name.clone(), "agent", a2 as f64 / a0.max(1) as f64));
        }
        table += &format!(
            "\n| {} | {:.1} → {:.1} → {:.1} MiB | {:.2}× | {:.1} → {:.1} → {:.1} MiB | {:.2}× |",
            c.name,
            mib(s0),
            mib(s1),
            mib(s2),
            s2 as f64 / s0.max(1) as f64,
            mib(a0),
            mib(a1),
            mib(a2),
            a2 as f64 / a0.max(1) as f64,
        );
        eprintln!(
            "{}",
            serde_json::json!({"memory_after_load": c.name, "server_idle_kib": s0, "server_peak_kib": s1,
                "server_after_kib": s2, "agent_idle_kib": a0, "agent_peak_kib": a1, "agent_after_kib": a2})
        );
    }
    (table, ratios)
}
