//! Criterion benches of each transport on its own, over real loopback sockets: one
//! stream moving bulk data from the agent side to the Edge side through the real
//! [`Listener`] and [`Dial`] (TLS with a certificate made here). No relay hops, so the
//! figure is the transport's own ceiling on this machine.

#![allow(missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netbore_test_support::Pki;
use netbore_transport::tls::ClientTls;
use netbore_transport::{Dial, Listener, ListenerConfig, Session, TransportKind};
use tokio::io::AsyncWriteExt;

/// Bytes moved per iteration.
const BULK: usize = 64 * 1024 * 1024;
/// Size of each write.
const CHUNK: usize = 256 * 1024;

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
    let pki = Pki::new();
    let client_tls = pki.client();
    let mut listener = rt.block_on(async {
        Listener::bind(
            "127.0.0.1:0".parse().unwrap(),
            ListenerConfig {
                tls: Some(pki.server()),
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
}

criterion_group!(benches, transports);
criterion_main!(benches);
