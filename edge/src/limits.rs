//! Bounds on what anonymous viewers can make the Edge hold: viewer connections in all
//! and per client address, streams (viewer connections or requests in flight) per
//! client address and per tunnel, and the sizing of those caps below the process's
//! open-file limit.
//!
//! A connection takes its slots once, at accept (one lock of one shard of the
//! per-address table); a request or stream takes its own with one atomic add on
//! counters the connection and the tunnel already hold, so the hot path takes no
//! lock and allocates nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use netbore_control::rate::client_key;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default of [`ViewerCaps::max_connections`].
pub const DEFAULT_MAX_VIEWER_CONNECTIONS: usize = 10_000;
/// Default of [`ViewerCaps::max_connections_per_ip`].
pub const DEFAULT_MAX_VIEWER_CONNECTIONS_PER_IP: usize = 1_024;
/// Default of [`ViewerCaps::max_streams_per_ip`].
pub const DEFAULT_MAX_VIEWER_STREAMS_PER_IP: usize = 1_024;
/// Default of [`ViewerCaps::max_streams_per_tunnel`].
pub const DEFAULT_MAX_STREAMS_PER_TUNNEL: usize = 1_000;

/// Caps on viewers. Every one of them stops an anonymous viewer, or a few, from
/// taking what the Edge shares between tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewerCaps {
    /// Viewer connections held at once: HTTP and HTTPS ingress (TLS passthrough
    /// included) and every TCP tunnel's public port together. Stops a flood of
    /// connections from taking every descriptor of the process.
    pub max_connections: usize,
    /// Viewer connections one client address (IPv6: one /64) may hold at once. Stops
    /// one client from taking every slot of `max_connections`.
    pub max_connections_per_ip: usize,
    /// Streams (requests in flight, WebSockets, TCP and TLS viewer connections) one
    /// client address may hold at once. Stops one client multiplexing many h2
    /// requests from taking every stream of the tunnels it reaches.
    pub max_streams_per_ip: usize,
    /// Streams one tunnel serves at once. Stops the viewers of one tunnel (or an
    /// attacker aiming at one tenant) from taking the whole Edge.
    pub max_streams_per_tunnel: usize,
}

impl Default for ViewerCaps {
    fn default() -> Self {
        ViewerCaps {
            max_connections: DEFAULT_MAX_VIEWER_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_VIEWER_CONNECTIONS_PER_IP,
            max_streams_per_ip: DEFAULT_MAX_VIEWER_STREAMS_PER_IP,
            max_streams_per_tunnel: DEFAULT_MAX_STREAMS_PER_TUNNEL,
        }
    }
}

/// Shards of the per-address table: connections from different addresses rarely
/// wait on one another's lock.
const SHARDS: usize = 16;

/// The viewer budget of an Edge, shared by HTTP ingress and every TCP tunnel. Clones
/// share it.
#[derive(Debug, Clone)]
pub struct ViewerLimits {
    caps: ViewerCaps,
    slots: Arc<Semaphore>,
    clients: Arc<[Mutex<HashMap<IpAddr, Client>>; SHARDS]>,
}

/// What one client address holds.
#[derive(Debug)]
struct Client {
    connections: usize,
    streams: Arc<StreamCount>,
}

/// Why a viewer connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// Every slot of [`ViewerCaps::max_connections`] is taken.
    #[error("the Edge holds as many viewer connections as it may")]
    Full,
    /// The client's address holds [`ViewerCaps::max_connections_per_ip`] connections.
    #[error("the viewer's address holds as many connections as it may")]
    PerIp,
}

impl Default for ViewerLimits {
    fn default() -> Self {
        ViewerLimits::new(ViewerCaps::default())
    }
}

impl ViewerLimits {
    /// A budget with `caps` (a cap below one is raised to one).
    pub fn new(caps: ViewerCaps) -> Self {
        let caps = ViewerCaps {
            max_connections: caps.max_connections.max(1),
            max_connections_per_ip: caps.max_connections_per_ip.max(1),
            max_streams_per_ip: caps.max_streams_per_ip.max(1),
            max_streams_per_tunnel: caps.max_streams_per_tunnel.max(1),
        };
        ViewerLimits {
            caps,
            slots: Arc::new(Semaphore::new(caps.max_connections)),
            clients: Arc::new(std::array::from_fn(|_| Mutex::default())),
        }
    }

    /// The caps in force.
    pub fn caps(&self) -> &ViewerCaps {
        &self.caps
    }

    /// Waits for a slot of the global budget (`None` never happens while the budget
    /// lives; the semaphore is never closed).
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Takes the per-address share of `ip` for a connection holding `permit`.
    pub fn admit(&self, permit: OwnedSemaphorePermit, ip: IpAddr) -> Result<ViewerSlot, Refused> {
        let key = client_key(ip);
        let mut shard = self.shard(key);
        let client = shard.entry(key).or_insert_with(|| Client {
            connections: 0,
            streams: Arc::default(),
        });
        if client.connections >= self.caps.max_connections_per_ip {
            return Err(Refused::PerIp);
        }
        client.connections += 1;
        let streams = client.streams.clone();
        drop(shard);
        Ok(ViewerSlot {
            limits: self.clone(),
            key,
            streams,
            _permit: permit,
        })
    }

    /// A slot for a connection accepted from `ip`, or why there is none, at once:
    /// for listeners that accept before they know whether they can serve.
    pub fn try_admit(&self, ip: IpAddr) -> Result<ViewerSlot, Refused> {
        self.admit(self.try_acquire()?, ip)
    }

    /// A slot of the global budget at once, or [`Refused::Full`]: for a connection
    /// whose address is known only later (a PROXY protocol header), given to
    /// [`admit`](Self::admit) then.
    pub fn try_acquire(&self) -> Result<OwnedSemaphorePermit, Refused> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)
    }

    fn shard(&self, key: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Client>> {
        let bits = match key {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
        };
        // Fold the address so neighbours land in different shards.
        let i = (bits ^ (bits >> 7) ^ (bits >> 17) ^ (bits >> 33)) as usize % SHARDS;
        self.clients[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections the client address of `ip` holds now (tests and logs).
    pub fn connections_of(&self, ip: IpAddr) -> usize {
        let key = client_key(ip);
        self.shard(key).get(&key).map_or(0, |c| c.connections)
    }
}

/// One viewer connection's hold on the budget: a global slot and its address's share,
/// both released on drop.
#[derive(Debug)]
pub struct ViewerSlot {
    limits: ViewerLimits,
    key: IpAddr,
    streams: Arc<StreamCount>,
    _permit: OwnedSemaphorePermit,
}

impl ViewerSlot {
    /// A stream for this connection's address, unless it holds
    /// [`ViewerCaps::max_streams_per_ip`] already.
    pub fn try_stream(&self) -> Option<StreamGuard> {
        self.streams.try_take(self.limits.caps.max_streams_per_ip)
    }

    /// The caps in force.
    pub fn caps(&self) -> &ViewerCaps {
        &self.limits.caps
    }
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        let mut shard = self.limits.shard(self.key);
        if let Some(client) = shard.get_mut(&self.key) {
            client.connections -= 1;
            if client.connections == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

/// A count of streams held, with a cap checked on the way in.
#[derive(Debug, Default)]
pub struct StreamCount(AtomicUsize);

impl StreamCount {
    /// One more stream, unless `max` are held already; released when the guard drops.
    pub fn try_take(self: &Arc<Self>, max: usize) -> Option<StreamGuard> {
        let held = self.0.fetch_add(1, Ordering::AcqRel);
        if held >= max {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(StreamGuard(self.clone()))
    }

    /// Streams held now.
    pub fn held(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One stream of a [`StreamCount`], released on drop.
#[derive(Debug)]
pub struct StreamGuard(Arc<StreamCount>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Descriptors kept for all but viewer and API connections: listeners, agent
/// sessions, the store, the audit log, certificates being read.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// Caps (each a number of connections, one descriptor each) fitted to the open-file
/// limit `nofile`: when together they pass 80 % of it less
/// [`RESERVED_DESCRIPTORS`], each is lowered in proportion (to one at least) and the
/// fitted caps are returned; `None` when they fit as they are. A process that runs
/// out of descriptors fails every accept, agents' included, so the caps must bind
/// first.
pub fn fit_to_descriptors<const N: usize>(nofile: u64, caps: [usize; N]) -> Option<[usize; N]> {
    let budget = ((u128::from(nofile) * 4 / 5) as u64)
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(N as u64);
    let total: u64 = caps.iter().map(|&c| c as u64).sum();
    if total <= budget {
        return None;
    }
    Some(caps.map(|c| ((c as u128 * budget as u128 / total as u128) as usize).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: usize, total: usize) -> ViewerLimits {
        ViewerLimits::new(ViewerCaps {
            max_connections: total,
            max_connections_per_ip: per_ip,
            max_streams_per_ip: 2,
            ..ViewerCaps::default()
        })
    }

    #[test]
    fn each_address_gets_its_share_and_gives_it_back() {
        let l = limits(2, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let one = l.try_admit(a).unwrap();
        let two = l.try_admit(a).unwrap();
        assert_eq!(l.try_admit(a).unwrap_err(), Refused::PerIp);
        let other = l.try_admit(b).unwrap();
        assert_eq!(l.connections_of(a), 2);
        drop(one);
        let again = l.try_admit(a).unwrap();
        drop((two, again, other));
        assert_eq!(l.connections_of(a), 0);
        assert!(l.clients.iter().all(|s| s.lock().unwrap().is_empty()));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let l = limits(1, 10);
        let _a = l.try_admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let same_64 = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(l.try_admit(same_64).unwrap_err(), Refused::PerIp);
        assert!(l.try_admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
        // An IPv4-mapped address is its IPv4 client.
        let _v4 = l.try_admit("192.0.2.7".parse().unwrap()).unwrap();
        let mapped = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(l.try_admit(mapped).unwrap_err(), Refused::PerIp);
    }

    #[test]
    fn the_global_budget_binds_before_the_per_address_one() {
        let l = limits(5, 2);
        let _a = l.try_admit("192.0.2.1".parse().unwrap()).unwrap();
        let _b = l.try_admit("192.0.2.2".parse().unwrap()).unwrap();
        let c = l.try_admit("192.0.2.3".parse().unwrap()).unwrap_err();
        assert_eq!(c, Refused::Full);
        // A refused address holds nothing.
        assert_eq!(l.connections_of("192.0.2.3".parse().unwrap()), 0);
    }

    #[test]
    fn streams_are_counted_per_address_across_connections() {
        let l = limits(5, 10);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let c1 = l.try_admit(ip).unwrap();
        let c2 = l.try_admit(ip).unwrap();
        let s1 = c1.try_stream().unwrap();
        let _s2 = c2.try_stream().unwrap();
        assert!(c1.try_stream().is_none());
        assert!(c2.try_stream().is_none());
        drop(s1);
        assert!(c2.try_stream().is_some());
    }

    #[test]
    fn a_stream_count_refuses_past_its_cap_and_recovers() {
        let count = Arc::new(StreamCount::default());
        let held: Vec<_> = (0..3).map(|_| count.try_take(3).unwrap()).collect();
        assert!(count.try_take(3).is_none());
        assert_eq!(count.held(), 3);
        drop(held);
        assert_eq!(count.held(), 0);
        assert!(count.try_take(1).is_some());
    }

    #[test]
    fn caps_that_fit_the_descriptor_limit_stay() {
        assert_eq!(fit_to_descriptors(1_048_576, [10_000, 1024]), None);
        // 80 % of 16384 is 13107; less the reserve, 12851 ≥ 11024.
        assert_eq!(fit_to_descriptors(16_384, [10_000, 1024]), None);
    }

    #[test]
    fn caps_past_the_descriptor_limit_shrink_in_proportion() {
        // 80 % of 1024 less 256 = 563 descriptors for 10,000 + 1024 connections.
        let [viewers, api] = fit_to_descriptors(1024, [10_000, 1024]).unwrap();
        assert!(viewers + api <= 563, "{viewers} + {api}");
        assert_eq!((viewers, api), (510, 52));
        // A tiny limit still leaves every cap at one.
        assert_eq!(fit_to_descriptors(64, [10_000, 1024]), Some([1, 1]));
    }
}
