//! The ACME state a fleet's nodes share through Redis ([`AcmeShare`]): one account,
//! every certificate, the answers to challenges being validated, recent failures, and
//! which node is ordering a name (`docs/protocols/fleet.md`, "ACME").

use netbore_edge::acme::RETRY_AFTER_FAILURE;
use netbore_edge::acme::shared::{CHALLENGE_TTL, ORDER_CLAIM_TTL};
use netbore_edge::acme::{AcmeShare, SharedChallenge};
use redis::Commands;

use crate::{Fleet, keys};

impl Fleet {
    /// Runs a write or claim, waiting its turn; a failure reads as "not done".
    fn acme<T>(
        &self,
        what: &str,
        call: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        match self.acme_calls.run(call) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "could not {what} in the fleet's Redis; this node goes on alone for it");
                None
            }
        }
    }

    /// Runs a lookup a viewer may have caused, only when no other ACME call is under
    /// way (see [`crate::calls::Calls::try_run`]); "not found" otherwise.
    fn acme_lookup<T>(
        &self,
        call: impl Fn(&mut redis::Connection) -> redis::RedisResult<Option<T>>,
    ) -> Option<T> {
        self.acme_calls
            .try_run(call)
            .inspect_err(
                |e| tracing::debug!(error = %e, "an ACME lookup in the fleet's Redis was skipped"),
            )
            .ok()
            .flatten()
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

    fn certificate(&self, name: &str, directory: &str) -> Option<(String, String)> {
        type Stored = (Option<String>, Option<String>, Option<String>);
        let (chain, key, from): Stored = self.acme_lookup(|conn| {
            redis::cmd("HMGET")
                .arg(keys::acme_certificate(name))
                .arg("chain")
                .arg("key")
                .arg("directory")
                .query(conn)
                .map(Some)
        })?;
        // A certificate another ACME directory issued (a node pointed elsewhere) is
        // not this fleet's to serve.
        (from.as_deref() == Some(directory)).then_some(())?;
        chain.zip(key)
    }

    fn put_certificate(
        &self,
        name: &str,
        directory: &str,
        chain_pem: &str,
        key_pem: &str,
        not_after: u64,
    ) {
        let key = keys::acme_certificate(name);
        self.acme("store an ACME certificate", |conn| {
            redis::pipe()
                .atomic()
                .hset_multiple(
                    &key,
                    &[
                        ("chain", chain_pem),
                        ("key", key_pem),
                        ("directory", directory),
                    ],
                )
                .ignore()
                .expire_at(&key, not_after as i64)
                .ignore()
                .query::<()>(conn)
        });
    }

    fn failed_recently(&self, name: &str) -> bool {
        self.acme_lookup(|conn| conn.get::<_, Option<String>>(keys::acme_failed(name)))
            .is_some()
    }

    fn put_failed(&self, name: &str) {
        self.acme("share an ACME failure", |conn| {
            conn.set_ex::<_, _, ()>(keys::acme_failed(name), "1", RETRY_AFTER_FAILURE.as_secs())
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
        self.acme_lookup(|conn| conn.get(keys::acme_challenge(kind.as_str(), id)))
    }

    fn claim_order(&self, name: &str) -> bool {
        let node = self.shared.node.id.clone();
        // A retry whose first try's answer was lost finds its own claim: won. When
        // Redis does not answer, this node orders alone rather than not at all.
        self.acme("claim an ACME order", |conn| {
            let set: Option<String> = redis::cmd("SET")
                .arg(keys::acme_order(name))
                .arg(&node)
                .arg("NX")
                .arg("PX")
                .arg(ORDER_CLAIM_TTL.as_millis() as u64)
                .query(conn)?;
            if set.is_some() {
                return Ok(true);
            }
            let holder: Option<String> = conn.get(keys::acme_order(name))?;
            Ok(holder.as_deref() == Some(node.as_str()))
        })
        .unwrap_or(true)
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
