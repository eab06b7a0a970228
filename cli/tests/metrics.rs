//! Metrics scraped from the real binaries: byte and request counters against the
//! traffic the test sent, the tunnel label cap, `/readyz` when the store is gone, the
//! agent's metrics, the exposition checked by `promtool`, and JSON logs.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::web::{self, get};
use common::{Agent, HttpAgent, Proc, Server};

const MIB: u64 = 1024 * 1024;

/// `GET path` on `addr`: the status and the body.
fn fetch(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head[9..12].parse().unwrap(), body.to_string())
}

/// The address in a `metrics` field (`http://ADDR`).
fn metrics_addr(event: &serde_json::Value) -> SocketAddr {
    event["metrics"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

/// Every sample of a scrape: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// The sum of every sample of `name` whose labels contain all of `with`.
fn sum(samples: &HashMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            (k.as_str() == name || k.starts_with(&format!("{name}{{")))
                && with.iter().all(|w| k.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = fetch(addr, "/metrics");
    assert_eq!(status, 200);
    samples(&body)
}

/// An origin that echoes every connection's bytes back.
fn echo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut back = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut conn, &mut back);
            });
        }
    });
    addr
}

/// Sends `len` bytes through `public` to an echo origin and reads them all back.
fn echo_through(public: SocketAddr, len: u64) {
    let mut conn = TcpStream::connect(public).unwrap();
    let mut reader = conn.try_clone().unwrap();
    let got = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        while got < len {
            let n = reader.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {got} bytes");
            got += n as u64;
        }
        got
    });
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        conn.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    assert_eq!(got.join().unwrap(), len);
}

/// Polls until `check` holds on a scrape, up to 5 s; the last scrape.
fn scrape_until(
    addr: SocketAddr,
    check: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = scrape(addr);
        if check(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tcp_bytes_are_counted_on_the_server_and_the_agent() {
    let server = Server::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server.listening);
    let origin = echo_origin();
    let (mut agent, online, agent_metrics) =
        agent_with_metrics(&server, "tcp", &origin.to_string());
    let tunnel = online["tunnel_id"].as_str().unwrap().to_string();

    echo_through(common::public_addr(&online), 10 * MIB);
    // Each direction's count is added in batches as bytes pass: both are waited for.
    let s = scrape_until(metrics, |s| {
        ["direction=\"in\"", "direction=\"out\""]
            .iter()
            .all(|d| sum(s, "netbore_tunnel_bytes_total", &[d]) >= (10 * MIB) as f64)
    });
    let bytes_in = sum(&s, "netbore_tunnel_bytes_total", &["direction=\"in\""]);
    let bytes_out = sum(&s, "netbore_tunnel_bytes_total", &["direction=\"out\""]);
    assert_eq!(bytes_in, (10 * MIB) as f64, "server in");
    assert_eq!(bytes_out, (10 * MIB) as f64, "server out");
    assert_eq!(sum(&s, "netbore_tunnels", &["protocol=\"tcp\""]), 1.0);
    assert_eq!(sum(&s, "netbore_agent_sessions", &[]), 1.0);
    assert_eq!(
        sum(
            &s,
            "netbore_viewer_connections_total",
            &["protocol=\"tcp\""]
        ),
        1.0
    );
    // The busiest tunnel got a label of its own at the first scrape that saw it busy.
    assert!(
        s.keys()
            .any(|k| k.contains(&format!("tunnel=\"{tunnel}\""))),
        "no series for {tunnel}"
    );

    let a = scrape_until(agent_metrics, |s| {
        ["direction=\"in\"", "direction=\"out\""]
            .iter()
            .all(|d| sum(s, "netbore_agent_tunnel_bytes_total", &[d]) >= (10 * MIB) as f64)
    });
    assert_eq!(
        sum(
            &a,
            "netbore_agent_tunnel_bytes_total",
            &["direction=\"in\""]
        ),
        (10 * MIB) as f64
    );
    assert_eq!(
        sum(
            &a,
            "netbore_agent_tunnel_bytes_total",
            &["direction=\"out\""]
        ),
        (10 * MIB) as f64
    );
    assert_eq!(
        sum(
            &a,
            "netbore_agent_session_state",
            &["state=\"online\"", "transport=\"tcp\""]
        ),
        1.0
    );
    assert_eq!(
        sum(&a, "netbore_agent_origin_connect_seconds_count", &[]),
        1.0
    );
    let (status, _) = fetch(agent_metrics, "/readyz");
    assert_eq!(status, 200);
    agent.kill();
}

/// Starts `netbore KIND LOCAL --metrics-addr 127.0.0.1:0`: the process, its `online`
/// event and its metrics address (announced before it goes online).
fn agent_with_metrics(
    server: &Server,
    kind: &str,
    local: &str,
) -> (Proc, serde_json::Value, SocketAddr) {
    let url = server.url();
    let proc = Proc::spawn(&[
        kind,
        local,
        "--server",
        &url,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&proc.expect_event("metrics", Duration::from_secs(20)));
    let online = proc.expect_event("online", Duration::from_secs(20));
    (proc, online, metrics)
}

#[test]
fn tunnel_labels_stop_at_the_cap() {
    let server = Server::start_with(&[
        "--metrics-addr",
        "127.0.0.1:0",
        "--metrics-tunnel-labels",
        "2",
    ]);
    let metrics = metrics_addr(&server.listening);
    let origin = echo_origin();
    let agents: Vec<Agent> = (0..3)
        .map(|_| Agent::start(&server, &origin.to_string(), &[]))
        .collect();
    for a in &agents {
        echo_through(a.public, MIB);
    }
    // Each connection adds its bytes when it ends (and every 256 KiB before).
    scrape_until(metrics, |s| {
        sum(s, "netbore_tunnel_bytes_total", &["direction=\"in\""]) >= (3 * MIB) as f64
    });
    let (_, text) = fetch(metrics, "/metrics");
    let labelled: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("netbore_tunnel_bytes_total{"))
        .filter_map(|l| l.split("tunnel=\"").nth(1)?.split('"').next())
        .collect();
    assert!(labelled.contains("other"), "{labelled:?}");
    assert_eq!(labelled.len(), 3, "two tunnels and other: {labelled:?}");
    // Every byte is somewhere: labelled tunnels and other add up.
    let s = samples(&text);
    assert_eq!(
        sum(&s, "netbore_tunnel_bytes_total", &["direction=\"in\""]),
        (3 * MIB) as f64
    );
}

#[test]
fn readyz_fails_when_the_store_is_gone_and_healthz_still_answers() {
    let server = Server::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server.listening);
    assert_eq!(fetch(metrics, "/readyz").0, 200);
    std::fs::remove_file(server.data_dir.0.join("netbore.db")).unwrap();
    let (status, body) = fetch(metrics, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store"), "{body}");
    assert_eq!(fetch(metrics, "/healthz").0, 200);
}

#[tokio::test]
async fn http_requests_are_counted_by_status_class_and_timed() {
    let server = Server::start_with(&["--domain", "localhost", "--metrics-addr", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server.listening);
    let origin = web::start_origin().await;
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    for i in 0..20 {
        let path = if i % 4 == 0 { "/status/404" } else { "/hello" };
        let r = get(server.http, &agent.host, path).await;
        assert_eq!(r.status, if i % 4 == 0 { 404 } else { 200 });
    }
    let s = scrape(metrics);
    assert_eq!(
        sum(&s, "netbore_http_requests_total", &["code=\"2xx\""]),
        15.0
    );
    assert_eq!(
        sum(&s, "netbore_http_requests_total", &["code=\"4xx\""]),
        5.0
    );
    assert_eq!(
        sum(&s, "netbore_http_request_duration_seconds_count", &[]),
        20.0
    );
    assert_eq!(
        sum(
            &s,
            "netbore_http_request_duration_seconds_bucket",
            &["le=\"+Inf\""]
        ),
        20.0
    );
    assert!(sum(&s, "netbore_tunnel_bytes_total", &["direction=\"out\""]) > 0.0);
}

/// `promtool`, which the test tooling installs (Debian's `prometheus` package).
fn promtool() -> &'static str {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "promtool is missing; install it with apt-get install prometheus (scripts/test.sh does)"
    );
    "promtool"
}

#[tokio::test]
async fn the_exposition_passes_promtool() {
    let server = Server::start_with(&["--domain", "localhost", "--metrics-addr", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server.listening);
    let origin = web::start_origin().await;
    let (_agent, online, agent_metrics) =
        agent_with_metrics(&server, "http", &origin.addr.to_string());
    let host = online["public_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    assert_eq!(get(server.http, &host, "/hello").await.status, 200);
    for addr in [metrics, agent_metrics] {
        let (_, text) = fetch(addr, "/metrics");
        let mut check = std::process::Command::new(promtool())
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool: {said}\n{text}");
        assert!(said.trim().is_empty(), "promtool complained: {said}");
    }
}

#[test]
fn json_logs_are_one_object_per_line_and_carry_the_tunnel_id() {
    let data = common::TempDir::new("data");
    let dd = data.0.to_str().unwrap().to_string();
    let mut server = Proc::spawn(&[
        "server",
        "--log-format",
        "json",
        "--control-addr",
        "127.0.0.1:0",
        "--agent-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--tcp-ports",
        "0",
        "--tcp-bind-ip",
        "127.0.0.1",
        "--allow-anonymous",
        "--data-dir",
        &dd,
    ]);
    let listening = server.expect_event("listening", Duration::from_secs(20));
    let url = format!("http://{}", listening["control"].as_str().unwrap());
    let origin = echo_origin();
    let mut agent = Proc::spawn(&["tcp", &origin.to_string(), "--server", &url]);
    let online = agent.expect_event("online", Duration::from_secs(20));
    let tunnel = online["tunnel_id"].as_str().unwrap();
    agent.kill();
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    let logs = server.stderr();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let about: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("tunnel online"))
        })
        .collect();
    assert_eq!(about.len(), 1, "{logs}");
    assert_eq!(about[0]["tunnel_id"], tunnel, "{logs}");
}

#[test]
fn a_masked_agent_address_is_in_the_audit_log_only() {
    let data = common::TempDir::new("data");
    let dd = data.0.to_str().unwrap().to_string();
    let mut command = std::process::Command::new(common::bin());
    command.env("RUST_LOG", "debug").args([
        "server",
        "--mask-agent-ip",
        "--metrics-addr",
        "127.0.0.1:0",
        "--control-addr",
        "127.0.0.1:0",
        "--agent-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--tcp-ports",
        "0",
        "--tcp-bind-ip",
        "127.0.0.1",
        "--allow-anonymous",
        "--domain",
        "127.0.0.1",
        "--data-dir",
        &dd,
    ]);
    let mut server = Proc::spawn_command(command);
    let listening = server.expect_event("listening", Duration::from_secs(20));
    let url = format!("http://{}", listening["control"].as_str().unwrap());
    let origin = echo_origin();
    let mut agent = Proc::spawn(&["tcp", &origin.to_string(), "--server", &url]);
    let online = agent.expect_event("online", Duration::from_secs(20));
    echo_through(common::public_addr(&online), 64 * 1024);
    let (_, text) = fetch(metrics_addr(&listening), "/metrics");
    agent.kill();
    std::thread::sleep(Duration::from_millis(500));
    server.kill();

    let audit = std::fs::read_to_string(data.0.join("audit.log")).unwrap();
    let agent_addr = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find_map(|e| e["agent"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no agent address in the audit log: {audit}"));
    let logs = server.stderr();
    assert!(logs.contains("tunnel online"), "{logs}");
    assert!(
        !logs.contains(&agent_addr),
        "{agent_addr} appears in the logs: {logs}"
    );
    assert!(
        !text.contains(&agent_addr),
        "{agent_addr} appears in the metrics"
    );
}
