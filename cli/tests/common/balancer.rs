//! Load through a fleet's nodes as a load balancer sends it: round robin over the
//! nodes a readiness check calls ready, keep-alive or a connection per request,
//! every answer checked and every failure counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

/// What the load saw.
#[derive(Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// The first few failures, for the assertion's message.
    pub why: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    /// Fails the test, naming the first failures, unless every request succeeded.
    pub fn assert_none_failed(&self, what: &str) {
        self.assert_none_failed_or(what, String::new);
    }

    /// [`Self::assert_none_failed`], with `logs()` (the processes' logs) in the
    /// message when a request failed.
    pub fn assert_none_failed_or(&self, what: &str, logs: impl FnOnce() -> String) {
        let failed = self.failed.load(Ordering::Relaxed);
        let ok = self.ok.load(Ordering::Relaxed);
        if failed == 0 {
            return;
        }
        panic!(
            "{what}: {failed} of {} requests failed: {:?}\n{}",
            ok + failed,
            self.why.lock().unwrap(),
            logs()
        );
    }

    /// Counts a failure; the first few are kept with the time of day (UTC, as the
    /// processes' logs show it).
    pub fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut w = self.why.lock().unwrap();
        if w.len() < 10 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let day = now.as_millis() % 86_400_000;
            let (h, m, ms) = (day / 3_600_000, day / 60_000 % 60, day % 60_000);
            w.push(format!(
                "at {h:02}:{m:02}:{:02}.{:03}: {why}",
                ms / 1000,
                ms % 1000
            ));
        }
    }
}

/// The nodes a load balancer would send to: those whose `/readyz` answers 200.
pub struct Balancer {
    pub http: Vec<SocketAddr>,
    pub ready: Vec<AtomicBool>,
    pub next: AtomicUsize,
}

impl Balancer {
    /// A ready node, round robin.
    pub fn pick(&self) -> Option<SocketAddr> {
        for _ in 0..self.http.len() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.http.len();
            if self.ready[i].load(Ordering::Acquire) {
                return Some(self.http[i]);
            }
        }
        None
    }

    pub fn is_ready(&self, addr: SocketAddr) -> bool {
        self.http
            .iter()
            .position(|a| *a == addr)
            .is_some_and(|i| self.ready[i].load(Ordering::Acquire))
    }
}

/// Checks every node's `/readyz` every 50 ms until `stop`.
pub async fn health_checks(
    balancer: Arc<Balancer>,
    metrics: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
) {
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
pub async fn load(
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

/// Load running through a [`Balancer`]'s nodes until [`Load::finish`].
pub struct Load {
    pub tally: Arc<Tally>,
    pub stop: Arc<AtomicBool>,
    pub tasks: tokio::task::JoinSet<()>,
}

impl Load {
    /// One client per entry of `keep_alive` ([`load`]) sending GETs for `host`.
    pub fn start(balancer: &Arc<Balancer>, host: &str, keep_alive: &[bool]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let mut tasks = tokio::task::JoinSet::new();
        for &keep_alive in keep_alive {
            tasks.spawn(load(
                balancer.clone(),
                host.to_string(),
                keep_alive,
                tally.clone(),
                stop.clone(),
            ));
        }
        Load { tally, stop, tasks }
    }

    /// Stops the clients, waits for them, and answers what they saw.
    pub async fn finish(mut self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        self.tally
    }
}
