//! `netbore tcp`: expose a local TCP service.

use netbore_agent::{AgentConfig, AgentEvent, ControlUrl, TunnelSpec};
use serde_json::json;

use crate::output::Printer;

/// Flags of `netbore tcp`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TcpArgs {
    /// The local service: PORT or HOST:PORT.
    pub(crate) local: String,
    /// The control plane, e.g. http://tunnel.example.com:7834.
    #[arg(long, env = "NETBORE_SERVER", default_value = "http://localhost:7834")]
    pub(crate) server: ControlUrl,
    /// Ask for this public port.
    #[arg(long)]
    pub(crate) remote_port: Option<u16>,
    #[command(flatten)]
    pub(crate) mux: crate::MuxArgs,
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
    match event {
        AgentEvent::Online {
            tunnel_id,
            public_url,
            local,
            transport,
        } => printer.event(
            "online",
            json!({ "tunnel_id": tunnel_id, "public_url": public_url, "local": local, "transport": transport.as_str() }),
            &format!("Tunnel online: {public_url} -> {local} (over {})", transport.as_str()),
        ),
        AgentEvent::Reconnecting { attempt, delay, reason } => printer.event(
            "reconnecting",
            json!({ "attempt": attempt, "delay_ms": delay.as_millis() as u64, "reason": reason }),
            &format!("{reason}; reconnecting in {:.1} s (attempt {attempt})", delay.as_secs_f64()),
        ),
    }
}

/// Runs `netbore tcp` until a permanent error.
pub(crate) async fn run(args: TcpArgs, printer: Printer) -> anyhow::Result<()> {
    let local = local_addr(&args.local)?;
    let mut config = AgentConfig::new(
        args.server,
        vec![TunnelSpec {
            local,
            remote_port: args.remote_port,
        }],
    );
    config.mux = args.mux.config();
    let error = netbore_agent::run(config, |e| print_event(printer, e)).await;
    printer.error(error.code(), &error.to_string());
    std::process::exit(1);
}
