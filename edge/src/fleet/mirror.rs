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

use tokio::task::{AbortHandle, JoinSet};

use super::RouteKey;
use crate::drain::Drain;
use crate::limits::ViewerLimits;
use crate::ports::PortPool;
use crate::proxy_protocol::ProxyProtocol;
use crate::registry::Registry;

/// How often the mirrored ports follow the directory.
pub const POLL: Duration = Duration::from_millis(500);

/// The ports this node mirrors, each with its listener and accepting task.
#[derive(Debug, Default)]
pub struct Mirrors {
    held: Mutex<HashMap<u16, (TcpListener, AbortHandle)>>,
    /// Listeners of tunnels that moved from here to another node, kept open for
    /// the next poll to mirror ([`Mirrors::offer`]).
    offered: Mutex<HashMap<u16, (TcpListener, std::time::Instant)>>,
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

    /// Takes `listener`, the public port of a tunnel that moved from this node to
    /// another, to mirror it from the next poll on: the port never closes.
    pub fn offer(&self, port: u16, listener: TcpListener) {
        self.offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port, (listener, std::time::Instant::now()));
    }

    /// The offered listener of `port`, if any.
    fn offered(&self, port: u16) -> Option<TcpListener> {
        self.offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port)
            .map(|(listener, _)| listener)
    }

    fn ports(&self) -> Vec<u16> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.keys().copied().collect()
    }
}

/// Keeps this node's mirrors in step with the directory until dropped (then every
/// mirrored port closes), each viewer counted as `drain`'s work. Viewers of a mirrored port get what a TCP tunnel's get: the
/// viewer caps, the tunnel's stream cap, PROXY headers from trusted proxies.
pub async fn run(
    registry: Registry,
    ports: PortPool,
    limits: ViewerLimits,
    proxy_protocol: Option<ProxyProtocol>,
    drain: Drain,
) {
    let Some(remote) = registry.remote().cloned() else {
        return;
    };
    let mut tasks = JoinSet::new();
    loop {
        registry.release_adopted_elsewhere();
        remote.prune_stale();
        let wanted: Vec<(u16, String)> = remote
            .directory()
            .remote_tcp_ports()
            .into_iter()
            .filter(|p| {
                registry
                    .link_target(&RouteKey::Tcp(*p).to_string())
                    .is_none()
            })
            .filter_map(|p| Some((p, remote.directory().holder(&RouteKey::Tcp(p))?.tunnel_id)))
            .collect();
        let mirrors = remote.mirrors();
        for port in mirrors.ports() {
            if !wanted.iter().any(|(p, _)| *p == port) {
                drop(mirrors.take(port));
                tracing::debug!(port, "stopped mirroring a TCP tunnel's port");
            }
        }
        let held = mirrors.ports();
        // An offered port no other node holds (the tunnel went offline meanwhile)
        // closes, once it had a whole poll to show up.
        mirrors
            .offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p, (_, at)| wanted.iter().any(|(w, _)| w == p) || at.elapsed() < POLL * 2);
        for (port, tunnel_id) in wanted.into_iter().filter(|(p, _)| !held.contains(p)) {
            let bound = mirrors.offered(port).map(Ok);
            let listener = match bound.unwrap_or_else(|| ports.bind_mirror(port)) {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(port, error = %e, "could not mirror a TCP tunnel's port");
                    continue;
                }
            };
            let Ok(accepting) = listener.try_clone() else {
                continue;
            };
            let task = tasks.spawn(crate::tcp_tunnel::relay(
                remote.clone(),
                port,
                accepting,
                tunnel_id,
                limits.clone(),
                proxy_protocol.clone(),
                drain.clone(),
            ));
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
