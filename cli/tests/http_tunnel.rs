//! HTTP tunnels end to end: the real `netbore server` and `netbore http` binaries, a
//! real hyper origin, and real clients (hyper, curl, a WebSocket client).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::web::{self, get, request};
use common::{HttpAgent, Server};
use futures_util::{SinkExt, StreamExt};

fn http_server(extra: &[&str]) -> Server {
    let mut args = vec!["--domain", "localhost"];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

#[tokio::test]
async fn get_and_post_pass_with_their_bodies_over_pooled_connections() {
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "app"]);
    assert_eq!(agent.host, format!("app.localhost:{}", server.http.port()));

    let r = get(server.http, &agent.host, "/hello?x=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello /hello");

    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let r = request(server.http, "POST", &agent.host, "/echo", &[], body.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "echoed body differs");

    // Sequential requests reuse the Edge's upstream connection instead of dialing the
    // origin each time.
    let before: u64 = get(server.http, &agent.host, "/connections")
        .await
        .text()
        .parse()
        .unwrap();
    for _ in 0..20 {
        assert_eq!(get(server.http, &agent.host, "/x").await.status, 200);
    }
    let after: u64 = get(server.http, &agent.host, "/connections")
        .await
        .text()
        .parse()
        .unwrap();
    assert!(
        after - before <= 1,
        "20 requests opened {} origin connections",
        after - before
    );
}

#[tokio::test]
async fn an_origin_closing_idle_connections_costs_no_request() {
    // An origin that answers one request per connection and then closes it, without
    // saying so: every connection the Edge pools goes stale, sooner or later.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let server = http_server(&[]);
    let agent = HttpAgent::start(&server, &origin.to_string(), &["--name", "app"]);
    for i in 0..100 {
        let r = get(server.http, &agent.host, "/").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "ok");
        if i % 10 == 0 {
            // Sometimes give the close time to arrive before the next request.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An origin that answers each request by its path with a canned response, framed in
/// one of the ways HTTP/1.1 allows, keeping the connection open unless told to close.
async fn framing_origin() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let (answer, close): (&[u8], bool) = match path.as_str() {
                        "/chunked" => (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n", false),
                        "/until-close" => (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", true),
                        "/no-content" => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
                        "/hints" => (b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal", false),
                        "/both" => (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false),
                        "/two-lengths" => (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd", false),
                        "/too-much" => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled", false),
                        _ if head.starts_with("HEAD") => (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false),
                        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
                    };
                    if socket.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn responses_are_framed_as_the_origin_framed_them_and_never_run_into_the_next() {
    let origin = framing_origin().await;
    let server = http_server(&[]);
    let agent = HttpAgent::start(&server, &origin.to_string(), &["--name", "app"]);
    let host = agent.host.clone();
    for round in 0..3 {
        let expect = [
            ("GET", "/chunked", 200, "hello world"),
            ("GET", "/until-close", 200, "until the end"),
            ("GET", "/no-content", 204, ""),
            ("GET", "/hints", 200, "final"),
            ("HEAD", "/head", 200, ""),
            ("GET", "/both", 200, "abc"),
            ("GET", "/two-lengths", 502, ""),
            ("GET", "/too-much", 200, "ok"),
            ("DELETE", "/x", 200, "ok"),
        ];
        for (method, path, status, body) in expect {
            let r = request(server.http, method, &host, path, &[], Bytes::new()).await;
            assert_eq!(
                r.status,
                status,
                "round {round}, {method} {path}: {}",
                r.text()
            );
            if status == 200 {
                assert_eq!(r.text(), body, "round {round}, {method} {path}");
            }
            // Whatever came before, the next response is the one asked for.
            let r = get(server.http, &host, "/plain").await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "ok"),
                "round {round}, after {path}"
            );
        }
    }
    let r = request(server.http, "HEAD", &host, "/head", &[], Bytes::new()).await;
    assert_eq!(
        r.headers["content-length"], "5",
        "a HEAD answer keeps its length"
    );
    let r = get(server.http, &host, "/two-lengths").await;
    assert!(r.text().contains("Content-Length"), "{}", r.text());
}

#[tokio::test]
async fn h2c_viewers_are_served() {
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for i in 0..10 {
        let req = hyper::Request::get(format!("http://{}/h2/{i}", agent.host))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        use http_body_util::BodyExt;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], format!("hello /h2/{i}").as_bytes());
    }
}

#[tokio::test]
async fn forwarding_headers_are_set_and_spoofed_ones_removed() {
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let r = request(
        server.http,
        "GET",
        &agent.host,
        "/headers",
        &[
            ("x-forwarded-for", "198.51.100.9"),
            ("x-netbore-agent-ip", "6.6.6.6"),
            ("x-netbore-client-ip", "6.6.6.6"),
            ("x-netbore-whatever", "spoof"),
        ],
        Bytes::new(),
    )
    .await;
    let h = r.json();
    assert_eq!(h["x-forwarded-for"], "198.51.100.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], agent.host.as_str());
    assert_eq!(h["x-netbore-client-ip"], "127.0.0.1");
    assert_eq!(h["x-netbore-agent-ip"], "127.0.0.1");
    assert!(h.get("x-netbore-whatever").is_none(), "{h}");
    assert_eq!(h["host"], agent.host.as_str());
}

#[tokio::test]
async fn a_masked_agent_address_appears_only_in_the_audit_log() {
    let origin = web::start_origin().await;
    let server = http_server(&["--mask-agent-ip"]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let r = request(
        server.http,
        "GET",
        &agent.host,
        "/headers",
        &[("x-netbore-agent-ip", "6.6.6.6")],
        Bytes::new(),
    )
    .await;
    let h = r.json();
    assert!(h.get("x-netbore-agent-ip").is_none(), "{h}");
    assert_eq!(h["x-netbore-client-ip"], "127.0.0.1");
    let audit = std::fs::read_to_string(server.data_dir.0.join("audit.log")).unwrap();
    let line: serde_json::Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(line["event"], "tunnel_online");
    let agent_addr = line["agent"].as_str().unwrap().to_string();
    assert!(agent_addr.starts_with("127.0.0.1:"), "{line}");
    let logs = server.proc.stderr();
    assert!(logs.contains("tunnel online"), "{logs}");
    assert!(
        !logs.contains(&agent_addr),
        "public log names the agent: {logs}"
    );
}

#[tokio::test]
async fn failures_are_pages_with_the_right_status() {
    let origin = web::start_origin().await;
    let server = http_server(&["--response-timeout", "1"]);

    // Unknown name: 404, HTML by default and JSON on request.
    let r = get(
        server.http,
        &format!("nobody.localhost:{}", server.http.port()),
        "/",
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("no tunnel is online at nobody.localhost"),
        "{}",
        r.text()
    );
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let r = request(
        server.http,
        "GET",
        &format!("nobody.localhost:{}", server.http.port()),
        "/",
        &[("accept", "application/json")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "tunnel_not_found");

    // Origin too slow: 504 after --response-timeout.
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "slow"]);
    let started = Instant::now();
    let r = get(server.http, &agent.host, "/slow/5000").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(r.headers["x-netbore-error"], "origin_timeout");

    // Origin refused: 502 naming the address the agent tried.
    let closed = common::free_port();
    let refused = HttpAgent::start(&server, &closed.to_string(), &["--name", "refused"]);
    let r = get(server.http, &refused.host, "/").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.headers["x-netbore-error"], "origin_unreachable");
    assert!(
        r.text().contains(&format!("127.0.0.1:{closed}")),
        "{}",
        r.text()
    );

    // Agent gone: 502 "offline", within a moment, never a hang.
    let mut agent = agent;
    agent.proc.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = tokio::time::timeout(Duration::from_secs(3), get(server.http, &agent.host, "/"))
            .await
            .expect("a viewer of an offline tunnel must not hang");
        // A request racing the agent's death may see its connection break
        // (`upstream_broken`); once the Edge has noticed, it is `agent_offline`.
        if r.status == 502 && r.headers["x-netbore-error"] == "agent_offline" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after the agent died",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn server_sent_events_arrive_as_they_are_produced() {
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let mut sender = web::connect_http1(server.http).await;
    let req = hyper::Request::get("/sse")
        .header("host", &agent.host)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let started = Instant::now();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    use http_body_util::BodyExt;
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            let text = String::from_utf8_lossy(&data).into_owned();
            for _ in text.matches("data: event") {
                arrivals.push(started.elapsed());
            }
        }
    }
    assert_eq!(arrivals.len(), 5, "{arrivals:?}");
    // The origin spaces events 300 ms apart: each must arrive on its own schedule,
    // not all at the end.
    assert!(arrivals[0] < Duration::from_millis(250), "{arrivals:?}");
    assert!(
        arrivals[4] - arrivals[0] > Duration::from_millis(1000),
        "{arrivals:?}"
    );
    for pair in arrivals.windows(2) {
        assert!(
            pair[1] - pair[0] > Duration::from_millis(150),
            "{arrivals:?}"
        );
    }
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let url = format!("ws://{}/ws", agent.host);
    let (mut ws, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(response.status(), 101);
    use tokio_tungstenite::tungstenite::Message;
    for i in 0..50 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back, Message::text(format!("ping {i}")));
    }
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn curl_expect_100_continue_and_chunked_uploads_pass() {
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    let dir = common::TempDir::new("curl");
    let file = dir.0.join("upload.bin");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let url = format!("http://{}/echo", agent.host);
    let resolve = format!("{}:127.0.0.1", agent.host);
    for extra in [
        vec!["-H", "Expect: 100-continue"],
        vec!["-H", "Transfer-Encoding: chunked"],
    ] {
        let mut args = vec![
            "-sS",
            "--fail",
            "--connect-to",
            &resolve,
            "-T",
            file.to_str().unwrap(),
            "-X",
            "POST",
            "-o",
            "-",
            "-w",
            "",
            "-v",
        ];
        args.extend_from_slice(&extra);
        args.push(&url);
        let out = tokio::process::Command::new("curl")
            .args(&args)
            .output()
            .await
            .expect("curl is installed (scripts/test.sh installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "curl failed: {stderr}");
        assert!(
            out.stdout == data,
            "echo differs ({} bytes back)",
            out.stdout.len()
        );
        if extra[1].starts_with("Expect") {
            assert!(stderr.contains("HTTP/1.1 100 Continue"), "{stderr}");
        }
    }
}

#[tokio::test]
async fn a_second_agent_asking_a_taken_name_gets_one_clear_sentence() {
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let _first = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "taken"]);
    let mut second = HttpAgent::spawn(&server, &origin.addr.to_string(), &["--name", "taken"]);
    let error = second.expect_event("error", Duration::from_secs(10));
    assert_eq!(error["code"], "name_taken", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("taken"),
        "{error}"
    );
    assert_eq!(second.wait_exit(Duration::from_secs(5)), Some(1));
}

#[tokio::test]
async fn a_restarted_agent_gets_its_url_back() {
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let state = common::TempDir::new("state");
    let state_dir = state.0.to_str().unwrap();
    let mut first = HttpAgent::start(
        &server,
        &origin.addr.to_string(),
        &["--state-dir", state_dir],
    );
    first.proc.kill();
    let second = HttpAgent::start(
        &server,
        &origin.addr.to_string(),
        &["--state-dir", state_dir],
    );
    assert_eq!(second.online["public_url"], first.online["public_url"]);
    assert_eq!(second.online["tunnel_id"], first.online["tunnel_id"]);
    assert_eq!(
        get(server.http, &second.host, "/back").await.text(),
        "hello /back"
    );
    // --fresh starts over with a new tunnel.
    let third = HttpAgent::start(
        &server,
        &origin.addr.to_string(),
        &["--state-dir", state_dir, "--fresh"],
    );
    assert_ne!(third.online["tunnel_id"], first.online["tunnel_id"]);
}

/// Samples the RSS (KiB) of `pids` every 100 ms until `stop` is set; returns the peaks.
fn sample_rss(
    pids: Vec<u32>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut peaks = vec![0u64; pids.len()];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for (i, pid) in pids.iter().enumerate() {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0);
                peaks[i] = peaks[i].max(rss);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        peaks
    })
}

#[tokio::test]
async fn a_gibibyte_streams_each_way_with_flat_memory() {
    use http_body_util::BodyExt;
    const GIB: u64 = 1 << 30;
    let origin = web::start_origin().await;
    let server = http_server(&[]);
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &[]);
    // Warm up so idle buffers and pools are in the baseline.
    for _ in 0..3 {
        request(
            server.http,
            "POST",
            &agent.host,
            "/sink",
            &[],
            vec![1u8; 1 << 20],
        )
        .await;
    }
    let base = (server.proc.rss_kib(), agent.proc.rss_kib());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_rss(vec![server.proc.pid(), agent.proc.pid()], stop.clone());

    // Upload.
    let mut sender = web::connect_http1(server.http).await;
    let started = Instant::now();
    let req = hyper::Request::post("/sink")
        .header("host", &agent.host)
        .header("content-length", GIB.to_string())
        .body(web::PatternBody::new(GIB))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    let expected = web::PatternBody::checksum(GIB);
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("{} {:x}", expected.len, expected.hash)
    );
    let upload = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let up_peaks = sampler.join().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_rss(vec![server.proc.pid(), agent.proc.pid()], stop.clone());

    // Download.
    let started = Instant::now();
    let mut sender = web::connect_http1(server.http).await;
    let req = hyper::Request::get(format!("/bytes/{GIB}"))
        .header("host", &agent.host)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    let mut sum = netbore_test_support::Checksum::default();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            sum.update(&data);
        }
    }
    assert_eq!(sum, expected);
    let download = started.elapsed();

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let down_peaks = sampler.join().unwrap();
    let peaks = [
        up_peaks[0].max(down_peaks[0]),
        up_peaks[1].max(down_peaks[1]),
    ];
    eprintln!("peaks upload {up_peaks:?} download {down_peaks:?}");
    let growth = (
        peaks[0].saturating_sub(base.0),
        peaks[1].saturating_sub(base.1),
    );
    eprintln!(
        "1 GiB up {upload:?}, down {download:?}; RSS base server {} KiB agent {} KiB, growth server {} KiB agent {} KiB",
        base.0, base.1, growth.0, growth.1
    );
    // Flat: what is in flight is bounded by the mux windows (64 MiB a session at most,
    // 16 MiB a stream) plus allocator slack, never by the body (1 GiB).
    assert!(growth.0 < 96 * 1024, "server grew {} KiB", growth.0);
    assert!(growth.1 < 96 * 1024, "agent grew {} KiB", growth.1);
}
