//! The one-port agent listener: garbage and slow starts are dropped without holding
//! anyone up; certificate verification. The CONNECT proxy path is in `proxy.rs`.

mod common;

use std::time::{Duration, Instant};

use common::{connect, dial, listener};
use netbore_test_support::Pki;
use netbore_transport::tls::{ClientTls, TrustOptions};
use netbore_transport::{Sniffed, TransportError, TransportKind, sniff};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[test]
fn first_bytes_tell_transports_apart() {
    assert_eq!(sniff(0x16), Sniffed::Tls);
    assert_eq!(sniff(b'G'), Sniffed::Http);
    assert_eq!(sniff(netbore_mux::frame::VERSION), Sniffed::Mux);
    assert_eq!(sniff(b'P'), Sniffed::Unknown);
    assert_eq!(sniff(0xff), Sniffed::Unknown);
}

/// Waits until the Edge closes `s` (read returns 0 or an error); returns how long.
async fn closed_within(mut s: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the Edge closes the connection");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_closed_at_once_and_slow_starts_at_the_deadline_while_agents_connect() {
    let pki = Pki::new();
    let mut l = listener(&pki, Duration::from_millis(800)).await;
    let addr = l.local_addr().unwrap();

    // Garbage: closed at once.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(b"\xffNOT NETBORE\r\n").await.unwrap();
    let took = closed_within(garbage, Duration::from_secs(5)).await;
    assert!(took < Duration::from_millis(700), "garbage took {took:?}");

    // Slow starts: one byte of an HTTP request, half a TLS record, nothing at all.
    let mut slow = Vec::new();
    for start in [&b"G"[..], &[0x16, 0x03][..], &b""[..]] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(start).await.unwrap();
        slow.push(s);
    }
    // While they hang, every transport still connects.
    for kind in [
        TransportKind::Tcp,
        TransportKind::Tls,
        TransportKind::Ws,
        TransportKind::Wss,
    ] {
        let (client, _server) = connect(&mut l, &dial(&pki, kind, addr)).await;
        client.close(netbore_mux::GoAwayCode::NORMAL);
    }
    // And the slow ones are closed at the handshake deadline.
    for s in slow {
        closed_within(s, Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_websocket_path_gets_404() {
    let pki = Pki::new();
    let _l = listener(&pki, Duration::from_secs(5)).await;
    let addr = _l.local_addr().unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_cleanly_and_the_ca_file_fixes_it() {
    let pki = Pki::new();
    let mut l = listener(&pki, Duration::from_secs(10)).await;
    let addr = l.local_addr().unwrap();
    for kind in [TransportKind::Tls, TransportKind::Wss] {
        // System roots only: the test CA is unknown.
        let mut d = dial(&pki, kind, addr);
        d.tls = Some(ClientTls::new(&TrustOptions::default()).unwrap());
        let err = d.connect().await.unwrap_err();
        assert!(
            matches!(err, TransportError::UntrustedCertificate { .. }),
            "{kind}: {err:?}"
        );
        assert!(err.to_string().contains("--ca"), "{err}");

        // Another CA's file: still refused.
        let other = Pki::new();
        d.tls = Some(other.client());
        let err = d.connect().await.unwrap_err();
        assert!(
            matches!(err, TransportError::UntrustedCertificate { .. }),
            "{kind}: {err:?}"
        );

        // The right CA file: accepted.
        let (client, _server) = connect(&mut l, &dial(&pki, kind, addr)).await;
        client.close(netbore_mux::GoAwayCode::NORMAL);

        // Skipping verification: accepted too.
        let mut insecure = dial(&pki, kind, addr);
        insecure.tls = Some(
            ClientTls::new(&TrustOptions {
                extra_ca: None,
                insecure_skip_verify: true,
            })
            .unwrap(),
        );
        let (client, _server) = connect(&mut l, &insecure).await;
        client.close(netbore_mux::GoAwayCode::NORMAL);
    }
}
