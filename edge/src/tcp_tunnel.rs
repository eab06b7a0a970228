//! A TCP tunnel at the Edge: every viewer connection on the public port becomes one
//! stream to the agent, opened with a [`StreamHeader`] and then piped both ways.
//!
//! Each viewer connection takes a slot of the Edge's viewer budget (in all and for
//! its address) and one of the tunnel's streams; a viewer over any cap is closed at
//! once, before a stream is opened.

use netbore_metrics::ViewerProtocol;
use netbore_transport::proto::StreamHeader;
use netbore_transport::{Session, pipe};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::limits::ViewerLimits;

/// Serves viewers on `listener` until the task is aborted (the session ended).
pub(crate) async fn run(
    session: Session,
    slot: u32,
    listener: std::net::TcpListener,
    tunnel_id: String,
    limits: ViewerLimits,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%tunnel_id, error = %e, "could not serve the public port");
            return;
        }
    };
    // The tunnel is in the metrics while this task runs.
    let metrics = std::sync::Arc::new(netbore_metrics::server().tunnels.add(&tunnel_id, "tcp"));
    let max_streams = limits.caps().max_streams_per_tunnel;
    // Dropped with this task: aborting the tunnel disconnects its viewers. Its
    // length is the tunnel's streams in flight.
    let mut viewers = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, viewer)) => {
                    if viewers.len() >= max_streams {
                        tracing::debug!(%tunnel_id, %viewer, "tunnel at its stream cap; viewer closed");
                        continue;
                    }
                    let admitted = limits.try_admit(viewer.ip());
                    let (held, client_stream) = match admitted {
                        Ok(held) => {
                            let stream = held.try_stream();
                            (held, stream)
                        }
                        Err(e) => {
                            tracing::debug!(%tunnel_id, %viewer, reason = %e, "viewer refused");
                            continue;
                        }
                    };
                    let Some(client_stream) = client_stream else {
                        tracing::debug!(%tunnel_id, %viewer, "viewer address at its stream cap; closed");
                        continue;
                    };
                    let session = session.clone();
                    let metrics = metrics.clone();
                    let tunnel_id = tunnel_id.clone();
                    viewers.spawn(async move {
                        let server = netbore_metrics::server();
                        let _held = (held, client_stream, server.viewer_connection(ViewerProtocol::Tcp));
                        let _ = socket.set_nodelay(true);
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
                        let _open = server.streams_open.hold();
                        let header = StreamHeader { slot, viewer }.encode();
                        if stream.write_all(&header).await.is_err() {
                            return;
                        }
                        let stats = metrics.stats();
                        let counted = pipe::Counted {
                            to_stream: &stats.bytes_in,
                            from_stream: &stats.bytes_out,
                        };
                        if let Err(e) = pipe::join_counted(socket, stream, Some(counted)).await {
                            tracing::debug!(%tunnel_id, %viewer, error = %e, "viewer connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(%tunnel_id, error = %e, "accepting a viewer failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            Some(_) = viewers.join_next(), if !viewers.is_empty() => {}
        }
    }
}
