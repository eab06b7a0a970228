//! The limits on anonymous tunnels beyond one address: per IPv6 /48 and for the whole
//! server.
//!
//! The Edge holds its tunnels in memory, so every live tunnel was placed by this
//! process: the anonymous ones it placed, less those that went offline since, are all
//! of them. That set is kept here (tunnel id → the caller's address) and pruned on
//! every check, so it never holds more than the global limit plus the tunnels that
//! went offline since the last anonymous create, and counting needs no store scan.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::client_addr::mask;

/// The /48 an IPv6 address belongs to; `None` for IPv4 (limited per address only).
pub(crate) fn ipv6_48(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => Some(mask(ip, 48)),
        _ => None,
    }
}

/// How many live anonymous tunnels there are, in all and in one /48.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AnonymousCount {
    /// In all.
    pub(crate) total: usize,
    /// From the caller's /48 (0 for an IPv4 caller).
    pub(crate) same_48: usize,
}

/// The anonymous tunnels placed by this process that may still be live.
#[derive(Debug, Default)]
pub(crate) struct AnonymousTunnels {
    tunnels: Mutex<HashMap<String, IpAddr>>,
}

impl AnonymousTunnels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, IpAddr>> {
        // A panic elsewhere cannot leave the map half-updated: each change is one call.
        self.tunnels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the tunnels `is_live` says are offline, then counts the rest (leaving
    /// out `except`, the tunnel being reclaimed) for a caller at `ip`.
    pub(crate) fn count(
        &self,
        ip: IpAddr,
        except: Option<&str>,
        is_live: impl Fn(&str) -> bool,
    ) -> AnonymousCount {
        let mut tunnels = self.lock();
        tunnels.retain(|id, _| is_live(id));
        let block = ipv6_48(ip);
        let mut count = AnonymousCount {
            total: 0,
            same_48: 0,
        };
        for (id, owner) in tunnels.iter() {
            if Some(id.as_str()) == except {
                continue;
            }
            count.total += 1;
            if block.is_some() && ipv6_48(*owner) == block {
                count.same_48 += 1;
            }
        }
        count
    }

    /// Records that `tunnel_id` was placed for an anonymous caller at `ip` (again,
    /// when reclaimed from another address).
    pub(crate) fn insert(&self, tunnel_id: &str, ip: IpAddr) {
        self.lock().insert(tunnel_id.to_string(), ip);
    }

    /// Forgets `tunnel_id` (its placement failed, or a key's tunnel reclaimed it).
    pub(crate) fn remove(&self, tunnel_id: &str) {
        self.lock().remove(tunnel_id);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::api::CreateTunnelRequest;
    use crate::store::SqliteStore;
    use crate::tokens::TokenSigner;
    use crate::{
        Caller, Control, ControlConfig, DisconnectReason, PlaceRequest, Placed, Placement,
        PlacementError, TunnelStatus,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_callers_are_grouped_by_their_48() {
        assert_eq!(
            ipv6_48(ip("2001:db8:1:ffff:1::1")),
            Some(ip("2001:db8:1::"))
        );
        assert_eq!(ipv6_48(ip("10.0.0.1")), None);
        assert_eq!(ipv6_48(ip("::ffff:10.0.0.1")), None, "mapped IPv4 is IPv4");
    }

    #[test]
    fn counts_live_tunnels_in_all_and_per_48() {
        let set = AnonymousTunnels::default();
        set.insert("a", ip("2001:db8:1:1::"));
        set.insert("b", ip("2001:db8:1:2::"));
        set.insert("c", ip("2001:db8:2:1::"));
        set.insert("d", ip("10.0.0.1"));
        set.insert("gone", ip("2001:db8:1:3::"));
        let live = |id: &str| id != "gone";
        let from_1 = set.count(ip("2001:db8:1:9::"), None, live);
        assert_eq!(
            from_1,
            AnonymousCount {
                total: 4,
                same_48: 2
            }
        );
        assert_eq!(set.lock().len(), 4, "the offline tunnel was forgotten");
        let from_v4 = set.count(ip("10.0.0.1"), None, live);
        assert_eq!(
            from_v4,
            AnonymousCount {
                total: 4,
                same_48: 0
            }
        );
        let reclaiming_a = set.count(ip("2001:db8:1:9::"), Some("a"), live);
        assert_eq!(
            reclaiming_a,
            AnonymousCount {
                total: 3,
                same_48: 1
            }
        );
        set.remove("b");
        assert_eq!(set.count(ip("2001:db8:1::"), None, live).same_48, 1);
    }

    /// An Edge that places every tunnel and reports it pending, except those the test
    /// took offline.
    #[derive(Default, Clone)]
    struct FakeEdge {
        offline: Arc<Mutex<HashSet<String>>>,
    }

    impl Placement for FakeEdge {
        fn place(&self, request: &PlaceRequest) -> Result<Placed, PlacementError> {
            self.offline.lock().unwrap().remove(&request.tunnel_id);
            Ok(Placed {
                public_url: "tcp://localhost:1".into(),
                port: Some(1),
            })
        }
        fn status(&self, tunnel_id: &str) -> TunnelStatus {
            if self.offline.lock().unwrap().contains(tunnel_id) {
                TunnelStatus::Offline
            } else {
                TunnelStatus::Pending
            }
        }
        fn disconnect(&self, tunnel_id: &str, _: DisconnectReason) -> bool {
            self.offline.lock().unwrap().insert(tunnel_id.to_string());
            true
        }
    }

    fn control(config: ControlConfig) -> (Control, FakeEdge) {
        let edge = FakeEdge::default();
        let signer = TokenSigner::generate();
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let control = Control::new(
            ControlConfig {
                allow_anonymous: true,
                ..config
            },
            signer,
            Box::new(edge.clone()),
            store,
        );
        (control, edge)
    }

    fn tcp() -> CreateTunnelRequest {
        serde_json::from_value(serde_json::json!({"protocol": "tcp"})).unwrap()
    }

    fn anon(s: &str) -> Caller {
        Caller::Anonymous {
            ip: crate::rate::client_key(ip(s)),
        }
    }

    #[test]
    fn anonymous_callers_share_their_48_and_the_server_wide_cap() {
        let (control, edge) = control(ControlConfig {
            max_tunnels_per_anonymous_ip: 10,
            max_tunnels_per_anonymous_ipv6_48: 2,
            max_anonymous_tunnels: 3,
            ..ControlConfig::default()
        });
        let first = control
            .create_tunnel(&anon("2001:db8:1:1::1"), &tcp())
            .unwrap();
        control
            .create_tunnel(&anon("2001:db8:1:2::1"), &tcp())
            .unwrap();
        // A third /64 of the same /48 is refused; another /48 is not.
        let e = control
            .create_tunnel(&anon("2001:db8:1:3::1"), &tcp())
            .unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code().as_str()),
            (403, "limit_reached")
        );
        assert!(e.to_string().contains("/48"), "{e}");
        control.create_tunnel(&anon("10.0.0.1"), &tcp()).unwrap();
        // Three live anonymous tunnels: the server-wide cap.
        let e = control
            .create_tunnel(&anon("10.0.0.2"), &tcp())
            .unwrap_err();
        assert_eq!(e.code().as_str(), "limit_reached");
        assert!(e.to_string().contains("anonymous tunnels"), "{e}");
        // A tunnel that went offline frees its place in both limits.
        edge.disconnect(&first.tunnel_id, DisconnectReason::Deleted);
        control
            .create_tunnel(&anon("2001:db8:1:3::1"), &tcp())
            .unwrap();
    }

    #[test]
    fn the_record_cap_counts_after_the_owners_old_records_are_forgotten() {
        let (control, edge) = control(ControlConfig {
            max_records_per_owner: 2,
            max_tunnel_records: 3,
            ..ControlConfig::default()
        });
        let a = anon("10.0.0.1");
        let t1 = control.create_tunnel(&a, &tcp()).unwrap();
        control.create_tunnel(&a, &tcp()).unwrap();
        control.create_tunnel(&anon("10.0.0.2"), &tcp()).unwrap();
        assert_eq!(control.store().count_tunnels().unwrap(), 3);
        // Full: a new owner is refused with 503.
        let e = control
            .create_tunnel(&anon("10.0.0.3"), &tcp())
            .unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code().as_str()),
            (503, "limit_reached")
        );
        // An owner at its own quota with an offline record replaces it.
        edge.disconnect(&t1.tunnel_id, DisconnectReason::Deleted);
        control.create_tunnel(&a, &tcp()).unwrap();
        assert_eq!(control.store().count_tunnels().unwrap(), 3);
        assert!(control.store().tunnel(&t1.tunnel_id).unwrap().is_none());
    }
}
