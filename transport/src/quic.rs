//! The `quic` transport: one QUIC connection (quinn) per session, each Netbore stream
//! a native QUIC bidirectional stream. No mux runs on top: QUIC already gives every
//! stream its own flow control and loss recovery, so one stalled or lossy stream never
//! holds up another.
//!
//! The settings come from the same [`netbore_mux::Config`] the other transports use,
//! so `--max-streams`, the window flags and the keepalive flags mean the same thing on
//! every transport. Windows are sized for long fat links (quinn's default stream window
//! caps one stream near 100 Mbit/s at 100 ms RTT), UDP socket buffers are enlarged
//! (the kernel's default drops datagrams under load) and GSO/GRO stay on.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use netbore_mux::{Config, GoAwayCode};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, EndpointConfig, RecvStream, SendStream, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::quic_socket::FewSlots;
use crate::quic_windows::{SessionWindows, StreamWindow};
use crate::traits::{TransportSession, TransportStream};
use crate::{Session, TransportError, TransportKind};

/// ALPN protocol of the `quic` transport. Distinct from the TLS transport's: the bytes
/// on a QUIC stream are not the mux.
pub const ALPN_QUIC: &[u8] = b"netbore-quic/1";

/// UDP socket buffer asked of the kernel, each direction. The kernel caps it at
/// `net.core.rmem_max` / `wmem_max`; a smaller result is logged with that hint.
pub const UDP_BUFFER: usize = 8 * 1024 * 1024;

/// Largest chunk handed out by one zero-copy read.
const MAX_CHUNK: usize = 256 * 1024;

/// How long the Edge waits for the agent to allow one more stream (QUIC's stream limit
/// is the agent's to raise) before the viewer is answered that the tunnel is busy.
pub const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Error code of a stream reset by [`TransportStream::reset`] or dropped unfinished.
const RESET_CODE: VarInt = VarInt::from_u32(0);

/// The QUIC transport parameters derived from the mux limits.
pub fn transport_config(mux: &Config) -> quinn::TransportConfig {
    let mux = mux.clone().normalized();
    let mut t = quinn::TransportConfig::default();
    let streams = u32::try_from(mux.max_streams).unwrap_or(u32::MAX);
    t.max_concurrent_bidi_streams(VarInt::from_u32(streams));
    // Netbore never uses unidirectional streams.
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(mux.max_stream_window));
    t.receive_window(connection_window(&mux));
    t.send_window(mux.max_session_window);
    t.keep_alive_interval(mux.keepalive_interval);
    // A QUIC connection that hears nothing for the keepalive tolerance is dead, as a
    // mux session whose ping goes unanswered. quinn bounds the idle timeout to what a
    // VarInt of milliseconds holds; ours is seconds, far below that.
    let idle = quinn::IdleTimeout::try_from(mux.tolerance())
        .unwrap_or(quinn::IdleTimeout::from(VarInt::from_u32(20_000)));
    t.max_idle_timeout(Some(idle));
    t.enable_segmentation_offload(true);
    // Let path MTU discovery search above Ethernet's 1,452 bytes: on an Ethernet path
    // it settles there as before (a lost probe costs one datagram), while on loopback
    // and jumbo-frame LANs it finds larger packets, and fewer packets is less CPU per
    // byte (docs/benchmarks.md: 2.5x the throughput of one stream on loopback).
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    t.congestion_controller_factory(Arc::new(initial_window()));
    // Netbore sends no datagrams: no buffers for them on either side.
    t.datagram_receive_buffer_size(None);
    t.datagram_send_buffer_size(0);
    t
}

/// Streams an agent may have open toward the Edge at once. An agent opens one, its
/// hello (the Edge opens every viewer stream), so a peer gets no more than this,
/// before its hello and after, instead of `--max-streams`; only a fleet link, whose
/// streams are viewers, gets more ([`QuicSession::accept_streams`]).
pub const AGENT_OPENED_STREAMS: u32 = 4;

/// The Edge's connection receive window until the agent's hello is accepted: enough
/// for a hello (a few KiB of tokens), so an unauthenticated peer can make the Edge
/// hold no more than this, instead of the [`connection_window`] a busy session gets.
pub const PRE_HELLO_WINDOW: u32 = 64 * 1024;

/// The Edge's transport parameters: those of [`transport_config`] with
/// [`AGENT_OPENED_STREAMS`] and the [`PRE_HELLO_WINDOW`], the window raised by
/// [`QuicSession::hello_accepted`].
pub fn edge_transport_config(mux: &Config) -> quinn::TransportConfig {
    let mut t = transport_config(mux);
    if mux.window_budget.is_some() {
        t.stream_receive_window(VarInt::from_u32(edge_stream_window(mux)));
    }
    t.max_concurrent_bidi_streams(VarInt::from_u32(AGENT_OPENED_STREAMS));
    t.receive_window(VarInt::from_u32(PRE_HELLO_WINDOW));
    t
}

/// The most one stream may buffer at an Edge with a window budget. quinn grants a
/// stream its whole window at once (the mux grows a window only while the stream is
/// read quickly), so the Edge takes up to this much from the budget per stream (less
/// when the budget runs short): 4 MiB carries about 670 Mbit/s per stream at 50 ms
/// RTT and keeps one viewer who stops reading from holding more. (1 MiB cost 5–12 %
/// of one connection's download on loopback, docs/benchmarks.md, finding 29.)
pub const EDGE_STREAM_WINDOW: u32 = 4 * 1024 * 1024;

/// The Edge's QUIC stream window under a window budget: [`EDGE_STREAM_WINDOW`], or
/// less when `--max-stream-window` says so.
pub fn edge_stream_window(mux: &Config) -> u32 {
    mux.max_stream_window
        .min(EDGE_STREAM_WINDOW)
        .max(mux.initial_stream_window)
}

/// Cubic with RFC 9002's initial window for datagrams of up to [`MAX_UDP_PAYLOAD`]:
/// `min(10 × size, max(2 × size, 14,720))`. quinn's default counts 1,200-byte
/// datagrams (12,000 bytes), and with a path-MTU probe of ~6.4 KB in flight on an idle
/// connection, the next full datagram no longer fits. quinn 0.11.19 applies that check
/// to the CONNECTION_CLOSE packet too (quinn issue 2785), so an agent stopping at that
/// moment never told the Edge, which kept its tunnels up until the idle timeout.
fn initial_window() -> quinn::congestion::CubicConfig {
    let size = u64::from(MAX_UDP_PAYLOAD);
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window((10 * size).min((2 * size).max(14_720)));
    cubic
}

/// The largest UDP payload path MTU discovery may try. quinn sends up to 10 datagrams
/// in one GSO call, and one call carries at most 64 KiB: larger datagrams make those
/// calls fail, the losses look like an MTU black hole, and throughput collapses (seen
/// here at 8,000 bytes: 3 MiB/s). 10 × 6,500 stays inside the limit.
const MAX_UDP_PAYLOAD: u16 = 6_500;

/// The connection-level receive window. QUIC counts unread bytes of every stream
/// against it, and quinn gives each stream its full window at once (no auto-tuning as
/// in the mux), so a window of `max_session_window` alone would let four stalled
/// viewers (16 MiB each) freeze every other stream of the session. It is sized instead
/// to the mux's own memory bound, `max_session_window + max_streams ×
/// initial_stream_window`: the same worst case, and stalled streams block the others
/// only once that much is held.
pub fn connection_window(mux: &Config) -> VarInt {
    let bound =
        mux.max_session_window + mux.max_streams as u64 * u64::from(mux.initial_stream_window);
    VarInt::from_u64(bound.max(u64::from(mux.max_stream_window))).unwrap_or(VarInt::MAX)
}

/// The endpoint settings: datagrams up to [`MAX_UDP_PAYLOAD`] accepted, so path MTU
/// discovery can use what the path allows. (quinn's receive buffer grows with it, but
/// it is allocated zeroed and only the part datagrams use becomes resident, which
/// [`FewSlots`] bounds.)
fn endpoint_config() -> EndpointConfig {
    let mut config = EndpointConfig::default();
    // In range by construction (1,200 ..= 65,527).
    let _ = config.max_udp_payload_size(MAX_UDP_PAYLOAD);
    config
}

/// Binds a UDP socket with enlarged buffers, ready for a quinn endpoint.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Same behaviour as a TCP listener on `[::]`: IPv4 too where the system allows.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: a smaller buffer still works, just drops more under load.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    let got = socket.recv_buffer_size().unwrap_or(0);
    if got < UDP_BUFFER {
        tracing::debug!(
            wanted = UDP_BUFFER,
            got,
            "the kernel capped the UDP receive buffer; raise net.core.rmem_max for QUIC under load"
        );
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The Edge's QUIC endpoint on `addr`, serving `tls`'s certificate under [`ALPN_QUIC`].
pub fn server_endpoint(
    addr: SocketAddr,
    tls: &rustls::ServerConfig,
    mux: &Config,
) -> io::Result<Endpoint> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![ALPN_QUIC.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(io::Error::other)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(edge_transport_config(mux)));
    config.migration(true);
    Endpoint::new_with_abstract_socket(
        endpoint_config(),
        Some(config),
        FewSlots::wrap(bind_udp(addr)?)?,
        Arc::new(quinn::TokioRuntime),
    )
}

/// The agent side: connects to the Edge at `addr` (`HOST:PORT`) and returns the
/// session. `tls` must offer [`ALPN_QUIC`].
pub async fn connect(
    addr: &str,
    tls: Arc<rustls::ClientConfig>,
    mux: &Config,
) -> Result<Session, TransportError> {
    let peer = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolved to no address"),
        )
    })?;
    let local: SocketAddr = if peer.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let crypto = QuicClientConfig::try_from(tls).map_err(io::Error::other)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(mux)));
    let mut endpoint = Endpoint::new_with_abstract_socket(
        endpoint_config(),
        None,
        FewSlots::wrap(bind_udp(local)?)?,
        Arc::new(quinn::TokioRuntime),
    )?;
    endpoint.set_default_client_config(config);
    let name = crate::tls::server_name(addr)?.to_str().into_owned();
    let connecting = endpoint
        .connect(peer, &name)
        .map_err(|e| TransportError::Quic(e.to_string()))?;
    let conn = connecting.await.map_err(|e| connection_error(addr, e))?;
    Ok(Session::Quic(QuicSession {
        conn,
        endpoint: Some(endpoint),
        open_limits: None,
        windows: None,
    }))
}

/// A handshake failure; a certificate the agent does not trust gets its own error.
fn connection_error(addr: &str, e: quinn::ConnectionError) -> TransportError {
    if let quinn::ConnectionError::TransportError(t) = &e
        && t.reason.contains("invalid peer certificate")
    {
        return TransportError::UntrustedCertificate {
            addr: addr.to_string(),
            reason: t.reason.clone(),
        };
    }
    TransportError::Quic(e.to_string())
}

/// One QUIC connection as a Netbore session.
#[derive(Debug, Clone)]
pub struct QuicSession {
    conn: Connection,
    /// The agent's own endpoint, kept alive as long as the session.
    endpoint: Option<Endpoint>,
    /// At the Edge: the connection receive window once the peer's hello is accepted,
    /// and the streams a fleet link's peer may open ([`Self::accept_streams`]).
    open_limits: Option<(VarInt, VarInt)>,
    /// At the Edge, when it has a window budget: the session's share of it, which
    /// sets its connection window instead of `open_limits`'s.
    windows: Option<Arc<SessionWindows>>,
}

impl QuicSession {
    /// Wraps a connection the Edge accepted, which holds the [`PRE_HELLO_WINDOW`] and
    /// [`AGENT_OPENED_STREAMS`] until [`Self::hello_accepted`] gives it the
    /// [`connection_window`] (and [`Self::accept_streams`] the stream limit of `mux`).
    pub fn accepted(conn: Connection, mux: &Config) -> QuicSession {
        let mux = mux.clone().normalized();
        let streams = u32::try_from(mux.max_streams).unwrap_or(u32::MAX);
        QuicSession {
            windows: SessionWindows::new(&conn, &mux),
            conn,
            endpoint: None,
            open_limits: Some((connection_window(&mux), VarInt::from_u32(streams))),
        }
    }

    /// The agent's hello was accepted: the session gets the window of a busy
    /// session. Its stream limit stays [`AGENT_OPENED_STREAMS`]: an agent opens no
    /// stream after its hello (the Edge opens the viewers'), and quinn keeps an entry
    /// in two tables for every stream the peer may open, about 0.8 MiB of the Edge's
    /// memory per agent at the default limit of 8,192.
    pub fn hello_accepted(&self) {
        if let Some((window, _)) = self.open_limits {
            match &self.windows {
                Some(windows) => windows.hello_accepted(),
                None => self.conn.set_receive_window(window),
            }
        }
    }

    /// The peer's hello was accepted and it opens streams of its own, many at once
    /// (a fleet link, whose streams are viewers): it may have the stream limit of
    /// `mux` open.
    pub fn accept_streams(&self) {
        if let Some((_, streams)) = self.open_limits {
            self.conn.set_max_concurrent_bi_streams(streams);
        }
    }
}

impl TransportSession for QuicSession {
    type Stream = QuicStream;

    /// Under a window budget the stream first takes its window from it; a stream
    /// past the agent's stream limit waits at most [`STREAM_OPEN_TIMEOUT`].
    async fn open(&self) -> Result<QuicStream, TransportError> {
        let window = self.windows.as_ref().map(|w| w.reserve()).transpose()?;
        let (send, recv) = tokio::time::timeout(STREAM_OPEN_TIMEOUT, self.conn.open_bi())
            .await
            .map_err(|_| TransportError::StreamLimit(STREAM_OPEN_TIMEOUT))?
            .map_err(|e| TransportError::Quic(e.to_string()))?;
        let mut stream = QuicStream::new(send, recv);
        stream.window = window;
        Ok(stream)
    }

    async fn accept(&self) -> Option<QuicStream> {
        let (send, recv) = self.conn.accept_bi().await.ok()?;
        Some(QuicStream::new(send, recv))
    }

    fn peer_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    fn rtt(&self) -> Option<Duration> {
        Some(self.conn.rtt())
    }

    fn close(&self, code: GoAwayCode) {
        self.conn
            .close(VarInt::from_u32(code.0), code.name().as_bytes())
    }

    async fn closed(&self) -> TransportError {
        TransportError::Quic(self.conn.closed().await.to_string())
    }

    fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }
}

impl QuicSession {
    /// Waits until the connection's close has been sent and, on the agent's own
    /// endpoint, every connection is drained.
    pub async fn wait_idle(&self) {
        match &self.endpoint {
            Some(endpoint) => endpoint.wait_idle().await,
            None => {
                self.conn.closed().await;
            }
        }
    }

    /// The transport kind, always [`TransportKind::Quic`].
    pub fn kind(&self) -> TransportKind {
        TransportKind::Quic
    }
}

/// One QUIC bidirectional stream. Dropped without a shutdown, it is reset (as a mux
/// stream is), so the peer never mistakes an abort for a clean end.
#[derive(Debug)]
pub struct QuicStream {
    send: SendStream,
    recv: RecvStream,
    finished: bool,
    /// At the Edge under a window budget: the window this stream holds, given back
    /// (after the stream is stopped, below) when it is dropped.
    window: Option<StreamWindow>,
}

impl QuicStream {
    fn new(send: SendStream, recv: RecvStream) -> QuicStream {
        QuicStream {
            send,
            recv,
            finished: false,
            window: None,
        }
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.send.reset(RESET_CODE);
        }
        let _ = self.recv.stop(RESET_CODE);
    }
}

impl QuicStream {
    /// One chunk of at most `max` bytes, in order, as quinn holds it.
    fn poll_one_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Option<Bytes>>> {
        let read = pin!(self.recv.read_chunk(max, true));
        read.poll(cx)
            .map(|r| r.map(|c| c.map(|c| c.bytes)).map_err(io::Error::from))
    }
}

impl TransportStream for QuicStream {
    /// QUIC hands data over one STREAM frame (one datagram, a few KiB) at a time;
    /// written out one by one, each would cost the reader a syscall. So whatever else
    /// has already arrived is joined to the first chunk (one copy of hot data, up to
    /// [`MAX_CHUNK`]), and the socket gets one large write instead of dozens.
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let Some(first) = ready!(self.poll_one_chunk(cx, MAX_CHUNK))? else {
            return Poll::Ready(Ok(None));
        };
        if first.len() >= MAX_CHUNK / 2 {
            return Poll::Ready(Ok(Some(first)));
        }
        let mut joined: Option<BytesMut> = None;
        loop {
            let have = joined.as_ref().map_or(first.len(), BytesMut::len);
            if have >= MAX_CHUNK {
                break;
            }
            // Only what is already here: Pending, the end, or an error (which the
            // next call reports again) stop the gathering without losing anything.
            let Poll::Ready(Ok(Some(more))) = self.poll_one_chunk(cx, MAX_CHUNK - have) else {
                break;
            };
            joined
                .get_or_insert_with(|| {
                    let mut b = BytesMut::with_capacity(MAX_CHUNK);
                    b.extend_from_slice(&first);
                    b
                })
                .extend_from_slice(&more);
        }
        Poll::Ready(Ok(Some(joined.map_or(first, BytesMut::freeze))))
    }

    fn poll_write_bytes(&mut self, cx: &mut Context<'_>, data: &Bytes) -> Poll<io::Result<usize>> {
        let mut chunks = [data.clone()];
        let write = pin!(self.send.write_chunks(&mut chunks));
        write
            .poll(cx)
            .map(|r| r.map(|w| w.bytes).map_err(io::Error::from))
    }

    fn reset(&mut self) {
        self.finished = true;
        let _ = self.send.reset(RESET_CODE);
        let _ = self.recv.stop(RESET_CODE);
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // quinn sends as soon as congestion control allows; there is nothing to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.finished = true;
        // Finishing twice (or after a reset) is not an error for a byte stream.
        let _ = this.send.finish();
        Poll::Ready(Ok(()))
    }
}
