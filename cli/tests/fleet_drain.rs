//! A rolling restart of a three-node fleet under load (`docs/deploy.md`,
//! "Draining a node"): each node in turn gets SIGTERM, drains (its agent moves to
//! another node before the old session goes, in-flight requests finish), exits 0 and
//! starts again, while clients send keep-alive and new-connection requests through
//! every node a readiness check calls ready, as a load balancer would. Not one
//! request fails, and a slow request in flight on each restarted node completes.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fleet::{Fleet, IPS, start_node};
use common::web;
use http_body_util::{BodyExt, Empty};

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The first few failures, for the assertion's message.
    why: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut w = self.why.lock().unwrap();
        if w.len() < 10 {
            w.push(why);
        }
    }
}

/// The nodes a load balancer would send to: those whose `/readyz` answers 200.
struct Balancer {
    http: Vec<SocketAddr>,
    ready: Vec<AtomicBool>,
    next: AtomicUsize,
}

impl Balancer {
    /// A ready node, round robin.
    fn pick(&self) -> Option<SocketAddr> {
        for _ in 0..self.http.len() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.http.len();
            if self.ready[i].load(Ordering::Acquire) {
                return Some(self.http[i]);
            }
        }
        None
    }

    fn is_ready(&self, addr: SocketAddr) -> bool {
        self.http
            .iter()
            .position(|a| *a == addr)
            .is_some_and(|i| self.ready[i].load(Ordering::Acquire))
    }
}

/// Checks every node's `/readyz` every 50 ms until `stop`.
async fn health_checks(balancer: Arc<Balancer>, metrics: Vec<SocketAddr>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        for (i, addr) in metrics.iter().enumerate() {
            let ready = match tokio::time::timeout(Duration::from_secs(1), readyz(*addr)).await {
                Ok(Some(status)) => status == 200,
                _ => false,
            };
            balancer.ready[i].store(ready, Ordering::Release);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn readyz(addr: SocketAddr) -> Option<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/readyz")
        .header("host", "metrics")
        .body(Empty::<Bytes>::new())
        .ok()?;
    Some(sender.send_request(request).await.ok()?.status().as_u16())
}

/// Sends GETs through ready nodes until `stop`: on one keep-alive connection at a
/// time (left when the server ends it, or after 50 requests), or one connection per
/// request.
async fn load(
    balancer: Arc<Balancer>,
    host: String,
    keep_alive: bool,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(addr) = balancer.pick() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                tally.fail(format!("connect to {addr}: {e}"));
                continue;
            }
        };
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
            {
                Ok(h) => h,
                Err(e) => {
                    tally.fail(format!("handshake with {addr}: {e}"));
                    continue;
                }
            };
        tokio::spawn(conn);
        for n in 0..if keep_alive { 50 } else { 1 } {
            // A connection the server closed after its last answer (a draining node
            // says `Connection: close`) is left before it is used again.
            if n > 0 && (sender.ready().await.is_err() || !balancer.is_ready(addr)) {
                break;
            }
            let request = hyper::Request::get("/hello")
                .header("host", &host)
                .body(Empty::<Bytes>::new())
                .unwrap();
            match sender.send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    let close = response
                        .headers()
                        .get("connection")
                        .is_some_and(|v| v == "close");
                    match response.into_body().collect().await.map(|b| b.to_bytes()) {
                        Ok(body) if status == 200 && body == "hello /hello" => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(body) => tally.fail(format!("{status} through {addr}: {body:?}")),
                        Err(e) => tally.fail(format!("body through {addr}: {e}")),
                    }
                    if close {
                        break;
                    }
                }
                Err(e) => {
                    tally.fail(format!("request {n} through {addr}: {e}"));
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_under_load_fails_no_request() {
    let origin = web::start_origin().await;
    let mut fleet = Fleet::start(&[]);
    let agent = common::HttpAgent::start(
        &fleet.nodes[0].server,
        &origin.addr.to_string(),
        &["--name", "roll"],
    );
    let host = agent.host.clone();
    let http: Vec<SocketAddr> = (0..3).map(|i| fleet.http_addr(i)).collect();
    let metrics: Vec<SocketAddr> = IPS
        .iter()
        .map(|ip| format!("{ip}:{}", fleet.metrics).parse().unwrap())
        .collect();
    for addr in &http {
        let deadline = Instant::now() + Duration::from_secs(10);
        while web::get(*addr, &host, "/hello").await.status != 200 {
            assert!(
                Instant::now() < deadline,
                "the tunnel answers through {addr}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let balancer = Arc::new(Balancer {
        http: http.clone(),
        ready: (0..3).map(|_| AtomicBool::new(true)).collect(),
        next: AtomicUsize::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(health_checks(balancer.clone(), metrics, stop.clone()));
    for keep_alive in [true, true, true, false, false] {
        tasks.spawn(load(
            balancer.clone(),
            host.clone(),
            keep_alive,
            tally.clone(),
            stop.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    for (k, &slow_addr) in http.iter().enumerate() {
        let before = tally.ok.load(Ordering::Relaxed);
        // A request the origin answers after 3 s, in flight on the node restarted.
        let slow_host = host.clone();
        let slow = tokio::spawn(async move { web::get(slow_addr, &slow_host, "/slow/3000").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let node = &mut fleet.nodes[k];
        let status = std::process::Command::new("kill")
            .args(["-TERM", &node.server.proc.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let code = node.server.proc.wait_exit(Duration::from_secs(40));
        let stopped = node.server.proc.stderr();
        assert_eq!(
            code,
            Some(0),
            "node {k} drained and exited 0; stderr:\n{stopped}\nagent:\n{}",
            agent.proc.stderr()
        );
        let slow = slow.await.unwrap();
        assert_eq!(
            (slow.status, slow.text().as_str()),
            (200, "slow answer"),
            "the slow request on node {k} completed"
        );
        let metrics_addr = format!("{}:{}", node.ip, fleet.metrics);
        node.server = start_node(
            &fleet.redis.url,
            node.ip,
            fleet.control,
            fleet.agent,
            fleet.http,
            &["--metrics-addr", &metrics_addr],
        );
        // Back in the balancer, and the tunnel answers through it again.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !balancer.ready[k].load(Ordering::Acquire)
            || web::get(slow_addr, &host, "/hello").await.status != 200
        {
            assert!(
                Instant::now() < deadline,
                "node {k} serves again after its restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            tally.ok.load(Ordering::Relaxed) > before + 100,
            "the load went on while node {k} restarted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let failed = tally.failed.load(Ordering::Relaxed);
    let ok = tally.ok.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {:?}",
        ok + failed,
        tally.why.lock().unwrap()
    );
    assert!(ok > 1000, "only {ok} requests went through");
    drop(agent);
}
