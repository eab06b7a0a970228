//! The audit log: one JSON line per tunnel event with the agent's real address, kept in
//! its own file even when public logs and headers mask agent addresses.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use netbore_control::tokens::unix_now;

/// Where tunnel events are recorded; a disabled log records nothing.
#[derive(Debug, Default)]
pub struct AuditLog {
    file: Option<Mutex<std::fs::File>>,
}

impl AuditLog {
    /// A log that records nothing.
    pub fn disabled() -> Self {
        AuditLog { file: None }
    }

    /// Appends to `path`, creating it (readable by its owner only) if needed.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        Ok(AuditLog {
            file: Some(Mutex::new(netbore_control::private_fs::open(
                path,
                &mut options,
            )?)),
        })
    }

    /// Records `event` for a tunnel served by `agent`.
    pub fn record(&self, event: &str, tunnel_id: &str, public_url: &str, agent: SocketAddr) {
        let Some(file) = &self.file else { return };
        let line = serde_json::json!({
            "time": unix_now(),
            "event": event,
            "tunnel_id": tunnel_id,
            "public_url": public_url,
            "agent": agent.to_string(),
        });
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(file, "{line}") {
            tracing::warn!(error = %e, "could not write the audit log");
        }
    }
}
