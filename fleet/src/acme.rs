//! The ACME state a fleet's nodes share through Redis ([`AcmeShare`]): one account,
//! every certificate, the answers to challenges being validated, and which node is
//! ordering a name (`docs/protocols/fleet.md`, "ACME").

use netbore_edge::acme::shared::{CHALLENGE_TTL, ORDER_CLAIM_TTL};
use netbore_edge::acme::{AcmeShare, SharedChallenge};
use redis::Commands;

use crate::{Fleet, keys};

impl Fleet {
    /// Runs `call`, logging a failure (which then reads as "nothing there").
    fn acme<T>(
        &self,
        what: &str,
        call: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        match self.calls.run(call) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "could not {what} in the fleet's Redis; this node goes on alone for it");
                None
            }
        }
    }
}

impl AcmeShare for Fleet {
    fn account(&self) -> Option<String> {
        self.acme("read the ACME account", |conn| {
            conn.get(keys::acme_account())
        })
        .flatten()
    }

    fn put_account(&self, json: &str) {
        self.acme("store the ACME account", |conn| {
            conn.set::<_, _, ()>(keys::acme_account(), json)
        });
    }

    fn certificate(&self, name: &str) -> Option<(String, String)> {
        let (chain, key): (Option<String>, Option<String>) =
            self.acme("read an ACME certificate", |conn| {
                redis::cmd("HMGET")
                    .arg(keys::acme_certificate(name))
                    .arg("chain")
                    .arg("key")
                    .query(conn)
            })?;
        chain.zip(key)
    }

    fn put_certificate(&self, name: &str, chain_pem: &str, key_pem: &str) {
        self.acme("store an ACME certificate", |conn| {
            conn.hset_multiple::<_, _, _, ()>(
                keys::acme_certificate(name),
                &[("chain", chain_pem), ("key", key_pem)],
            )
        });
    }

    fn put_challenge(&self, kind: SharedChallenge, id: &str, answer: &str) {
        self.acme("share an ACME challenge", |conn| {
            conn.set_ex::<_, _, ()>(
                keys::acme_challenge(kind.as_str(), id),
                answer,
                CHALLENGE_TTL.as_secs(),
            )
        });
    }

    fn challenge(&self, kind: SharedChallenge, id: &str) -> Option<String> {
        self.acme("read an ACME challenge", |conn| {
            conn.get(keys::acme_challenge(kind.as_str(), id))
        })
        .flatten()
    }

    fn claim_order(&self, name: &str) -> bool {
        let node = self.shared.node.id.clone();
        // When Redis does not answer, this node orders alone rather than not at all.
        self.acme("claim an ACME order", |conn| {
            redis::cmd("SET")
                .arg(keys::acme_order(name))
                .arg(&node)
                .arg("NX")
                .arg("PX")
                .arg(ORDER_CLAIM_TTL.as_millis() as u64)
                .query::<Option<String>>(conn)
        })
        .is_none_or(|set| set.is_some())
    }

    fn end_order(&self, name: &str) {
        let node = self.shared.node.id.clone();
        self.acme("end an ACME order", |conn| {
            keys::UNRESERVE
                .key(keys::acme_order(name))
                .arg(&node)
                .invoke::<u8>(conn)
        });
    }
}
