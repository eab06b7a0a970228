//! The flags of `netbore server`, each defined once with its default and its help.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use netbore_edge::PortRange;

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
    /// The fleet's shared store (`--redis`, `--redis-plaintext`).
    #[command(flatten)]
    pub(crate) store: crate::redis_args::RedisArgs,
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
    /// Seconds a draining server (SIGTERM, SIGINT) lets viewer connections and streams
    /// in flight finish before it cuts them and exits; a second signal exits at once.
    #[arg(long, env = "NETBORE_DRAIN_TIMEOUT", default_value_t = 30)]
    pub(crate) drain_timeout: u64,
    /// Seconds a draining server keeps accepting viewers after /readyz turns 503,
    /// even when idle, so load balancers that check readiness stop sending to it
    /// before it exits: at least their health check's detection time.
    #[arg(long, env = "NETBORE_DRAIN_LINGER", default_value_t = 5)]
    pub(crate) drain_linger: u64,
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
    /// Load balancers in front of this server, as CIDR blocks, comma-separated: from
    /// these peers the control API's client address is the rightmost untrusted one of
    /// X-Forwarded-For, and with --proxy-protocol viewers' addresses come from their
    /// PROXY headers (default: none; no peer is believed).
    #[arg(long, value_delimiter = ',')]
    pub(crate) trusted_proxies: Vec<netbore_control::client_addr::Cidr>,
    /// Viewer connections (HTTP, HTTPS and TCP tunnels' ports) from --trusted-proxies
    /// start with a PROXY protocol v2 header naming the client, within
    /// --tls-handshake-timeout, or are closed; that client is the viewer for
    /// per-address caps, forwarding headers and logs (default: off; no peer is read
    /// for a header).
    #[arg(long, requires = "trusted_proxies")]
    pub(crate) proxy_protocol: bool,
    /// Most names one API key may reserve.
    #[arg(long, default_value_t = 100)]
    pub(crate) max_names_per_key: usize,
    /// Id (k_…) of an API key that may drain this node through the control API
    /// (POST /admin/drain), as SIGTERM does; repeat or comma-separate for more
    /// (default: none, only a signal drains).
    #[arg(long = "admin-key", env = "NETBORE_ADMIN_KEYS", value_delimiter = ',')]
    pub(crate) admin_keys: Vec<String>,
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
    /// Control API requests a second each client IP may sustain (in a fleet, at all
    /// nodes together).
    #[arg(long, default_value_t = 20.0)]
    pub(crate) api_rate: f64,
    /// Control API requests each client IP may send at once after being idle (in a
    /// fleet, at all nodes together).
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
    pub(crate) fleet: crate::fleet::FleetArgs,
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
