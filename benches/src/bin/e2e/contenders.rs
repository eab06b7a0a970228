//! The relays under test: Netbore's servers and agents over each transport, bore and rathole.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::load::Figure;
use crate::procs::{Proc, cpu_seconds, free_port, spawn_quiet, wait_ready};

pub(crate) struct Contender {
    pub(crate) name: String,
    pub(crate) procs: Vec<Proc>,
    pub(crate) public: SocketAddr,
    /// The control API, for netbore contenders.
    pub(crate) control: Option<String>,
    /// The `Host` an HTTP tunnel answers to; `None` for TCP tunnels.
    pub(crate) http_host: Option<String>,
    /// The agent's inspector (`host:port`), when it runs one.
    pub(crate) inspector: Option<String>,
}

impl Contender {
    /// Netbore's own contenders (compared against the best peer).
    pub(crate) fn is_netbore(&self) -> bool {
        self.name.contains("netbore")
    }

    /// HTTP tunnels carry only the HTTP figures.
    pub(crate) fn serves(&self, f: Figure) -> bool {
        self.http_host.is_none() || matches!(f, Figure::Http { .. })
    }

    pub(crate) fn host(&self) -> &str {
        self.http_host.as_deref().unwrap_or("bench")
    }

    pub(crate) fn cpu(&self) -> f64 {
        self.procs.iter().map(|p| cpu_seconds(p.0.id())).sum()
    }

    /// Resident memory of (server, agent) in KiB.
    pub(crate) fn rss_kib(&self) -> (u64, u64) {
        (
            status_kib(&self.procs[0], "VmRSS:"),
            status_kib(&self.procs[1], "VmRSS:"),
        )
    }

    /// The highest RSS (KiB) the server and the agent have had so far.
    pub(crate) fn peak_rss_kib(&self) -> (u64, u64) {
        (
            status_kib(&self.procs[0], "VmHWM:"),
            status_kib(&self.procs[1], "VmHWM:"),
        )
    }
}

/// A size field (KiB) of a process's `/proc/PID/status`, 0 when unreadable.
fn status_kib(p: &Proc, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", p.0.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Opens `n` connections through `public` that stay idle (the origin waits for data).
/// Stops early when a relay refuses more; the caller divides by what was opened.
pub(crate) async fn idle_viewers(public: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(public).await else {
            break;
        };
        if s.write_all(b"U").await.is_err() {
            break;
        }
        out.push(s);
    }
    // Let every stream reach the origin.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    out
}

/// Starts `netbore server` from `bin` on loopback (every port chosen by the OS) for
/// `domain`; returns it and its `listening` event.
/// Flags that lift the Edge's per-client, per-tunnel and anonymous caps, for a binary
/// that has them (a `--baseline` built before they existed has not): the harness is
/// one client on one address opening thousands of connections through one tunnel.
pub(crate) const LIFTED_CAPS: &[&str] = &[
    "--max-viewer-connections",
    "100000",
    "--max-viewer-connections-per-ip",
    "100000",
    "--max-viewer-streams-per-ip",
    "100000",
    "--max-streams-per-tunnel",
    "100000",
    "--max-anonymous-tunnels",
    "100000",
];

/// The caps of [`LIFTED_CAPS`] that `bin server` accepts.
pub(crate) fn lifted_caps(bin: &std::path::Path) -> Vec<&'static str> {
    let help = Command::new(bin)
        .args(["server", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    LIFTED_CAPS
        .chunks(2)
        .filter(|flag| {
            help.contains(&format!("{} ", flag[0])) || help.contains(&format!("{}\n", flag[0]))
        })
        .flatten()
        .copied()
        .collect()
}

pub(crate) fn netbore_server(
    bin: &std::path::Path,
    domain: &str,
    data: &str,
) -> (Proc, serde_json::Value) {
    netbore_server_with(bin, domain, data, &[])
}

/// [`netbore_server`] with `extra` flags.
pub(crate) fn netbore_server_with(
    bin: &std::path::Path,
    domain: &str,
    data: &str,
    extra: &[&str],
) -> (Proc, serde_json::Value) {
    let caps = lifted_caps(bin);
    let server = Proc::spawn(
        bin,
        &[
            "server",
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
            "--domain",
            domain,
            "--allow-anonymous",
            // The memory table brings 1,000 tunnels online from one address at once.
            "--max-tunnels-per-anonymous-ip",
            "5000",
            "--api-rate",
            "100000",
            "--api-burst",
            "100000",
            "--data-dir",
            data,
        ]
        .into_iter()
        .chain(caps.iter().copied())
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    let listening = server.wait_for("listening");
    (server, listening)
}

/// Starts `netbore server` and `netbore tcp` from `bin` in front of `origin`.
pub(crate) fn netbore(
    name: &str,
    bin: &std::path::Path,
    origin: SocketAddr,
    data: &str,
) -> Contender {
    netbore_over(name, bin, origin, data, None)
}

/// Like [`netbore`], with the agent on `transport` (trusting the server's development
/// CA), or the default transport when `None`.
pub(crate) fn netbore_over(
    name: &str,
    bin: &std::path::Path,
    origin: SocketAddr,
    data: &str,
    transport: Option<&str>,
) -> Contender {
    let (server, listening) = netbore_server(bin, "127.0.0.1", data);
    let url = format!("http://{}", listening["control"].as_str().unwrap());
    let state = format!("{data}/agent-state");
    let ca = format!("{data}/ca.pem");
    let origin = origin.to_string();
    let mut args = vec!["tcp", &origin, "--server", &url, "--state-dir", &state];
    if let Some(t) = transport {
        args.extend_from_slice(&["--transport", t, "--ca", &ca]);
    }
    let agent = Proc::spawn(bin, &args);
    let online = agent.wait_for("online");
    let public = online["public_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("tcp://")
        .parse()
        .unwrap();
    Contender {
        name: name.into(),
        procs: vec![server, agent],
        public,
        control: Some(url),
        http_host: None,
        inspector: None,
    }
}

/// Starts `netbore server` and `netbore http` from `bin` in front of `origin`: the
/// Edge parses every request and routes it by host name.
pub(crate) fn netbore_http(
    name: &str,
    bin: &std::path::Path,
    origin: SocketAddr,
    data: &str,
) -> Contender {
    netbore_http_with(name, bin, origin, data, &[])
}

/// [`netbore_http`] with `extra` flags for the agent.
pub(crate) fn netbore_http_with(
    name: &str,
    bin: &std::path::Path,
    origin: SocketAddr,
    data: &str,
    extra: &[&str],
) -> Contender {
    let (server, listening) = netbore_server(bin, "localhost", data);
    let control = listening["control"].as_str().unwrap().to_string();
    let public = listening["http"].as_str().unwrap().parse().unwrap();
    let url = format!("http://{control}");
    let state = format!("{data}/agent-state");
    let origin = origin.to_string();
    let mut args = vec!["http", &origin, "--server", &url, "--state-dir", &state];
    args.extend_from_slice(extra);
    let agent = Proc::spawn(bin, &args);
    let online = agent.wait_for("online");
    let host = online["public_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    Contender {
        name: name.into(),
        procs: vec![server, agent],
        public,
        control: None,
        http_host: Some(host),
        inspector: online["inspector"]
            .as_str()
            .map(|url| url.trim_start_matches("http://").to_string()),
    }
}

/// Brings `n` TCP tunnels online on a netbore server through sessions of up to 60
/// tunnels each, and returns the sessions and their hello streams (the tunnels stay
/// up while they live).
pub(crate) async fn open_tunnels(
    control: &str,
    n: usize,
) -> Vec<(netbore_transport::Session, netbore_transport::Stream)> {
    use netbore_transport::proto::{self, Hello, HelloReply, PROTOCOL_VERSION};
    let url: netbore_agent::ControlUrl = control.parse().unwrap();
    let request = netbore_control::api::CreateTunnelRequest::tcp(None);
    let mut sessions = Vec::new();
    let mut left = n;
    while left > 0 {
        let batch = left.min(60);
        let mut tokens = Vec::with_capacity(batch);
        let mut edge = String::new();
        for _ in 0..batch {
            let created =
                netbore_agent::control_client::create_tunnel(&url, None, false, None, &request)
                    .await
                    .unwrap();
            edge = created.edges[0].addr.clone();
            tokens.push(created.ephemeral_token);
        }
        let session = netbore_transport::tcp::connect(edge.as_str(), Default::default())
            .await
            .unwrap();
        let mut stream = session.open().await.unwrap();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            tokens,
            agent: "e2e".into(),
            link: None,
        };
        proto::write_message(&mut stream, &hello).await.unwrap();
        let reply: HelloReply = proto::read_message(&mut stream).await.unwrap();
        assert!(matches!(reply, HelloReply::Ok { .. }), "{reply:?}");
        sessions.push((session, stream));
        left -= batch;
    }
    sessions
}

/// bore (`bore server` + `bore local`), when `bore` is on the PATH.
pub(crate) async fn bore(origin: SocketAddr) -> Option<Contender> {
    let port = free_port();
    let server = spawn_quiet(
        "bore",
        &["server", "--bind-addr", "127.0.0.1", "--min-port", "1024"],
    )?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = spawn_quiet(
        "bore",
        &[
            "local",
            &origin.port().to_string(),
            "--local-host",
            "127.0.0.1",
            "--to",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ],
    )?;
    let public: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(public).await.then(|| Contender {
        name: "bore".into(),
        procs: vec![server, client],
        public,
        control: None,
        http_host: None,
        inspector: None,
    })
}

/// rathole with the given transport (`tcp`, `websocket`, `websocket-tls` (websocket
/// over TLS, the counterpart of Netbore's wss), or `noise`, its encrypted one), when
/// `rathole` is on the PATH.
pub(crate) async fn rathole(
    origin: SocketAddr,
    transport: &str,
    dir: &std::path::Path,
) -> Option<Contender> {
    let (ctrl, port) = (free_port(), free_port());
    std::fs::create_dir_all(dir).ok()?;
    let kind = transport.trim_end_matches("-tls");
    let (server_extra, client_extra) = match transport {
        "websocket-tls" => {
            let (pfx, ca) = rathole_identity(dir)?;
            (
                format!(
                    "\n[server.transport.websocket]\ntls = true\n[server.transport.tls]\npkcs12 = \"{pfx}\"\npkcs12_password = \"bench\"\n"
                ),
                format!(
                    "\n[client.transport.websocket]\ntls = true\n[client.transport.tls]\ntrusted_root = \"{ca}\"\nhostname = \"localhost\"\n"
                ),
            )
        }
        "websocket" => (
            "\n[server.transport.websocket]\ntls = false\n".to_string(),
            "\n[client.transport.websocket]\ntls = false\n".to_string(),
        ),
        "noise" => {
            let (private, public) = rathole_keypair()?;
            (
                format!("\n[server.transport.noise]\nlocal_private_key = \"{private}\"\n"),
                format!("\n[client.transport.noise]\nremote_public_key = \"{public}\"\n"),
            )
        }
        _ => (String::new(), String::new()),
    };
    let server = format!(
        "[server]\nbind_addr = \"127.0.0.1:{ctrl}\"\n[server.transport]\ntype = \"{kind}\"\n{server_extra}\n[server.services.bench]\ntoken = \"bench\"\nbind_addr = \"127.0.0.1:{port}\"\n"
    );
    let client = format!(
        "[client]\nremote_addr = \"127.0.0.1:{ctrl}\"\n[client.transport]\ntype = \"{kind}\"\n{client_extra}\n[client.services.bench]\ntoken = \"bench\"\nlocal_addr = \"{origin}\"\n"
    );
    let (sp, cp) = (
        dir.join(format!("server-{transport}.toml")),
        dir.join(format!("client-{transport}.toml")),
    );
    std::fs::write(&sp, server).ok()?;
    std::fs::write(&cp, client).ok()?;
    let server = spawn_quiet("rathole", &["--server", sp.to_str()?])?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = spawn_quiet("rathole", &["--client", cp.to_str()?])?;
    let public: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(public).await.then(|| Contender {
        name: format!("rathole {transport}"),
        procs: vec![server, client],
        public,
        control: None,
        http_host: None,
        inspector: None,
    })
}

/// A TLS identity for rathole's websocket-over-TLS server, made with the `openssl`
/// command: a self-signed certificate for `localhost` (which the client trusts) and
/// its PKCS#12 bundle, as file paths.
pub(crate) fn rathole_identity(dir: &std::path::Path) -> Option<(String, String)> {
    let (key, cert, pfx) = (
        dir.join("rathole-key.pem"),
        dir.join("rathole-cert.pem"),
        dir.join("rathole-identity.pfx"),
    );
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let (key, cert, pfx) = (key.to_str()?, cert.to_str()?, pfx.to_str()?);
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
    ]) && openssl(&[
        "pkcs12",
        "-export",
        "-passout",
        "pass:bench",
        "-inkey",
        key,
        "-in",
        cert,
        "-out",
        pfx,
    ]);
    made.then(|| (pfx.to_string(), cert.to_string()))
}

/// A noise key pair from `rathole --genkey`: (private, public), base64.
pub(crate) fn rathole_keypair() -> Option<(String, String)> {
    let out = std::process::Command::new("rathole")
        .arg("--genkey")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.ends_with(':'));
    Some((keys.next()?.to_string(), keys.next()?.to_string()))
}

/// The sequence number of the newest request the inspector at `at` (`host:port`)
/// holds (0 when none; `None` when its API did not answer): it answers once the
/// capture has read everything sent before the call.
pub(crate) async fn newest_capture(at: &str) -> Option<u64> {
    use tokio::io::AsyncReadExt;
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(at).await.ok()?;
        let request = format!(
            "GET /api/requests/http?summary=1&limit=1 HTTP/1.1\r\nhost: {at}\r\nconnection: close\r\n\r\n"
        );
        s.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer);
        if !text.starts_with("HTTP/1.1 200") {
            return None;
        }
        // An empty history has no newest record.
        let Some((_, rest)) = text.split_once("\"id\":\"r_") else {
            return Some(0);
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .ok()
        .flatten()
}
