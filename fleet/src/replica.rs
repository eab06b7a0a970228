//! This node's copy of the fleet's route table and node list, read by the forwarding
//! path without asking Redis: the full table is loaded when the node subscribes, and
//! every change arrives by pub/sub. Sans I/O: the worker threads feed it.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::NodeInfo;

/// One route as the directory holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteEntry {
    pub(crate) node: String,
    pub(crate) incarnation: String,
    pub(crate) generation: u64,
    pub(crate) tunnel_id: String,
    pub(crate) agent: Option<SocketAddr>,
}

impl RouteEntry {
    /// Parses `NODE INCARNATION GENERATION TUNNEL_ID AGENT`.
    pub(crate) fn parse(value: &str) -> Option<RouteEntry> {
        let mut parts = value.split(' ');
        let entry = RouteEntry {
            node: parts.next()?.to_string(),
            incarnation: parts.next()?.to_string(),
            generation: parts.next()?.parse().ok()?,
            tunnel_id: parts.next()?.to_string(),
            agent: parts.next()?.parse().ok(),
        };
        Some(entry)
    }
}

/// The route table and the live nodes.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    routes: HashMap<String, RouteEntry>,
    /// Tunnel id → its route key (the newest entry's).
    by_tunnel: HashMap<String, String>,
    nodes: HashMap<String, NodeInfo>,
}

/// A full route table, parsed from a load (`HGETALL`) before it replaces the
/// replica's, so lookups never wait behind the parsing of a large table.
#[derive(Debug, Default)]
pub(crate) struct Table {
    routes: HashMap<String, RouteEntry>,
    by_tunnel: HashMap<String, String>,
}

impl Table {
    /// Parses a full load; unparsable entries are skipped.
    pub(crate) fn parse(all: HashMap<String, String>) -> Table {
        let routes: HashMap<String, RouteEntry> = all
            .into_iter()
            .filter_map(|(k, v)| RouteEntry::parse(&v).map(|e| (k, e)))
            .collect();
        let by_tunnel = routes
            .iter()
            .map(|(k, e)| (e.tunnel_id.clone(), k.clone()))
            .collect();
        Table { routes, by_tunnel }
    }
}

impl Replica {
    /// Replaces the table with a full load (`HGETALL`); unparsable entries are skipped.
    #[cfg(test)]
    pub(crate) fn load(&mut self, all: HashMap<String, String>) {
        self.replace(Table::parse(all));
    }

    /// Replaces the table with one parsed beforehand; the old one is returned, to be
    /// dropped outside the lock.
    pub(crate) fn replace(&mut self, table: Table) -> Table {
        Table {
            routes: std::mem::replace(&mut self.routes, table.routes),
            by_tunnel: std::mem::replace(&mut self.by_tunnel, table.by_tunnel),
        }
    }

    /// Applies one pub/sub message; false if it is malformed.
    pub(crate) fn apply(&mut self, message: &str) -> bool {
        let mut parts = message.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("set"), Some(key), Some(value)) => {
                let Some(entry) = RouteEntry::parse(value) else {
                    return false;
                };
                let newer = self
                    .routes
                    .get(key)
                    .is_none_or(|old| old.generation < entry.generation);
                if newer {
                    self.by_tunnel
                        .insert(entry.tunnel_id.clone(), key.to_string());
                    self.routes.insert(key.to_string(), entry);
                }
                true
            }
            (Some("del"), Some(key), Some(owner)) => {
                let mut parts = owner.split(' ');
                let (Some(node), Some(incarnation), Some(Ok(generation)), None) = (
                    parts.next(),
                    parts.next(),
                    parts.next().map(str::parse::<u64>),
                    parts.next(),
                ) else {
                    return false;
                };
                if self.routes.get(key).is_some_and(|e| {
                    e.generation == generation && e.node == node && e.incarnation == incarnation
                }) && let Some(entry) = self.routes.remove(key)
                    && self.by_tunnel.get(&entry.tunnel_id).map(String::as_str) == Some(key)
                {
                    self.by_tunnel.remove(&entry.tunnel_id);
                }
                true
            }
            _ => false,
        }
    }

    /// Replaces the live nodes.
    pub(crate) fn set_nodes(&mut self, nodes: Vec<NodeInfo>) {
        self.nodes = nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
    }

    /// The live nodes.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    /// The entry of `key` and its node, when that node is alive in the incarnation
    /// that published it.
    pub(crate) fn holder(&self, key: &str) -> Option<(&RouteEntry, &NodeInfo)> {
        let entry = self.routes.get(key)?;
        let node = self.nodes.get(&entry.node)?;
        (node.incarnation == entry.incarnation).then_some((entry, node))
    }

    /// The entry of tunnel `tunnel_id` and its live node.
    pub(crate) fn serving(&self, tunnel_id: &str) -> Option<(&RouteEntry, &NodeInfo)> {
        self.holder(self.by_tunnel.get(tunnel_id)?)
    }

    /// The ports of TCP tunnels held by live nodes other than `me`.
    pub(crate) fn remote_tcp_ports(&self, me: &str) -> Vec<u16> {
        self.routes
            .iter()
            .filter_map(|(key, entry)| {
                let port = key.strip_prefix("tcp:")?.parse().ok()?;
                let (_, node) = self.holder(key)?;
                (node.id != me && entry.node != me).then_some(port)
            })
            .collect()
    }

    /// How many routes the table holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, incarnation: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            incarnation: incarnation.into(),
            ..NodeInfo::default()
        }
    }

    #[test]
    fn newer_generations_win_and_deletes_are_fenced() {
        let mut r = Replica::default();
        r.set_nodes(vec![node("a", "1"), node("b", "2")]);
        assert!(r.apply("set http:shop a 1 5 t1 -"));
        assert_eq!(r.holder("http:shop").unwrap().1.id, "a");
        // A late message from an older generation changes nothing.
        assert!(r.apply("set http:shop b 2 4 t1 -"));
        assert_eq!(r.holder("http:shop").unwrap().1.id, "a");
        // The tunnel moves to b.
        assert!(r.apply("set http:shop b 2 6 t1 127.0.0.1:9"));
        let (entry, node) = r.holder("http:shop").unwrap();
        assert_eq!((node.id.as_str(), entry.generation), ("b", 6));
        assert_eq!(entry.agent, Some("127.0.0.1:9".parse().unwrap()));
        // a's withdrawal of generation 5 does not remove b's entry, nor does one
        // naming b's generation with another node.
        assert!(r.apply("del http:shop a 1 5"));
        assert!(r.apply("del http:shop a 1 6"));
        assert!(r.holder("http:shop").is_some());
        assert_eq!(r.serving("t1").unwrap().1.id, "b");
        assert!(r.apply("del http:shop b 2 6"));
        assert!(r.holder("http:shop").is_none());
        assert!(r.serving("t1").is_none());
        assert!(!r.apply("set http:x"));
        assert!(!r.apply("del http:x a 1 y"));
        assert!(!r.apply("del http:x 5"));
        assert!(!r.apply("hello"));
    }

    #[test]
    fn entries_of_dead_or_restarted_nodes_are_not_holders() {
        let mut r = Replica::default();
        r.set_nodes(vec![node("a", "1")]);
        r.load(HashMap::from([
            ("http:one".to_string(), "a 1 1 t1 -".to_string()),
            ("http:two".to_string(), "a 0 2 t2 -".to_string()),
            ("http:three".to_string(), "c 1 3 t3 -".to_string()),
            ("http:bad".to_string(), "garbage".to_string()),
        ]));
        assert_eq!(r.len(), 3);
        assert!(r.holder("http:one").is_some());
        // Published by an earlier run of a.
        assert!(r.holder("http:two").is_none());
        // c is not alive.
        assert!(r.holder("http:three").is_none());
        r.set_nodes(Vec::new());
        assert!(r.holder("http:one").is_none());
    }
}
