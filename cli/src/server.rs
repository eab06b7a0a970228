//! `netbore server`: Control and Edge in one process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use netbore_control::api::EdgeCandidate;
use netbore_control::rate::RateConfig;
use netbore_control::tokens::TokenSigner;
use netbore_control::{Control, ControlConfig};
use netbore_edge::certs::CertManager;
use netbore_edge::http::upstream::UpstreamConfig;
use netbore_edge::http::{Ingress, IngressConfig};
use netbore_edge::limits::{ViewerCaps, ViewerLimits};
use netbore_edge::{AuditLog, Edge, EdgeConfig, PortPool, PortRange, Registry, RegistryConfig};
use netbore_transport::TransportKind;
use serde_json::json;

use crate::output::Printer;

/// Flags of `netbore server`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// Threads serving viewers, agents and the control API (0: one per core).
    #[arg(long, env = "NETBORE_THREADS", default_value_t = 0)]
    pub(crate) threads: usize,
    /// Address of the control API.
    #[arg(long, default_value = "0.0.0.0:7834")]
    pub(crate) control_addr: SocketAddr,
    /// Address agents connect to.
    #[arg(long, default_value = "0.0.0.0:7835")]
    pub(crate) agent_addr: SocketAddr,
    /// Address viewers reach HTTP tunnels on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub(crate) http_addr: SocketAddr,
    /// Address viewers reach HTTP tunnels on over HTTPS (default: no HTTPS). With it,
    /// HTTP tunnels' public URLs are https://.
    #[arg(long)]
    pub(crate) https_addr: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) HTTPS viewers see, e.g. a wildcard for
    /// *.DOMAIN, read at start (default: certificates issued on demand by the
    /// development CA in DATA_DIR).
    #[arg(long, requires = "key", requires = "https_addr")]
    pub(crate) cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// Answer plain-HTTP requests for tunnels with a redirect (308) to HTTPS.
    #[arg(long, requires = "https_addr")]
    pub(crate) redirect_http: bool,
    /// Seconds an HTTPS viewer may take to send its TLS hello, and again to finish the
    /// handshake.
    #[arg(long, default_value_t = netbore_edge::http::DEFAULT_TLS_HANDSHAKE_TIMEOUT.as_secs())]
    pub(crate) tls_handshake_timeout: u64,
    /// Seconds a viewer may take to send a request head, and, once connected (after
    /// TLS), to start its first request (HTTP version detection and the h2 preface
    /// included).
    #[arg(long, default_value_t = netbore_edge::http::DEFAULT_HEADER_TIMEOUT.as_secs())]
    pub(crate) viewer_header_timeout: u64,
    /// Seconds a viewer connection may stay with no request in flight (HTTP/1.1
    /// keep-alive and h2) before the Edge closes it.
    #[arg(long, default_value_t = netbore_edge::http::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub(crate) viewer_idle_timeout: u64,
    /// Seconds an upgraded viewer connection (WebSocket) may pass no byte either way
    /// before the Edge closes it.
    #[arg(long, default_value_t = netbore_edge::http::DEFAULT_UPGRADE_IDLE_TIMEOUT.as_secs())]
    pub(crate) viewer_upgrade_idle_timeout: u64,
    /// Seconds between h2 keep-alive pings to viewers, and for each to be answered.
    #[arg(long, default_value_t = netbore_edge::http::DEFAULT_H2_KEEPALIVE.as_secs())]
    pub(crate) viewer_h2_keepalive: u64,
    /// ACME directory URL HTTPS certificates are ordered from, one per tunnel name on
    /// first use, proven by HTTP-01 on --http-addr (which must be reachable on port
    /// 80 from the directory), e.g. https://acme-v02.api.letsencrypt.org/directory.
    #[arg(
        long,
        requires = "acme_email",
        requires = "https_addr",
        conflicts_with = "cert"
    )]
    pub(crate) acme_directory: Option<String>,
    /// The ACME challenge the Edge answers: http-01 (the directory reaches --http-addr
    /// on port 80) or tls-alpn-01 (it reaches --https-addr on port 443).
    #[arg(long, default_value = "http-01", value_parser = ["http-01", "tls-alpn-01"])]
    pub(crate) acme_challenge: String,
    /// Contact address of the ACME account.
    #[arg(long, requires = "acme_directory")]
    pub(crate) acme_email: Option<String>,
    /// PEM CA certificate the ACME directory's HTTPS is checked against instead of the
    /// system roots (test directories such as pebble).
    #[arg(long, requires = "acme_directory")]
    pub(crate) acme_ca: Option<PathBuf>,
    /// Seconds a viewer's first HTTPS handshake for a name waits for its ACME
    /// certificate.
    #[arg(long, default_value_t = netbore_edge::acme::DEFAULT_WAIT.as_secs())]
    pub(crate) acme_wait: u64,
    /// ACME orders started per minute, all names together (further orders wait).
    #[arg(long, default_value_t = netbore_edge::acme::DEFAULT_ORDERS_PER_MINUTE)]
    pub(crate) acme_orders_per_minute: u32,
    /// ACME orders started per hour for the names of one tunnel owner (an API key or
    /// an anonymous address); past it its new names get no certificate for the hour.
    #[arg(long, default_value_t = netbore_edge::acme::DEFAULT_ORDERS_PER_OWNER_PER_HOUR)]
    pub(crate) acme_orders_per_owner_per_hour: u32,
    /// Fraction of its lifetime after which an ACME certificate is renewed (tests).
    #[arg(long, default_value_t = netbore_edge::acme::DEFAULT_RENEW_FRACTION, hide = true)]
    pub(crate) acme_renew_fraction: f64,
    /// Seconds between checks for ACME certificates due for renewal (tests).
    #[arg(long, default_value_t = netbore_edge::acme::DEFAULT_RENEW_CHECK.as_secs(), hide = true)]
    pub(crate) acme_renew_check: u64,
    /// Development-CA certificates for HTTPS names kept in memory (the oldest is
    /// dropped, and made again when asked for).
    #[arg(long, default_value_t = netbore_edge::certs::DEFAULT_CACHE_CAPACITY)]
    pub(crate) cert_cache: usize,
    /// Public ports for TCP tunnels: LO-HI, or 0 for any free port.
    #[arg(long, default_value = "20000-29999")]
    pub(crate) tcp_ports: PortRange,
    /// Address public TCP ports are opened on.
    #[arg(long, default_value = "0.0.0.0")]
    pub(crate) tcp_bind_ip: IpAddr,
    /// Where the server keeps its signing key and state (default: $XDG_DATA_HOME/netbore
    /// or ~/.local/share/netbore; %LOCALAPPDATA%\netbore\data on Windows).
    #[arg(long, env = "NETBORE_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Keep the control store (API keys, reserved names, tunnel records with their
    /// recreate-token hashes) in the Redis at this URL, redis://[:PASSWORD@]HOST[:PORT][/DB],
    /// instead of DATA_DIR/netbore.db, so every server given the same URL shares it.
    /// DATA_DIR still holds this node's own files: its signing key, CA and audit log.
    #[arg(
        long,
        env = "NETBORE_REDIS",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) redis: Option<String>,
    /// Public host name of this server (used in public URLs and handed to agents).
    #[arg(long, default_value = "localhost")]
    pub(crate) domain: String,
    /// `HOST:PORT` agents should dial (default: DOMAIN and the agent port).
    #[arg(long)]
    pub(crate) edge_addr: Option<String>,
    /// Let agents without an API key create tunnels.
    #[arg(long)]
    pub(crate) allow_anonymous: bool,
    /// Lifetime of the tokens agents present to the Edge, in seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) token_ttl: u64,
    /// Seconds a new agent connection may take to finish its TLS and WebSocket
    /// set-up, and again to send its hello.
    #[arg(long, default_value_t = 10)]
    pub(crate) hello_timeout: u64,
    /// Keep agents' addresses out of headers and public logs (the audit log keeps them).
    #[arg(long)]
    pub(crate) mask_agent_ip: bool,
    /// The audit log file (default: DATA_DIR/audit.log).
    #[arg(long)]
    pub(crate) audit_log: Option<PathBuf>,
    /// Seconds an origin may take to start answering an HTTP request before the viewer
    /// gets a 504.
    #[arg(long, default_value_t = 60)]
    pub(crate) response_timeout: u64,
    /// Idle keep-alive connections the Edge keeps per HTTP tunnel, in each of its two
    /// pools (requests without a body, and the rest).
    #[arg(long, default_value_t = 64)]
    pub(crate) max_idle_upstream: usize,
    /// Viewer connections served at once: HTTP and HTTPS ingress and TCP tunnels'
    /// ports together (lowered to fit the open-file limit).
    #[arg(long, default_value_t = netbore_edge::limits::DEFAULT_MAX_VIEWER_CONNECTIONS)]
    pub(crate) max_viewer_connections: usize,
    /// Viewer connections one client address (IPv6: one /64) may hold at once.
    #[arg(long, default_value_t = netbore_edge::limits::DEFAULT_MAX_VIEWER_CONNECTIONS_PER_IP)]
    pub(crate) max_viewer_connections_per_ip: usize,
    /// Streams (requests in flight, WebSockets, TCP and TLS connections) one client
    /// address may hold at once.
    #[arg(long, default_value_t = netbore_edge::limits::DEFAULT_MAX_VIEWER_STREAMS_PER_IP)]
    pub(crate) max_viewer_streams_per_ip: usize,
    /// Streams (requests in flight, WebSockets, TCP and TLS connections) one tunnel
    /// serves at once; further HTTP requests get a 503 `tunnel_busy`.
    #[arg(long, default_value_t = netbore_edge::limits::DEFAULT_MAX_STREAMS_PER_TUNNEL)]
    pub(crate) max_streams_per_tunnel: usize,
    /// Bytes the Edge may be made to buffer for tunnels, all agents together (the sum
    /// of the receive windows it grants for viewers' streams, which is what viewers who
    /// stop reading can make it hold). Beyond it new streams are refused (HTTP: 503
    /// `edge_busy`). Default: half of the machine's memory (1 GiB where unknown).
    #[arg(long)]
    pub(crate) max_buffered_bytes: Option<u64>,
    /// Serve Prometheus metrics (`/metrics`), `/healthz` and `/readyz` on this address
    /// (off unless given; plain HTTP, so keep it on a private address).
    #[arg(long)]
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Tunnels that get a `tunnel` label of their own in the metrics (the busiest);
    /// the others are counted under `tunnel="other"`.
    #[arg(long, default_value_t = netbore_metrics::DEFAULT_TUNNEL_LABELS)]
    pub(crate) metrics_tunnel_labels: usize,
    /// Most live tunnels one API key may hold (stops one key taking every port or name).
    #[arg(long, default_value_t = 20)]
    pub(crate) max_tunnels_per_key: usize,
    /// Most live tunnels anonymous agents from one IP address may hold.
    #[arg(long, default_value_t = 5)]
    pub(crate) max_tunnels_per_anonymous_ip: usize,
    /// Most live tunnels anonymous agents from one IPv6 /48 may hold (stops one
    /// client with a /48 from using 65,536 /64s).
    #[arg(long, default_value_t = netbore_control::DEFAULT_MAX_TUNNELS_PER_ANONYMOUS_IPV6_48)]
    pub(crate) max_tunnels_per_anonymous_ipv6_48: usize,
    /// Most live anonymous tunnels on the server, all clients together (API keys keep
    /// working past it).
    #[arg(long, default_value_t = netbore_control::DEFAULT_MAX_ANONYMOUS_TUNNELS)]
    pub(crate) max_anonymous_tunnels: usize,
    /// Most tunnel records the store keeps, all owners together; past it creates are
    /// refused (503) once owners' oldest offline records are forgotten.
    #[arg(long, default_value_t = netbore_control::DEFAULT_MAX_TUNNEL_RECORDS)]
    pub(crate) max_tunnel_records: usize,
    /// Load balancers in front of the control API, as CIDR blocks, comma-separated:
    /// from these peers the client address is the rightmost untrusted one of
    /// X-Forwarded-For (default: none; the header is ignored).
    #[arg(long, value_delimiter = ',')]
    pub(crate) trusted_proxies: Vec<netbore_control::client_addr::Cidr>,
    /// Most names one API key may reserve.
    #[arg(long, default_value_t = 100)]
    pub(crate) max_names_per_key: usize,
    /// Names no tunnel may take or reserve, comma-separated ('' for none): names a
    /// stranger's tunnel could use to pass for the operator's services, or that
    /// clients look up and trust on their own (wpad, autodiscover).
    #[arg(long, value_delimiter = ',', default_value = netbore_control::names::DEFAULT_DENIED_NAMES)]
    pub(crate) denied_names: Vec<String>,
    /// Serve the control API over plain HTTP to clients on other machines too, not
    /// only over HTTPS: their API keys cross the network readable by anyone on the
    /// path. Loopback clients may always use http://.
    #[arg(long)]
    pub(crate) insecure_http_control: bool,
    /// Control API connections served at once.
    #[arg(long, default_value_t = netbore_control::serve::DEFAULT_MAX_CONNECTIONS)]
    pub(crate) max_api_connections: usize,
    /// Control API connections one client address (IPv6: one /64) may hold at once.
    #[arg(long, default_value_t = netbore_control::serve::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub(crate) max_api_connections_per_ip: usize,
    /// Seconds a control API client has to send its first byte, again for its TLS
    /// handshake, and again for its request head.
    #[arg(long, default_value_t = netbore_control::serve::DEFAULT_HEADER_TIMEOUT.as_secs())]
    pub(crate) api_header_timeout: u64,
    /// Seconds a whole control API exchange may take, request body included.
    #[arg(long, default_value_t = netbore_control::serve::DEFAULT_REQUEST_TIMEOUT.as_secs())]
    pub(crate) api_request_timeout: u64,
    /// Control API requests a second each client IP may sustain.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) api_rate: f64,
    /// Control API requests each client IP may send at once after being idle.
    #[arg(long, default_value_t = 40.0)]
    pub(crate) api_burst: f64,
    /// PEM certificate chain (leaf first) the Edge shows agents on the tls and wss
    /// transports (default: a development certificate signed by the CA in DATA_DIR).
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Do not accept QUIC on the agent port's UDP twin (agents then use wss, tls or tcp).
    #[arg(long)]
    pub(crate) no_quic: bool,
    #[command(flatten)]
    pub(crate) mux: crate::MuxArgs,
}

impl ServerArgs {
    /// The demo's server: the defaults of `netbore server`, every address on loopback
    /// and chosen by the OS, anonymous agents allowed, its data in `data_dir`.
    pub(crate) fn for_demo(data_dir: &std::path::Path) -> anyhow::Result<ServerArgs> {
        #[derive(clap::Parser)]
        struct Demo {
            #[command(flatten)]
            server: ServerArgs,
        }
        let data_dir = data_dir
            .to_str()
            .context("the temporary directory's path is not UTF-8")?;
        let parsed = <Demo as clap::Parser>::try_parse_from([
            "netbore-demo",
            "--control-addr=127.0.0.1:0",
            "--agent-addr=127.0.0.1:0",
            "--http-addr=127.0.0.1:0",
            "--tcp-ports=0",
            "--tcp-bind-ip=127.0.0.1",
            "--allow-anonymous",
            "--data-dir",
            data_dir,
        ])?;
        Ok(parsed.server)
    }
}

/// The window budget (`--max-buffered-bytes`) where the machine's memory is unknown.
const DEFAULT_WINDOW_BUDGET: u64 = 1 << 30;

/// The control plane's database inside the data directory.
pub(crate) const STORE_FILE: &str = "netbore.db";

/// The default data directory (see `platform::default_dir`).
pub(crate) fn default_data_dir() -> PathBuf {
    crate::platform::default_dir("data")
}

/// The addresses a started server is bound to.
#[derive(Debug, Clone)]
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
}

/// The Edge's certificate for the TLS transports (tls, wss, quic), and the development
/// CA that signed it when it is not the operator's.
struct EdgeTls {
    config: std::sync::Arc<netbore_transport::tls::ServerConfig>,
    dev_ca: Option<PathBuf>,
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
            names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
            let mut seen = std::collections::HashSet::new();
            names.retain(|n| seen.insert(n.clone()));
            let dev = netbore_edge::dev_ca::ensure(data_dir, &names)?;
            (dev.cert, dev.key, Some(dev.ca))
        }
    };
    let config = tls::server_config(tls::load_certs(&cert)?, tls::load_key(&key)?)?;
    Ok(EdgeTls { config, dev_ca })
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
    let store = netbore_control::store::open(args.redis.as_deref(), &data_dir.join(STORE_FILE))?;
    netbore_metrics::server()
        .tunnels
        .set_max_labels(args.metrics_tunnel_labels);
    let mut mux_config = netbore_edge::agent_session_config(args.mux.config());
    let window_budget = args.max_buffered_bytes.unwrap_or_else(|| {
        crate::platform::physical_memory().map_or(DEFAULT_WINDOW_BUDGET, |m| m / 2)
    });
    mux_config.window_budget = Some(std::sync::Arc::new(netbore_mux::WindowBudget::new(
        window_budget,
    )));
    let edge_tls = edge_tls(args, &data_dir)?;
    // The control API's HTTPS shows agents the same certificate as their transports.
    let control_tls = edge_tls.config.clone();
    let listener_config = netbore_transport::ListenerConfig {
        mux: mux_config,
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
    let (certs, https_ca) = match (&https_listener, &args.cert, &args.key) {
        (None, _, _) => (None, None),
        (Some(_), _, _) if args.acme_directory.is_some() => {
            // Only names an agent serves now are ordered, paid from their owner's budget.
            let tunnels = netbore_edge::acme::RegistryLookup::new(registry.clone(), store.clone());
            let source = acme_source(args, &data_dir, std::sync::Arc::new(tunnels))?;
            acme_challenges = Some(source.challenges());
            source.spawn_renewal();
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
    let edge_addr = args
        .edge_addr
        .clone()
        .unwrap_or_else(|| format!("{}:{}", args.domain, bound.agent.port()));
    let control_config = ControlConfig {
        allow_anonymous: args.allow_anonymous,
        domain: args.domain.clone(),
        edges: vec![EdgeCandidate {
            addr: edge_addr,
            transports: bound.transports.iter().map(|t| t.to_string()).collect(),
            development_ca: bound.dev_ca.is_some(),
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
    let edge_config = EdgeConfig {
        domain: args.domain.clone(),
        hello_timeout: Duration::from_secs(args.hello_timeout.max(1)),
        mask_agent_ip: args.mask_agent_ip,
        viewer_limits: viewer_limits.clone(),
    };
    let edge = Edge::new(edge_config, signer.verifier(), registry.clone(), audit);
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
        },
    );
    let https = https_listener.zip(certs);
    tokio::spawn(ingress.serve_both(http_listener, https));
    let control = std::sync::Arc::new(Control::new(
        control_config,
        signer,
        Box::new(registry),
        store,
    ));
    tokio::spawn(sweep_revoked_keys(control.clone()));
    let serve_config = netbore_control::serve::ServeConfig {
        tls: Some(control_tls),
        insecure_http: args.insecure_http_control,
        max_connections: max_api,
        max_connections_per_ip: args.max_api_connections_per_ip.max(1),
        header_timeout: Duration::from_secs(args.api_header_timeout.max(1)),
        request_timeout: Duration::from_secs(args.api_request_timeout.max(1)),
    };
    let app = netbore_control::api::router(control);
    tokio::spawn(async move {
        if let Err(e) = netbore_control::serve::serve(control_listener, app, serve_config).await {
            tracing::error!(error = %e, "the control API stopped");
        }
    });
    tokio::spawn(edge.serve(agent_listener));
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
    let bound = start(&args).await?;
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let store = bound.store.clone();
            let ready: crate::metrics_http::Readiness = std::sync::Arc::new(move || {
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
    crate::platform::stop_signal().await;
    Ok(())
}
