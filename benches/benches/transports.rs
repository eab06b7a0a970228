//! Criterion benches of each transport on its own, over real loopback sockets: one
//! stream moving bulk data from the agent side to the Edge side through the real
//! [`Listener`] and [`Dial`] (TLS with a certificate made here). No relay hops, so the
//! figure is the transport's own ceiling on this machine.

#![allow(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netbore_transport::tls::{self, ClientTls, TrustOptions};
use netbore_transport::{Dial, Listener, ListenerConfig, Session, TransportKind};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::AsyncWriteExt;

/// Bytes moved per iteration.
const BULK: usize = 64 * 1024 * 1024;
/// Size of each write.
const CHUNK: usize = 256 * 1024;

/// A CA and a leaf for `localhost`, written to a fresh directory.
fn pki() -> (Arc<tls::ServerConfig>, ClientTls, PathBuf) {
    let dir = std::env::temp_dir().join(format!("netbore-bench-pki-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["localhost".into()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    std::fs::write(&cert_path, leaf_cert.pem()).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    let server = tls::server_config(
        tls::load_certs(&cert_path).unwrap(),
        tls::load_key(&key_path).unwrap(),
    )
    .unwrap();
    let client = ClientTls::new(&TrustOptions {
        extra_ca: Some(ca_path),
        insecure_skip_verify: false,
    })
    .unwrap();
    (server, client, dir)
}

/// Dials `kind` and returns both ends of the session, with the first stream open.
async fn pair(
    listener: &mut Listener,
    client_tls: &ClientTls,
    kind: TransportKind,
) -> (Session, Session) {
    let port = listener.local_addr().unwrap().port();
    let dial = Dial {
        kind,
        addr: format!("localhost:{port}"),
        tls: Some(client_tls.clone()),
        proxy: None,
        mux: Default::default(),
    };
    let client = dial.connect().await.unwrap();
    // A mux session shows itself to the listener with its first frame.
    let mut probe = client.open().await.unwrap();
    probe.write_all(b"p").await.unwrap();
    let server = listener.accept().await.unwrap();
    let mut accepted = server.accept().await.unwrap();
    let mut b = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut accepted, &mut b)
        .await
        .unwrap();
    (client, server)
}

/// Moves [`BULK`] bytes over one new stream from `client` to `server`.
async fn bulk(client: &Session, server: &Session, chunk: &Bytes) {
    let mut s = client.open().await.unwrap();
    let send = async move {
        let mut left = BULK;
        while left > 0 {
            let mut piece = chunk.slice(..left.min(chunk.len()));
            while !piece.is_empty() {
                let n = std::future::poll_fn(|cx| s.poll_write_bytes(cx, &piece))
                    .await
                    .unwrap();
                let _ = piece.split_to(n);
            }
            left -= left.min(chunk.len());
        }
        s.shutdown().await.unwrap();
        s
    };
    let receive = async {
        let mut r = server.accept().await.unwrap();
        let mut got = 0;
        while let Some(c) = std::future::poll_fn(|cx| r.poll_read_chunk(cx))
            .await
            .unwrap()
        {
            got += c.len();
        }
        assert_eq!(got, BULK);
    };
    let (_s, ()) = tokio::join!(send, receive);
}

fn transports(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server_tls, client_tls, dir) = pki();
    let mut listener = rt.block_on(async {
        Listener::bind(
            "127.0.0.1:0".parse().unwrap(),
            ListenerConfig {
                tls: Some(server_tls),
                ..ListenerConfig::default()
            },
        )
        .await
        .unwrap()
    });
    let chunk = Bytes::from(vec![0x5au8; CHUNK]);
    let mut g = c.benchmark_group("transport_bulk_one_stream");
    g.throughput(Throughput::Bytes(BULK as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for kind in [
        TransportKind::Tcp,
        TransportKind::Tls,
        TransportKind::Wss,
        TransportKind::Quic,
    ] {
        let (client, server) = rt.block_on(pair(&mut listener, &client_tls, kind));
        g.bench_function(kind.as_str(), |b| {
            b.to_async(&rt).iter(|| bulk(&client, &server, &chunk))
        });
        client.close(netbore_mux::GoAwayCode::NORMAL);
    }
    g.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, transports);
criterion_main!(benches);
