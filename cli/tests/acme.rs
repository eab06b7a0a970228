//! ACME certificates end to end: the real `netbore server --acme-directory` ordering
//! from a real pebble (Debian's package, started by `common::pebble`), which
//! validates HTTP-01 against the Edge's plain HTTP port; viewers trust only pebble's
//! root. They fail with what to do when pebble is not installed (scripts/test.sh
//! installs it).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pebble::{self, Pebble};
use common::{HttpAgent, Server, TempDir, web};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use netbore_test_support::{tls_client_config, tls_connect};
use rustls::ClientConfig;

/// Fails the test with what to do when pebble is missing: a skipped test proves nothing.
fn require_pebble() {
    assert!(
        pebble::installed(),
        "pebble is not installed; run `apt-get install pebble` (scripts/test.sh does)"
    );
}

/// A server with HTTPS certificates from `pebble`, on the plain HTTP port pebble
/// validates against.
fn acme_server(pebble: &Pebble, data_dir: TempDir, http_port: u16, extra: &[&str]) -> Server {
    acme_server_on(pebble, data_dir, http_port, 0, extra)
}

/// [`acme_server`] with HTTPS on `https_port` (0: any).
fn acme_server_on(
    pebble: &Pebble,
    data_dir: TempDir,
    http_port: u16,
    https_port: u16,
    extra: &[&str],
) -> Server {
    let http = format!("127.0.0.1:{http_port}");
    let https = format!("127.0.0.1:{https_port}");
    let ca = pebble.ca_file.to_str().unwrap().to_string();
    let mut args = vec![
        "--domain",
        "localhost",
        "--https-addr",
        &https,
        "--acme-directory",
        &pebble.directory,
        "--acme-email",
        "ops@example.com",
        "--acme-ca",
        &ca,
        "--acme-wait",
        "30",
    ];
    args.extend_from_slice(extra);
    Server::start_opts(data_dir, "127.0.0.1:0", "127.0.0.1:0", &http, true, &args)
}

/// A rustls client trusting only the certificates of `roots_pem`, without session
/// resumption (every connection sees the certificate the Edge holds now).
fn client(roots_pem: &[u8]) -> Arc<ClientConfig> {
    let mut config = tls_client_config(roots_pem, &[]);
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// `GET path` over a new TLS connection to `addr` with SNI and Host `sni`: the
/// status, the body and the leaf certificate the server presented.
async fn https_get(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<(u16, String, Vec<u8>), String> {
    let tls = tls_connect(addr, sni, config)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", sni)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), leaf))
}

/// pebble's root CA, from its management API (pebble makes a new one each run).
async fn pebble_root(pebble: &Pebble) -> Vec<u8> {
    let listener_ca = std::fs::read(&pebble.ca_file).unwrap();
    let (status, body, _) = https_get(
        pebble.management,
        "127.0.0.1",
        client(&listener_ca),
        "/roots/0",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    body.into_bytes()
}

/// Lines of `text` containing `needle`.
fn lines_with(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// Waits until `server`'s log has `count` lines containing `needle`.
fn wait_for_lines(server: &Server, needle: &str, count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while lines_with(&server.proc.stderr(), needle) < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} lines with {needle:?} within {within:?}:\n{}",
            server.proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn first_request_waits_for_http01_issuance_and_a_restart_reuses_the_certificate() {
    require_pebble();
    let http_port = common::free_port();
    let pebble = Pebble::start(http_port, None);
    let origin = web::start_origin().await;
    let server = acme_server(&pebble, TempDir::new("acme"), http_port, &[]);
    let https = server.https.unwrap();
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "app"]);
    assert_eq!(
        agent.online["public_url"],
        format!("https://app.localhost:{}", https.port())
    );
    let viewer = client(&pebble_root(&pebble).await);

    // No certificate yet: the handshakes of two viewers wait for one order,
    // validated by pebble over HTTP-01 on the Edge's plain HTTP port.
    let started = Instant::now();
    let (first, second) = tokio::join!(
        https_get(https, "app.localhost", viewer.clone(), "/hello"),
        https_get(https, "app.localhost", viewer.clone(), "/hello"),
    );
    eprintln!("first requests with issuance took {:?}", started.elapsed());
    let (status, body, leaf) = first.unwrap_or_else(|e| panic!("{e}\n{}", server.proc.stderr()));
    assert_eq!(
        second.unwrap().2,
        leaf,
        "both viewers got the one certificate"
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "hello /hello");
    assert!(
        pebble.log().contains(&format!(
            "http://app.localhost:{http_port}/.well-known/acme-challenge/"
        )),
        "pebble validated over HTTP-01:\n{}",
        pebble.log()
    );
    let log = server.proc.stderr();
    assert_eq!(lines_with(&log, "ACME order started"), 1, "{log}");
    assert_eq!(lines_with(&log, "ACME certificate issued"), 1, "{log}");

    // Stored on disk, the key for its owner only.
    let acme_dir = server.data_dir.0.join("acme");
    let stored = std::fs::read(acme_dir.join("app.localhost.crt")).unwrap();
    #[cfg(unix)]
    {
        assert_eq!(mode(&acme_dir.join("app.localhost.key")), 0o600);
        assert_eq!(mode(&acme_dir.join("account.json")), 0o600);
    }

    // A second connection gets the same certificate, with no new order.
    let (_, _, again) = https_get(https, "app.localhost", viewer.clone(), "/hello")
        .await
        .unwrap();
    assert_eq!(leaf, again);

    // Restart on the same data directory: the stored certificate is served and
    // nothing is ordered.
    drop(agent);
    let data_dir = server.stop();
    let server = acme_server(&pebble, data_dir, http_port, &[]);
    let https = server.https.unwrap();
    let _agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "app"]);
    let (status, _, after_restart) = https_get(https, "app.localhost", viewer, "/hello")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.proc.stderr()));
    assert_eq!(status, 200);
    assert_eq!(leaf, after_restart, "the stored certificate is served");
    let log = server.proc.stderr();
    assert_eq!(lines_with(&log, "ACME order started"), 0, "{log}");
    assert!(log.contains("ACME certificates loaded from disk"), "{log}");
    assert_eq!(
        std::fs::read(server.data_dir.0.join("acme/app.localhost.crt")).unwrap(),
        stored
    );
}

#[tokio::test]
async fn a_refused_order_is_one_clear_line_and_other_names_keep_working() {
    require_pebble();
    let http_port = common::free_port();
    let pebble = Pebble::start(http_port, None);
    // pebble's validation of this name dials an address the Edge does not listen on.
    pebble.set_a("bad.localhost", "127.0.0.2");
    let origin = web::start_origin().await;
    let server = acme_server(&pebble, TempDir::new("acme"), http_port, &[]);
    let https = server.https.unwrap();
    let _bad = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "bad"]);
    let _good = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "good"]);
    let viewer = client(&pebble_root(&pebble).await);

    let refused = https_get(https, "bad.localhost", viewer.clone(), "/hello").await;
    assert!(
        refused.is_err(),
        "no certificate, no handshake: {refused:?}"
    );
    let log = server.proc.stderr();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ACME could not issue a certificate"))
        .collect();
    assert_eq!(failures.len(), 1, "{log}");
    eprintln!("the failure line: {}", failures[0]);
    assert!(
        failures[0].contains("for bad.localhost:")
            && failures[0].contains("urn:ietf:params:acme:error:connection"),
        "the line names the name and the directory's error: {}",
        failures[0]
    );

    // Other names are served; the refused one is not ordered again at once.
    let (status, body, _) = https_get(https, "good.localhost", viewer.clone(), "/hello")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.proc.stderr()));
    assert_eq!((status, body.as_str()), (200, "hello /hello"));
    assert!(
        https_get(https, "bad.localhost", viewer.clone(), "/hello")
            .await
            .is_err()
    );
    // A name no tunnel holds gets no certificate and costs no order.
    assert!(
        https_get(https, "nobody.localhost", viewer, "/hello")
            .await
            .is_err()
    );
    let log = server.proc.stderr();
    let bad_orders = log
        .lines()
        .filter(|l| l.contains("ACME order started") && l.contains("bad.localhost"))
        .count();
    assert_eq!(
        bad_orders, 1,
        "the refused name is not ordered again at once:\n{log}"
    );
    assert_eq!(lines_with(&log, "ACME order started"), 2, "{log}");
}

#[tokio::test]
async fn certificates_are_renewed_at_two_thirds_of_their_lifetime() {
    require_pebble();
    let http_port = common::free_port();
    // Certificates valid 12 s: renewed 8 s after they start.
    let pebble = Pebble::start(http_port, Some(Duration::from_secs(12)));
    let origin = web::start_origin().await;
    let server = acme_server(
        &pebble,
        TempDir::new("acme"),
        http_port,
        &["--acme-renew-check", "1"],
    );
    let https = server.https.unwrap();
    let _agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "app"]);
    let viewer = client(&pebble_root(&pebble).await);
    let (status, _, first) = https_get(https, "app.localhost", viewer.clone(), "/hello")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.proc.stderr()));
    assert_eq!(status, 200);
    wait_for_lines(
        &server,
        "ACME certificate issued",
        2,
        Duration::from_secs(30),
    );
    assert_eq!(
        lines_with(&server.proc.stderr(), "renewing the ACME certificate"),
        1
    );
    let (status, _, renewed) = https_get(https, "app.localhost", viewer, "/hello")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_ne!(first, renewed, "the renewed certificate is served");
}

#[tokio::test]
async fn tls_alpn_01_is_answered_on_the_https_port() {
    require_pebble();
    let (http_port, https_port) = (common::free_port(), common::free_port());
    let pebble = Pebble::start_with(http_port, https_port, None);
    let origin = web::start_origin().await;
    let server = acme_server_on(
        &pebble,
        TempDir::new("acme"),
        http_port,
        https_port,
        &["--acme-challenge", "tls-alpn-01"],
    );
    let https = server.https.unwrap();
    assert_eq!(https.port(), https_port);
    let _agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "app"]);
    let viewer = client(&pebble_root(&pebble).await);
    let (status, body, _) = https_get(https, "app.localhost", viewer, "/hello")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.proc.stderr()));
    assert_eq!((status, body.as_str()), (200, "hello /hello"));
    let log = server.proc.stderr();
    assert!(
        log.contains("TLS-ALPN-01 validation handshake answered"),
        "pebble validated over TLS-ALPN-01:\n{log}"
    );
    assert!(
        !pebble.log().contains("validate w/ HTTP"),
        "and not over HTTP-01:\n{}",
        pebble.log()
    );
    assert_eq!(
        lines_with(&server.proc.stderr(), "ACME certificate issued"),
        1
    );
}

/// One node of a two-node fleet on `ip`, with the fleet's shared port numbers.
fn fleet_node(pebble: &Pebble, redis: &str, ip: &str, ports: [u16; 4], extra: &[&str]) -> Server {
    let [control, agent, http, https] = ports;
    let https = format!("{ip}:{https}");
    let ca = pebble.ca_file.to_str().unwrap().to_string();
    let mut args = vec![
        "--redis",
        redis,
        "--domain",
        "localhost",
        "--https-addr",
        &https,
        "--acme-directory",
        &pebble.directory,
        "--acme-email",
        "ops@example.com",
        "--acme-ca",
        &ca,
        "--acme-wait",
        "30",
    ];
    args.extend_from_slice(extra);
    Server::start_opts(
        TempDir::new("acme-fleet"),
        &format!("{ip}:{control}"),
        &format!("{ip}:{agent}"),
        &format!("{ip}:{http}"),
        true,
        &args,
    )
}

/// A fleet of two: node A on 127.0.0.1, where pebble validates (its DNS answers
/// 127.0.0.1 for every name), and node B on 127.0.0.2, which holds the tunnel and
/// orders its certificate. A answers the challenge from what B shared, and then
/// serves B's certificate to its own viewers without ordering.
async fn a_fleet_shares_one_certificate(challenge: &[&str]) {
    require_pebble();
    let redis = common::redis::RedisServer::start();
    let ports = [
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    ];
    let pebble = Pebble::start_with(ports[2], ports[3], None);
    let origin = web::start_origin().await;
    let a = fleet_node(&pebble, &redis.url, "127.0.0.1", ports, challenge);
    let b = fleet_node(&pebble, &redis.url, "127.0.0.2", ports, challenge);
    let _agent = HttpAgent::start(&b, &origin.addr.to_string(), &["--name", "app"]);
    // Node A learns of B, and so of B's tunnel, at its next heartbeat: until then
    // its plain HTTP port answers the name with 404, then with the redirect to HTTPS.
    let started = Instant::now();
    while web::get(a.http, "app.localhost", "/").await.status == 404 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "node A never learnt of B's tunnel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let viewer = client(&pebble_root(&pebble).await);
    let via = |server: &Server| server.https.unwrap();

    let (status, body, issued) = https_get(via(&b), "app.localhost", viewer.clone(), "/hello")
        .await
        .unwrap_or_else(|e| panic!("{e}\nB:\n{}\nA:\n{}", b.proc.stderr(), a.proc.stderr()));
    assert_eq!((status, body.as_str()), (200, "hello /hello"));
    assert_eq!(lines_with(&b.proc.stderr(), "ACME order started"), 1);

    // Node A, which holds neither the tunnel nor the order, serves the same
    // certificate, taken from the fleet, and relays the request to B.
    let (status, body, served) = https_get(via(&a), "app.localhost", viewer, "/hello")
        .await
        .unwrap_or_else(|e| panic!("{e}\nA:\n{}", a.proc.stderr()));
    assert_eq!((status, body.as_str()), (200, "hello /hello"));
    assert_eq!(
        served, issued,
        "node A serves the certificate node B ordered"
    );
    let log = a.proc.stderr();
    assert_eq!(lines_with(&log, "ACME order started"), 0, "{log}");
    assert!(
        log.contains("ACME certificate taken from the fleet"),
        "{log}"
    );
}

#[tokio::test]
async fn a_fleet_answers_http01_at_any_node_and_serves_one_certificate_everywhere() {
    a_fleet_shares_one_certificate(&[]).await;
}

#[tokio::test]
async fn a_fleet_answers_tls_alpn_01_at_any_node_and_serves_one_certificate_everywhere() {
    a_fleet_shares_one_certificate(&["--acme-challenge", "tls-alpn-01"]).await;
}
