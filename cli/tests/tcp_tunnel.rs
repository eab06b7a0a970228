//! TCP tunnels end to end through the real binary: integrity, concurrency, half-close
//! and flow control under a stalled viewer.

mod common;

use std::time::Duration;

use common::{Agent, Server, read_fast_stream, stalling_origin, wait_until_still};
use netbore_test_support::{echo_origin, pattern_checksum, read_all, round_trip, send_pattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_64_mib_each_way_intact() {
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin.local_addr().unwrap().to_string();
    let server = Server::start();
    let agent = Agent::start(&server, &origin_addr, &[]);

    round_trip(&origin, agent.public, 64 * MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_viewers_echo_intact() {
    let (origin, _task) = echo_origin().await;
    let server = Server::start();
    let agent = Agent::start(&server, &origin.to_string(), &[]);
    let public = agent.public;

    let mut viewers = Vec::new();
    for i in 0..500u64 {
        viewers.push(tokio::spawn(async move {
            let s = TcpStream::connect(public).await.unwrap();
            let (mut r, mut w) = s.into_split();
            let len = 16 * 1024 + (i as usize * 97) % 16384;
            let send = tokio::spawn(async move { send_pattern(&mut w, i + 10, len).await });
            let got = read_all(&mut r).await;
            let sent = send.await.unwrap();
            assert_eq!(got, sent, "viewer {i} got other bytes than it sent");
            got.len
        }));
    }
    let deadline = tokio::time::timeout(Duration::from_secs(60), async {
        let mut total = 0;
        for v in viewers {
            total += v.await.unwrap();
        }
        total
    });
    let total = deadline.await.expect("500 viewers finish within 60 s");
    assert!(total > 500 * 16 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_half_closes_still_gets_the_whole_response() {
    // The origin answers only after the viewer's request has ended (EOF).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        s.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"the whole request");
        send_pattern(&mut s, 7, 3 * MIB).await;
    });
    let server = Server::start();
    let agent = Agent::start(&server, &origin, &[]);

    let mut viewer = TcpStream::connect(agent.public).await.unwrap();
    viewer.write_all(b"the whole request").await.unwrap();
    viewer.shutdown().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), read_all(&mut viewer))
        .await
        .expect("response arrives");
    assert_eq!(got, pattern_checksum(7, 3 * MIB));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_does_not_slow_the_others_and_memory_stays_bounded() {
    // Connections that send 'S' get an endless stream; 'F' gets 64 MiB and EOF.
    let (origin, pushed_to_stalled) = stalling_origin(64 * MIB).await;
    let server = Server::start();
    let agent = Agent::start(&server, &origin, &[]);
    let rss_before = (server.proc.rss_kib(), agent.proc.rss_kib());

    let mut stalled = TcpStream::connect(agent.public).await.unwrap();
    stalled.write_all(b"S").await.unwrap();
    // Let the stalled stream fill every buffer on its path.
    wait_until_still(&pushed_to_stalled).await;

    // Meanwhile, another viewer of the same session moves 64 MiB at full speed.
    let (got, took) = read_fast_stream(agent.public)
        .await
        .expect("the fast viewer is not blocked by the stalled one");
    assert_eq!(got.len, (64 * MIB) as u64);

    // The origin was held back (backpressure reached it) instead of the tunnel
    // buffering without bound; and neither process grew by more than the windows.
    let pushed = pushed_to_stalled.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        pushed < 96 * MIB as u64,
        "the stalled stream absorbed {} MiB: flow control is not holding the origin back",
        pushed / MIB as u64
    );
    let rss_after = (server.proc.rss_kib(), agent.proc.rss_kib());
    for (name, before, after) in [
        ("server", rss_before.0, rss_after.0),
        ("agent", rss_before.1, rss_after.1),
    ] {
        assert!(
            after < before + 64 * 1024,
            "{name} grew from {before} KiB to {after} KiB while a viewer stalled"
        );
    }
    eprintln!(
        "fast viewer: 64 MiB in {took:?} beside a stalled one; origin pushed {} MiB into the stall; rss server {rss_after:?} KiB",
        pushed / MIB as u64
    );
    drop(stalled);
}

/// Threads of a running process, from `/proc`.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_servers_run_on_the_threads_they_are_given() {
    let (origin, _task) = echo_origin().await;
    let one_thread_server = Server::start_with(&["--threads", "1"]);
    let four_thread_server = Server::start_with(&["--threads", "4"]);
    let default_agent = Agent::start(&one_thread_server, &origin.to_string(), &[]);
    let four_thread_agent = Agent::start(
        &four_thread_server,
        &origin.to_string(),
        &["--threads", "4"],
    );
    for agent in [&default_agent, &four_thread_agent] {
        let s = TcpStream::connect(agent.public).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let send = tokio::spawn(async move { send_pattern(&mut w, 7, 256 * 1024).await });
        let got = read_all(&mut r).await;
        assert_eq!(got, send.await.unwrap(), "the tunnel changed the bytes");
    }
    // One thread: the main thread runs the runtime, and tokio's blocking pool may
    // have started one or two more for the store, a file or a name lookup. Four
    // workers add four to the main thread.
    let (one, four) = (1..=3, 5..=usize::MAX);
    for (what, pid, expected) in [
        ("a default agent", default_agent.proc.pid(), &one),
        (
            "a server with --threads 1",
            one_thread_server.proc.pid(),
            &one,
        ),
        (
            "an agent with --threads 4",
            four_thread_agent.proc.pid(),
            &four,
        ),
        (
            "a server with --threads 4",
            four_thread_server.proc.pid(),
            &four,
        ),
    ] {
        let n = thread_count(pid);
        assert!(expected.contains(&n), "{what} runs {n} threads");
    }
}
