//! The Edge's window budget (`--max-buffered-bytes`) against viewers who download
//! fast, so that windows grow, and then stop reading, on every kind of agent session:
//! the server's memory stays within the budget, streams past it are refused (HTTP:
//! 503 `edge_busy`), and the budget comes back when the viewers leave.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::web::{self, get};
use common::{HttpAgent, Server};

const MIB: u64 = 1024 * 1024;

/// The budget the tests give the server.
const BUDGET: u64 = 8 * MIB;

/// An origin that sends `limit` bytes to every connection as fast as it is read, and
/// never reads.
fn flooding_origin(limit: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let chunk = vec![0x5a_u8; 64 * 1024];
                let mut sent = 0;
                while sent < limit && conn.write_all(&chunk).is_ok() {
                    sent += chunk.len() as u64;
                }
            });
        }
    });
    addr
}

/// A viewer that reads `first` bytes as fast as it can (so the Edge's windows grow)
/// and then reads nothing more, holding the connection. Returns the connection and
/// whether the tunnel carried anything to it.
fn stalled_viewer(public: SocketAddr, first: usize) -> (TcpStream, bool) {
    let mut conn = TcpStream::connect(public).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    while got < first {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    (conn, got > 0)
}

fn agent_args(server: &Server, transport: &str) -> Vec<String> {
    let ca = server.data_dir.0.join("ca.pem");
    let mut args = vec!["--transport".to_string(), transport.to_string()];
    if transport == "quic" {
        args.extend(["--ca".to_string(), ca.to_str().unwrap().to_string()]);
    }
    args
}

async fn budget_holds(transport: &str) {
    let budget = BUDGET.to_string();
    let server = Server::start_with(&["--domain", "localhost", "--max-buffered-bytes", &budget]);
    let args = agent_args(&server, transport);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let flood = flooding_origin(256 * MIB);
    let tcp = common::Proc::spawn(
        &[
            &["tcp", &flood.to_string(), "--server", &server.url()],
            &args[..],
        ]
        .concat(),
    );
    let online = tcp.expect_event("online", Duration::from_secs(20));
    assert_eq!(online["transport"], transport, "{online}");
    // `tcp://localhost:PORT`: the port on loopback.
    let url = online["public_url"].as_str().unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let public = SocketAddr::from(([127, 0, 0, 1], port));
    let origin = web::start_origin().await;
    let http = HttpAgent::start(&server, &origin.addr.to_string(), &args);
    let before = server.proc.rss_kib();

    // Viewers that download 4 MiB each at full speed and then stop reading. Without a
    // budget, their streams' windows would make the Edge hold 16 MiB each (QUIC) or
    // up to the session's 64 MiB (the mux).
    let viewers: Vec<_> = (0..40)
        .map(|_| std::thread::spawn(move || stalled_viewer(public, 4 * MIB as usize)))
        .collect();
    let viewers: Vec<(TcpStream, bool)> = viewers.into_iter().map(|v| v.join().unwrap()).collect();
    let served = viewers.iter().filter(|(_, served)| *served).count();
    // Time for every window to fill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = server.proc.rss_kib().saturating_sub(before);
    eprintln!(
        "{transport}: {served} of {} viewers served; the server grew by {grown} KiB",
        viewers.len()
    );
    // The budget, plus what each viewer connection may hold on its way to the socket
    // (one gather of 128 KiB and the read buffers its chunks share), plus the
    // process's own growth under load. Without the budget the mux session grows by
    // ~75 MiB here and QUIC by hundreds.
    let per_viewer = 512 * 1024;
    let limit = BUDGET + viewers.len() as u64 * per_viewer + 16 * MIB;
    assert!(
        grown < limit / 1024,
        "{transport}: the server grew by {grown} KiB with a budget of {} KiB (limit {} KiB)",
        BUDGET / 1024,
        limit / 1024
    );
    assert!(served > 0, "{transport}: no viewer was served at all");
    assert!(
        served < viewers.len(),
        "{transport}: all {served} viewers got a stream within a budget of {BUDGET} bytes"
    );

    // While the stalled viewers hold the budget, an HTTP request is refused, clearly.
    let busy = get(server.http, &http.host, "/").await;
    assert_eq!(busy.status, 503, "{transport}: {busy:?}");
    assert_eq!(busy.headers["x-netbore-error"], "edge_busy", "{transport}");

    // The viewers leave: the budget comes back and requests are served again.
    drop(viewers);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(server.http, &http.host, "/").await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{transport}: still refused after the viewers left: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stalled_viewers_hold_no_more_than_the_budget_over_the_mux() {
    budget_holds("tcp").await;
}

#[tokio::test]
async fn stalled_viewers_hold_no_more_than_the_budget_over_quic() {
    budget_holds("quic").await;
}

#[tokio::test]
async fn a_quic_stream_past_the_agents_stream_limit_waits_then_gets_503() {
    let server = Server::start_with(&["--domain", "localhost"]);
    let mut args = agent_args(&server, "quic");
    args.extend(["--max-streams".to_string(), "2".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let origin = web::start_origin().await;
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &args);
    assert_eq!(agent.online["transport"], "quic", "{}", agent.online);
    // The agent allows the Edge two streams at once; two slow requests hold them.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let host = agent.host.clone();
            let http = server.http;
            tokio::spawn(async move { get(http, &host, "/slow/9000").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let third = get(server.http, &agent.host, "/third").await;
    let waited = started.elapsed();
    assert_eq!(third.status, 503, "{third:?}");
    assert_eq!(third.headers["x-netbore-error"], "tunnel_busy");
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(8),
        "answered after {waited:?}"
    );
    for s in slow {
        assert_eq!(s.await.unwrap().status, 200);
    }
    assert_eq!(get(server.http, &agent.host, "/after").await.status, 200);
}

/// A QUIC agent opens one stream, its hello, so the Edge lets it have only a few
/// open after it too: quinn keeps an entry in two tables for every stream the peer
/// may open, and at the default stream limit (8,192) each agent cost the Edge about
/// 850 KiB (docs/benchmarks.md, finding 55).
#[tokio::test]
async fn a_quic_agent_costs_the_edge_little_memory() {
    const AGENTS: u64 = 10;
    // One more than AGENTS, from one address.
    let server = Server::start_with(&["--max-tunnels-per-anonymous-ip", "11"]);
    let args = agent_args(&server, "quic");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let spawn = || {
        let agent = common::Agent::start(&server, "127.0.0.1:9", &args);
        assert_eq!(agent.online["transport"], "quic", "{}", agent.online);
        agent
    };
    // The first QUIC connection sets up what every later one shares.
    let _first = spawn();
    let before = server.proc.rss_kib();
    let _agents: Vec<common::Agent> = (0..AGENTS).map(|_| spawn()).collect();
    let grown = server.proc.rss_kib().saturating_sub(before);
    eprintln!("{AGENTS} QUIC agents: the server grew by {grown} KiB");
    // About 140 KiB each now (52 over plain tcp, 99 over tls).
    assert!(
        grown < AGENTS * 400,
        "{AGENTS} QUIC agents made the server grow by {grown} KiB"
    );
}
