//! HTTPS at the Edge end to end: the real `netbore server --https-addr` and
//! `netbore http` binaries, the hyper origin of `common::web`, and real TLS clients
//! (rustls here, and curl when it is installed) trusting the development CA.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::tls_origin::tls_echo_origin;
use common::web::{self, Origin, Reply};
use common::{HttpAgent, Server};
use hyper_util::rt::{TokioExecutor, TokioIo};
use netbore_test_support::{
    Checksum, read_all, read_until_closed, send_pattern, tls_client_config, tls_connect,
};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const H2: &[u8] = b"h2";
const HTTP1: &[u8] = b"http/1.1";

fn https_server(extra: &[&str]) -> Server {
    let mut args = vec!["--domain", "localhost", "--https-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// An HTTPS server, an origin and one HTTP tunnel to it, as most tests here start.
/// Destructured in field order, the agent drops first and the origin last.
struct HttpsTunnel {
    origin: Origin,
    server: Server,
    /// The server's HTTPS address.
    https: SocketAddr,
    agent: HttpAgent,
}

/// Starts an origin, [`https_server`] with `server_args`, and `netbore http --name
/// NAME` to the origin.
async fn https_tunnel(server_args: &[&str], name: &str) -> HttpsTunnel {
    let origin = web::start_origin().await;
    let server = https_server(server_args);
    let https = server
        .https
        .expect("the listening event names the HTTPS address");
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", name]);
    HttpsTunnel {
        origin,
        server,
        https,
        agent,
    }
}

/// The development CA of `server`, as `netbore ca path` prints it.
fn ca_path(server: &Server) -> String {
    let out = std::process::Command::new(common::bin())
        .args(["ca", "path", "--data-dir"])
        .arg(&server.data_dir.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A rustls client trusting only the CA certificates in `ca_pem`, offering `alpn`.
fn client(ca_pem: &[u8], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    Arc::new(tls_client_config(ca_pem, alpn))
}

/// A rustls client trusting only `server`'s development CA, offering `alpn`.
fn dev_client(server: &Server, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client(&std::fs::read(ca_path(server)).unwrap(), alpn)
}

fn alpn_of(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// The name part of `host` (`NAME.localhost:PORT` → `NAME.localhost`).
fn sni_of(host: &str) -> &str {
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Where and how a test viewer opens TLS connections.
struct Tls<'a> {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    sni: &'a str,
}

/// A viewer of `server`'s HTTPS port trusting its development CA, offering HTTP/1.1
/// and naming the name part of `host` by SNI.
fn dev_viewer<'a>(server: &Server, host: &'a str) -> Tls<'a> {
    Tls {
        addr: server.https.unwrap(),
        config: dev_client(server, &[HTTP1]),
        sni: sni_of(host),
    }
}

/// One HTTP/1.1 request over a new TLS connection made as `tls` says, with
/// `Host: host`.
async fn https_request(
    tls: &Tls<'_>,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let stream = tls_connect(tls.addr, tls.sni, tls.config.clone())
        .await
        .unwrap();
    web::request_on(stream, method, host, path, headers, body).await
}

fn curl_present() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `curl --cacert CA --resolve NAME:PORT:127.0.0.1 ARGS https://HOST/PATH`: the
/// negotiated HTTP version and the body. Runs off the test's runtime thread, which
/// also drives the origin.
async fn curl(ca: &str, host: &str, path: &str, args: &[&str]) -> (String, String) {
    let (ca, host, path) = (ca.to_string(), host.to_string(), path.to_string());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || curl_blocking(&ca, &host, &path, &args))
        .await
        .unwrap()
}

fn curl_blocking(ca: &str, host: &str, path: &str, args: &[String]) -> (String, String) {
    let port = host.rsplit_once(':').unwrap().1;
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert", ca, "--resolve"])
        .arg(format!("{}:{port}:127.0.0.1", sni_of(host)))
        .args(["-w", "\n%{http_version}"])
        .args(args)
        .arg(format!("https://{host}{path}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, version) = text.rsplit_once('\n').unwrap();
    (version.to_string(), body.to_string())
}

#[tokio::test]
async fn get_and_a_1_mib_post_pass_over_https_trusting_the_development_ca() {
    let HttpsTunnel {
        origin: _origin,
        server,
        https,
        agent,
    } = https_tunnel(&[], "app").await;
    assert_eq!(
        agent.online["public_url"],
        format!("https://app.localhost:{}", https.port()),
        "the online event's URL is https"
    );
    let ca = ca_path(&server);
    assert_eq!(
        server.data_dir.0.join("ca.pem").to_str().unwrap(),
        ca,
        "viewers trust the CA file `netbore ca path` prints"
    );
    let config = dev_client(&server, &[HTTP1]);
    let sni = sni_of(&agent.host);

    let r = https_request(
        &Tls {
            addr: https,
            config: config.clone(),
            sni,
        },
        &agent.host,
        "GET",
        "/hello",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello /hello");

    let body: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut sum = Checksum::default();
    sum.update(&body);
    let r = https_request(
        &Tls {
            addr: https,
            config: config.clone(),
            sni,
        },
        &agent.host,
        "POST",
        "/sink",
        &[],
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("{} {:x}", sum.len, sum.hash));

    let r = https_request(
        &Tls {
            addr: https,
            config,
            sni,
        },
        &agent.host,
        "GET",
        "/headers",
        &[],
        Bytes::new(),
    )
    .await;
    let h = r.json();
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], agent.host.as_str());

    // Without --redirect-http, plain HTTP keeps serving.
    let plain_host = format!("app.localhost:{}", server.http.port());
    let r = web::get(server.http, &plain_host, "/plain").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello /plain");

    if curl_present() {
        let (version, body) = curl(&ca, &agent.host, "/curl", &["--http1.1"]).await;
        assert_eq!((version.as_str(), body.as_str()), ("1.1", "hello /curl"));
        let (version, body) = curl(&ca, &agent.host, "/curl2", &["--http2"]).await;
        assert_eq!((version.as_str(), body.as_str()), ("2", "hello /curl2"));
        let big = server.data_dir.0.join("upload.bin");
        std::fs::write(&big, vec![7u8; 1024 * 1024]).unwrap();
        let upload = format!("@{}", big.display());
        let (_, body) = curl(&ca, &agent.host, "/sink", &["--data-binary", &upload]).await;
        let mut sum = Checksum::default();
        sum.update(&vec![7u8; 1024 * 1024]);
        assert_eq!(body, format!("{} {:x}", sum.len, sum.hash));
    } else {
        eprintln!("curl is not installed: the curl checks were skipped");
    }
}

#[tokio::test]
async fn h2_is_negotiated_by_alpn_and_http1_still_served() {
    let HttpsTunnel {
        origin: _origin,
        server,
        https,
        agent,
    } = https_tunnel(&[], "two").await;
    let sni = sni_of(&agent.host);

    let stream = tls_connect(https, sni, dev_client(&server, &[H2, HTTP1]))
        .await
        .unwrap();
    assert_eq!(alpn_of(&stream).as_deref(), Some(H2), "h2 is preferred");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Several requests in flight at once on the one connection.
    let mut replies = Vec::new();
    for i in 0..8 {
        let req = hyper::Request::get(format!("https://{}/h2/{i}", agent.host))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        replies.push(sender.send_request(req));
    }
    for (i, reply) in replies.into_iter().enumerate() {
        let response = reply.await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let r = Reply::from_response(response).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("hello /h2/{i}"));
    }

    let stream = tls_connect(https, sni, dev_client(&server, &[HTTP1]))
        .await
        .unwrap();
    assert_eq!(alpn_of(&stream).as_deref(), Some(HTTP1));
}

#[tokio::test]
async fn a_host_other_than_the_sni_name_gets_421_never_the_other_tunnel() {
    let HttpsTunnel {
        origin: _origin_a,
        server,
        https,
        agent: a,
    } = https_tunnel(&[], "tenant-a").await;
    let origin_b = web::start_origin().await;
    let b = HttpAgent::start(&server, &origin_b.addr.to_string(), &["--name", "tenant-b"]);

    // HTTP/1.1: SNI names tunnel A, Host names tunnel B.
    let r = https_request(
        &dev_viewer(&server, &a.host),
        &b.host,
        "GET",
        "/secret",
        &[("accept", "application/json")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 421, "{}", r.text());
    assert!(
        !r.text().contains("hello"),
        "tunnel B's origin answered: {}",
        r.text()
    );
    assert_eq!(r.headers["x-netbore-error"], "misdirected_request");
    let error = &r.json()["error"];
    assert_eq!(error["code"], "misdirected_request");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(sni_of(&a.host)) && message.contains(&b.host),
        "{message}"
    );
    assert!(
        !message.contains('\n') && !message.ends_with('.'),
        "{message}"
    );

    // h2: :authority names B on a connection set up for A.
    let stream = tls_connect(https, sni_of(&a.host), dev_client(&server, &[H2]))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://{}/secret", b.host))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let r = Reply::from_response(sender.send_request(req).await.unwrap()).await;
    assert_eq!(r.status, 421);
    assert!(
        r.text().contains("421"),
        "the usual HTML page: {}",
        r.text()
    );
    // The same connection still serves its own name.
    let req = hyper::Request::get(format!("https://{}/mine", a.host))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let r = Reply::from_response(sender.send_request(req).await.unwrap()).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello /mine"));
}

#[tokio::test]
async fn a_name_outside_the_domain_or_no_name_fails_the_handshake() {
    let HttpsTunnel {
        origin: _origin,
        server,
        https,
        agent,
    } = https_tunnel(&[], "known").await;
    let config = dev_client(&server, &[HTTP1]);
    for sni in ["other.example", "a.b.localhost", "localhostx"] {
        let e = tls_connect(https, sni, config.clone()).await.err();
        assert!(e.is_some(), "{sni} got a certificate");
    }
    // No SNI at all (an IP address as the server name).
    let tcp = TcpStream::connect(https).await.unwrap();
    let ip = ServerName::from(std::net::IpAddr::from([127, 0, 0, 1]));
    let e = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ip, tcp)
        .await;
    assert!(e.is_err());
    // Garbage instead of a hello: the connection is closed, the Edge keeps serving.
    let mut raw = TcpStream::connect(https).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut raw,
        b"GET / HTTP/1.1\r\nHost: known.localhost\r\n\r\n",
    )
    .await
    .unwrap();
    read_until_closed(&mut raw, Duration::from_secs(5)).await;
    let r = https_request(
        &Tls {
            addr: https,
            config,
            sni: sni_of(&agent.host),
        },
        &agent.host,
        "GET",
        "/ok",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_silent_viewer_is_cut_at_the_handshake_timeout() {
    let server = https_server(&["--tls-handshake-timeout", "1"]);
    let mut raw = TcpStream::connect(server.https.unwrap()).await.unwrap();
    let start = Instant::now();
    read_until_closed(&mut raw, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900), "cut after {took:?}");
}

#[tokio::test]
async fn redirect_http_answers_308_to_the_https_url() {
    let HttpsTunnel {
        origin: _origin,
        server,
        https,
        agent,
    } = https_tunnel(&["--redirect-http"], "site").await;
    let plain_host = format!("site.localhost:{}", server.http.port());
    for method in ["GET", "POST"] {
        let r = web::request(
            server.http,
            method,
            &plain_host,
            "/a/b?x=1&y=2",
            &[],
            Bytes::from_static(b"data"),
        )
        .await;
        assert_eq!(r.status, 308, "{method}");
        assert_eq!(
            r.headers["location"],
            format!("https://site.localhost:{}/a/b?x=1&y=2", https.port())
        );
    }
    // Names that are no tunnel's get the usual page, not a redirect.
    let r = web::get(server.http, "elsewhere.example", "/").await;
    assert_eq!(r.status, 404);
    // The https URL serves.
    let r = https_request(
        &dev_viewer(&server, &agent.host),
        &agent.host,
        "GET",
        "/a/b?x=1",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello /a/b"));
}

/// A CA and a wildcard certificate for `*.edge.test` and `edge.test` signed by it,
/// written to `dir`: (CA PEM, chain file, key file, leaf DER).
fn operator_certificate(dir: &Path) -> (String, String, String, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Operator test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["*.edge.test".to_string(), "edge.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let cert_file = dir.join("wildcard.pem");
    let key_file = dir.join("wildcard-key.pem");
    std::fs::write(&cert_file, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
    std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
    (
        ca_cert.pem(),
        cert_file.to_str().unwrap().to_string(),
        key_file.to_str().unwrap().to_string(),
        leaf.der().to_vec(),
    )
}

#[tokio::test]
async fn cert_and_key_files_are_the_certificate_viewers_see() {
    let dir = common::TempDir::new("operator-cert");
    let (ca_pem, cert, key, leaf_der) = operator_certificate(&dir.0);
    let origin = web::start_origin().await;
    // Agents dial the Edge by address: edge.test is in no DNS.
    let agent_addr = format!("127.0.0.1:{}", common::free_port());
    let server = Server::start_in(
        common::TempDir::new("data"),
        "127.0.0.1:0",
        &agent_addr,
        &[
            "--edge-addr",
            &agent_addr,
            "--domain",
            "edge.test",
            "--https-addr",
            "127.0.0.1:0",
            "--cert",
            &cert,
            "--key",
            &key,
        ],
    );
    let https = server.https.unwrap();
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--name", "files"]);
    let config = client(ca_pem.as_bytes(), &[HTTP1]);
    let stream = tls_connect(https, sni_of(&agent.host), config.clone())
        .await
        .unwrap();
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(presented, leaf_der, "the operator's certificate is served");
    drop(stream);
    let r = https_request(
        &Tls {
            addr: https,
            config: config.clone(),
            sni: sni_of(&agent.host),
        },
        &agent.host,
        "GET",
        "/f",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello /f"));
    // The development CA plays no part: a client trusting only it is refused.
    assert!(
        tls_connect(https, sni_of(&agent.host), dev_client(&server, &[HTTP1]))
            .await
            .is_err()
    );
    // And names outside the domain still get no certificate.
    assert!(tls_connect(https, "other.example", config).await.is_err());
}

#[test]
fn a_key_that_does_not_match_the_certificate_stops_the_server_with_one_sentence() {
    let dir = common::TempDir::new("operator-mismatch");
    let (_, cert, _, _) = operator_certificate(&dir.0);
    let other = dir.0.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (_, _, wrong_key, _) = operator_certificate(&other);
    let data = common::TempDir::new("mismatch-data");
    let out = std::process::Command::new(common::bin())
        .args([
            "server",
            "--control-addr",
            "127.0.0.1:0",
            "--agent-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--https-addr",
            "127.0.0.1:0",
            "--tcp-ports",
            "0",
        ])
        .args(["--cert", &cert, "--key", &wrong_key, "--data-dir"])
        .arg(&data.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot be used together")
            && stderr.contains("pass the key that belongs to the certificate"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_tls_tunnel_passes_tls_through_with_the_origins_own_certificate() {
    let (origin, origin_ca, origin_leaf) = tls_echo_origin("secure.localhost").await;
    let web_origin = web::start_origin().await;
    let server = https_server(&[]);
    let https = server.https.unwrap();
    let url = server.url();
    let agent = common::Proc::spawn(&[
        "tls",
        &origin.to_string(),
        "--server",
        &url,
        "--name",
        "secure",
    ]);
    let online = agent.expect_event("online", Duration::from_secs(20));
    assert_eq!(
        online["public_url"],
        format!("tls://secure.localhost:{}", https.port())
    );
    // An HTTP tunnel on the same HTTPS port is still terminated by the Edge.
    let web = HttpAgent::start(&server, &web_origin.addr.to_string(), &["--name", "web"]);

    // The viewer trusts only the origin's CA: the handshake is the origin's.
    let stream = tls_connect(https, "secure.localhost", client(origin_ca.as_bytes(), &[]))
        .await
        .unwrap();
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(presented, origin_leaf, "the origin's own certificate");
    let total = 512 * 1024;
    let (mut r, mut w) = tokio::io::split(stream);
    let send = tokio::spawn(async move { send_pattern(&mut w, 9, total).await });
    let got = read_all(&mut r).await;
    let sent = send.await.unwrap();
    assert_eq!(sent.len, total as u64);
    assert_eq!(got, sent, "the origin's echo came back whole");

    // The Edge's development CA plays no part in a TLS tunnel.
    assert!(
        tls_connect(https, "secure.localhost", dev_client(&server, &[HTTP1]))
            .await
            .is_err()
    );
    let r = https_request(
        &dev_viewer(&server, &web.host),
        &web.host,
        "GET",
        "/still-http",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello /still-http"));
    // Plain HTTP for a TLS tunnel's name finds no HTTP tunnel.
    let r = web::get(
        server.http,
        &format!("secure.localhost:{}", server.http.port()),
        "/",
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_tls_tunnel_needs_an_https_listener() {
    let server = Server::start_with(&["--domain", "localhost"]);
    let url = server.url();
    let mut agent = common::Proc::spawn(&["tls", "9", "--server", &url, "--name", "nope"]);
    let error = agent.expect_event("error", Duration::from_secs(20));
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("--https-addr"), "{error}");
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(1));
}

#[tokio::test]
async fn websocket_upgrades_pass_over_https() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let HttpsTunnel {
        origin: _origin,
        server,
        https,
        agent,
    } = https_tunnel(&[], "live").await;
    // WebSocket upgrades are HTTP/1.1: the client offers only that by ALPN.
    let stream = tls_connect(https, sni_of(&agent.host), dev_client(&server, &[HTTP1]))
        .await
        .unwrap();
    let url = format!("wss://{}/ws", agent.host);
    let (mut ws, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..20 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back, Message::text(format!("ping {i}")));
    }
    let big = vec![3u8; 256 * 1024];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn https_viewers_count_against_max_viewer_connections() {
    let HttpsTunnel {
        origin: _origin,
        server,
        https,
        agent,
    } = https_tunnel(
        &[
            "--max-viewer-connections",
            "1",
            "--tls-handshake-timeout",
            "2",
        ],
        "busy",
    )
    .await;
    // A silent connection takes the only slot until the handshake timeout cuts it.
    let mut silent = TcpStream::connect(https).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let r = https_request(
        &dev_viewer(&server, &agent.host),
        &agent.host,
        "GET",
        "/after",
        &[],
        Bytes::new(),
    )
    .await;
    let waited = start.elapsed();
    assert_eq!((r.status, r.text().as_str()), (200, "hello /after"));
    assert!(
        waited >= Duration::from_millis(1200),
        "served after {waited:?}, before the silent viewer's slot was freed"
    );
    read_until_closed(&mut silent, Duration::from_secs(5)).await;
}
