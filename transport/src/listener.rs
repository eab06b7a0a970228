//! The Edge side of every transport, on one port: each accepted TCP connection is
//! told apart by its first byte, in its own task and under a deadline, so garbage and
//! slow starts never hold the accept loop.
//!
//! | first byte | transport |
//! | --- | --- |
//! | `0x16` (TLS handshake record) | TLS; then ALPN `netbore/1` → `tls`, anything else → WebSocket upgrade over TLS (`wss`) |
//! | `G` (`GET /_netbore/agent`) | plain WebSocket upgrade (`ws`) |
//! | the mux version byte (`0x00`) | the mux directly (`tcp`) |
//! | anything else | closed |
//!
//! With a certificate, the same port number also takes QUIC on UDP (`quic`), unless
//! [`ListenerConfig::quic`] is off.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use netbore_mux::{Config, Role};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use crate::tls::ALPN_MUX;
use crate::{Session, TransportKind, mux_session, quic, ws};

/// Sessions set up but not yet taken by [`Listener::accept`]. Small: the Edge takes
/// them at once; when it falls behind, set-ups wait instead of piling up.
const READY_BACKLOG: usize = 64;

/// Settings of the agent listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Mux limits of every session.
    pub mux: Config,
    /// The Edge's certificate; without it, TLS connections (`tls`, `wss`) are closed.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a new connection may take to show what it is and finish its TLS and
    /// WebSocket handshakes. Stops slow starts (one byte a minute) from holding a task
    /// and a socket.
    pub handshake_timeout: Duration,
    /// Most connections in set-up at once; more are closed at once. Bounds the memory
    /// and tasks a flood of half-open connections can take.
    pub max_handshakes: usize,
    /// Also accept QUIC on the UDP port of the same number (needs `tls`).
    pub quic: bool,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            mux: Config::default(),
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            quic: true,
        }
    }
}

/// The agent listener: yields a [`Session`] for every agent connection, whatever its
/// transport. Dropping it stops accepting.
#[derive(Debug)]
pub struct Listener {
    local_addr: SocketAddr,
    quic_addr: Option<SocketAddr>,
    ready: mpsc::Receiver<Session>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Listener {
    /// Binds `addr` and starts accepting.
    pub async fn bind(addr: SocketAddr, config: ListenerConfig) -> io::Result<Listener> {
        let inner = TcpListener::bind(addr).await?;
        let local_addr = inner.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_BACKLOG);
        let config = Arc::new(config);
        let permits = Arc::new(Semaphore::new(config.max_handshakes.max(1)));
        let mut tasks = Vec::new();
        let mut quic_addr = None;
        if let (true, Some(tls)) = (config.quic, &config.tls) {
            // The UDP port of the same number; a failure leaves the TCP transports up.
            match quic::server_endpoint(local_addr, tls, &config.mux) {
                Ok(endpoint) => {
                    quic_addr = Some(endpoint.local_addr()?);
                    tasks.push(tokio::spawn(quic_accept_loop(
                        endpoint,
                        config.clone(),
                        permits.clone(),
                        tx.clone(),
                    )));
                }
                Err(e) => tracing::warn!(
                    addr = %local_addr, error = %e,
                    "could not listen for QUIC on UDP; agents will use the TCP transports (free the UDP port to offer quic)"
                ),
            }
        }
        tasks.push(tokio::spawn(accept_loop(inner, config, permits, tx)));
        Ok(Listener {
            local_addr,
            quic_addr,
            ready,
            tasks,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    /// The UDP address QUIC is accepted on, when it is.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic_addr
    }

    /// The next agent session, set up and ready for its hello.
    pub async fn accept(&mut self) -> io::Result<Session> {
        self.ready
            .recv()
            .await
            .ok_or_else(|| io::Error::other("the agent listener stopped"))
    }
}

async fn accept_loop(
    inner: TcpListener,
    config: Arc<ListenerConfig>,
    permits: Arc<Semaphore>,
    tx: mpsc::Sender<Session>,
) {
    loop {
        let (stream, peer) = match inner.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accepting an agent connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many agent connections in set-up; closed one");
            continue;
        };
        let config = config.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let setup =
                tokio::time::timeout(config.handshake_timeout, establish(stream, peer, &config));
            let result = setup.await;
            drop(permit);
            match result {
                Ok(Ok(session)) => {
                    let _ = tx.send(session).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "agent connection failed during set-up")
                }
                Err(_) => {
                    tracing::debug!(%peer, "agent connection did not finish its set-up in time")
                }
            }
        });
    }
}

/// Accepts QUIC connections: each handshake in its own task, under the same deadline
/// and set-up limit as TCP connections.
async fn quic_accept_loop(
    endpoint: quinn::Endpoint,
    config: Arc<ListenerConfig>,
    permits: Arc<Semaphore>,
    tx: mpsc::Sender<Session>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let peer = incoming.remote_address();
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many agent connections in set-up; refused a QUIC one");
            incoming.refuse();
            continue;
        };
        let timeout = config.handshake_timeout;
        let tx = tx.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(timeout, async { incoming.accept()?.await }).await;
            drop(permit);
            match result {
                Ok(Ok(conn)) => {
                    let _ = tx
                        .send(Session::Quic(quic::QuicSession::accepted(
                            conn,
                            &config.mux,
                        )))
                        .await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "QUIC agent connection failed during set-up")
                }
                Err(_) => {
                    tracing::debug!(%peer, "QUIC agent connection did not finish its set-up in time")
                }
            }
        });
    }
}

/// What the first byte of a connection says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A TLS handshake record (`0x16`).
    Tls,
    /// An HTTP request (`G` of `GET`): a plain WebSocket upgrade.
    Http,
    /// The mux's first frame (its version byte).
    Mux,
    /// None of these.
    Unknown,
}

/// Tells a connection's transport by its first byte.
pub fn sniff(first: u8) -> Sniffed {
    match first {
        0x16 => Sniffed::Tls,
        b'G' => Sniffed::Http,
        v if v == netbore_mux::frame::VERSION => Sniffed::Mux,
        _ => Sniffed::Unknown,
    }
}

/// Sniffs `stream` and runs the handshakes its transport needs.
async fn establish(
    stream: TcpStream,
    peer: SocketAddr,
    config: &ListenerConfig,
) -> io::Result<Session> {
    stream.set_nodelay(true)?;
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    match sniff(first[0]) {
        Sniffed::Mux => Ok(mux_session::spawn(
            stream,
            Role::Server,
            config.mux.clone(),
            peer,
            TransportKind::Tcp,
        )),
        Sniffed::Http => {
            let io = ws::server_handshake(stream)
                .await
                .map_err(io::Error::other)?;
            Ok(mux_session::spawn(
                io,
                Role::Server,
                config.mux.clone(),
                peer,
                TransportKind::Ws,
            ))
        }
        Sniffed::Tls => {
            let Some(tls) = &config.tls else {
                return Err(io::Error::other(
                    "a TLS connection arrived but this Edge has no certificate",
                ));
            };
            let io = tokio_rustls::TlsAcceptor::from(tls.clone())
                .accept(stream)
                .await?;
            let alpn_mux = io.get_ref().1.alpn_protocol() == Some(ALPN_MUX);
            if alpn_mux {
                return Ok(mux_session::spawn(
                    io,
                    Role::Server,
                    config.mux.clone(),
                    peer,
                    TransportKind::Tls,
                ));
            }
            let io = ws::server_handshake(io).await.map_err(io::Error::other)?;
            Ok(mux_session::spawn(
                io,
                Role::Server,
                config.mux.clone(),
                peer,
                TransportKind::Wss,
            ))
        }
        Sniffed::Unknown => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the first byte 0x{:02x} is no Netbore transport", first[0]),
        )),
    }
}
