//! A real ACME directory for tests: Debian's `pebble` with `pebble-challtestsrv` as
//! its DNS (every name resolves to 127.0.0.1 unless a test says otherwise), on
//! loopback ports, with an HTTPS certificate made here by rcgen. Challenges are
//! really validated (no `PEBBLE_VA_ALWAYS_VALID`): pebble fetches HTTP-01 tokens from
//! the Edge's plain HTTP port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, free_port};

/// Whether pebble is installed (scripts/test.sh installs it).
pub fn installed() -> bool {
    Command::new("pebble")
        .arg("-h")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok()
}

/// A running pebble and its DNS; both killed on drop.
pub struct Pebble {
    pebble: Child,
    dns: Child,
    /// The directory URL (`--acme-directory`).
    pub directory: String,
    /// The CA of pebble's own HTTPS certificate (`--acme-ca`).
    pub ca_file: PathBuf,
    /// Pebble's management API (HTTPS, same certificate).
    pub management: SocketAddr,
    /// challtestsrv's management API (plain HTTP).
    dns_management: SocketAddr,
    dir: TempDir,
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` (the Edge's plain HTTP port),
    /// issuing certificates valid `validity` (pebble's default, five years, when
    /// `None`).
    pub fn start(http_port: u16, validity: Option<Duration>) -> Pebble {
        Self::start_with(http_port, free_port(), validity)
    }

    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`
    /// (the Edge's HTTPS port).
    pub fn start_with(http_port: u16, tls_port: u16, validity: Option<Duration>) -> Pebble {
        let dir = TempDir::new("pebble");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pebble test listener CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let ca_file = dir.0.join("listener-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(dir.0.join("listener.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.0.join("listener.key"), leaf_key.serialize_pem()).unwrap();

        let (listen, management) = (free_port(), free_port());
        let (dns_port, dns_management) = (free_udp_port(), free_port());
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.0.join("listener.pem"),
                "privateKey": dir.0.join("listener.key"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        if let Some(v) = validity {
            config["pebble"]["certificateValidityPeriod"] = v.as_secs().into();
        }
        let config_path = dir.0.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();

        let dns_log = dir.0.join("challtestsrv.log");
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(std::fs::File::create(&dns_log).unwrap())
            .stderr(std::fs::File::create(dir.0.join("challtestsrv.err")).unwrap())
            .spawn()
            .expect("pebble-challtestsrv runs (apt-get install pebble)");
        let pebble_log = dir.0.join("pebble.log");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // Validation happens at once, every nonce is good, and no authorization
            // is reused: every order is really validated.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(std::fs::File::create(&pebble_log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble runs (apt-get install pebble)");
        let pebble = Pebble {
            pebble,
            dns,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            ca_file,
            management: ([127, 0, 0, 1], management).into(),
            dns_management: ([127, 0, 0, 1], dns_management).into(),
            dir,
        };
        pebble.wait_for_log(&dns_log, "Starting management server");
        pebble.wait_for_log(&pebble_log, "ACME directory available");
        pebble
    }

    /// Waits for `line` in a log file (the processes say when they listen).
    fn wait_for_log(&self, log: &std::path::Path, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::fs::read_to_string(log).is_ok_and(|l| l.contains(line)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no {line:?} in {} within 20 s:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// pebble's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("pebble.log")).unwrap_or_default()
    }

    /// Makes the DNS answer `addr` for `host`, e.g. an address the Edge does not
    /// listen on, so that validation of the name fails.
    pub fn set_a(&self, host: &str, addr: &str) {
        let body = serde_json::json!({ "host": host, "addresses": [addr] }).to_string();
        let mut s = TcpStream::connect(self.dns_management).unwrap();
        write!(
            s,
            "POST /add-a HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
            "{reply}"
        );
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback UDP port nobody uses (challtestsrv's DNS listens on UDP and TCP).
fn free_udp_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
