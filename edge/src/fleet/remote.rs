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
}

/// The remote tunnels this node's ingress reaches.
#[derive(Debug)]
pub struct Remote {
    directory: Arc<dyn Directory>,
    pool: LinkPool,
    upstream: UpstreamConfig,
    http: Mutex<HashMap<String, Cached<HttpTunnel>>>,
    tls: Mutex<HashMap<String, Cached<TlsTunnel>>>,
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
        let key = RouteKey::Http(name.to_string());
        self.cache_hit(&self.http, &key, &key.to_string(), None)
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
                .get(&RouteKey::Http(name.to_string()).to_string())
                .filter(|c| Arc::ptr_eq(&c.tunnel, lost))
                .map(|c| c.node.clone())
        };
        self.http_except(name, failed.as_deref()).await
    }

    /// The HTTP tunnel `name` at a holder other than node `except`.
    async fn http_except(&self, name: &str, except: Option<&str>) -> Option<Arc<HttpTunnel>> {
        let key = RouteKey::Http(name.to_string());
        let upstream = self.upstream.clone();
        self.cached(&self.http, key, except, |holder, link, preamble| {
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
        })
        .await
    }

    /// The TLS passthrough tunnel `name` as held by another node, if one holds it.
    pub async fn tls(&self, name: &str) -> Option<Arc<TlsTunnel>> {
        let key = RouteKey::Tls(name.to_string());
        self.cached(&self.tls, key, None, |holder, link, preamble| {
            TlsTunnel::via_link(holder.tunnel_id.clone(), link, preamble)
        })
        .await
    }

    /// Drops the cached tunnels whose holder let them go or left (the tunnel moved,
    /// here or to another node): their pooled connections over the link close, so
    /// the node that held them is not kept busy by idle streams (a drain waits for
    /// its streams). Requests in flight keep theirs to the end.
    pub fn prune_stale(&self) {
        fn prune<T>(directory: &dyn Directory, cache: &Mutex<HashMap<String, Cached<T>>>) {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|k, c| {
                RouteKey::parse(k).is_some_and(|k| directory.is_holder(&k, &c.node, c.generation))
            });
        }
        prune(self.directory.as_ref(), &self.http);
        prune(self.directory.as_ref(), &self.tls);
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

    /// The tunnel cached for `key` (whose text is `text`) at a holder other than
    /// node `except`, while that node holds it and its link lives. Any live
    /// holder's will do: the one first reached stays in use.
    fn cache_hit<T: Offline>(
        &self,
        cache: &Mutex<HashMap<String, Cached<T>>>,
        key: &RouteKey,
        text: &str,
        except: Option<&str>,
    ) -> Option<Arc<T>> {
        let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        let c = cache.get(text)?;
        (!c.tunnel.is_offline()
            && Some(c.node.as_str()) != except
            && self.directory.is_holder(key, &c.node, c.generation))
        .then(|| c.tunnel.clone())
    }

    async fn cached<T: Offline>(
        &self,
        cache: &Mutex<HashMap<String, Cached<T>>>,
        key: RouteKey,
        except: Option<&str>,
        make: impl FnOnce(&Holder, Session, Vec<u8>) -> T,
    ) -> Option<Arc<T>> {
        let text = key.to_string();
        if let Some(tunnel) = self.cache_hit(cache, &key, &text, except) {
            return Some(tunnel);
        }
        let (session, preamble, holder) = self.link_except(&key, except).await?;
        let tunnel = Arc::new(make(&holder, session, preamble));
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= PRUNE_AT {
            cache.retain(|k, c| {
                RouteKey::parse(k)
                    .is_some_and(|k| self.directory.is_holder(&k, &c.node, c.generation))
            });
        }
        cache.insert(
            text,
            Cached {
                generation: holder.generation,
                node: holder.node,
                tunnel: tunnel.clone(),
            },
        );
        Some(tunnel)
    }
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
