//! TCP tunnels through any node: every node listens on the public port of each TCP
//! tunnel another node holds, and relays each viewer connection to the holder over
//! the link, so `tcp://DOMAIN:PORT` works whichever node DNS gives a viewer.
//!
//! [`run`] follows the directory (every [`POLL`]): it binds the ports of new remote
//! TCP tunnels and closes those of tunnels that went away. When a tunnel moves
//! here (its agent reclaims it on this node after its node died), the registry takes
//! the mirror's listener over ([`Mirrors::take`]), so the port never closes.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::Duration;

use netbore_transport::pipe;
use tokio::task::{AbortHandle, JoinSet};

use super::RouteKey;
use super::link;
use crate::limits::ViewerLimits;
use crate::ports::PortPool;
use crate::registry::Registry;

/// How often the mirrored ports follow the directory.
pub const POLL: Duration = Duration::from_millis(500);

/// The ports this node mirrors, each with its listener and accepting task.
#[derive(Debug, Default)]
pub struct Mirrors {
    held: Mutex<HashMap<u16, (TcpListener, AbortHandle)>>,
}

impl Mirrors {
    /// Stops mirroring `port` and hands its listener over (to a tunnel of this node).
    pub fn take(&self, port: u16) -> Option<TcpListener> {
        let (listener, task) = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port)?;
        task.abort();
        Some(listener)
    }

    fn ports(&self) -> Vec<u16> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.keys().copied().collect()
    }
}

/// Keeps this node's mirrors in step with the directory until dropped (then every
/// mirrored port closes).
pub async fn run(registry: Registry, ports: PortPool, limits: ViewerLimits) {
    let Some(remote) = registry.remote().cloned() else {
        return;
    };
    let mut tasks = JoinSet::new();
    loop {
        let wanted: Vec<u16> = remote
            .directory()
            .remote_tcp_ports()
            .into_iter()
            .filter(|p| {
                registry
                    .link_target(&RouteKey::Tcp(*p).to_string())
                    .is_none()
            })
            .collect();
        let mirrors = remote.mirrors();
        for port in mirrors.ports() {
            if !wanted.contains(&port) {
                drop(mirrors.take(port));
                tracing::debug!(port, "stopped mirroring a TCP tunnel's port");
            }
        }
        let held = mirrors.ports();
        for port in wanted.into_iter().filter(|p| !held.contains(p)) {
            let listener = match ports.bind_mirror(port) {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(port, error = %e, "could not mirror a TCP tunnel's port");
                    continue;
                }
            };
            let accepting = match listener.try_clone() {
                Ok(l) => l,
                Err(_) => continue,
            };
            let task = tasks.spawn(accept(registry.clone(), accepting, port, limits.clone()));
            mirrors
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(port, (listener, task));
        }
        while tasks.try_join_next().is_some() {}
        tokio::time::sleep(POLL).await;
    }
}

/// Accepts viewers on a mirrored port and relays each to the holder.
async fn accept(registry: Registry, listener: TcpListener, port: u16, limits: ViewerLimits) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let mut viewers = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, viewer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let Ok(slot) = limits.try_admit(viewer.ip()) else {
                    continue;
                };
                let Some(stream_slot) = slot.try_stream() else {
                    continue;
                };
                let registry = registry.clone();
                viewers.spawn(async move {
                    let _held = (slot, stream_slot);
                    let _ = socket.set_nodelay(true);
                    let route = RouteKey::Tcp(port);
                    let Some(remote) = registry.remote() else { return };
                    let Some((session, preamble, _)) = remote.link_for(&route).await else {
                        return;
                    };
                    let Ok(stream) = link::open(&session, &preamble, viewer).await else {
                        return;
                    };
                    let _counted = netbore_metrics::server()
                        .viewer_connection(netbore_metrics::ViewerProtocol::Tcp);
                    if let Err(e) = pipe::join(socket, stream).await {
                        tracing::debug!(port, %viewer, error = %e, "relayed TCP viewer ended with an error");
                    }
                });
            }
            Some(_) = viewers.join_next(), if !viewers.is_empty() => {}
        }
    }
}
