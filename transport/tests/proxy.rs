//! Reaching the Edge through an HTTP CONNECT proxy on loopback: tunnels for every
//! TLS transport, refusals, Basic credentials (right, missing, wrong), and answers
//! that are not HTTP. The password must never show in what is printed.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{connect, dial, listener};
use netbore_test_support::{Pki, ProxyMode, read_all, send_pattern, start_proxy};
use netbore_transport::proxy::{BadAnswer, Proxy, ProxyError};
use netbore_transport::{TransportError, TransportKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `Aladdin:open sesame` in Basic, the example of RFC 7617.
const ALADDIN: &str = "QWxhZGRpbjpvcGVuIHNlc2FtZQ==";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_tls_work_through_a_connect_proxy() {
    let pki = Pki::new();
    let mut l = listener(&pki, Duration::from_secs(10)).await;
    let addr = l.local_addr().unwrap();
    let (proxy_addr, tunnels) = start_proxy(ProxyMode::Tunnel).await;
    for (i, kind) in [TransportKind::Wss, TransportKind::Tls]
        .into_iter()
        .enumerate()
    {
        let mut d = dial(&pki, kind, addr);
        d.proxy = Some(Proxy::parse(&format!("http://{proxy_addr}")).unwrap());
        let (client, server) = connect(&mut l, &d).await;
        assert_eq!(tunnels.load(std::sync::atomic::Ordering::SeqCst), i + 1);
        // The Edge sees the proxy as the peer; the bytes still arrive intact.
        let mut s = client.open().await.unwrap();
        let writer = tokio::spawn(async move {
            s.write_all(&vec![5u8; 1 << 20]).await.unwrap();
            s.shutdown().await.unwrap();
        });
        let mut peer = server.accept().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 1 << 20);
        assert!(got.iter().all(|b| *b == 5));
        writer.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_gives_one_clear_sentence() {
    let pki = Pki::new();
    let l = listener(&pki, Duration::from_secs(10)).await;
    let addr = l.local_addr().unwrap();
    let (proxy_addr, _) = start_proxy(ProxyMode::Forbid).await;
    let mut d = dial(&pki, TransportKind::Wss, addr);
    d.proxy = Some(Proxy::parse(&format!("http://{proxy_addr}")).unwrap());
    let err = d.connect().await.unwrap_err();
    assert!(
        matches!(err, TransportError::Proxy(ProxyError::Refused { .. })),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("403 Forbidden"), "{message}");
    assert!(message.contains(&d.addr), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_credentials_open_a_tunnel_that_moves_data_both_ways() {
    let pki = Pki::new();
    let mut l = listener(&pki, Duration::from_secs(10)).await;
    let addr = l.local_addr().unwrap();
    let (proxy_addr, tunnels) = start_proxy(ProxyMode::RequireBasic(ALADDIN)).await;
    let mut d = dial(&pki, TransportKind::Tcp, addr);
    // The space in the password comes percent-encoded, as a URL must carry it.
    d.proxy = Some(Proxy::parse(&format!("http://Aladdin:open%20sesame@{proxy_addr}")).unwrap());
    let (client, server) = connect(&mut l, &d).await;
    assert_eq!(tunnels.load(Ordering::SeqCst), 1);

    let moved = async {
        let (mut r, mut w) = tokio::io::split(client.open().await.unwrap());
        let up = tokio::spawn(async move { send_pattern(&mut w, 31, 1 << 20).await });
        let (mut peer_r, mut peer_w) = tokio::io::split(server.accept().await.unwrap());
        let down = tokio::spawn(async move { send_pattern(&mut peer_w, 37, 1 << 20).await });
        let at_edge = read_all(&mut peer_r).await;
        let at_agent = read_all(&mut r).await;
        assert_eq!(up.await.unwrap(), at_edge, "agent → Edge bytes differ");
        assert_eq!(down.await.unwrap(), at_agent, "Edge → agent bytes differ");
        assert_eq!(at_edge.len, 1 << 20);
    };
    tokio::time::timeout(Duration::from_secs(30), moved)
        .await
        .expect("1 MiB each way through the proxy within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_get_a_sentence_saying_where_to_put_them() {
    let (proxy_addr, tunnels) = start_proxy(ProxyMode::RequireBasic(ALADDIN)).await;
    let proxy = Proxy::parse(&format!("http://{proxy_addr}")).unwrap();
    let err = proxy.connect("localhost:9").await.unwrap_err();
    assert!(
        matches!(&err, ProxyError::CredentialsRequired { status, .. } if status == "407 Proxy Authentication Required"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("http://USER:PASSWORD@{proxy_addr}")),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(tunnels.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_rejected_without_showing_the_password() {
    let pki = Pki::new();
    let l = listener(&pki, Duration::from_secs(10)).await;
    let (proxy_addr, tunnels) = start_proxy(ProxyMode::RequireBasic(ALADDIN)).await;
    for user in ["Aladdin", "Ali%20Baba"] {
        let mut d = dial(&pki, TransportKind::Tcp, l.local_addr().unwrap());
        d.proxy =
            Some(Proxy::parse(&format!("http://{user}:cl0sed%20sesame@{proxy_addr}")).unwrap());
        let err = d.connect().await.unwrap_err();
        assert!(
            matches!(
                &err,
                TransportError::Proxy(ProxyError::CredentialsRejected { .. })
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("http://{user}:***@{proxy_addr}")),
            "{message}"
        );
        assert!(message.contains("407"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        for printed in [message, format!("{err:?}"), format!("{d:?}")] {
            assert!(!printed.contains("cl0sed"), "{printed}");
        }
    }
    assert_eq!(tunnels.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_no_http_proxy_is_refused_at_its_first_line() {
    // It sends a banner and waits: the agent must not wait with it.
    let (proxy_addr, _) = start_proxy(ProxyMode::Answer(b"SSH-2.0-OpenSSH_9.6\r\n")).await;
    let proxy = Proxy::parse(&format!("http://{proxy_addr}")).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), proxy.connect("localhost:9"))
        .await
        .expect("refused without waiting for more")
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProxyError::Malformed {
                detail: BadAnswer::NotHttp,
                ..
            }
        ),
        "{err:?}"
    );
}
