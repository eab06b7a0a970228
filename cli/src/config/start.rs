//! `netbore start`: runs tunnels of the config file, all of them on one session.
//! Flags and `NETBORE_*` variables win over the file, and the file over defaults.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use netbore_agent::TunnelSpec;

use super::file::ConfigFile;
use crate::agent_cmd::{self, AgentArgs};
use crate::output::Printer;

/// Flags of `netbore start`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StartArgs {
    /// The tunnels to start, by their names in the config file ([tunnels.NAME]).
    names: Vec<String>,
    /// Start every tunnel in the config file.
    #[arg(long, conflicts_with = "names")]
    all: bool,
    /// The config file (default: $XDG_CONFIG_HOME/netbore/netbore.toml or
    /// ~/.config/netbore/netbore.toml; %APPDATA%\netbore\netbore.toml on Windows).
    #[arg(long, env = "NETBORE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) agent: AgentArgs,
    /// Which flags of `agent` hold clap's default rather than a value given on the
    /// command line or in the environment ([`StartArgs::note_defaults`]).
    #[arg(skip)]
    defaulted: Defaulted,
}

/// Flags with a default that the config file may replace.
#[derive(Debug, Clone, Copy, Default)]
struct Defaulted {
    /// `--server`.
    server: bool,
    /// `--transport`.
    transport: bool,
    /// `--inspect`.
    inspect: bool,
    /// `--inspect-body-limit`.
    inspect_body_limit: bool,
    /// `--inspect-db-size`.
    inspect_db_size: bool,
}

impl StartArgs {
    /// Records which flags `matches` (this command's) filled from their defaults:
    /// the file's values replace only those.
    pub(crate) fn note_defaults(&mut self, matches: &clap::ArgMatches) {
        let defaulted = |id: &str| matches.value_source(id) == Some(ValueSource::DefaultValue);
        self.defaulted = Defaulted {
            server: defaulted("server"),
            transport: defaulted("transport"),
            inspect: defaulted("inspect"),
            inspect_body_limit: defaulted("inspect_body_limit"),
            inspect_db_size: defaulted("inspect_db_size"),
        };
    }
}

/// Runs `netbore start` until a permanent error.
pub(crate) async fn run(args: StartArgs, printer: Printer) -> anyhow::Result<()> {
    let path = args.config.clone().unwrap_or_else(super::default_path);
    let file = super::load(&path, printer)?;
    let tunnels = pick(&file, &args.names, args.all, &path)?;
    let agent = with_file(args.agent, args.defaulted, file);
    let config = agent.config(tunnels)?;
    agent_cmd::run(config, &agent, printer).await
}

/// The tunnels `names` (or `--all`) pick from `file`.
fn pick(
    file: &ConfigFile,
    names: &[String],
    all: bool,
    path: &Path,
) -> anyhow::Result<Vec<TunnelSpec>> {
    let has = file
        .tunnels
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if file.tunnels.is_empty() {
        anyhow::bail!(
            "{} has no tunnels; add a [tunnels.NAME] table with proto and addr (docs/config.md)",
            path.display()
        );
    }
    if all {
        return Ok(file.tunnels.iter().map(|t| t.spec.clone()).collect());
    }
    if names.is_empty() {
        anyhow::bail!("name the tunnels to start ({has}) or give --all");
    }
    let mut picked: Vec<&str> = Vec::new();
    let mut specs = Vec::new();
    for name in names {
        if picked.contains(&name.as_str()) {
            continue;
        }
        let Some(tunnel) = file.tunnels.iter().find(|t| t.name == *name) else {
            anyhow::bail!(
                "{} has no tunnel named {name:?}; it has {has}",
                path.display()
            );
        };
        picked.push(name);
        specs.push(tunnel.spec.clone());
    }
    Ok(specs)
}

/// `agent` with the file's settings where neither a flag nor the environment gave one.
fn with_file(mut agent: AgentArgs, defaulted: Defaulted, file: ConfigFile) -> AgentArgs {
    if defaulted.server && !file.servers.is_empty() {
        agent.server = file.servers;
    }
    if agent.key.as_deref().is_none_or(str::is_empty) && file.key.is_some() {
        agent.key = file.key;
    }
    if let (true, Some(transport)) = (defaulted.transport, file.transport) {
        agent.transport = transport;
    }
    if let (true, Some(inspect)) = (defaulted.inspect, file.inspect) {
        agent.inspect = inspect;
    }
    if let (true, Some(limit)) = (defaulted.inspect_body_limit, file.inspect_body_limit) {
        agent.inspect_body_limit = limit;
    }
    if let (true, Some(size)) = (defaulted.inspect_db_size, file.inspect_db_size) {
        agent.inspect_db_size = size;
    }
    // A flag can only turn it on.
    agent.inspect_secrets |= file.inspect_secrets.unwrap_or(false);
    agent
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        start: StartArgs,
    }

    /// `netbore start ARGS` as clap reads it, with the defaults noted.
    fn start(args: &[&str]) -> StartArgs {
        let matches = Cli::command()
            .no_binary_name(true)
            .try_get_matches_from(args)
            .unwrap();
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        cli.start.note_defaults(&matches);
        cli.start
    }

    fn file() -> ConfigFile {
        super::super::file::parse(
            "server = \"https://file.example.com\"\nkey = \"from-file\"\ntransport = \"wss\"\n[tunnels.web]\nproto = \"http\"\naddr = 80\n[tunnels.db]\nproto = \"tcp\"\naddr = 5432\n",
        )
        .unwrap()
    }

    #[test]
    fn the_file_fills_only_what_flags_left_to_defaults() {
        let args = start(&["--all"]);
        let agent = with_file(args.agent, args.defaulted, file());
        assert_eq!(agent.server[0].host, "file.example.com");
        assert_eq!(agent.key.as_deref(), Some("from-file"));
        assert!(agent.transport.0.is_some());

        let args = start(&[
            "--all",
            "--server",
            "http://localhost:1",
            "--key",
            "flag",
            "--transport",
            "auto",
        ]);
        let agent = with_file(args.agent, args.defaulted, file());
        assert_eq!(agent.server[0].port, 1);
        assert_eq!(agent.key.as_deref(), Some("flag"));
        assert!(
            agent.transport.0.is_none(),
            "an explicit auto beats the file"
        );
    }

    #[test]
    fn names_pick_tunnels_and_unknown_names_are_refused() {
        let path = Path::new("netbore.toml");
        let all = pick(&file(), &[], true, path).unwrap();
        assert_eq!(all.len(), 2);
        let names = ["db".to_string(), "db".to_string()];
        let one = pick(&file(), &names, false, path).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].local, "127.0.0.1:5432");
        let e = pick(&file(), &["nope".into()], false, path).unwrap_err();
        assert_eq!(
            e.to_string(),
            "netbore.toml has no tunnel named \"nope\"; it has web, db"
        );
        assert!(pick(&file(), &[], false, path).is_err());
    }
}
