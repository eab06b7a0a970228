//! The secrets the control plane hands out, API keys and recreate tokens, and the
//! hashes it keeps of them instead.
//!
//! Both are 256 random bits, so a fast hash (SHA-256) is the right one: nobody can
//! guess a preimage, and a lookup by hash needs no constant-time comparison.

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::store::{ApiKeyRecord, Store, StoreError};
use crate::tokens::unix_now;

/// Prefix of every API key secret.
pub const API_KEY_PREFIX: &str = "nbk_";
/// Prefix of every recreate token.
pub const RECREATE_PREFIX: &str = "nbr_";
/// Random bytes in a secret (256 bits).
const SECRET_BYTES: usize = 32;

/// Why a secret could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The system's random source failed.
    #[error("the system random source failed; try again")]
    Random,
    /// The store refused the new key.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// `n` random bytes.
pub(crate) fn random_bytes(rng: &SystemRandom, n: usize) -> Result<Vec<u8>, SecretError> {
    let mut buf = vec![0u8; n];
    rng.fill(&mut buf).map_err(|_| SecretError::Random)?;
    Ok(buf)
}

/// SHA-256 of `secret`, lowercase hex: what the store keeps.
pub fn hash_secret(secret: &str) -> String {
    hex(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref())
}

/// A new recreate token (`nbr_` and 64 hex digits).
pub fn new_recreate_token(rng: &SystemRandom) -> Result<String, SecretError> {
    Ok(format!(
        "{RECREATE_PREFIX}{}",
        hex(&random_bytes(rng, SECRET_BYTES)?)
    ))
}

/// A freshly created API key: its record (as stored) and its secret (shown once).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// What the store now holds.
    pub record: ApiKeyRecord,
    /// `nbk_<12 hex of the id>_<64 hex>`: the only time it exists outside its holder.
    pub secret: String,
}

/// Creates an API key labelled `label` and stores its hash.
pub fn create_api_key(store: &dyn Store, label: &str) -> Result<NewApiKey, SecretError> {
    let rng = SystemRandom::new();
    let id_hex = hex(&random_bytes(&rng, 6)?);
    let id = format!("k_{id_hex}");
    let secret = format!(
        "{API_KEY_PREFIX}{id_hex}_{}",
        hex(&random_bytes(&rng, SECRET_BYTES)?)
    );
    let record = ApiKeyRecord {
        id,
        label: label.to_string(),
        secret_hash: hash_secret(&secret),
        created_at: unix_now(),
        revoked: false,
    };
    store.insert_key(&record)?;
    Ok(NewApiKey { record, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_hash_are_lowercase_sha256() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn recreate_tokens_carry_256_bits() {
        let rng = SystemRandom::new();
        let a = new_recreate_token(&rng).unwrap();
        let b = new_recreate_token(&rng).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), RECREATE_PREFIX.len() + 64);
    }
}
