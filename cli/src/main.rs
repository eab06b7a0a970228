//! `netbore`: one binary for every role. This crate is wiring only: flags, output,
//! and starting the library parts.

mod agent_cmd;
mod ca_cmd;
mod config;
mod console;
mod demo;
mod fleet;
mod key_cmd;
mod memory;
mod meta_cmd;
mod metrics_http;
mod output;
mod platform;
mod redis_args;
mod server;
mod server_args;
mod tunnels_cmd;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::output::Printer;

/// Expose a local service to the internet from behind NAT.
#[derive(Debug, Parser)]
#[command(
    name = "netbore",
    version,
    about = "Expose a local service to the internet from behind NAT, through an Edge you host."
)]
struct Cli {
    /// Print one JSON object per line on stdout and nothing else there.
    #[arg(long, global = true)]
    json: bool,
    /// Log lines on stderr as text or as one JSON object per line (`RUST_LOG`
    /// chooses what is logged).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event, its fields (`tunnel_id` and so on) as keys.
    Json,
}

// Parsed once at start-up; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Edge and the Control plane together.
    Server(server::ServerArgs),
    /// Expose a local web service and print its public URL (http://NAME.DOMAIN).
    Http(agent_cmd::HttpArgs),
    /// Expose a local TCP service (PORT or HOST:PORT) and print its public address.
    Tcp(agent_cmd::TcpArgs),
    /// Expose a local TLS service (PORT or HOST:PORT) as tls://NAME.DOMAIN on the
    /// server's HTTPS port; the Edge passes TLS through without opening it.
    Tls(agent_cmd::TlsArgs),
    /// Run a server and an agent in one process and expose a hello service.
    Demo(demo::DemoArgs),
    /// Create, list and revoke API keys in the server's store.
    Key(key_cmd::KeyArgs),
    /// List the tunnels of the server's store (with --redis, a fleet's, and the node
    /// serving each).
    Tunnels(tunnels_cmd::TunnelsArgs),
    /// The server's development CA, which agents trust with --ca for tls and wss.
    Ca(ca_cmd::CaArgs),
    /// Start tunnels of the config file (netbore.toml) by name, or --all, over one
    /// session.
    Start(config::start::StartArgs),
    /// Check the config file or store an API key in it.
    Config(config::ConfigArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(meta_cmd::CompletionsArgs),
    /// Print the man page (roff) on stdout.
    Man,
    /// Print the version.
    Version,
}

/// Mux limits shared by every command that holds a session.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MuxArgs {
    /// Most concurrent streams (viewer connections) per session.
    #[arg(long, default_value_t = 8192)]
    pub(crate) max_streams: usize,
    /// Largest mux frame payload accepted from the peer, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub(crate) max_frame_size: u32,
    /// Largest receive window one stream may grow to, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub(crate) max_stream_window: u32,
    /// Sum of all receive windows of a session, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub(crate) max_session_window: u64,
    /// Seconds between keepalive pings (each also measures the round trip).
    #[arg(long, default_value_t = 10)]
    pub(crate) keepalive: u64,
    /// Seconds a session may go without a sign of life from its peer (an answered
    /// keepalive, or any bytes while one is awaited; any packet over QUIC) before the
    /// peer is declared dead: a link that falls silent (packets dropped, no FIN or
    /// RST) is found within this, and an agent reconnects elsewhere. Default: 5 more
    /// than --keepalive (15); at least 1 more. Over QUIC the smaller of the two ends'
    /// tolerances holds.
    #[arg(long)]
    pub(crate) keepalive_tolerance: Option<u64>,
}

impl MuxArgs {
    /// The mux configuration these flags describe.
    pub(crate) fn config(&self) -> netbore_mux::Config {
        let interval = self.keepalive.max(1);
        let keepalive = std::time::Duration::from_secs(interval);
        let tolerance = self.keepalive_tolerance.unwrap_or(interval + 5);
        let unanswered = tolerance.saturating_sub(interval).max(1);
        netbore_mux::Config {
            max_streams: self.max_streams,
            max_frame_size: self.max_frame_size,
            max_stream_window: self.max_stream_window,
            max_session_window: self.max_session_window,
            keepalive_interval: Some(keepalive),
            keepalive_timeout: std::time::Duration::from_secs(unanswered),
            ..netbore_mux::Config::default()
        }
    }
}

/// The runtime a command runs on. An agent forwards on `--threads` threads, one by
/// default: a single-threaded runtime never hands a wake-up to another thread, which
/// saves 9–15 % of the agent's CPU per request (docs/benchmarks.md, finding 24). The
/// server uses one thread per core unless `--threads` says otherwise, and the demo
/// one per core.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match command {
        Command::Http(a) => a.agent.threads,
        Command::Tcp(a) => a.agent.threads,
        Command::Tls(a) => a.agent.threads,
        Command::Start(a) => a.agent.threads,
        Command::Server(a) => a.threads,
        Command::Key(_)
        | Command::Tunnels(_)
        | Command::Ca(_)
        | Command::Config(_)
        | Command::Completions(_)
        | Command::Man
        | Command::Version => 1,
        Command::Demo(_) => 0,
    };
    match threads {
        0 => tokio::runtime::Runtime::new(),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) to the hard one: every viewer,
/// agent and origin connection is a descriptor, and a default soft limit (often 1024)
/// would fail accepts long before the caps bind. The server sizes its caps below the
/// result ([`open_file_limit`]).
#[cfg(unix)]
fn raise_open_file_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() {}

/// The soft open-file limit now in force; `None` where there is none to read.
#[cfg(unix)]
pub(crate) fn open_file_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// The soft open-file limit now in force; `None` where there is none to read.
#[cfg(not(unix))]
pub(crate) fn open_file_limit() -> Option<u64> {
    None
}

fn main() {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Start(args), Some(("start", start))) = (&mut cli.command, matches.subcommand())
    {
        args.note_defaults(start);
    }
    let printer = Printer { json: cli.json };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,netbore=info,netbore_edge=info,netbore_agent=info")
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    raise_open_file_limit();
    let runtime = match runtime_for(&cli.command) {
        Ok(r) => r,
        Err(e) => {
            printer.error(
                "internal",
                &format!("could not start the async runtime: {e}"),
            );
            std::process::exit(1);
        }
    };
    let command = async move {
        let _trimmer = memory::Trimmer::start();
        match cli.command {
            Command::Server(args) => server::run(args, printer).await,
            Command::Http(args) => agent_cmd::run_http(args, printer).await,
            Command::Tcp(args) => agent_cmd::run_tcp(args, printer).await,
            Command::Tls(args) => agent_cmd::run_tls(args, printer).await,
            Command::Demo(args) => demo::run(args, printer).await,
            Command::Key(args) => key_cmd::run(args, printer).await,
            Command::Tunnels(args) => tunnels_cmd::run(args, printer).await,
            Command::Ca(args) => ca_cmd::run(args, printer),
            Command::Start(args) => config::start::run(args, printer).await,
            Command::Config(args) => config::run(args, printer),
            Command::Completions(args) => meta_cmd::completions(args, Cli::command()),
            Command::Man => meta_cmd::man(Cli::command()),
            Command::Version => meta_cmd::version(printer),
        }
    };
    // On a multi-thread runtime the command runs on a worker thread, not on the main
    // thread `block_on` parks: loops it runs directly would otherwise cost two
    // cross-thread wake-ups per event, main thread and then a worker.
    let result = match runtime.block_on(runtime.spawn(command)) {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    if let Err(e) = result {
        let message = format!("{e:#}");
        printer.error("startup_failed", &message);
        std::process::exit(1);
    }
}
