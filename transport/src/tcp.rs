//! The `tcp` transport: the Netbore mux over one TCP connection with `TCP_NODELAY`.
//! The mux writes to the `TcpStream` itself (vectored writes, no boxing).

use std::net::SocketAddr;

use netbore_mux::{Config, Role};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::{Session, TransportError, TransportKind, mux_session};

/// Dials `addr` and starts a client-side session.
pub async fn connect(addr: impl ToSocketAddrs, config: Config) -> Result<Session, TransportError> {
    let stream = TcpStream::connect(addr).await?;
    Ok(session(stream, Role::Client, config)?)
}

/// Starts a session over an accepted or dialed TCP connection.
pub fn session(stream: TcpStream, role: Role, config: Config) -> std::io::Result<Session> {
    stream.set_nodelay(true)?;
    let peer: SocketAddr = stream.peer_addr()?;
    Ok(mux_session::spawn(
        stream,
        role,
        config,
        peer,
        TransportKind::Tcp,
    ))
}
