//! Ephemeral tokens: EdDSA (Ed25519) JWTs minted by Control and verified by Edges.
//! Edges hold only public keys, so an Edge can verify but never mint.
//!
//! Every token names its signing key in the JWT header's `kid` (the first 8 bytes
//! of the SHA-256 of the raw public key, in hex). A verifier trusts its own node's
//! key and, in a fleet, the keys the other live nodes publish ([`TrustedKeys`]), so a
//! token minted by any node verifies at every node, and a node's key can be replaced
//! without a flag day: tokens name the key they need.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation, errors::ErrorKind};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::replay::{ReplayCache, ReplayError};

/// `iss` of every token.
pub const ISSUER: &str = "netbore-control";
/// `aud` of every token.
pub const AUDIENCE: &str = "netbore-edge";
/// Default lifetime of an ephemeral token.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Clock skew tolerated when checking `exp`.
const LEEWAY_SECS: u64 = 2;

/// The claims of an ephemeral token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer ([`ISSUER`]).
    pub iss: String,
    /// Audience ([`AUDIENCE`]).
    pub aud: String,
    /// Owner of the tunnel (`anonymous:<ip>` for anonymous agents).
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    pub iat: u64,
    /// Unique token id, refused when seen twice.
    pub jti: String,
    /// Tunnel id.
    pub tid: String,
    /// Tunnel protocol (`tcp` or `http`).
    pub proto: String,
    /// Public port of a TCP tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Name of an HTTP tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Set by [`TokenVerifier::check`] when another node of the fleet signed the
    /// token (never part of the token).
    #[serde(skip)]
    pub minted_elsewhere: bool,
}

impl Claims {
    /// The Unix second after which no verifier accepts the token any more, so its
    /// id need not be remembered.
    pub fn forget_after(&self) -> u64 {
        self.exp.saturating_add(LEEWAY_SECS + 1)
    }
}

/// Why a key could not be loaded or a token minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("cannot use the signing key file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file does not hold an Ed25519 PKCS#8 key.
    #[error("the signing key file {0} is not an Ed25519 PKCS#8 key; delete it to make a new one")]
    Invalid(String),
    /// Signing failed.
    #[error("signing a token failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Mints ephemeral tokens.
pub struct TokenSigner {
    encoding: EncodingKey,
    public_key: Vec<u8>,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer with a fresh key that lives only in memory.
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
        Self::from_pkcs8(pkcs8.as_ref()).expect("a freshly generated key is valid")
    }

    /// Loads the key at `path`, creating it (mode 0600) on first run.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(der) => {
                Self::from_pkcs8(&der).ok_or_else(|| KeyError::Invalid(path.display().to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
                crate::private_fs::write_new(path, pkcs8.as_ref()).map_err(io_err)?;
                Ok(Self::from_pkcs8(pkcs8.as_ref()).expect("a freshly generated key is valid"))
            }
            Err(e) => Err(io_err(e)),
        }
    }

    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(der).ok()?;
        let public_key = pair.public_key().as_ref().to_vec();
        Some(TokenSigner {
            encoding: EncodingKey::from_ed_der(der),
            kid: key_id(&public_key),
            public_key,
            rng: SystemRandom::new(),
        })
    }

    /// The raw Ed25519 public key, for Edges.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The key's id, written in every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A verifier for tokens of this signer.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(&self.public_key)
    }

    /// `n` random bytes as lowercase hex.
    pub fn random_hex(&self, n: usize) -> String {
        let mut bytes = vec![0u8; n];
        self.rng.fill(&mut bytes).expect("the system RNG works");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Signs a token for a tunnel that lives `ttl`.
    pub fn mint(
        &self,
        sub: &str,
        tunnel_id: &str,
        proto: &str,
        port: Option<u16>,
        name: Option<&str>,
        ttl: Duration,
    ) -> Result<(String, Claims), KeyError> {
        let now = unix_now();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: sub.into(),
            iat: now,
            exp: now + ttl.as_secs(),
            jti: self.random_hex(16),
            tid: tunnel_id.into(),
            proto: proto.into(),
            port,
            name: name.map(str::to_string),
            minted_elsewhere: false,
        };
        self.sign(&claims).map(|t| (t, claims))
    }

    /// Signs arbitrary claims (tests use it to make expired tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// The id of the raw Ed25519 `public_key`: the first 8 bytes of its SHA-256, in hex.
pub fn key_id(public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The public keys a verifier accepts besides its own, by `kid`: in a fleet, the
/// keys the other live nodes publish. Cloning shares the set.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Arc<RwLock<KeysById>>,
}

/// `kid` → (raw public key, its decoding key).
type KeysById = HashMap<String, (Vec<u8>, DecodingKey)>;

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        f.debug_list().entries(keys.keys()).finish()
    }
}

impl TrustedKeys {
    /// Replaces the set with `keys` (raw Ed25519 public keys); each one's `kid` is
    /// computed here, never taken from the publisher. Keys of the wrong length are
    /// skipped.
    pub fn replace<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) {
        let wanted: HashMap<String, &[u8]> = keys
            .into_iter()
            .filter(|k| k.len() == 32)
            .map(|k| (key_id(k), k))
            .collect();
        let same = {
            let current = self.keys.read().unwrap_or_else(|e| e.into_inner());
            current.len() == wanted.len()
                && wanted
                    .iter()
                    .all(|(kid, k)| current.get(kid).is_some_and(|(raw, _)| raw == k))
        };
        if same {
            return;
        }
        let next = wanted
            .into_iter()
            .map(|(kid, k)| (kid, (k.to_vec(), DecodingKey::from_ed_der(k))))
            .collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = next;
    }

    fn get(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(kid).map(|(_, key)| key.clone())
    }

    /// The ids of the keys in the set.
    pub fn kids(&self) -> Vec<String> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut kids: Vec<String> = keys.keys().cloned().collect();
        kids.sort();
        kids
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token's lifetime has passed.
    #[error("the tunnel token has expired; request a new tunnel from the control plane")]
    Expired,
    /// The token was presented before.
    #[error("the tunnel token was already used; request a new tunnel from the control plane")]
    Reused,
    /// The token's owner (or the Edge as a whole) holds as many live tokens as it may.
    #[error("too many tunnel tokens of this owner are in use; wait a minute and try again")]
    TooMany,
    /// Malformed, forged, wrong algorithm, audience or issuer.
    #[error("the tunnel token is not valid ({0}); request a new tunnel from the control plane")]
    Invalid(String),
}

impl TokenError {
    /// The refusal's reason as a metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Expired => "expired",
            TokenError::Reused => "reused",
            TokenError::TooMany => "too_many",
            TokenError::Invalid(_) => "invalid",
        }
    }

    fn count(&self) {
        netbore_metrics::server()
            .token_refusals
            .inc(&[self.reason()]);
    }
}

/// Verifies tokens: algorithm pinned to EdDSA, the key named by `kid` (this node's
/// or a [`TrustedKeys`] one), signature, expiry, issuer, audience, and single use
/// on this node (through a [`ReplayCache`]; a fleet also records ids in Redis).
pub struct TokenVerifier {
    kid: String,
    key: DecodingKey,
    others: TrustedKeys,
    validation: Validation,
    seen: Mutex<ReplayCache>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for the raw Ed25519 `public_key`.
    pub fn new(public_key: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        TokenVerifier {
            kid: key_id(public_key),
            key: DecodingKey::from_ed_der(public_key),
            others: TrustedKeys::default(),
            validation,
            seen: Mutex::new(ReplayCache::new(LEEWAY_SECS)),
        }
    }

    /// The set of other nodes' keys this verifier also accepts; the fleet keeps it
    /// current.
    pub fn trusted(&self) -> TrustedKeys {
        self.others.clone()
    }

    /// Checks `token` without using it up: signature, algorithm and claims.
    pub fn check(&self, token: &str) -> Result<Claims, TokenError> {
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Invalid(e.to_string()))
            .inspect_err(TokenError::count)?
            .kid;
        let foreign;
        let key = match kid.as_deref() {
            Some(kid) if kid == self.kid => &self.key,
            Some(kid) => match self.others.get(kid) {
                Some(key) => {
                    foreign = key;
                    &foreign
                }
                None => {
                    let e = TokenError::Invalid(
                        "signed with a key no live node of this server publishes".into(),
                    );
                    e.count();
                    return Err(e);
                }
            },
            None => {
                let e = TokenError::Invalid("the token names no signing key (kid)".into());
                e.count();
                return Err(e);
            }
        };
        let minted_elsewhere = !std::ptr::eq(key, &self.key);
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| Claims {
                minted_elsewhere,
                ..data.claims
            })
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
            .inspect_err(TokenError::count)
    }

    /// Uses up every checked token of `claims`, or none of them when one was used
    /// before or its owner holds too many.
    pub fn consume(&self, claims: &[&Claims]) -> Result<(), TokenError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.claim(claims, unix_now())
            .map_err(|e| match e {
                ReplayError::Reused => TokenError::Reused,
                ReplayError::Full => TokenError::TooMany,
            })
            .inspect_err(TokenError::count)
    }

    /// Gives back tokens [`Self::consume`] used up whose tunnels could not be claimed:
    /// they may be presented again until they expire.
    pub fn release(&self, claims: &[&Claims]) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.release(claims);
    }

    /// Checks `token` and consumes it; a second call with the same token fails.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.check(token)?;
        self.consume(&[&claims])?;
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_token_verifies_once() {
        let signer = TokenSigner::generate();
        let verifier = signer.verifier();
        let (token, claims) = signer
            .mint(
                "anonymous:127.0.0.1",
                "t1",
                "tcp",
                Some(9000),
                None,
                DEFAULT_TTL,
            )
            .unwrap();
        assert_eq!(verifier.verify(&token).unwrap(), claims);
        assert_eq!(verifier.verify(&token), Err(TokenError::Reused));
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let signer = TokenSigner::generate();
        let verifier = signer.verifier();
        let (_, mut claims) = signer
            .mint("s", "t", "tcp", None, None, DEFAULT_TTL)
            .unwrap();
        claims.exp = unix_now() - 60;
        claims.jti = "old".into();
        assert_eq!(
            verifier.verify(&signer.sign(&claims).unwrap()),
            Err(TokenError::Expired)
        );

        let forger = TokenSigner::generate();
        let (forged, _) = forger
            .mint("s", "t", "tcp", None, None, DEFAULT_TTL)
            .unwrap();
        assert!(matches!(
            verifier.verify(&forged),
            Err(TokenError::Invalid(_))
        ));

        let (_, mut claims) = signer
            .mint("s", "t", "tcp", None, None, DEFAULT_TTL)
            .unwrap();
        claims.aud = "someone-else".into();
        assert!(matches!(
            verifier.verify(&signer.sign(&claims).unwrap()),
            Err(TokenError::Invalid(_))
        ));

        // alg=none and HS256 tokens never pass, even naming the right key: the
        // algorithm is pinned.
        let none = format!(
            "{}.{}.",
            b64(&format!(
                r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
                signer.kid()
            )),
            b64(&serde_json::to_string(&claims).unwrap())
        );
        assert!(matches!(
            verifier.verify(&none),
            Err(TokenError::Invalid(_))
        ));
        let mut hs_header = jsonwebtoken::Header::new(Algorithm::HS256);
        hs_header.kid = Some(signer.kid().to_string());
        let hs = jsonwebtoken::encode(
            &hs_header,
            &claims,
            &EncodingKey::from_secret(signer.public_key()),
        )
        .unwrap();
        assert!(matches!(verifier.verify(&hs), Err(TokenError::Invalid(_))));
        assert!(matches!(
            verifier.verify("garbage"),
            Err(TokenError::Invalid(_))
        ));
    }

    fn b64(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..=c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn tokens_of_trusted_keys_verify_by_kid_until_the_key_leaves_the_set() {
        let here = TokenSigner::generate();
        let there = TokenSigner::generate();
        let verifier = here.verifier();
        let mint = |signer: &TokenSigner| {
            signer
                .mint("s", "t", "tcp", None, None, DEFAULT_TTL)
                .unwrap()
                .0
        };
        let header = jsonwebtoken::decode_header(&mint(&here)).unwrap();
        assert_eq!(header.kid.as_deref(), Some(here.kid()));
        assert_eq!(here.kid(), key_id(here.public_key()));
        assert_eq!(here.kid().len(), 16);

        let foreign = mint(&there);
        assert!(matches!(
            verifier.check(&foreign),
            Err(TokenError::Invalid(_))
        ));
        verifier.trusted().replace([there.public_key()]);
        assert_eq!(verifier.trusted().kids(), vec![there.kid().to_string()]);
        assert!(verifier.verify(&foreign).unwrap().minted_elsewhere);
        assert!(!verifier.verify(&mint(&here)).unwrap().minted_elsewhere);

        // A key published under another node's kid is filed under its own.
        let impostor = TokenSigner::generate();
        verifier.trusted().replace([impostor.public_key()]);
        assert!(matches!(
            verifier.check(&mint(&there)),
            Err(TokenError::Invalid(_))
        ));
        // A token claiming a trusted kid but signed by another key fails its signature.
        let mut claims = there
            .mint("s", "t", "tcp", None, None, DEFAULT_TTL)
            .unwrap()
            .1;
        claims.jti = "x".into();
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(impostor.kid().to_string());
        let forged = jsonwebtoken::encode(&header, &claims, &there.encoding).unwrap();
        assert!(matches!(
            verifier.check(&forged),
            Err(TokenError::Invalid(_))
        ));
        verifier.trusted().replace(std::iter::empty());
        assert!(verifier.trusted().kids().is_empty());
        assert!(verifier.check(&mint(&here)).is_ok());
    }

    #[test]
    fn keys_persist_across_loads() {
        let dir = std::env::temp_dir().join(format!("netbore-key-test-{}", std::process::id()));
        let path = dir.join("key.pk8");
        let a = TokenSigner::load_or_create(&path).unwrap();
        let b = TokenSigner::load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
