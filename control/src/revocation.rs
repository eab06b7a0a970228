//! Keys revoked while their tunnels run: `netbore key revoke` writes to the store from
//! another process. The running server reads the store's change marker many times a
//! second (one cheap query) and, when it moved, sweeps: it takes every live tunnel of
//! a newly revoked key offline, telling each agent why.
//!
//! A create racing the revocation cannot survive the sweep. The create checks the key
//! again under the lifecycle lock and holds that lock until its tunnel is placed and
//! recorded; the sweep reads the key as revoked before it takes the lock and reads the
//! key's tunnels after. So a create whose check passed came before the revocation and
//! holds the lock until its tunnel is recorded, and the sweep, waiting for the lock,
//! finds that tunnel; a create checking after the revocation committed is refused. No
//! tunnel of a key can appear after its sweep, which is why each key is swept once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::store::StoreError;
use crate::{Control, DisconnectReason, TunnelStatus};

/// What the sweeps have seen so far: the revoked keys already handled, so each is
/// handled once, and the store's change marker when the last sweep began.
#[derive(Debug, Default)]
pub struct RevocationSweep {
    swept: HashSet<String>,
    /// The marker read just before the last successful sweep; `None` before the first
    /// one, or when the store has no marker.
    marker: Option<u64>,
    /// When the last successful sweep began.
    last: Option<Instant>,
}

impl RevocationSweep {
    /// A sweep that has handled no key yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Control {
    /// Sweeps (as [`Self::sweep_revoked_keys`]) when the store's change marker moved
    /// since the last sweep, when the store has no marker, or when `at_least_every`
    /// passed since the last sweep (`now` is the caller's clock); otherwise reads the
    /// marker only. Returns how many tunnels it took offline. Blocking (it reads the
    /// store): run it off the async threads.
    pub fn poll_revoked_keys(
        &self,
        sweep: &mut RevocationSweep,
        now: Instant,
        at_least_every: Duration,
    ) -> Result<usize, StoreError> {
        // Read before the sweep reads any key: a revocation the sweep does not see is
        // committed after this read, so it moves the marker again and the next poll
        // sweeps.
        let marker = self.store.change_marker()?;
        let due = marker.is_none()
            || marker != sweep.marker
            || sweep
                .last
                .is_none_or(|last| now.saturating_duration_since(last) >= at_least_every);
        if !due {
            return Ok(0);
        }
        // Recorded only once the sweep succeeded: a failed one is tried again.
        let taken = self.sweep_revoked_keys(sweep)?;
        sweep.marker = marker;
        sweep.last = Some(now);
        Ok(taken)
    }

    /// Takes offline every live tunnel of a key revoked since the last call (and
    /// releases any name it still holds); returns how many tunnels. Reads every key:
    /// [`Self::poll_revoked_keys`] calls it only when the store changed. Blocking (it
    /// reads the store): run it off the async threads.
    pub fn sweep_revoked_keys(&self, sweep: &mut RevocationSweep) -> Result<usize, StoreError> {
        let mut taken = 0;
        // Read before the lock is taken (see the module's comment for why that order
        // matters).
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
            // The revocation released the key's names; a reservation racing it (which
            // checks the key under this lock too) may have added one since.
            for name in self.store.names_of(&key.id)? {
                self.store.release_name(&name.name, &key.id)?;
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::api::CreateTunnelRequest;
    use crate::auth::Caller;
    use crate::secrets::create_api_key;
    use crate::store::{ApiKeyRecord, Reserve, ReservedName, SqliteStore, Store, TunnelRecord};
    use crate::tokens::TokenSigner;
    use crate::{ControlConfig, PlaceRequest, Placed, Placement, PlacementError};

    /// An Edge that places every tunnel and reports it pending until disconnected.
    #[derive(Default, Clone)]
    struct FakeEdge {
        placed: Arc<Mutex<HashSet<String>>>,
        revoked: Arc<Mutex<Vec<String>>>,
    }

    impl Placement for FakeEdge {
        fn place(&self, request: &PlaceRequest) -> Result<Placed, PlacementError> {
            self.placed
                .lock()
                .unwrap()
                .insert(request.tunnel_id.clone());
            Ok(Placed {
                public_url: "tcp://localhost:1".into(),
                port: Some(1),
            })
        }
        fn status(&self, tunnel_id: &str) -> TunnelStatus {
            if self.placed.lock().unwrap().contains(tunnel_id) {
                TunnelStatus::Pending
            } else {
                TunnelStatus::Offline
            }
        }
        fn disconnect(&self, tunnel_id: &str, reason: DisconnectReason) -> bool {
            if reason == DisconnectReason::KeyRevoked {
                self.revoked.lock().unwrap().push(tunnel_id.to_string());
            }
            self.placed.lock().unwrap().remove(tunnel_id)
        }
    }

    /// A pause in one store call: it tells the test it got there, then waits for the
    /// test's go-ahead.
    struct Pause {
        reached: Sender<()>,
        go: Receiver<()>,
    }

    impl Pause {
        fn hold(slot: &Mutex<Option<Pause>>) {
            let pause = slot.lock().unwrap().take();
            if let Some(p) = pause {
                p.reached.send(()).unwrap();
                p.go.recv().unwrap();
            }
        }
    }

    /// An in-memory store with a marker the test sets, a count of full key reads, and
    /// pauses after a key lookup (the create's re-check) and after a full key read (the
    /// sweep, before it takes the lock).
    #[derive(Default)]
    struct Scripted {
        inner: Option<SqliteStore>,
        marker: Mutex<Option<u64>>,
        key_reads: AtomicUsize,
        after_key_by_id: Mutex<Option<Pause>>,
        after_list_keys: Mutex<Option<Pause>>,
    }

    impl Scripted {
        fn new() -> Self {
            Scripted {
                inner: Some(SqliteStore::in_memory().unwrap()),
                ..Scripted::default()
            }
        }
        fn inner(&self) -> &SqliteStore {
            // Set by `new`, the only constructor the tests use.
            self.inner.as_ref().unwrap()
        }
        fn pause(slot: &Mutex<Option<Pause>>) -> (Receiver<()>, Sender<()>) {
            let (reached, reached_rx) = channel();
            let (go_tx, go) = channel();
            *slot.lock().unwrap() = Some(Pause { reached, go });
            (reached_rx, go_tx)
        }
    }

    impl Store for Scripted {
        fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
            self.inner().insert_key(key)
        }
        fn key_by_hash(&self, h: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
            self.inner().key_by_hash(h)
        }
        fn key_by_id(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
            let key = self.inner().key_by_id(id);
            Pause::hold(&self.after_key_by_id);
            key
        }
        fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
            self.key_reads.fetch_add(1, Ordering::Relaxed);
            let keys = self.inner().list_keys();
            Pause::hold(&self.after_list_keys);
            keys
        }
        fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
            self.inner().revoke_key(id)
        }
        fn reserve_name(
            &self,
            name: &str,
            key_id: &str,
            now: u64,
            max: usize,
        ) -> Result<Reserve, StoreError> {
            self.inner().reserve_name(name, key_id, now, max)
        }
        fn name_reservation(&self, name: &str) -> Result<Option<ReservedName>, StoreError> {
            self.inner().name_reservation(name)
        }
        fn names_of(&self, key_id: &str) -> Result<Vec<ReservedName>, StoreError> {
            self.inner().names_of(key_id)
        }
        fn release_name(&self, name: &str, key_id: &str) -> Result<bool, StoreError> {
            self.inner().release_name(name, key_id)
        }
        fn insert_tunnel(&self, t: &TunnelRecord) -> Result<(), StoreError> {
            self.inner().insert_tunnel(t)
        }
        fn tunnel(&self, id: &str) -> Result<Option<TunnelRecord>, StoreError> {
            self.inner().tunnel(id)
        }
        fn tunnel_by_recreate_hash(&self, h: &str) -> Result<Option<TunnelRecord>, StoreError> {
            self.inner().tunnel_by_recreate_hash(h)
        }
        fn tunnels_of(&self, owner: &str) -> Result<Vec<TunnelRecord>, StoreError> {
            self.inner().tunnels_of(owner)
        }
        fn tunnels_named(&self, name: &str) -> Result<Vec<TunnelRecord>, StoreError> {
            self.inner().tunnels_named(name)
        }
        fn all_tunnels(&self) -> Result<Vec<TunnelRecord>, StoreError> {
            self.inner().all_tunnels()
        }
        fn set_public_url(&self, id: &str, url: &str) -> Result<(), StoreError> {
            self.inner().set_public_url(id, url)
        }
        fn delete_tunnel(&self, id: &str) -> Result<bool, StoreError> {
            self.inner().delete_tunnel(id)
        }
        fn count_tunnels(&self) -> Result<u64, StoreError> {
            self.inner().count_tunnels()
        }
        fn change_marker(&self) -> Result<Option<u64>, StoreError> {
            Ok(*self.marker.lock().unwrap())
        }
    }

    fn control() -> (Arc<Control>, Arc<Scripted>, FakeEdge, String) {
        let store = Arc::new(Scripted::new());
        let edge = FakeEdge::default();
        let key = create_api_key(&*store, "k").unwrap().record.id;
        let control = Control::new(
            ControlConfig::default(),
            TokenSigner::generate(),
            Box::new(edge.clone()),
            store.clone(),
        );
        (Arc::new(control), store, edge, key)
    }

    fn tcp() -> CreateTunnelRequest {
        serde_json::from_value(serde_json::json!({"protocol": "tcp"})).unwrap()
    }

    #[test]
    fn a_create_that_passed_its_check_before_the_revocation_is_swept() {
        let (control, store, edge, key) = control();
        let caller = Caller::Key { id: key.clone() };
        let (checked, resume_create) = Scripted::pause(&store.after_key_by_id);
        let create = {
            let control = control.clone();
            std::thread::spawn(move || control.create_tunnel(&caller, &tcp()))
        };
        // The create saw the key valid and holds the lifecycle lock; now the key is
        // revoked and the sweep reads it as revoked before it asks for the lock.
        checked.recv().unwrap();
        assert!(store.revoke_key(&key).unwrap());
        let (listed, resume_sweep) = Scripted::pause(&store.after_list_keys);
        let (swept, sweep_done) = channel();
        {
            let control = control.clone();
            std::thread::spawn(move || {
                let mut sweep = RevocationSweep::new();
                let taken = control.sweep_revoked_keys(&mut sweep);
                swept.send((taken, sweep)).unwrap();
            });
        }
        listed.recv().unwrap();
        resume_sweep.send(()).unwrap();
        // The sweep waits for the lock the create holds: it cannot end (and miss the
        // tunnel) before the create registers it.
        assert!(
            sweep_done.recv_timeout(Duration::from_millis(200)).is_err(),
            "the sweep ended while a create that passed its key check held the lock"
        );
        // The create registers its tunnel only now, after the sweep read the keys.
        resume_create.send(()).unwrap();
        let created = create.join().unwrap().expect("its check passed");
        let (taken, mut sweep) = sweep_done.recv().unwrap();
        assert_eq!(taken.unwrap(), 1);
        assert_eq!(
            *edge.revoked.lock().unwrap(),
            vec![created.tunnel_id.clone()]
        );
        assert_eq!(edge.status(&created.tunnel_id), TunnelStatus::Offline);
        // Handled once; a create after the revocation is refused.
        assert_eq!(control.sweep_revoked_keys(&mut sweep).unwrap(), 0);
        assert_eq!(edge.revoked.lock().unwrap().len(), 1);
        let refused = control
            .create_tunnel(&Caller::Key { id: key }, &tcp())
            .unwrap_err();
        assert_eq!(refused.status().as_u16(), 401);
    }

    #[test]
    fn a_revoked_key_loses_a_name_reserved_while_it_was_revoked() {
        let (control, store, _edge, key) = control();
        assert!(store.revoke_key(&key).unwrap());
        // What a reservation that passed its check just before the revocation leaves.
        store.inner().reserve_name("late", &key, 0, 10).unwrap();
        control
            .sweep_revoked_keys(&mut RevocationSweep::new())
            .unwrap();
        assert_eq!(store.name_reservation("late").unwrap(), None);
    }

    #[test]
    fn keys_are_read_only_when_the_marker_moved_or_the_fallback_is_due() {
        let (control, store, edge, key) = control();
        let every = Duration::from_secs(5);
        let t0 = Instant::now();
        let reads = || store.key_reads.load(Ordering::Relaxed);
        *store.marker.lock().unwrap() = Some(7);
        let mut sweep = RevocationSweep::new();

        control.poll_revoked_keys(&mut sweep, t0, every).unwrap();
        assert_eq!(reads(), 1, "the first poll sweeps");
        let ms = Duration::from_millis;
        control
            .poll_revoked_keys(&mut sweep, t0 + ms(100), every)
            .unwrap();
        control
            .poll_revoked_keys(&mut sweep, t0 + ms(200), every)
            .unwrap();
        assert_eq!(reads(), 1, "an unchanged marker reads no key");

        let created = control
            .create_tunnel(&Caller::Key { id: key.clone() }, &tcp())
            .unwrap();
        store.revoke_key(&key).unwrap();
        *store.marker.lock().unwrap() = Some(8);
        let taken = control.poll_revoked_keys(&mut sweep, t0 + ms(300), every);
        assert_eq!(taken.unwrap(), 1);
        assert_eq!(reads(), 2, "a moved marker sweeps");
        assert_eq!(*edge.revoked.lock().unwrap(), vec![created.tunnel_id]);

        control
            .poll_revoked_keys(&mut sweep, t0 + ms(400), every)
            .unwrap();
        assert_eq!(reads(), 2);
        control
            .poll_revoked_keys(&mut sweep, t0 + ms(300) + every, every)
            .unwrap();
        assert_eq!(reads(), 3, "the fallback sweeps even without a change");

        // A store without a marker is swept on every poll.
        *store.marker.lock().unwrap() = None;
        control
            .poll_revoked_keys(&mut sweep, t0 + ms(5400), every)
            .unwrap();
        control
            .poll_revoked_keys(&mut sweep, t0 + ms(5500), every)
            .unwrap();
        assert_eq!(reads(), 5);
    }
}
