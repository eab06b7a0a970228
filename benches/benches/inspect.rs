//! Criterion bench of what forwarding pays for the inspector: one keep-alive
//! exchange (a request head as the Edge sends it, a 1 KiB answer) shown to an HTTP
//! stream's capture, over 64 streams, while the capture thread reads them on its
//! own core. `exchange` times the forwarding side; between batches the bench waits
//! for the capture thread, so the queue never fills and every byte is copied.
//! `capture_thread` is the capture thread's CPU time for the same exchanges.

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netbore_agent::inspect::{InspectConfig, Inspector};
use netbore_transport::pipe::Tap;

const STREAMS: usize = 64;
/// Exchanges between two waits for the capture thread (about its 5 ms tick at the
/// harness's rate).
const BATCH: u64 = 256;

fn exchange(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let request = b"GET /1k HTTP/1.1\r\nhost: bench.example.test\r\nuser-agent: e2e\r\n\
x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: bench.example.test\r\n\r\n";
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n".to_vec();
    response.extend_from_slice(&[b'x'; 1024]);
    let inspector = Inspector::new(InspectConfig::default());
    let mut taps: Vec<_> = (0..STREAMS)
        .map(|_| {
            inspector
                .capture_stream(0, [127, 0, 0, 1].into())
                .expect("the capture thread starts")
        })
        .collect();
    // The capture thread has started (and named itself) once it has read the opens.
    rt.block_on(inspector.settle());
    let mut g = c.benchmark_group("inspect");
    g.throughput(Throughput::Elements(1));
    // Runs `iters` exchanges in batches, waiting for the capture thread after each;
    // returns the time spent passing the bytes to the capture.
    let mut run = |iters: u64| {
        let mut timed = Duration::ZERO;
        let mut done = 0;
        let mut next = 0;
        while done < iters {
            let n = BATCH.min(iters - done);
            let start = Instant::now();
            for _ in 0..n {
                let tap = &mut taps[next % STREAMS];
                tap.read_from_stream(request);
                tap.read_from_socket(&response);
                next += 1;
            }
            timed += start.elapsed();
            done += n;
            rt.block_on(inspector.settle());
        }
        timed
    };
    g.bench_function("exchange_1k_64_streams", |b| b.iter_custom(&mut run));
    // The capture thread's CPU time for the same exchanges (its run time as the
    // kernel counts it, in nanoseconds).
    g.bench_function("capture_thread_1k_64_streams", |b| {
        b.iter_custom(|iters| {
            let before = capture_thread_cpu();
            run(iters);
            capture_thread_cpu() - before
        })
    });
    g.finish();
}

/// The CPU time the capture thread has used so far (from `/proc/self/task/*/schedstat`).
fn capture_thread_cpu() -> Duration {
    for task in std::fs::read_dir("/proc/self/task").expect("a Linux /proc") {
        let dir = task.expect("a task").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.trim() == "netbore-inspect" {
            let stat = std::fs::read_to_string(dir.join("schedstat")).expect("schedstat");
            let ns: u64 = stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a run time");
            return Duration::from_nanos(ns);
        }
    }
    panic!("no capture thread");
}

criterion_group!(benches, exchange);
criterion_main!(benches);
