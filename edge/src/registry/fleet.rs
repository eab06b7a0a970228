//! The registry's part in a fleet: names and ports reserved in the shared store
//! before placement, tunnels adopted from other nodes' tokens, and what other nodes
//! serve.

use std::net::TcpListener;
use std::time::Duration;

use netbore_control::api::Protocol;
use netbore_control::tokens::{Claims, unix_now};
use netbore_control::{PlaceRequest, Placement, PlacementError};
use netbore_transport::proto::{ErrorBody, ErrorCode};

use super::{Phase, Registry};
use crate::fleet::RouteKey;

/// How many free ports placement tries before giving up when the fleet has reserved
/// each for another tunnel.
const RESERVE_TRIES: usize = 16;

impl Registry {
    /// Whether another live node of the fleet serves one of `keys` for a tunnel other
    /// than `tunnel_id`.
    pub(super) fn held_elsewhere_by_another(&self, keys: &[RouteKey], tunnel_id: &str) -> bool {
        let Some(directory) = self.directory() else {
            return false;
        };
        keys.iter()
            .flat_map(|k| directory.holders(k))
            .any(|h| h.tunnel_id != tunnel_id)
    }

    /// In a fleet, reserves `route`'s name or port for `tunnel_id` in the shared
    /// store, so two nodes placing at the same moment never both get it: `false`
    /// when another tunnel has it. Always `true` on a single node.
    fn reserve(
        &self,
        route: &RouteKey,
        tunnel_id: &str,
        hold: Duration,
    ) -> Result<bool, PlacementError> {
        let Some(directory) = self.directory() else {
            return Ok(true);
        };
        directory
            .reserve(route, tunnel_id, hold)
            .map_err(|e| PlacementError {
                code: ErrorCode::StoreUnavailable,
                message: e.to_string(),
            })
    }

    /// In a fleet, reserves what `request` places (its name, its asked-for port, or
    /// a free port, bound here and returned) before placement takes the table's lock.
    pub(super) fn reserve_for(
        &self,
        request: &PlaceRequest,
    ) -> Result<Option<TcpListener>, PlacementError> {
        if self.directory().is_none() {
            return Ok(None);
        }
        let id = request.tunnel_id.as_str();
        match (request.protocol, &request.name, request.port) {
            (Protocol::Http | Protocol::Tls, Some(name), _) => {
                if !self.reserve(&RouteKey::Http(name.clone()), id, request.hold)? {
                    return Err(PlacementError {
                        code: ErrorCode::NameTaken,
                        message: format!(
                            "the name {name} is in use by another tunnel; pick another --name"
                        ),
                    });
                }
                Ok(None)
            }
            (Protocol::Tcp, _, Some(port)) => {
                if !self.reserve(&RouteKey::Tcp(port), id, request.hold)? {
                    return Err(PlacementError {
                        code: ErrorCode::PortInUse,
                        message: format!(
                            "public port {port} is in use by another tunnel; ask for another port or none"
                        ),
                    });
                }
                Ok(None)
            }
            (Protocol::Tcp, _, None) => self.bind_reserved(id, request.hold).map(Some),
            _ => Ok(None),
        }
    }

    /// Binds a free public port for `tunnel_id` that the fleet has reserved for it. A
    /// port another node reserved is kept bound until the end, so the next try gets
    /// another.
    fn bind_reserved(
        &self,
        tunnel_id: &str,
        hold: Duration,
    ) -> Result<TcpListener, PlacementError> {
        let mut refused = Vec::new();
        for _ in 0..RESERVE_TRIES {
            let listener = self.ports.bind_for(tunnel_id, None)?;
            let Some(port) = listener.local_addr().ok().map(|a| a.port()) else {
                return Ok(listener);
            };
            if self.reserve(&RouteKey::Tcp(port), tunnel_id, hold)? {
                return Ok(listener);
            }
            refused.push(listener);
        }
        Err(PlacementError {
            code: ErrorCode::NoPortAvailable,
            message: "the fleet has reserved every free port this server tried; try again".into(),
        })
    }

    /// Whether the fleet's directory, as this node's replica has it, shows
    /// `tunnel_id` held by another node now: its agent moved it there (a drain). The
    /// moment it does, this node can forward the tunnel's new viewers there. `false`
    /// on a single node and for tunnels unknown here.
    pub fn held_by_another_node(&self, tunnel_id: &str) -> bool {
        let Some(directory) = self.directory() else {
            return false;
        };
        let key = {
            let tables = self.tables();
            let Some(entry) = tables.tunnels.get(tunnel_id) else {
                return false;
            };
            let port = entry
                .listener
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.port());
            Self::route_key(entry.protocol, entry.name.as_deref(), port)
        };
        key.is_some_and(|k| {
            directory
                .holders(&k)
                .iter()
                .any(|h| h.tunnel_id == tunnel_id)
        })
    }

    /// Whether an HTTP or TLS tunnel named `name` is placed here or, in a fleet,
    /// online at another node.
    pub fn serves_somewhere(&self, name: &str) -> bool {
        self.route(name).is_some()
            || self.directory().is_some_and(|d| {
                d.holder(&RouteKey::Http(name.to_string())).is_some()
                    || d.holder(&RouteKey::Tls(name.to_string())).is_some()
            })
    }

    /// In a fleet, a token minted by another node names a tunnel placed there: its
    /// agent came here instead (it could not reach that node's agent port, say). The
    /// token was signed after the control plane's checks, and says what to place, so
    /// the tunnel is placed here now, with the fleet's name and port checks, provided
    /// the store still holds its record. Blocks on the network (call it from a
    /// blocking thread, before [`Self::claim`]); nothing to do for this node's own
    /// tokens, or a tunnel already pending here.
    pub fn adopt(&self, claims: &Claims) -> Result<(), ErrorBody> {
        if !claims.minted_elsewhere
            || self.directory().is_none()
            || self
                .tables()
                .tunnels
                .get(&claims.tid)
                .is_some_and(|e| matches!(e.phase, Phase::Pending))
        {
            return Ok(());
        }
        let recorded = self.records.get().map(|store| store.tunnel(&claims.tid));
        match recorded {
            Some(Ok(Some(_))) => {}
            Some(Err(e)) => {
                return Err(ErrorBody {
                    code: ErrorCode::StoreUnavailable,
                    message: format!(
                        "the server cannot reach its shared store ({e}); try again in a moment"
                    ),
                });
            }
            _ => {
                return Err(ErrorBody {
                    code: ErrorCode::UnknownTunnel,
                    message: format!(
                        "tunnel {} no longer exists; reconnect to get a new one",
                        claims.tid
                    ),
                });
            }
        }
        let protocol = match claims.proto.as_str() {
            "tcp" => Protocol::Tcp,
            "http" => Protocol::Http,
            "tls" => Protocol::Tls,
            other => {
                return Err(ErrorBody {
                    code: ErrorCode::BadToken,
                    message: format!(
                        "the token names an unknown protocol {other:?}; update netbore"
                    ),
                });
            }
        };
        let request = PlaceRequest {
            tunnel_id: claims.tid.clone(),
            protocol,
            name: claims.name.clone(),
            port: claims.port,
            hold: Duration::from_secs(claims.exp.saturating_sub(unix_now()) + 5),
        };
        self.place(&request).map(|_| ()).map_err(|e| ErrorBody {
            code: e.code,
            message: e.message,
        })
    }

    /// Releases this node's pending TCP tunnels that another node took after they
    /// were placed here: their agent said hello there with this node's token (the
    /// tunnel was adopted), so the port must be this node's mirror of it, not a
    /// listener nobody accepts on until the placement lapses. A tunnel placed here
    /// while another node still held it (moving here) is kept: only a holder entry
    /// newer than the one seen at placement counts. Called from the mirror's poll.
    pub fn release_adopted_elsewhere(&self) {
        let Some(directory) = self.directory() else {
            return;
        };
        let adopted: Vec<(String, u64)> = {
            let tables = self.tables();
            tables
                .tunnels
                .iter()
                .filter(|(_, e)| matches!(e.phase, Phase::Pending) && e.protocol == Protocol::Tcp)
                .filter_map(|(id, e)| {
                    let port = e.listener.as_ref()?.local_addr().ok()?.port();
                    let holder = directory.holder(&RouteKey::Tcp(port))?;
                    let newer = e.placed_over.is_none_or(|seen| holder.generation > seen);
                    (holder.tunnel_id == *id && newer).then(|| (id.clone(), e.generation))
                })
                .collect()
        };
        for (tunnel_id, generation) in adopted {
            // A hello that claimed it here in between keeps it.
            if self.release_pending(&tunnel_id, generation) {
                tracing::info!(%tunnel_id, "another node serves this tunnel now; its port here relays there");
            }
        }
    }
}
