//! A TCP tunnel at the Edge: every viewer connection on the public port becomes one
//! stream to the agent, opened with a [`StreamHeader`] and then piped both ways.
//!
//! Each viewer connection takes a slot of the Edge's viewer budget (in all and for
//! its address) and one of the tunnel's streams; a viewer over any cap is closed at
//! once, before a stream is opened. A connection from a trusted proxy under
//! `--proxy-protocol` takes its global slot at once and its address's share once its
//! PROXY header has named the viewer.

use std::net::SocketAddr;
use std::sync::Arc;

use netbore_metrics::{TunnelGuard, ViewerProtocol};
use netbore_transport::proto::StreamHeader;
use netbore_transport::{Session, pipe};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::task::JoinSet;

use crate::drain::{Drain, Work};
use crate::fleet::remote::Remote;
use crate::fleet::{RouteKey, link};
use crate::limits::{StreamGuard, ViewerLimits, ViewerSlot};
use crate::proxy_protocol::ProxyProtocol;

/// Where a tunnel's viewers go.
#[derive(Debug, Clone)]
enum Target {
    /// The agent session serving the tunnel here, and the tunnel's slot on it.
    Agent { session: Session, slot: u32 },
    /// The node holding the tunnel, over a fleet link ([`crate::fleet::mirror`]).
    Relay { remote: Arc<Remote>, port: u16 },
}

/// What every viewer connection of one tunnel shares.
#[derive(Debug, Clone)]
struct Tunnel {
    target: Target,
    tunnel_id: Arc<str>,
    limits: ViewerLimits,
    /// The tunnel's place in the metrics, while this task runs.
    metrics: Arc<TunnelGuard>,
}

/// Serves viewers on `listener` until the task is aborted (the session ended), each
/// counted as `drain`'s work. `proxy_protocol`: the viewers of connections from
/// trusted proxies are named by a PROXY header (`--proxy-protocol`). When `moved`
/// names the fleet's remote tunnels (the agent moved the tunnel to another node),
/// the listener is handed to this node's mirror of the port, which relays new
/// viewers to the new holder, and the task ends once its viewers have.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    session: Session,
    slot: u32,
    listener: std::net::TcpListener,
    tunnel_id: String,
    limits: ViewerLimits,
    proxy_protocol: Option<ProxyProtocol>,
    drain: Drain,
    moved: oneshot::Receiver<Arc<Remote>>,
) {
    let target = Target::Agent { session, slot };
    let moved = async {
        match moved.await {
            Ok(remote) => remote,
            Err(_) => std::future::pending().await,
        }
    };
    serve(
        listener,
        target,
        tunnel_id,
        limits,
        proxy_protocol,
        drain,
        moved,
    )
    .await;
}

/// Serves viewers on `listener`, a public port this node mirrors for the tunnel
/// `tunnel_id` another node holds, relaying each to that node, until aborted.
pub(crate) async fn relay(
    remote: Arc<Remote>,
    port: u16,
    listener: std::net::TcpListener,
    tunnel_id: String,
    limits: ViewerLimits,
    proxy_protocol: Option<ProxyProtocol>,
    drain: Drain,
) {
    let target = Target::Relay { remote, port };
    let moved = std::future::pending();
    serve(
        listener,
        target,
        tunnel_id,
        limits,
        proxy_protocol,
        drain,
        moved,
    )
    .await;
}

async fn serve(
    listener: std::net::TcpListener,
    target: Target,
    tunnel_id: String,
    limits: ViewerLimits,
    proxy_protocol: Option<ProxyProtocol>,
    drain: Drain,
    moved: impl std::future::Future<Output = Arc<Remote>>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%tunnel_id, error = %e, "could not serve the public port");
            return;
        }
    };
    let tunnel = Tunnel {
        metrics: Arc::new(netbore_metrics::server().tunnels.add(&tunnel_id, "tcp")),
        target,
        tunnel_id: tunnel_id.into(),
        limits,
    };
    let max_streams = tunnel.limits.caps().max_streams_per_tunnel;
    // Dropped with this task: aborting the tunnel disconnects its viewers. Its
    // length is the tunnel's streams in flight.
    let mut viewers = JoinSet::new();
    tokio::pin!(moved);
    loop {
        tokio::select! {
            remote = &mut moved => {
                hand_over(listener, &remote, &tunnel.tunnel_id);
                while viewers.join_next().await.is_some() {}
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let tunnel_id = &tunnel.tunnel_id;
                    if viewers.len() >= max_streams {
                        tracing::debug!(%tunnel_id, viewer = %peer, "tunnel at its stream cap; viewer closed");
                        continue;
                    }
                    let permit = match tunnel.limits.try_acquire() {
                        Ok(permit) => permit,
                        Err(e) => {
                            tracing::debug!(%tunnel_id, viewer = %peer, reason = %e, "viewer refused");
                            continue;
                        }
                    };
                    let tunnel = tunnel.clone();
                    match proxy_protocol.as_ref().filter(|p| p.expects_header(peer.ip())) {
                        None => {
                            let Some(held) = tunnel.admit(permit, peer) else { continue };
                            let work = drain.work();
                            viewers.spawn(tunnel.forward(socket, peer, held, work));
                        }
                        Some(proxy_protocol) => {
                            let proxy_protocol = proxy_protocol.clone();
                            let work = drain.work();
                            viewers.spawn(tunnel.forward_proxied(socket, peer, permit, proxy_protocol, work));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(tunnel_id = %tunnel.tunnel_id, error = %e, "accepting a viewer failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            Some(_) = viewers.join_next(), if !viewers.is_empty() => {}
        }
    }
}

/// Gives a moved tunnel's public port to this node's mirror of it, open all along:
/// viewers connecting meanwhile wait in the listen queue, not refused.
fn hand_over(listener: TcpListener, remote: &Remote, tunnel_id: &str) {
    let port = listener.local_addr().map(|a| a.port());
    match (port, listener.into_std()) {
        (Ok(port), Ok(listener)) => {
            tracing::info!(%tunnel_id, port, "the tunnel moved to another node; its port here relays there");
            remote.mirrors().offer(port, listener);
        }
        (_, Err(e)) | (Err(e), _) => {
            tracing::warn!(%tunnel_id, error = %e, "could not hand a moved tunnel's port to its mirror");
        }
    }
}

impl Tunnel {
    /// The share of `viewer`'s address and one of its streams, for a connection
    /// holding `permit`; `None` (logged) over either cap.
    fn admit(
        &self,
        permit: OwnedSemaphorePermit,
        viewer: SocketAddr,
    ) -> Option<(ViewerSlot, StreamGuard)> {
        let tunnel_id = &self.tunnel_id;
        let held = match self.limits.admit(permit, viewer.ip()) {
            Ok(held) => held,
            Err(e) => {
                tracing::debug!(%tunnel_id, %viewer, reason = %e, "viewer refused");
                return None;
            }
        };
        let Some(stream) = held.try_stream() else {
            tracing::debug!(%tunnel_id, %viewer, "viewer address at its stream cap; closed");
            return None;
        };
        Some((held, stream))
    }

    /// A viewer behind a trusted proxy (`proxy`): its PROXY header names it, then it
    /// is admitted and forwarded.
    async fn forward_proxied(
        self,
        mut socket: TcpStream,
        proxy: SocketAddr,
        permit: OwnedSemaphorePermit,
        proxy_protocol: ProxyProtocol,
        work: Work,
    ) {
        let viewer = match proxy_protocol.viewer(&mut socket, proxy).await {
            Ok(viewer) => viewer,
            Err(e) => {
                tracing::debug!(tunnel_id = %self.tunnel_id, %proxy, error = %e, "PROXY header refused; connection closed");
                return;
            }
        };
        let Some(held) = self.admit(permit, viewer) else {
            return;
        };
        self.forward(socket, viewer, held, work).await;
    }

    /// Carries `socket` from `viewer` to the agent on a new stream, both ways, until
    /// either side closes; `held` is released at the end, and the viewer counts as
    /// `_work` until then.
    async fn forward(
        self,
        socket: TcpStream,
        viewer: SocketAddr,
        held: (ViewerSlot, StreamGuard),
        _work: Work,
    ) {
        let tunnel_id = &self.tunnel_id;
        let server = netbore_metrics::server();
        let _held = (held, server.viewer_connection(ViewerProtocol::Tcp));
        let _ = socket.set_nodelay(true);
        // Cut, not finished (the agent or the node holding the tunnel went away, the
        // tunnel was stopped, no stream could be opened): the viewer gets a reset,
        // never a clean end.
        let mut socket = netbore_transport::cut::ResetUnlessFinished::new(socket);
        let stream = match &self.target {
            Target::Agent { session, slot } => {
                let mut stream = match session.open().await {
                    Ok(s) => s,
                    Err(e) => {
                        if e.busy() == Some(netbore_transport::Busy::Memory) {
                            server.budget_refusals.inc();
                        }
                        tracing::debug!(%tunnel_id, %viewer, error = %e, "could not open a stream to the agent");
                        return;
                    }
                };
                let header = StreamHeader {
                    slot: *slot,
                    viewer,
                }
                .encode();
                if stream.write_all(&header).await.is_err() {
                    return;
                }
                stream
            }
            Target::Relay { remote, port } => {
                let route = RouteKey::Tcp(*port);
                let Some((session, preamble, _)) = remote.link_for(&route).await else {
                    return;
                };
                match link::open(&session, &preamble, viewer).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(%tunnel_id, %viewer, error = %e, "could not relay a viewer to the node holding the tunnel");
                        return;
                    }
                }
            }
        };
        let _open = server.streams_open.hold();
        let stats = self.metrics.stats();
        let counted = pipe::Counted {
            to_stream: &stats.bytes_in,
            from_stream: &stats.bytes_out,
        };
        match pipe::join_counted(&mut socket, stream, Some(counted)).await {
            Ok(_) => socket.finish(),
            Err(e) => {
                tracing::debug!(%tunnel_id, %viewer, error = %e, "viewer connection ended with an error");
            }
        }
    }
}

#[cfg(test)]
mod size_tests {
    use crate::future_size::{PER_CONNECTION_MAX, of5, of6};

    #[test]
    fn a_viewer_task_is_small() {
        for (what, size) in [
            ("a TCP viewer's task", of5(super::Tunnel::forward)),
            (
                "a TCP viewer's task behind a proxy",
                of6(super::Tunnel::forward_proxied),
            ),
        ] {
            assert!(
                size <= PER_CONNECTION_MAX,
                "{what} takes {size} bytes; box the rare path that made it grow"
            );
        }
    }
}
