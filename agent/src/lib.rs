//! The Netbore Agent: asks the control plane for tunnels, holds one session to an Edge
//! (reconnecting with backoff when it drops, keeping the same public port), and pipes
//! every stream the Edge opens to the local Origin.
//!
//! It never parses what flows through a tunnel; it is a byte pipe to the origin.

pub mod backoff;
pub mod control_client;
mod create;
mod dialer;
pub mod inspect;
mod moving;
mod origin;
pub mod pin;
mod servers;
mod standby;
pub mod state;

use servers::Servers;

use netbore_codes::ErrorCode;
use std::path::PathBuf;
use std::time::Duration;

use netbore_control::api::{CreateTunnelRequest, CreateTunnelResponse, Protocol};
use netbore_mux::Config as MuxConfig;
use netbore_transport::proto::{self, EdgeNotice, Hello, HelloReply, PROTOCOL_VERSION};
use netbore_transport::proxy::Proxy;
use netbore_transport::tls::{ClientTls, TrustOptions};
use netbore_transport::{Session, Stream, TransportKind};

pub use control_client::ControlUrl;

/// One tunnel the agent keeps online.
#[derive(Debug, Clone)]
pub struct TunnelSpec {
    /// The origin, `HOST:PORT`.
    pub local: String,
    /// `tcp`, `http` or `tls`.
    pub protocol: Protocol,
    /// The name asked for by an HTTP or TLS tunnel (`--name`); random if absent.
    pub name: Option<String>,
    /// The public port asked for by a TCP tunnel (`--remote-port`); allocated by the
    /// server if absent.
    pub remote_port: Option<u16>,
    /// Its name in the inspector (a config file's table name).
    pub label: Option<String>,
    /// Whether the inspector records it (HTTP requests, or TCP connections).
    pub inspect: bool,
}

impl TunnelSpec {
    /// A TCP tunnel to `local`.
    pub fn tcp(local: String, remote_port: Option<u16>) -> Self {
        TunnelSpec {
            local,
            protocol: Protocol::Tcp,
            name: None,
            remote_port,
            label: None,
            inspect: true,
        }
    }

    /// A TLS passthrough tunnel to `local`.
    pub fn tls(local: String, name: Option<String>) -> Self {
        TunnelSpec {
            local,
            protocol: Protocol::Tls,
            name,
            remote_port: None,
            label: None,
            inspect: true,
        }
    }

    /// An HTTP tunnel to `local`.
    pub fn http(local: String, name: Option<String>) -> Self {
        TunnelSpec {
            local,
            protocol: Protocol::Http,
            name,
            remote_port: None,
            label: None,
            inspect: true,
        }
    }
}

/// Settings of an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The control plane.
    pub server: ControlUrl,
    /// Other nodes of the same fleet to create the tunnels on when `server` cannot be
    /// reached (more `--server`s); the agent adds those the control plane lists.
    pub fallback_servers: Vec<ControlUrl>,
    /// The tunnels, all carried by one session.
    pub tunnels: Vec<TunnelSpec>,
    /// Mux limits.
    pub mux: MuxConfig,
    /// How long connecting to the Edge, the hello, or an origin may take.
    pub connect_timeout: Duration,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// The API key (`--key`); anonymous when absent.
    pub api_key: Option<String>,
    /// Where recreate tokens are kept between runs, so a restarted agent gets the same
    /// URL back; `None` keeps them in memory only.
    pub state_dir: Option<PathBuf>,
    /// The transport to use (`--transport`); `None` is `auto`: the control plane's
    /// candidates in order, QUIC first where offered, falling back (see [`dialer`]).
    pub transport: Option<TransportKind>,
    /// With `auto`, how long QUIC may take before the next transport is tried.
    pub quic_fallback_after: Duration,
    /// With `auto` on a fallback transport, how often QUIC is tried again.
    pub quic_probe_interval: Duration,
    /// Whom to trust for the `tls` and `wss` transports (read on the first TLS
    /// connection, so a `tcp` agent never loads certificates).
    pub trust: TrustOptions,
    /// An HTTP `CONNECT` proxy to reach the Edge through (`--proxy`).
    pub proxy: Option<Proxy>,
    /// Use `HTTPS_PROXY`/`NO_PROXY` from the environment when `proxy` is `None`.
    pub proxy_from_env: bool,
    /// Speak plain `http://` to a control plane on another machine
    /// (`--insecure-http`): the API key and tunnel tokens cross the network readable.
    pub insecure_http: bool,
    /// The request inspector, when it is on: HTTP tunnels whose entry in its tunnel
    /// list says so have their requests captured, TCP and TLS tunnels their
    /// connections counted.
    pub inspector: Option<inspect::Inspector>,
    /// How many sessions to hold, each on another node of a fleet (`--ha`); `None`
    /// is 2 when the fleet has two nodes or more ([`standby`]).
    pub ha: Option<usize>,
}

impl AgentConfig {
    /// Defaults for `server` and `tunnels`.
    pub fn new(server: ControlUrl, tunnels: Vec<TunnelSpec>) -> Self {
        AgentConfig {
            server,
            fallback_servers: Vec::new(),
            tunnels,
            mux: MuxConfig::default(),
            connect_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            api_key: None,
            state_dir: None,
            transport: None,
            quic_fallback_after: Duration::from_secs(2),
            quic_probe_interval: Duration::from_secs(30),
            trust: TrustOptions::default(),
            proxy: None,
            proxy_from_env: true,
            insecure_http: false,
            inspector: None,
            ha: None,
        }
    }
}

/// What the agent reports as it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// A tunnel is online.
    Online {
        /// Tunnel id.
        tunnel_id: String,
        /// Where viewers reach it.
        public_url: String,
        /// The origin it forwards to.
        local: String,
        /// Transport of the session.
        transport: TransportKind,
        /// The tunnel's name in a config file (`netbore start`).
        name: Option<String>,
    },
    /// The Edge took one tunnel away for good (deleted, or reclaimed by another agent);
    /// the others stay online.
    TunnelClosed {
        /// Tunnel id.
        tunnel_id: String,
        /// `tunnel_deleted` or `replaced`.
        code: String,
        /// One sentence for a person.
        message: String,
    },
    /// The session ended or could not be made; another attempt follows.
    Reconnecting {
        /// Attempt number (1 for the first retry).
        attempt: u32,
        /// Wait before it.
        delay: Duration,
        /// What went wrong, one sentence.
        reason: String,
    },
}

/// Why the agent stopped or a connection attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The control plane could not be reached or answered nonsense.
    #[error(
        "could not reach the control plane at {url}: {reason}; check --server and that the server is running"
    )]
    ControlUnreachable {
        /// The URL tried.
        url: String,
        /// The cause.
        reason: String,
    },
    /// The control plane or the Edge refused with a typed error.
    #[error("{message}")]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// The server's sentence.
        message: String,
    },
    /// The agent was asked to stop (by [`run_until`]'s `stop`).
    #[error("the agent stopped")]
    Stopped,
    /// The Edge could not be reached or the session broke during setup.
    #[error("could not connect to the Edge at {addr}: {reason}")]
    EdgeUnreachable {
        /// The address tried.
        addr: String,
        /// The cause.
        reason: String,
    },
}

impl AgentError {
    /// The stable code of this error, for `--json` output.
    pub fn code(&self) -> &str {
        match self {
            AgentError::ControlUnreachable { .. } => "control_unreachable",
            AgentError::Refused { code, .. } => code.as_str(),
            AgentError::EdgeUnreachable { .. } => "edge_unreachable",
            AgentError::Stopped => "stopped",
        }
    }

    /// True when retrying cannot help (bad request, credentials, a port outside the range).
    pub fn is_permanent(&self) -> bool {
        use ErrorCode::*;
        matches!(
            self,
            AgentError::Refused {
                code: BadRequest
                    | Unauthorized
                    | PortNotAllowed
                    | PortInUse
                    | ProtocolError
                    | NameTaken
                    | ProtocolNotServed
                    | TunnelDeleted
                    | Replaced
                    | NoEdge
                    | UntrustedCertificate
                    | ProxyRefused
                    | ProxyCredentials
                    | TlsConfig,
                ..
            }
        )
    }
}

/// What the agent remembers of a tunnel between connections.
#[derive(Debug, Clone, Default)]
struct Held {
    /// The tunnel was online during this run (so a server that no longer knows it
    /// deleted it, rather than never having had it).
    online_this_run: bool,
    /// The secret that reclaims the tunnel.
    recreate_token: Option<String>,
    /// The public port it had (asked for again if the server forgot the tunnel).
    port: Option<u16>,
    /// The name it had.
    name: Option<String>,
}

/// Runs the agent until a permanent error: creates the tunnels, keeps the session up,
/// and reconnects with backoff (reclaiming the same tunnels with their recreate tokens)
/// when it drops. `on_event` hears every state change.
pub async fn run(config: AgentConfig, on_event: impl Fn(AgentEvent)) -> AgentError {
    run_until(config, on_event, std::future::pending()).await
}

/// Attempts to move the tunnels off a draining node: each may leave a placement
/// pending at the target until its token lapses, so they are few.
const MOVE_TRIES: u32 = 3;

/// How long a stopping agent waits for its goodbye to the Edge to leave.
const GOODBYE_LIMIT: Duration = Duration::from_secs(1);

/// Like [`run`], and when `stop` completes, closes the session (telling the Edge, so it
/// takes the tunnels offline at once rather than after its idle timeout) and returns
/// [`AgentError::Stopped`].
pub async fn run_until(
    config: AgentConfig,
    on_event: impl Fn(AgentEvent),
    stop: impl std::future::Future<Output = ()>,
) -> AgentError {
    let mut stop = std::pin::pin!(stop);
    let store = config
        .state_dir
        .as_ref()
        .map(|dir| state::StateDir::new(dir.clone(), &config.server.to_string()));
    let mut held: Vec<Held> = config
        .tunnels
        .iter()
        .map(|t| Held {
            online_this_run: false,
            recreate_token: store.as_ref().and_then(|s| s.load(t)),
            port: t.remote_port,
            name: t.name.clone(),
        })
        .collect();
    // The control planes to try, the first one first; a failure to reach one moves
    // to the next.
    let mut servers = Servers::new(&config);
    let mut attempt = 0u32;
    let mut ever_online = false;
    let tls = std::sync::OnceLock::new();
    // A QUIC session a probe dialed, to move the tunnels onto.
    let mut upgrade: Option<(Session, String)> = None;
    // The session being replaced by `upgrade`, closed once the new one is online.
    let mut previous: Option<Session> = None;
    // A session on another node the tunnels moved to from a draining one.
    let mut moved: Option<Connected> = None;
    // Sessions the tunnels moved away from, finishing their streams in flight.
    let mut retiring = tokio::task::JoinSet::new();
    let mut retired: Vec<Session> = Vec::new();
    // The Edge whose session just ended (a silent link, a dead node): tried last at
    // the next attempt only, after the fleet's other nodes.
    let mut suspect: Option<String> = None;
    // Sessions on more nodes of a fleet, following the primary one.
    let standbys = standby::Standbys::start(&config);
    loop {
        let upgrading = upgrade.is_some();
        let last_suspect = suspect.take();
        let connected = match moved.take() {
            Some(c) => Ok(c),
            None => tokio::select! {
                c = connect(&config, servers.current(), &mut held, store.as_ref(), &tls, match upgrade.take() {
                    Some((session, addr)) => Via::Upgrade(session, addr),
                    None => Via::Candidates { suspect: last_suspect.as_deref() },
                }) => c,
                () = &mut stop => {
                    moving::close_retired(&mut retired);
                    if let Some(old) = previous.take() {
                        old.close_and_flush(netbore_mux::GoAwayCode::NORMAL, GOODBYE_LIMIT).await;
                    }
                    standbys.stop().await;
                    return AgentError::Stopped;
                }
            },
        };
        while retiring.try_join_next().is_some() {}
        if let Some(old) = previous.take() {
            old.close(netbore_mux::GoAwayCode::NORMAL);
        }
        let reason = match connected {
            Ok(Connected {
                session,
                created,
                mut notices,
                to_edge,
                reader: _reader,
                learned,
                probe,
                edge,
            }) => {
                ever_online = true;
                suspect = None;
                attempt = 0;
                servers.learn(&created[0].edges);
                for h in held.iter_mut() {
                    h.online_this_run = true;
                }
                // Ready before anyone hears it is online.
                netbore_metrics::agent().set_state(
                    netbore_metrics::SessionState::Online,
                    session.kind().as_str(),
                );
                for (i, c) in created.iter().enumerate() {
                    if let Some(inspector) = &config.inspector {
                        inspector.tunnel_online(i, &c.public_url);
                    }
                    on_event(AgentEvent::Online {
                        tunnel_id: c.tunnel_id.clone(),
                        public_url: c.public_url.clone(),
                        local: config.tunnels[i].local.clone(),
                        transport: session.kind(),
                        name: config.tunnels[i].label.clone(),
                    });
                }
                let metrics = netbore_metrics::agent();
                let origins: Vec<origin::Origin> = config
                    .tunnels
                    .iter()
                    .zip(&created)
                    .enumerate()
                    .map(|(i, (t, c))| origin::Origin {
                        addr: t.local.clone(),
                        protocol: t.protocol,
                        tunnel_id: c.tunnel_id.clone(),
                        metrics: std::sync::Arc::new(
                            metrics.tunnels.add(&c.tunnel_id, t.protocol.as_str()),
                        ),
                        inspector: config
                            .inspector
                            .clone()
                            .filter(|inspector| inspector.inspects(i)),
                    })
                    .collect();
                let ids: Vec<String> = created.iter().map(|c| c.tunnel_id.clone()).collect();
                let edges = &created[0].edges;
                let node = edges
                    .iter()
                    .find(|e| e.addr == edge)
                    .or(edges.first())
                    .and_then(|e| e.node.clone());
                standbys.follow(standby::Primary {
                    others: learned.unwrap_or_else(|| standby::others(edges, node.as_deref())),
                    node,
                    held: held.clone(),
                    origins: origins.clone(),
                });
                let probing = async {
                    match &probe {
                        Some(attempt) => (
                            dialer::probe(&config, attempt, &tls).await,
                            attempt.addr.clone(),
                        ),
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(probing);
                let serve = origin::serve(&session, origins.clone(), config.connect_timeout);
                tokio::pin!(serve);
                let rtt = report_rtt(&session);
                tokio::pin!(rtt);
                let mut open = ids.clone();
                // The move off a draining node, while this session still serves.
                let mut moving: Option<moving::Moving<'_>> = None;
                // The nodes the draining node named, and the failed attempts so far.
                let mut move_to: Vec<String> = Vec::new();
                let mut move_failures = 0u32;
                let mut retry_move: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
                let mut to_edge = Some(to_edge);
                loop {
                    tokio::select! {
                        biased;
                        Some(notice) = notices.recv() => match notice {
                            EdgeNotice::TunnelClosed { tunnel_id, code, message } => {
                                open.retain(|id| *id != tunnel_id);
                                if !open.is_empty() {
                                    on_event(AgentEvent::TunnelClosed {
                                        tunnel_id,
                                        code: code.as_str().into(),
                                        message,
                                    });
                                    continue;
                                }
                                session.close(netbore_mux::GoAwayCode::NORMAL);
                                for (i, t) in config.tunnels.iter().enumerate() {
                                    if let Some(s) = &store {
                                        s.forget(t);
                                    }
                                    held[i] = Held::default();
                                }
                                return AgentError::Refused { code, message };
                            }
                            EdgeNotice::Draining { node, controls, message } => {
                                // No standby there: a reclaim at a draining node takes
                                // the tunnels from the session still finishing there.
                                if let Some(node) = node {
                                    standbys.avoid(node);
                                }
                                if moving.is_some() || retry_move.is_some() {
                                    continue;
                                }
                                servers.learn_controls(&controls);
                                // A standby session on another node takes over at once.
                                if let Some((standby, control)) = standbys.promote().await {
                                    tracing::info!(server = %control, "{message}");
                                    servers.select(&control);
                                    if let Some(to_edge) = to_edge.take() {
                                        moving::leave(&mut retiring, &mut retired, &session, to_edge, &origins, &ids, config.connect_timeout);
                                    }
                                    moved = Some(standby);
                                    break;
                                }
                                let Some(target) = moving::target(&controls) else {
                                    tracing::info!("{message}; no other node to move to, so the tunnels stay until it closes");
                                    continue;
                                };
                                tracing::info!(server = %target, "{message}");
                                move_to = controls;
                                // No standby may say hello where the tunnels move to now.
                                standbys.halt();
                                moving = Some(moving::start(&config, store.as_ref(), &tls, held.clone(), target));
                            }
                            EdgeNotice::Nodes { nodes } => {
                                servers.learn_controls(&nodes.iter().map(|n| n.control_url.clone()).collect::<Vec<_>>());
                                standbys.learn(nodes);
                            }
                            other => tracing::debug!(?other, "ignored a notice this agent does not know"),
                        },
                        _ = &mut serve => break,
                        () = &mut rtt => {}
                        () = &mut stop => {
                            moving::close_retired(&mut retired);
                            session.close_and_flush(netbore_mux::GoAwayCode::NORMAL, GOODBYE_LIMIT).await;
                            standbys.stop().await;
                            return AgentError::Stopped;
                        }
                        () = async { retry_move.as_mut().expect("guarded").await }, if retry_move.is_some() => {
                            retry_move = None;
                            // The next node the draining one named, round robin.
                            let next = move_to.get(move_failures as usize % move_to.len().max(1)..).unwrap_or_default();
                            if let Some(target) = moving::target(next).or_else(|| moving::target(&move_to)) {
                                moving = Some(moving::start(&config, store.as_ref(), &tls, held.clone(), target));
                            }
                        }
                        better = &mut probing => {
                            // QUIC answers again: reclaim the tunnels over it (same URLs),
                            // then close this session.
                            tracing::info!("QUIC is reachable again; moving the tunnels onto it");
                            upgrade = Some(better);
                            previous = Some(session.clone());
                            break;
                        }
                        result = async { moving.as_mut().expect("guarded").await }, if moving.is_some() => {
                            moving = None;
                            match result {
                                Ok((connected, moved_held, target)) => {
                                    // Online at the new node: only now does the old one
                                    // stop sending streams here.
                                    held.clone_from_slice(&moved_held);
                                    servers.select(&target);
                                    if let Some(to_edge) = to_edge.take() {
                                        moving::leave(&mut retiring, &mut retired, &session, to_edge, &origins, &ids, config.connect_timeout);
                                    }
                                    moved = Some(connected);
                                    break;
                                }
                                Err(e) if move_failures + 1 >= MOVE_TRIES => {
                                    tracing::warn!(error = %e, "could not move the tunnels off the draining node; they stay until it closes");
                                }
                                Err(e) => {
                                    // Tried again while this session lives: the
                                    // draining node may be about to close it.
                                    move_failures += 1;
                                    let delay = backoff::delay(move_failures, config.max_backoff);
                                    tracing::warn!(error = %e, ?delay, "could not move the tunnels off the draining node; trying again");
                                    retry_move = Some(Box::pin(tokio::time::sleep(delay)));
                                }
                            }
                        }
                    }
                }
                if upgrade.is_some() || moved.is_some() {
                    continue;
                }
                let ended = session.closed().await;
                // A standby session on another node serves the tunnels already: it
                // becomes the primary one, with nothing to reclaim.
                if let Some((standby, control)) = standbys.promote().await {
                    tracing::info!(server = %control, "the session to the Edge ended ({ended}); a standby session takes over");
                    servers.select(&control);
                    moved = Some(standby);
                    continue;
                }
                // No standby may say hello where the tunnels are reclaimed next.
                standbys.halt();
                suspect = Some(edge);
                format!("the session to the Edge ended ({ended})")
            }
            // A permanent refusal on the first attempt is the user's to fix. Once the
            // tunnel has been online, keep trying: the condition may pass.
            Err(e) if e.is_permanent() && !ever_online => return e,
            Err(e) if matches!(e.code(), "tunnel_deleted" | "replaced") => return e,
            // The move to QUIC failed: reconnect at once the usual way.
            Err(e) if upgrading => {
                tracing::info!(error = %e, "moving onto QUIC failed; reconnecting");
                continue;
            }
            Err(e) => {
                let elsewhere = match &e {
                    AgentError::ControlUnreachable { .. } | AgentError::EdgeUnreachable { .. } => {
                        true
                    }
                    AgentError::Refused { code, .. } => *code == ErrorCode::StoreUnavailable,
                    _ => false,
                };
                // The next node is tried at once; the delays grow again once every
                // node has failed.
                if elsewhere && servers.next() {
                    attempt = 0;
                }
                e.to_string()
            }
        };
        attempt += 1;
        let metrics = netbore_metrics::agent();
        metrics.set_state(netbore_metrics::SessionState::Reconnecting, "");
        metrics.reconnects.inc(&[reconnect_reason(&reason)]);
        let delay = backoff::delay(attempt, config.max_backoff);
        on_event(AgentEvent::Reconnecting {
            attempt,
            delay,
            reason,
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut stop => {
                moving::close_retired(&mut retired);
                standbys.stop().await;
                return AgentError::Stopped;
            }
        }
    }
}

/// Keeps the metrics' RTT to the Edge current while the session lives.
async fn report_rtt(session: &Session) {
    loop {
        if let Some(rtt) = session.rtt() {
            netbore_metrics::agent().set_rtt(rtt);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// A reconnect's reason as a metrics label: few values, never an address.
fn reconnect_reason(reason: &str) -> &'static str {
    if reason.starts_with("the session to the Edge ended") {
        "session_ended"
    } else {
        "connect_failed"
    }
}

/// A session that said hello and serves the tunnels.
struct Connected {
    session: Session,
    created: Vec<CreateTunnelResponse>,
    /// The Edge's notices, read from the hello stream by `reader`.
    notices: tokio::sync::mpsc::Receiver<EdgeNotice>,
    /// The agent's half of the hello stream.
    to_edge: tokio::io::WriteHalf<Stream>,
    /// Owns the task reading the notices: it stops when this is dropped.
    reader: tokio::task::JoinSet<()>,
    /// The fleet's other nodes as the Edge last told them, when a standby session
    /// heard that before it became the primary one.
    learned: Option<Vec<netbore_transport::proto::FleetNode>>,
    /// The QUIC Edge to move to once it answers (`auto` fell back from it).
    probe: Option<dialer::Attempt>,
    /// The Edge's address.
    edge: String,
}

/// Which Edge a connection attempt says hello to.
enum Via<'a> {
    /// The candidates the control plane listed, in order, `suspect` (an Edge whose
    /// last session died) last.
    Candidates { suspect: Option<&'a str> },
    /// A session a QUIC probe already dialed, and its address.
    Upgrade(Session, String),
    /// Only node `0`, which must be the one that placed the tunnels: a standby
    /// session is on that node or nowhere (never on the primary session's).
    Node(&'a str),
}

/// One connection attempt: create every tunnel, dial the Edge `via` says, say hello.
async fn connect(
    config: &AgentConfig,
    server: &ControlUrl,
    held: &mut [Held],
    store: Option<&state::StateDir>,
    tls: &std::sync::OnceLock<ClientTls>,
    via: Via<'_>,
) -> Result<Connected, AgentError> {
    let mut created = Vec::with_capacity(held.len());
    for (spec, h) in config.tunnels.iter().zip(held.iter_mut()) {
        let c = create::create_one(config, server, spec, h, store, tls).await?;
        h.port = create::public_port(&c.public_url).filter(|_| spec.protocol == Protocol::Tcp);
        h.name = c.name.clone();
        created.push(c);
    }
    let dialed = match via {
        Via::Upgrade(session, addr) => dialer::Dialed {
            session,
            addr,
            probe: None,
        },
        Via::Candidates { suspect } => {
            // The Edge whose last session died goes last: another node first.
            let mut edges = created[0].edges.clone();
            edges.sort_by_key(|e| Some(e.addr.as_str()) == suspect);
            let attempts = dialer::plan(&edges, config)?;
            dialer::dial_first(config, &attempts, tls).await?
        }
        Via::Node(node) => {
            let Some(placer) = created[0]
                .edges
                .first()
                .filter(|e| e.node.as_deref() == Some(node))
            else {
                return Err(AgentError::EdgeUnreachable {
                    addr: node.to_string(),
                    reason: format!("{server} placed the tunnels on another node than {node}"),
                });
            };
            let attempts = dialer::plan(std::slice::from_ref(placer), config)?;
            dialer::dial_first(config, &attempts, tls).await?
        }
    };
    let session = dialed.session;
    let unreachable = |reason: String| AgentError::EdgeUnreachable {
        addr: dialed.addr.clone(),
        reason,
    };
    let timeout = config.connect_timeout;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        tokens: created.iter().map(|c| c.ephemeral_token.clone()).collect(),
        agent: concat!("netbore/", env!("CARGO_PKG_VERSION")).into(),
        link: None,
    };
    let exchange = async {
        let mut stream = session
            .open()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        proto::write_message(&mut stream, &hello)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let reply: HelloReply = proto::read_message(&mut stream)
            .await
            .map_err(|e| unreachable(format!("the Edge did not answer the hello: {e}")))?;
        Ok::<_, AgentError>((reply, stream))
    };
    let (reply, hello_stream) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unreachable(format!("the hello got no answer within {timeout:?}")))??;
    match reply {
        HelloReply::Ok { tunnels } => {
            for (c, bound) in created.iter_mut().zip(&tunnels) {
                c.public_url = bound.public_url.clone();
            }
            let (from_edge, to_edge) = tokio::io::split(hello_stream);
            let (notice_tx, notices) = tokio::sync::mpsc::channel(4);
            let mut reader = tokio::task::JoinSet::new();
            reader.spawn(moving::read_notices(from_edge, notice_tx));
            Ok(Connected {
                session,
                created,
                notices,
                to_edge,
                reader,
                learned: None,
                probe: dialed.probe,
                edge: dialed.addr,
            })
        }
        HelloReply::Error(body) => Err(AgentError::Refused {
            code: body.code,
            message: body.message,
        }),
    }
}
