//! Agent transports end to end through the real binary: `netbore tcp --transport
//! wss|tls --ca DATA_DIR/ca.pem` against `netbore server`'s development CA, data
//! checked by checksum; the default transport; an untrusted certificate; a proxy.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Agent, Proc, Server};
use netbore_test_support::{ProxyMode, round_trip, start_proxy};
use tokio::net::TcpListener;

const MIB: usize = 1024 * 1024;

/// A server, an HTTP CONNECT proxy in front of it and an origin, for agents that
/// must reach the Edge through the proxy. Fields drop in order: origin, then server.
struct BehindProxy {
    origin: TcpListener,
    /// How many tunnels the proxy has opened.
    tunnels: Arc<AtomicUsize>,
    proxy_url: String,
    server: Server,
}

/// Starts a server and a tunnelling CONNECT proxy, and binds an origin.
async fn behind_proxy() -> BehindProxy {
    let server = Server::start();
    let (proxy, tunnels) = start_proxy(ProxyMode::Tunnel).await;
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    BehindProxy {
        origin,
        tunnels,
        proxy_url: format!("http://{proxy}"),
        server,
    }
}

impl BehindProxy {
    /// Starts `netbore tcp ORIGIN ARGS --ca DEV_CA --proxy PROXY` and waits until it
    /// is online.
    fn start_agent(&self, args: &[&str]) -> Agent {
        let ca = self.server.data_dir.0.join("ca.pem");
        let local = self.origin.local_addr().unwrap().to_string();
        let mut args = args.to_vec();
        args.extend(["--ca", ca.to_str().unwrap(), "--proxy", &self.proxy_url]);
        Agent::start(&self.server, &local, &args)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_tls_agents_trusting_the_dev_ca_move_data_intact() {
    let server = Server::start();
    let ca = server.data_dir.0.join("ca.pem");
    assert!(ca.exists(), "the server made its development CA");
    let ca = ca.to_str().unwrap().to_string();
    for transport in ["wss", "tls"] {
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = origin.local_addr().unwrap().to_string();
        let agent = Agent::start(&server, &local, &["--transport", transport, "--ca", &ca]);
        assert_eq!(agent.online["transport"], transport, "{}", agent.online);
        tokio::time::timeout(
            Duration::from_secs(120),
            round_trip(&origin, agent.public, 16 * MIB),
        )
        .await
        .unwrap_or_else(|_| panic!("{transport}: 16 MiB each way within 120 s"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_auto_skips_the_development_certificate_and_takes_tcp() {
    let server = Server::start();
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = origin.local_addr().unwrap().to_string();
    // A server on its development CA says so: agents on auto without --ca skip quic,
    // wss and tls and connect over tcp.
    let agent = Agent::start(&server, &local, &[]);
    assert_eq!(agent.online["transport"], "tcp", "{}", agent.online);
    round_trip(&origin, agent.public, MIB).await;
}

#[test]
fn an_agent_that_does_not_trust_the_certificate_stops_with_one_sentence() {
    let server = Server::start();
    let url = server.url();
    for transport in ["wss", "tls", "quic"] {
        let mut agent = Proc::spawn(&["tcp", "1", "--server", &url, "--transport", transport]);
        let error = agent.expect_event("error", Duration::from_secs(20));
        assert_eq!(
            error["code"], "untrusted_certificate",
            "{transport}: {error}"
        );
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("--ca"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(1));
    }
}

#[test]
fn insecure_skip_verify_connects_with_a_loud_warning() {
    let server = Server::start();
    let agent = Agent::start(
        &server,
        "127.0.0.1:1",
        &["--transport", "tls", "--insecure-skip-verify"],
    );
    assert_eq!(agent.online["transport"], "tls");
    assert!(
        agent
            .proc
            .stderr()
            .contains("WARNING: --insecure-skip-verify"),
        "{}",
        agent.proc.stderr()
    );
}

#[test]
fn ca_path_prints_the_servers_ca_file() {
    let server = Server::start();
    let out = std::process::Command::new(common::bin())
        .args(["ca", "path", "--json", "--data-dir"])
        .arg(&server.data_dir.0)
        .output()
        .unwrap();
    assert!(out.status.success());
    let event: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(
        event["path"].as_str().unwrap(),
        server.data_dir.0.join("ca.pem").to_str().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_agent_reaches_the_edge_through_a_connect_proxy() {
    let setup = behind_proxy().await;
    let agent = setup.start_agent(&["--transport", "wss"]);
    assert_eq!(agent.online["transport"], "wss");
    assert_eq!(setup.tunnels.load(Ordering::SeqCst), 1);
    round_trip(&setup.origin, agent.public, 4 * MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_operator_certificate_auto_takes_quic_first() {
    // Another server's development certificate stands in for an operator's.
    let first = Server::start();
    let dir = first.data_dir.0.clone();
    let cert = dir.join("edge-cert.pem");
    let key = dir.join("edge-key.pem");
    let server = Server::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = origin.local_addr().unwrap().to_string();
    let ca = dir.join("ca.pem");
    let agent = Agent::start(&server, &local, &["--ca", ca.to_str().unwrap()]);
    assert_eq!(agent.online["transport"], "quic", "{}", agent.online);
    round_trip(&origin, agent.public, MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_proxy_auto_skips_quic_and_takes_wss() {
    let setup = behind_proxy().await;
    let started = std::time::Instant::now();
    let agent = setup.start_agent(&[]);
    assert_eq!(agent.online["transport"], "wss", "{}", agent.online);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no time spent waiting for QUIC, which cannot pass an HTTP proxy"
    );
    assert_eq!(setup.tunnels.load(Ordering::SeqCst), 1);
    round_trip(&setup.origin, agent.public, MIB).await;
}
