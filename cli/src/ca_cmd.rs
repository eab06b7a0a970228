//! `netbore ca`: where the server's development CA is, for agents' `--ca`.

use std::path::PathBuf;

use serde_json::json;

use crate::output::Printer;

/// Flags of `netbore ca`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum CaCommand {
    /// Print the path of the CA certificate (made by the server's first run).
    Path {
        /// The server's data directory.
        #[arg(long, env = "NETBORE_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// Runs `netbore ca`.
pub(crate) fn run(args: CaArgs, printer: Printer) -> anyhow::Result<()> {
    match args.command {
        CaCommand::Path { data_dir } => {
            let dir = data_dir.unwrap_or_else(crate::server::default_data_dir);
            let path = netbore_edge::dev_ca::ca_path(&dir);
            if !path.exists() {
                anyhow::bail!(
                    "there is no development CA at {} yet; start netbore server with this --data-dir once to make it",
                    path.display()
                );
            }
            let shown = path.display().to_string();
            printer.event("ca", json!({ "path": shown }), &shown);
            Ok(())
        }
    }
}
