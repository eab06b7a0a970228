//! Recreate tokens kept on disk between runs of the agent, one small file per tunnel
//! (named by a hash of server, protocol, origin and requested name or port), so
//! `netbore http 8080` run again gets the same URL back.

use std::path::PathBuf;

use crate::TunnelSpec;

/// The agent's state directory for one control plane.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    server: String,
}

impl StateDir {
    /// State for tunnels of the control plane at `server`, kept in `dir`.
    pub fn new(dir: PathBuf, server: &str) -> Self {
        StateDir {
            dir,
            server: server.to_string(),
        }
    }

    fn path(&self, spec: &TunnelSpec) -> PathBuf {
        let key = format!(
            "{}|{}|{}|{}|{}",
            self.server,
            spec.protocol,
            spec.local,
            spec.name.as_deref().unwrap_or(""),
            spec.remote_port.map(|p| p.to_string()).unwrap_or_default()
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let name: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("tunnel-{name}.token"))
    }

    /// The recreate token saved for `spec`, if any.
    pub fn load(&self, spec: &TunnelSpec) -> Option<String> {
        let token = std::fs::read_to_string(self.path(spec)).ok()?;
        let token = token.trim();
        (!token.is_empty()).then(|| token.to_string())
    }

    /// Saves `token` for `spec` (readable by its owner only). Failing to save costs
    /// only the URL on the next run, so it is logged, not fatal.
    pub fn save(&self, spec: &TunnelSpec, token: &str) {
        let path = self.path(spec);
        let result = (|| {
            let tmp = path.with_extension("tmp");
            netbore_control::private_fs::write(&tmp, token.as_bytes())?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            tracing::warn!(
                "could not save the tunnel's recreate token in {}: {e}; the next run gets a new URL",
                self.dir.display()
            );
        }
    }

    /// Forgets the token of `spec`.
    pub fn forget(&self, spec: &TunnelSpec) {
        let _ = std::fs::remove_file(self.path(spec));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kept_per_tunnel_and_forgotten() {
        let dir = std::env::temp_dir().join(format!("netbore-state-{}", std::process::id()));
        let state = StateDir::new(dir.clone(), "http://127.0.0.1:7834");
        let a = TunnelSpec::http("127.0.0.1:3000".into(), None);
        let b = TunnelSpec::http("127.0.0.1:3000".into(), Some("blog".into()));
        assert_eq!(state.load(&a), None);
        state.save(&a, "secret-a");
        state.save(&b, "secret-b");
        assert_eq!(state.load(&a).as_deref(), Some("secret-a"));
        assert_eq!(state.load(&b).as_deref(), Some("secret-b"));
        state.forget(&a);
        assert_eq!(state.load(&a), None);
        let other = StateDir::new(dir.clone(), "http://other:7834");
        assert_eq!(other.load(&b), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
