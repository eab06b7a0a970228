//! The TLS side of HTTPS ingress: read the viewer's ClientHello (kept, so the bytes
//! can still be handed on), learn its SNI name, then finish the handshake with the
//! certificate manager's configuration over a stream that replays those bytes first.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Most bytes the Edge reads while waiting for a complete ClientHello. Real ones are
/// a few hundred bytes to 2 KiB (post-quantum key shares); the cap stops a viewer
/// from making the Edge buffer an endless "hello".
pub const MAX_CLIENT_HELLO: usize = 32 * 1024;

/// Why a viewer's TLS connection was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// Reading from the viewer failed, or it closed the connection.
    #[error("the viewer's connection failed before its TLS hello: {0}")]
    Io(#[from] io::Error),
    /// The viewer sent more than [`MAX_CLIENT_HELLO`] bytes without a complete hello.
    #[error("the viewer sent more than {MAX_CLIENT_HELLO} bytes without completing a TLS hello")]
    TooLarge,
    /// The bytes are not a TLS ClientHello.
    #[error("the viewer did not start a TLS handshake: {0}")]
    NotTls(rustls::Error),
}

/// A viewer's ClientHello: the raw bytes read so far and the name it asked for.
#[derive(Debug)]
pub struct Hello {
    /// Every byte read from the viewer, the ClientHello first.
    pub bytes: Bytes,
    /// The SNI name, lowercase, if the viewer sent one.
    pub sni: Option<String>,
    /// Whether the viewer offered ALPN `acme-tls/1`: an ACME directory validating a
    /// TLS-ALPN-01 challenge (RFC 8737), not a viewer.
    pub acme_tls_alpn: bool,
}

/// Reads from `socket` until a complete ClientHello has arrived. On bytes that are not
/// TLS, the viewer is sent rustls' alert before the error is returned.
pub async fn read_client_hello(socket: &mut TcpStream) -> Result<Hello, HelloError> {
    let mut acceptor = Acceptor::default();
    let mut bytes = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        if bytes.len() + n > MAX_CLIENT_HELLO {
            return Err(HelloError::TooLarge);
        }
        bytes.extend_from_slice(&chunk[..n]);
        let mut fresh = &chunk[..n];
        while !fresh.is_empty() {
            // Reading from a slice fails only when rustls' own buffer is full: a hello
            // bigger than it accepts.
            acceptor
                .read_tls(&mut fresh)
                .map_err(|_| HelloError::TooLarge)?;
            let accepted = match acceptor.accept() {
                Ok(None) => continue,
                Ok(Some(accepted)) => accepted,
                Err((e, mut alert)) => {
                    let mut out = Vec::new();
                    let _ = alert.write_all(&mut out);
                    let _ = socket.write_all(&out).await;
                    return Err(HelloError::NotTls(e));
                }
            };
            let sni = accepted
                .client_hello()
                .server_name()
                .map(str::to_ascii_lowercase);
            let acme_tls_alpn = accepted
                .client_hello()
                .alpn()
                .is_some_and(|mut protocols| protocols.any(|p| p == crate::certs::ACME_TLS_ALPN));
            return Ok(Hello {
                bytes: Bytes::from(bytes),
                sni,
                acme_tls_alpn,
            });
        }
    }
}

/// A stream that yields `prefix` before reading from `inner`; writes go to `inner`.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, with `prefix` read first.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A viewer's TLS stream once the handshake is done.
pub type ViewerTls = tokio_rustls::server::TlsStream<Rewind<TcpStream>>;

/// Finishes the handshake whose ClientHello is `hello`, with `config`.
pub async fn handshake(
    socket: TcpStream,
    hello: Hello,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<ViewerTls> {
    tokio_rustls::TlsAcceptor::from(config)
        .accept(Rewind::new(hello.bytes, socket))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rewind_replays_its_prefix_then_reads_on() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b" world").await.unwrap();
        drop(b);
        let mut r = Rewind::new(Bytes::from_static(b"hello"), a);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn garbage_and_endless_hellos_are_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut s2 = TcpStream::connect(addr).await.unwrap();
            // A handshake record header announcing a huge ClientHello, then filler.
            let mut big = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff];
            big.resize(MAX_CLIENT_HELLO + 8, 0);
            let _ = s2.write_all(&big).await;
            (s, s2)
        });
        let (mut one, _) = listener.accept().await.unwrap();
        assert!(matches!(
            read_client_hello(&mut one).await,
            Err(HelloError::NotTls(_))
        ));
        let (mut two, _) = listener.accept().await.unwrap();
        let e = read_client_hello(&mut two).await.unwrap_err();
        assert!(
            matches!(e, HelloError::TooLarge | HelloError::NotTls(_)),
            "{e}"
        );
        drop(client);
    }
}
