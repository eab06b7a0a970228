//! ACME state the nodes of a fleet share, so every node serves every tunnel's
//! certificate and answers every challenge, whichever node ordered it: the account,
//! the issued certificates, the answers to challenges being validated, and which
//! node is ordering a name now.
//!
//! A single server has none of this: `DATA_DIR/acme` and memory are enough. In a
//! fleet the `netbore-fleet` crate implements [`AcmeShare`] over Redis. Every call
//! blocks on the network, so the Edge makes them from tokio's blocking pool; a call
//! that fails reads as "nothing there" (the node then orders, or answers, as it would
//! alone), never as an error a viewer sees.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Inner, certified, lock, tls_alpn_certificate};

/// A challenge a node may be asked to answer for an order another node placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedChallenge {
    /// HTTP-01: the key authorization, by token.
    Http01,
    /// TLS-ALPN-01: the SHA-256 digest of the key authorization (hex), by name.
    TlsAlpn01,
}

impl SharedChallenge {
    /// The kind as it appears in the shared store's keys.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedChallenge::Http01 => "http01",
            SharedChallenge::TlsAlpn01 => "alpn",
        }
    }
}

/// How long a shared challenge answer stays: longer than any validation takes.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(600);

/// How long a node's claim to be ordering a name lasts: longer than an order takes
/// (up to a minute waiting for the rate limit, then two polls of up to two minutes
/// each), so a node that died while ordering frees the name for another later.
pub const ORDER_CLAIM_TTL: Duration = Duration::from_secs(600);

/// ACME state shared by a fleet's nodes (see the module documentation).
pub trait AcmeShare: Send + Sync + fmt::Debug + 'static {
    /// The stored account (JSON: the directory URL and the credentials).
    fn account(&self) -> Option<String>;

    /// Stores the account.
    fn put_account(&self, json: &str);

    /// The certificate chain and private key (PEM) stored for `name`, when the ACME
    /// `directory` issued them. A lookup a viewer may cause: skipped (`None`) while
    /// another is under way.
    fn certificate(&self, name: &str, directory: &str) -> Option<(String, String)>;

    /// Stores `name`'s certificate chain and private key (PEM) from `directory`,
    /// until `not_after` (Unix seconds), when it is no use to anyone.
    fn put_certificate(
        &self,
        name: &str,
        directory: &str,
        chain_pem: &str,
        key_pem: &str,
        not_after: u64,
    );

    /// Whether an order for `name` failed at any node lately.
    fn failed_recently(&self, name: &str) -> bool;

    /// Records that an order for `name` failed, for the fleet's other nodes.
    fn put_failed(&self, name: &str);

    /// Stores the answer to a challenge of `kind` (by token for HTTP-01, by name for
    /// TLS-ALPN-01) for [`CHALLENGE_TTL`].
    fn put_challenge(&self, kind: SharedChallenge, id: &str, answer: &str);

    /// The answer to a challenge of `kind`, while one is being validated. A lookup a
    /// viewer may cause: skipped (`None`) while another is under way.
    fn challenge(&self, kind: SharedChallenge, id: &str) -> Option<String>;

    /// Claims the ordering of `name` for [`ORDER_CLAIM_TTL`]: `false` when another
    /// node is ordering it (wait for its certificate instead).
    fn claim_order(&self, name: &str) -> bool;

    /// Gives up this node's claim on ordering `name` (its order ended).
    fn end_order(&self, name: &str);
}

/// How often a node waiting for another node's order looks for its certificate.
const POLL: Duration = Duration::from_millis(500);

/// Most TLS-ALPN-01 certificates made from other nodes' answers kept at once.
const MAX_SHARED_ALPN: usize = 256;

/// How often, at most, viewers of one name make the fleet be asked for its
/// certificate, or for its TLS-ALPN-01 answer.
const ASK_EVERY: Duration = Duration::from_secs(5);

/// Most names remembered as asked about; past it the memory starts afresh.
const MAX_ASKED: usize = 4096;

/// Lowercase hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Inner {
    /// Runs `call` on the shared state from the blocking pool, when there is one.
    async fn ask<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn AcmeShare) -> T + Send + 'static,
    ) -> Option<T> {
        let share = self.share.get()?.clone();
        tokio::task::spawn_blocking(move || call(share.as_ref()))
            .await
            .ok()
    }

    /// Writes to the shared state, when there is one.
    pub(super) async fn publish(&self, call: impl FnOnce(&dyn AcmeShare) + Send + 'static) {
        self.ask(call).await;
    }

    /// The account another node stored.
    pub(super) async fn shared_account(&self) -> Option<String> {
        self.ask(|share| share.account()).await.flatten()
    }

    /// Takes `name`'s certificate from the fleet when another node issued or renewed
    /// one valid now and newer than the one held here: `true` when it did.
    pub(super) async fn load_shared(&self, name: &str) -> bool {
        let (owned, directory) = (name.to_string(), self.config.directory.clone());
        let Some(Some((chain, key))) = self
            .ask(move |share| share.certificate(&owned, &directory))
            .await
        else {
            return false;
        };
        let held = match certified(&chain, &key, &self.provider) {
            Ok(held) if held.not_after > SystemTime::now() => held,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(%name, error = %e, "the fleet's stored ACME certificate is not usable; ordering one here");
                return false;
            }
        };
        let mut certs = lock(&self.certs);
        if certs
            .get(name)
            .is_some_and(|h| h.not_after >= held.not_after)
        {
            return false;
        }
        held.count_expiry(name);
        certs.insert(name.to_string(), held);
        tracing::info!(%name, "ACME certificate taken from the fleet");
        true
    }

    /// Whether a viewer's handshake for `name` may ask the fleet for its certificate
    /// now (a fleet, and not asked within [`ASK_EVERY`]), recording that it did.
    pub(super) fn may_ask_fleet(&self, name: &str) -> bool {
        if self.share.get().is_none() {
            return false;
        }
        let mut asked = lock(&self.asked_fleet);
        if asked.get(name).is_some_and(|at| at.elapsed() < ASK_EVERY) {
            return false;
        }
        if asked.len() >= MAX_ASKED {
            asked.clear();
        }
        asked.insert(name.to_string(), Instant::now());
        true
    }

    /// Whether an order for `name` failed at another node lately (this node then
    /// waits as if it had failed here).
    pub(super) async fn failed_elsewhere(&self, name: &str) -> bool {
        let owned = name.to_string();
        let failed = self
            .ask(move |share| share.failed_recently(&owned))
            .await
            .unwrap_or(false);
        if failed {
            lock(&self.failed).insert(name.to_string(), Instant::now());
        }
        failed
    }

    /// Whether this node may order `name` now: always alone; in a fleet, when no
    /// other node is ordering it.
    pub(super) async fn claim_order(&self, name: &str) -> bool {
        let owned = name.to_string();
        self.ask(move |share| share.claim_order(&owned))
            .await
            .unwrap_or(true)
    }

    /// Ends this node's claim on ordering `name`.
    pub(super) async fn end_order(&self, name: &str) {
        let owned = name.to_string();
        self.publish(move |share| share.end_order(&owned)).await;
    }

    /// Waits, at most `--acme-wait`, for the certificate another node is ordering.
    pub(super) async fn wait_for_shared(&self, name: &str) {
        tracing::info!(%name, "another node of the fleet is ordering this ACME certificate; waiting for it");
        let until = tokio::time::Instant::now() + self.config.wait;
        while tokio::time::Instant::now() < until {
            if self.load_shared(name).await {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Makes the TLS-ALPN-01 certificate of `name` from the answer another node
    /// shared, when this node has none of its own: the directory may validate at any
    /// node.
    pub(super) async fn prepare_shared_alpn(&self, name: &str) {
        if self.share.get().is_none() || lock(&self.alpn_challenges).contains_key(name) {
            return;
        }
        // One made a moment ago serves every handshake of this validation, and a
        // name is asked about at most every few seconds, however many hellos come:
        // a hello arriving while another asks waits (a second at most) for its answer.
        let fresh = || {
            lock(&self.shared_alpn)
                .get(name)
                .is_some_and(|(at, _)| at.elapsed() < ASK_EVERY)
        };
        if fresh() {
            return;
        }
        if !self.may_ask_fleet(&format!("alpn:{name}")) {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if fresh() {
                    return;
                }
            }
            return;
        }
        let owned = name.to_string();
        let Some(Some(answer)) = self
            .ask(move |share| share.challenge(SharedChallenge::TlsAlpn01, &owned))
            .await
        else {
            return;
        };
        let Some(digest) = from_hex(&answer).filter(|d| d.len() == 32) else {
            return;
        };
        let key = match tls_alpn_certificate(name, &digest, &self.provider) {
            Ok(key) => Arc::new(key),
            Err(e) => {
                tracing::warn!(%name, error = %e, "could not make the TLS-ALPN-01 certificate of another node's order");
                return;
            }
        };
        let mut made = lock(&self.shared_alpn);
        made.retain(|_, (at, _)| at.elapsed() < CHALLENGE_TTL);
        if made.len() >= MAX_SHARED_ALPN
            && let Some(oldest) = made
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(n, _)| n.clone())
        {
            made.remove(&oldest);
        }
        made.insert(name.to_string(), (Instant::now(), key));
    }
}
