//! The capture worker against a real queue and thread: times, hurries, a held
//! lock, a full queue and the resumes after them.

use super::*;
use crate::inspect::InspectConfig;
use crate::inspect::queued_tap::{QueuedTap, starts_a_request};
use netbore_transport::pipe::Tap;

/// Waits until the worker has read everything queued before the call (up to 10 s,
/// for a machine busy with other tests: the worker runs at the lowest priority).
async fn caught_up(inspector: &Inspector) {
    inspector
        .inner
        .queue
        .settle_within(Duration::from_secs(10))
        .await;
}

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
    caught_up(&inspector).await;
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
    caught_up(&inspector).await;
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
    caught_up(&inspector).await;
    tap.read_from_stream(b"GET /next HTTP/1.1\r\n\r\n");
    tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    caught_up(&inspector).await;
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
    caught_up(&inspector).await;
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
    caught_up(&inspector).await;
    let all = inspector.exchanges(10);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].request.request_line().1, "/held");
    assert!(
        all[0].error.as_deref().unwrap().contains("fell behind"),
        "{:?}",
        all[0].error
    );
    drop(tap);
    caught_up(&inspector).await;
    assert_eq!(inspector.exchanges(10).len(), 1);
}

fn ok() -> &'static [u8] {
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
}

fn paths(inspector: &Inspector) -> Vec<String> {
    inspector
        .exchanges(100)
        .iter()
        .map(|e| e.request.request_line().1.to_string())
        .collect()
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
    // Its first request passes uncaptured while the queue is held.
    tap.read_from_stream(b"GET /first HTTP/1.1\r\n\r\n");
    drop(held);
    tap.read_from_socket(ok());
    caught_up(&inspector).await;
    assert!(inspector.exchanges(10).is_empty());
    // The next one finds room, and the stream is followed from there on.
    for path in ["/second", "/third"] {
        tap.read_from_stream(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
        tap.read_from_socket(ok());
    }
    caught_up(&inspector).await;
    assert_eq!(paths(&inspector), ["/third", "/second"]);
    let all = inspector.exchanges(10);
    assert!(
        all.iter()
            .all(|e| e.error.is_none() && e.response_body.captured == b"ok"[..])
    );
    drop(tap);
    caught_up(&inspector).await;
    assert!(inspector.exchanges(10).iter().all(|e| e.error.is_none()));
}

#[tokio::test]
async fn a_stream_opened_while_the_queue_is_held_is_captured_from_its_first_request_if_free_by_then()
 {
    let inspector = inspector(1024);
    drop(QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap());
    let held = inspector.inner.queue.lock();
    let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
    drop(held);
    tap.read_from_stream(b"GET /first HTTP/1.1\r\n\r\n");
    tap.read_from_socket(ok());
    caught_up(&inspector).await;
    assert_eq!(paths(&inspector), ["/first"]);
}

/// A stream whose capture was lost while the queue was held during the answer to
/// `/held`.
async fn lost_during_an_answer(inspector: &Inspector) -> QueuedTap {
    let mut tap = QueuedTap::new(inspector, 0, [192, 0, 2, 1].into()).unwrap();
    tap.read_from_stream(b"GET /held HTTP/1.1\r\n\r\n");
    caught_up(inspector).await;
    let held = inspector.inner.queue.lock();
    tap.read_from_socket(ok());
    drop(held);
    assert!(tap.lost);
    tap
}

#[tokio::test]
async fn a_capture_that_fell_behind_resumes_at_the_next_request() {
    let inspector = inspector(1024);
    let mut tap = lost_during_an_answer(&inspector).await;
    tap.read_from_stream(b"POST /next HTTP/1.1\r\ncontent-length: 17\r\n\r\n");
    // Body bytes that look like a request do not resume it again: no answer
    // came between.
    tap.read_from_stream(b"GET /not HTTP/1.1");
    tap.read_from_socket(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok");
    caught_up(&inspector).await;
    let all = inspector.exchanges(10);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].request.request_line().1, "/next");
    assert_eq!(all[0].request_body.captured, b"GET /not HTTP/1.1"[..]);
    assert_eq!(all[0].response_body.captured, b"ok"[..]);
    assert!(all[0].error.is_none());
    assert!(all[1].error.as_deref().unwrap().contains("fell behind"));
    // And the stream is followed on.
    tap.read_from_stream(b"GET /after HTTP/1.1\r\n\r\n");
    tap.read_from_socket(ok());
    caught_up(&inspector).await;
    assert_eq!(paths(&inspector), ["/after", "/next", "/held"]);
    assert_eq!(inspector.exchanges(1)[0].response_body.captured, b"ok"[..]);
}

#[tokio::test]
async fn a_resume_waits_for_a_whole_request_line_and_a_free_queue() {
    let inspector = inspector(1024);
    let mut tap = lost_during_an_answer(&inspector).await;
    // A body's bytes after an early answer: no request line ends in them.
    tap.read_from_stream(b"GET /x HTTP/1.1");
    tap.read_from_socket(ok());
    tap.read_from_stream(b"GET /y  HTTP/1.1\r\n\r\n");
    tap.read_from_socket(ok());
    tap.read_from_stream(b"get /z HTTP/1.1\r\n\r\n");
    tap.read_from_socket(ok());
    assert!(tap.lost);
    // A request while the queue is held passes uncaptured too.
    let held = inspector.inner.queue.lock();
    tap.read_from_stream(b"GET /busy HTTP/1.1\r\n\r\n");
    drop(held);
    tap.read_from_socket(ok());
    assert!(tap.lost);
    tap.read_from_stream(b"\r\nDELETE /items/1?a=b HTTP/1.0\r\n\r\n");
    tap.read_from_socket(ok());
    assert!(!tap.lost);
    caught_up(&inspector).await;
    assert_eq!(paths(&inspector), ["/items/1?a=b", "/held"]);
}

#[tokio::test]
async fn a_resume_that_guessed_wrong_resumes_again_at_the_next_request() {
    let inspector = inspector(1024);
    let mut tap = lost_during_an_answer(&inspector).await;
    // A body line that looks like a request line, after an early answer: the
    // origin's next bytes are no response head, so it was not a request.
    tap.read_from_stream(b"GET /fake HTTP/1.1\r\n\r\n");
    tap.read_from_socket(b"more of the last answer\r\n\r\n");
    caught_up(&inspector).await;
    // (The worker says the capture fell behind again.)
    tap.read_from_socket(b"");
    assert!(tap.lost);
    tap.read_from_stream(b"GET /real HTTP/1.1\r\n\r\n");
    tap.read_from_socket(ok());
    caught_up(&inspector).await;
    let all = inspector.exchanges(10);
    assert_eq!(all[0].request.request_line().1, "/real");
    assert_eq!(all[0].response_body.captured, b"ok"[..]);
    assert!(all[0].error.is_none());
    assert!(all[1].error.as_deref().unwrap().contains("fell behind"));
}

#[tokio::test]
async fn a_websocket_whose_capture_fell_behind_is_not_read_as_http_again() {
    let inspector = inspector(1024);
    let mut tap = QueuedTap::new(&inspector, 0, [192, 0, 2, 1].into()).unwrap();
    tap.read_from_stream(b"GET /ws HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n");
    tap.read_from_socket(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    );
    caught_up(&inspector).await;
    let held = inspector.inner.queue.lock();
    tap.read_from_socket(&[0x81, 2, b'h', b'i']);
    drop(held);
    assert!(tap.lost);
    // Frames whose bytes look like a request, after the origin's: not a request.
    tap.read_from_stream(b"GET /inside HTTP/1.1\r\n\r\n");
    tap.read_from_socket(ok());
    caught_up(&inspector).await;
    tap.read_from_stream(b"GET /again HTTP/1.1\r\n\r\n");
    tap.read_from_socket(ok());
    caught_up(&inspector).await;
    assert_eq!(paths(&inspector), ["/ws"]);
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
    caught_up(&inspector).await;
    // The worker said it follows the stream no more, and why.
    tap.read_from_socket(b"");
    assert!(tap.lost);
    tap.read_from_stream(b"GET /small HTTP/1.1\r\n\r\n");
    tap.read_from_socket(ok());
    caught_up(&inspector).await;
    let all = inspector.exchanges(10);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].request.request_line().1, "/small");
    assert_eq!(all[0].response_body.captured, b"ok"[..]);
    assert!(all[1].error.as_deref().unwrap().contains("fell behind"));
}

#[test]
fn a_request_line_is_told_from_other_bytes() {
    for yes in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"\r\nPOST /a?b=c HTTP/1.0\r\nhost: x\r\n",
        b"OPTIONS * HTTP/1.1\n",
        b"GET http://example.com/ HTTP/1.1\r\n",
    ] {
        assert!(starts_a_request(yes), "{:?}", String::from_utf8_lossy(yes));
    }
    for no in [
        &b"GET / HTTP/1.1"[..],
        b"GET /  HTTP/1.1\r\n",
        b"get / HTTP/1.1\r\n",
        b"GET / HTTP/2.0\r\n",
        b"GET / HTTP/1.1 \r\n",
        b"GET\t/ HTTP/1.1\r\n",
        b"\x81\x02hi",
        b"",
        b"{\"a\": 1}\r\n",
    ] {
        assert!(!starts_a_request(no), "{:?}", String::from_utf8_lossy(no));
    }
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
    caught_up(&inspector).await;
    let all = inspector.exchanges(usize::MAX);
    assert_eq!(all.len(), n);
    assert_eq!(all[0].request.request_line().1, format!("/r{}", n - 1));
}
