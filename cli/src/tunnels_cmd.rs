//! `netbore tunnels list`: every tunnel record of the server's store, for operators,
//! read directly (the server need not run): the SQLite file in the data directory,
//! or with `--redis` the store a fleet shares, with the node serving each tunnel now.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::output::Printer;
use crate::server::{STORE_FILE, default_data_dir};

/// Flags of `netbore tunnels`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TunnelsArgs {
    /// The server's data directory (where its store lives).
    #[arg(long, env = "NETBORE_DATA_DIR", global = true)]
    pub(crate) data_dir: Option<PathBuf>,
    /// The store the servers started with `--redis URL` share, instead of the one in
    /// the data directory.
    #[command(flatten)]
    pub(crate) store: crate::redis_args::RedisArgs,
    #[command(subcommand)]
    pub(crate) action: TunnelsAction,
}

/// What to do with tunnels.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum TunnelsAction {
    /// List every tunnel record, oldest first: owner, protocol, public URL, and in a
    /// fleet the node serving it now.
    List,
}

/// Runs `netbore tunnels …`.
pub(crate) async fn run(args: TunnelsArgs, printer: Printer) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let url = args.store.url()?.map(str::to_string);
    let store = netbore_control::store::open(url.as_deref(), &data_dir.join(STORE_FILE))?;
    match args.action {
        TunnelsAction::List => {
            let (tunnels, serving) = tokio::task::spawn_blocking(move || {
                let tunnels = store.all_tunnels()?;
                // Who serves what is known to a fleet's Redis; a single server keeps it
                // in memory (ask it: GET /tunnels).
                let serving = match &url {
                    Some(url) => Some(
                        netbore_fleet::serving_nodes(url)
                            .context("could not read which node serves which tunnel")?,
                    ),
                    None => None,
                };
                Ok::<_, anyhow::Error>((tunnels, serving))
            })
            .await
            .context("listing the tunnels stopped")??;
            let node_of = |id: &str| serving.as_ref().and_then(|s| s.get(id).cloned());
            let rows: Vec<_> = tunnels
                .iter()
                .map(|t| {
                    json!({
                        "tunnel_id": t.tunnel_id,
                        "owner": t.owner,
                        "protocol": t.protocol.as_str(),
                        "public_url": t.public_url,
                        "created_at": t.created_at,
                        "node": node_of(&t.tunnel_id),
                    })
                })
                .collect();
            let mut text = format!(
                "{:<26} {:<8} {:<40} {:<24} {}",
                "TUNNEL", "PROTO", "PUBLIC URL", "OWNER", "NODE"
            );
            for t in &tunnels {
                let node = match (&serving, node_of(&t.tunnel_id)) {
                    (None, _) => "-".to_string(),
                    (Some(_), Some(node)) => node,
                    (Some(_), None) => "offline".to_string(),
                };
                text.push_str(&format!(
                    "\n{:<26} {:<8} {:<40} {:<24} {}",
                    t.tunnel_id,
                    t.protocol.as_str(),
                    t.public_url,
                    t.owner,
                    node
                ));
            }
            if tunnels.is_empty() {
                text = "No tunnels in this store.".into();
            }
            printer.event("tunnels", json!({ "tunnels": rows }), &text);
        }
    }
    Ok(())
}
