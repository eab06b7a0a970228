//! `netbore server`: Control and Edge in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use netbore_control::api::EdgeCandidate;
use netbore_control::rate::RateConfig;
use netbore_control::tokens::TokenSigner;
use netbore_control::{Control, ControlConfig};
use netbore_edge::certs::CertManager;
use netbore_edge::drain::Drain;
use netbore_edge::http::upstream::UpstreamConfig;
use netbore_edge::http::{Ingress, IngressConfig};
use netbore_edge::limits::{ViewerCaps, ViewerLimits};
use netbore_edge::proxy_protocol::ProxyProtocol;
use netbore_edge::{AuditLog, Edge, EdgeConfig, PortPool, Registry, RegistryConfig};
use netbore_transport::TransportKind;
use serde_json::json;

use crate::output::Printer;
pub(crate) use crate::server_args::ServerArgs;

/// The window budget (`--max-buffered-bytes`) where the machine's memory is unknown.
const DEFAULT_WINDOW_BUDGET: u64 = 1 << 30;

/// The control plane's database inside the data directory.
pub(crate) const STORE_FILE: &str = "netbore.db";

/// The default data directory (see `platform::default_dir`).
pub(crate) fn default_data_dir() -> PathBuf {
    crate::platform::default_dir("data")
}

/// The addresses a started server is bound to, and the tasks that serve them.
#[derive(Debug)]
pub(crate) struct Bound {
    /// Control API.
    pub(crate) control: SocketAddr,
    /// Agent listener.
    pub(crate) agent: SocketAddr,
    /// HTTP ingress.
    pub(crate) http: SocketAddr,
    /// HTTPS ingress, when on.
    pub(crate) https: Option<SocketAddr>,
    /// The CA HTTPS viewers trust, when HTTPS certificates come from the development CA.
    pub(crate) https_ca: Option<PathBuf>,
    /// Transports offered to agents, in the order they should try them.
    pub(crate) transports: Vec<TransportKind>,
    /// The development CA agents should trust, when the Edge uses one.
    pub(crate) dev_ca: Option<PathBuf>,
    /// The control plane's store (its health is part of `/readyz`).
    pub(crate) store: std::sync::Arc<dyn netbore_control::store::Store>,
    /// This node's membership of a fleet (`--redis`); its threads stop when dropped.
    pub(crate) fleet: Option<std::sync::Arc<netbore_fleet::Fleet>>,
    /// The drain every listener and session of the node follows.
    pub(crate) drain: Drain,
    /// The listeners' tasks (ingress, agent listener, control API, mirrored ports,
    /// the revoked-key sweep): each connection or session they accept is theirs or
    /// follows `drain`; stopping them closes the listeners.
    pub(crate) tasks: tokio::task::JoinSet<()>,
    /// The control plane, which hears `POST /admin/drain`.
    pub(crate) api: Option<std::sync::Arc<Control>>,
}

/// The Edge's certificate for the TLS transports (tls, wss, quic), and the development
/// CA that signed it when it is not the operator's.
struct EdgeTls {
    config: std::sync::Arc<netbore_transport::tls::ServerConfig>,
    dev_ca: Option<PathBuf>,
    /// The fingerprint of the leaf certificate (fleet links pin it).
    leaf: String,
}

/// The transports an Edge offers, most preferred first: QUIC (fastest where UDP
/// passes), then WSS (passes firewalls and proxies that allow only HTTPS), raw TLS,
/// plain TCP, and plain WebSocket last. Agents on `auto` skip the TLS ones when the
/// Edge's certificate comes from its development CA and they were not given it.
const ORDER: &[TransportKind] = &[
    TransportKind::Quic,
    TransportKind::Wss,
    TransportKind::Tls,
    TransportKind::Tcp,
    TransportKind::Ws,
];

/// Loads `--tls-cert`/`--tls-key`, or makes (first run) or reuses the development
/// certificate in `data_dir` for the server's names.
fn edge_tls(args: &ServerArgs, data_dir: &std::path::Path) -> anyhow::Result<EdgeTls> {
    use netbore_transport::tls;
    let (cert, key, dev_ca) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone(), None),
        _ => {
            let mut names = vec![args.domain.clone()];
            if let Some(edge) = &args.edge_addr {
                let host = edge.rsplit_once(':').map_or(edge.as_str(), |(h, _)| h);
                names.push(host.trim_matches(['[', ']']).to_string());
            }
            if let Some(host) = &args.fleet.advertise {
                names.push(host.trim_matches(['[', ']']).to_string());
            } else if args.store.redis.is_some() && !args.agent_addr.ip().is_unspecified() {
                names.push(args.agent_addr.ip().to_string());
            }
            names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
            let mut seen = std::collections::HashSet::new();
            names.retain(|n| seen.insert(n.clone()));
            let dev = netbore_edge::dev_ca::ensure(data_dir, &names)?;
            (dev.cert, dev.key, Some(dev.ca))
        }
    };
    let chain = tls::load_certs(&cert)?;
    let leaf = chain.first().map(tls::fingerprint).unwrap_or_default();
    let config = tls::server_config(chain, tls::load_key(&key)?)?;
    Ok(EdgeTls {
        config,
        dev_ca,
        leaf,
    })
}

/// Binds every listener and spawns Control and Edge; returns once they accept.
/// The ACME certificate source of `--acme-directory`.
fn acme_source(
    args: &ServerArgs,
    data_dir: &std::path::Path,
    tunnels: std::sync::Arc<dyn netbore_edge::acme::TunnelLookup>,
) -> anyhow::Result<netbore_edge::acme::AcmeSource> {
    use netbore_edge::acme::{AcmeConfig, AcmeSource, Challenge};
    let directory = args.acme_directory.as_deref().unwrap_or_default();
    let email = args.acme_email.as_deref().unwrap_or_default();
    let config = AcmeConfig {
        directory_ca: args.acme_ca.clone(),
        challenge: match args.acme_challenge.as_str() {
            "tls-alpn-01" => Challenge::TlsAlpn01,
            _ => Challenge::Http01,
        },
        wait: Duration::from_secs(args.acme_wait.max(1)),
        orders_per_minute: args.acme_orders_per_minute.max(1),
        orders_per_owner_per_hour: args.acme_orders_per_owner_per_hour.max(1),
        renew_fraction: args.acme_renew_fraction,
        renew_check: Duration::from_secs(args.acme_renew_check.max(1)),
        ..AcmeConfig::new(directory, email, data_dir)
    };
    AcmeSource::with_tunnels(config, tunnels)
        .context("could not open the ACME store in the data directory")
}

pub(crate) async fn start(args: &ServerArgs) -> anyhow::Result<Bound> {
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let signer = TokenSigner::load_or_create(&data_dir.join("control-ed25519.pk8"))?;
    let store = netbore_control::store::open(args.store.url()?, &data_dir.join(STORE_FILE))?;
    // A shared store may lose everything (a Redis restarted without persistence):
    // the records of this node's tunnels are kept to be written back.
    let remembering = args
        .store
        .redis
        .as_ref()
        .map(|_| std::sync::Arc::new(netbore_control::store::Remembering::new(store.clone())));
    let store: std::sync::Arc<dyn netbore_control::store::Store> = match &remembering {
        Some(r) => r.clone(),
        None => store,
    };
    netbore_metrics::server()
        .tunnels
        .set_max_labels(args.metrics_tunnel_labels);
    let mut mux_config = netbore_edge::agent_session_config(args.mux.config());
    let window_budget = args.max_buffered_bytes.unwrap_or_else(|| {
        crate::platform::physical_memory().map_or(DEFAULT_WINDOW_BUDGET, |m| m / 2)
    });
    let window_budget = std::sync::Arc::new(netbore_mux::WindowBudget::new(window_budget));
    // What pipes gather for viewers past their first 128 KiB comes from the same budget.
    netbore_transport::pipe::charge_gathers_to(window_budget.clone());
    mux_config.window_budget = Some(window_budget);
    let edge_tls = edge_tls(args, &data_dir)?;
    let link_cert = edge_tls.leaf.clone();
    // The control API's HTTPS shows agents the same certificate as their transports.
    let control_tls = edge_tls.config.clone();
    let listener_config = netbore_transport::ListenerConfig {
        mux: mux_config.clone(),
        tls: Some(edge_tls.config),
        quic: !args.no_quic,
        handshake_timeout: Duration::from_secs(args.hello_timeout.max(1)),
        ..netbore_transport::ListenerConfig::default()
    };
    let agent_listener = netbore_transport::Listener::bind(args.agent_addr, listener_config)
        .await
        .with_context(|| {
            format!(
                "could not listen for agents on {}; pass another --agent-addr",
                args.agent_addr
            )
        })?;
    let control_listener = tokio::net::TcpListener::bind(args.control_addr)
        .await
        .with_context(|| {
            format!(
                "could not listen for the control API on {}; pass another --control-addr",
                args.control_addr
            )
        })?;
    let http_listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| {
            format!(
                "could not listen for HTTP viewers on {}; pass another --http-addr",
                args.http_addr
            )
        })?;
    let https_listener = match args.https_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("could not listen for HTTPS viewers on {addr}; pass another --https-addr")
        })?),
        None => None,
    };
    let https = match &https_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let mut bound = Bound {
        control: control_listener.local_addr()?,
        agent: agent_listener.local_addr()?,
        http: http_listener.local_addr()?,
        https,
        // Known once the certificate source is made, after the registry.
        https_ca: None,
        transports: ORDER
            .iter()
            .copied()
            .filter(|k| *k != TransportKind::Quic || agent_listener.quic_addr().is_some())
            .collect(),
        dev_ca: edge_tls.dev_ca.clone(),
        store: store.clone(),
        fleet: None,
        drain: Drain::default(),
        tasks: tokio::task::JoinSet::new(),
        api: None,
    };
    let own_ports = [
        Some(bound.control),
        Some(bound.agent),
        Some(bound.http),
        bound.https,
    ]
    .into_iter()
    .flatten()
    .map(|a| a.port())
    .collect();
    let ports = PortPool::new(args.tcp_bind_ip, args.tcp_ports, own_ports);
    let mirror_ports = ports.clone();
    let registry = Registry::new(
        RegistryConfig {
            domain: args.domain.clone(),
            http_port: Some(bound.http.port()),
            https_port: bound.https.map(|a| a.port()),
            upstream: UpstreamConfig {
                max_idle: args.max_idle_upstream,
                response_timeout: Duration::from_secs(args.response_timeout.max(1)),
            },
        },
        ports,
    );
    let mut acme_challenges = None;
    let mut acme = None;
    let (certs, https_ca) = match (&https_listener, &args.cert, &args.key) {
        (None, _, _) => (None, None),
        (Some(_), _, _) if args.acme_directory.is_some() => {
            // Only names an agent serves now are ordered, paid from their owner's budget.
            let tunnels = netbore_edge::acme::RegistryLookup::new(registry.clone(), store.clone());
            let source = acme_source(args, &data_dir, std::sync::Arc::new(tunnels))?;
            acme_challenges = Some(source.challenges());
            source.spawn_renewal();
            acme = Some(source.clone());
            (Some(CertManager::new(&args.domain, Box::new(source))), None)
        }
        (Some(_), Some(cert), Some(key)) => {
            let source = netbore_edge::certs::FileSource::load(cert, key)?;
            (Some(CertManager::new(&args.domain, Box::new(source))), None)
        }
        (Some(_), _, _) => {
            let source = netbore_edge::certs::DevCaSource::new(&data_dir, args.cert_cache)?;
            let ca = source.ca_file();
            (
                Some(CertManager::new(&args.domain, Box::new(source))),
                Some(ca),
            )
        }
    };
    bound.https_ca = https_ca;
    let audit_path = args
        .audit_log
        .clone()
        .unwrap_or_else(|| data_dir.join("audit.log"));
    let audit = AuditLog::open(&audit_path).with_context(|| {
        format!(
            "could not open the audit log {}; pass another --audit-log",
            audit_path.display()
        )
    })?;
    let transports: Vec<String> = bound.transports.iter().map(|t| t.to_string()).collect();
    // In a fleet, the verifier also accepts the tokens of the other live nodes.
    let verifier = signer.verifier();
    let fleet = match &args.store.redis {
        Some(url) => {
            let spec = crate::fleet::NodeSpec {
                host: args.fleet.advertised_host(bound.agent)?,
                agent: bound.agent,
                control: bound.control,
                transports: transports.clone(),
                development_ca: bound.dev_ca.is_some(),
                link_cert,
                signing_key: signer.public_key().to_vec(),
            };
            // Joining talks to Redis with the blocking client: off the runtime's threads.
            let (url, fleet_args, mask) = (url.clone(), args.fleet.clone(), args.mask_agent_ip);
            let trusted = verifier.trusted();
            let fleet = tokio::task::spawn_blocking(move || {
                crate::fleet::join(&url, &fleet_args, spec, mask, trusted)
            })
            .await
            .context("joining the fleet stopped")??;
            // Links count against the same window budget as agents' sessions.
            registry.set_directory(fleet.clone(), mux_config.clone(), store.clone());
            if let Some(r) = &remembering {
                bound.tasks.spawn(keep_store(r.clone(), registry.clone()));
            }
            // Every node serves every certificate and answers every challenge.
            if let Some(acme) = &acme {
                acme.share_with(fleet.clone());
            }
            Some(fleet)
        }
        None => None,
    };
    // A fleet node hands agents its advertised address: the domain names every node.
    let edge_addr = args.edge_addr.clone().unwrap_or_else(|| match &fleet {
        Some(f) => f.node().agent_addr.clone(),
        None => format!("{}:{}", args.domain, bound.agent.port()),
    });
    let control_config = ControlConfig {
        allow_anonymous: args.allow_anonymous,
        domain: args.domain.clone(),
        edges: vec![EdgeCandidate {
            addr: edge_addr,
            transports,
            development_ca: bound.dev_ca.is_some(),
            node: fleet.as_ref().map(|f| f.node().id.clone()),
            region: fleet
                .as_ref()
                .map(|f| f.node().region.clone())
                .filter(|r| !r.is_empty()),
            control_url: fleet.as_ref().map(|f| f.node().control_url.clone()),
        }],
        token_ttl: Duration::from_secs(args.token_ttl.max(1)),
        mask_agent_ip: args.mask_agent_ip,
        max_tunnels_per_key: args.max_tunnels_per_key,
        max_tunnels_per_anonymous_ip: args.max_tunnels_per_anonymous_ip,
        max_tunnels_per_anonymous_ipv6_48: args.max_tunnels_per_anonymous_ipv6_48,
        max_anonymous_tunnels: args.max_anonymous_tunnels,
        max_tunnel_records: args.max_tunnel_records.max(1),
        trusted_proxies: args.trusted_proxies.clone(),
        max_names_per_key: args.max_names_per_key,
        admin_keys: args.admin_keys.clone(),
        api_rate: RateConfig {
            rate: args.api_rate,
            burst: args.api_burst,
            ..RateConfig::default()
        },
        denied_names: args
            .denied_names
            .iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect(),
        ..ControlConfig::default()
    };
    let (max_viewers, max_api) = fit_connection_caps(args);
    let viewer_limits = ViewerLimits::new(ViewerCaps {
        max_connections: max_viewers,
        max_connections_per_ip: args.max_viewer_connections_per_ip,
        max_streams_per_ip: args.max_viewer_streams_per_ip,
        max_streams_per_tunnel: args.max_streams_per_tunnel,
    });
    let edge_viewer_limits = viewer_limits.clone();
    let proxy_protocol = args.proxy_protocol.then(|| {
        let timeout = Duration::from_secs(args.tls_handshake_timeout.max(1));
        ProxyProtocol::new(args.trusted_proxies.clone(), timeout)
    });
    let edge_config = EdgeConfig {
        domain: args.domain.clone(),
        hello_timeout: Duration::from_secs(args.hello_timeout.max(1)),
        mask_agent_ip: args.mask_agent_ip,
        viewer_limits: viewer_limits.clone(),
        proxy_protocol: proxy_protocol.clone(),
    };
    let edge = Edge::new(
        edge_config,
        verifier,
        registry.clone(),
        audit,
        bound.drain.clone(),
    );
    let ingress = Ingress::new(
        registry.clone(),
        IngressConfig {
            mask_agent_ip: args.mask_agent_ip,
            header_timeout: Duration::from_secs(args.viewer_header_timeout.max(1)),
            idle_timeout: Duration::from_secs(args.viewer_idle_timeout.max(1)),
            upgrade_idle_timeout: Duration::from_secs(args.viewer_upgrade_idle_timeout.max(1)),
            h2_keepalive: Duration::from_secs(args.viewer_h2_keepalive.max(1)),
            limits: viewer_limits,
            tls_handshake_timeout: Duration::from_secs(args.tls_handshake_timeout.max(1)),
            redirect_https_port: bound.https.filter(|_| args.redirect_http).map(|a| a.port()),
            acme_challenges,
            proxy_protocol: proxy_protocol.clone(),
        },
        bound.drain.clone(),
    );
    let https = https_listener.zip(certs);
    bound.tasks.spawn(ingress.serve_both(http_listener, https));
    let control = std::sync::Arc::new(Control::new(
        control_config,
        signer,
        Box::new(registry.clone()),
        store,
    ));
    bound.api = Some(control.clone());
    if let Some(fleet) = &fleet {
        control.set_nodes(fleet.clone());
        control.set_shared_rate(fleet.clone());
        bound.tasks.spawn(netbore_edge::fleet::mirror::run(
            registry,
            mirror_ports,
            edge_viewer_limits,
            proxy_protocol,
            bound.drain.clone(),
        ));
    }
    bound.fleet = fleet;
    bound.tasks.spawn(sweep_revoked_keys(control.clone()));
    let serve_config = netbore_control::serve::ServeConfig {
        tls: Some(control_tls),
        insecure_http: args.insecure_http_control,
        max_connections: max_api,
        max_connections_per_ip: args.max_api_connections_per_ip.max(1),
        header_timeout: Duration::from_secs(args.api_header_timeout.max(1)),
        request_timeout: Duration::from_secs(args.api_request_timeout.max(1)),
    };
    let app = netbore_control::api::router(control);
    bound.tasks.spawn(async move {
        if let Err(e) = netbore_control::serve::serve(control_listener, app, serve_config).await {
            tracing::error!(error = %e, "the control API stopped");
        }
    });
    bound.tasks.spawn(edge.serve(agent_listener));
    Ok(bound)
}

/// `--max-viewer-connections` and `--max-api-connections`, lowered in proportion when
/// together they would pass what the open-file limit leaves (one warning line says
/// so).
fn fit_connection_caps(args: &ServerArgs) -> (usize, usize) {
    let caps = [
        args.max_viewer_connections.max(1),
        args.max_api_connections.max(1),
    ];
    let Some(nofile) = crate::open_file_limit() else {
        return (caps[0], caps[1]);
    };
    match netbore_edge::limits::fit_to_descriptors(nofile, caps) {
        None => (caps[0], caps[1]),
        Some([viewers, api]) => {
            tracing::warn!(
                open_file_limit = nofile,
                "the open-file limit is too low for --max-viewer-connections {} and --max-api-connections {}; serving {viewers} and {api} (raise the hard limit, e.g. LimitNOFILE= in systemd)",
                caps[0],
                caps[1],
            );
            (viewers, api)
        }
    }
}

/// How often a fleet node looks whether the shared store lost its data.
const STORE_CHECK: Duration = Duration::from_secs(1);

/// Writes the store back when Redis lost it (flushed, or restarted without
/// persistence): its schema, then the records of the tunnels this node holds, so
/// they can still be reclaimed with their URLs. The routes are the fleet worker's.
async fn keep_store(
    store: std::sync::Arc<netbore_control::store::Remembering>,
    registry: Registry,
) {
    // Failures are said once a minute at most: Redis away is the fleet worker's to
    // report, and tunnels keep serving meanwhile.
    let mut said: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(STORE_CHECK).await;
        let (s, r) = (store.clone(), registry.clone());
        let kept = tokio::task::spawn_blocking(move || {
            s.keep(&|| r.held_tunnel_ids(), std::time::Instant::now())
        })
        .await;
        let failed = match kept {
            Ok(Ok(k)) => {
                if k.recovered || k.restored > 0 {
                    tracing::error!(
                        restored = k.restored,
                        "Redis had lost the netbore store (flushed, or restarted without persistence), so it was written again with this node's tunnels; API keys and reserved names made before are gone: create them again with netbore key create, and run Redis with persistence"
                    );
                }
                (k.failed > 0).then(|| format!("{} tunnel records", k.failed))
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("the check stopped: {e}")),
        };
        if let Some(why) = failed
            && said.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            said = Some(std::time::Instant::now());
            tracing::warn!(%why, "could not check or write back the shared store; trying again every second");
        }
    }
}

/// How often the server reads the store's change marker (one cheap query) to notice
/// keys revoked by `netbore key revoke` from another process.
const REVOCATION_CHECK: Duration = Duration::from_millis(100);

/// How often the server reads every key even when the marker did not move, and how
/// long it waits after the store failed to answer.
const REVOCATION_SWEEP: Duration = Duration::from_secs(5);

/// Takes the tunnels of newly revoked keys offline: reads the store's change marker
/// every [`REVOCATION_CHECK`] and sweeps when it moved (or [`REVOCATION_SWEEP`] passed).
async fn sweep_revoked_keys(control: std::sync::Arc<Control>) {
    let mut sweep = netbore_control::RevocationSweep::new();
    loop {
        tokio::time::sleep(REVOCATION_CHECK).await;
        let c = control.clone();
        let result = tokio::task::spawn_blocking(move || {
            let now = std::time::Instant::now();
            let r = c.poll_revoked_keys(&mut sweep, now, REVOCATION_SWEEP);
            (r, sweep)
        })
        .await;
        match result {
            Ok((Ok(_), s)) => sweep = s,
            Ok((Err(e), s)) => {
                tracing::warn!(error = %e, "could not look for revoked API keys");
                sweep = s;
                tokio::time::sleep(REVOCATION_SWEEP).await;
            }
            Err(_) => return,
        }
    }
}

/// Runs `netbore server` until interrupted.
pub(crate) async fn run(args: ServerArgs, printer: Printer) -> anyhow::Result<()> {
    let mut signals = crate::platform::StopSignals::new();
    let mut bound = start(&args).await?;
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let store = bound.store.clone();
            let drain = bound.drain.clone();
            let ready: crate::metrics_http::Readiness = std::sync::Arc::new(move || {
                if drain.is_draining() {
                    return Err(
                        "the server is draining: send new viewers and agents to another node"
                            .into(),
                    );
                }
                netbore_control::store::Store::health(&*store)
                    .map_err(|e| format!("the store does not answer: {e}"))
            });
            let at = crate::metrics_http::start(addr, netbore_metrics::Role::Server, ready).await?;
            Some(format!("http://{at}"))
        }
        None => None,
    };
    let metrics_line = metrics
        .as_ref()
        .map(|m| format!("\n  metrics       {m}/metrics"))
        .unwrap_or_default();
    let transports: Vec<&str> = bound.transports.iter().map(|t| t.as_str()).collect();
    let ca = bound.dev_ca.as_ref().map(|p| p.display().to_string());
    // Agents pin the development CA by this on first use, or take it with
    // --ca-fingerprint; no file needs copying.
    let ca_fingerprint = match &bound.dev_ca {
        Some(path) => netbore_transport::tls::load_certs(path)?
            .first()
            .map(netbore_transport::tls::fingerprint),
        None => None,
    };
    let ca_line = match (&ca, &ca_fingerprint) {
        (Some(p), Some(f)) => format!(
            "\n  agents' CA    {f}\n                ({p}; agents trust it on first use, or pass --ca-fingerprint {f})"
        ),
        _ => String::new(),
    };
    let https_line = match (bound.https, &bound.https_ca) {
        (Some(a), Some(ca)) => format!(
            "\n  HTTPS tunnels https://*.{}:{} (certificates from the development CA {}; viewers trust it with curl --cacert)",
            args.domain,
            a.port(),
            ca.display()
        ),
        (Some(a), None) => match &args.acme_directory {
            Some(directory) => format!(
                "\n  HTTPS tunnels https://*.{}:{} (certificates from ACME {directory}, {})",
                args.domain,
                a.port(),
                if args.acme_challenge == "tls-alpn-01" {
                    "TLS-ALPN-01 on the HTTPS port"
                } else {
                    "HTTP-01 on the HTTP port"
                }
            ),
            None => format!("\n  HTTPS tunnels https://*.{}:{}", args.domain, a.port()),
        },
        (None, _) => String::new(),
    };
    printer.event(
        "listening",
        json!({
            "control": bound.control.to_string(),
            "agent": bound.agent.to_string(),
            "http": bound.http.to_string(),
            "https": bound.https.map(|a| a.to_string()),
            "https_ca": bound.https_ca.as_ref().map(|p| p.display().to_string()),
            "tcp_ports": args.tcp_ports.to_string(),
            "domain": args.domain,
            "transports": transports,
            "ca": ca,
            "ca_fingerprint": ca_fingerprint,
            "metrics": metrics,
            "node": bound.fleet.as_ref().map(|f| f.node().id.clone()),
        }),
        &format!(
            "Netbore server is up\n  control API   https://{} (http:// from this machine only)\n  agents        {} ({}){ca_line}\n  HTTP tunnels  http://*.{}:{}{https_line}\n  TCP tunnels   ports {} on {}\n  anonymous     {}{metrics_line}",
            bound.control,
            bound.agent,
            transports.join(", "),
            args.domain,
            bound.http.port(),
            args.tcp_ports,
            args.tcp_bind_ip,
            if args.allow_anonymous { "allowed" } else { "refused: agents need an API key (netbore key create), or pass --allow-anonymous" }
        ),
    );
    // A signal, or an admin key's `POST /admin/drain`, starts the drain.
    let api = bound.api.clone();
    tokio::select! {
        () = signals.next() => {}
        () = async {
            match &api {
                Some(api) => api.drain_requested().await,
                None => std::future::pending().await,
            }
        } => {}
    }
    let cut = drain(&args, &mut bound, &printer, &mut signals).await;
    if cut > 0 {
        std::process::exit(DRAIN_CUT_EXIT);
    }
    Ok(())
}

/// The exit status of a server whose drain ended with viewer connections or
/// streams still in flight (the log says how many).
pub(crate) const DRAIN_CUT_EXIT: i32 = 3;

/// How a drain ended.
enum DrainEnd {
    Idle,
    Deadline,
    Signal,
}

/// Drains the node (`docs/deploy.md`, "Draining a node") and stops it; returns
/// how many viewer connections and relayed streams were cut.
async fn drain(
    args: &ServerArgs,
    bound: &mut Bound,
    printer: &Printer,
    signals: &mut crate::platform::StopSignals,
) -> usize {
    let drain = &bound.drain;
    drain.start();
    if let Some(fleet) = &bound.fleet {
        fleet.set_draining();
    }
    let timeout = Duration::from_secs(args.drain_timeout);
    let linger = Duration::from_secs(args.drain_linger).min(timeout);
    printer.event(
        "draining",
        json!({"in_flight": drain.in_flight(), "timeout_secs": args.drain_timeout}),
        &format!(
            "Draining: agents are told to move, {} viewer connections are in flight; exiting when they end, at the latest in {}s (a second Ctrl-C exits now)",
            drain.in_flight(),
            args.drain_timeout
        ),
    );
    let idle = async {
        tokio::time::sleep(linger).await;
        drain.idle().await;
    };
    let ended = tokio::select! {
        () = idle => DrainEnd::Idle,
        () = tokio::time::sleep(timeout) => DrainEnd::Deadline,
        () = signals.next() => DrainEnd::Signal,
    };
    // The listeners close first (nothing new is accepted); what is still in flight
    // then (a viewer that came after the node went idle, too) is cut when agent
    // sessions close with a go-away, so agents reconnect at once.
    bound.tasks.shutdown().await;
    let cut = bound.drain.in_flight();
    let drain = &bound.drain;
    drain.stop();
    let _ = tokio::time::timeout(netbore_edge::NOTICE_GRACE * 2, drain.sessions_closed()).await;
    let why = match ended {
        DrainEnd::Idle => "nothing was in flight",
        DrainEnd::Deadline => "the drain timeout passed",
        DrainEnd::Signal => "a second signal asked to exit now",
    };
    printer.event(
        "stopped",
        json!({"cut": cut, "reason": why}),
        &format!("Stopped ({why}); {cut} viewer connections or streams were cut"),
    );
    if cut > 0 {
        tracing::warn!(
            cut,
            "the drain ended with viewer connections or streams in flight; they were cut"
        );
    }
    cut
}
