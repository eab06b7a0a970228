//! A test fleet: three `netbore server` nodes on 127.0.0.2, 127.0.0.3 and 127.0.0.4
//! (the same port numbers) sharing one real `redis-server`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::redis::RedisServer;
use super::{Server, TempDir, free_port};

/// One node of a test fleet.
pub struct Node {
    pub server: Server,
    pub ip: &'static str,
}

/// The same three port numbers on each node's own loopback address.
pub struct Fleet {
    pub nodes: Vec<Node>,
    pub control: u16,
    pub agent: u16,
    pub http: u16,
    /// Each node's `--metrics-addr` port (`/readyz`).
    pub metrics: u16,
    pub redis: RedisServer,
}

pub const IPS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

impl Fleet {
    pub fn start(extra: &[&str]) -> Fleet {
        Self::start_n(IPS.len(), extra)
    }

    /// A fleet of the first `n` of [`IPS`].
    pub fn start_n(n: usize, extra: &[&str]) -> Fleet {
        let redis = RedisServer::start();
        let (control, agent, http) = (free_port(), free_port(), free_port());
        let metrics = free_port();
        let nodes = IPS[..n]
            .iter()
            .map(|ip| {
                let metrics_addr = format!("{ip}:{metrics}");
                let mut args = vec!["--metrics-addr", &metrics_addr];
                args.extend_from_slice(extra);
                Node {
                    server: start_node(&redis.url, ip, control, agent, http, &args),
                    ip,
                }
            })
            .collect();
        Fleet {
            nodes,
            control,
            agent,
            http,
            metrics,
            redis,
        }
    }

    /// The candidates node `i` hands agents, once every node is in them (each learns
    /// of the others at its next heartbeat, within a second).
    pub fn candidates(&self, i: usize) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let created = self.nodes[i].server.api(
                "POST",
                "/tunnels/create",
                None,
                Some(&serde_json::json!({"protocol": "http"})),
            );
            assert_eq!(created.status, 200, "{created:?}");
            let edges = created.body["edges"].as_array().unwrap().clone();
            if edges.len() == self.nodes.len() || start.elapsed() > Duration::from_secs(3) {
                return edges;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The operator's listing of the fleet's tunnels (`netbore tunnels list --redis
    /// --json`), each with the nodes serving it.
    pub fn tunnels_listed(&self) -> Vec<serde_json::Value> {
        let nowhere = TempDir::new("fleet-list");
        let out = std::process::Command::new(super::bin())
            .args(["tunnels", "list", "--json", "--redis", &self.redis.url])
            .arg("--data-dir")
            .arg(&nowhere.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "netbore tunnels list: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap())
                .unwrap();
        listed["tunnels"].as_array().unwrap().clone()
    }

    /// Starts node `i` again (after it exited), as it was started.
    pub fn restart(&mut self, i: usize) {
        let ip = self.nodes[i].ip;
        let metrics_addr = format!("{ip}:{}", self.metrics);
        self.nodes[i].server = start_node(
            &self.redis.url,
            ip,
            self.control,
            self.agent,
            self.http,
            &["--metrics-addr", &metrics_addr],
        );
    }

    pub fn http_addr(&self, i: usize) -> SocketAddr {
        format!("{}:{}", self.nodes[i].ip, self.http)
            .parse()
            .unwrap()
    }
}

pub fn start_node(
    redis: &str,
    ip: &str,
    control: u16,
    agent: u16,
    http: u16,
    extra: &[&str],
) -> Server {
    let mut args = vec![
        "--redis",
        redis,
        "--domain",
        "localhost",
        "--tcp-bind-ip",
        ip,
    ];
    args.extend_from_slice(extra);
    Server::start_opts(
        TempDir::new("fleet-node"),
        &format!("{ip}:{control}"),
        &format!("{ip}:{agent}"),
        &format!("{ip}:{http}"),
        true,
        &args,
    )
}
