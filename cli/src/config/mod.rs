//! The agent's config file, `netbore.toml` (docs/config.md): `netbore config check`
//! lists every problem in one, `netbore config add-key` stores an API key in one, and
//! `netbore start` runs the tunnels one names. The format itself is [`file`]'s.

mod add_key;
pub(crate) mod file;
pub(crate) mod start;

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::output::Printer;
use file::{ConfigFile, Problem};

/// Flags of `netbore config`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

/// `netbore config` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
enum ConfigCommand {
    /// Check a config file: every problem as FILE:LINE:COLUMN: message (exit code 1),
    /// or a one-line summary of its tunnels.
    Check(CheckArgs),
    /// Store an API key in the config file as `key = "..."`, creating the file
    /// (readable by its owner only) if it is missing and keeping the rest as written.
    AddKey(add_key::AddKeyArgs),
}

/// Flags of `netbore config check`.
#[derive(Debug, Clone, clap::Args)]
struct CheckArgs {
    /// The config file (default: $XDG_CONFIG_HOME/netbore/netbore.toml or
    /// ~/.config/netbore/netbore.toml; %APPDATA%\netbore\netbore.toml on Windows).
    #[arg(env = "NETBORE_CONFIG")]
    file: Option<PathBuf>,
}

/// Runs `netbore config`.
pub(crate) fn run(args: ConfigArgs, printer: Printer) -> anyhow::Result<()> {
    match args.command {
        ConfigCommand::Check(args) => check(args, printer),
        ConfigCommand::AddKey(args) => add_key::run(args, printer),
    }
}

/// Where the config file is unless `--config` says otherwise.
pub(crate) fn default_path() -> PathBuf {
    crate::platform::config_dir().join("netbore.toml")
}

/// Reads and checks the file at `path`. Its problems are printed, one a line as
/// `FILE:LINE:COLUMN: message`, before the error that ends the command.
pub(crate) fn load(path: &Path, printer: Printer) -> anyhow::Result<ConfigFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "there is no config file at {}; write one (docs/config.md) or name another with --config FILE",
            path.display()
        ),
        Err(e) => anyhow::bail!(
            "could not read the config file {}: {e}; check that it is a file you may read",
            path.display()
        ),
    };
    file::parse(&text).map_err(|problems| {
        print_problems(path, &text, &problems, printer);
        let count = problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        anyhow::anyhow!(
            "{} has {count} {noun}; fix {} and run the command again",
            path.display(),
            if count == 1 { "it" } else { "them" }
        )
    })
}

/// Prints `problems` of the file at `path` holding `text`: on stderr as
/// `FILE:LINE:COLUMN: message`, or as `config_problem` events with `--json`.
fn print_problems(path: &Path, text: &str, problems: &[Problem], printer: Printer) {
    for problem in problems {
        let (line, column) = file::line_column(text, problem.span.start);
        if printer.json {
            printer.event(
                "config_problem",
                json!({
                    "file": path.display().to_string(),
                    "line": line,
                    "column": column,
                    "message": problem.message,
                }),
                "",
            );
        } else {
            eprintln!("{}:{line}:{column}: {}", path.display(), problem.message);
        }
    }
}

/// `netbore config check`.
fn check(args: CheckArgs, printer: Printer) -> anyhow::Result<()> {
    let path = args.file.unwrap_or_else(default_path);
    let file = load(&path, printer)?;
    let count = file.tunnels.len();
    let listed: Vec<String> = file
        .tunnels
        .iter()
        .map(|t| format!("{} ({})", t.name, t.spec.protocol))
        .collect();
    let summary = match count {
        0 => "no tunnels".to_string(),
        1 => format!("1 tunnel: {}", listed.join(", ")),
        n => format!("{n} tunnels: {}", listed.join(", ")),
    };
    let tunnels: Vec<_> = file
        .tunnels
        .iter()
        .map(|t| json!({ "name": t.name, "proto": t.spec.protocol.as_str(), "addr": t.spec.local }))
        .collect();
    printer.event(
        "config_ok",
        json!({ "file": path.display().to_string(), "tunnels": tunnels }),
        &summary,
    );
    Ok(())
}
