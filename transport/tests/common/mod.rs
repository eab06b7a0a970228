//! Shared tooling of the transport tests: certificates made on the spot, a listener on
//! loopback port 0, a small HTTP CONNECT proxy, and byte patterns with checksums.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use netbore_transport::tls::{self, ClientTls, TrustOptions};
use netbore_transport::{Dial, Listener, ListenerConfig, Session, TransportKind};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A CA and a leaf for `localhost` and `127.0.0.1`, as PEM files in a fresh directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    pub fn new() -> Pki {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "netbore-transport-pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        std::fs::write(&pki.cert, leaf_cert.pem()).unwrap();
        std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
        pki
    }

    /// The Edge's configuration for this leaf.
    pub fn server(&self) -> Arc<tls::ServerConfig> {
        tls::server_config(
            tls::load_certs(&self.cert).unwrap(),
            tls::load_key(&self.key).unwrap(),
        )
        .unwrap()
    }

    /// An agent trusting this CA.
    pub fn client(&self) -> ClientTls {
        ClientTls::new(&TrustOptions {
            extra_ca: Some(self.ca.clone()),
            insecure_skip_verify: false,
        })
        .unwrap()
    }
}

/// A listener for every transport on loopback port 0.
pub async fn listener(pki: &Pki, handshake_timeout: Duration) -> Listener {
    Listener::bind(
        "127.0.0.1:0".parse().unwrap(),
        ListenerConfig {
            tls: Some(pki.server()),
            handshake_timeout,
            ..ListenerConfig::default()
        },
    )
    .await
    .unwrap()
}

/// How an agent dials `addr` with `kind`, trusting the test CA.
pub fn dial(pki: &Pki, kind: TransportKind, addr: SocketAddr) -> Dial {
    Dial {
        kind,
        addr: format!("localhost:{}", addr.port()),
        tls: Some(pki.client()),
        proxy: None,
        mux: Default::default(),
    }
}

/// Connects `dial` and takes the Edge's side of the session from `listener`. The mux
/// client speaks first only when it opens a stream, so the caller's first stream is
/// opened here too (and returned with a byte already written).
pub async fn connect(listener: &mut Listener, dial: &Dial) -> (Session, Session) {
    let client = dial.connect().await.unwrap();
    let server = tokio::time::timeout(Duration::from_secs(10), async {
        // A raw mux session reaches the listener with its first frame: open a stream
        // and write so the Edge sees it.
        let mut probe = client.open().await.unwrap();
        probe.write_all(b"p").await.unwrap();
        probe.flush().await.unwrap();
        let server = listener.accept().await.unwrap();
        let mut accepted = server.accept().await.unwrap();
        let mut b = [0u8; 1];
        accepted.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"p");
        server
    })
    .await
    .expect("the Edge sets the session up");
    assert_eq!(client.kind(), dial.kind);
    assert_eq!(server.kind(), dial.kind);
    (client, server)
}

/// A deterministic byte pattern (xorshift).
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// FNV-1a and length of a byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksum {
    pub hash: u64,
    pub len: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum {
            hash: 0xcbf29ce484222325,
            len: 0,
        }
    }
}

impl Checksum {
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(0x100000001b3);
        }
        self.len += data.len() as u64;
    }
}

/// Writes `total` pattern bytes, then half-closes; returns their checksum.
pub async fn send_pattern(w: &mut (impl AsyncWrite + Unpin), seed: u64, total: usize) -> Checksum {
    let mut pattern = Pattern::new(seed);
    let mut sum = Checksum::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        pattern.fill(&mut buf[..n]);
        sum.update(&buf[..n]);
        w.write_all(&buf[..n]).await.unwrap();
        left -= n;
    }
    w.shutdown().await.unwrap();
    sum
}

/// Reads to end of stream; returns the checksum.
pub async fn read_all(r: &mut (impl AsyncRead + Unpin)) -> Checksum {
    let mut sum = Checksum::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return sum;
        }
        sum.update(&buf[..n]);
    }
}

/// What the test proxy does with a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Opens the tunnel.
    Tunnel,
    /// Answers 403.
    Forbid,
    /// Opens the tunnel for a request with `Proxy-Authorization: Basic TOKEN`, this
    /// token exactly; answers 407 with a `Proxy-Authenticate` challenge otherwise.
    RequireBasic(&'static str),
    /// Answers with these bytes, then keeps the connection open without a word more.
    Answer(&'static [u8]),
}

/// The value of header `name` (any case) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A small HTTP CONNECT proxy on loopback; returns its address and a count of the
/// tunnels it opened.
pub async fn start_proxy(mode: ProxyMode) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let count = tunnels.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut b).await.unwrap_or(0) == 0 || head.len() > 8192 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let mut words = head.split_whitespace();
                assert_eq!(words.next(), Some("CONNECT"));
                let target = words.next().unwrap().to_string();
                match mode {
                    ProxyMode::Tunnel => {}
                    ProxyMode::Forbid => {
                        let _ = client
                            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                    ProxyMode::RequireBasic(token) => {
                        let given = header(&head, "proxy-authorization");
                        let ok =
                            given
                                .and_then(|v| v.split_once(' '))
                                .is_some_and(|(scheme, t)| {
                                    scheme.eq_ignore_ascii_case("basic") && t.trim() == token
                                });
                        if !ok {
                            let body = "credentials needed";
                            let answer = format!(
                                "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"netbore-test\"\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = client.write_all(answer.as_bytes()).await;
                            return;
                        }
                    }
                    ProxyMode::Answer(bytes) => {
                        let _ = client.write_all(bytes).await;
                        let mut sink = Vec::new();
                        let _ = client.read_to_end(&mut sink).await;
                        return;
                    }
                }
                let Ok(mut upstream) = TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, tunnels)
}
