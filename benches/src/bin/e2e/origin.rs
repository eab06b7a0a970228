//! The harness's origin and the client side of its HTTP: reading heads and responses.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) const BUF: usize = 256 * 1024;

/// Origin: 'U' = read and discard until EOF; 'D' = write until the peer goes;
/// 'G' = an HTTP/1.1 server answering `GET /1k` and `GET /1m` (keep-alive unless the
/// request says `Connection: close`).
pub(crate) async fn start_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                // Out of file descriptors: wait for some to close rather than stop.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut kind = [0u8; 1];
                if s.read_exact(&mut kind).await.is_err() {
                    return;
                }
                if kind[0] == b'G' {
                    http_origin(s).await;
                    return;
                }
                let mut buf = vec![0u8; BUF];
                if kind[0] == b'U' {
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = s.shutdown().await;
                } else {
                    while s.write_all(&buf).await.is_ok() {}
                }
            });
        }
    });
    addr
}

/// The origin's two complete responses (head and body in one buffer, written with one
/// call): `GET /1m` gets 1 MiB, anything else 1 KiB. Built once: the harness's own CPU
/// per request competes with the relay under test for the same two cores, so it is
/// kept to the minimum a real server needs.
pub(crate) fn canned_responses() -> &'static (Vec<u8>, Vec<u8>) {
    static RESPONSES: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    RESPONSES.get_or_init(|| {
        let response = |fill: u8, len: usize| {
            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
            r.resize(r.len() + len, fill);
            r
        };
        (response(b'x', 1024), response(b'y', 1024 * 1024))
    })
}

/// The end of the first HTTP head in `buf` (after its blank line), if complete.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Where `needle` (lowercase ASCII) first occurs in `haystack`, ignoring ASCII case.
pub(crate) fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Reads from `s` into `buf` (through `chunk`) until `buf` holds a whole HTTP head;
/// returns where it ends.
pub(crate) async fn read_head(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) -> std::io::Result<usize> {
    loop {
        if let Some(end) = head_end(buf) {
            return Ok(end);
        }
        let n = s.read(chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Serves HTTP/1.1 requests on `s`, whose first byte ('G') was already read.
pub(crate) async fn http_origin(mut s: TcpStream) {
    let (small, large) = canned_responses();
    let mut buf = Vec::with_capacity(4096);
    buf.push(b'G');
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(end) = read_head(&mut s, &mut buf, &mut chunk).await else {
            return;
        };
        let head = &buf[..end];
        let response = if head.starts_with(b"GET /1m") {
            large
        } else {
            small
        };
        let close = find_ignore_case(head, b"connection: close").is_some();
        buf.drain(..end);
        if s.write_all(response).await.is_err() {
            return;
        }
        if close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// The `Content-Length` of an HTTP head, 0 when it has none.
pub(crate) fn content_length(head: &[u8]) -> usize {
    const NAME: &[u8] = b"\r\ncontent-length:";
    let Some(at) = find_ignore_case(head, NAME) else {
        return 0;
    };
    let value = &head[at + NAME.len()..];
    let value = value.split(|&b| b == b'\r').next().unwrap_or_default();
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads one HTTP/1.1 response with a Content-Length body from `s`, with `chunk` as
/// the read buffer; `buf` keeps what arrived beyond it.
pub(crate) async fn read_response(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) -> std::io::Result<()> {
    let end = read_head(s, buf, chunk).await?;
    let len = content_length(&buf[..end]);
    // The body need not be kept: count it, holding only what follows it.
    let mut missing = (end + len).saturating_sub(buf.len());
    buf.drain(..(end + len).min(buf.len()));
    while missing > 0 {
        let n = s.read(chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let body = n.min(missing);
        missing -= body;
        buf.extend_from_slice(&chunk[body..n]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_found_in_any_case() {
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n"),
            1024
        );
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\ncontent-length:7\r\nx: y\r\n\r\n"),
            7
        );
        assert_eq!(content_length(b"HTTP/1.1 204 No Content\r\n\r\n"), 0);
    }

    #[tokio::test]
    async fn responses_are_read_one_by_one_from_the_origin() {
        let addr = start_origin().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Two requests at once: the second response may arrive with the first.
        s.write_all(b"GET /1k HTTP/1.1\r\nHost: a\r\n\r\nGET /1m HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        read_response(&mut s, &mut buf, &mut chunk).await.unwrap();
        read_response(&mut s, &mut buf, &mut chunk).await.unwrap();
        assert!(
            buf.is_empty(),
            "{} bytes beyond the two responses",
            buf.len()
        );
        // The origin closes after a request that asks it to.
        s.write_all(b"GET /1k HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut s, &mut buf, &mut chunk).await.unwrap();
        assert_eq!(s.read(&mut chunk).await.unwrap(), 0);
    }
}
