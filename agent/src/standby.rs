//! Sessions on more nodes of a fleet (`--ha N`; `docs/protocols/fleet.md`, "Agents on
//! several nodes"). Besides its session to the node that placed its tunnels (the
//! primary), the agent holds up to N - 1 more, each to another node, where it reclaims
//! the same tunnels with their recreate tokens and says hello. Every node the agent
//! has a session with serves the tunnels' viewers itself, and the fleet's directory
//! lists each such node as a holder, so the other nodes relay to whichever answers:
//! losing one node costs no new request. A standby whose node ends it, drains or
//! cannot be reached is replaced on another node.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use netbore_control::api::EdgeCandidate;
use netbore_transport::proto::{EdgeNotice, FleetNode};
use netbore_transport::tls::ClientTls;
use netbore_transport::{Session, Stream};
use tokio::io::WriteHalf;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::origin::{self, Origin};
use crate::{AgentConfig, AgentError, Connected, ControlUrl, Held, Via, backoff, moving};

/// How long a node that drains (or that the first session left) is not asked for a
/// standby: until the node lists the agent hears leave it out (a draining node is no
/// candidate; a dead one leaves the list after its lease), and no longer, so a node
/// restarted in a rolling restart gets its standbys back.
const DRAINING_AVOID: Duration = Duration::from_secs(10);

/// How long the node of a standby just promoted is not asked for a standby.
const PROMOTED_AVOID: Duration = Duration::from_secs(5);

/// How long a standby session may take to say goodbye when the agent stops.
const GOODBYE_LIMIT: Duration = Duration::from_millis(500);

/// What the standby sessions follow: the primary session, as of its last hello.
#[derive(Clone)]
pub(crate) struct Primary {
    /// The id of the node the primary session is on (`None` on a single server).
    pub(crate) node: Option<String>,
    /// The fleet's other nodes that take tunnels, best first, as that node last
    /// told them.
    pub(crate) others: Vec<FleetNode>,
    /// The tunnels' recreate tokens, names and ports.
    pub(crate) held: Vec<Held>,
    /// Where the tunnels' streams go.
    pub(crate) origins: Vec<Origin>,
}

/// How many sessions the agent holds in all: `ha`, or by default 2 in a fleet; at
/// most one on each node (`nodes` is how many there are).
pub(crate) fn sessions(ha: Option<usize>, nodes: usize) -> usize {
    let nodes = nodes.max(1);
    match ha {
        Some(n) => n.clamp(1, nodes),
        None => nodes.min(2),
    }
}

/// The other nodes among `edges`, the candidates a control plane listed with
/// `primary`'s node.
pub(crate) fn others(edges: &[EdgeCandidate], primary: Option<&str>) -> Vec<FleetNode> {
    edges
        .iter()
        .filter_map(|e| {
            let id = e.node.clone()?;
            (Some(id.as_str()) != primary).then_some(FleetNode {
                id,
                control_url: e.control_url.clone()?,
            })
        })
        .collect()
}

/// A standby session handed over to become the primary one, and the control API of
/// its node.
pub(crate) type Promoted = (Connected, ControlUrl);

/// The owner of the standby sessions. Dropping it stops them at once;
/// [`Standbys::stop`] closes them with a goodbye first.
pub(crate) struct Standbys {
    primary: watch::Sender<Option<Primary>>,
    promote: mpsc::Sender<oneshot::Sender<Option<Promoted>>>,
    /// Nodes that drain: no standby there for a while.
    draining: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Standbys {
    /// Starts the manager; it does nothing until [`Standbys::follow`].
    pub(crate) fn start(config: &AgentConfig) -> Self {
        let (primary, follow) = watch::channel(None);
        let (promote, promotions) = mpsc::channel(1);
        let (draining, drains) = mpsc::unbounded_channel();
        let told = Told {
            primary: follow,
            promotions,
            drains,
        };
        let task = tokio::spawn(manage(Arc::new(config.clone()), told));
        Standbys {
            primary,
            promote,
            draining,
            task,
        }
    }

    /// The primary session is online (again): standbys go to other nodes than its.
    pub(crate) fn follow(&self, primary: Primary) {
        self.primary.send_replace(Some(primary));
    }

    /// The primary session is gone, or the tunnels are being reclaimed on another
    /// node: standbys still connecting are stopped, so none says hello where the
    /// reclaim lands (its hello would take the tunnels from the new primary). Those
    /// online stay; [`Standbys::follow`] resumes.
    pub(crate) fn halt(&self) {
        self.primary.send_replace(None);
    }

    /// Node `node` drains: no standby is held there for a while (its control API
    /// would place the tunnels there again, over the session finishing there).
    pub(crate) fn avoid(&self, node: String) {
        let _ = self.draining.send(node);
    }

    /// The primary session's node told the fleet's other nodes (they changed).
    pub(crate) fn learn(&self, others: Vec<FleetNode>) {
        self.primary.send_modify(|p| {
            if let Some(p) = p {
                p.others = others;
            }
        });
    }

    /// A standby session that is online, taken out of the standbys to become the
    /// primary one (the primary's node died or drains): its node serves the tunnels
    /// already, so nothing is reclaimed and no viewer waits. `None` when there is none.
    pub(crate) async fn promote(&self) -> Option<Promoted> {
        let (reply, answer) = oneshot::channel();
        self.promote.send(reply).await.ok()?;
        answer.await.ok().flatten()
    }

    /// Closes the standby sessions, telling their nodes, and waits for that.
    pub(crate) async fn stop(mut self) {
        // The manager sees the channel close and says goodbye.
        drop(std::mem::replace(&mut self.primary, watch::channel(None).0));
        let _ = tokio::time::timeout(GOODBYE_LIMIT * 2, &mut self.task).await;
    }
}

impl Drop for Standbys {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a standby session ended.
enum Ended {
    /// Its node closed it, or took one of its tunnels away.
    Closed,
    /// Its node drains: the session is handed to [`moving::retire`] with the
    /// tunnels it served.
    Draining(Session, WriteHalf<Stream>, Vec<String>),
    /// Handed over to become the primary session.
    Promoted(Box<Connected>, ControlUrl),
}

/// A standby session online.
struct Up {
    session: Session,
    /// Asks it to hand itself over.
    promote: oneshot::Sender<()>,
    since: Instant,
}

/// A standby session that lasted this long was healthy: its node's failures are
/// forgotten when it ends.
const HEALTHY_FOR: Duration = Duration::from_secs(30);

/// The least wait before a node is asked for a standby again.
const RETRY_FLOOR: Duration = Duration::from_secs(1);

/// The standby tasks and what the manager knows of each node.
#[derive(Default)]
struct Slots {
    tasks: JoinSet<(String, Result<Ended, AgentError>)>,
    /// Each task's node, and the tasks not online yet (stopped by a halt).
    nodes: HashMap<tokio::task::Id, String>,
    connecting: HashMap<String, tokio::task::AbortHandle>,
    up: HashMap<String, Up>,
    /// Nodes not to ask again until then, and failures in a row per node.
    avoid: HashMap<String, Instant>,
    failures: HashMap<String, u32>,
    /// This agent's random order of the nodes, and the source of its jitter.
    order: std::collections::hash_map::RandomState,
}

impl Slots {
    /// Task `id`'s standby said hello; one whose task has ended already (its end
    /// was seen first) is closed.
    fn online(&mut self, id: tokio::task::Id, standby: Up) {
        match self.nodes.get(&id) {
            Some(node) => {
                self.connecting.remove(node);
                self.up.insert(node.clone(), standby);
            }
            None => standby.session.close(netbore_mux::GoAwayCode::NORMAL),
        }
    }

    /// `node` drains: a standby still connecting there stops (its reclaim would
    /// take the tunnels from a session finishing there), and none goes there for a
    /// while. One online there hears the drain itself.
    fn draining(&mut self, node: String) {
        if let Some(connecting) = self.connecting.remove(&node) {
            connecting.abort();
        }
        self.avoid.insert(node, Instant::now() + DRAINING_AVOID);
    }

    fn busy(&self) -> usize {
        self.nodes.len()
    }

    fn has(&self, node: &str) -> bool {
        self.nodes.values().any(|n| n == node)
    }

    /// `node` failed (or its standby ended): not asked again for a while, longer
    /// after each failure in a row, never sooner than [`RETRY_FLOOR`], plus up to a
    /// second of jitter so agents that lost the same node do not come back together.
    fn back_off(&mut self, node: &str, config: &AgentConfig) {
        let failures = self.failures.entry(node.to_string()).or_default();
        *failures += 1;
        let jitter = Duration::from_millis(
            self.order
                .hash_one((node, *failures, std::time::SystemTime::now()))
                % 1000,
        );
        let delay = backoff::delay(*failures, config.max_backoff).max(RETRY_FLOOR) + jitter;
        self.avoid.insert(node.to_string(), Instant::now() + delay);
    }
}

/// Keeps `sessions - 1` standby sessions on nodes other than the primary's, until
/// `primary`'s sender is dropped; hands one over when `promotions` asks.
/// What the agent's loop tells the manager.
struct Told {
    /// The primary session ([`Standbys::follow`], [`Standbys::halt`]); closed when
    /// the agent stops.
    primary: watch::Receiver<Option<Primary>>,
    /// Promotions asked for ([`Standbys::promote`]).
    promotions: mpsc::Receiver<oneshot::Sender<Option<Promoted>>>,
    /// Nodes that drain ([`Standbys::avoid`]).
    drains: mpsc::UnboundedReceiver<String>,
}

async fn manage(config: Arc<AgentConfig>, told: Told) {
    let Told {
        mut primary,
        mut promotions,
        mut drains,
    } = told;
    let tls = Arc::new(OnceLock::new());
    let mut slots = Slots::default();
    let (up_tx, mut up_rx) = mpsc::channel::<(tokio::task::Id, Up)>(8);
    let mut retiring = JoinSet::new();
    // A promotion asked for, and the node whose standby hands itself over.
    let mut promoting: Option<(String, oneshot::Sender<Option<Promoted>>)> = None;
    loop {
        // Standbys that said hello count as online before anything is decided: a
        // halt must not abort them, a promotion may take them.
        while let Ok((id, standby)) = up_rx.try_recv() {
            slots.online(id, standby);
        }
        // Told before the primary changed, so heeded before it is followed.
        while let Ok(node) = drains.try_recv() {
            slots.draining(node);
        }
        let now = Instant::now();
        slots.avoid.retain(|_, until| *until > now);
        let current = primary.borrow().clone();
        match current {
            None => {
                for (_, connecting) in slots.connecting.drain() {
                    connecting.abort();
                }
            }
            Some(p) => {
                // A standby on the primary's node ended there: the primary's reclaim
                // took the tunnels over.
                if let Some(gone) = p.node.as_ref().and_then(|n| slots.up.remove(n)) {
                    gone.session.close(netbore_mux::GoAwayCode::NORMAL);
                }
                let nodes = p.others.len() + usize::from(p.node.is_some());
                let wanted = sessions(config.ha, nodes).saturating_sub(1);
                while slots.busy() < wanted {
                    // In this agent's own order of the nodes, so the standbys of
                    // many agents spread over the fleet.
                    let Some((node, control)) = p
                        .others
                        .iter()
                        .filter(|n| {
                            Some(&n.id) != p.node.as_ref()
                                && !slots.has(&n.id)
                                && !slots.avoid.contains_key(&n.id)
                        })
                        .filter_map(|n| {
                            Some((n.id.clone(), n.control_url.parse::<ControlUrl>().ok()?))
                        })
                        .min_by_key(|(id, _)| slots.order.hash_one(id))
                    else {
                        break;
                    };
                    let task = slots.tasks.spawn(hold(
                        config.clone(),
                        tls.clone(),
                        node.clone(),
                        control,
                        p.held.clone(),
                        p.origins.clone(),
                        up_tx.clone(),
                    ));
                    slots.nodes.insert(task.id(), node.clone());
                    slots.connecting.insert(node, task);
                }
            }
        }
        let retry = slots.avoid.values().min().copied();
        tokio::select! {
            changed = primary.changed() => if changed.is_err() {
                break;
            },
            Some(reply) = promotions.recv(), if promoting.is_none() => {
                // Any standby still open will do.
                let mut asked = None;
                while let Some(node) = slots.up.keys().next().cloned() {
                    let standby = slots.up.remove(&node).expect("listed");
                    if !standby.session.is_closed() && standby.promote.send(()).is_ok() {
                        asked = Some(node);
                        break;
                    }
                }
                match asked {
                    Some(node) => {
                        // The node the primary session leaves died or drains.
                        let left = primary.borrow().as_ref().and_then(|p| p.node.clone());
                        if let Some(left) = left {
                            slots.avoid.insert(left, Instant::now() + DRAINING_AVOID);
                        }
                        promoting = Some((node, reply));
                    }
                    None => {
                        let _ = reply.send(None);
                    }
                }
            }
            Some((id, standby)) = up_rx.recv() => slots.online(id, standby),
            Some(node) = drains.recv() => slots.draining(node),
            Some(done) = slots.tasks.join_next_with_id() => {
                let (node, result) = match done {
                    Ok((id, (node, result))) => {
                        slots.nodes.remove(&id);
                        (node, Some(result))
                    }
                    // Stopped by a halt: only its node is known.
                    Err(e) if e.is_cancelled() => (slots.nodes.remove(&e.id()).unwrap_or_default(), None),
                    Err(e) => {
                        let node = slots.nodes.remove(&e.id()).unwrap_or_default();
                        let failed = AgentError::EdgeUnreachable { addr: node.clone(), reason: e.to_string() };
                        (node, Some(Err(failed)))
                    }
                };
                slots.connecting.remove(&node);
                if let Some(up) = slots.up.remove(&node)
                    && up.since.elapsed() > HEALTHY_FOR
                {
                    slots.failures.remove(&node);
                }
                let mut result = result;
                if promoting.as_ref().is_some_and(|(n, _)| *n == node) {
                    let (_, reply) = promoting.take().expect("checked");
                    match result.take() {
                        Some(Ok(Ended::Promoted(connected, control))) => {
                            tracing::info!(%node, "the standby session takes over as the primary one");
                            // Not a standby's node again before the agent follows it
                            // as the primary's.
                            slots.avoid.insert(node, Instant::now() + PROMOTED_AVOID);
                            let _ = reply.send(Some((*connected, control)));
                            continue;
                        }
                        other => {
                            let _ = reply.send(None);
                            result = other;
                        }
                    }
                }
                match result {
                    Some(Ok(Ended::Promoted(connected, _))) => {
                        // Asked for by a promotion that gave up: not needed now.
                        connected.session.close(netbore_mux::GoAwayCode::NORMAL);
                    }
                    Some(Ok(Ended::Draining(session, to_edge, ids))) => {
                        tracing::info!(%node, "the node of a standby session drains; holding one on another node");
                        slots.avoid.insert(node, Instant::now() + DRAINING_AVOID);
                        let origins = primary.borrow().as_ref().map(|p| p.origins.clone()).unwrap_or_default();
                        moving::retire(&mut retiring, session, to_edge, origins, ids, config.connect_timeout);
                    }
                    Some(Ok(Ended::Closed)) => {
                        tracing::info!(%node, "a standby session ended; holding one again");
                        slots.back_off(&node, &config);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(%node, error = %e, "could not hold a standby session on another node");
                        slots.back_off(&node, &config);
                    }
                    None => {}
                }
            }
            () = async { tokio::time::sleep_until(retry.expect("guarded")).await }, if retry.is_some() => {}
            Some(_) = retiring.join_next(), if !retiring.is_empty() => {}
        }
    }
    // Goodbyes, all at once.
    let mut goodbyes = JoinSet::new();
    for (_, standby) in slots.up.drain() {
        goodbyes.spawn(async move {
            standby
                .session
                .close_and_flush(netbore_mux::GoAwayCode::NORMAL, GOODBYE_LIMIT)
                .await;
        });
    }
    while goodbyes.join_next().await.is_some() {}
    slots.tasks.abort_all();
}

/// One standby session on `node`: reclaims the tunnels through its control API
/// (`control`), says hello to that node's Edge only, and serves streams until the
/// session ends, the node drains, or the session is promoted.
async fn hold(
    config: Arc<AgentConfig>,
    tls: Arc<OnceLock<ClientTls>>,
    node: String,
    control: ControlUrl,
    mut held: Vec<Held>,
    origins: Vec<Origin>,
    up: mpsc::Sender<(tokio::task::Id, Up)>,
) -> (String, Result<Ended, AgentError>) {
    let result = async {
        let via = Via::Node(&node);
        let mut c = crate::connect(&config, &control, &mut held, None, &tls, via).await?;
        tracing::info!(%node, edge = %c.edge, "standby session online");
        let (promote, mut promoted) = oneshot::channel();
        let standby = Up {
            session: c.session.clone(),
            promote,
            since: Instant::now(),
        };
        if up.send((tokio::task::id(), standby)).await.is_err() {
            return Ok(Ended::Closed);
        }
        let session = c.session.clone();
        let serve = origin::serve(&session, origins, config.connect_timeout);
        tokio::pin!(serve);
        loop {
            tokio::select! {
                _ = &mut serve => return Ok(Ended::Closed),
                Ok(()) = &mut promoted => break,
                Some(notice) = c.notices.recv() => match notice {
                    EdgeNotice::TunnelClosed { .. } => {
                        c.session.close(netbore_mux::GoAwayCode::NORMAL);
                        return Ok(Ended::Closed);
                    }
                    EdgeNotice::Draining { .. } => {
                        let ids = c.created.iter().map(|t| t.tunnel_id.clone()).collect();
                        return Ok(Ended::Draining(c.session.clone(), c.to_edge, ids));
                    }
                    // Kept for when this session becomes the primary one.
                    EdgeNotice::Nodes { nodes } => c.learned = Some(nodes),
                    other => tracing::debug!(?other, "ignored a notice this agent does not know"),
                },
            }
        }
        Ok(Ended::Promoted(Box::new(c), control))
    }
    .await;
    (node, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(node: Option<&str>) -> EdgeCandidate {
        EdgeCandidate {
            addr: "127.0.0.1:7835".into(),
            transports: vec!["tcp".into()],
            development_ca: false,
            node: node.map(str::to_string),
            region: None,
            control_url: node.map(|n| format!("https://{n}:8443")),
        }
    }

    #[test]
    fn sessions_default_to_two_in_a_fleet_and_never_exceed_its_nodes() {
        assert_eq!(sessions(None, 1), 1);
        assert_eq!(sessions(Some(3), 1), 1);
        assert_eq!(sessions(None, 3), 2);
        assert_eq!(sessions(Some(1), 3), 1);
        assert_eq!(sessions(Some(0), 3), 1);
        assert_eq!(sessions(Some(3), 3), 3);
        assert_eq!(sessions(Some(9), 3), 3);
    }

    #[test]
    fn the_other_nodes_are_the_candidates_without_the_primary_s() {
        let edges = [
            edge(Some("a")),
            edge(None),
            edge(Some("b")),
            edge(Some("c")),
        ];
        let ids: Vec<String> = others(&edges, Some("b"))
            .into_iter()
            .map(|n| n.id)
            .collect();
        assert_eq!(ids, ["a", "c"]);
    }
}
