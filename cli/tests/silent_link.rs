//! Links that fall silent (every packet dropped by an nftables table the test
//! installs and removes, so no FIN or RST ever arrives):
//! - between the agent and the node holding its tunnel: the agent finds the link
//!   dead within its keepalive tolerance, reconnects to another node (the silent one
//!   last), and viewers are served again through the others with the same URL;
//! - to every node's control API (Redis up): tunnels keep serving, agents stay.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fleet::Fleet;
use common::web;

/// An nftables table dropping every packet to and from one address and port (TCP and
/// UDP) on this machine; removed when dropped.
struct Silence {
    table: String,
}

fn nft() -> &'static str {
    if std::path::Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    }
}

impl Silence {
    fn install(ip: &str, port: u16) -> Silence {
        let table = format!(
            "netbore_silent_{}_{}_{port}",
            std::process::id(),
            ip.replace('.', "_")
        );
        let rules = format!(
            "table ip {table} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    ip daddr {ip} th dport {port} drop\n    ip saddr {ip} th sport {port} drop\n  }}\n}}\n"
        );
        let mut child = Command::new(nft())
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft runs (apt-get install nftables)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft took the rules");
        Silence { table }
    }
}

impl Drop for Silence {
    fn drop(&mut self) {
        let _ = Command::new(nft())
            .args(["delete", "table", "ip", &self.table])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_is_found_within_the_tolerance_and_the_agent_moves_to_another_node() {
    const TOLERANCE: Duration = Duration::from_secs(3);
    let keepalive = ["--keepalive", "1", "--keepalive-tolerance", "3"];
    let origin = web::start_origin().await;
    let fleet = Fleet::start(&keepalive);
    let mut args = vec!["--name", "quiet"];
    args.extend_from_slice(&keepalive);
    let agent = common::HttpAgent::start(&fleet.nodes[0].server, &origin.addr.to_string(), &args);
    let host = agent.host.clone();
    let url = agent.online["public_url"].as_str().unwrap().to_string();
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while web::get(fleet.http_addr(i), &host, "/hello").await.status != 200 {
            assert!(
                Instant::now() < deadline,
                "the tunnel answers through node {i}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Node 0's agent port goes silent: nothing reaches it, nothing comes back.
    let silence = Silence::install(fleet.nodes[0].ip, fleet.agent);
    let silenced = Instant::now();
    let reconnecting = agent
        .proc
        .expect_event("reconnecting", TOLERANCE + Duration::from_secs(10));
    let found = silenced.elapsed();
    assert!(
        found <= TOLERANCE + Duration::from_millis(1500),
        "the silent link was found after {found:?} (tolerance {TOLERANCE:?}): {reconnecting}"
    );
    let online = agent.proc.expect_event("online", Duration::from_secs(20));
    assert_eq!(online["public_url"], url.as_str(), "the same URL");
    let moved = silenced.elapsed();
    for i in [1, 2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = web::get(fleet.http_addr(i), &host, "/hello").await;
            if r.status == 200 {
                assert_eq!(r.text(), "hello /hello");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "viewers through node {i} are served again: {} {}",
                r.status,
                r.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        moved < Duration::from_secs(15),
        "online elsewhere {moved:?} after the link fell silent"
    );
    drop(silence);
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_control_api_unreachable_existing_tunnels_keep_serving() {
    let origin = web::start_origin().await;
    let fleet = Fleet::start(&[]);
    let agent = common::HttpAgent::start(
        &fleet.nodes[0].server,
        &origin.addr.to_string(),
        &["--name", "steady"],
    );
    let host = agent.host.clone();
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while web::get(fleet.http_addr(i), &host, "/hello").await.status != 200 {
            assert!(
                Instant::now() < deadline,
                "the tunnel answers through node {i}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let silences: Vec<Silence> = fleet
        .nodes
        .iter()
        .map(|n| Silence::install(n.ip, fleet.control))
        .collect();
    // The control APIs are gone for good (a connection attempt hangs).
    let refused = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(format!("{}:{}", fleet.nodes[1].ip, fleet.control)),
    )
    .await;
    assert!(refused.is_err(), "the control API is unreachable");
    let until = Instant::now() + Duration::from_secs(5);
    let mut served = 0;
    while Instant::now() < until {
        for i in 0..3 {
            let r = web::get(fleet.http_addr(i), &host, "/hello").await;
            assert_eq!(r.status, 200, "through node {i} with no control API");
            served += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 30);
    assert!(
        agent.proc.next_event(Duration::from_millis(10)).is_none(),
        "the agent stayed online"
    );
    drop(silences);
    drop(agent);
}
