//! Certificates as the ACME source holds them: parsed from PEM with their validity,
//! loaded from `DATA_DIR/acme`, and the self-signed certificate of a TLS-ALPN-01
//! validation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::AcmeError;
use super::validity::validity;

/// A certificate in memory, with its validity.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) key: Arc<CertifiedKey>,
    pub(super) not_before: SystemTime,
    pub(super) not_after: SystemTime,
}

impl Held {
    /// Shows the certificate's expiry in the metrics, under `name`.
    pub(super) fn count_expiry(&self, name: &str) {
        let at = self
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        netbore_metrics::server()
            .certificate_expiry
            .set(&[name], at);
    }

    pub(super) fn renew_at(&self, fraction: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

/// The self-signed certificate of a TLS-ALPN-01 validation: the name, and the
/// critical acmeIdentifier extension holding the key authorization's SHA-256 digest.
pub(super) fn tls_alpn_certificate(
    name: &str,
    digest: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<CertifiedKey, AcmeError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    // Not `CertifiedKey::from_der`: its check that key and certificate match parses
    // the certificate with webpki, which refuses the critical acmeIdentifier.
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// A chain and key as rustls's [`CertifiedKey`], with the leaf's validity.
pub(super) fn certified(
    chain_pem: &str,
    key_pem: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<Held, AcmeError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| AcmeError::Certificate("the chain is empty".into()))?;
    let (not_before, not_after) = validity(leaf)
        .ok_or_else(|| AcmeError::Certificate("its validity cannot be read".into()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    let key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    Ok(Held {
        key: Arc::new(key),
        not_before,
        not_after,
    })
}

/// The stored certificates of `dir` (`NAME.crt` with `NAME.key`) still valid now.
pub(super) fn load_stored(dir: &Path, provider: &Arc<CryptoProvider>) -> HashMap<String, Held> {
    let mut certs = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return certs;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "crt") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let read = |p: &Path| std::fs::read_to_string(p);
        let loaded = read(&path)
            .and_then(|c| Ok((c, read(&dir.join(format!("{name}.key")))?)))
            .map_err(|e| AcmeError::Store {
                path: path.clone(),
                cause: e,
            })
            .and_then(|(chain, key)| certified(&chain, &key, provider));
        match loaded {
            Ok(held) if held.not_after > SystemTime::now() => {
                held.count_expiry(name);
                certs.insert(name.to_string(), held);
            }
            Ok(_) => tracing::info!(%name, "stored ACME certificate expired; ordered again on use"),
            Err(e) => tracing::warn!(%name, error = %e, "stored ACME certificate skipped"),
        }
    }
    certs
}
