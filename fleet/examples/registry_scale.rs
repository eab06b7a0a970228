//! The fleet's directory at scale, on a real `redis-server` (`docs/benchmarks.md`,
//! "The fleet's directory with 100,000 tunnels"):
//!
//! ```text
//! cargo run --release -p netbore-fleet --example registry_scale [TUNNELS]
//! ```
//!
//! One node publishes TUNNELS routes (default 100,000: HTTP names and TCP ports); the
//! figures are how long until all are in Redis, Redis memory per tunnel, how long a
//! second node takes to load the table, the latency of each of 1,000,000 lookups from
//! that node's replica (p50, p99, p99.9, max), and how long the first node takes to
//! publish every route again after Redis lost them all. It exits non-zero when the
//! lookups' p99 is over 10 µs. Redis runs on a Unix socket
//! beside the nodes, so the times are the nodes' own work plus Redis's, without a
//! network between them.

use std::time::{Duration, Instant};

use netbore_control::tokens::TrustedKeys;
use netbore_edge::fleet::{Directory, RouteKey};
use netbore_fleet::{Fleet, NodeInfo};
use netbore_test_support::redis::RedisServer;

/// The p99 of a lookup from the replica the run exits non-zero above (on a machine
/// busy with other work, a run may cross it by chance).
const LOOKUP_P99_LIMIT: Duration = Duration::from_micros(10);

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        agent_addr: format!("{id}:7835"),
        control_url: format!("http://{id}:7834"),
        link_cert: format!("sha256:{id}"),
        ..NodeInfo::default()
    }
}

/// Route `i`: every fourth a TCP port, the rest HTTP names.
fn route(i: usize) -> RouteKey {
    if i.is_multiple_of(4) {
        RouteKey::Tcp(1024 + (i / 4 % 64_000) as u16)
    } else {
        RouteKey::Http(format!("app-{i:06}"))
    }
}

fn routes_in_redis(conn: &mut redis::Connection) -> usize {
    redis::cmd("HLEN")
        .arg("netbore:{fleet}:routes")
        .query(conn)
        .unwrap()
}

fn used_memory(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Waits until `check` holds (at most two minutes) and says how long it took.
fn until(started: Instant, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{what} took over two minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

fn main() {
    let tunnels: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |n| n.parse().expect("TUNNELS is a number"));
    // Distinct TCP ports cap what one table may hold.
    let tunnels = tunnels.min(64_000 * 4);
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let empty = used_memory(&mut conn);

    let a = Fleet::join(&redis.url, node("a"), false, TrustedKeys::default()).unwrap();
    let started = Instant::now();
    for i in 0..tunnels {
        a.publish(&route(i), &format!("tun_{i:020x}"), None);
    }
    let published = until(started, "publishing", || {
        routes_in_redis(&mut conn) == tunnels
    });
    let full = used_memory(&mut conn);
    let per_tunnel = (full.saturating_sub(empty)) as f64 / tunnels as f64;

    let started = Instant::now();
    let b = Fleet::join(&redis.url, node("b"), false, TrustedKeys::default()).unwrap();
    let last = route(tunnels - 1);
    let loaded = until(started, "a second node's load", || {
        b.holder(&last).is_some()
    });

    // Lookups from the replica, each timed on its own; the keys are made beforehand
    // so only the lookup is measured.
    let keys: Vec<RouteKey> = (0..1_000_000).map(|i| route(i * 7919 % tunnels)).collect();
    let mut times = Vec::with_capacity(keys.len());
    let mut found = 0usize;
    for key in &keys {
        let t = Instant::now();
        let holder = b.holder(key);
        times.push(t.elapsed());
        found += usize::from(holder.is_some());
    }
    assert_eq!(found, keys.len(), "every route has a holder");
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];

    // Redis loses everything (a restart without persistence): the holder writes every
    // route again at its next heartbeat.
    let () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    let started = Instant::now();
    let republished = until(started, "republishing", || {
        routes_in_redis(&mut conn) == tunnels
    });

    println!("tunnels: {tunnels}");
    println!("published by one node: {:.2} s", published.as_secs_f64());
    println!(
        "Redis memory: {:.1} MiB in all, {per_tunnel:.0} bytes per tunnel",
        full.saturating_sub(empty) as f64 / (1 << 20) as f64
    );
    println!(
        "a second node loads the table: {:.2} s",
        loaded.as_secs_f64()
    );
    println!(
        "lookup from the replica (1,000,000): p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(0.999),
        times[times.len() - 1]
    );
    println!(
        "republished after Redis lost everything: {:.2} s (includes up to one heartbeat, 1 s, before the node notices)",
        republished.as_secs_f64()
    );
    drop((a, b));
    // The hot path's lookup has a limit: the run fails when it breaks.
    if at(0.99) > LOOKUP_P99_LIMIT {
        eprintln!(
            "lookup p99 {:?} is over the limit of {LOOKUP_P99_LIMIT:?}",
            at(0.99)
        );
        std::process::exit(1);
    }
}
