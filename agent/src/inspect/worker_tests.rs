//! The capture worker against a real queue and thread: times, hurries, a held
//! lock, a full queue and the resumes after them.

use super::*;
use crate::inspect::InspectConfig;

fn inspector(body_limit: usize) -> Inspector {
    Inspector::new(InspectConfig {
        body_limit,
        db_size: 1 << 20,
        secrets: false,
    })
}

#[tokio::test]
async fn the_worker_records_what_passed_with_the_times_it_passed() {
    let inspector = inspector(1024);
    let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
    tap.read_from_stream(b"POST /a HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi");
    tokio::time::sleep(Duration::from_millis(30)).await;
    tap.read_from_socket(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok");
    inspector.settle().await;
    let all = inspector.exchanges(10);
    assert_eq!(all.len(), 1);
    let e = &all[0];
    assert_eq!(e.request_body.captured, &b"hi"[..]);
    assert_eq!(e.response_body.captured, &b"ok"[..]);
    // Timed when the bytes passed, not when the worker read them.
    let took = e.duration.unwrap();
    assert!(
        took >= Duration::from_millis(30) && took < Duration::from_secs(5),
        "{took:?}"
    );
    drop(tap);
    inspector.settle().await;
    assert!(inspector.exchanges(10)[0].error.is_none());
}

#[tokio::test]
async fn a_large_body_is_copied_only_until_the_worker_says_it_is_past_the_limit() {
    let limit = 1024;
    let inspector = inspector(limit);
    let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
    let size = 1 << 20;
    tap.read_from_stream(b"GET /big HTTP/1.1\r\n\r\n");
    tap.read_from_socket(format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").as_bytes());
    let chunk = vec![b'x'; 16 * 1024];
    let mut sent = 0;
    let mut skipped = false;
    while sent < size {
        // Once the worker has said so, the rest of the body is only counted.
        let told = tap.shared.needless_to[FROM_ORIGIN].load(Ordering::Acquire);
        let queued = inspector.inner.queue.lock().bytes.len();
        tap.read_from_socket(&chunk);
        sent += chunk.len();
        if told >= tap.offset[FROM_ORIGIN] {
            // (The worker may have taken the queue meanwhile: it can only shrink.)
            let after = inspector.inner.queue.lock().bytes.len();
            assert!(after <= queued, "copied past the limit");
            skipped = true;
        }
        // Time for the worker (woken by the hurry) to read.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        skipped,
        "the worker never said the rest of the body was not needed"
    );
    inspector.settle().await;
    tap.read_from_stream(b"GET /next HTTP/1.1\r\n\r\n");
    tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    inspector.settle().await;
    let mut all = inspector.exchanges(10);
    all.reverse();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].response_body.size, size as u64);
    assert_eq!(all[0].response_body.captured.len(), limit);
    assert!(all[0].response_body.truncated);
    assert_eq!(all[1].request.request_line().1, "/next");
    assert_eq!(all[1].response_body.captured, &b"ok"[..]);
}

#[tokio::test]
async fn forwarding_does_not_wait_for_a_queue_held_too_long() {
    let inspector = inspector(1024);
    let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
    tap.read_from_stream(b"GET /held HTTP/1.1\r\n\r\n");
    inspector.settle().await;
    // Another holder keeps the queue (as a preempted capture thread would).
    let held = inspector.inner.queue.lock();
    let started = Instant::now();
    tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    let waited = started.elapsed();
    drop(held);
    assert!(waited < Duration::from_millis(100), "{waited:?}");
    assert!(tap.lost);
    // Nothing more is copied; the next pass, finding the lock free, tells the
    // worker why the capture ended (the connection may stay open for hours).
    tap.read_from_socket(b"more");
    assert!(!tap.untold);
    assert!(inspector.inner.queue.lock().bytes.is_empty());
    inspector.settle().await;
    let all = inspector.exchanges(10);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].request.request_line().1, "/held");
    assert!(
        all[0].error.as_deref().unwrap().contains("fell behind"),
        "{:?}",
        all[0].error
    );
    drop(tap);
    inspector.settle().await;
    assert_eq!(inspector.exchanges(10).len(), 1);
}

#[tokio::test]
async fn a_stream_opened_while_the_queue_is_held_is_captured_from_its_next_request() {
    let inspector = inspector(1024);
    // The worker runs (a first stream started it).
    drop(QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap());
    let held = inspector.inner.queue.lock();
    let started = Instant::now();
    let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
    assert!(started.elapsed() < Duration::from_millis(100));
    drop(held);
    // Its first request passes uncaptured; the worker has not heard of it.
    tap.read_from_stream(b"GET /first HTTP/1.1\r\n\r\n");
    tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    inspector.settle().await;
    assert!(inspector.exchanges(10).is_empty());
    // The next one finds room, and the stream is followed from there on.
    for path in ["/second", "/third"] {
        tap.read_from_stream(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
        tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    }
    inspector.settle().await;
    let all = inspector.exchanges(10);
    let paths: Vec<_> = all.iter().map(|e| e.request.request_line().1).collect();
    assert_eq!(paths, ["/third", "/second"]);
    assert!(
        all.iter()
            .all(|e| e.error.is_none() && e.response_body.captured == b"ok"[..])
    );
    drop(tap);
    inspector.settle().await;
    assert!(inspector.exchanges(10).iter().all(|e| e.error.is_none()));
}

#[tokio::test]
async fn a_capture_that_fell_behind_resumes_at_the_next_request() {
    let inspector = inspector(1024);
    let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
    tap.read_from_stream(b"GET /held HTTP/1.1\r\n\r\n");
    inspector.settle().await;
    // The answer passes while the queue is held (a preempted capture thread).
    let held = inspector.inner.queue.lock();
    tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    drop(held);
    assert!(tap.lost);
    // Bytes of a body that looked like a request do not resume it (no answer
    // came between): only a request after an answer does.
    tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    tap.read_from_stream(b"POST /next HTTP/1.1\r\ncontent-length: 15\r\n\r\n");
    tap.read_from_stream(b"GET /not HTTP/1");
    tap.read_from_socket(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok");
    inspector.settle().await;
    let all = inspector.exchanges(10);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].request.request_line().1, "/next");
    assert_eq!(all[0].request_body.captured, &b"GET /not HTTP/1"[..]);
    assert_eq!(all[0].response_body.captured, &b"ok"[..]);
    assert!(all[0].error.is_none());
    assert!(all[1].error.as_deref().unwrap().contains("fell behind"));
    // And the stream is followed on.
    tap.read_from_stream(b"GET /after HTTP/1.1\r\n\r\n");
    tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    inspector.settle().await;
    let all = inspector.exchanges(10);
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].request.request_line().1, "/after");
    assert_eq!(all[0].response_body.captured, &b"ok"[..]);
}

#[tokio::test]
async fn bytes_that_found_the_queue_full_outside_a_body_end_the_capture_until_the_next_request() {
    let inspector = inspector(1024);
    let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
    tap.read_from_stream(b"GET /big HTTP/1.1\r\n\r\n");
    // One read larger than the queue, head and all: it passes unread.
    let size = 1 << 20;
    let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").into_bytes();
    answer.resize(answer.len() + size, b'x');
    tap.read_from_socket(&answer);
    inspector.settle().await;
    // The worker said it follows the stream no more, and why.
    tap.read_from_socket(b"");
    assert!(tap.lost);
    tap.read_from_stream(b"GET /small HTTP/1.1\r\n\r\n");
    tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    inspector.settle().await;
    let all = inspector.exchanges(10);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].request.request_line().1, "/small");
    assert_eq!(all[0].response_body.captured, &b"ok"[..]);
    assert!(all[1].error.as_deref().unwrap().contains("fell behind"));
}

#[tokio::test]
async fn a_burst_on_one_stream_is_captured_whole_while_the_worker_lags() {
    // A budget whose queue holds the burst (a sixteenth of it per batch).
    let inspector = Inspector::new(InspectConfig {
        body_limit: 1024,
        db_size: 8 << 20,
        secrets: false,
    });
    let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
    let filler = "f".repeat(300);
    let n = 600;
    // Far more than a body limit's worth, faster than the worker reads.
    for i in 0..n {
        tap.read_from_stream(
            format!("GET /r{i} HTTP/1.1\r\nx-filler: {filler}\r\n\r\n").as_bytes(),
        );
        tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    }
    inspector.settle().await;
    let all = inspector.exchanges(usize::MAX);
    assert_eq!(all.len(), n);
    assert_eq!(all[0].request.request_line().1, format!("/r{}", n - 1));
}
