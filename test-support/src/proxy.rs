//! A small HTTP CONNECT proxy on loopback, told how to answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the test proxy does with a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Opens the tunnel.
    Tunnel,
    /// Answers 403.
    Forbid,
    /// Tunnels for `Proxy-Authorization: Basic TOKEN` (this token); 407 and a challenge else.
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

/// Starts a CONNECT proxy on loopback; returns its address and how many tunnels it opened.
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
