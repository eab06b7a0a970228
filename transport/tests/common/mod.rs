//! Shared tooling of the transport tests: a listener on loopback port 0 and a session
//! set up over it. Certificates, byte patterns and the CONNECT proxy come from
//! `netbore-test-support`.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use netbore_test_support::Pki;
use netbore_transport::{Dial, Listener, ListenerConfig, Session, TransportKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        // As the Edge does once a fleet link's hello is accepted: these tests use
        // the session as a plain transport, streams both ways.
        server.hello_accepted();
        server.set_accept_backlog(1024);
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
