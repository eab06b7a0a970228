//! Tunnels that moved to another node (a drain): for a while their old session here
//! still takes the streams other nodes relay for them, so a node that has not heard
//! of the move yet fails no request (`docs/protocols/fleet.md`, "The link").

use std::time::{Duration, Instant};

use super::{LinkTarget, Registry, Unlink, shrink_when_sparse};
use crate::fleet::RouteKey;

/// How long after a tunnel moved to another node this node still passes on to the
/// session it moved from the streams other nodes relay here for it (while that
/// session lives and the directory shows the tunnel online elsewhere): ample for
/// every node to hear of the move, which takes milliseconds.
pub const MOVED_RELAY: Duration = Duration::from_secs(10);

/// A tunnel moved to another node whose old session still takes the streams other
/// nodes relay here for it ([`Registry::release_moved`]); dropped when that session
/// ends, which ends it.
#[derive(Debug)]
pub struct Moved {
    registry: Registry,
    key: String,
    generation: u64,
}

impl Drop for Moved {
    fn drop(&mut self) {
        let mut moved = self
            .registry
            .moved
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if moved
            .get(&self.key)
            .is_some_and(|m| m.target.generation == self.generation)
        {
            moved.remove(&self.key);
            shrink_when_sparse(&mut moved);
        }
    }
}

/// The old session of a tunnel that moved, and until when streams go to it.
#[derive(Debug)]
pub(super) struct MovedTarget {
    target: LinkTarget,
    until: Instant,
}

impl Registry {
    /// The agent moved `tunnel_id` (at `generation`) to another node, which the
    /// directory shows holding it: released as by [`Self::release`], except that
    /// for a while ([`Self::relay_target`]) streams other nodes relay here for it
    /// still reach its old session, which the agent keeps serving: a node that has
    /// not yet heard of the move may relay one more, and refusing it would fail a
    /// request no one else saw. Dropping the returned [`Moved`] ends that; the
    /// session's owner drops it when the session ends.
    pub fn release_moved(&self, tunnel_id: &str, generation: u64) -> Option<Moved> {
        self.release_as(tunnel_id, generation, Unlink::Moved)
    }

    /// Where a stream another node relays here for route key `key` goes: the
    /// tunnel's session here, else, within [`MOVED_RELAY`] of the tunnel's move to
    /// another node, the session it moved from, as long as the directory shows the
    /// tunnel online elsewhere under the same id (not deleted, its key not revoked).
    pub fn relay_target(&self, key: &str) -> Option<LinkTarget> {
        if let Some(target) = self.link_target(key) {
            return Some(target);
        }
        let target = {
            let moved = self.moved.read().unwrap_or_else(|e| e.into_inner());
            let m = moved.get(key)?;
            if Instant::now() >= m.until || m.target.session.is_closed() {
                return None;
            }
            m.target.clone()
        };
        let route = RouteKey::parse(key)?;
        let elsewhere = self.directory().is_some_and(|d| {
            d.holders(&route)
                .iter()
                .any(|h| h.tunnel_id == target.tunnel_id)
        });
        elsewhere.then_some(target)
    }

    /// Keeps `target`, the session a tunnel moved from, for relayed streams (the
    /// caller took it out of the live links), until [`MOVED_RELAY`] passes or the
    /// returned [`Moved`] drops.
    pub(super) fn keep_moved(&self, key: String, target: LinkTarget) -> Moved {
        let generation = target.generation;
        let until = Instant::now() + MOVED_RELAY;
        self.moved
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), MovedTarget { target, until });
        Moved {
            registry: self.clone(),
            key,
            generation,
        }
    }
}
