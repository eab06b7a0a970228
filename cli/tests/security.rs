//! Attacks on the real binary that need no mux or HTTP parsing: what a tunnel may
//! bind, and who can read the files the server and agents write.

mod common;

use std::time::Duration;

use common::{Proc, Server, TempDir};
use serde_json::json;

/// With `--tcp-ports 0` a tunnel may not take a privileged port (a server run as root
/// could otherwise hand a stranger port 22 or 443) nor one of the server's own.
#[test]
fn any_port_never_means_a_privileged_or_a_server_port() {
    let server = Server::start();
    let own = [
        server.control.port(),
        server.agent.port(),
        server.http.port(),
    ];
    for port in [22, 80, 443, 1023].into_iter().chain(own) {
        let answer = server.api(
            "POST",
            "/tunnels/create",
            None,
            Some(&json!({"protocol": "tcp", "remote_port": port})),
        );
        let message = answer.assert_error(409, "port_not_allowed");
        assert!(message.contains(&port.to_string()), "{message}");
    }
    // Ports the OS hands out are unprivileged and not the server's (as many as an
    // anonymous address may create).
    for _ in 0..5 {
        let answer = server.api(
            "POST",
            "/tunnels/create",
            None,
            Some(&json!({"protocol": "tcp"})),
        );
        assert_eq!(answer.status, 200, "{answer:?}");
        let url = answer.body["public_url"].as_str().unwrap();
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        assert!(port >= 1024 && !own.contains(&port), "{url}");
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every directory and file under `dir` is its owner's only.
#[cfg(unix)]
fn assert_owner_only(dir: &std::path::Path) -> usize {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files += assert_owner_only(&path);
        } else {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            files += 1;
        }
    }
    files
}

/// Under a umask that lets everyone read (000), the server's data directory, its
/// database, keys, development CA and audit log, and an agent's recreate tokens are
/// still readable by their owner only.
#[cfg(unix)]
#[test]
fn secrets_are_owner_only_whatever_the_umask() {
    let root = TempDir::new("modes");
    let data = root.0.join("data");
    let audit = root.0.join("audit/audit.log");
    let state = root.0.join("state");
    let (data_s, audit_s, state_s) = (
        data.to_str().unwrap(),
        audit.to_str().unwrap(),
        state.to_str().unwrap(),
    );
    let server = Proc::spawn_with_umask(
        "000",
        &[
            "server",
            "--control-addr",
            "127.0.0.1:0",
            "--agent-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--https-addr",
            "127.0.0.1:0",
            "--tcp-ports",
            "0",
            "--tcp-bind-ip",
            "127.0.0.1",
            "--domain",
            "localhost",
            "--allow-anonymous",
            "--data-dir",
            data_s,
            "--audit-log",
            audit_s,
        ],
    );
    let listening = server.expect_event("listening", Duration::from_secs(20));
    let control = format!("http://{}", listening["control"].as_str().unwrap());
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = origin.local_addr().unwrap().to_string();
    let agent = Proc::spawn_with_umask(
        "000",
        &["tcp", &origin, "--server", &control, "--state-dir", state_s],
    );
    agent.expect_event("online", Duration::from_secs(20));

    let in_data = assert_owner_only(&data);
    assert!(in_data >= 3, "key, database and CA files: {in_data}");
    assert_owner_only(audit.parent().unwrap());
    assert!(audit.exists());
    assert_eq!(assert_owner_only(&state), 1, "one recreate token");
}

/// A hello is claimed whole or not at all: a bad or reused token among good ones
/// burns none of the good ones, which work in the next hello.
#[tokio::test]
async fn a_failed_hello_burns_none_of_its_good_tokens() {
    use common::hello::{create_token, hello};
    use netbore_transport::proto::{ErrorCode, HelloReply};

    let server = Server::start();
    let (a, b, used) = (
        create_token(&server).await,
        create_token(&server).await,
        create_token(&server).await,
    );
    let first = hello(&server, vec![used.clone()]).await;
    assert!(matches!(first, HelloReply::Ok { .. }), "{first:?}");

    let code = |reply: HelloReply| match reply {
        HelloReply::Error(body) => body.code,
        ok => panic!("accepted: {ok:?}"),
    };
    assert_eq!(
        code(hello(&server, vec![a.clone(), "not-a-jwt".into()]).await),
        ErrorCode::BadToken
    );
    assert_eq!(
        code(hello(&server, vec![a.clone(), b.clone(), used]).await),
        ErrorCode::TokenReused
    );
    assert_eq!(
        code(hello(&server, vec![a.clone(), a.clone()]).await),
        ErrorCode::TokenReused
    );
    match hello(&server, vec![a, b]).await {
        HelloReply::Ok { tunnels } => assert_eq!(tunnels.len(), 2),
        refused => panic!("the good tokens were burned: {refused:?}"),
    }
}

/// Names that would pass for the operator's services, or that clients look up and
/// trust on their own, are refused to tunnels and reservations; the operator sets the
/// list.
#[test]
fn denied_names_are_refused_and_the_list_is_the_operators() {
    let server = Server::start();
    for name in ["www", "WPAD", "autodiscover", "mta-sts"] {
        let answer = server.api(
            "POST",
            "/tunnels/create",
            None,
            Some(&json!({"protocol": "http", "name": name})),
        );
        let message = answer.assert_error(409, "name_taken");
        assert!(message.contains("reserved by this server"), "{message}");
    }
    let key = server.create_key("k");
    let answer = server.api("POST", "/names", Some(&key), Some(&json!({"name": "wpad"})));
    answer.assert_error(409, "name_taken");

    let custom = Server::start_with(&["--denied-names", "intranet"]);
    let answer = custom.api(
        "POST",
        "/tunnels/create",
        None,
        Some(&json!({"protocol": "http", "name": "intranet"})),
    );
    answer.assert_error(409, "name_taken");
    let answer = custom.api(
        "POST",
        "/tunnels/create",
        None,
        Some(&json!({"protocol": "http", "name": "www"})),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// A QUIC peer that has not said hello may open a few streams and have the Edge hold
/// a few KiB of its data, not `--max-streams` streams and the window of a busy session
/// (8,192 streams and about 2 GiB before).
#[tokio::test]
async fn a_quic_peer_before_its_hello_gets_few_streams_and_a_small_window() {
    use netbore_transport::tls::{ClientTls, TrustOptions};
    use tokio::io::AsyncWriteExt;

    let server = Server::start();
    let dial = netbore_transport::Dial {
        kind: netbore_transport::TransportKind::Quic,
        addr: format!("127.0.0.1:{}", server.agent.port()),
        tls: Some(
            ClientTls::new(&TrustOptions {
                extra_ca: Some(server.data_dir.0.join("ca.pem")),
                insecure_skip_verify: false,
            })
            .unwrap(),
        ),
        proxy: None,
        mux: Default::default(),
    };
    let session = dial.connect().await.unwrap();
    let mut streams = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(300), session.open()).await {
            Ok(Ok(stream)) => streams.push(stream),
            _ => break,
        }
    }
    assert!(
        (1..=4).contains(&streams.len()),
        "{} streams opened before a hello",
        streams.len()
    );
    // The Edge reads nothing before the hello; what it lets the peer send is what it
    // must hold.
    let chunk = vec![0u8; 16 * 1024];
    let mut sent = 0usize;
    for stream in &mut streams {
        while sent < 8 << 20 {
            match tokio::time::timeout(Duration::from_millis(300), stream.write(&chunk)).await {
                Ok(Ok(n)) if n > 0 => sent += n,
                _ => break,
            }
        }
    }
    assert!(
        sent <= 256 * 1024,
        "the Edge took {sent} bytes before a hello"
    );
}

/// An address of this machine that is not loopback, so a connection to it comes from
/// "another machine" as far as the server can tell.
fn non_loopback_ip() -> std::net::IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // No datagram is sent: connecting a UDP socket only picks the route's source.
    probe
        .connect("192.0.2.1:9")
        .or_else(|_| probe.connect("10.255.255.255:9"))
        .expect("this machine has a non-loopback IPv4 route for the test to use");
    let ip = probe.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

/// The control API answers plain HTTP only on loopback: a request from another
/// address is told to use HTTPS, and HTTPS works there with the server's CA.
#[test]
fn the_control_api_takes_plain_http_from_this_machine_only() {
    use std::io::{Read, Write};

    let server = Server::start_in(TempDir::new("data"), "0.0.0.0:0", "127.0.0.1:0", &[]);
    let port = server.control.port();
    let ask = |ip: std::net::IpAddr| {
        let mut s = std::net::TcpStream::connect((ip, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let body = r#"{"protocol":"tcp"}"#;
        write!(
            s,
            "POST /tunnels/create HTTP/1.1\r\nhost: x\r\nauthorization: Bearer nbk_x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    let remote = ask(non_loopback_ip());
    assert!(remote.starts_with("HTTP/1.1 400"), "{remote}");
    assert!(remote.contains("https://"), "{remote}");
    let local = ask("127.0.0.1".parse().unwrap());
    assert!(
        local.starts_with("HTTP/1.1 401"),
        "the API itself answered: {local}"
    );
}

/// An agent trusts a server's development CA with no file copied: pinned on first
/// use over HTTPS, accepted again on the next run, and a server showing another CA
/// at the same address is refused with both fingerprints named.
#[test]
fn an_agent_pins_the_servers_ca_on_first_use_and_refuses_a_changed_one() {
    let control = format!("127.0.0.1:{}", common::free_port());
    let url = format!("https://localhost:{}", control.rsplit(':').next().unwrap());
    let state = TempDir::new("pins");
    let state_s = state.0.to_str().unwrap().to_string();
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = origin.local_addr().unwrap().to_string();
    let agent = |extra: &[&str]| {
        let mut args = vec!["tcp", &origin, "--server", &url, "--state-dir", &state_s];
        args.extend_from_slice(extra);
        Proc::spawn(&args)
    };

    let first = Server::start_in(
        TempDir::new("data"),
        &control,
        "127.0.0.1:0",
        &["--domain", "localhost"],
    );
    let fingerprint = {
        let a = agent(&[]);
        let pinned = a.expect_event("ca_pinned", Duration::from_secs(20));
        a.expect_event("online", Duration::from_secs(20));
        pinned["fingerprint"].as_str().unwrap().to_string()
    };
    let again = agent(&[]);
    let online = again.expect_event("online", Duration::from_secs(20));
    assert!(online["public_url"].is_string());
    drop(again);
    drop(first);

    // Another server (another CA) at the same address.
    let second = Server::start_in(
        TempDir::new("data"),
        &control,
        "127.0.0.1:0",
        &["--domain", "localhost"],
    );
    let mut refused = agent(&[]);
    let error = refused.expect_event("error", Duration::from_secs(20));
    assert_eq!(error["code"], "untrusted_certificate");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(&fingerprint), "{message}");
    assert_eq!(refused.wait_exit(Duration::from_secs(5)), Some(1));

    // Its fingerprint, given by hand, is trusted.
    let new_fingerprint = second.listening["ca_fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains(&new_fingerprint), "{message}");
    let pinned = agent(&["--ca-fingerprint", &new_fingerprint]);
    pinned.expect_event("online", Duration::from_secs(20));
    let mut wrong = agent(&["--ca-fingerprint", &fingerprint]);
    let error = wrong.expect_event("error", Duration::from_secs(20));
    assert_eq!(error["code"], "untrusted_certificate");
    assert_eq!(wrong.wait_exit(Duration::from_secs(5)), Some(1));
}

/// Agent sessions that never say hello are capped per address: past 16, the next ones
/// are told to go at once instead of holding a task and buffers for the hello timeout.
#[tokio::test]
async fn sessions_that_never_say_hello_are_capped_per_address() {
    use tokio::io::AsyncWriteExt;

    let server = Server::start();
    let mut silent = Vec::new();
    for _ in 0..20 {
        let session = netbore_transport::tcp::connect(server.agent, Default::default())
            .await
            .unwrap();
        // A byte on a stream makes the listener hand the session to the Edge.
        let mut stream = session.open().await.unwrap();
        stream.write_all(b"x").await.unwrap();
        stream.flush().await.unwrap();
        silent.push((session, stream));
    }
    // The Edge takes them in whatever order their set-up finishes: any 4 are closed,
    // well before the 10 s hello timeout, and 16 wait for their hello.
    let started = std::time::Instant::now();
    let closed = || silent.iter().filter(|(s, _)| s.is_closed()).count();
    while closed() < 4 && started.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(closed(), 4, "after {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(closed(), 4, "the other 16 wait for their hello");
    drop(silent);
    // Their slots come back once they are gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = origin.local_addr().unwrap().to_string();
    let agent = tokio::task::spawn_blocking(move || {
        common::Agent::start(&server, &origin, &["--transport", "tcp"]);
    });
    agent.await.unwrap();
}
