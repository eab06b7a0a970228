//! A throwaway CA and a leaf certificate for loopback, written as PEM files.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use netbore_transport::tls::{self, ClientTls, TrustOptions};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA and a leaf for `localhost` and `127.0.0.1` as PEM files in a temp dir, removed on drop.
pub struct Pki {
    /// The directory holding the three files.
    pub dir: PathBuf,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The leaf certificate, signed by the CA.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    /// Makes a new CA and leaf and writes them to a fresh temporary directory.
    // No `Default`: making a CA and writing files is no default value.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Pki {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "netbore-test-pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        std::fs::write(&pki.cert, leaf_cert.pem()).unwrap();
        std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
        pki
    }

    /// The Edge's TLS configuration for this leaf.
    pub fn server(&self) -> Arc<tls::ServerConfig> {
        tls::server_config(
            tls::load_certs(&self.cert).unwrap(),
            tls::load_key(&self.key).unwrap(),
        )
        .unwrap()
    }

    /// An Agent's TLS configuration trusting this CA.
    pub fn client(&self) -> ClientTls {
        ClientTls::new(&TrustOptions {
            extra_ca: Some(self.ca.clone()),
            insecure_skip_verify: false,
        })
        .unwrap()
    }
}
