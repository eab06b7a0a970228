//! The Edge's development certificate authority: made on first run in the data
//! directory, reused on later runs, so a server without an operator's certificate can
//! still offer the `tls` and `wss` transports. Agents trust it with `--ca DATA_DIR/ca.pem`.
//!
//! Files in the data directory:
//! - `ca.pem`: the CA certificate (what agents trust), and `ca-key.pem` (mode 0600);
//! - `edge-cert.pem` (leaf, then CA) and `edge-key.pem` (0600): the Edge's certificate,
//!   made again only when the names it must carry change (`edge-names.txt`).

use netbore_control::private_fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The CA certificate's file name inside the data directory.
pub const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const CERT_FILE: &str = "edge-cert.pem";
const KEY_FILE: &str = "edge-key.pem";
const NAMES_FILE: &str = "edge-names.txt";

/// Why the development certificates could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevCaError {
    /// A file could not be read or written.
    #[error("could not use {path}: {cause}; check the data directory's permissions")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// Making or reading a certificate or key failed.
    #[error(
        "the development certificates in {dir} could not be made: {cause}; move ca.pem and ca-key.pem away to start a new CA"
    )]
    Cert {
        /// The data directory.
        dir: PathBuf,
        /// The cause.
        cause: rcgen::Error,
    },
}

/// The path of the development CA certificate in `data_dir`.
pub fn ca_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CA_FILE)
}

/// The Edge's certificate chain and key files, made by [`ensure`].
#[derive(Debug, Clone)]
pub struct DevCert {
    /// The CA certificate agents trust.
    pub ca: PathBuf,
    /// The Edge's chain, leaf first.
    pub cert: PathBuf,
    /// The Edge's private key.
    pub key: PathBuf,
}

/// The development CA, loaded from (or made in) a data directory, able to sign leaf
/// certificates: the Edge's own for the agent transports, and the viewers' HTTPS
/// certificates ([`crate::certs`]).
pub struct DevCa {
    /// The data directory.
    dir: PathBuf,
    /// The CA certificate as PEM, appended to every chain it signs.
    ca_pem: String,
    /// Rebuilt from the same name and key as the stored CA certificate, which is all a
    /// signature by it needs.
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A leaf certificate signed by the development CA, and its key.
pub struct Leaf {
    /// The chain as PEM: leaf, then the CA.
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8 DER).
    pub key_der: Vec<u8>,
    /// The leaf's private key as PEM.
    pub key_pem: String,
}

impl DevCa {
    /// Loads the CA in `data_dir`, making it first if it is not there. A new CA removes
    /// the record of the Edge's certificate names, so the Edge's leaf is made again.
    pub fn load_or_create(data_dir: &Path) -> Result<DevCa, DevCaError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |cause| DevCaError::Io { path, cause }
        };
        let cert_err = |cause| DevCaError::Cert {
            dir: data_dir.to_path_buf(),
            cause,
        };
        private_fs::create_dir(data_dir).map_err(io(data_dir))?;
        let ca_path = data_dir.join(CA_FILE);
        let ca_key_path = data_dir.join(CA_KEY_FILE);
        let ca_params = ca_params();
        let ca_key = if ca_path.exists() && ca_key_path.exists() {
            let pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
            KeyPair::from_pem(&pem).map_err(cert_err)?
        } else {
            let key = KeyPair::generate().map_err(cert_err)?;
            let cert = ca_params.self_signed(&key).map_err(cert_err)?;
            private_fs::write(&ca_key_path, key.serialize_pem().as_bytes())
                .map_err(io(&ca_key_path))?;
            private_fs::write(&ca_path, cert.pem().as_bytes()).map_err(io(&ca_path))?;
            // A new CA invalidates any leaf signed by an older one.
            let _ = std::fs::remove_file(data_dir.join(NAMES_FILE));
            key
        };
        let ca_pem = std::fs::read_to_string(&ca_path).map_err(io(&ca_path))?;
        Ok(DevCa {
            dir: data_dir.to_path_buf(),
            ca_pem,
            issuer: Issuer::new(ca_params, ca_key),
        })
    }

    /// The CA certificate's file (what agents and viewers trust).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    /// A new server certificate for `names` (host names or IP addresses; the first is
    /// also its common name), valid as long as rcgen's default (through 4096).
    pub fn issue(&self, names: &[String]) -> Result<Leaf, DevCaError> {
        self.issue_valid(names, None)
    }

    /// Like [`DevCa::issue`], valid from a day ago for `valid_for` when given. Browsers
    /// on some platforms refuse server certificates valid for more than 825 days, even
    /// from a CA the user added.
    pub fn issue_valid(
        &self,
        names: &[String],
        valid_for: Option<std::time::Duration>,
    ) -> Result<Leaf, DevCaError> {
        let cert_err = |cause| DevCaError::Cert {
            dir: self.dir.clone(),
            cause,
        };
        let mut leaf = CertificateParams::new(names.to_vec()).map_err(cert_err)?;
        leaf.distinguished_name = DistinguishedName::new();
        leaf.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        if let Some(valid_for) = valid_for {
            const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let epoch = rcgen::date_time_ymd(1970, 1, 1);
            leaf.not_before = epoch + since_epoch.saturating_sub(DAY);
            leaf.not_after = epoch + since_epoch + valid_for;
        }
        let leaf_key = KeyPair::generate().map_err(cert_err)?;
        let leaf_cert = leaf.signed_by(&leaf_key, &self.issuer).map_err(cert_err)?;
        Ok(Leaf {
            chain_pem: format!("{}{}", leaf_cert.pem(), self.ca_pem),
            key_der: leaf_key.serialize_der(),
            key_pem: leaf_key.serialize_pem(),
        })
    }
}

/// Makes (first run) or reuses the development CA in `data_dir`, and an Edge
/// certificate for `names` (host names or IP addresses) signed by it.
pub fn ensure(data_dir: &Path, names: &[String]) -> Result<DevCert, DevCaError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| DevCaError::Io { path, cause }
    };
    let ca = DevCa::load_or_create(data_dir)?;
    let out = DevCert {
        ca: ca.ca_file(),
        cert: data_dir.join(CERT_FILE),
        key: data_dir.join(KEY_FILE),
    };
    let names_path = data_dir.join(NAMES_FILE);
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&names_path).unwrap_or_default();
    if current == wanted && out.cert.exists() && out.key.exists() {
        return Ok(out);
    }
    let leaf = ca.issue(names)?;
    private_fs::write(&out.key, leaf.key_pem.as_bytes()).map_err(io(&out.key))?;
    private_fs::write(&out.cert, leaf.chain_pem.as_bytes()).map_err(io(&out.cert))?;
    private_fs::write(&names_path, wanted.as_bytes()).map_err(io(&names_path))?;
    Ok(out)
}

/// The development CA's fixed parameters (the same every run, so its key can sign again).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Netbore development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reused_and_renamed_when_names_change() {
        let dir = std::env::temp_dir().join(format!("netbore-devca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = ensure(&dir, &names).unwrap();
        let ca1 = std::fs::read(&a.ca).unwrap();
        let cert1 = std::fs::read(&a.cert).unwrap();
        ensure(&dir, &names).unwrap();
        assert_eq!(std::fs::read(&a.ca).unwrap(), ca1, "the CA is reused");
        assert_eq!(std::fs::read(&a.cert).unwrap(), cert1, "the leaf is reused");
        ensure(&dir, &["edge.test".to_string()]).unwrap();
        assert_eq!(
            std::fs::read(&a.ca).unwrap(),
            ca1,
            "the CA survives a rename"
        );
        assert_ne!(
            std::fs::read(&a.cert).unwrap(),
            cert1,
            "a new leaf for new names"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
