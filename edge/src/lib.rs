//! The Netbore Edge: accepts agent sessions, checks their hello (token verification),
//! turns every viewer connection on a TCP tunnel's public port into a stream to the
//! agent, routes viewers' HTTP and HTTPS requests by host name to HTTP tunnels
//! ([`http`], certificates from [`certs`]), and passes TLS through unopened to TLS
//! tunnels chosen by SNI ([`tls_tunnel`]). Behind a TCP load balancer it learns each
//! viewer's address from the PROXY protocol header of a trusted proxy
//! ([`proxy_protocol`]).
//!
//! It does not mint tokens (it holds only the control plane's public key). The
//! [`Registry`] is the table of tunnels the control plane places and agents claim.

pub mod acme;
pub mod audit;
pub mod certs;
pub mod dev_ca;
pub mod drain;
pub mod fleet;
#[cfg(test)]
mod future_size;
pub mod handshake;
pub mod http;
pub mod limits;
pub mod ports;
pub mod proxy_protocol;
pub mod registry;
mod tcp_tunnel;
pub mod tls_tunnel;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use netbore_control::DisconnectReason;
use netbore_control::tokens::TokenVerifier;
use netbore_mux::GoAwayCode;
use netbore_transport::Session;
use netbore_transport::proto::{self, EdgeNotice, ErrorCode};
use tokio::sync::mpsc;

pub use audit::AuditLog;
pub use ports::{PortPool, PortRange};
pub use registry::{Registry, RegistryConfig};

/// Streams an agent may open that the Edge has not accepted yet. The Edge expects one
/// (the hello); a small backlog stops an agent from making the Edge buffer a window of
/// data for each of many streams nobody will read.
pub const AGENT_ACCEPT_BACKLOG: usize = 4;

/// How long the Edge waits for an agent to close a session whose last tunnel it took
/// away, before closing it itself.
pub const NOTICE_GRACE: Duration = Duration::from_millis(500);

/// The mux settings of agent sessions at the Edge: `base` with the Edge's backlog.
pub fn agent_session_config(base: netbore_mux::Config) -> netbore_mux::Config {
    netbore_mux::Config {
        accept_backlog: AGENT_ACCEPT_BACKLOG,
        ..base
    }
}

/// Settings of an Edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Public host name used in public URLs.
    pub domain: String,
    /// How long a new agent connection may take to send its hello. Stops idle or
    /// garbage connections from holding a session open.
    pub hello_timeout: Duration,
    /// Keep agents' addresses out of public logs (the audit log still has them).
    pub mask_agent_ip: bool,
    /// The viewer budget TCP tunnels' public ports take from: connections in all and
    /// per address, and streams per tunnel (shared with HTTP ingress).
    pub viewer_limits: limits::ViewerLimits,
    /// PROXY protocol v2 from trusted proxies on TCP tunnels' public ports
    /// (`--proxy-protocol`); `None` reads no header from anyone.
    pub proxy_protocol: Option<proxy_protocol::ProxyProtocol>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            domain: "localhost".into(),
            hello_timeout: Duration::from_secs(10),
            mask_agent_ip: false,
            viewer_limits: limits::ViewerLimits::default(),
            proxy_protocol: None,
        }
    }
}

/// An Edge: verifier, tunnel table, audit log and settings.
#[derive(Debug)]
pub struct Edge {
    config: EdgeConfig,
    verifier: TokenVerifier,
    registry: Registry,
    audit: AuditLog,
    /// Agent sessions that have not said hello yet, in all and per address.
    pending_hellos: limits::ViewerLimits,
    /// The node's drain: sessions tell their agents to move when it starts.
    drain: drain::Drain,
}

/// Agent sessions waiting for their hello at once. Each holds a task, a socket and
/// its buffers for up to `hello_timeout`: stops a flood of sessions that never say
/// hello (the listener's own set-up cap ends when the transport is up).
pub const MAX_PENDING_HELLOS: usize = 1024;

/// Agent sessions waiting for their hello from one address (IPv6: one /64). Stops
/// one client from taking every slot of [`MAX_PENDING_HELLOS`]; an agent opens one
/// session (two while it moves to QUIC).
pub const MAX_PENDING_HELLOS_PER_IP: usize = 16;

impl Edge {
    /// An Edge verifying tokens with `verifier`, serving the tunnels of `registry`,
    /// draining with `drain`.
    pub fn new(
        config: EdgeConfig,
        verifier: TokenVerifier,
        registry: Registry,
        audit: AuditLog,
        drain: drain::Drain,
    ) -> Arc<Self> {
        Arc::new(Edge {
            config,
            verifier,
            registry,
            audit,
            drain,
            pending_hellos: limits::ViewerLimits::new(limits::ViewerCaps {
                max_connections: MAX_PENDING_HELLOS,
                max_connections_per_ip: MAX_PENDING_HELLOS_PER_IP,
                ..limits::ViewerCaps::default()
            }),
        })
    }

    /// The agent's address as public logs show it.
    fn public_agent(&self, peer: std::net::SocketAddr) -> String {
        if self.config.mask_agent_ip {
            "masked".into()
        } else {
            peer.to_string()
        }
    }

    /// Accepts agent sessions from `listener` forever.
    pub async fn serve(self: Arc<Self>, mut listener: netbore_transport::Listener) {
        loop {
            match listener.accept().await {
                Ok(session) => match self.pending_hellos.try_admit(session.peer_addr().ip()) {
                    Ok(slot) => {
                        tokio::spawn(self.clone().run_session(session, slot));
                    }
                    Err(refused) => {
                        tracing::debug!(peer = %session.peer_addr(), ?refused, "too many agent sessions before their hello; closed one");
                        session.close(GoAwayCode::CLOSED_BY_APPLICATION);
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "the agent listener stopped");
                    return;
                }
            }
        }
    }

    /// Runs one agent session: hello, then its tunnels until the session ends.
    /// `pending` is the session's slot among those waiting for a hello, given back
    /// once the hello is answered.
    pub async fn run_session(self: Arc<Self>, session: Session, pending: limits::ViewerSlot) {
        let peer = session.peer_addr();
        let agent = self.public_agent(peer);
        let (closing_tx, mut closing) = mpsc::unbounded_channel();
        let handle = registry::SessionHandle {
            session: session.clone(),
            agent: peer,
            closing: closing_tx,
        };
        let hello = handshake::accept_hello(&self, &session, &handle).await;
        drop(pending);
        let bound = match hello {
            Ok(bound) => bound,
            Err(e) => {
                netbore_metrics::server()
                    .handshake_failures
                    .inc(&[e.code.as_str()]);
                tracing::info!(%agent, code = %e.code, "agent refused: {}", e.message);
                // The agent closes once it has read the answer; closing first could
                // drop it on the way (a QUIC close discards unsent stream data).
                if tokio::time::timeout(NOTICE_GRACE, session.closed())
                    .await
                    .is_err()
                {
                    session.close(GoAwayCode::CLOSED_BY_APPLICATION);
                }
                return;
            }
        };
        if let Some(from) = bound.link_from {
            tracing::debug!(node = %from, "fleet link opened");
            let _hello = bound.hello_stream;
            fleet::link::serve(
                self.registry.clone(),
                session,
                from,
                self.config.hello_timeout,
                self.config.viewer_limits.caps().max_streams_per_tunnel,
                self.drain.clone(),
            )
            .await;
            return;
        }
        let _counted = netbore_metrics::server().agent_session(session.kind().as_str());
        let _session = self.drain.session();
        let (notices_from_agent, hello_stream) = tokio::io::split(bound.hello_stream);
        let mut tasks = tokio::task::JoinSet::new();
        // The Edge's notices, each written whole by one task, so an agent slow to
        // read them holds up only that task; and the fleet's other nodes, told after
        // the hello and on change.
        let (notices, notices_rx) = mpsc::channel(NOTICE_QUEUE);
        let nodes = self.registry.directory().map(|d| d.watch_nodes());
        tasks.spawn(write_notices(hello_stream, notices_rx, nodes));
        // The agent has no reason to open more streams after its hello: refuse them.
        let extra = session.clone();
        tasks.spawn(async move {
            while let Some(mut stream) = extra.accept().await {
                stream.reset();
            }
        });
        // What the agent says on the hello stream: the tunnels it moved elsewhere.
        let (moved_tx, mut moved_by_agent) = mpsc::channel(4);
        tasks.spawn(read_agent_notices(notices_from_agent, moved_tx));
        // Moved tunnels whose new holder this node's directory shows now.
        let (shown_tx, mut shown_elsewhere) = mpsc::unbounded_channel();
        // Tunnels this session serves: id → what it holds here.
        let mut live = HashMap::new();
        for t in bound.tunnels {
            tracing::info!(tunnel_id = %t.tunnel_id, public_url = %t.public_url, %agent, "tunnel online");
            self.audit
                .record("tunnel_online", &t.tunnel_id, &t.public_url, peer);
            let (task, hand_over) = match t.claimed {
                registry::Claimed::Tcp { listener } => {
                    let (hand_over, moved) = tokio::sync::oneshot::channel();
                    let task = tasks.spawn(tcp_tunnel::run(
                        session.clone(),
                        t.slot,
                        listener,
                        t.tunnel_id.clone(),
                        self.config.viewer_limits.clone(),
                        self.config.proxy_protocol.clone(),
                        self.drain.clone(),
                        moved,
                    ));
                    (Some(task), Some(hand_over))
                }
                registry::Claimed::Http | registry::Claimed::Tls => (None, None),
            };
            live.insert(
                t.tunnel_id,
                Live {
                    generation: t.generation,
                    url: t.public_url,
                    task,
                    hand_over,
                    moving: false,
                },
            );
        }
        let mut told_to_move = false;
        // Tunnels moved elsewhere whose relayed streams still come here a while.
        let mut moved_away: Vec<registry::Moved> = Vec::new();
        let reason = loop {
            tokio::select! {
                reason = session.closed() => break reason.to_string(),
                () = self.drain.reached(drain::Phase::Draining), if !told_to_move => {
                    told_to_move = true;
                    let directory = self.registry.directory();
                    let node = directory.map(|d| d.node_id().to_string());
                    let controls = directory.map(|d| d.other_controls()).unwrap_or_default();
                    let message = match &node {
                        Some(node) => format!("node {node} is draining; moving the tunnels to another node of the fleet"),
                        None => "the server is draining (restarting); its tunnels come back when it does".to_string(),
                    };
                    if !tell(&notices, EdgeNotice::Draining { node, controls, message }).await {
                        session.close(GoAwayCode::CLOSED_BY_APPLICATION);
                        break "it read none of its notices".to_string();
                    }
                }
                () = self.drain.reached(drain::Phase::Stopping) => {
                    session.close_and_flush(GoAwayCode::NORMAL, NOTICE_GRACE).await;
                    break "the server is stopping".to_string();
                }
                Some(moved) = moved_by_agent.recv() => {
                    // Only a move this node asked for, to a fleet's other node: on a
                    // single server a tunnel has nowhere else to be.
                    if !told_to_move || self.registry.remote().is_none() {
                        tracing::debug!(%agent, "ignored a move this node did not ask for");
                        continue;
                    }
                    for tunnel_id in moved {
                        let Some(l) = live.get_mut(&tunnel_id).filter(|l| !l.moving) else { continue };
                        l.moving = true;
                        tasks.spawn(until_shown_elsewhere(self.registry.clone(), tunnel_id, shown_tx.clone()));
                    }
                }
                Some((tunnel_id, shown)) = shown_elsewhere.recv() => {
                    if !shown {
                        // The directory never showed it elsewhere: keep serving it
                        // here (a later `moved` looks again); the session's end
                        // releases it.
                        if let Some(l) = live.get_mut(&tunnel_id) {
                            l.moving = false;
                        }
                        tracing::warn!(%tunnel_id, %agent, "the agent moved a tunnel this node's directory does not show elsewhere; serving it here until the session ends");
                        continue;
                    }
                    let Some(l) = live.remove(&tunnel_id) else { continue };
                    // Streams in flight on this session go on; new viewers go to the
                    // new holder, and so do the streams of nodes that have heard
                    // of the move (those that have not, yet, still reach this
                    // session for a while).
                    moved_away.extend(self.registry.release_moved(&tunnel_id, l.generation));
                    if let (Some(hand_over), Some(remote)) = (l.hand_over, self.registry.remote()) {
                        let _ = hand_over.send(remote.clone());
                    }
                    tracing::info!(%tunnel_id, %agent, "tunnel moved to another node");
                    self.audit.record("tunnel_moved", &tunnel_id, &l.url, peer);
                }
                Some(c) = closing.recv() => {
                    let Some(l) = live.remove(&c.tunnel_id) else { continue };
                    if let Some(task) = l.task {
                        task.abort();
                    }
                    let url = l.url;
                    let (code, message) = match c.reason {
                        DisconnectReason::Deleted => (ErrorCode::TunnelDeleted, format!("tunnel {} ({url}) was deleted through the control API", c.tunnel_id)),
                        DisconnectReason::Replaced => (ErrorCode::Replaced, format!("tunnel {} ({url}) was taken over by another agent with its recreate token", c.tunnel_id)),
                        DisconnectReason::KeyRevoked => (ErrorCode::Unauthorized, format!("tunnel {} ({url}) went offline because its API key was revoked; ask the server's operator for a new key", c.tunnel_id)),
                    };
                    tracing::info!(tunnel_id = %c.tunnel_id, %agent, %code, "tunnel taken offline");
                    self.audit.record(code.as_str(), &c.tunnel_id, &url, peer);
                    if !tell(&notices, EdgeNotice::TunnelClosed { tunnel_id: c.tunnel_id, code, message }).await {
                        session.close(GoAwayCode::CLOSED_BY_APPLICATION);
                        break "it read none of its notices".to_string();
                    }
                    if live.is_empty() {
                        // The agent closes the session once it has read the notice;
                        // closing first could drop the notice on the way.
                        if tokio::time::timeout(NOTICE_GRACE, session.closed()).await.is_err() {
                            session.close(GoAwayCode::CLOSED_BY_APPLICATION);
                        }
                        break "it serves no tunnel any more".to_string();
                    }
                }
            }
        };
        // Every tunnel task stops: viewers are disconnected at once, and the public
        // ports are closed before the tunnels are released, so an agent that
        // reclaims its tunnel at once finds its port free.
        tasks.shutdown().await;
        for (tunnel_id, l) in live {
            self.registry.release(&tunnel_id, l.generation);
            self.audit
                .record("tunnel_offline", &tunnel_id, &l.url, peer);
        }
        // Streams relayed for the moved tunnels no longer come here.
        drop(moved_away);
        tracing::info!(%agent, %reason, "agent session ended; its tunnels are offline");
    }
}

/// A tunnel an agent session serves at this node.
struct Live {
    generation: u64,
    url: String,
    /// A TCP tunnel's task (its public port and viewers).
    task: Option<tokio::task::AbortHandle>,
    /// Tells a TCP tunnel's task that the tunnel moved to another node.
    hand_over: Option<tokio::sync::oneshot::Sender<Arc<fleet::remote::Remote>>>,
    /// The agent said it moved; waiting for the directory to show where.
    moving: bool,
}

/// How long this node looks for a moved tunnel's new holder in its directory before
/// it gives up and serves the tunnel here until the session ends.
pub const MOVE_GRACE: Duration = Duration::from_secs(5);

/// Notices a session's loop may queue for its writer before it waits.
const NOTICE_QUEUE: usize = 8;

/// How long a session's loop waits for room in its writer's queue. The queue stays
/// full only when the agent leaves a whole stream window of notices unread; such an
/// agent is cut rather than let it stall the loop that serves its tunnels and drains.
const NOTICE_STALL: Duration = Duration::from_secs(10);

/// Queues `notice` for the session's writer; false when the queue stayed full for
/// [`NOTICE_STALL`] (the caller closes the session). A writer that ended (the stream
/// broke) counts as told: the session is ending anyway.
async fn tell(notices: &mpsc::Sender<EdgeNotice>, notice: EdgeNotice) -> bool {
    tokio::time::timeout(NOTICE_STALL, notices.send(notice))
        .await
        .is_ok()
}

/// Writes the Edge's notices on the hello stream, each whole: those `queued` by the
/// session, and the latest list of the fleet's other nodes from `nodes` (at once, then
/// on each change; a change while an older list is being written sends only the
/// newest). Ends with the session's loop or the stream.
async fn write_notices(
    mut to_agent: tokio::io::WriteHalf<netbore_transport::Stream>,
    mut queued: mpsc::Receiver<EdgeNotice>,
    mut nodes: Option<tokio::sync::watch::Receiver<Vec<fleet::FleetNode>>>,
) {
    if let Some(nodes) = &mut nodes {
        nodes.mark_changed();
    }
    loop {
        let notice = tokio::select! {
            biased;
            notice = queued.recv() => match notice {
                Some(notice) => notice,
                None => return,
            },
            changed = async { nodes.as_mut().expect("guarded").changed().await }, if nodes.is_some() => {
                let Some(watch) = nodes.as_mut().filter(|_| changed.is_ok()) else {
                    nodes = None;
                    continue;
                };
                EdgeNotice::Nodes { nodes: watch.borrow_and_update().clone() }
            }
        };
        if proto::write_message(&mut to_agent, &notice).await.is_err() {
            return;
        }
    }
}

/// Reads the agent's notices on the hello stream and passes on the tunnels it says it
/// moved; ends with the stream or at the first message that is not a notice.
async fn read_agent_notices(
    mut from_agent: tokio::io::ReadHalf<netbore_transport::Stream>,
    moved: mpsc::Sender<Vec<String>>,
) {
    loop {
        match proto::read_message::<proto::AgentNotice>(&mut from_agent).await {
            Ok(proto::AgentNotice::Moved { tunnel_ids }) => {
                if moved.send(tunnel_ids).await.is_err() {
                    return;
                }
            }
            Ok(other) => tracing::debug!(?other, "ignored a notice this Edge does not know"),
            // A notice of a newer agent: whole, so the next one can be read.
            Err(proto::MessageError::Json(e)) => {
                tracing::debug!(error = %e, "ignored a notice this Edge does not know");
            }
            Err(e) => {
                tracing::debug!(error = %e, "the agent's notice stream ended");
                return;
            }
        }
    }
}

/// Waits until the directory shows `tunnel_id` held by another node, then says so on
/// `shown` (`true`), or says `false` after [`MOVE_GRACE`]: until then this node keeps
/// serving the tunnel through the old session, so no viewer finds it nowhere.
async fn until_shown_elsewhere(
    registry: Registry,
    tunnel_id: String,
    shown: mpsc::UnboundedSender<(String, bool)>,
) {
    let deadline = tokio::time::Instant::now() + MOVE_GRACE;
    let mut held = registry.held_by_another_node(&tunnel_id);
    while !held && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(MOVE_POLL).await;
        held = registry.held_by_another_node(&tunnel_id);
    }
    let _ = shown.send((tunnel_id, held));
}

/// How often a moved tunnel's new holder is looked for in the directory.
const MOVE_POLL: Duration = Duration::from_millis(100);
