//! `--transport auto` (the default) with the real binaries: QUIC first, online over
//! WSS within 3 s when the Edge's UDP port is blocked or closed, back on QUIC (same
//! public address) once UDP passes again, and straight to WSS through an HTTP proxy.
//!
//! The network between agent and Edge is a [`Path`] the test controls: the server
//! advertises the path's port (`--edge-addr`); TCP on it is forwarded to the Edge and
//! UDP is dropped, refused, or relayed.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Agent, Proc, Server};
use netbore_test_support::round_trip;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const MIB: usize = 1024 * 1024;

/// What happens to datagrams sent to the path's UDP port.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Udp {
    /// Nobody listens: the kernel answers with "port unreachable".
    Closed,
    /// A firewall drops them, until [`Path::open_udp`] relays them to the Edge.
    Blocked,
}

/// The agents' way to the Edge at `addr`.
struct Path {
    addr: SocketAddr,
    udp_open: Arc<AtomicBool>,
    relayed: Arc<AtomicUsize>,
}

impl Path {
    /// Binds a port number free on TCP (and, for [`Udp::Blocked`], on UDP) and starts
    /// forwarding to `edge`.
    async fn start(edge: SocketAddr, udp: Udp) -> Path {
        let (tcp, udp_socket) = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = tcp.local_addr().unwrap();
            if udp == Udp::Closed {
                // Nothing must be bound on UDP at this number (checked, then released).
                if UdpSocket::bind(addr).await.is_ok() {
                    break (tcp, None);
                }
                continue;
            }
            if let Ok(u) = UdpSocket::bind(addr).await {
                break (tcp, Some(u));
            }
        };
        let addr = tcp.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((viewer, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    let Ok(mut edge) = TcpStream::connect(edge).await else {
                        return;
                    };
                    let mut viewer = viewer;
                    let _ = tokio::io::copy_bidirectional(&mut viewer, &mut edge).await;
                });
            }
        });
        let udp_open = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicUsize::new(0));
        if let Some(front) = udp_socket {
            tokio::spawn(relay_udp(front, edge, udp_open.clone(), relayed.clone()));
        }
        Path {
            addr,
            udp_open,
            relayed,
        }
    }

    /// Lets datagrams through from now on.
    fn open_udp(&self) {
        self.udp_open.store(true, Ordering::SeqCst);
    }
}

/// Relays datagrams between the latest agent that sent to `front` and the Edge, while
/// `open`; drops them otherwise.
async fn relay_udp(
    front: UdpSocket,
    edge: SocketAddr,
    open: Arc<AtomicBool>,
    relayed: Arc<AtomicUsize>,
) {
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(edge).await.unwrap();
    let mut agent: Option<SocketAddr> = None;
    let mut a = vec![0u8; 65536];
    let mut b = vec![0u8; 65536];
    loop {
        tokio::select! {
            Ok((n, from)) = front.recv_from(&mut a) => {
                if open.load(Ordering::SeqCst) {
                    agent = Some(from);
                    relayed.fetch_add(1, Ordering::Relaxed);
                    let _ = back.send(&a[..n]).await;
                }
            }
            Ok(n) = back.recv(&mut b) => {
                if let Some(to) = agent {
                    let _ = front.send_to(&b[..n], to).await;
                }
            }
        }
    }
}

/// A server advertising `path` as its Edge address, on its development CA.
fn server_behind(path_port: u16, edge_port: u16) -> Server {
    let edge_addr = format!("127.0.0.1:{path_port}");
    let agent_addr = format!("127.0.0.1:{edge_port}");
    Server::start_in(
        common::TempDir::new("data"),
        "127.0.0.1:0",
        &agent_addr,
        &["--edge-addr", &edge_addr],
    )
}

/// Spawns `netbore tcp` with `args` and returns it with its `online` event and how
/// long the event took.
fn agent_online(
    server: &Server,
    local: &str,
    args: &[&str],
) -> (Proc, serde_json::Value, Duration) {
    let url = server.url();
    let mut all = vec!["tcp", local, "--server", &url];
    all.extend_from_slice(args);
    let started = Instant::now();
    let proc = Proc::spawn(&all);
    let online = proc.expect_event("online", Duration::from_secs(20));
    (proc, online, started.elapsed())
}

async fn auto_falls_back_to_wss(udp: Udp) -> (Path, Server, Proc, TcpListener, SocketAddr) {
    // The Edge's real port, free on TCP and UDP, so the server offers quic.
    let edge_port = loop {
        let port = common::free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let edge: SocketAddr = ([127, 0, 0, 1], edge_port).into();
    let path = Path::start(edge, udp).await;
    let server = server_behind(path.addr.port(), edge_port);
    let ca = server.data_dir.0.join("ca.pem");
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = origin.local_addr().unwrap().to_string();
    let (agent, online, took) = agent_online(
        &server,
        &local,
        &["--ca", ca.to_str().unwrap(), "--quic-probe-interval", "1"],
    );
    assert_eq!(online["transport"], "wss", "{online}");
    eprintln!("online over wss {took:?} after the agent started");
    assert!(
        took < Duration::from_secs(3),
        "online over wss after {took:?}; the fallback must take under 3 s"
    );
    let public = common::public_addr(&online);
    round_trip(&origin, public, MIB).await;
    (path, server, agent, origin, public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_udp_falls_back_to_wss_within_3s_and_moves_back_to_quic_when_it_passes() {
    let (path, _server, agent, origin, public) = auto_falls_back_to_wss(Udp::Blocked).await;
    assert_eq!(path.relayed.load(Ordering::SeqCst), 0);
    path.open_udp();
    let online = agent.expect_event("online", Duration::from_secs(15));
    assert_eq!(online["transport"], "quic", "{online}");
    assert_eq!(
        common::public_addr(&online),
        public,
        "the tunnel keeps its public address"
    );
    assert!(
        path.relayed.load(Ordering::SeqCst) > 0,
        "QUIC went through the path"
    );
    round_trip(&origin, public, MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_udp_falls_back_to_wss_within_3s() {
    let (_path, _server, agent, origin, public) = auto_falls_back_to_wss(Udp::Closed).await;
    // Probing goes on in the background and does not disturb the tunnel.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    round_trip(&origin, public, MIB).await;
    assert!(
        agent.next_event(Duration::from_millis(100)).is_none(),
        "no further events: the agent stays on wss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_udp_open_auto_takes_quic() {
    let server = Server::start();
    let ca = server.data_dir.0.join("ca.pem");
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = origin.local_addr().unwrap().to_string();
    let agent = Agent::start(&server, &local, &["--ca", ca.to_str().unwrap()]);
    assert_eq!(agent.online["transport"], "quic", "{}", agent.online);
    round_trip(&origin, agent.public, MIB).await;
}
