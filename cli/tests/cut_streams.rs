//! Nothing lost: a viewer whose stream is cut by a failure (the agent killed mid-
//! download) is told so (a TCP reset, an HTTP body that ends in an error), never
//! handed a clean end as if the data were complete.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::web;
use common::{HttpAgent, Server};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads `socket` until it ends: `Ok(bytes)` at a clean end, the error otherwise.
async fn read_to_end(socket: &mut tokio::net::TcpStream) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match socket.read(&mut buf).await? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_viewer_cut_by_a_dead_agent_gets_a_reset_not_an_end() {
    let origin = web::start_origin().await;
    let server = Server::start();
    let mut agent =
        common::Agent::start(&server, &origin.addr.to_string(), &["--transport", "tcp"]);
    let mut viewer = tokio::net::TcpStream::connect(agent.public).await.unwrap();
    viewer
        .write_all(b"GET /bytes/1099511627776 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 256 * 1024];
    viewer.read_exact(&mut first).await.unwrap();
    agent.proc.kill();
    let ended = tokio::time::timeout(Duration::from_secs(10), read_to_end(&mut viewer))
        .await
        .expect("the viewer hears of the cut within 10 s");
    match ended {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!(
            "the cut stream ended cleanly after {n} more bytes, as if complete; server:\n{}",
            server.proc.stderr()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_response_cut_by_a_dead_agent_ends_in_an_error() {
    let origin = web::start_origin().await;
    let server = Server::start_with(&["--domain", "localhost"]);
    let mut agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--transport", "tcp"]);
    let addr: SocketAddr = server.http;
    let mut sender = web::connect_http1(addr).await;
    let request = hyper::Request::get("/bytes/1099511627776")
        .header("host", &agent.host)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut got = 0u64;
    while got < 256 * 1024 {
        let frame = body.frame().await.unwrap().unwrap();
        got += frame.into_data().map_or(0, |d| d.len() as u64);
    }
    agent.proc.kill();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match body.frame().await {
                None => return Ok(got),
                Some(Ok(frame)) => got += frame.into_data().map_or(0, |d| d.len() as u64),
                Some(Err(e)) => return Err(e),
            }
        }
    })
    .await
    .expect("the viewer hears of the cut within 10 s");
    assert!(
        ended.is_err(),
        "the cut body ended cleanly after {got} bytes, as if complete"
    );
}
