//! Moving off a draining node (`docs/protocols/handshake.md`, "Draining"): make
//! before break. The Edge says it drains; the agent reclaims its tunnels on another
//! node of the fleet with their recreate tokens and says hello there; only then does
//! it tell the old node the tunnels moved, and it keeps the old session until that
//! node closes it, so streams in flight there finish.

use std::time::Duration;

use netbore_transport::proto::{self, AgentNotice, EdgeNotice};
use netbore_transport::{Session, Stream};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use netbore_transport::tls::ClientTls;

use crate::origin::{self, Origin};
use crate::{AgentConfig, AgentError, Connected, ControlUrl, Held, Via, state};

/// How long a session the agent moved away from is kept at most for the streams in
/// flight on it (the draining node closes it sooner, when it stops).
pub(crate) const RETIRE_LIMIT: Duration = Duration::from_secs(300);

/// Reads the Edge's notices on the hello stream and passes them on; ends with the
/// stream.
pub(crate) async fn read_notices(
    mut from_edge: ReadHalf<Stream>,
    notices: mpsc::Sender<EdgeNotice>,
) {
    loop {
        match proto::read_message::<EdgeNotice>(&mut from_edge).await {
            Ok(notice) => {
                if notices.send(notice).await.is_err() {
                    return;
                }
            }
            // A notice of a newer Edge: whole, so the next one can be read.
            Err(proto::MessageError::Json(e)) => {
                tracing::debug!(error = %e, "ignored a notice this agent does not know");
            }
            Err(e) => {
                tracing::debug!(error = %e, "the Edge's notice stream ended");
                return;
            }
        }
    }
}

/// The control plane to reclaim the tunnels on when a node drains: the first of the
/// other live nodes it named (`controls`). Only those: a `--server` name may lead
/// back to the draining node itself (a load balancer in front of the fleet), where
/// a reclaim would replace the very session it moves from. `None` when there is
/// nowhere else (a single server, or every node draining).
pub(crate) fn target(controls: &[String]) -> Option<ControlUrl> {
    controls.iter().find_map(|c| c.parse().ok())
}

/// Closes the sessions the agent moved away from (it is stopping), with a go-away.
pub(crate) fn close_retired(retired: &mut Vec<Session>) {
    for session in retired.drain(..) {
        session.close(netbore_mux::GoAwayCode::NORMAL);
    }
}

/// The tunnels are online elsewhere now: `session` is [`retire`]d and kept among
/// `retired`, to be closed if the agent stops first.
pub(crate) fn leave(
    retiring: &mut JoinSet<()>,
    retired: &mut Vec<Session>,
    session: &Session,
    to_edge: WriteHalf<Stream>,
    origins: &[Origin],
    ids: &[String],
    timeout: Duration,
) {
    retired.retain(|s| !s.is_closed());
    retired.push(session.clone());
    retire(
        retiring,
        session.clone(),
        to_edge,
        origins.to_vec(),
        ids.to_vec(),
        timeout,
    );
}

/// Keeps `session`, which the agent moved its tunnels away from, serving the streams
/// its node still opens until that node closes it (or [`RETIRE_LIMIT`]). Tells the
/// node first, on `to_edge`, which tunnels moved.
pub(crate) fn retire(
    retiring: &mut JoinSet<()>,
    session: Session,
    mut to_edge: WriteHalf<Stream>,
    origins: Vec<Origin>,
    moved: Vec<String>,
    timeout: Duration,
) {
    retiring.spawn(async move {
        let notice = AgentNotice::Moved { tunnel_ids: moved };
        if let Err(e) = proto::write_message(&mut to_edge, &notice).await {
            tracing::debug!(error = %e, "could not tell the draining node the tunnels moved");
        }
        let serve = async {
            tokio::select! {
                _ = origin::serve(&session, origins, timeout) => {}
                _ = session.closed() => {}
            }
        };
        let _ = tokio::time::timeout(RETIRE_LIMIT, serve).await;
        session.close(netbore_mux::GoAwayCode::NORMAL);
        drop(to_edge);
    });
}

/// A move of the tunnels to another node in progress: the new session, what the
/// agent holds there, and the control plane that placed them.
pub(crate) type Moving<'a> = Pin<
    Box<dyn Future<Output = Result<(Connected, Vec<Held>, ControlUrl), AgentError>> + Send + 'a>,
>;

/// Reclaims the tunnels (`held`) on the control plane `target` and says hello to the
/// Edge it names: the move off a draining node.
pub(crate) fn start<'a>(
    config: &'a AgentConfig,
    store: Option<&'a state::StateDir>,
    tls: &'a OnceLock<ClientTls>,
    mut held: Vec<Held>,
    target: ControlUrl,
) -> Moving<'a> {
    Box::pin(async move {
        let via = Via::Candidates { suspect: None };
        let c = crate::connect(config, &target, &mut held, store, tls, via).await?;
        Ok((c, held, target))
    })
}
