//! The control planes an agent may create its tunnels on, and moves between: its
//! `--server`s, then the fleet nodes the control plane lists.

use crate::{AgentConfig, ControlUrl};

/// Most control planes an agent keeps to move to (its `--server`s and those learned).
const MAX_SERVERS: usize = 16;

/// The control planes an agent may create its tunnels on: its `--server`s, then the
/// fleet nodes the control plane lists ([`EdgeCandidate::control_url`]).
///
/// [`EdgeCandidate::control_url`]: netbore_control::api::EdgeCandidate::control_url
pub(crate) struct Servers {
    list: Vec<ControlUrl>,
    /// How many of `list`'s first entries the user gave (`--server`); the rest were
    /// learned and are replaced by each newer answer.
    given: usize,
    current: usize,
}

impl Servers {
    pub(crate) fn new(config: &AgentConfig) -> Self {
        let mut list = vec![config.server.clone()];
        for s in &config.fallback_servers {
            if !list.contains(s) && list.len() < MAX_SERVERS {
                list.push(s.clone());
            }
        }
        Servers {
            given: list.len(),
            list,
            current: 0,
        }
    }

    pub(crate) fn current(&self) -> &ControlUrl {
        &self.list[self.current % self.list.len()]
    }

    /// Moves on to the next control plane (the first again after the last); true
    /// when that is another one not tried since the first.
    pub(crate) fn next(&mut self) -> bool {
        self.current = (self.current + 1) % self.list.len();
        if self.list.len() > 1 {
            tracing::info!(server = %self.current(), "trying the next control plane of the fleet");
        }
        self.current != 0
    }

    /// Makes `url` the control plane in use (added when it is not listed).
    pub(crate) fn select(&mut self, url: &ControlUrl) {
        match self.list.iter().position(|u| u == url) {
            Some(i) => self.current = i,
            None if self.list.len() < MAX_SERVERS => {
                self.list.push(url.clone());
                self.current = self.list.len() - 1;
            }
            None => {}
        }
    }

    /// Adds the control planes a draining node named (the fleet's other live nodes).
    pub(crate) fn learn_controls(&mut self, controls: &[String]) {
        for url in controls.iter().filter_map(|c| c.parse::<ControlUrl>().ok()) {
            if !self.list.contains(&url) && self.list.len() < MAX_SERVERS {
                self.list.push(url);
            }
        }
    }

    /// Learns the fleet's control planes from the nodes listed in `edges` (the live
    /// ones, as the answering node sees them): they replace those learned before, so
    /// nodes gone from the fleet are dropped and new ones fit. The `--server`s stay,
    /// and so does the one in use.
    pub(crate) fn learn(&mut self, edges: &[netbore_control::api::EdgeCandidate]) {
        let in_use = self.current().clone();
        let mut list: Vec<ControlUrl> = self.list[..self.given].to_vec();
        let learned = edges
            .iter()
            .filter_map(|e| e.control_url.as_deref()?.parse::<ControlUrl>().ok());
        for url in std::iter::once(in_use.clone()).chain(learned) {
            if !list.contains(&url) && list.len() < MAX_SERVERS {
                list.push(url);
            }
        }
        self.current = list.iter().position(|u| *u == in_use).unwrap_or(0);
        self.list = list;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AgentConfig;
    use netbore_control::api::EdgeCandidate;

    fn url(host: &str) -> ControlUrl {
        format!("http://{host}:7834").parse().unwrap()
    }

    fn edges(hosts: &[&str]) -> Vec<EdgeCandidate> {
        hosts
            .iter()
            .map(|h| EdgeCandidate {
                addr: format!("{h}:7835"),
                transports: vec!["tcp".into()],
                development_ca: false,
                node: Some((*h).into()),
                region: None,
                control_url: Some(format!("http://{h}:7834")),
            })
            .collect()
    }

    #[test]
    fn learned_control_planes_follow_the_fleet_and_the_given_ones_stay() {
        let mut config = AgentConfig::new(url("10.0.0.1"), Vec::new());
        config.fallback_servers = vec![url("10.0.0.2")];
        let mut servers = Servers::new(&config);
        servers.learn(&edges(&["10.0.0.1", "10.0.0.3", "10.0.0.4"]));
        assert_eq!(servers.list.len(), 4);
        // The fleet moved on: .3 and .4 are gone, new nodes came. The old learned
        // ones leave; the given ones stay; the one in use stays in use.
        servers.next();
        servers.next();
        assert_eq!(*servers.current(), url("10.0.0.3"));
        servers.learn(&edges(&["10.0.0.3", "10.0.0.5"]));
        assert_eq!(
            servers.list,
            vec![
                url("10.0.0.1"),
                url("10.0.0.2"),
                url("10.0.0.3"),
                url("10.0.0.5")
            ]
        );
        assert_eq!(*servers.current(), url("10.0.0.3"));
        // Twenty replacement nodes over time never crowd out what is live now.
        for round in 0..20 {
            servers.learn(&edges(&[&format!("10.0.1.{round}")]));
        }
        servers.learn(&edges(&["10.0.2.1", "10.0.2.2"]));
        assert!(servers.list.contains(&url("10.0.2.1")));
        assert!(servers.list.contains(&url("10.0.2.2")));
        assert!(servers.list.len() <= MAX_SERVERS);
    }

    #[test]
    fn the_nodes_a_draining_node_names_are_learned_and_the_one_moved_to_is_in_use() {
        let config = AgentConfig::new(url("10.0.0.1"), Vec::new());
        let mut servers = Servers::new(&config);
        servers.learn_controls(&[
            "http://10.0.0.3:7834".into(),
            "not a url".into(),
            "http://10.0.0.1:7834".into(),
        ]);
        assert_eq!(servers.list, vec![url("10.0.0.1"), url("10.0.0.3")]);
        servers.select(&url("10.0.0.3"));
        assert_eq!(*servers.current(), url("10.0.0.3"));
        servers.select(&url("10.0.0.9"));
        assert_eq!(*servers.current(), url("10.0.0.9"), "added when not listed");
    }
}
