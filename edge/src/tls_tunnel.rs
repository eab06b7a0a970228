//! A TLS passthrough tunnel at the Edge: a viewer whose ClientHello names the tunnel
//! on the HTTPS port gets one stream to the agent, opened with a [`StreamHeader`],
//! and the connection's bytes, hello first, piped both ways unopened. The origin
//! holds the certificate; the Edge never sees the plaintext.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use netbore_transport::proto::StreamHeader;
use netbore_transport::{Session, pipe};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::limits::{StreamCount, StreamGuard};

/// One TLS tunnel served by an agent session.
#[derive(Debug)]
pub struct TlsTunnel {
    tunnel_id: String,
    session: Session,
    slot: u32,
    streams: Arc<StreamCount>,
    /// The tunnel's place in the metrics, while it is served.
    metrics: netbore_metrics::TunnelGuard,
    /// For a tunnel another node holds: what starts each stream on the link to it.
    preamble: Option<Vec<u8>>,
}

impl TlsTunnel {
    /// The tunnel `tunnel_id`, whose streams carry `slot` on `session`.
    pub fn new(tunnel_id: String, session: Session, slot: u32) -> Self {
        TlsTunnel {
            metrics: netbore_metrics::server().tunnels.add(&tunnel_id, "tls"),
            tunnel_id,
            session,
            slot,
            streams: Arc::default(),
            preamble: None,
        }
    }

    /// A tunnel another node holds, reached over `link` whose streams start with
    /// `preamble` ([`crate::fleet::link`]).
    pub fn via_link(tunnel_id: String, link: Session, preamble: Vec<u8>) -> Self {
        TlsTunnel {
            preamble: Some(preamble),
            ..TlsTunnel::new(tunnel_id, link, 0)
        }
    }

    /// True once the session carrying the tunnel has ended.
    pub fn is_offline(&self) -> bool {
        self.session.is_closed()
    }

    /// The tunnel's id.
    pub fn tunnel_id(&self) -> &str {
        &self.tunnel_id
    }

    /// The count of the tunnel's streams in flight (shared with streams other nodes
    /// relay to it).
    pub fn stream_count(&self) -> Arc<StreamCount> {
        self.streams.clone()
    }

    /// One more viewer connection, unless `max` are served already.
    pub fn try_stream(&self, max: usize) -> Option<StreamGuard> {
        self.streams.try_take(max)
    }

    /// Carries `socket` from `viewer` to the agent: `hello` (the bytes already read)
    /// first, then everything else both ways, until either side closes.
    pub async fn forward(&self, socket: TcpStream, viewer: SocketAddr, hello: Bytes) {
        let server = netbore_metrics::server();
        let _viewer = server.viewer_connection(netbore_metrics::ViewerProtocol::Tls);
        // Cut, not finished: the viewer gets a reset, never a clean end.
        let mut socket = netbore_transport::cut::ResetUnlessFinished::new(socket);
        let mut stream = match self.session.open().await {
            Ok(s) => s,
            Err(e) => {
                if e.busy() == Some(netbore_transport::Busy::Memory) {
                    server.budget_refusals.inc();
                }
                tracing::debug!(tunnel_id = %self.tunnel_id, %viewer, error = %e, "could not open a stream to the agent");
                return;
            }
        };
        let mut header = self.preamble.clone().unwrap_or_default();
        header.extend_from_slice(
            &StreamHeader {
                slot: self.slot,
                viewer,
            }
            .encode(),
        );
        let _open = server.streams_open.hold();
        if stream.write_all(&header).await.is_err() || stream.write_all(&hello).await.is_err() {
            return;
        }
        let stats = self.metrics.stats();
        stats.bytes_in.add(hello.len() as u64);
        let counted = pipe::Counted {
            to_stream: &stats.bytes_in,
            from_stream: &stats.bytes_out,
        };
        match pipe::join_counted(&mut socket, stream, Some(counted)).await {
            Ok(_) => socket.finish(),
            Err(e) => {
                tracing::debug!(tunnel_id = %self.tunnel_id, %viewer, error = %e, "TLS viewer connection ended with an error");
            }
        }
    }
}
