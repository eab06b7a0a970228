//! Public TCP ports: which ports TCP tunnels may use, and binding one for a tunnel.
//! The [`Registry`](crate::registry::Registry) holds the bound listener while the
//! tunnel is pending or online.

use std::net::{IpAddr, SocketAddr, TcpListener};

use netbore_control::PlacementError;
use netbore_transport::proto::ErrorCode;

/// Which public ports TCP tunnels may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRange {
    /// Any unprivileged port (1024 and up) that is not one of the server's own:
    /// allocation asks the OS for a free one (`--tcp-ports 0`).
    Any,
    /// An inclusive range (`--tcp-ports LO-HI`).
    Range(u16, u16),
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "0" {
            return Ok(PortRange::Any);
        }
        let bad = || {
            format!(
                "{s:?} is not a port range; write LO-HI (e.g. 20000-29999) or 0 for any free port"
            )
        };
        let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        Ok(PortRange::Range(lo, hi))
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRange::Any => f.write_str("0"),
            PortRange::Range(lo, hi) => write!(f, "{lo}-{hi}"),
        }
    }
}

/// Connections a public port queues before the Edge accepts them. Stops a burst of
/// viewers (hundreds connecting at once) from being dropped by the kernel.
pub const PUBLIC_BACKLOG: u32 = 1024;

/// The lowest port [`PortRange::Any`] hands out: below it are the privileged ports of
/// well-known services (SSH, SMTP, HTTPS …), which a server run as root could bind
/// and a tunnel must not impersonate.
pub const LOWEST_ANY_PORT: u16 = 1024;

/// How many ports the OS may hand out that [`PortRange::Any`] refuses (a privileged
/// one, or one of the server's) before allocation gives up.
const ANY_PORT_TRIES: usize = 16;

/// The public ports of one Edge.
#[derive(Debug, Clone)]
pub struct PortPool {
    bind_ip: IpAddr,
    range: PortRange,
    /// The server's own port numbers (control API, agents, HTTP, HTTPS), which no
    /// tunnel gets under [`PortRange::Any`], whatever address it binds.
    own: Vec<u16>,
}

impl PortPool {
    /// A pool binding public ports on `bind_ip`; under [`PortRange::Any`] it never
    /// hands out a port below [`LOWEST_ANY_PORT`] or one of `own`.
    pub fn new(bind_ip: IpAddr, range: PortRange, own: Vec<u16>) -> Self {
        PortPool {
            bind_ip,
            range,
            own,
        }
    }

    /// Whether `port` may be a tunnel's under [`PortRange::Any`].
    fn allowed_any(&self, port: u16) -> bool {
        port >= LOWEST_ANY_PORT && !self.own.contains(&port)
    }

    fn bind(&self, port: u16) -> std::io::Result<TcpListener> {
        let addr = SocketAddr::new(self.bind_ip, port);
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // On Unix, SO_REUSEADDR only lets a port in TIME_WAIT be bound again. On
        // Windows it would let a tunnel bind a port another program listens on.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // std's listeners queue 128 connections; a burst of viewers needs more.
        socket.listen(PUBLIC_BACKLOG)?.into_std()
    }

    fn bind_requested(&self, port: u16) -> Result<TcpListener, PlacementError> {
        match self.range {
            _ if self.own.contains(&port) => {
                return Err(PlacementError {
                    code: ErrorCode::PortNotAllowed,
                    message: format!(
                        "port {port} is one of the server's own; pick another --remote-port or leave it out"
                    ),
                });
            }
            PortRange::Range(lo, hi) if !(lo..=hi).contains(&port) => {
                return Err(PlacementError {
                    code: ErrorCode::PortNotAllowed,
                    message: format!(
                        "port {port} is outside this server's public range {lo}-{hi}; pick a port in it or leave --remote-port out"
                    ),
                });
            }
            PortRange::Any if !self.allowed_any(port) => {
                return Err(PlacementError {
                    code: ErrorCode::PortNotAllowed,
                    message: format!(
                        "port {port} is privileged or one of the server's own; pick a port from {LOWEST_ANY_PORT} up or leave --remote-port out"
                    ),
                });
            }
            _ => {}
        }
        self.bind(port).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => PlacementError {
                code: ErrorCode::PortInUse,
                message: format!("port {port} is already in use on the server; pick another --remote-port or leave it out"),
            },
            _ => PlacementError {
                code: ErrorCode::PortNotAllowed,
                message: format!("the server cannot listen on port {port} ({e}); pick another --remote-port or leave it out"),
            },
        })
    }

    fn bind_any(&self, tunnel_id: &str) -> Result<TcpListener, PlacementError> {
        let (lo, hi) = match self.range {
            PortRange::Any => return self.bind_any_allowed(),
            PortRange::Range(lo, hi) => (lo, hi),
        };
        let span = u32::from(hi - lo) + 1;
        // Start at a point derived from the tunnel id so concurrent creates spread out.
        let start = tunnel_id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % span;
        for i in 0..span.min(4096) {
            let port = lo + ((start + i) % span) as u16;
            if self.own.contains(&port) {
                continue;
            }
            if let Ok(l) = self.bind(port) {
                return Ok(l);
            }
        }
        Err(PlacementError {
            code: ErrorCode::NoPortAvailable,
            message: format!(
                "no public port is free in {lo}-{hi}; try again later or ask the operator to widen --tcp-ports"
            ),
        })
    }
}

impl PortPool {
    /// A port from the OS that [`PortRange::Any`] allows. The refused ones stay bound
    /// until the end, so the OS never hands the same one out twice.
    fn bind_any_allowed(&self) -> Result<TcpListener, PlacementError> {
        let mut refused = Vec::new();
        for _ in 0..ANY_PORT_TRIES {
            let listener = self.bind(0).map_err(|e| PlacementError {
                code: ErrorCode::NoPortAvailable,
                message: format!("the server could not open a public port ({e}); try again later"),
            })?;
            match listener.local_addr() {
                Ok(addr) if self.allowed_any(addr.port()) => return Ok(listener),
                _ => refused.push(listener),
            }
        }
        Err(PlacementError {
            code: ErrorCode::NoPortAvailable,
            message: "the server found no free unprivileged public port; try again later or ask the operator to set --tcp-ports".into(),
        })
    }

    /// Binds `port` on the public address for a tunnel another node of the fleet holds
    /// (its viewers are relayed there: [`crate::fleet::mirror`]).
    pub fn bind_mirror(&self, port: u16) -> std::io::Result<TcpListener> {
        self.bind(port)
    }

    /// Binds a public port for `tunnel_id`: the `requested` one, or a free one from the
    /// range.
    pub fn bind_for(
        &self,
        tunnel_id: &str,
        requested: Option<u16>,
    ) -> Result<TcpListener, PlacementError> {
        match requested {
            Some(port) if port != 0 => self.bind_requested(port),
            _ => self.bind_any(tunnel_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_refuse_nonsense() {
        assert_eq!("0".parse::<PortRange>(), Ok(PortRange::Any));
        assert_eq!(
            "2000-3000".parse::<PortRange>(),
            Ok(PortRange::Range(2000, 3000))
        );
        for bad in ["", "3000-2000", "0-10", "a-b", "70000-70001", "5"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_taken_port_is_one_clear_sentence() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), PortRange::Any, Vec::new());
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let err = pool.bind_for("t", Some(port)).unwrap_err();
        assert_eq!(err.code, ErrorCode::PortInUse);
        assert!(err.message.contains(&port.to_string()), "{}", err.message);
    }

    #[tokio::test]
    async fn ports_come_from_the_range_and_outside_requests_are_refused() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let lo = probe.local_addr().unwrap().port();
        drop(probe);
        let pool = PortPool::new(
            "127.0.0.1".parse().unwrap(),
            PortRange::Range(lo, lo.saturating_add(20)),
            Vec::new(),
        );
        let mut seen = std::collections::HashSet::new();
        let mut held = Vec::new();
        for i in 0..5 {
            let listener = pool.bind_for(&format!("t{i}"), None).unwrap();
            let port = listener.local_addr().unwrap().port();
            held.push(listener);
            assert!(
                (lo..=lo + 20).contains(&port),
                "{port} outside {lo}-{}",
                lo + 20
            );
            assert!(seen.insert(port), "port {port} handed out twice");
        }
        let err = pool.bind_for("x", Some(lo - 1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::PortNotAllowed);
        // A full range is one clear sentence too.
        let tiny = PortPool::new(
            "127.0.0.1".parse().unwrap(),
            PortRange::Range(*seen.iter().next().unwrap(), *seen.iter().next().unwrap()),
            Vec::new(),
        );
        let err = tiny.bind_for("y", None).unwrap_err();
        assert_eq!(err.code, ErrorCode::NoPortAvailable);
    }

    #[tokio::test]
    async fn any_refuses_privileged_and_own_ports() {
        let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let own_port = own.local_addr().unwrap().port();
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), PortRange::Any, vec![own_port]);
        for port in [22, 443, 1023, own_port] {
            let err = pool.bind_for("t", Some(port)).unwrap_err();
            assert_eq!(err.code, ErrorCode::PortNotAllowed, "port {port}");
        }
        for i in 0..50 {
            let l = pool.bind_for(&format!("t{i}"), None).unwrap();
            let port = l.local_addr().unwrap().port();
            assert!(pool.allowed_any(port), "{port} handed out");
        }
    }
}
