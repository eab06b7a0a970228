//! `netbore key create|list|revoke`: manages API keys in the server's store directly,
//! so it works whether or not the server runs (the store takes concurrent writers):
//! the SQLite file in the data directory, or with `--redis` the store a fleet of
//! servers shares.

use std::path::PathBuf;

use anyhow::Context;
use netbore_control::secrets::create_api_key;
use serde_json::json;

use crate::output::Printer;
use crate::server::{STORE_FILE, default_data_dir};

/// Flags of `netbore key`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KeyArgs {
    /// The server's data directory (where its store lives).
    #[arg(long, env = "NETBORE_DATA_DIR", global = true)]
    pub(crate) data_dir: Option<PathBuf>,
    /// The store the servers started with `--redis URL` share, instead of the one in
    /// the data directory.
    #[command(flatten)]
    pub(crate) store: crate::redis_args::RedisArgs,
    #[command(subcommand)]
    pub(crate) action: KeyAction,
}

/// What to do with API keys.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum KeyAction {
    /// Create an API key and print its secret (shown this once only).
    Create {
        /// A note saying who or what the key is for.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List API keys (never their secrets).
    List,
    /// Revoke an API key: it stops authenticating at once, its reserved names are
    /// released, and a running server takes its live tunnels offline within seconds.
    Revoke {
        /// The key's id (`k_…`), as `netbore key list` shows it.
        id: String,
    },
}

/// Runs `netbore key …`.
pub(crate) async fn run(args: KeyArgs, printer: Printer) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let store = netbore_control::store::open(args.store.url()?, &data_dir.join(STORE_FILE))?;
    match args.action {
        KeyAction::Create { label } => {
            let key = create_api_key(&*store, &label)?;
            printer.event(
                "key_created",
                json!({
                    "id": key.record.id,
                    "label": key.record.label,
                    "created_at": key.record.created_at,
                    "key": key.secret,
                }),
                &format!(
                    "Created API key {}{}\n\n  {}\n\nStore it now: it is shown only this once. Agents send it as 'Authorization: Bearer KEY'.",
                    key.record.id,
                    if label.is_empty() { String::new() } else { format!(" ({label})") },
                    key.secret
                ),
            );
        }
        KeyAction::List => {
            let keys = store.list_keys()?;
            let rows: Vec<_> = keys
                .iter()
                .map(|k| {
                    json!({
                        "id": k.id,
                        "label": k.label,
                        "created_at": k.created_at,
                        "revoked": k.revoked,
                    })
                })
                .collect();
            let mut text = format!("{:<16} {:<24} {:<8} LABEL", "ID", "CREATED", "STATE");
            for k in &keys {
                text.push_str(&format!(
                    "\n{:<16} {:<24} {:<8} {}",
                    k.id,
                    utc(k.created_at),
                    if k.revoked { "revoked" } else { "active" },
                    k.label
                ));
            }
            if keys.is_empty() {
                text = "No API keys yet; create one with 'netbore key create'.".into();
            }
            printer.event("keys", json!({ "keys": rows }), &text);
        }
        KeyAction::Revoke { id } => {
            let found = store
                .revoke_key(&id)
                .with_context(|| format!("could not revoke the API key {id}"))?;
            if !found {
                anyhow::bail!("there is no API key {id}; list keys with 'netbore key list'");
            }
            printer.event(
                "key_revoked",
                json!({ "id": id }),
                &format!("Revoked API key {id}; its reserved names are free again."),
            );
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch.
fn utc(secs: u64) -> String {
    let t = netbore_control::civil::utc(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_741_261), "2026-11-27 01:01:01 UTC");
    }
}
