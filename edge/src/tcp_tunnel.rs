//! A TCP tunnel at the Edge: every viewer connection on the public port becomes one
//! stream to the agent, opened with a [`StreamHeader`] and then piped both ways.

use netbore_transport::proto::StreamHeader;
use netbore_transport::{Session, pipe};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Serves viewers on `listener` until the task is aborted (the session ended).
pub(crate) async fn run(
    session: Session,
    slot: u32,
    listener: std::net::TcpListener,
    tunnel_id: String,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%tunnel_id, error = %e, "could not serve the public port");
            return;
        }
    };
    // Dropped with this task: aborting the tunnel disconnects its viewers.
    let mut viewers = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, viewer)) => {
                    let session = session.clone();
                    viewers.spawn(async move {
                        let _ = socket.set_nodelay(true);
                        let mut stream = match session.open().await {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::debug!(%viewer, error = %e, "could not open a stream to the agent");
                                return;
                            }
                        };
                        let header = StreamHeader { slot, viewer }.encode();
                        if stream.write_all(&header).await.is_err() {
                            return;
                        }
                        if let Err(e) = pipe::join(socket, stream).await {
                            tracing::debug!(%viewer, error = %e, "viewer connection ended with an error");
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
