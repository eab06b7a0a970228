//! Tests of the upstream client: hyper's interim-response cap and which requests
//! are sent twice.

use super::*;
use http_body_util::Full;

fn request(method: &str, body: &'static str) -> Request<Full<Bytes>> {
    let mut r = Request::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.method_mut() = method.parse().unwrap();
    *r.uri_mut() = "/path?q=1".parse().unwrap();
    r.headers_mut()
        .insert("x-forwarded-for", "192.0.2.1".parse().unwrap());
    r
}

/// Hyper's client, capped, on one end of an in-memory connection whose other end
/// answers the `n`-th request head with `answers[n]` and then stays open.
async fn capped_client(answers: Vec<Vec<u8>>) -> Upstream {
    use tokio::io::AsyncReadExt;
    let (client, mut origin) = tokio::io::duplex(1 << 20);
    let interim = Arc::new(InterimCap::default());
    let io = Capped {
        io: client,
        interim: interim.clone(),
    };
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(connection);
    tokio::spawn(async move {
        let mut received = Vec::new();
        for answer in answers {
            while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut buf = [0u8; 1024];
                match origin.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
            received.clear();
            if origin.write_all(&answer).await.is_err() {
                return;
            }
        }
        // Open until the client drops the connection.
        let _ = origin.read_to_end(&mut received).await;
    });
    Upstream { sender, interim }
}

/// `n` interim responses, then `last`.
fn interim_then(n: usize, last: &str) -> Vec<u8> {
    [
        b"HTTP/1.1 100 Continue\r\n\r\n".repeat(n),
        last.as_bytes().to_vec(),
    ]
    .concat()
}

/// Sends a request on `upstream` as [`HttpTunnel::exchange`] does.
async fn send(upstream: &mut Upstream) -> Result<hyper::StatusCode, UpstreamError> {
    let mut request = Request::new(Either::Right(Empty::new()));
    *request.method_mut() = hyper::Method::POST;
    let sent = tokio::time::timeout(Duration::from_secs(5), upstream.try_send(request))
        .await
        .expect("the request ends without waiting for the origin");
    upstream.check_interim()?;
    Ok(sent
        .map_err(|e| UpstreamError::broken(e.into_error().into()))?
        .status())
}

#[tokio::test]
async fn hyper_s_client_takes_interim_responses_up_to_the_cap_a_request() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let at_cap = interim_then(h1::MAX_INTERIM, ok);
    let mut upstream = capped_client(vec![at_cap.clone(), at_cap]).await;
    // The count is a request's: two requests at the cap on one connection pass.
    for _ in 0..2 {
        assert_eq!(send(&mut upstream).await.unwrap(), 200);
    }
}

#[tokio::test]
async fn hyper_s_client_gives_up_a_request_past_the_interim_cap() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    // The final response arrives with the interim ones, or never: a 502 either way.
    for answer in [
        interim_then(h1::MAX_INTERIM + 1, ok),
        interim_then(1000, ""),
    ] {
        let mut upstream = capped_client(vec![answer]).await;
        let e = send(&mut upstream).await.unwrap_err();
        assert!(
            matches!(&e, UpstreamError::Broken(b) if matches!(b.downcast_ref(), Some(h1::H1Error::TooManyInterim))),
            "{e:?}"
        );
        // The connection is given up.
        tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| upstream.sender.poll_ready(cx)),
        )
        .await
        .expect("the connection closes")
        .unwrap_err();
    }
}

#[test]
fn only_bodiless_idempotent_requests_are_sent_twice() {
    for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
        let again = Repeatable::of(&request(method, ""))
            .expect(method)
            .request();
        assert_eq!(again.method().as_str(), method);
        assert_eq!(again.uri(), "/path?q=1");
        assert_eq!(again.headers()["x-forwarded-for"], "192.0.2.1");
        assert!(again.body().is_end_stream());
    }
    for method in ["POST", "PATCH", "CONNECT"] {
        assert!(Repeatable::of(&request(method, "")).is_none(), "{method}");
    }
    // A body could not be sent again: it has been read once already.
    assert!(Repeatable::of(&request("PUT", "data")).is_none());
    assert!(Repeatable::of(&request("GET", "data")).is_none());
}

/// A tunnel reached over a link (an in-memory session) whose holder answers every
/// stream with [`OriginStatus::NotHeld`], as a node that no longer serves the
/// tunnel does, after reading the request.
fn via_a_node_that_let_it_go() -> Arc<HttpTunnel> {
    use netbore_transport::proto::OriginStatus;
    use netbore_transport::{TransportKind, mux_session};
    use tokio::io::AsyncReadExt;
    let (near, far) = tokio::io::duplex(1 << 16);
    let peer: SocketAddr = "127.0.0.1:7835".parse().unwrap();
    let link = mux_session::spawn(
        near,
        netbore_mux::Role::Client,
        Default::default(),
        peer,
        TransportKind::Tcp,
    );
    let holder = mux_session::spawn(
        far,
        netbore_mux::Role::Server,
        Default::default(),
        peer,
        TransportKind::Tcp,
    );
    tokio::spawn(async move {
        while let Some(mut stream) = holder.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut buf = [0u8; 1024];
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => received.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(&OriginStatus::NotHeld.encode()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let preamble = netbore_transport::link::LinkRoute("http:app".into())
        .encode()
        .unwrap();
    Arc::new(HttpTunnel::via_link(
        "tun_test".into(),
        "app".into(),
        link,
        peer,
        UpstreamConfig::default(),
        preamble,
    ))
}

fn resend_of(method: &str, safe: bool) -> Resend {
    Resend {
        head: Bytes::from(format!("{method} / HTTP/1.1\r\nhost: app\r\n\r\n")),
        head_request: false,
        safe,
        sent: tokio::time::Instant::now(),
    }
}

#[tokio::test]
async fn a_request_a_node_answers_not_held_may_go_to_another_holder_whatever_its_method() {
    let tunnel = via_a_node_that_let_it_go();
    let viewer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    for (method, safe) in [("GET", true), ("DELETE", false)] {
        let sent = tokio::time::timeout(
            Duration::from_secs(5),
            tunnel.resend(resend_of(method, safe), viewer),
        )
        .await
        .expect("the answer comes at once");
        assert!(
            matches!(sent, Err(UpstreamError::LinkLost(ref r)) if r.safe == safe),
            "{method}: {sent:?}"
        );
    }
    // The link itself lives on.
    assert!(!tunnel.is_offline());
}
