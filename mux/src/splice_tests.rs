//! Splices between two real sessions over in-memory pipes: a "link" whose far end
//! is `near`, an "agent" session whose far end is `far`, and the splice in between,
//! as a fleet node holding a tunnel joins them.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::*;
use crate::config::Config;
use crate::mux::Mux;
use crate::session::Role;

const PIPE: usize = 256 * 1024;
const LIMIT: Duration = Duration::from_secs(10);

struct Rig {
    /// The viewer's end: a stream of the link, opened by the relaying node.
    near: MuxStream,
    /// The agent's end: the stream the holder opened to it.
    far: MuxStream,
    spliced: Spliced,
    link: Mux,
    agent: Mux,
    /// The handles of the sessions at the two far ends.
    _peers: (Mux, Mux),
}

fn config() -> Config {
    Config {
        keepalive_interval: None,
        ..Config::default()
    }
}

/// Opens a stream on each session and splices their holder ends; `early` is
/// written on `near` (and read in part at the holder) before the splice.
async fn rig(early: &[u8]) -> Rig {
    let (a, b) = tokio::io::duplex(PIPE);
    let relaying = Mux::spawn(a, Role::Client, config());
    let link = Mux::spawn(b, Role::Server, config());
    let (c, d) = tokio::io::duplex(PIPE);
    let agent = Mux::spawn(c, Role::Server, config());
    let agent_peer = Mux::spawn(d, Role::Client, config());

    let mut near = relaying.open().await.unwrap();
    // One frame: the holder's read of the route leaves the rest in the handle.
    near.write_all(&[b"route", early].concat()).await.unwrap();
    let mut held = link.accept().await.unwrap();
    let mut route = [0u8; 5];
    held.read_exact(&mut route).await.unwrap();
    assert_eq!(&route, b"route");
    let mut to_agent = agent.open().await.unwrap();
    to_agent.write_all(b"header").await.unwrap();
    let mut far = agent_peer.accept().await.unwrap();
    let mut header = [0u8; 6];
    far.read_exact(&mut header).await.unwrap();
    let spliced = splice(held, to_agent);
    Rig {
        near,
        far,
        spliced,
        link,
        agent,
        _peers: (relaying, agent_peer),
    }
}

async fn read_n(stream: &mut MuxStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    timeout(LIMIT, stream.read_exact(&mut got))
        .await
        .expect("the bytes arrive")
        .unwrap();
    got
}

/// Sends `data` and its FIN on `stream` while reading everything that comes back.
async fn exchange(mut stream: MuxStream, data: Vec<u8>) -> Vec<u8> {
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let mut got = Vec::new();
    let (w, r) = tokio::join!(
        async {
            wr.write_all(&data).await?;
            wr.shutdown().await
        },
        rd.read_to_end(&mut got)
    );
    w.unwrap();
    r.unwrap();
    got
}

/// Asserts that the next read of `stream` fails with a reset within [`LIMIT`].
async fn expect_reset(stream: &mut MuxStream, what: &str) {
    let mut buf = [0u8; 16];
    let read = timeout(LIMIT, stream.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {LIMIT:?}"));
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "{what}"
    );
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test]
async fn bytes_and_fins_cross_both_ways_and_the_streams_are_freed() {
    let early = pattern(3000, 1);
    let mut r = rig(&early).await;
    // Sent before the splice, including what arrived in the chunk read in part.
    assert_eq!(read_n(&mut r.far, early.len()).await, early);

    // Far more than every window on the way, both ways at once.
    let up = pattern(8 << 20, 2);
    let down = pattern(8 << 20, 3);
    let near_task = tokio::spawn(exchange(r.near, up.clone()));
    let far_task = tokio::spawn(exchange(r.far, down.clone()));
    let got_down = timeout(LIMIT * 3, near_task).await.unwrap().unwrap();
    let got_up = timeout(LIMIT * 3, far_task).await.unwrap().unwrap();
    assert_eq!(got_up.len(), up.len());
    assert!(got_up == up, "upload bytes changed on the way");
    assert_eq!(got_down.len(), down.len());
    assert!(got_down == down, "download bytes changed on the way");

    timeout(LIMIT, r.spliced)
        .await
        .expect("the splice ends with both FINs")
        .expect("cleanly");
    // Neither session keeps the spliced streams.
    timeout(LIMIT, async {
        while r.link.stats().streams + r.agent.stats().streams > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both sessions forget the streams");
}

#[tokio::test]
async fn a_reset_at_one_end_resets_the_other_and_ends_the_splice() {
    let mut r = rig(b"").await;
    r.near.write_all(b"hello").await.unwrap();
    assert_eq!(read_n(&mut r.far, 5).await, b"hello");
    r.far.reset();
    expect_reset(&mut r.near, "the reset crosses").await;
    let ended = timeout(LIMIT, r.spliced).await.expect("the splice ends");
    assert!(ended.is_err(), "{ended:?}");
}

#[tokio::test]
async fn dropping_the_splice_resets_both_ends() {
    let mut r = rig(b"").await;
    drop(r.spliced);
    for end in [&mut r.near, &mut r.far] {
        expect_reset(end, "the reset arrives").await;
    }
}

#[tokio::test]
async fn a_lost_session_resets_the_other_end() {
    let (a, b) = tokio::io::duplex(PIPE);
    let relaying = Mux::spawn(a, Role::Client, config());
    let link = Mux::spawn(b, Role::Server, config());
    let (c, d) = tokio::io::duplex(PIPE);
    let agent = Mux::spawn(c, Role::Server, config());
    // The agent's connection is held raw, so it can be cut.
    let mut near = relaying.open().await.unwrap();
    near.write_all(b"x").await.unwrap();
    let held = link.accept().await.unwrap();
    let to_agent = agent.open().await.unwrap();
    let spliced = splice(held, to_agent);
    drop(d);
    expect_reset(&mut near, "the loss crosses").await;
    assert!(timeout(LIMIT, spliced).await.expect("ends").is_err());
}

#[tokio::test]
async fn a_sink_that_never_reads_holds_the_source_back() {
    let r = rig(b"").await;
    let mut near = r.near;
    // The far end never reads: what the near end can write is bounded by the two
    // sessions' windows (auto-tuned at most to 16 MiB each) and one chunk here.
    let wrote = tokio::spawn(async move {
        let piece = vec![7u8; 64 * 1024];
        let mut total = 0usize;
        for _ in 0..4096 {
            match timeout(Duration::from_secs(1), near.write_all(&piece)).await {
                Ok(Ok(())) => total += piece.len(),
                _ => break,
            }
        }
        (total, near)
    });
    let (total, mut near) = timeout(LIMIT * 6, wrote).await.unwrap().unwrap();
    assert!(
        total < 40 << 20,
        "{total} bytes went in with nobody reading"
    );
    assert!(total >= PIPE, "only {total} bytes went in");
    let held = r.link.stats().buffered_bytes + r.agent.stats().queued_bytes;
    assert!(held <= 33 << 20, "the holder keeps {held} bytes");

    // The viewer gives up while a chunk waits for the sink: the agent's end is
    // reset and the splice ends, though nothing more is read from the link.
    near.reset();
    let ended = timeout(LIMIT, r.spliced).await.expect("the splice ends");
    assert_eq!(ended, Err(StreamError::Reset));
    let mut far = r.far;
    let mut buf = vec![0u8; 64 * 1024];
    let outcome = timeout(LIMIT, async {
        loop {
            match far.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e.kind()),
            }
        }
    })
    .await
    .expect("the agent's end ends");
    assert_eq!(outcome, Err(std::io::ErrorKind::ConnectionReset));
}

#[tokio::test]
async fn a_reset_after_a_fin_still_crosses() {
    let mut r = rig(b"").await;
    // The request and its FIN, then the viewer leaves before the answer.
    r.near.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    r.near.shutdown().await.unwrap();
    let mut got = Vec::new();
    timeout(LIMIT, r.far.read_to_end(&mut got))
        .await
        .expect("the request and its FIN arrive")
        .unwrap();
    r.near.reset();
    let ended = timeout(LIMIT, r.spliced).await.expect("the splice ends");
    assert_eq!(ended, Err(StreamError::Reset));
    let wrote = timeout(LIMIT, async {
        loop {
            if let Err(e) = r.far.write_all(b"late answer").await {
                return e.kind();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the agent learns the viewer left");
    assert_eq!(wrote, std::io::ErrorKind::ConnectionReset);
}
