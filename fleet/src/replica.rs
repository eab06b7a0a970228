//! This node's copy of the fleet's route table and node list, read by the forwarding
//! path without asking Redis: the full table is loaded when the node subscribes, and
//! every change arrives by pub/sub. Sans I/O: the worker threads feed it.
//!
//! A route may have several holders: the nodes where the same tunnel's agent holds a
//! session (`--ha`, or a move under way). Holders of another tunnel are superseded
//! by a newer claim, as a single holder always was.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::NodeInfo;

/// One holder of a route as the directory holds it.
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

    /// Parses a stored value: holders separated by `;`. Unparsable holders are
    /// skipped; the result is ordered newest generation first.
    pub(crate) fn parse_all(value: &str) -> Vec<RouteEntry> {
        let mut entries: Vec<RouteEntry> = value.split(';').filter_map(Self::parse).collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.generation));
        entries
    }
}

/// The route table and the live nodes.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    /// Route key → its holders, newest generation first.
    routes: HashMap<String, Vec<RouteEntry>>,
    /// Tunnel id → its route key (the newest entry's).
    by_tunnel: HashMap<String, String>,
    nodes: HashMap<String, NodeInfo>,
}

/// A full route table, parsed from a load (`HGETALL`) before it replaces the
/// replica's, so lookups never wait behind the parsing of a large table.
#[derive(Debug, Default)]
pub(crate) struct Table {
    routes: HashMap<String, Vec<RouteEntry>>,
    by_tunnel: HashMap<String, String>,
}

impl Table {
    /// Parses a full load; unparsable entries are skipped.
    pub(crate) fn parse(all: HashMap<String, String>) -> Table {
        let routes: HashMap<String, Vec<RouteEntry>> = all
            .into_iter()
            .map(|(k, v)| (k, RouteEntry::parse_all(&v)))
            .filter(|(_, e)| !e.is_empty())
            .collect();
        let by_tunnel = routes
            .iter()
            .flat_map(|(k, es)| es.iter().map(move |e| (e.tunnel_id.clone(), k.clone())))
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
                self.set(key, entry);
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
                self.del(key, node, incarnation, generation);
                true
            }
            _ => false,
        }
    }

    /// A holder claimed `key`. A message older than what the replica has (a newer
    /// claim of another tunnel, or a newer entry of the same node) changes nothing.
    fn set(&mut self, key: &str, entry: RouteEntry) {
        let entries = self.routes.entry(key.to_string()).or_default();
        let stale = entries.iter().any(|e| {
            (e.tunnel_id != entry.tunnel_id || e.node == entry.node)
                && e.generation >= entry.generation
        });
        if stale {
            return;
        }
        // Holders of another tunnel are superseded; this node's older entry replaced.
        let mut superseded = Vec::new();
        entries.retain(|e| {
            if e.tunnel_id != entry.tunnel_id {
                superseded.push(e.tunnel_id.clone());
            }
            e.tunnel_id == entry.tunnel_id && e.node != entry.node
        });
        for tunnel in superseded {
            if self.by_tunnel.get(&tunnel).map(String::as_str) == Some(key) {
                self.by_tunnel.remove(&tunnel);
            }
        }
        self.by_tunnel
            .insert(entry.tunnel_id.clone(), key.to_string());
        let at = entries
            .iter()
            .position(|e| e.generation < entry.generation)
            .unwrap_or(entries.len());
        entries.insert(at, entry);
    }

    /// A holder let `key` go: removed only when the generation it names is the one
    /// the replica has for that node.
    fn del(&mut self, key: &str, node: &str, incarnation: &str, generation: u64) {
        let Some(entries) = self.routes.get_mut(key) else {
            return;
        };
        let Some(at) = entries.iter().position(|e| {
            e.generation == generation && e.node == node && e.incarnation == incarnation
        }) else {
            return;
        };
        let gone = entries.remove(at);
        let still = entries.iter().any(|e| e.tunnel_id == gone.tunnel_id);
        if entries.is_empty() {
            self.routes.remove(key);
        }
        if !still && self.by_tunnel.get(&gone.tunnel_id).map(String::as_str) == Some(key) {
            self.by_tunnel.remove(&gone.tunnel_id);
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

    /// The holders of `key` whose nodes are alive in the incarnation that published
    /// them, newest generation first.
    pub(crate) fn holders(&self, key: &str) -> impl Iterator<Item = (&RouteEntry, &NodeInfo)> {
        self.routes
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let node = self.nodes.get(&entry.node)?;
                (node.incarnation == entry.incarnation).then_some((entry, node))
            })
    }

    /// The newest live holder of `key`.
    #[cfg(test)]
    pub(crate) fn holder(&self, key: &str) -> Option<(&RouteEntry, &NodeInfo)> {
        self.holders(key).next()
    }

    /// The live holders of tunnel `tunnel_id`, newest first.
    pub(crate) fn serving(
        &self,
        tunnel_id: &str,
    ) -> impl Iterator<Item = (&RouteEntry, &NodeInfo)> {
        self.by_tunnel
            .get(tunnel_id)
            .into_iter()
            .flat_map(|key| self.holders(key))
            .filter(move |(e, _)| e.tunnel_id == tunnel_id)
    }

    /// The ports of TCP tunnels held by live nodes, none of them `me`.
    pub(crate) fn remote_tcp_ports(&self, me: &str) -> Vec<u16> {
        self.routes
            .keys()
            .filter_map(|key| {
                let port = key.strip_prefix("tcp:")?.parse().ok()?;
                let mut holders = self.holders(key).peekable();
                holders.peek()?;
                holders.all(|(_, node)| node.id != me).then_some(port)
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
        // An older claim of the same tunnel at b: b holds it too, a's is newer.
        assert!(r.apply("set http:shop b 2 4 t1 -"));
        assert_eq!(r.holder("http:shop").unwrap().1.id, "a");
        assert_eq!(r.holders("http:shop").count(), 2);
        // A late message of a's older generation changes nothing.
        assert!(r.apply("set http:shop a 1 3 t1 -"));
        assert_eq!(r.holder("http:shop").unwrap().0.generation, 5);
        // The tunnel's agent says hello at b too: b is the newest holder, a stays one.
        assert!(r.apply("set http:shop b 2 6 t1 127.0.0.1:9"));
        let (entry, node) = r.holder("http:shop").unwrap();
        assert_eq!((node.id.as_str(), entry.generation), ("b", 6));
        assert_eq!(entry.agent, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(r.holders("http:shop").count(), 2);
        // a's withdrawal of generation 5 removes only a's entry, and one naming b's
        // generation with another node nothing.
        assert!(r.apply("del http:shop a 1 5"));
        assert!(r.apply("del http:shop a 1 6"));
        assert_eq!(r.holders("http:shop").count(), 1);
        assert_eq!(r.serving("t1").next().unwrap().1.id, "b");
        assert!(r.apply("del http:shop b 2 6"));
        assert!(r.holder("http:shop").is_none());
        assert!(r.serving("t1").next().is_none());
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

    #[test]
    fn a_claim_of_another_tunnel_supersedes_every_holder() {
        let mut r = Replica::default();
        r.set_nodes(vec![node("a", "1"), node("b", "2"), node("c", "3")]);
        assert!(r.apply("set tcp:4000 a 1 1 t1 -"));
        assert!(r.apply("set tcp:4000 b 2 2 t1 -"));
        assert_eq!(r.holders("tcp:4000").count(), 2);
        // c mirrors the port: no holder is c.
        assert_eq!(r.remote_tcp_ports("c"), vec![4000]);
        assert!(r.remote_tcp_ports("a").is_empty());
        // The name went to another tunnel at c (t1 was deleted): both holders go.
        assert!(r.apply("set tcp:4000 c 3 3 t2 -"));
        let all: Vec<_> = r
            .holders("tcp:4000")
            .map(|(e, _)| e.tunnel_id.as_str())
            .collect();
        assert_eq!(all, ["t2"]);
        // A late claim of t1 is older than t2's: nothing changes.
        assert!(r.apply("set tcp:4000 a 1 2 t1 -"));
        assert_eq!(r.holders("tcp:4000").count(), 1);
        // A stored value with two holders loads both, newest first; a dead node's is
        // kept but is no holder.
        r.load(HashMap::from([(
            "http:x".to_string(),
            "a 1 7 t9 -;b 2 9 t9 -;d 4 8 t9 -".to_string(),
        )]));
        let nodes: Vec<_> = r.holders("http:x").map(|(_, n)| n.id.as_str()).collect();
        assert_eq!(nodes, ["b", "a"]);
        assert_eq!(r.serving("t9").count(), 2);
    }
}
