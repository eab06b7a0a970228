//! The node-to-node link (`docs/protocols/fleet.md`): a node relays a viewer whose
//! tunnel another node holds over a session to that node's agent listener.
//!
//! - The dialing side ([`LinkPool`]) keeps one session per node, dialed on first
//!   use over the `tls` transport with the holder's certificate pinned by the
//!   fingerprint it published, and proven with the fleet secret in its hello.
//! - The holding side ([`serve`]) checks the proof, then relays each stream the
//!   link opens to the agent session serving the stream's route, unopened.
//!
//! Agents and viewers never speak it: a hello with a link and no valid proof is
//! refused like a bad token, and viewers only reach ingress listeners.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use netbore_transport::link::{LinkHello, LinkRoute, check_link_proof, link_proof};
use netbore_transport::proto::{
    self, Hello, HelloReply, OriginStatus, PROTOCOL_VERSION, StreamHeader,
};
use netbore_transport::tls::ClientTls;
use netbore_transport::{Dial, Session, Stream, TransportKind, pipe};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use super::{Directory, Holder, RouteKey};
use crate::drain::{Drain, Work};
use crate::registry::Registry;

/// How long dialing a node and its hello may take, and how long a relayed stream may
/// take to say which route it is for.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(5);

/// Streams a link may have open and not yet accepted by the holder (an agent session
/// gets [`crate::AGENT_ACCEPT_BACKLOG`]): a burst of viewers at the relaying node.
pub const LINK_ACCEPT_BACKLOG: usize = 1024;

/// After a failed dial, how long requests for that node fail at once instead of
/// dialing again (a dead node stays in the node list until its lease ends).
pub const REDIAL_AFTER: Duration = Duration::from_secs(1);

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// This node has not read the fleet secret yet.
    #[error("this node has not joined the fleet yet (no fleet secret)")]
    NoSecret,
    /// Dialing or the hello failed.
    #[error("could not open a link to node {node} at {addr}: {reason}")]
    Dial {
        /// The node.
        node: String,
        /// Its agent listener.
        addr: String,
        /// What went wrong.
        reason: String,
    },
}

/// Whether a link hello proves membership of the fleet `directory` belongs to.
pub fn accepts(directory: &dyn Directory, link: &LinkHello) -> bool {
    link.to == directory.node_id()
        && directory
            .link_secret()
            .is_some_and(|secret| check_link_proof(&secret, &link.from, &link.to, &link.proof))
}

/// Serves an accepted link from node `from`: relays every stream it opens until the
/// session ends, each tunnel's streams under `max_streams_per_tunnel` together with
/// its viewers here, each counted as `drain`'s work. Dropping the future stops every
/// relay at once.
pub async fn serve(
    registry: Registry,
    session: Session,
    from: String,
    timeout: Duration,
    max_streams_per_tunnel: usize,
    drain: Drain,
) {
    let mut relays = JoinSet::new();
    loop {
        tokio::select! {
            stream = session.accept() => match stream {
                Some(stream) => {
                    let work = drain.work();
                    relays.spawn(relay(registry.clone(), stream, timeout, max_streams_per_tunnel, work));
                }
                None => break,
            },
            Some(_) = relays.join_next(), if !relays.is_empty() => {}
        }
    }
    let reason = session.closed().await;
    tracing::debug!(node = %from, %reason, "fleet link ended");
}

/// Relays one stream of a link to the agent serving its route, counted as `_work`
/// until it ends.
async fn relay(
    registry: Registry,
    mut stream: Stream,
    timeout: Duration,
    max_streams: usize,
    _work: Work,
) {
    let head = async {
        let route = LinkRoute::read(&mut stream).await?;
        let header = StreamHeader::read(&mut stream).await?;
        Ok::<_, std::io::Error>((route, header))
    };
    let (route, header) = match tokio::time::timeout(timeout, head).await {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a link stream began with garbage");
            stream.reset();
            return;
        }
        Err(_) => {
            stream.reset();
            return;
        }
    };
    let Some(target) = registry.relay_target(&route.0) else {
        tracing::debug!(route = %route.0, "a link stream for a tunnel not online here");
        not_held(stream, &route).await;
        return;
    };
    // The relaying node counted the viewer against its own share; a TCP or TLS
    // tunnel's cap holds here too, so a fleet of nodes cannot give one tunnel more
    // streams than one node would.
    let counted = match &target.streams {
        Some(count) => match count.try_take(max_streams) {
            Some(guard) => Some(guard),
            None => {
                tracing::debug!(tunnel_id = %target.tunnel_id, "a link stream over the tunnel's stream cap");
                stream.reset();
                return;
            }
        },
        None => None,
    };
    let _counted = counted;
    let mut agent = match target.session.open().await {
        Ok(s) => s,
        Err(e) if e.busy().is_none() => {
            tracing::debug!(tunnel_id = %target.tunnel_id, error = %e, "the agent's session for a link stream ended");
            not_held(stream, &route).await;
            return;
        }
        Err(e) => {
            tracing::debug!(tunnel_id = %target.tunnel_id, error = %e, "could not open a stream to the agent for a link");
            stream.reset();
            return;
        }
    };
    let header = StreamHeader {
        slot: target.slot,
        viewer: header.viewer,
    };
    if agent.write_all(&header.encode()).await.is_err() {
        stream.reset();
        return;
    }
    // Cut: both streams are reset, and the relaying node resets its viewer in turn.
    if let Err(e) = pipe::join_streams(stream, agent).await {
        tracing::debug!(tunnel_id = %target.tunnel_id, error = %e, "a relayed stream ended with an error");
    }
}

/// Ends a link stream whose tunnel is not served here: an HTTP route's with
/// [`OriginStatus::NotHeld`] where the agent's status would be, so the relaying node
/// sends the request to another node holding the tunnel (nothing reached an agent);
/// a TLS or TCP route's, whose bytes are the viewer's own, with a reset.
async fn not_held(mut stream: Stream, route: &LinkRoute) {
    if !matches!(RouteKey::parse(&route.0), Some(RouteKey::Http(_))) {
        stream.reset();
        return;
    }
    let said = async {
        stream.write_all(&OriginStatus::NotHeld.encode()).await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(LINK_TIMEOUT, said).await.is_err() {
        stream.reset();
    }
}

/// One session per node this node relays to, dialed on first use.
#[derive(Debug)]
pub struct LinkPool {
    directory: Arc<dyn Directory>,
    mux: netbore_mux::Config,
    /// node id → its link, each behind its own lock, so a slow dial to one node
    /// holds up only the viewers of that node.
    nodes: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Link>>>>,
}

/// The link to one node.
#[derive(Debug, Default)]
struct Link {
    /// The node's address and certificate, the session and the hello stream that
    /// keeps it.
    up: Option<(String, String, Session, Stream)>,
    /// Dials fail at once until then.
    failed_until: Option<tokio::time::Instant>,
}

impl LinkPool {
    /// A pool dialing with `mux` settings, proving membership with `directory`'s
    /// secret.
    pub fn new(directory: Arc<dyn Directory>, mux: netbore_mux::Config) -> Self {
        LinkPool {
            directory,
            mux,
            nodes: std::sync::Mutex::default(),
        }
    }

    /// The live session to `holder`, dialed now if there is none.
    pub async fn session(&self, holder: &Holder) -> Result<Session, LinkError> {
        let link = {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            // Links to nodes that left are dropped once their sessions end.
            nodes.retain(|node, link| {
                node == &holder.node
                    || link
                        .try_lock()
                        .map_or(true, |l| l.up.as_ref().is_some_and(|u| !u.2.is_closed()))
            });
            nodes.entry(holder.node.clone()).or_default().clone()
        };
        let mut link = link.lock().await;
        if let Some((addr, cert, session, _)) = &link.up
            && *addr == holder.addr
            && *cert == holder.cert
            && !session.is_closed()
        {
            return Ok(session.clone());
        }
        link.up = None;
        let failed = |reason: String| LinkError::Dial {
            node: holder.node.clone(),
            addr: holder.addr.clone(),
            reason,
        };
        if link
            .failed_until
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return Err(failed("the last attempt failed a moment ago".into()));
        }
        // Boxed: the dial (a TLS handshake) is large, and every viewer's future that may
        // relay through a link would otherwise carry it.
        let reason = match tokio::time::timeout(LINK_TIMEOUT, Box::pin(self.dial(holder))).await {
            Ok(Ok((session, hello))) => {
                link.failed_until = None;
                link.up = Some((
                    holder.addr.clone(),
                    holder.cert.clone(),
                    session.clone(),
                    hello,
                ));
                return Ok(session);
            }
            Ok(Err(reason)) => reason,
            Err(_) => format!("no answer within {LINK_TIMEOUT:?}"),
        };
        link.failed_until = Some(tokio::time::Instant::now() + REDIAL_AFTER);
        Err(failed(reason))
    }

    async fn dial(&self, holder: &Holder) -> Result<(Session, Stream), String> {
        let secret = self
            .directory
            .link_secret()
            .ok_or_else(|| LinkError::NoSecret.to_string())?;
        let from = self.directory.node_id().to_string();
        let tls = ClientTls::pinned_leaf(&holder.cert).map_err(|e| e.to_string())?;
        let dial = Dial {
            kind: TransportKind::Tls,
            addr: holder.addr.clone(),
            tls: Some(tls),
            proxy: None,
            mux: self.mux.clone(),
        };
        let session = dial.connect().await.map_err(|e| e.to_string())?;
        let mut stream = session.open().await.map_err(|e| e.to_string())?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            tokens: Vec::new(),
            agent: concat!("netbore-node/", env!("CARGO_PKG_VERSION")).into(),
            link: Some(LinkHello {
                proof: link_proof(&secret, &from, &holder.node),
                from,
                to: holder.node.clone(),
            }),
        };
        proto::write_message(&mut stream, &hello)
            .await
            .map_err(|e| e.to_string())?;
        match proto::read_message::<HelloReply>(&mut stream).await {
            Ok(HelloReply::Ok { .. }) => Ok((session, stream)),
            Ok(HelloReply::Error(body)) => Err(body.message),
            Err(e) => Err(format!("no answer to the link hello: {e}")),
        }
    }
}

/// The stream preamble of a relayed stream for `route`, `viewer`'s.
pub fn preamble(route: &str) -> Option<Vec<u8>> {
    LinkRoute(route.to_string()).encode()
}

/// Opens a relayed stream for `route` on `session` (a link) with the viewer's header.
pub async fn open(session: &Session, route: &[u8], viewer: SocketAddr) -> std::io::Result<Stream> {
    let mut stream = session.open().await.map_err(std::io::Error::other)?;
    let mut head = route.to_vec();
    head.extend_from_slice(&StreamHeader { slot: 0, viewer }.encode());
    stream.write_all(&head).await?;
    Ok(stream)
}

#[cfg(test)]
mod size_tests {
    use crate::future_size::{PER_CONNECTION_MAX, of5};

    #[test]
    fn a_relayed_stream_task_is_small() {
        let size = of5(super::relay);
        assert!(
            size <= PER_CONNECTION_MAX,
            "a relayed stream's task takes {size} bytes; box the rare path that made it grow"
        );
    }
}
