//! Trusting a server's own CA (its development CA, say) without copying files, as SSH
//! trusts host keys: the agent pins the CA's fingerprint on first use, in its state
//! directory's `known_servers`, or takes it from `--ca-fingerprint`; a server that
//! later shows another CA is a hard error naming both fingerprints.
//!
//! Only for a control plane whose certificate the system's roots do not trust: a
//! server with a public certificate (ACME, a commercial CA) is checked as any website,
//! and remembered as such, so that a private CA shown at its address later is refused
//! rather than pinned. As with SSH, the first contact itself must not be intercepted:
//! an agent with a fresh state directory every run (a throwaway container) should get
//! `--ca-fingerprint` instead.
//! The pinned CA then serves as the extra root for the control API and the Edge's
//! TLS transports alike, so every later connection is verified in full (names,
//! dates, signatures) against it.

use netbore_codes::ErrorCode;
use std::io::Write;
use std::path::{Path, PathBuf};

use netbore_transport::tls::{fingerprint, parse_fingerprint, presented_chain};
use rustls_pki_types::pem::PemObject;

use crate::AgentError;
use crate::control_client::ControlUrl;

/// The file in the state directory that lists the pinned servers, one
/// `HOST:PORT FINGERPRINT` a line (`webpki` for a server the system's roots trust).
pub const KNOWN_SERVERS: &str = "known_servers";

/// What [`pin_server_ca`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinned {
    /// The system's roots trust the server: nothing pinned.
    PublicCertificate,
    /// The server's CA matches the pin (from the flag or `known_servers`); its
    /// certificate is in `ca_file`.
    Known {
        /// The CA certificate, PEM, to trust.
        ca_file: PathBuf,
        /// Its fingerprint.
        fingerprint: String,
    },
    /// No pin existed: this CA was pinned now.
    FirstUse {
        /// The CA certificate, PEM, to trust.
        ca_file: PathBuf,
        /// Its fingerprint.
        fingerprint: String,
    },
}

fn refused(code: ErrorCode, message: String) -> AgentError {
    AgentError::Refused { code, message }
}

/// Reads the CA the control plane at `url` presents and decides whether to trust it:
/// against `expected` (`--ca-fingerprint`) when given, else against the pin in
/// `state_dir`, pinning it there on first use.
/// Reading the chain takes at most `timeout`.
pub async fn pin_server_ca(
    url: &ControlUrl,
    state_dir: &Path,
    expected: Option<&str>,
    timeout: std::time::Duration,
) -> Result<Pinned, AgentError> {
    let addr = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let unreachable = |reason: String| AgentError::ControlUnreachable {
        url: url.to_string(),
        reason,
    };
    let (chain, trusted) = tokio::time::timeout(timeout, presented_chain(&addr))
        .await
        .map_err(|_| unreachable(format!("no TLS answer within {timeout:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let known_file = state_dir.join(KNOWN_SERVERS);
    let pinned = known(&known_file, &addr);
    if trusted && expected.is_none() {
        // Remembered, so that a private CA shown later at this address (an on-path
        // attacker's) is refused instead of pinned as if it were the first use.
        if pinned.is_none() {
            remember(&known_file, &addr, PUBLIC).map_err(|e| state_error(&known_file, &e))?;
        }
        return Ok(Pinned::PublicCertificate);
    }
    if pinned.as_deref() == Some(PUBLIC) && expected.is_none() {
        return Err(refused(
            ErrorCode::UntrustedCertificate,
            format!(
                "the control plane at {addr} showed a publicly trusted certificate before and now shows one no CA here signed; someone may be in the path (if the server really moved to its own CA, remove its line from {}, or pass --ca-fingerprint)",
                known_file.display()
            ),
        ));
    }
    // The last certificate of the chain is the CA a development server sends along.
    let Some(ca) = chain.last().filter(|_| chain.len() > 1) else {
        return Err(refused(
            ErrorCode::UntrustedCertificate,
            format!(
                "the control plane at {url} shows a certificate no CA here signed and sends no CA to pin; pass --ca FILE with the CA that signed it"
            ),
        ));
    };
    let seen = fingerprint(ca);
    let ca_file = state_dir.join(format!("ca-{}.pem", &seen["sha256:".len()..][..16]));
    if let Some(expected) = expected {
        let wanted = parse_fingerprint(expected).ok_or_else(|| {
            refused(
                ErrorCode::BadRequest,
                format!("--ca-fingerprint {expected:?} is not a SHA-256 fingerprint; copy the one the server prints (sha256:…)"),
            )
        })?;
        if wanted != seen {
            return Err(refused(
                ErrorCode::UntrustedCertificate,
                format!(
                    "the control plane at {url} shows the CA {seen}, not the {wanted} given with --ca-fingerprint; check the server, or the fingerprint"
                ),
            ));
        }
        save_ca(&ca_file, ca)?;
        return Ok(Pinned::Known {
            ca_file,
            fingerprint: seen,
        });
    }
    match pinned {
        Some(pinned) if pinned == seen => {
            save_ca(&ca_file, ca)?;
            Ok(Pinned::Known {
                ca_file,
                fingerprint: seen,
            })
        }
        Some(pinned) => Err(refused(
            ErrorCode::UntrustedCertificate,
            format!(
                "the control plane at {addr} now shows the CA {seen}, but this agent pinned {pinned} on first use; if the server's CA really changed, remove its line from {}",
                known_file.display()
            ),
        )),
        None => {
            save_ca(&ca_file, ca)?;
            remember(&known_file, &addr, &seen).map_err(|e| {
                refused(
                    ErrorCode::StateDir,
                    format!(
                        "could not pin the server's CA in {}: {e}; check the state directory",
                        known_file.display()
                    ),
                )
            })?;
            Ok(Pinned::FirstUse {
                ca_file,
                fingerprint: seen,
            })
        }
    }
}

/// What `known_servers` records for a server whose certificate the system's roots
/// trusted: no CA is pinned, but a private CA shown later is refused.
const PUBLIC: &str = "webpki";

fn state_error(file: &Path, e: &std::io::Error) -> AgentError {
    refused(
        ErrorCode::StateDir,
        format!(
            "could not record the server's CA in {}: {e}; check the state directory",
            file.display()
        ),
    )
}

/// The fingerprint pinned for `addr` in `file` ([`PUBLIC`] for a public
/// certificate), if any.
fn known(file: &Path, addr: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let (who, pin) = line.split_once(' ')?;
        (who == addr).then(|| pin.trim().to_string())
    })
}

/// Appends `addr FINGERPRINT` to `file` (owner-only).
fn remember(file: &Path, addr: &str, fingerprint: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    let mut f = netbore_control::private_fs::open(file, &mut options)?;
    writeln!(f, "{addr} {fingerprint}")
}

fn save_ca(path: &Path, ca: &rustls_pki_types::CertificateDer<'_>) -> Result<(), AgentError> {
    let pem = pem_of(ca);
    netbore_control::private_fs::write(path, pem.as_bytes()).map_err(|e| {
        refused(
            ErrorCode::StateDir,
            format!(
                "could not keep the server's CA in {}: {e}; check the state directory",
                path.display()
            ),
        )
    })?;
    // Read back as the TLS settings will, so a bad file fails here.
    rustls_pki_types::CertificateDer::from_pem_file(path).map_err(|e| {
        refused(
            ErrorCode::StateDir,
            format!(
                "the server's CA in {} cannot be read back: {e}",
                path.display()
            ),
        )
    })?;
    Ok(())
}

/// `cert` as a PEM block.
fn pem_of(cert: &rustls_pki_types::CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", cert.as_ref().to_vec()))
}
