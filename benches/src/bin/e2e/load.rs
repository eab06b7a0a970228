//! The load: bulk transfers and HTTP clients, one figure at a time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::origin::{BUF, read_response};

/// Runs `conns` clients issuing `GET path` for `secs`; returns requests/s and the
/// latencies (seconds) of every request.
pub(crate) async fn http_load(
    addr: SocketAddr,
    host: &str,
    conns: usize,
    path: &'static str,
    keep_alive: bool,
    secs: f64,
) -> (f64, Vec<f64>) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let request = if keep_alive {
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
        } else {
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        };
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            while Instant::now() < deadline {
                let t = Instant::now();
                if conn.is_none() {
                    let Ok(s) = TcpStream::connect(addr).await else {
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    buf.clear();
                    conn = Some(s);
                }
                let s = conn.as_mut().expect("connected above");
                let ok = s.write_all(request.as_bytes()).await.is_ok()
                    && read_response(s, &mut buf, &mut chunk).await.is_ok();
                if ok {
                    lat.push(t.elapsed().as_secs_f64());
                }
                if !ok || !keep_alive {
                    conn = None;
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all.len() as f64 / started.elapsed().as_secs_f64(), all)
}

/// Bytes per second moved in one direction for `secs`; an error when the relay cuts
/// the connection.
pub(crate) async fn measure(addr: SocketAddr, upload: bool, secs: f64) -> std::io::Result<f64> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(if upload { b"U" } else { b"D" }).await?;
    let mut buf = vec![0u8; BUF];
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut total = 0u64;
    if upload {
        while Instant::now() < deadline {
            s.write_all(&buf).await?;
            total += buf.len() as u64;
        }
        s.shutdown().await?;
        // The origin closes after it has read everything: the clock stops there.
        let _ = s.read(&mut buf).await;
    } else {
        while Instant::now() < deadline {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the download ended early",
                ));
            }
            total += n as u64;
        }
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Bytes per second moved in one direction over `conns` parallel connections.
pub(crate) async fn measure_parallel(
    addr: SocketAddr,
    upload: bool,
    conns: usize,
    secs: f64,
) -> std::io::Result<f64> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        tasks.spawn(measure(addr, upload, secs));
    }
    // Dropping the set (a figure that timed out) stops the transfers with it.
    let mut total = 0.0;
    while let Some(done) = tasks.join_next().await {
        total += done.map_err(std::io::Error::other)??;
    }
    Ok(total)
}

/// One row of the results table.
#[derive(Clone, Copy)]
pub(crate) enum Figure {
    /// Bulk transfer over `conns` connections, upload or download.
    Bulk { upload: bool, conns: usize },
    /// HTTP requests for `path` from `conns` clients.
    Http {
        conns: usize,
        path: &'static str,
        keep_alive: bool,
    },
}

impl Figure {
    pub(crate) fn name(self) -> String {
        match self {
            Figure::Bulk { upload, conns } => format!(
                "bulk {}, {conns} conn{}",
                if upload {
                    "upload (viewer→origin)"
                } else {
                    "download (origin→viewer)"
                },
                if conns > 1 { "s" } else { "" }
            ),
            Figure::Http {
                conns,
                path,
                keep_alive,
            } => format!(
                "HTTP GET {path}, {conns} conn{}, {}",
                if conns > 1 { "s" } else { "" },
                if keep_alive {
                    "keep-alive"
                } else {
                    "new connection per request"
                }
            ),
        }
    }
}

/// What one figure measured: the rate, how much work that was (GB or thousands of
/// requests, for CPU per unit), and latency percentiles for HTTP.
pub(crate) struct Sample {
    pub(crate) rate: f64,
    pub(crate) units: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
}

pub(crate) async fn run_figure(
    f: Figure,
    addr: SocketAddr,
    host: &str,
    secs: f64,
) -> std::io::Result<Sample> {
    Ok(match f {
        Figure::Bulk { upload, conns } => {
            let rate = measure_parallel(addr, upload, conns, secs).await?;
            Sample {
                rate,
                units: rate * secs / 1e9,
                p50: 0.0,
                p99: 0.0,
            }
        }
        Figure::Http {
            conns,
            path,
            keep_alive,
        } => {
            let (rate, mut lat) = http_load(addr, host, conns, path, keep_alive, secs).await;
            lat.sort_by(|a, b| a.total_cmp(b));
            let pct = |p: f64| {
                lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0.0)
            };
            Sample {
                rate,
                units: rate * secs / 1e3,
                p50: pct(0.5),
                p99: pct(0.99),
            }
        }
    })
}

/// Formats a rate for the table.
pub(crate) fn show(f: Figure, s: &Sample) -> String {
    match f {
        Figure::Bulk { .. } => format!("{:.2} Gbit/s", s.rate * 8e-9),
        Figure::Http { .. } => format!(
            "{:.1} k req/s (p50 {:.2} ms, p99 {:.2} ms)",
            s.rate / 1e3,
            s.p50 * 1e3,
            s.p99 * 1e3
        ),
    }
}
