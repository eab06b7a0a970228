//! The client address a request is counted against (anonymous owners, rate limits).
//!
//! It is the TCP peer, unless the peer is one of the operator's trusted proxies
//! (`--trusted-proxies`): then it is the rightmost address of `X-Forwarded-For` that
//! is not itself a trusted proxy. Each proxy appends the address it was reached from,
//! so everything right of the first untrusted hop was written by the operator's own
//! machines; anything left of it is whatever the client chose to send.
//!
//! A client that reaches the API directly cannot pick its address: from any peer not
//! in the list the header is ignored.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;

/// The header load balancers add (de facto standard; RFC 7239's `Forwarded` is rarer).
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// A block of addresses, `ADDR/LEN` (or one address, as a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    len: u8,
}

/// Why a `--trusted-proxies` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address block; write it as 10.0.0.0/8, 2001:db8::/32 or one address")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.chars().take(64).collect());
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| err())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(err)?,
            None => max,
        };
        Ok(Cidr {
            network: mask(addr, len),
            len,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.len) == self.network
    }
}

/// An IPv4-mapped IPv6 address as plain IPv4; any other address as it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// `ip` with every bit past the first `len` cleared.
pub(crate) fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (some proxies
/// write `1.2.3.4:5678` or `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

/// The client address of a request from TCP peer `peer` carrying `headers`, with
/// `trusted` the proxies whose `X-Forwarded-For` is believed (see the module
/// documentation). A hop that does not parse ends the walk: the address used is then
/// the last trusted one seen, never something the client wrote.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Several header lines are one list, in order (RFC 9110, section 5.3).
    let mut lines: Vec<&[u8]> = headers
        .get_all(FORWARDED_FOR)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let mut client = peer;
    while let Some(line) = lines.pop() {
        let Ok(line) = std::str::from_utf8(line) else {
            return client;
        };
        for hop in line.rsplit(',') {
            match parse_hop(hop) {
                Some(ip) if is_trusted(ip) => client = ip,
                Some(ip) => return ip,
                None => return client,
            }
        }
    }
    client
}

impl crate::Control {
    /// The client address of a request from TCP peer `peer`, by the server's
    /// `trusted_proxies` ([`client_ip`]).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer.ip(), headers, &self.config().trusted_proxies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn blocks_parse_and_match() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(ip("10.200.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")), "mapped IPv4 is IPv4");
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(
            !c.contains(ip("::a00:1")),
            "an IPv6 address is not in an IPv4 block"
        );
        let one: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!(one.to_string(), "2001:db8::1/128");
        assert!(one.contains(ip("2001:db8::1")) && !one.contains(ip("2001:db8::2")));
        let all: Cidr = "::/0".parse().unwrap();
        assert!(all.contains(ip("2001:db8::2")) && !all.contains(ip("1.2.3.4")));
        for bad in ["", "10.0.0.0/33", "::/129", "host/8", "10.0.0.0/-1", "10/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let headers = xff(&["203.0.113.9"]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &headers, &[]),
            ip("127.0.0.1"),
            "no list: the header is ignored"
        );
        let trusted = cidrs(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("192.0.2.1"), &headers, &trusted),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn a_trusted_peer_hands_over_the_rightmost_untrusted_hop() {
        let trusted = cidrs(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let peer = ip("10.0.0.2");
        // The client put a fake address first; the proxies appended the real one.
        let headers = xff(&["1.1.1.1, 203.0.113.9, 10.0.0.7"]);
        assert_eq!(client_ip(peer, &headers, &trusted), ip("203.0.113.9"));
        // Across header lines, with ports and IPv6.
        let headers = xff(&["1.1.1.1", "[2001:db8:1::5]:443 , 2001:db8:ffff::1"]);
        assert_eq!(client_ip(peer, &headers, &trusted), ip("2001:db8:1::5"));
        let headers = xff(&["198.51.100.4:5678"]);
        assert_eq!(client_ip(peer, &headers, &trusted), ip("198.51.100.4"));
    }

    #[test]
    fn without_an_untrusted_hop_the_client_is_the_last_trusted_one() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
        let headers = xff(&["10.0.0.5, 10.0.0.7"]);
        assert_eq!(client_ip(peer, &headers, &trusted), ip("10.0.0.5"));
        // Garbage stops the walk: nothing left of it is believed.
        let headers = xff(&["203.0.113.9, garbage, 10.0.0.7"]);
        assert_eq!(client_ip(peer, &headers, &trusted), ip("10.0.0.7"));
        let headers = xff(&["203.0.113.9, "]);
        assert_eq!(client_ip(peer, &headers, &trusted), peer);
    }
}
