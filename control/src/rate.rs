//! Per-client token buckets for the control API.
//!
//! Each client (an IPv4 address, or an IPv6 /64, which one host usually owns whole)
//! gets a bucket of `burst` tokens that refills at `rate` a second; a request takes
//! one. The table is bounded: buckets that have refilled to full are the same as no
//! bucket and are dropped when the table fills; if every bucket is still in use, new
//! clients wait (they are told to retry) rather than evicting active ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Settings of the API rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// Requests a second each client may sustain. Stops one client from keeping the
    /// control plane (and its store) busy for everyone else.
    pub rate: f64,
    /// Requests a client may send at once after being idle.
    pub burst: f64,
    /// Most clients tracked at once. Bounds the limiter's memory under a flood from
    /// many addresses.
    pub max_clients: usize,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            rate: 20.0,
            burst: 40.0,
            max_clients: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The per-client buckets.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateConfig,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// The address a client is known by: an IPv4 address (also when it arrives mapped into
/// IPv6), or the /64 of an IPv6 address, which one host usually owns whole.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

/// The fleet's own count of each client's requests, beside each node's
/// [`RateLimiter`]: a client that spreads its requests over the nodes gets the rate
/// once, not once per node.
pub trait SharedRate: Send + Sync + 'static {
    /// Takes one request of `client` (a [`client_key`]) from its bucket of `rate`
    /// and `burst` in the fleet, or says how long until one is available. Blocking
    /// (it asks the fleet's store). `Ok` when the store cannot answer: each node's
    /// own bucket still holds then.
    fn take(&self, client: IpAddr, rate: f64, burst: f64) -> Result<(), Duration>;
}

impl RateLimiter {
    /// The limiter's settings (raised as [`Self::new`] says).
    pub fn config(&self) -> RateConfig {
        self.config
    }

    /// A limiter with `config` (a rate or burst below one is raised to one).
    pub fn new(mut config: RateConfig) -> Self {
        config.rate = config.rate.max(1.0);
        config.burst = config.burst.max(1.0);
        config.max_clients = config.max_clients.max(1);
        RateLimiter {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip` at `now`, or says how long until one is available.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let RateConfig {
            rate,
            burst,
            max_clients,
        } = self.config;
        // A panic elsewhere cannot leave a bucket half-updated; the table stays usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let key = client_key(ip);
        if !buckets.contains_key(&key) && buckets.len() >= max_clients {
            let full_after = Duration::from_secs_f64(burst / rate);
            buckets.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
            if buckets.len() >= max_clients {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(RateConfig {
            rate: 2.0,
            burst: 3.0,
            max_clients: 10,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip("10.0.0.1"), t0).is_ok());
        }
        let wait = limiter.check(ip("10.0.0.1"), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another client has its own bucket.
        assert!(limiter.check(ip("10.0.0.2"), t0).is_ok());
        assert!(
            limiter
                .check(ip("10.0.0.1"), t0 + Duration::from_millis(500))
                .is_ok()
        );
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let limiter = RateLimiter::new(RateConfig {
            rate: 1.0,
            burst: 1.0,
            max_clients: 10,
        });
        let t0 = Instant::now();
        assert!(limiter.check(ip("2001:db8::1"), t0).is_ok());
        assert!(limiter.check(ip("2001:db8::2"), t0).is_err());
        assert!(limiter.check(ip("2001:db8:0:1::1"), t0).is_ok());
    }

    #[test]
    fn mapped_ipv4_is_plain_ipv4() {
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(client_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn table_stays_bounded_and_drops_idle_buckets() {
        let limiter = RateLimiter::new(RateConfig {
            rate: 10.0,
            burst: 10.0,
            max_clients: 2,
        });
        let t0 = Instant::now();
        assert!(limiter.check(ip("10.0.0.1"), t0).is_ok());
        assert!(limiter.check(ip("10.0.0.2"), t0).is_ok());
        // Both buckets are in use: a third client is told to retry.
        assert!(limiter.check(ip("10.0.0.3"), t0).is_err());
        assert_eq!(limiter.tracked(), 2);
        // A second later both have refilled and make room.
        let t1 = t0 + Duration::from_secs(1);
        assert!(limiter.check(ip("10.0.0.3"), t1).is_ok());
        assert!(limiter.tracked() <= 2);
    }
}
