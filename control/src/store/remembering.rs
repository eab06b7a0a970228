//! The tunnel records a node's live tunnels stand on, remembered so that a shared
//! store that lost all its data (a Redis flushed, or restarted without persistence)
//! gets them back without a restart: their agents can then still reclaim them, at
//! this node or another, with the same URL and port.
//!
//! [`Remembering`] wraps the store: every record this node writes or reads is kept
//! in memory, and the server's store task ([`Remembering::keep`]) forgets those of
//! tunnels it no longer holds once they are [`SEEN_GRACE`] old, and after
//! [`Store::recover`] found the data lost writes back those it still holds. API
//! keys and reserved names are not kept: their loss is the operator's to mend
//! (`docs/protocols/registry.md`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{ApiKeyRecord, Reserve, ReservedName, Store, StoreError, TunnelRecord};

/// How long a record of a tunnel this node does not hold is kept after it was last
/// written or read here: a created tunnel's agent arrives within this.
pub const SEEN_GRACE: Duration = Duration::from_secs(60);

/// A store that remembers the tunnel records it passes on.
pub struct Remembering {
    inner: Arc<dyn Store>,
    records: Mutex<HashMap<String, (TunnelRecord, Instant)>>,
    /// The store lost its data and the records are not all written back yet (Redis
    /// failed again meanwhile): the next call writes them.
    restoring: AtomicBool,
    /// When the records of tunnels no longer held were last looked for.
    pruned: Mutex<Option<Instant>>,
}

/// What one [`Remembering::keep`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Kept {
    /// The backend had lost its data since the last call.
    pub recovered: bool,
    /// Records written back.
    pub restored: usize,
    /// Records that could not be written back (tried again at the next call).
    pub failed: usize,
}

/// How often the records of tunnels no longer held are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl Remembering {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Remembering {
            inner,
            records: Mutex::new(HashMap::new()),
            restoring: AtomicBool::new(false),
            pruned: Mutex::new(None),
        }
    }

    fn records(&self) -> MutexGuard<'_, HashMap<String, (TunnelRecord, Instant)>> {
        // The map holds copies of stored records; a panic mid-insert leaves at worst
        // one record missing, which the store still has.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, record: &TunnelRecord) {
        self.records()
            .insert(record.tunnel_id.clone(), (record.clone(), Instant::now()));
    }

    /// Records remembered now.
    pub fn remembered(&self) -> usize {
        self.records().len()
    }

    /// Every [`PRUNE_EVERY`], forgets the records of tunnels not in `held()` last
    /// seen over [`SEEN_GRACE`] before `now`; when the backend lost its data since
    /// the last call (or a write-back failed), writes back the records of `held()`.
    /// `held` is asked only then. Blocking (it calls the store).
    pub fn keep(
        &self,
        held: &dyn Fn() -> HashSet<String>,
        now: Instant,
    ) -> Result<Kept, StoreError> {
        let mut ids = None;
        let prune = {
            let mut pruned = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
            let due = pruned.is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY);
            if due {
                *pruned = Some(now);
            }
            due
        };
        if prune {
            let held = ids.insert(held());
            self.records().retain(|id, (_, seen)| {
                held.contains(id) || now.saturating_duration_since(*seen) < SEEN_GRACE
            });
        }
        let recovered = self.inner.recover()?;
        if recovered {
            self.restoring.store(true, Ordering::Relaxed);
        } else if !self.restoring.load(Ordering::Relaxed) {
            return Ok(Kept::default());
        }
        let held = ids.get_or_insert_with(held);
        let lost: Vec<String> = self
            .records()
            .keys()
            .filter(|id| held.contains(*id))
            .cloned()
            .collect();
        let mut kept = Kept {
            recovered,
            ..Kept::default()
        };
        let mut first_error = None;
        for id in lost {
            // Deleted meanwhile (through the API, say): it stays deleted.
            let Some(record) = self.records().get(&id).map(|(r, _)| r.clone()) else {
                continue;
            };
            // Each tunnel is held by one node, which writes it back; one written since
            // (by its agent's reclaim, or an earlier try) stays as it is.
            match self.inner.insert_tunnel(&record) {
                Ok(()) => kept.restored += 1,
                Err(e) => match self.inner.tunnel(&id) {
                    Ok(Some(_)) => {}
                    _ => {
                        kept.failed += 1;
                        first_error.get_or_insert(e);
                    }
                },
            }
        }
        match first_error {
            Some(e) if kept.restored == 0 => Err(e),
            _ => {
                self.restoring.store(kept.failed > 0, Ordering::Relaxed);
                Ok(kept)
            }
        }
    }
}

impl Store for Remembering {
    fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        self.inner.insert_key(key)
    }
    fn key_by_hash(&self, secret_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.inner.key_by_hash(secret_hash)
    }
    fn key_by_id(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.inner.key_by_id(id)
    }
    fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.inner.list_keys()
    }
    fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.revoke_key(id)
    }
    fn reserve_name(
        &self,
        name: &str,
        key_id: &str,
        now: u64,
        max_per_key: usize,
    ) -> Result<Reserve, StoreError> {
        self.inner.reserve_name(name, key_id, now, max_per_key)
    }
    fn name_reservation(&self, name: &str) -> Result<Option<ReservedName>, StoreError> {
        self.inner.name_reservation(name)
    }
    fn names_of(&self, key_id: &str) -> Result<Vec<ReservedName>, StoreError> {
        self.inner.names_of(key_id)
    }
    fn release_name(&self, name: &str, key_id: &str) -> Result<bool, StoreError> {
        self.inner.release_name(name, key_id)
    }
    fn insert_tunnel(&self, tunnel: &TunnelRecord) -> Result<(), StoreError> {
        self.inner.insert_tunnel(tunnel)?;
        self.remember(tunnel);
        Ok(())
    }
    fn tunnel(&self, tunnel_id: &str) -> Result<Option<TunnelRecord>, StoreError> {
        let found = self.inner.tunnel(tunnel_id)?;
        if let Some(record) = &found {
            self.remember(record);
        }
        Ok(found)
    }
    fn tunnel_by_recreate_hash(
        &self,
        recreate_hash: &str,
    ) -> Result<Option<TunnelRecord>, StoreError> {
        let found = self.inner.tunnel_by_recreate_hash(recreate_hash)?;
        if let Some(record) = &found {
            self.remember(record);
        }
        Ok(found)
    }
    fn tunnels_of(&self, owner: &str) -> Result<Vec<TunnelRecord>, StoreError> {
        self.inner.tunnels_of(owner)
    }
    fn tunnels_named(&self, name: &str) -> Result<Vec<TunnelRecord>, StoreError> {
        self.inner.tunnels_named(name)
    }
    fn set_public_url(&self, tunnel_id: &str, public_url: &str) -> Result<(), StoreError> {
        self.inner.set_public_url(tunnel_id, public_url)?;
        if let Some((record, seen)) = self.records().get_mut(tunnel_id) {
            record.public_url = public_url.to_string();
            *seen = Instant::now();
        }
        Ok(())
    }
    fn delete_tunnel(&self, tunnel_id: &str) -> Result<bool, StoreError> {
        let deleted = self.inner.delete_tunnel(tunnel_id)?;
        self.records().remove(tunnel_id);
        Ok(deleted)
    }
    fn all_tunnels(&self) -> Result<Vec<TunnelRecord>, StoreError> {
        self.inner.all_tunnels()
    }
    fn count_tunnels(&self) -> Result<u64, StoreError> {
        self.inner.count_tunnels()
    }
    fn change_marker(&self) -> Result<Option<u64>, StoreError> {
        self.inner.change_marker()
    }
    fn health(&self) -> Result<(), StoreError> {
        self.inner.health()
    }
    fn recover(&self) -> Result<bool, StoreError> {
        self.inner.recover()
    }
}
