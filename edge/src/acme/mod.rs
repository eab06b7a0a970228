//! ACME certificates for HTTPS ingress: one certificate per Edge name, ordered from an
//! RFC 8555 directory (Let's Encrypt, or any other) the first time a viewer asks for
//! the name, proven with the HTTP-01 challenge the Edge's plain HTTP ingress answers
//! ([`Http01Challenges`]) or the TLS-ALPN-01 challenge (RFC 8737) its HTTPS ingress
//! answers, stored in `DATA_DIR/acme/` and renewed in the background at two thirds of
//! its lifetime.
//!
//! What it does not do: DNS-01 (no wildcard certificates), revocation.
//! Orders per name are deduplicated (one order at a time for a name, every waiting
//! viewer shares it) and rate limited across names; a failed order is logged once with
//! its name and the directory's error, and the name is not ordered again for a while.
//!
//! Only names an agent serves now are ordered or renewed ([`TunnelLookup`]): a name
//! that is pending, offline or gone costs no order, and its certificate lapses. Each
//! tunnel owner (API key, or anonymous address) has an hourly order budget, so one
//! owner cycling through names cannot spend the directory's limits for everyone.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::certs::CertSource;

mod budget;
mod certificate;
pub mod shared;
mod tunnels;
mod validity;
use budget::OwnerBudget;
use certificate::{Held, certified, load_stored, tls_alpn_certificate};
pub use shared::{AcmeShare, SharedChallenge};
pub use tunnels::{RegistryLookup, TunnelLookup};

/// The path under which HTTP-01 challenges are fetched (RFC 8555, section 8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Default of `--acme-orders-per-minute`: orders started in any minute, all names
/// together. Keeps a burst of new names (or a viewer trying many names) under the
/// directory's own limits (Let's Encrypt allows 300 new orders in 3 hours).
pub const DEFAULT_ORDERS_PER_MINUTE: u32 = 10;

/// Default of `--acme-wait`: how long a viewer's first handshake for a name waits
/// for its certificate before the handshake is given up.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// Default of `--acme-orders-per-owner-per-hour`: orders started in any hour for the
/// names of one tunnel owner (an API key, or an anonymous client's address). Stops one
/// owner from spending the directory's limits (Let's Encrypt: 50 certificates per
/// registered domain a week) by creating tunnel after tunnel under new names.
pub const DEFAULT_ORDERS_PER_OWNER_PER_HOUR: u32 = 5;

/// After a failed order, how long before the name is ordered again. Stops a name the
/// directory refuses from costing an order on every viewer connection.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

/// Fraction of a certificate's lifetime after which it is renewed.
pub const DEFAULT_RENEW_FRACTION: f64 = 2.0 / 3.0;

/// How often the background check looks for certificates due for renewal.
pub const DEFAULT_RENEW_CHECK: Duration = Duration::from_secs(3600);

/// The challenge the Edge answers to prove it holds a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Challenge {
    /// HTTP-01: the directory fetches a token from the plain HTTP port (80).
    #[default]
    Http01,
    /// TLS-ALPN-01: the directory makes a TLS handshake with ALPN `acme-tls/1` on
    /// the HTTPS port (443).
    TlsAlpn01,
}

/// Settings of the ACME source.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The directory URL (`--acme-directory`).
    pub directory: String,
    /// The account's contact address (`--acme-email`), without `mailto:`.
    pub email: String,
    /// A PEM CA certificate the directory's HTTPS is checked against instead of the
    /// system roots (`--acme-ca`, for test directories such as pebble).
    pub directory_ca: Option<PathBuf>,
    /// Where the account and certificates are stored (`DATA_DIR/acme`).
    pub dir: PathBuf,
    /// The challenge answered (`--acme-challenge`).
    pub challenge: Challenge,
    /// See [`DEFAULT_WAIT`].
    pub wait: Duration,
    /// See [`DEFAULT_ORDERS_PER_MINUTE`].
    pub orders_per_minute: u32,
    /// See [`DEFAULT_ORDERS_PER_OWNER_PER_HOUR`].
    pub orders_per_owner_per_hour: u32,
    /// See [`DEFAULT_RENEW_FRACTION`].
    pub renew_fraction: f64,
    /// See [`DEFAULT_RENEW_CHECK`].
    pub renew_check: Duration,
}

impl AcmeConfig {
    /// Settings with the defaults for `directory`, `email` and `data_dir`.
    pub fn new(directory: &str, email: &str, data_dir: &Path) -> Self {
        AcmeConfig {
            directory: directory.to_string(),
            email: email.to_string(),
            directory_ca: None,
            dir: data_dir.join("acme"),
            challenge: Challenge::Http01,
            wait: DEFAULT_WAIT,
            orders_per_minute: DEFAULT_ORDERS_PER_MINUTE,
            orders_per_owner_per_hour: DEFAULT_ORDERS_PER_OWNER_PER_HOUR,
            renew_fraction: DEFAULT_RENEW_FRACTION,
            renew_check: DEFAULT_RENEW_CHECK,
        }
    }
}

/// Why an order or the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// The directory answered with an error, or could not be reached.
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    /// The directory refused the name's authorization: the problem it reported.
    #[error("the authorization failed: {0}")]
    Refused(String),
    /// The directory offered no challenge of the kind the Edge answers.
    #[error("the directory offered no {0:?} challenge for the name; pass another --acme-challenge")]
    NoChallenge(Challenge),
    /// The certificate signing request could not be made.
    #[error("could not make the certificate request: {0}")]
    Csr(#[from] rcgen::Error),
    /// The certificate the directory returned could not be used.
    #[error("the issued certificate cannot be used: {0}")]
    Certificate(String),
    /// The account or a certificate could not be read or written.
    #[error("{path}: {cause}")]
    Store {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
}

/// Tokens of the HTTP-01 challenges being validated, and their key authorizations.
/// Plain HTTP ingress answers `GET /.well-known/acme-challenge/TOKEN` from here
/// before routing.
#[derive(Debug, Default)]
pub struct Http01Challenges {
    tokens: Mutex<HashMap<String, String>>,
    /// In a fleet, the challenges of orders other nodes placed.
    share: OnceLock<Arc<dyn AcmeShare>>,
    /// The second and the count of fleet lookups made in it (at most
    /// [`SHARED_LOOKUPS_PER_SECOND`]: anyone may fetch a token).
    lookups: Mutex<(u64, u32)>,
}

/// Most fleet lookups of HTTP-01 tokens a node makes in a second; a directory
/// validating fetches a handful.
const SHARED_LOOKUPS_PER_SECOND: u32 = 50;

impl Http01Challenges {
    /// The body to answer for `token`, if a challenge with it is pending here.
    pub fn respond(&self, token: &str) -> Option<String> {
        self.lock().get(token).cloned()
    }

    /// The body to answer for `token`, if a challenge with it is pending here or, in
    /// a fleet, at another node.
    pub async fn answer(&self, token: &str) -> Option<String> {
        if let Some(body) = self.respond(token) {
            return Some(body);
        }
        // Tokens are base64url (RFC 8555: at least 128 bits); anything else is not
        // worth asking the fleet about.
        let plausible = (16..=128).contains(&token.len())
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let share = self.share.get()?.clone();
        if !plausible || !self.may_look_up() {
            return None;
        }
        let token = token.to_string();
        tokio::task::spawn_blocking(move || share.challenge(SharedChallenge::Http01, &token))
            .await
            .ok()
            .flatten()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one of this second's fleet lookups, if any is left.
    fn may_look_up(&self) -> bool {
        let now = netbore_control::tokens::unix_now();
        let mut lookups = lock(&self.lookups);
        if lookups.0 != now {
            *lookups = (now, 0);
        }
        lookups.1 = lookups.1.saturating_add(1);
        lookups.1 <= SHARED_LOOKUPS_PER_SECOND
    }
}

/// Removes a challenge token once its order is over, however it ended.
struct TokenGuard<'a> {
    challenges: &'a Http01Challenges,
    tokens: Vec<String>,
}

impl Drop for TokenGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.challenges.lock();
        for t in &self.tokens {
            map.remove(t);
        }
    }
}

/// Removes a name's TLS-ALPN-01 certificate once its order is over.
struct AlpnGuard<'a> {
    certs: &'a Mutex<HashMap<String, Arc<CertifiedKey>>>,
    names: Vec<String>,
}

impl Drop for AlpnGuard<'_> {
    fn drop(&mut self) {
        let mut map = lock(self.certs);
        for n in &self.names {
            map.remove(n);
        }
    }
}

/// `account.json`: the account's credentials and the directory they belong to.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Certificates from an ACME directory (see the module documentation).
#[derive(Debug, Clone)]
pub struct AcmeSource {
    inner: Arc<Inner>,
}

struct Inner {
    config: AcmeConfig,
    provider: Arc<CryptoProvider>,
    challenges: Arc<Http01Challenges>,
    /// TLS-ALPN-01 certificates being validated, by name.
    alpn_challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    certs: Mutex<HashMap<String, Held>>,
    /// Orders under way, by name; the receiver turns `true` when the order ends.
    inflight: Mutex<HashMap<String, watch::Receiver<bool>>>,
    /// When each name's last order failed.
    failed: Mutex<HashMap<String, Instant>>,
    account: tokio::sync::OnceCell<Account>,
    /// Start times of the orders of the last minute (tokio's clock, so tests can
    /// pause it).
    orders: tokio::sync::Mutex<VecDeque<tokio::time::Instant>>,
    /// Which names an agent serves now, and whose they are; `None`: every name is
    /// served, and is its own owner.
    tunnels: Option<Arc<dyn TunnelLookup>>,
    /// Orders of the last hour, by owner.
    owner_orders: OwnerBudget,
    /// Names whose certificate is due but was not renewed (no agent serves them),
    /// already said in the log.
    not_renewed: Mutex<std::collections::HashSet<String>>,
    /// In a fleet, the state the nodes share ([`shared`]).
    share: OnceLock<Arc<dyn AcmeShare>>,
    /// TLS-ALPN-01 certificates of orders other nodes placed, made from their shared
    /// answers, by name, with when each was made.
    shared_alpn: Mutex<HashMap<String, (Instant, Arc<CertifiedKey>)>>,
    /// When the fleet was last asked for each name's certificate on a viewer's
    /// behalf.
    asked_fleet: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeSource")
            .field("directory", &self.config.directory)
            .field("certificates", &lock(&self.certs).len())
            .field("orders_in_flight", &lock(&self.inflight).len())
            .field("tunnels", &self.tunnels)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AcmeSource {
    /// The source for `config`, with the certificates stored in `config.dir` that are
    /// still valid loaded (never ordered again on restart). Every name counts as
    /// served and as its own owner; [`Self::with_tunnels`] asks the Edge instead.
    pub fn new(config: AcmeConfig) -> Result<Self, AcmeError> {
        Self::build(config, None)
    }

    /// [`Self::new`], ordering and renewing only names `tunnels` says an agent serves
    /// now, within their owner's budget.
    pub fn with_tunnels(
        config: AcmeConfig,
        tunnels: Arc<dyn TunnelLookup>,
    ) -> Result<Self, AcmeError> {
        Self::build(config, Some(tunnels))
    }

    fn build(
        config: AcmeConfig,
        tunnels: Option<Arc<dyn TunnelLookup>>,
    ) -> Result<Self, AcmeError> {
        netbore_control::private_fs::create_dir(&config.dir).map_err(|cause| AcmeError::Store {
            path: config.dir.clone(),
            cause,
        })?;
        // The directory holds the account key and certificate keys: its owner only,
        // also when an older release made it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&config.dir, std::fs::Permissions::from_mode(0o700));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = load_stored(&config.dir, &provider);
        if !certs.is_empty() {
            tracing::info!(count = certs.len(), dir = %config.dir.display(), "ACME certificates loaded from disk");
        }
        Ok(AcmeSource {
            inner: Arc::new(Inner {
                config,
                provider,
                challenges: Arc::default(),
                alpn_challenges: Mutex::default(),
                certs: Mutex::new(certs),
                inflight: Mutex::default(),
                failed: Mutex::default(),
                account: tokio::sync::OnceCell::new(),
                orders: tokio::sync::Mutex::default(),
                tunnels,
                owner_orders: OwnerBudget::default(),
                not_renewed: Mutex::default(),
                share: OnceLock::new(),
                shared_alpn: Mutex::default(),
                asked_fleet: Mutex::default(),
            }),
        })
    }

    /// The challenges plain HTTP ingress must answer.
    pub fn challenges(&self) -> Arc<Http01Challenges> {
        self.inner.challenges.clone()
    }

    /// Shares the account, certificates and challenges with the other nodes of a
    /// fleet through `share` (set once, before viewers arrive).
    pub fn share_with(&self, share: Arc<dyn AcmeShare>) {
        let _ = self.inner.challenges.share.set(share.clone());
        let _ = self.inner.share.set(share);
    }

    /// Starts the background check that renews certificates past
    /// `renew_fraction` of their lifetime. Needs a tokio runtime.
    pub fn spawn_renewal(&self) {
        let inner = Arc::downgrade(&self.inner);
        let every = self
            .inner
            .config
            .renew_check
            .max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = inner.upgrade() else { return };
                let now = SystemTime::now();
                let due: Vec<String> = {
                    let mut certs = lock(&inner.certs);
                    // An expired certificate is never served: it goes, and its name
                    // is ordered again only if a viewer asks while an agent serves it.
                    certs.retain(|name, h| {
                        let keep = h.not_after > now;
                        if !keep {
                            netbore_metrics::server().certificate_expiry.remove(&[name]);
                        }
                        keep
                    });
                    certs
                        .iter()
                        .filter(|(_, h)| h.renew_at(inner.config.renew_fraction) <= now)
                        .map(|(n, _)| n.clone())
                        .collect()
                };
                inner.owner_orders.prune();
                for name in due {
                    if lock(&inner.inflight).contains_key(&name) {
                        continue;
                    }
                    // Another node of the fleet may have renewed it already.
                    if inner.load_shared(&name).await {
                        continue;
                    }
                    let Some(owner) = inner.online_owner(&name).await else {
                        if lock(&inner.not_renewed).insert(name.clone()) {
                            tracing::info!(%name, "ACME certificate not renewed: no agent serves the name now (renewed when a viewer next asks while one does)");
                        }
                        continue;
                    };
                    lock(&inner.not_renewed).remove(&name);
                    tracing::info!(%name, "renewing the ACME certificate");
                    Inner::start_order(&inner, &name, &owner);
                }
            }
        });
    }
}

impl CertSource for AcmeSource {
    fn certified_key(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.inner.certs)
            .get(name)
            .filter(|h| h.not_after > SystemTime::now())
            .map(|h| h.key.clone())
    }

    fn tls_alpn_challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.inner.alpn_challenges)
            .get(name)
            .cloned()
            .or_else(|| {
                lock(&self.inner.shared_alpn)
                    .get(name)
                    .map(|(_, key)| key.clone())
            })
    }

    fn prepare_alpn<'a>(&'a self, name: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.inner.prepare_shared_alpn(name))
    }

    fn prepare<'a>(&'a self, name: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let inner = &self.inner;
            if self.certified_key(name).is_some() {
                // A certificate due for renewal whose name was offline at the last
                // check is renewed now that a viewer asks; this viewer does not wait.
                let due = lock(&inner.certs)
                    .get(name)
                    .is_some_and(|h| h.renew_at(inner.config.renew_fraction) <= SystemTime::now());
                if due
                    && !lock(&inner.inflight).contains_key(name)
                    && let Some(owner) = inner.online_owner(name).await
                {
                    lock(&inner.not_renewed).remove(name);
                    tracing::info!(%name, "renewing the ACME certificate");
                    Inner::start_order(inner, name, &owner);
                }
                return;
            }
            // In a fleet, another node may hold it already (asked at most every few
            // seconds per name, however many viewers ask).
            if inner.may_ask_fleet(name) && inner.load_shared(name).await {
                return;
            }
            // Joining an order under way costs nothing and asks nothing.
            let under_way = lock(&inner.inflight).get(name).cloned();
            let mut done = match under_way {
                Some(done) => done,
                None => {
                    let Some(owner) = inner.online_owner(name).await else {
                        tracing::debug!(%name, "no ACME order: no agent serves the name now");
                        return;
                    };
                    let Some(done) = Inner::start_order(inner, name, &owner) else {
                        return;
                    };
                    done
                }
            };
            let wait = self.inner.config.wait;
            if tokio::time::timeout(wait, done.wait_for(|d| *d))
                .await
                .is_err()
            {
                tracing::warn!(%name, ?wait, "a viewer gave up waiting for the ACME certificate; the order goes on");
            }
        })
    }
}

impl Inner {
    /// The owner of the tunnel an agent serves under `name` now (see
    /// [`TunnelLookup`]); without a lookup, the name itself.
    async fn online_owner(&self, name: &str) -> Option<String> {
        let Some(tunnels) = self.tunnels.clone() else {
            return Some(name.to_string());
        };
        let name = name.to_string();
        tokio::task::spawn_blocking(move || tunnels.online_owner(&name))
            .await
            .ok()
            .flatten()
    }

    /// The order of `name` under way, or a new one paid from `owner`'s budget; `None`
    /// when the name failed recently or the owner's budget is spent.
    fn start_order(inner: &Arc<Inner>, name: &str, owner: &str) -> Option<watch::Receiver<bool>> {
        let mut inflight = lock(&inner.inflight);
        if let Some(rx) = inflight.get(name) {
            return Some(rx.clone());
        }
        if lock(&inner.failed)
            .get(name)
            .is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE)
        {
            return None;
        }
        let limit = inner.config.orders_per_owner_per_hour;
        if !inner.owner_orders.take(owner, name, limit) {
            return None;
        }
        let (tx, rx) = watch::channel(false);
        inflight.insert(name.to_string(), rx.clone());
        let inner = inner.clone();
        let name = name.to_string();
        // The order runs on its own task: a viewer that hangs up does not cancel it.
        tokio::spawn(async move {
            // In a fleet, one node orders a name; the others wait for its certificate.
            if !inner.claim_order(&name).await {
                inner.wait_for_shared(&name).await;
                lock(&inner.inflight).remove(&name);
                let _ = tx.send(true);
                return;
            }
            // Another node may have stored it (or failed it) just before this claim.
            if inner.load_shared(&name).await || inner.failed_elsewhere(&name).await {
                inner.end_order(&name).await;
                lock(&inner.inflight).remove(&name);
                let _ = tx.send(true);
                return;
            }
            match inner.order(&name).await {
                Ok(held) => {
                    tracing::info!(%name, not_after = ?held.not_after, "ACME certificate issued");
                    netbore_metrics::server().acme_orders.inc(&["issued"]);
                    held.count_expiry(&name);
                    lock(&inner.certs).insert(name.clone(), held);
                    lock(&inner.failed).remove(&name);
                }
                Err(e) => {
                    netbore_metrics::server().acme_orders.inc(&["failed"]);
                    // Name and error in the message itself: one line says it all.
                    tracing::error!(directory = %inner.config.directory, "ACME could not issue a certificate for {name}: {e}");
                    lock(&inner.failed).insert(name.clone(), Instant::now());
                    let owned = name.clone();
                    inner.publish(move |share| share.put_failed(&owned)).await;
                }
            }
            inner.end_order(&name).await;
            lock(&inner.inflight).remove(&name);
            let _ = tx.send(true);
        });
        Some(rx)
    }

    /// Waits for room under the rate limit and takes it.
    async fn take_order_slot(&self, name: &str) {
        let limit = self.config.orders_per_minute.max(1) as usize;
        loop {
            let mut orders = self.orders.lock().await;
            while orders
                .front()
                .is_some_and(|t| t.elapsed() >= Duration::from_secs(60))
            {
                orders.pop_front();
            }
            if orders.len() < limit {
                orders.push_back(tokio::time::Instant::now());
                return;
            }
            let wait = Duration::from_secs(60).saturating_sub(orders[0].elapsed());
            drop(orders);
            tracing::warn!(%name, ?wait, limit, "ACME orders rate limited; the order waits");
            tokio::time::sleep(wait).await;
        }
    }

    async fn account(&self) -> Result<&Account, AcmeError> {
        self.account
            .get_or_try_init(|| async {
                let builder = match &self.config.directory_ca {
                    Some(ca) => Account::builder_with_root(ca)?,
                    None => Account::builder()?,
                };
                let path = self.config.dir.join("account.json");
                // A fleet's nodes use one account.
                if let Some(json) = self.shared_account().await
                    && let Ok(stored) = serde_json::from_str::<StoredAccount>(&json)
                    && stored.directory == self.config.directory
                {
                    return Ok(builder.from_credentials(stored.credentials).await?);
                }
                // The account of another directory (the operator changed
                // --acme-directory) is not used: a new one is made and replaces it.
                if let Ok(json) = std::fs::read(&path)
                    && let Ok(stored) = serde_json::from_slice::<StoredAccount>(&json)
                    && stored.directory == self.config.directory
                {
                    // The fleet had none: this node's becomes everyone's.
                    if let Ok(text) = String::from_utf8(json) {
                        self.publish(move |share| share.put_account(&text)).await;
                    }
                    return Ok(builder.from_credentials(stored.credentials).await?);
                }
                let contact = format!("mailto:{}", self.config.email);
                let (account, credentials) = builder
                    .create(
                        &NewAccount {
                            contact: &[&contact],
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await?;
                let stored = StoredAccount {
                    directory: self.config.directory.clone(),
                    credentials,
                };
                let json = serde_json::to_string(&stored)
                    .map_err(|e| AcmeError::Certificate(e.to_string()))?;
                netbore_control::private_fs::write(&path, json.as_bytes())
                    .map_err(|cause| AcmeError::Store { path, cause })?;
                self.publish(move |share| share.put_account(&json)).await;
                tracing::info!(directory = %self.config.directory, "ACME account created");
                Ok(account)
            })
            .await
    }

    /// One order for `name`, from new order to stored certificate.
    async fn order(&self, name: &str) -> Result<Held, AcmeError> {
        self.take_order_slot(name).await;
        let account = self.account().await?;
        tracing::info!(%name, directory = %self.config.directory, "ACME order started");
        let identifiers = [Identifier::Dns(name.to_string())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut guard = TokenGuard {
            challenges: &self.challenges,
            tokens: Vec::new(),
        };
        let mut alpn_guard = AlpnGuard {
            certs: &self.alpn_challenges,
            names: Vec::new(),
        };
        let kind = match self.config.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(AcmeError::Refused(format!("authorization is {other:?}"))),
            }
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or(AcmeError::NoChallenge(self.config.challenge))?;
            let key_authorization = challenge.key_authorization();
            match self.config.challenge {
                Challenge::Http01 => {
                    let body = key_authorization.as_str().to_string();
                    self.challenges
                        .lock()
                        .insert(challenge.token.clone(), body.clone());
                    guard.tokens.push(challenge.token.clone());
                    let token = challenge.token.clone();
                    self.publish(move |share| {
                        share.put_challenge(SharedChallenge::Http01, &token, &body);
                    })
                    .await;
                }
                Challenge::TlsAlpn01 => {
                    let digest = key_authorization.digest();
                    let key = tls_alpn_certificate(name, digest.as_ref(), &self.provider)?;
                    lock(&self.alpn_challenges).insert(name.to_string(), Arc::new(key));
                    alpn_guard.names.push(name.to_string());
                    let (owned, hex) = (name.to_string(), shared::hex(digest.as_ref()));
                    self.publish(move |share| {
                        share.put_challenge(SharedChallenge::TlsAlpn01, &owned, &hex);
                    })
                    .await;
                }
            }
            challenge.set_ready().await?;
        }
        let retry = RetryPolicy::new().timeout(Duration::from_secs(120));
        let status = order.poll_ready(&retry).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Refused(refusal(&mut order).await));
        }
        drop(guard);
        drop(alpn_guard);
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key)?;
        order.finalize_csr(csr.der()).await?;
        let chain_pem = order.poll_certificate(&retry).await?;
        let key_pem = key.serialize_pem();
        let held = certified(&chain_pem, &key_pem, &self.provider)?;
        self.store(name, &chain_pem, &key_pem)?;
        let (owned, directory) = (name.to_string(), self.config.directory.clone());
        let not_after = held
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.publish(move |share| {
            share.put_certificate(&owned, &directory, &chain_pem, &key_pem, not_after);
        })
        .await;
        Ok(held)
    }

    fn store(&self, name: &str, chain_pem: &str, key_pem: &str) -> Result<(), AcmeError> {
        let dir = &self.config.dir;
        let key_path = dir.join(format!("{name}.key"));
        netbore_control::private_fs::write(&key_path, key_pem.as_bytes()).map_err(|cause| {
            AcmeError::Store {
                path: key_path.clone(),
                cause,
            }
        })?;
        let cert_path = dir.join(format!("{name}.crt"));
        let tmp = dir.join(format!("{name}.crt.tmp"));
        netbore_control::private_fs::write(&tmp, chain_pem.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &cert_path))
            .map_err(|cause| AcmeError::Store {
                path: cert_path,
                cause,
            })
    }
}

/// The directory's reason for an invalid order: the first challenge error of its
/// authorizations.
async fn refusal(order: &mut instant_acme::Order) -> String {
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                return problem.to_string();
            }
        }
    }
    "the order became invalid".to_string()
}

#[cfg(test)]
mod tests;
