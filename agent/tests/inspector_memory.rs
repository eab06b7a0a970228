//! The inspector stays within `--inspect-db-size` as the allocator counts it (its
//! history and the queue its capture thread reads), whatever the shape of the
//! traffic: many small exchanges (where the records' own slots weigh most), 1 KiB
//! answers read as they come or in bursts that fill the queue, and bodies that
//! leave blocks part empty. Reading all of it through the API (a list of 10,000
//! records, a HAR export of everything) costs a page of it, not a copy.

#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};

use netbore_agent::inspect::{InspectConfig, Inspector};
use netbore_transport::pipe::Tap;

/// The system allocator, counting the bytes it has handed out and not got back.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The most `LIVE` has been since it was last reset.
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

#[allow(unsafe_code)]
// SAFETY: every call goes to the system allocator unchanged; only a count is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const BUDGET: usize = 32 << 20;
const STREAMS: usize = 64;

fn response(status: &str, body: usize) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\ncontent-length: {body}\r\n\r\n").into_bytes();
    r.resize(r.len() + body, b'x');
    r
}

#[test]
fn the_inspector_stays_within_its_budget_as_the_allocator_counts_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let inspector = Inspector::new(InspectConfig {
        db_size: BUDGET,
        ..InspectConfig::default()
    });
    let mut taps: Vec<_> = (0..STREAMS)
        .map(|_| {
            inspector
                .capture_stream(0, [127, 0, 0, 1].into())
                .expect("the capture thread starts")
        })
        .collect();
    rt.block_on(inspector.settle());
    let before = LIVE.load(Ordering::Relaxed);
    let request = b"GET /item?id=1 HTTP/1.1\r\nhost: app.example.test\r\nuser-agent: test\r\n\r\n";
    // (answer, exchanges, exchanges between two waits for the capture thread).
    let shapes = [
        (response("204 No Content", 0), 200_000, 512),
        (response("200 OK", 1024), 60_000, 256),
        (response("200 OK", 1024), 60_000, 4_000),
        (response("200 OK", 40 * 1024), 3_000, 8),
    ];
    for (answer, count, batch) in &shapes {
        for i in 0..*count {
            let tap = &mut taps[i % STREAMS];
            tap.read_from_stream(request);
            tap.read_from_socket(answer);
            if i % batch == batch - 1 {
                rt.block_on(inspector.settle());
            }
        }
        rt.block_on(inspector.settle());
        let grown = LIVE.load(Ordering::Relaxed) - before;
        let used = inspector.used();
        assert!(used <= BUDGET, "{}-byte answers: used {used}", answer.len());
        assert!(
            grown <= BUDGET as isize,
            "{}-byte answers: the inspector's memory grew by {grown} bytes against a budget of {BUDGET}",
            answer.len()
        );
        let count_kept = inspector.exchanges(usize::MAX).len();
        // And the budget is spent on records, not lost to slack.
        let per_exchange = request.len() + answer.len();
        assert!(
            count_kept * per_exchange >= BUDGET / 4,
            "{}-byte answers: {count_kept} exchanges kept in a budget of {BUDGET}",
            answer.len()
        );
    }
    // The API reads the whole history a page at a time.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    rt.spawn(netbore_agent::inspect::api::serve(
        inspector.clone(),
        listener,
    ));
    let kept = inspector.exchanges(usize::MAX).len();
    for (path, least) in [
        ("/api/requests/http?limit=10000", 10_000 * 1024),
        ("/api/requests/http/har", kept * 1024),
    ] {
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let reader = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connects");
            write!(
                s,
                "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
            )
            .expect("sends");
            let mut read = 0;
            let mut buf = vec![0; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return read,
                    Ok(n) => read += n,
                }
            }
        });
        let read = rt.block_on(async {
            tokio::task::spawn_blocking(move || reader.join().expect("reads"))
                .await
                .expect("joins")
        });
        let peak = PEAK.load(Ordering::Relaxed) - before;
        assert!(read >= least, "{path}: {read} bytes");
        assert!(
            peak <= 8 << 20,
            "{path}: answering {read} bytes took {peak} bytes of memory at its peak"
        );
    }
}
