//! Tunnels other nodes hold, as this node's ingress reaches them: an [`HttpTunnel`]
//! or [`TlsTunnel`] whose streams go over a link to the holder ([`super::link`]).
//!
//! Each is cached by route with the directory entry's generation it was made for, so
//! the pooled keep-alive connections to the holder are reused request after request,
//! and a tunnel that moved (a new generation, another node) gets a fresh one at its
//! next request. Only routes the directory names are cached, so viewers inventing
//! names cannot grow the cache; entries whose tunnel left the directory are dropped
//! when the cache passes [`PRUNE_AT`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use netbore_transport::Session;

use super::link::{self, LinkPool};
use super::mirror::Mirrors;
use super::{Directory, Holder, RouteKey};
use crate::http::upstream::{HttpTunnel, UpstreamConfig};
use crate::tls_tunnel::TlsTunnel;

/// Cached remote tunnels past which entries no longer in the directory are dropped.
pub const PRUNE_AT: usize = 1024;

#[derive(Debug)]
struct Cached<T> {
    generation: u64,
    node: String,
    tunnel: Arc<T>,
    /// The directory's version when this holder was last found holding the tunnel
    /// ([`Directory::version`]): while it stays, the directory need not be asked.
    checked: AtomicU64,
}

/// A cache of remote tunnels by name (the map says which protocol).
type Cache<T> = Mutex<HashMap<String, Cached<T>>>;

/// The remote tunnels this node's ingress reaches.
#[derive(Debug)]
pub struct Remote {
    directory: Arc<dyn Directory>,
    pool: LinkPool,
    upstream: UpstreamConfig,
    http: Cache<HttpTunnel>,
    tls: Cache<TlsTunnel>,
    mirrors: Mirrors,
}

impl Remote {
    /// Remote tunnels found in `directory`, over links dialed with `mux` settings,
    /// spoken to with `upstream` settings.
    pub fn new(
        directory: Arc<dyn Directory>,
        mux: netbore_mux::Config,
        upstream: UpstreamConfig,
    ) -> Self {
        Remote {
            pool: LinkPool::new(directory.clone(), mux),
            directory,
            upstream,
            http: Mutex::default(),
            tls: Mutex::default(),
            mirrors: Mirrors::default(),
        }
    }

    /// The TCP ports this node mirrors for tunnels other nodes hold.
    pub fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }

    /// The directory.
    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    /// The HTTP tunnel `name` as held by another node, if one holds it.
    pub async fn http(&self, name: &str) -> Option<Arc<HttpTunnel>> {
        self.http_except(name, None).await
    }

    /// The HTTP tunnel `name` as cached for a node holding it, without waiting: what
    /// [`Self::http`] gives request after request once it has reached the holder
    /// (whose future, a dial and all, is large enough that building it per request
    /// showed in the relaying node's profile).
    pub fn http_cached(&self, name: &str) -> Option<Arc<HttpTunnel>> {
        self.cache_hit(&self.http, name, RouteKey::Http, None)
    }

    /// The HTTP tunnel `name` at another holder than the one `lost` reached: the
    /// link to that one ended under a request.
    pub async fn http_instead(
        &self,
        name: &str,
        lost: &Arc<HttpTunnel>,
    ) -> Option<Arc<HttpTunnel>> {
        let failed = {
            let cache = self.http.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(name)
                .filter(|c| Arc::ptr_eq(&c.tunnel, lost))
                .map(|c| c.node.clone())
        };
        self.http_except(name, failed.as_deref()).await
    }

    /// The HTTP tunnel `name` at a holder other than node `except`.
    async fn http_except(&self, name: &str, except: Option<&str>) -> Option<Arc<HttpTunnel>> {
        let upstream = self.upstream.clone();
        self.cached(
            &self.http,
            name,
            RouteKey::Http,
            except,
            |holder, link, preamble| {
                HttpTunnel::via_link(
                    holder.tunnel_id.clone(),
                    name.to_string(),
                    link,
                    holder
                        .agent
                        .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
                    upstream,
                    preamble,
                )
            },
        )
        .await
    }

    /// The TLS passthrough tunnel `name` as held by another node, if one holds it.
    pub async fn tls(&self, name: &str) -> Option<Arc<TlsTunnel>> {
        self.cached(
            &self.tls,
            name,
            RouteKey::Tls,
            None,
            |holder, link, preamble| TlsTunnel::via_link(holder.tunnel_id.clone(), link, preamble),
        )
        .await
    }

    /// Drops the cached tunnels whose holder let them go or left (the tunnel moved,
    /// here or to another node): their pooled connections over the link close, so
    /// the node that held them is not kept busy by idle streams (a drain waits for
    /// its streams). Requests in flight keep theirs to the end.
    pub fn prune_stale(&self) {
        let directory = self.directory.as_ref();
        prune(directory, &self.http, RouteKey::Http);
        prune(directory, &self.tls, RouteKey::Tls);
    }

    /// A link session to a holder of `route` and the stream preamble for it: the
    /// best holder whose node answers (a node that just died refuses or times out,
    /// and the next holder is tried).
    pub async fn link_for(&self, route: &RouteKey) -> Option<(Session, Vec<u8>, Holder)> {
        self.link_except(route, None).await
    }

    /// [`Self::link_for`], at a holder other than node `except`.
    async fn link_except(
        &self,
        route: &RouteKey,
        except: Option<&str>,
    ) -> Option<(Session, Vec<u8>, Holder)> {
        let preamble = link::preamble(&route.to_string())?;
        let holders = self.directory.holders(route);
        for holder in holders
            .into_iter()
            .filter(|h| Some(h.node.as_str()) != except)
        {
            match self.pool.session(&holder).await {
                Ok(session) => return Some((session, preamble, holder)),
                Err(e) => {
                    tracing::warn!(error = %e, route = %route, "could not reach a node holding a tunnel");
                }
            }
        }
        None
    }

    /// The tunnel cached for `name` (whose route `key` makes) at a holder other
    /// than node `except`, while that node holds it and its link lives. Any live
    /// holder's will do: the one first reached stays in use. The directory is asked
    /// only when it changed since the holder was last found holding it.
    fn cache_hit<T: Offline>(
        &self,
        cache: &Cache<T>,
        name: &str,
        key: fn(String) -> RouteKey,
        except: Option<&str>,
    ) -> Option<Arc<T>> {
        let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        let c = cache.get(name)?;
        if c.tunnel.is_offline() || Some(c.node.as_str()) == except {
            return None;
        }
        let version = self.directory.version();
        if version.is_some_and(|v| c.checked.load(Ordering::Relaxed) == v) {
            return Some(c.tunnel.clone());
        }
        if !self
            .directory
            .is_holder(&key(name.to_string()), &c.node, c.generation)
        {
            return None;
        }
        if let Some(v) = version {
            c.checked.store(v, Ordering::Relaxed);
        }
        Some(c.tunnel.clone())
    }

    async fn cached<T: Offline>(
        &self,
        cache: &Cache<T>,
        name: &str,
        key: fn(String) -> RouteKey,
        except: Option<&str>,
        make: impl FnOnce(&Holder, Session, Vec<u8>) -> T,
    ) -> Option<Arc<T>> {
        if let Some(tunnel) = self.cache_hit(cache, name, key, except) {
            return Some(tunnel);
        }
        let (session, preamble, holder) = self.link_except(&key(name.to_string()), except).await?;
        let tunnel = Arc::new(make(&holder, session, preamble));
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= PRUNE_AT {
            retain_held(self.directory.as_ref(), &mut cache, key);
        }
        cache.insert(
            name.to_string(),
            Cached {
                generation: holder.generation,
                node: holder.node,
                tunnel: tunnel.clone(),
                checked: AtomicU64::new(NEVER_CHECKED),
            },
        );
        Some(tunnel)
    }
}

/// A [`Cached::checked`] no directory version equals (versions count up from 0).
const NEVER_CHECKED: u64 = u64::MAX;

/// Drops `cache`'s entries whose holder no longer holds the tunnel.
fn prune<T>(directory: &dyn Directory, cache: &Cache<T>, key: fn(String) -> RouteKey) {
    retain_held(
        directory,
        &mut cache.lock().unwrap_or_else(|e| e.into_inner()),
        key,
    );
}

fn retain_held<T>(
    directory: &dyn Directory,
    cache: &mut HashMap<String, Cached<T>>,
    key: fn(String) -> RouteKey,
) {
    cache.retain(|name, c| directory.is_holder(&key(name.clone()), &c.node, c.generation));
}

/// Whether a cached tunnel's link has ended.
trait Offline {
    fn is_offline(&self) -> bool;
}

impl Offline for HttpTunnel {
    fn is_offline(&self) -> bool {
        HttpTunnel::is_offline(self)
    }
}

impl Offline for TlsTunnel {
    fn is_offline(&self) -> bool {
        TlsTunnel::is_offline(self)
    }
}
