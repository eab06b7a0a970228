//! `netbore tcp`, `netbore http` and `netbore tls`: expose a local service.

use std::path::PathBuf;
use std::time::Duration;

use netbore_agent::inspect::api::InspectAddr;
use netbore_agent::inspect::{InspectConfig, Inspector, TunnelInfo};
use netbore_agent::pin::{Pinned, pin_server_ca};
use netbore_agent::{AgentConfig, AgentEvent, ControlUrl, TunnelSpec};
use netbore_transport::TransportKind;
use netbore_transport::proxy::Proxy;
use netbore_transport::tls::TrustOptions;
use serde_json::json;

use crate::output::Printer;

/// Flags every agent command shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AgentArgs {
    /// The control plane, e.g. https://tunnel.example.com:7834 (a HOST:PORT without
    /// a scheme means https, or http on this machine). Give it several times (or
    /// comma-separated) for the nodes of a fleet: when one cannot be reached the
    /// agent moves to the next, and it learns the others from the first it reaches.
    #[arg(
        long,
        env = "NETBORE_SERVER",
        default_value = "http://localhost:7834",
        value_delimiter = ','
    )]
    pub(crate) server: Vec<ControlUrl>,
    /// API key (omit to connect anonymously where the server allows it).
    #[arg(long, env = "NETBORE_KEY", hide_env_values = true)]
    pub(crate) key: Option<String>,
    /// Where recreate tokens are kept so a restarted agent gets the same URL back
    /// (default: $XDG_STATE_HOME/netbore or ~/.local/state/netbore; %LOCALAPPDATA%\netbore\state on Windows).
    #[arg(long, env = "NETBORE_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Start with a new tunnel instead of reclaiming the one from the last run.
    #[arg(long)]
    pub(crate) fresh: bool,
    /// Transport to the Edge: auto (the server's order, QUIC first, falling back to
    /// WSS when UDP is blocked and moving back when it passes again), quic, wss
    /// (WebSocket over TLS, passes web proxies), tls, tcp, or ws (unencrypted
    /// WebSocket, for local development).
    #[arg(long, env = "NETBORE_TRANSPORT", default_value = "auto")]
    pub(crate) transport: TransportArg,
    /// With --transport auto: milliseconds QUIC may take before the next transport
    /// is tried.
    #[arg(long, default_value_t = 2000)]
    pub(crate) quic_fallback_after_ms: u64,
    /// With --transport auto on a fallback: seconds between tries to move back to QUIC.
    #[arg(long, default_value_t = 30)]
    pub(crate) quic_probe_interval: u64,
    /// Sessions to hold, each on another node of a fleet, so losing a node costs no
    /// request (default: 2 when the fleet has two nodes or more; 1 turns it off).
    #[arg(long, env = "NETBORE_HA", value_parser = clap::value_parser!(u16).range(1..=16))]
    pub(crate) ha: Option<u16>,
    /// PEM file of a CA to trust for the Edge's certificate besides the system's
    /// (for a development server: the file `netbore ca path` prints).
    #[arg(long, env = "NETBORE_CA")]
    pub(crate) ca: Option<PathBuf>,
    /// SHA-256 fingerprint of the server's CA (`netbore server` prints it) to trust
    /// for the control plane and the Edge. Without it and without --ca, a server
    /// whose certificate the system does not trust has its CA pinned on first use in
    /// the state directory (known_servers), and a later change is refused.
    #[arg(long, env = "NETBORE_CA_FINGERPRINT")]
    pub(crate) ca_fingerprint: Option<String>,
    /// Accept any certificate from the control plane and the Edge. Anyone in the path
    /// can then read the API key and read and change the session: for debugging only.
    #[arg(long)]
    pub(crate) insecure_skip_verify: bool,
    /// Speak plain http:// to a control plane on another machine. The API key and
    /// tunnel tokens then cross the network readable by anyone on the path.
    #[arg(long)]
    pub(crate) insecure_http: bool,
    /// HTTP proxy to reach the Edge through with CONNECT, http://HOST:PORT or
    /// http://USER:PASSWORD@HOST:PORT, percent-encoded (default: HTTPS_PROXY, which
    /// keeps a password out of the process list, except for hosts in NO_PROXY and
    /// loopback).
    #[arg(long)]
    pub(crate) proxy: Option<String>,
    /// Threads forwarding traffic (0: one per core). One is enough for most services
    /// and costs the least CPU per request; more let a busy tunnel use more cores.
    #[arg(long, env = "NETBORE_THREADS", default_value_t = 1)]
    pub(crate) threads: usize,
    /// Serve Prometheus metrics (`/metrics`), `/healthz` and `/readyz` (ready while
    /// the session to the Edge is up) on this address; off unless given.
    #[arg(long)]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// The request inspector's web page and API (ngrok's agent API): an address,
    /// or off. By default 127.0.0.1:4040, or the next free port up to 4049.
    #[arg(
        long,
        env = "NETBORE_INSPECT",
        default_value = "127.0.0.1:4040",
        value_name = "ADDR|off"
    )]
    pub(crate) inspect: InspectArg,
    /// Bytes of each request and response body the inspector keeps.
    #[arg(long, env = "NETBORE_INSPECT_BODY_LIMIT", default_value_t = netbore_agent::inspect::DEFAULT_BODY_LIMIT)]
    pub(crate) inspect_body_limit: usize,
    /// Memory the inspector may hold, as the allocator counts it (its history and
    /// its capture queue); the oldest requests go first.
    #[arg(long, env = "NETBORE_INSPECT_DB_SIZE", default_value_t = netbore_agent::inspect::DEFAULT_DB_SIZE)]
    pub(crate) inspect_db_size: usize,
    /// Show Authorization and Cookie values in the inspector (hidden by default;
    /// replays send them either way).
    #[arg(long, env = "NETBORE_INSPECT_SECRETS")]
    pub(crate) inspect_secrets: bool,
    #[command(flatten)]
    pub(crate) mux: crate::MuxArgs,
}

/// `--inspect`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InspectArg(pub(crate) Option<InspectAddr>);

impl std::str::FromStr for InspectArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if ["off", "false", "no", "0"]
            .iter()
            .any(|o| s.eq_ignore_ascii_case(o))
        {
            return Ok(InspectArg(None));
        }
        let addr: std::net::SocketAddr = s.parse().map_err(|_| {
            format!("{s:?} is not an address; write HOST:PORT like 127.0.0.1:4040, or off")
        })?;
        Ok(InspectArg(Some(
            if addr == netbore_agent::inspect::DEFAULT_ADDR {
                InspectAddr::Default
            } else {
                InspectAddr::At(addr)
            },
        )))
    }
}

/// `--transport`: `auto` or one transport.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransportArg(pub(crate) Option<TransportKind>);

impl std::str::FromStr for TransportArg {
    type Err = netbore_transport::UnknownTransport;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(TransportArg(None));
        }
        s.parse().map(|k| TransportArg(Some(k)))
    }
}

impl AgentArgs {
    /// The first `--server`: the one recreate tokens and pins are kept for.
    fn primary(&self) -> &ControlUrl {
        // clap's default gives at least one.
        &self.server[0]
    }

    /// The agent configuration for `tunnels`: the one place every agent command
    /// (`http`, `tcp`, `tls`, `start`) turns its flags into an [`AgentConfig`].
    pub(crate) fn config(&self, tunnels: Vec<TunnelSpec>) -> anyhow::Result<AgentConfig> {
        let mut config = AgentConfig::new(self.primary().clone(), tunnels);
        config.fallback_servers = self.server.iter().skip(1).cloned().collect();
        config.transport = self.transport.0;
        config.quic_fallback_after = Duration::from_millis(self.quic_fallback_after_ms.max(1));
        config.quic_probe_interval = Duration::from_secs(self.quic_probe_interval.max(1));
        config.ha = self.ha.map(usize::from);
        if self.insecure_skip_verify {
            eprintln!(
                "WARNING: --insecure-skip-verify is on: the control plane's and the Edge's certificates are not checked, so anyone in the path can read the API key and read and change the tunnel's traffic; use --ca FILE or --ca-fingerprint instead"
            );
        }
        if let Some(ca) = &self.ca {
            // Read now, so a wrong path fails at start rather than at the first TLS dial.
            netbore_transport::tls::load_certs(ca)?;
        }
        config.trust = TrustOptions {
            extra_ca: self.ca.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
        };
        if self.insecure_http
            && self
                .server
                .iter()
                .any(|server| !server.tls && !server.is_loopback())
        {
            eprintln!(
                "WARNING: --insecure-http is on: the API key and tunnel tokens cross the network in clear text; use https:// instead"
            );
        }
        config.insecure_http = self.insecure_http;
        config.proxy = self.proxy.as_deref().map(Proxy::parse).transpose()?;
        config.mux = self.mux.config();
        config.api_key = self.key.clone().filter(|k| !k.is_empty());
        config.state_dir = Some(self.state_dir.clone().unwrap_or_else(default_state_dir));
        if self.fresh
            && let Some(dir) = &config.state_dir
        {
            let state =
                netbore_agent::state::StateDir::new(dir.clone(), &self.primary().to_string());
            for t in &config.tunnels {
                state.forget(t);
            }
        }
        Ok(config)
    }
}

/// The default state directory (see `platform::default_dir`).
fn default_state_dir() -> PathBuf {
    crate::platform::default_dir("state")
}

/// Flags of `netbore tcp`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TcpArgs {
    /// The local service: PORT or HOST:PORT.
    pub(crate) local: String,
    /// Ask for this public port.
    #[arg(long)]
    pub(crate) remote_port: Option<u16>,
    #[command(flatten)]
    pub(crate) agent: AgentArgs,
}

/// Flags of `netbore tls`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TlsArgs {
    /// The local TLS service, which holds its own certificate: PORT or HOST:PORT.
    pub(crate) local: String,
    /// Ask for this name: viewers reach the service at NAME.DOMAIN on the server's
    /// HTTPS port.
    #[arg(long)]
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) agent: AgentArgs,
}

/// Flags of `netbore http`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HttpArgs {
    /// The local web service: PORT, HOST:PORT or http://HOST[:PORT].
    pub(crate) local: String,
    /// Ask for this name: the URL becomes http://NAME.DOMAIN.
    #[arg(long)]
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) agent: AgentArgs,
}

/// `http://HOST[:PORT][/...]` → `HOST:PORT` (80 by default); anything else as
/// [`local_addr`].
pub(crate) fn local_http_addr(local: &str) -> anyhow::Result<String> {
    if local.starts_with("https://") {
        anyhow::bail!(
            "{local} is an https origin, which netbore http cannot reach yet; point it at the plain-HTTP port"
        );
    }
    let Some(rest) = local.strip_prefix("http://") else {
        return local_addr(local);
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        anyhow::bail!("{local:?} names no host; write http://HOST:PORT");
    }
    if authority.contains(':') {
        local_addr(authority)
    } else {
        Ok(format!("{authority}:80"))
    }
}

/// `PORT` → `127.0.0.1:PORT`; `HOST:PORT` unchanged.
pub(crate) fn local_addr(local: &str) -> anyhow::Result<String> {
    if let Ok(port) = local.parse::<u16>() {
        return Ok(format!("127.0.0.1:{port}"));
    }
    match local.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(local.to_string())
        }
        _ => anyhow::bail!(
            "{local:?} is not a local service; write a PORT (5432) or HOST:PORT (db.local:5432)"
        ),
    }
}

/// Prints agent events.
pub(crate) fn print_event(printer: Printer, event: AgentEvent) {
    print_event_with(printer, event, None);
}

/// Prints agent events; `online` names the inspector's address when it runs.
pub(crate) fn print_event_with(printer: Printer, event: AgentEvent, inspector: Option<&str>) {
    match event {
        AgentEvent::Online {
            tunnel_id,
            public_url,
            local,
            transport,
            name,
        } => {
            let mut fields = json!({ "tunnel_id": tunnel_id, "public_url": public_url, "local": local, "transport": transport.as_str() });
            if let Some(name) = &name {
                fields["name"] = name.as_str().into();
            }
            if let Some(url) = inspector {
                fields["inspector"] = url.into();
            }
            printer.event(
                "online",
                fields,
                &format!(
                    "Tunnel online: {public_url} -> {local} (over {})",
                    transport.as_str()
                ),
            )
        }
        AgentEvent::TunnelClosed {
            tunnel_id,
            code,
            message,
        } => printer.event(
            "tunnel_closed",
            json!({ "tunnel_id": tunnel_id, "code": code, "message": message }),
            &message,
        ),
        AgentEvent::Reconnecting {
            attempt,
            delay,
            reason,
        } => printer.event(
            "reconnecting",
            json!({ "attempt": attempt, "delay_ms": delay.as_millis() as u64, "reason": reason }),
            &format!(
                "{reason}; reconnecting in {:.1} s (attempt {attempt})",
                delay.as_secs_f64()
            ),
        ),
    }
}

/// A TCP tunnel to `local` (PORT or HOST:PORT), as `netbore tcp` and a config file's
/// `proto = "tcp"` ask for it.
pub(crate) fn tcp_tunnel(local: &str, remote_port: Option<u16>) -> anyhow::Result<TunnelSpec> {
    Ok(TunnelSpec::tcp(local_addr(local)?, remote_port))
}

/// A TLS passthrough tunnel to `local` (PORT or HOST:PORT), as `netbore tls` and a
/// config file's `proto = "tls"` ask for it.
pub(crate) fn tls_tunnel(local: &str, name: Option<&str>) -> anyhow::Result<TunnelSpec> {
    let name = name.map(str::to_ascii_lowercase);
    Ok(TunnelSpec::tls(local_addr(local)?, name))
}

/// An HTTP tunnel to `local` (PORT, HOST:PORT or http://HOST[:PORT]), as `netbore
/// http` and a config file's `proto = "http"` ask for it.
pub(crate) fn http_tunnel(local: &str, name: Option<&str>) -> anyhow::Result<TunnelSpec> {
    let name = name.map(str::to_ascii_lowercase);
    Ok(TunnelSpec::http(local_http_addr(local)?, name))
}

/// Runs `netbore tcp` until a permanent error.
pub(crate) async fn run_tcp(args: TcpArgs, printer: Printer) -> anyhow::Result<()> {
    let tunnel = tcp_tunnel(&args.local, args.remote_port)?;
    let config = args.agent.config(vec![tunnel])?;
    run(config, &args.agent, printer).await
}

/// Runs `netbore tls` until a permanent error.
pub(crate) async fn run_tls(args: TlsArgs, printer: Printer) -> anyhow::Result<()> {
    let tunnel = tls_tunnel(&args.local, args.name.as_deref())?;
    let config = args.agent.config(vec![tunnel])?;
    run(config, &args.agent, printer).await
}

/// Runs `netbore http` until a permanent error.
pub(crate) async fn run_http(args: HttpArgs, printer: Printer) -> anyhow::Result<()> {
    let tunnel = http_tunnel(&args.local, args.name.as_deref())?;
    let config = args.agent.config(vec![tunnel])?;
    run(config, &args.agent, printer).await
}

/// Trusts the server's own CA when the system's roots do not: the one given with
/// --ca-fingerprint, or the one pinned on first use (`netbore_agent::pin`).
async fn pin_ca(config: &mut AgentConfig, args: &AgentArgs, printer: Printer) {
    if !config.server.tls || config.trust.extra_ca.is_some() || config.trust.insecure_skip_verify {
        return;
    }
    let Some(dir) = config.state_dir.clone() else {
        return;
    };
    let pinned = pin_server_ca(
        &config.server,
        &dir,
        args.ca_fingerprint.as_deref(),
        config.connect_timeout,
    );
    match pinned.await {
        Ok(Pinned::PublicCertificate) => {}
        Ok(Pinned::Known { ca_file, .. }) => config.trust.extra_ca = Some(ca_file),
        Ok(Pinned::FirstUse {
            ca_file,
            fingerprint,
        }) => {
            printer.event(
                "ca_pinned",
                json!({ "server": config.server.to_string(), "fingerprint": fingerprint }),
                &format!(
                    "Trusting the server's CA {fingerprint} on first use (pinned in {}; a different CA will be refused)",
                    dir.join(netbore_agent::pin::KNOWN_SERVERS).display()
                ),
            );
            config.trust.extra_ca = Some(ca_file);
        }
        // Not reachable yet: the agent's own retries report it.
        Err(netbore_agent::AgentError::ControlUnreachable { .. }) => {}
        Err(e) => {
            printer.error(e.code(), &e.to_string());
            std::process::exit(1);
        }
    }
}

/// Stops the inspector's server when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the request inspector unless `--inspect off`: binds its address, serves
/// its page and API, and gives it to the agent. Its server stops when the returned
/// guard is dropped.
async fn start_inspector(
    config: &mut AgentConfig,
    args: &AgentArgs,
    printer: Printer,
) -> anyhow::Result<Option<AbortOnDrop>> {
    let Some(at) = args.inspect.0 else {
        return Ok(None);
    };
    if let InspectAddr::At(addr) = at
        && !addr.ip().is_loopback()
    {
        eprintln!(
            "WARNING: the inspector listens on {addr}, off loopback: anyone who can reach it can read this agent's traffic and replay requests with their credentials; use 127.0.0.1 unless that is what you want"
        );
    }
    let inspector = Inspector::new(InspectConfig {
        body_limit: args.inspect_body_limit,
        db_size: args.inspect_db_size,
        secrets: args.inspect_secrets,
    });
    inspector.set_tunnels(
        config
            .tunnels
            .iter()
            .enumerate()
            .map(|(i, t)| TunnelInfo {
                name: t.label.clone().unwrap_or_else(|| {
                    if config.tunnels.len() == 1 {
                        "command_line".to_string()
                    } else {
                        format!("command_line_{}", i + 1)
                    }
                }),
                public_url: String::new(),
                protocol: t.protocol,
                local: t.local.clone(),
                inspect: t.inspect,
            })
            .collect(),
    );
    let listener = match netbore_agent::inspect::api::bind(&inspector, at).await {
        Ok(listener) => listener,
        // Ten agents on one machine already: this one runs without an inspector.
        Err(e @ netbore_agent::inspect::api::BindError::AllTaken) => {
            tracing::warn!("{e}; running without it");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let url = inspector.url().unwrap_or_default();
    printer.event(
        "inspector",
        json!({ "inspector": url }),
        &format!("Inspector: {url}"),
    );
    let serving = inspector.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = netbore_agent::inspect::api::serve(serving, listener).await {
            tracing::warn!(error = %e, "the inspector's server stopped");
        }
    });
    config.inspector = Some(inspector);
    Ok(Some(AbortOnDrop(task)))
}

/// Runs the agent `config` describes (its tunnels on one session) until a permanent
/// error or a stop signal.
pub(crate) async fn run(
    mut config: AgentConfig,
    args: &AgentArgs,
    printer: Printer,
) -> anyhow::Result<()> {
    if let Some(addr) = args.metrics_addr {
        let ready: crate::metrics_http::Readiness =
            std::sync::Arc::new(|| match netbore_metrics::agent().state() {
                netbore_metrics::SessionState::Online => Ok(()),
                _ => Err("the session to the Edge is not up".to_string()),
            });
        let at = crate::metrics_http::start(addr, netbore_metrics::Role::Agent, ready).await?;
        printer.event(
            "metrics",
            serde_json::json!({ "metrics": format!("http://{at}") }),
            &format!("Metrics: http://{at}/metrics"),
        );
    }
    pin_ca(&mut config, args, printer).await;
    let _inspector_task = start_inspector(&mut config, args, printer).await?;
    // The live console on a terminal; plain lines (or JSON) otherwise.
    let inspector_url = config.inspector.as_ref().and_then(Inspector::url);
    let console =
        crate::console::Console::start_if_wanted(printer, &config, config.inspector.clone());
    let error = netbore_agent::run_until(
        config,
        |e| match &console {
            Some(console) => console.handle_event(e),
            None => print_event_with(printer, e, inspector_url.as_deref()),
        },
        crate::platform::stop_signal(),
    )
    .await;
    // The terminal as it was, before anything else is printed.
    drop(console);
    if let netbore_agent::AgentError::Stopped = error {
        return Ok(());
    }
    printer.error(error.code(), &error.to_string());
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_services_parse() {
        assert_eq!(local_addr("8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(local_addr("db:5432").unwrap(), "db:5432");
        assert!(local_addr("db").is_err());
        assert_eq!(local_http_addr("3000").unwrap(), "127.0.0.1:3000");
        assert_eq!(
            local_http_addr("http://localhost:3000/app").unwrap(),
            "localhost:3000"
        );
        assert_eq!(local_http_addr("http://web.local").unwrap(), "web.local:80");
        assert!(local_http_addr("https://x:443").is_err());
        assert!(local_http_addr("http:///").is_err());
    }
}
