//! The certificate manager of HTTPS ingress: for each TLS handshake it picks the
//! certificate by the viewer's SNI name, from one [`CertSource`].
//!
//! Sources: the development CA ([`DevCaSource`], leaf certificates issued on demand
//! for each of the Edge's names and cached in memory), files ([`FileSource`], e.g. a
//! wildcard certificate the operator has, read once at start) and ACME
//! ([`crate::acme::AcmeSource`], ordered before the handshake in
//! [`CertSource::prepare`]). Callers hold a [`CertManager`] and never see which
//! source answers.
//!
//! Only the Edge's names get a certificate: `DOMAIN` itself and one DNS label under it.
//! Any other SNI name (or none) gets none, and rustls ends the handshake with an alert.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::dev_ca::{DevCa, DevCaError};

/// ALPN protocols HTTPS ingress offers, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737). Offered last: only an ACME
/// directory asks for it, and the connection ends after the handshake.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How long a development-CA certificate for HTTPS is valid. Short enough for every
/// browser's limit (825 days on Apple platforms, even for a CA the user added).
pub const DEV_LEAF_VALIDITY: Duration = Duration::from_secs(90 * 86_400);

/// Age at which a cached development-CA certificate is issued again, well before it
/// expires on a long-running Edge.
pub const DEV_LEAF_REFRESH: Duration = Duration::from_secs(30 * 86_400);

/// Default of `--cert-cache`: development certificates kept in memory. Bounds the
/// memory a viewer can make the Edge spend by asking for many different names (each
/// costs about 2 KiB); a name pushed out is issued again when next asked for.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// Why the certificate manager could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The development CA could not be loaded, made, or sign.
    #[error(transparent)]
    DevCa(#[from] DevCaError),
    /// A certificate or key file could not be read or held no PEM item of its kind.
    #[error(transparent)]
    Files(#[from] netbore_transport::tls::TlsError),
    /// rustls refused the key, or the key does not belong to the certificate.
    #[error(
        "the certificate {cert} and key {key} cannot be used together ({cause}); pass the key that belongs to the certificate"
    )]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        cause: rustls::Error,
    },
}

/// Where certificates come from. A source is asked only for the Edge's own names,
/// lowercase and without a trailing dot.
pub trait CertSource: Send + Sync + std::fmt::Debug {
    /// The certificate to present for `name`, or `None` to refuse the handshake.
    /// Called inside the handshake, so it must not block for long.
    fn certified_key(&self, name: &str) -> Option<Arc<CertifiedKey>>;

    /// Makes a certificate for `name` ready before its handshake starts; the viewer's
    /// connection waits for it. Sources that obtain certificates slowly (ACME) do
    /// their work here; the others have nothing to do.
    fn prepare<'a>(&'a self, name: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let _ = name;
        Box::pin(std::future::ready(()))
    }

    /// Makes the TLS-ALPN-01 challenge certificate for `name` ready before a
    /// validation's handshake, when it comes from elsewhere (another node of a
    /// fleet); the others have nothing to do.
    fn prepare_alpn<'a>(&'a self, name: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let _ = name;
        Box::pin(std::future::ready(()))
    }

    /// The TLS-ALPN-01 challenge certificate for `name` while one is being validated
    /// (handshakes offering [`ACME_TLS_ALPN`]); `None` refuses the handshake.
    fn tls_alpn_challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let _ = name;
        None
    }
}

/// The ring provider every Netbore TLS configuration uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates issued on demand by the development CA, one for each name, kept in a
/// bounded cache (the oldest issued leaves first).
#[derive(Debug)]
pub struct DevCaSource {
    ca: DevCa,
    provider: Arc<CryptoProvider>,
    cache: Mutex<LeafCache>,
}

#[derive(Debug)]
struct LeafCache {
    capacity: usize,
    leaves: HashMap<String, (Instant, Arc<CertifiedKey>)>,
    /// Names in the order they were issued.
    order: VecDeque<String>,
}

impl LeafCache {
    fn insert(&mut self, name: &str, key: Arc<CertifiedKey>) {
        if self
            .leaves
            .insert(name.to_string(), (Instant::now(), key))
            .is_some()
        {
            return;
        }
        self.order.push_back(name.to_string());
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.leaves.remove(&oldest);
            }
        }
    }
}

impl DevCaSource {
    /// The development CA of `data_dir` (made if missing), caching at most `capacity`
    /// leaf certificates (at least one).
    pub fn new(data_dir: &Path, capacity: usize) -> Result<Self, CertError> {
        Ok(DevCaSource {
            ca: DevCa::load_or_create(data_dir)?,
            provider: provider(),
            cache: Mutex::new(LeafCache {
                capacity: capacity.max(1),
                leaves: HashMap::new(),
                order: VecDeque::new(),
            }),
        })
    }

    /// The CA certificate viewers trust (`netbore ca path`).
    pub fn ca_file(&self) -> PathBuf {
        self.ca.ca_file()
    }

    /// How many certificates the cache holds.
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leaves
            .len()
    }

    fn issue(&self, name: &str) -> Result<CertifiedKey, String> {
        let leaf = self
            .ca
            .issue_valid(&[name.to_string()], Some(DEV_LEAF_VALIDITY))
            .map_err(|e| e.to_string())?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der));
        CertifiedKey::from_der(chain, key, &self.provider).map_err(|e| e.to_string())
    }
}

impl CertSource for DevCaSource {
    fn certified_key(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leaves
            .get(name)
            .filter(|(issued, _)| issued.elapsed() < DEV_LEAF_REFRESH)
            .map(|(_, key)| key.clone());
        if cached.is_some() {
            return cached;
        }
        // Issued outside the lock: two handshakes for one new name may both sign, and
        // the second simply replaces the first.
        match self.issue(name) {
            Ok(key) => {
                let key = Arc::new(key);
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, key.clone());
                Some(key)
            }
            Err(e) => {
                tracing::error!(%name, error = %e, "the development CA could not issue a certificate");
                None
            }
        }
    }
}

/// One certificate chain and key read from files at start (`--cert`, `--key`),
/// presented for every one of the Edge's names.
#[derive(Debug)]
pub struct FileSource {
    key: Arc<CertifiedKey>,
}

impl FileSource {
    /// Reads the PEM chain `cert` (leaf first) and PEM private key `key`, and checks
    /// that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, CertError> {
        let chain = netbore_transport::tls::load_certs(cert)?;
        let private = netbore_transport::tls::load_key(key)?;
        let certified = CertifiedKey::from_der(chain, private, &provider()).map_err(|cause| {
            CertError::Refused {
                cert: cert.into(),
                key: key.into(),
                cause,
            }
        })?;
        Ok(FileSource {
            key: Arc::new(certified),
        })
    }
}

impl CertSource for FileSource {
    fn certified_key(&self, _name: &str) -> Option<Arc<CertifiedKey>> {
        Some(self.key.clone())
    }
}

/// Picks the certificate of each HTTPS handshake: the Edge's names go to the source,
/// any other name is refused.
#[derive(Debug)]
pub struct CertManager {
    domain: String,
    source: Box<dyn CertSource>,
}

impl CertManager {
    /// A manager for the names of `domain`, taking certificates from `source`.
    pub fn new(domain: &str, source: Box<dyn CertSource>) -> Arc<Self> {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        Arc::new(CertManager {
            domain: domain.to_ascii_lowercase(),
            source,
        })
    }

    /// `name` lowercase without a trailing dot, if it is one of the Edge's names:
    /// the domain itself, or one valid label under it.
    pub fn edge_name(&self, name: &str) -> Option<String> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if name.contains(':') {
            return None;
        }
        let ok =
            name == self.domain || crate::http::host::tunnel_name(&name, &self.domain).is_some();
        ok.then_some(name)
    }

    /// The certificate for SNI name `sni`; `None` (the handshake fails) when the
    /// viewer sent no name or one outside the Edge's domain.
    pub fn certified_key(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = self.edge_name(sni?)?;
        self.source.certified_key(&name)
    }

    /// Lets the source make `sni`'s TLS-ALPN-01 certificate ready before a
    /// validation's handshake.
    pub async fn prepare_alpn(&self, sni: &str) {
        if let Some(name) = self.edge_name(sni) {
            self.source.prepare_alpn(&name).await;
        }
    }

    /// Lets the source make `sni`'s certificate ready before the handshake.
    pub async fn prepare(&self, sni: &str) {
        if let Some(name) = self.edge_name(sni) {
            self.source.prepare(&name).await;
        }
    }

    /// A rustls server configuration taking its certificates from this manager and
    /// offering [`ALPN`], then [`ACME_TLS_ALPN`] for TLS-ALPN-01 validation.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        // The ring provider supports the safe default versions: the builder cannot fail.
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertManager {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
        {
            let name = self.edge_name(hello.server_name()?)?;
            return self.source.tls_alpn_challenge(&name);
        }
        self.certified_key(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netbore-certs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_leaf_cache_is_bounded_and_drops_the_oldest() {
        let dir = temp_dir("cache");
        let source = DevCaSource::new(&dir, 2).unwrap();
        let a1 = source.certified_key("a.example.test").unwrap();
        let a2 = source.certified_key("a.example.test").unwrap();
        assert!(Arc::ptr_eq(&a1, &a2), "a cached name is not issued again");
        source.certified_key("b.example.test").unwrap();
        source.certified_key("c.example.test").unwrap();
        assert_eq!(source.cached(), 2);
        let a3 = source.certified_key("a.example.test").unwrap();
        assert!(!Arc::ptr_eq(&a1, &a3), "the oldest name was pushed out");
        for i in 0..20 {
            source.certified_key(&format!("n{i}.example.test")).unwrap();
        }
        assert_eq!(source.cached(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_edges_names_get_a_certificate() {
        let dir = temp_dir("names");
        let manager = CertManager::new(
            "Example.Test.",
            Box::new(DevCaSource::new(&dir, 8).unwrap()),
        );
        for good in ["example.test", "app.example.test", "APP.example.test."] {
            assert!(manager.certified_key(Some(good)).is_some(), "{good}");
        }
        for bad in [
            None,
            Some("other.test"),
            Some("a.b.example.test"),
            Some("xexample.test"),
            Some("app.example.test:443"),
            Some("-a.example.test"),
            Some(""),
        ] {
            assert!(manager.certified_key(bad).is_none(), "{bad:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_that_do_not_belong_together_are_refused() {
        let dir = temp_dir("files");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = DevCa::load_or_create(&dir).unwrap();
        let one = ca.issue(&["a.example.test".into()]).unwrap();
        let two = ca.issue(&["b.example.test".into()]).unwrap();
        let (cert, key, other_key) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("k2.pem"));
        std::fs::write(&cert, &one.chain_pem).unwrap();
        std::fs::write(&key, &one.key_pem).unwrap();
        std::fs::write(&other_key, &two.key_pem).unwrap();
        assert!(FileSource::load(&cert, &key).is_ok());
        let e = FileSource::load(&cert, &other_key).unwrap_err();
        assert!(matches!(e, CertError::Refused { .. }), "{e}");
        let e = FileSource::load(&key, &key).unwrap_err();
        assert!(
            matches!(
                e,
                CertError::Files(netbore_transport::tls::TlsError::Pem {
                    what: "certificate",
                    ..
                })
            ),
            "{e}"
        );
        let e = FileSource::load(&dir.join("missing.pem"), &key).unwrap_err();
        assert!(
            matches!(
                e,
                CertError::Files(netbore_transport::tls::TlsError::Read { .. })
            ),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
