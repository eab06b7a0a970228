//! Keys revoked while their tunnels run: `netbore key revoke` writes to the store from
//! another process, so the running server looks for newly revoked keys every few
//! seconds and takes their tunnels offline, telling each agent why.

use std::collections::HashSet;

use crate::store::StoreError;
use crate::{Control, DisconnectReason, TunnelStatus};

/// The revoked keys already swept, so each is handled once.
#[derive(Debug, Default)]
pub struct RevocationSweep {
    swept: HashSet<String>,
}

impl RevocationSweep {
    /// A sweep that has handled no key yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Control {
    /// Takes offline every live tunnel of a key revoked since the last call; returns
    /// how many. Blocking (it reads the store): run it off the async threads.
    pub fn sweep_revoked_keys(&self, sweep: &mut RevocationSweep) -> Result<usize, StoreError> {
        let mut taken = 0;
        for key in self.store.list_keys()? {
            if !key.revoked || sweep.swept.contains(&key.id) {
                continue;
            }
            // A poisoned lock guards no data; the store and the Edge keep their own state.
            let _guard = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
            let mut of_key = 0;
            for tunnel in self.store.tunnels_of(&key.id)? {
                let live = !matches!(
                    self.placement.status(&tunnel.tunnel_id),
                    TunnelStatus::Offline
                );
                if self
                    .placement
                    .disconnect(&tunnel.tunnel_id, DisconnectReason::KeyRevoked)
                    && live
                {
                    of_key += 1;
                }
            }
            if of_key > 0 {
                tracing::info!(key_id = %key.id, tunnels = of_key, "API key revoked: its tunnels are offline");
            }
            taken += of_key;
            sweep.swept.insert(key.id);
        }
        Ok(taken)
    }
}
