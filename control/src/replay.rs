//! The single-use record of ephemeral token ids (`jti`) an Edge has accepted, so a
//! token can open a tunnel once only.
//!
//! Bounded three ways: ids leave when their token expires (in expiry order, never by
//! scanning the whole record), one subject (an API key or an anonymous address) holds
//! at most [`MAX_PER_SUBJECT`] live ids, and the whole record at most [`MAX_TOTAL`].
//! Claims are all or nothing: a hello whose third token was already used records none
//! of its tokens, and [`ReplayCache::release`] gives back ids whose tunnels could not
//! be claimed after all, so a failed claim burns no token.

use std::collections::{BTreeSet, HashMap};

use crate::tokens::Claims;

/// Live token ids one subject may hold (anonymous subjects grouped by IPv6 /48).
/// Tokens live about a minute and the control API's rate limit (20/s, burst 40)
/// mints about 1,240 per client in that time; the cap stops one key holder, or one
/// network's worth of anonymous addresses, from filling the record every tenant
/// shares.
pub const MAX_PER_SUBJECT: usize = 2048;

/// Live token ids in all. Stops a fleet of subjects from growing the record without
/// bound (about 150 bytes an id).
pub const MAX_TOTAL: usize = 1_000_000;

/// Why a set of tokens could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// One of the ids was claimed before (or appears twice in the set).
    Reused,
    /// The subject or the whole record holds as many live ids as it may.
    Full,
}

/// The record of claimed token ids.
#[derive(Debug)]
pub struct ReplayCache {
    leeway_secs: u64,
    max_per_subject: usize,
    max_total: usize,
    /// Claimed id → (subject, expiry).
    live: HashMap<String, (String, u64)>,
    /// (expiry, id) in expiry order: what [`Self::expire`] pops from the front.
    by_expiry: BTreeSet<(u64, String)>,
    /// Live ids per subject.
    per_subject: HashMap<String, usize>,
}

impl ReplayCache {
    /// An empty record; an id leaves it `leeway_secs` after its token's expiry.
    pub fn new(leeway_secs: u64) -> Self {
        Self::with_limits(leeway_secs, MAX_PER_SUBJECT, MAX_TOTAL)
    }

    /// An empty record with other bounds (tests).
    pub fn with_limits(leeway_secs: u64, max_per_subject: usize, max_total: usize) -> Self {
        ReplayCache {
            leeway_secs,
            max_per_subject,
            max_total,
            live: HashMap::new(),
            by_expiry: BTreeSet::new(),
            per_subject: HashMap::new(),
        }
    }

    /// Live ids recorded.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no id is recorded.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Forgets the ids whose tokens expired before `now` (seconds since the epoch),
    /// earliest first; costs O(log n) per id removed.
    fn expire(&mut self, now: u64) {
        while let Some((exp, _)) = self.by_expiry.first()
            && exp.saturating_add(self.leeway_secs) < now
        {
            let Some((_, jti)) = self.by_expiry.pop_first() else {
                break;
            };
            self.forget(&jti);
        }
    }

    fn forget(&mut self, jti: &str) {
        let Some((subject, exp)) = self.live.remove(jti) else {
            return;
        };
        self.by_expiry.remove(&(exp, jti.to_string()));
        if let Some(n) = self.per_subject.get_mut(&subject) {
            *n -= 1;
            if *n == 0 {
                self.per_subject.remove(&subject);
            }
        }
    }

    /// Records every id of `claims` as used, or none of them.
    pub fn claim(&mut self, claims: &[&Claims], now: u64) -> Result<(), ReplayError> {
        self.expire(now);
        let mut wanted: HashMap<String, usize> = HashMap::new();
        for (i, c) in claims.iter().enumerate() {
            if self.live.contains_key(&c.jti) || claims[..i].iter().any(|p| p.jti == c.jti) {
                return Err(ReplayError::Reused);
            }
            *wanted.entry(subject_group(&c.sub)).or_default() += 1;
        }
        if self.live.len() + claims.len() > self.max_total {
            return Err(ReplayError::Full);
        }
        for (subject, n) in &wanted {
            let held = self.per_subject.get(subject).copied().unwrap_or(0);
            if held + n > self.max_per_subject {
                return Err(ReplayError::Full);
            }
        }
        for c in claims {
            let group = subject_group(&c.sub);
            self.live.insert(c.jti.clone(), (group.clone(), c.exp));
            self.by_expiry.insert((c.exp, c.jti.clone()));
            *self.per_subject.entry(group).or_default() += 1;
        }
        Ok(())
    }

    /// Gives back ids recorded by [`Self::claim`] whose tunnels were not claimed
    /// after all: the tokens may be presented again until they expire.
    pub fn release(&mut self, claims: &[&Claims]) {
        for c in claims {
            self.forget(&c.jti);
        }
    }
}

/// The group a subject's ids count against: an API key alone, an anonymous IPv4
/// address alone, anonymous IPv6 addresses by their /48 (one site's worth of /64s).
fn subject_group(subject: &str) -> String {
    let anonymous = subject.strip_prefix(crate::auth::ANONYMOUS_PREFIX);
    match anonymous.and_then(|ip| ip.parse::<std::net::Ipv6Addr>().ok()) {
        Some(v6) => {
            let mut seg = v6.segments();
            seg[3..].fill(0);
            format!(
                "{}{}/48",
                crate::auth::ANONYMOUS_PREFIX,
                std::net::Ipv6Addr::from(seg)
            )
        }
        None => subject.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, jti: &str, exp: u64) -> Claims {
        Claims {
            iss: String::new(),
            aud: String::new(),
            sub: sub.into(),
            exp,
            iat: 0,
            jti: jti.into(),
            tid: String::new(),
            proto: String::new(),
            port: None,
            name: None,
            minted_elsewhere: false,
        }
    }

    #[test]
    fn a_set_is_claimed_whole_or_not_at_all() {
        let mut cache = ReplayCache::new(2);
        let (a, b, c) = (
            claims("s", "a", 100),
            claims("s", "b", 100),
            claims("s", "c", 100),
        );
        cache.claim(&[&a], 10).unwrap();
        assert_eq!(cache.claim(&[&b, &a, &c], 10), Err(ReplayError::Reused));
        assert_eq!(cache.len(), 1, "b and c were not burned");
        cache.claim(&[&b, &c], 10).unwrap();
        assert_eq!(cache.claim(&[&b], 10), Err(ReplayError::Reused));
        let (d, e) = (claims("s", "d", 100), claims("s", "d", 100));
        assert_eq!(cache.claim(&[&d, &e], 10), Err(ReplayError::Reused));
        cache.release(&[&b, &c]);
        cache.claim(&[&b, &c], 10).unwrap();
    }

    #[test]
    fn ids_leave_when_their_tokens_expire() {
        let mut cache = ReplayCache::new(2);
        for i in 0..100u64 {
            cache
                .claim(&[&claims("s", &format!("t{i}"), 100 + i)], 50)
                .unwrap();
        }
        cache.claim(&[&claims("s", "x", 1000)], 150).unwrap();
        // Expired at 147 + leeway: t0..=t47 gone (exp + 2 < 150 means exp <= 147).
        assert_eq!(cache.len(), 100 - 48 + 1);
        cache.claim(&[&claims("s", "y", 2000)], 1003).unwrap();
        assert_eq!(cache.len(), 1, "only y is live");
        assert_eq!(cache.per_subject.get("s"), Some(&1));
        assert_eq!(cache.by_expiry.len(), 1);
    }

    #[test]
    fn anonymous_ipv6_subjects_count_by_their_48() {
        let mut cache = ReplayCache::with_limits(2, 2, 100);
        cache
            .claim(&[&claims("anonymous:2001:db8:1:1::", "a", 100)], 10)
            .unwrap();
        cache
            .claim(&[&claims("anonymous:2001:db8:1:2::", "b", 100)], 10)
            .unwrap();
        assert_eq!(
            cache.claim(&[&claims("anonymous:2001:db8:1:3::", "c", 100)], 10),
            Err(ReplayError::Full),
            "three /64s of one /48 are one subject"
        );
        cache
            .claim(&[&claims("anonymous:2001:db8:2:1::", "d", 100)], 10)
            .unwrap();
        cache
            .claim(&[&claims("anonymous:192.0.2.1", "e", 100)], 10)
            .unwrap();
        cache
            .claim(&[&claims("anonymous:192.0.2.2", "f", 100)], 10)
            .unwrap();
    }

    #[test]
    fn one_subject_cannot_fill_the_record_for_others() {
        let mut cache = ReplayCache::with_limits(2, 3, 5);
        for i in 0..3 {
            cache
                .claim(&[&claims("greedy", &format!("g{i}"), 100)], 10)
                .unwrap();
        }
        assert_eq!(
            cache.claim(&[&claims("greedy", "g3", 100)], 10),
            Err(ReplayError::Full)
        );
        cache.claim(&[&claims("other", "o0", 100)], 10).unwrap();
        cache.claim(&[&claims("third", "t0", 100)], 10).unwrap();
        assert_eq!(
            cache.claim(&[&claims("fourth", "f0", 100)], 10),
            Err(ReplayError::Full),
            "the total bound holds"
        );
        // Once the greedy subject's tokens expire, it may claim again.
        cache.claim(&[&claims("greedy", "g4", 300)], 200).unwrap();
    }
}
