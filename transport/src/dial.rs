//! The agent side of every transport: dial the Edge (directly or through an HTTP
//! `CONNECT` proxy), then TLS and/or the WebSocket upgrade as the transport needs,
//! then the mux; or a QUIC connection over UDP.

use std::net::SocketAddr;

use netbore_mux::{Config, Role};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::proxy::Proxy;
use crate::tls::{self, ClientTls};
use crate::{Session, TransportError, TransportKind, mux_session, ws};

/// Where and how to reach an Edge.
#[derive(Debug, Clone)]
pub struct Dial {
    /// The transport to speak.
    pub kind: TransportKind,
    /// The Edge, `HOST:PORT`; HOST is also the name its certificate must carry.
    pub addr: String,
    /// TLS settings; required for `tls` and `wss`.
    pub tls: Option<ClientTls>,
    /// An HTTP proxy to tunnel through, if any.
    pub proxy: Option<Proxy>,
    /// Mux limits of the session.
    pub mux: Config,
}

impl Dial {
    /// Connects and returns the client side of a session.
    pub async fn connect(&self) -> Result<Session, TransportError> {
        if self.kind == TransportKind::Quic {
            if self.proxy.is_some() {
                return Err(TransportError::NotThroughProxy(self.kind));
            }
            let tls = self.tls.as_ref().ok_or(TransportError::TlsNotConfigured)?;
            return crate::quic::connect(&self.addr, tls.quic.clone(), &self.mux).await;
        }
        let (stream, peer) = match &self.proxy {
            Some(proxy) => {
                let s = proxy.connect(&self.addr).await?;
                let peer = s.peer_addr()?;
                (s, peer)
            }
            None => {
                let s = TcpStream::connect(&self.addr).await?;
                s.set_nodelay(true)?;
                let peer = s.peer_addr()?;
                (s, peer)
            }
        };
        match self.kind {
            TransportKind::Tcp => Ok(self.spawn(stream, peer)),
            TransportKind::Ws => {
                let io = ws::client_handshake(stream, false, &self.addr)
                    .await
                    .map_err(|e| TransportError::WebSocket(e.to_string()))?;
                Ok(self.spawn(io, peer))
            }
            TransportKind::Tls | TransportKind::Wss | TransportKind::Quic => {
                let tls = self.tls.as_ref().ok_or(TransportError::TlsNotConfigured)?;
                let config = match self.kind {
                    TransportKind::Tls => tls.mux.clone(),
                    // Not reached (QUIC returned above); the WebSocket config is harmless.
                    _ => tls.http1.clone(),
                };
                let name = tls::server_name(&self.addr)?;
                let io = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await
                    .map_err(|e| tls_error(&self.addr, e))?;
                if self.kind == TransportKind::Tls {
                    return Ok(self.spawn(io, peer));
                }
                let io = ws::client_handshake(io, true, &self.addr)
                    .await
                    .map_err(|e| TransportError::WebSocket(e.to_string()))?;
                Ok(self.spawn(io, peer))
            }
        }
    }

    fn spawn<T>(&self, io: T, peer: SocketAddr) -> Session
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        mux_session::spawn(io, Role::Client, self.mux.clone(), peer, self.kind)
    }
}

/// A TLS handshake failure; a certificate the agent does not trust gets its own error
/// saying what to do.
fn tls_error(addr: &str, e: std::io::Error) -> TransportError {
    let reason = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(_) => Some(r.to_string()),
            _ => None,
        });
    match reason {
        Some(reason) => TransportError::UntrustedCertificate {
            addr: addr.to_string(),
            reason,
        },
        None => TransportError::Io(e),
    }
}
