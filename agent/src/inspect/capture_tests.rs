//! The capture against byte streams fed whole and a few bytes at a time.

use super::*;
use crate::inspect::{Exchange, InspectConfig};

fn inspector(body_limit: usize) -> Inspector {
    Inspector::new(InspectConfig {
        body_limit,
        db_size: 1 << 20,
        secrets: false,
    })
}

/// A tap on a stream of tunnel 0 opened for a viewer at 192.0.2.1.
fn tap(inspector: &Inspector) -> HttpTap {
    HttpTap::new(inspector.clone(), 0, [192, 0, 2, 1].into(), None)
}

/// Feeds `requests` then `responses` to a tap in pieces of `step` bytes and returns
/// the exchanges recorded, oldest first.
fn capture(inspector: &Inspector, requests: &[u8], responses: &[u8], step: usize) -> Vec<Exchange> {
    let mut tap = tap(inspector);
    for piece in requests.chunks(step) {
        tap.read_from_stream(piece);
    }
    for piece in responses.chunks(step) {
        tap.read_from_socket(piece);
    }
    drop(tap);
    let mut all = inspector.exchanges(usize::MAX);
    all.reverse();
    all
}

/// Method, target, status, request body, response body.
type Seen = (String, String, u16, Vec<u8>, Vec<u8>);

const REQUESTS: &[u8] = b"\r\nGET /a?x=1 HTTP/1.1\r\nhost: app\r\n\r\n\
POST /b HTTP/1.1\r\nhost: app\r\ncontent-length: 5\r\n\r\nhello\
PUT /c HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n\
HEAD /d HTTP/1.1\r\nhost: app\r\n\r\n";

const RESPONSES: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";

#[test]
fn pipelined_exchanges_are_found_whatever_the_pieces() {
    for step in [1, 2, 3, 7, 64, usize::MAX] {
        let inspector = inspector(1024);
        let all = capture(&inspector, REQUESTS, RESPONSES, step.min(REQUESTS.len()));
        let summary: Vec<Seen> = all
            .iter()
            .map(|e| {
                let req = e.request.request();
                let status = e.response.as_ref().map_or(0, |r| r.response().status);
                (
                    req.method,
                    req.target,
                    status,
                    e.request_body.captured.to_vec(),
                    e.response_body.captured.to_vec(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("GET".into(), "/a?x=1".into(), 200, vec![], b"wiki".to_vec()),
                (
                    "POST".into(),
                    "/b".into(),
                    201,
                    b"hello".to_vec(),
                    b"ok".to_vec()
                ),
                ("PUT".into(), "/c".into(), 204, b"abcde".to_vec(), vec![]),
                ("HEAD".into(), "/d".into(), 200, vec![], vec![]),
            ],
            "in pieces of {step}"
        );
        assert!(
            all.iter()
                .all(|e| e.duration.is_some() && e.error.is_none())
        );
        assert_eq!(all[2].request_body.size, 5);
    }
}

#[test]
fn bodies_are_kept_up_to_the_limit_and_counted_whole() {
    let inspector = inspector(4);
    let all = capture(
        &inspector,
        b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\n\r\nuntil the close",
        3,
    );
    assert_eq!(all[0].request_body.captured, &b"0123"[..]);
    assert_eq!(all[0].request_body.size, 10);
    assert!(all[0].request_body.truncated);
    // A close-delimited body ends with the stream.
    assert_eq!(all[0].response_body.size, 15);
    assert!(all[0].duration.is_some());
}

#[test]
fn a_request_without_its_response_is_marked() {
    let inspector = inspector(64);
    let all = capture(
        &inspector,
        b"GET / HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\ncut",
        64,
    );
    assert!(all[0].error.as_deref().unwrap().contains("closed"));
}

#[test]
fn websocket_messages_are_read_after_the_upgrade() {
    let inspector = inspector(64);
    let mut requests =
        b"GET /ws HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n".to_vec();
    // A masked text frame "hi" in two fragments, then a masked ping.
    let mask = [1u8, 2, 3, 4];
    requests.extend_from_slice(&[0x01, 0x81]);
    requests.extend_from_slice(&mask);
    requests.push(b'h' ^ mask[0]);
    requests.extend_from_slice(&[0x80, 0x81]);
    requests.extend_from_slice(&mask);
    requests.push(b'i' ^ mask[0]);
    requests.extend_from_slice(&[0x89, 0x80]);
    requests.extend_from_slice(&mask);
    let mut responses = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n".to_vec();
    // An unmasked binary frame of 300 bytes (16-bit length).
    responses.extend_from_slice(&[0x82, 126, 1, 44]);
    responses.extend_from_slice(&[7u8; 300]);
    for step in [1, 5, 1000] {
        let inspector = inspector.clone();
        inspector.clear();
        let all = capture(&inspector, &requests, &responses, step);
        let ws = &all[0].websocket;
        let kinds: Vec<(bool, &str, u64)> =
            ws.iter().map(|m| (m.from_viewer, m.kind, m.size)).collect();
        assert!(
            kinds.contains(&(true, "text", 2)),
            "{kinds:?} in pieces of {step}"
        );
        assert!(kinds.contains(&(true, "ping", 0)), "{kinds:?}");
        assert!(kinds.contains(&(false, "binary", 300)), "{kinds:?}");
        let text = ws.iter().find(|m| m.kind == "text").unwrap();
        assert_eq!(text.captured, b"hi");
        assert_eq!(all[0].response.as_ref().unwrap().response().status, 101);
    }
}

#[test]
fn an_endless_head_stops_the_capture_not_the_stream() {
    let inspector = inspector(64);
    let mut tap = tap(&inspector);
    tap.read_from_stream(b"GET / HTTP/1.1\r\n");
    let line = vec![b'a'; 1024];
    for _ in 0..100 {
        tap.read_from_stream(&line);
    }
    assert!(tap.request.head.capacity() <= 2 * MAX_HEAD);
    assert!(matches!(tap.request.state, State::Off));
    drop(tap);
    assert!(inspector.exchanges(10).is_empty());
}

proptest::proptest! {
    #[test]
    fn any_bytes_in_any_pieces_never_panic(
        requests in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        responses in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        step in 1usize..40,
        framed in proptest::bool::ANY,
    ) {
        let inspector = inspector(32);
        let mut req = Vec::new();
        let mut res = Vec::new();
        if framed {
            // Make the noise land in bodies, chunk sizes and frames too.
            req.extend_from_slice(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nupgrade: x\r\n\r\n");
            res.extend_from_slice(b"HTTP/1.1 101 OK\r\n\r\n");
        }
        req.extend_from_slice(&requests);
        res.extend_from_slice(&responses);
        let _ = capture(&inspector, &req, &res, step);
        proptest::prop_assert!(inspector.used() <= 1 << 20);
    }
}

#[test]
fn an_endless_chunk_size_line_is_not_held() {
    let inspector = inspector(64);
    let mut tap = tap(&inspector);
    tap.read_from_stream(b"GET / HTTP/1.1\r\n\r\n");
    tap.read_from_socket(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
    let digits = vec![b'1'; 1024];
    for _ in 0..1000 {
        tap.read_from_socket(&digits);
    }
    let State::Body(Framing::Chunked(chunk)) = &tap.response.state else {
        panic!("the response side left its body");
    };
    assert!(
        matches!(chunk, Chunk::Lost),
        "the line was followed past its cap"
    );
}

#[test]
fn a_connect_tunnel_is_not_read_as_http() {
    let inspector = inspector(64);
    let all = capture(
        &inspector,
        b"CONNECT db:5432 HTTP/1.1\r\nhost: db:5432\r\n\r\nGET /planted HTTP/1.1\r\nauthorization: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        1000,
    );
    // In this order the planted request is read before the 200 is seen, so it
    // is recorded; what follows the 200 is not.
    let methods: Vec<String> = all.iter().map(|e| e.request.request().method).collect();
    assert_eq!(methods[0], "CONNECT");
    assert_eq!(all[0].response.as_ref().unwrap().response().status, 200);
    let inspector = super::super::Inspector::new(InspectConfig::default());
    let mut tap = tap(&inspector);
    tap.read_from_stream(b"CONNECT db:5432 HTTP/1.1\r\nhost: db:5432\r\n\r\n");
    tap.read_from_socket(b"HTTP/1.1 200 OK\r\n\r\n");
    tap.read_from_stream(b"GET /planted HTTP/1.1\r\nauthorization: x\r\n\r\n");
    drop(tap);
    assert_eq!(
        inspector.exchanges(10).len(),
        1,
        "nothing planted after the 200"
    );
}

#[test]
fn a_body_cut_by_the_end_of_its_stream_is_marked_cut() {
    let inspector = inspector(64);
    let all = capture(
        &inspector,
        b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\n0123",
        b"",
        100,
    );
    assert_eq!(all[0].request_body.captured, &b"0123"[..]);
    assert!(all[0].request_body.truncated, "never replayed as whole");
    assert!(all[0].error.is_some());
}

#[test]
fn bytes_passed_over_inside_a_body_only_count() {
    let inspector = inspector(4);
    let now = Instant::now();
    let mut tap = tap(&inspector);
    tap.feed(true, b"GET /big HTTP/1.1\r\n\r\n", now);
    tap.feed(
        false,
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789",
        now,
    );
    // The kept part is full: the rest of the body is not needed.
    assert_eq!(tap.needless(false), Some(90));
    tap.pass_over(false, 90, true, now);
    // The next exchange on the stream is read as usual.
    tap.feed(true, b"GET /next HTTP/1.1\r\n\r\n", now);
    tap.feed(
        false,
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        now,
    );
    drop(tap);
    let mut all = inspector.exchanges(10);
    all.reverse();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].response_body.size, 100);
    assert_eq!(all[0].response_body.captured, &b"0123"[..]);
    assert!(all[0].response_body.truncated);
    assert!(all[0].duration.is_some());
    assert_eq!(all[1].request.request_line().1, "/next");
    assert_eq!(all[1].response_body.captured, &b"ok"[..]);
}

#[test]
fn a_hole_before_the_limit_cuts_the_body_and_one_in_a_head_ends_the_capture() {
    let inspector = inspector(64);
    let now = Instant::now();
    let mut tap = tap(&inspector);
    tap.feed(true, b"GET / HTTP/1.1\r\n\r\n", now);
    tap.feed(
        false,
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab",
        now,
    );
    // Lost bytes inside the body: what came after them is not kept.
    tap.pass_over(false, 3, false, now);
    tap.feed(false, b"fghij", now);
    // Lost bytes where a head should start: nothing more is followed.
    tap.feed(true, b"GET /x HT", now);
    tap.pass_over(true, 5, false, now);
    assert_eq!(tap.needless(true), None);
    assert_eq!(tap.needless(false), None);
    tap.feed(true, b"GET /y HTTP/1.1\r\n\r\n", now);
    drop(tap);
    let all = inspector.exchanges(10);
    assert_eq!(all.len(), 1, "nothing is made up after the hole");
    assert_eq!(all[0].response_body.size, 10);
    assert_eq!(all[0].response_body.captured, &b"ab"[..]);
    assert!(all[0].response_body.truncated);
}

#[test]
fn a_response_head_shows_once_it_has_come_and_its_end_when_the_body_ends() {
    let inspector = inspector(1024);
    let mut tap = tap(&inspector);
    tap.read_from_stream(b"GET /slow HTTP/1.1\r\n\r\n");
    // A head in two pieces, then half of the body.
    tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-le");
    tap.read_from_socket(b"ngth: 4\r\n\r\nab");
    let e = &inspector.exchanges(1)[0];
    assert_eq!(e.response.as_ref().unwrap().response().status, 200);
    assert_eq!(
        e.response.as_ref().unwrap().raw,
        &b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"[..]
    );
    assert_eq!(e.duration, None);
    assert!(e.error.is_none());
    tap.read_from_socket(b"cd");
    let e = &inspector.exchanges(1)[0];
    assert_eq!(e.response.as_ref().unwrap().status_line().0, 200);
    assert_eq!(e.response_body.captured, b"abcd"[..]);
    assert!(e.duration.is_some());
    // An interim answer is not recorded as the response.
    tap.read_from_stream(b"POST /next HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    tap.read_from_socket(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(inspector.exchanges(1)[0].response.is_none());
    tap.read_from_socket(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        inspector.exchanges(1)[0]
            .response
            .as_ref()
            .unwrap()
            .status_line()
            .0,
        204
    );
}
