//! TLS for the `tls` and `wss` transports: rustls configurations for both ends.
//!
//! The Edge serves one certificate chain and offers two ALPN protocols on one port:
//! [`ALPN_MUX`] (the Netbore mux straight over TLS) and [`ALPN_HTTP1`] (a WebSocket
//! upgrade, the `wss` transport). The agent trusts the system's roots plus an optional
//! extra CA file, or, only when asked with a loud warning, no one at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
pub use rustls::{ClientConfig, ServerConfig};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// ALPN protocol of the Netbore mux carried directly over TLS (`tls` transport).
pub const ALPN_MUX: &[u8] = b"netbore/1";

/// ALPN protocol of HTTP/1.1, under which a `wss` agent sends its WebSocket upgrade.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("could not read {path}: {cause}; check the path and its permissions")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A file held no PEM item of the kind expected.
    #[error("{path} holds no PEM {what}; pass a PEM file (-----BEGIN ...-----)")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// rustls refused the certificate, key or trust anchors.
    #[error("the TLS settings were refused: {0}; check that the key belongs to the certificate")]
    Rustls(rustls::Error),
}

// Not `#[from]`: that would also make the rustls error the source, and a report that
// prints the chain would say it twice.
impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Rustls(e)
    }
}

/// The ring crypto provider every Netbore TLS configuration uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file, in order (leaf first for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|cause| TlsError::Read {
        path: path.into(),
        cause,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|cause| TlsError::Read {
        path: path.into(),
        cause,
    })?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|_| TlsError::Pem {
        path: path.into(),
        what: "private key",
    })
}

/// The Edge's TLS configuration: `chain` (leaf first) and its `key`, offering
/// [`ALPN_MUX`] and [`ALPN_HTTP1`].
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_MUX.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// Whom the agent trusts when it checks the Edge's certificate.
#[derive(Debug, Clone, Default)]
pub struct TrustOptions {
    /// A PEM file of extra CA certificates trusted besides the system's roots (an
    /// operator's private CA, or the Edge's development CA).
    pub extra_ca: Option<PathBuf>,
    /// Accept any certificate: the connection is encrypted but anyone in the path can
    /// read it. For debugging only; the CLI warns loudly whenever it is on.
    pub insecure_skip_verify: bool,
}

/// The agent's TLS configurations: one for each ALPN protocol it may ask for.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// Offers [`ALPN_MUX`] (the `tls` transport).
    pub mux: Arc<ClientConfig>,
    /// Offers [`ALPN_HTTP1`] (the `wss` transport).
    pub http1: Arc<ClientConfig>,
    /// Offers [`crate::quic::ALPN_QUIC`] (the `quic` transport).
    pub quic: Arc<ClientConfig>,
}

impl ClientTls {
    /// Builds both configurations from `trust`. The system's roots that fail to load
    /// are skipped (logged); an unreadable `extra_ca` is an error.
    pub fn new(trust: &TrustOptions) -> Result<ClientTls, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let base = if trust.insecure_skip_verify {
            let algorithms = provider().signature_verification_algorithms;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(InsecureVerifier { algorithms }))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(roots(trust.extra_ca.as_deref())?)
                .with_no_client_auth()
        };
        let with_alpn = |alpn: &[u8]| {
            let mut c = base.clone();
            c.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(c)
        };
        Ok(ClientTls {
            mux: with_alpn(ALPN_MUX),
            http1: with_alpn(ALPN_HTTP1),
            quic: with_alpn(crate::quic::ALPN_QUIC),
        })
    }
}

impl ClientTls {
    /// Configurations that accept exactly the server certificate whose
    /// [`fingerprint`] is `leaf` (names and dates are not checked; the handshake's
    /// signature is): how a fleet node checks another node, whose fingerprint it read
    /// from the node list, whatever CA signed it.
    pub fn pinned_leaf(leaf: &str) -> Result<ClientTls, TlsError> {
        let algorithms = provider().signature_verification_algorithms;
        let verifier = PinnedLeafVerifier {
            inner: InsecureVerifier { algorithms },
            fingerprint: leaf.to_string(),
        };
        let base = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let with_alpn = |alpn: &[u8]| {
            let mut c = base.clone();
            c.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(c)
        };
        Ok(ClientTls {
            mux: with_alpn(ALPN_MUX),
            http1: with_alpn(ALPN_HTTP1),
            quic: with_alpn(crate::quic::ALPN_QUIC),
        })
    }
}

/// The system's roots plus the certificates of `extra_ca`.
fn roots(extra_ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root certificate could not be loaded");
    }
    let (added, ignored) = store.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system root certificates");
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            store.add(cert)?;
        }
    }
    Ok(store)
}

/// The server name to check the Edge's certificate against: the host of `HOST:PORT`
/// (brackets of an IPv6 literal removed).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, std::io::Error> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host:?} is not a host name or IP address"),
        )
    })
}

/// The fingerprint agents pin a server's CA by: `sha256:` and the SHA-256 of the
/// certificate's DER in lowercase hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `text` as a fingerprint in [`fingerprint`]'s form, accepting upper case, colons
/// between bytes and a missing `sha256:`; `None` if it is not 32 bytes of hex.
pub fn parse_fingerprint(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let hex: String = t
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// The certificate chain the TLS server at `addr` (`HOST:PORT`) presents, leaf first,
/// read without trusting it (to pin its CA on first use), and whether the system's
/// roots trust it for that host.
pub async fn presented_chain(addr: &str) -> std::io::Result<(Vec<CertificateDer<'static>>, bool)> {
    let algorithms = provider().signature_verification_algorithms;
    let recorder = Arc::new(RecordingVerifier {
        inner: InsecureVerifier { algorithms },
        chain: std::sync::Mutex::new(Vec::new()),
    });
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name = server_name(addr)?;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    // The handshake only has to reach the certificate; its outcome does not matter.
    let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name.clone(), stream)
        .await;
    let chain = std::mem::take(&mut *recorder.chain.lock().unwrap_or_else(|e| e.into_inner()));
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{addr} presented no certificate"),
        ));
    };
    let trusted = roots(None)
        .ok()
        .and_then(|roots| {
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .ok()
        })
        .is_some_and(|verifier| {
            verifier
                .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
                .is_ok()
        });
    Ok((chain, trusted))
}

/// Records the chain a server presents and accepts it (used only to read it); the
/// handshake's signatures are checked as [`InsecureVerifier`] checks them.
#[derive(Debug)]
struct RecordingVerifier {
    inner: InsecureVerifier,
    chain: std::sync::Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self.chain.lock().unwrap_or_else(|e| e.into_inner());
        chain.push(end_entity.clone().into_owned());
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts one certificate, by its fingerprint ([`ClientTls::pinned_leaf`]).
#[derive(Debug)]
struct PinnedLeafVerifier {
    inner: InsecureVerifier,
    fingerprint: String,
}

impl ServerCertVerifier for PinnedLeafVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts every certificate, still checking that the handshake is signed by the key
/// the certificate names (so the session is encrypted, just not authenticated).
#[derive(Debug)]
struct InsecureVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for InsecureVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_addresses() {
        assert!(matches!(
            server_name("127.0.0.1:7835").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:7835").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("edge.example.com:443").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad host:1").is_err());
    }
}
