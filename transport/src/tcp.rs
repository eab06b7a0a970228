//! The `tcp` transport: the Netbore mux over one TCP connection with `TCP_NODELAY`.

use std::net::SocketAddr;

use netbore_mux::{Config, Mux, Role};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::mux_session::MuxSession;
use crate::{Session, TransportError};

/// Dials `addr` and starts a client-side session.
pub async fn connect(addr: impl ToSocketAddrs, config: Config) -> Result<Session, TransportError> {
    let stream = TcpStream::connect(addr).await?;
    Ok(session(stream, Role::Client, config)?)
}

/// Starts a session over an accepted or dialed TCP connection.
pub fn session(stream: TcpStream, role: Role, config: Config) -> std::io::Result<Session> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    Ok(Session::Tcp(MuxSession {
        mux: Mux::spawn(stream, role, config),
        peer,
    }))
}

/// The Edge side of the tcp transport: accepts agent connections.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    config: Config,
}

impl Listener {
    /// Binds the agent listener.
    pub async fn bind(addr: SocketAddr, config: Config) -> std::io::Result<Listener> {
        Ok(Listener {
            inner: TcpListener::bind(addr).await?,
            config,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Accepts the next agent connection as a server-side session.
    pub async fn accept(&self) -> std::io::Result<Session> {
        loop {
            let (stream, peer) = self.inner.accept().await?;
            match session(stream, Role::Server, self.config.clone()) {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "agent connection failed during setup")
                }
            }
        }
    }
}
