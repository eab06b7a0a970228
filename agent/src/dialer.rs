//! Which Edge and transport the agent dials, and falling back between them.
//!
//! With `--transport auto` (the default) the agent walks the control plane's
//! candidates in their preference order. QUIC gets a short deadline, so an agent whose
//! UDP is blocked is online over the next transport (WSS) within about 3 s. While it
//! runs on a fallback, the agent keeps probing QUIC and moves back once it answers.
//! An Edge on its development CA is trusted only with `--ca`; without it, `auto` skips
//! the TLS transports instead of failing on them.

use netbore_codes::ErrorCode;
use std::sync::OnceLock;
use std::time::Duration;

use netbore_control::api::EdgeCandidate;
use netbore_transport::proxy::Proxy;
use netbore_transport::tls::ClientTls;
use netbore_transport::{Dial, Session, TransportError, TransportKind};

use crate::{AgentConfig, AgentError};

/// One Edge and transport to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// `HOST:PORT` of the Edge.
    pub(crate) addr: String,
    /// The transport.
    pub(crate) kind: TransportKind,
}

/// The attempts in order: just the one asked for with `--transport`, or every usable
/// candidate for `auto`.
pub(crate) fn plan(
    edges: &[EdgeCandidate],
    config: &AgentConfig,
) -> Result<Vec<Attempt>, AgentError> {
    let trusts_private_ca = config.trust.extra_ca.is_some() || config.trust.insecure_skip_verify;
    let mut attempts = Vec::new();
    for edge in edges {
        for kind in edge.transports.iter().filter_map(|t| t.parse().ok()) {
            let usable = match config.transport {
                Some(wanted) => wanted == kind,
                // `auto` never falls back from TLS to plain text, except to an Edge
                // on this machine, where nothing crosses a network.
                None if kind.uses_tls() => !edge.development_ca || trusts_private_ca,
                None => netbore_transport::is_loopback_addr(&edge.addr),
            };
            if usable {
                attempts.push(Attempt {
                    addr: edge.addr.clone(),
                    kind,
                });
            }
        }
    }
    if config.transport.is_some() {
        attempts.truncate(1);
    }
    if attempts.is_empty() {
        return Err(no_edge(edges, config.transport));
    }
    Ok(attempts)
}

fn no_edge(edges: &[EdgeCandidate], wanted: Option<TransportKind>) -> AgentError {
    let offered: Vec<&str> = edges
        .iter()
        .flat_map(|e| e.transports.iter().map(String::as_str))
        .collect();
    let offered = if offered.is_empty() {
        "none".to_string()
    } else {
        offered.join(", ")
    };
    AgentError::Refused {
        code: ErrorCode::NoEdge,
        message: match wanted {
            Some(k) => format!(
                "the server offers no Edge over {k} (it offers: {offered}); pass another --transport"
            ),
            None => format!(
                "the server offers no Edge over an encrypted transport this agent trusts (it offers: {offered}); pass --ca with the server's CA or --ca-fingerprint with the fingerprint it prints, or ask for a plain transport by name (--transport tcp)"
            ),
        },
    }
}

/// A session that connected, and the QUIC attempt worth probing when it fell back.
pub(crate) struct Dialed {
    /// The session.
    pub(crate) session: Session,
    /// Where it connected.
    pub(crate) addr: String,
    /// A preferred QUIC attempt that failed before this one succeeded.
    pub(crate) probe: Option<Attempt>,
}

/// Tries `attempts` in order and returns the first session that connects.
pub(crate) async fn dial_first(
    config: &AgentConfig,
    attempts: &[Attempt],
    tls: &OnceLock<ClientTls>,
) -> Result<Dialed, AgentError> {
    let auto = config.transport.is_none();
    let mut failures: Vec<(TransportKind, AgentError)> = Vec::new();
    let mut probe = None;
    for attempt in attempts {
        let proxy = proxy_for(config, &attempt.addr)?;
        if auto && attempt.kind == TransportKind::Quic && proxy.is_some() {
            // UDP cannot go through an HTTP proxy; the next transport can.
            continue;
        }
        let deadline = if auto && attempt.kind == TransportKind::Quic {
            config.quic_fallback_after.min(config.connect_timeout)
        } else {
            config.connect_timeout
        };
        match dial(config, attempt, proxy, tls, deadline).await {
            Ok(session) => {
                return Ok(Dialed {
                    session,
                    addr: attempt.addr.clone(),
                    probe,
                });
            }
            // A certificate the agent does not trust is the user's to fix: trying the
            // next transport would only hide it.
            Err(
                e @ AgentError::Refused {
                    code: ErrorCode::UntrustedCertificate,
                    ..
                },
            ) => return Err(e),
            Err(e) => {
                tracing::debug!(transport = %attempt.kind, error = %e, "transport failed");
                if auto && attempt.kind == TransportKind::Quic && probe.is_none() {
                    probe = Some(attempt.clone());
                }
                failures.push((attempt.kind, e));
            }
        }
    }
    Err(summarise(failures, attempts))
}

/// One error for all the attempts that failed: a permanent one (an untrusted
/// certificate, a refusing proxy) when there is one, since it is the user's to fix.
fn summarise(mut failures: Vec<(TransportKind, AgentError)>, attempts: &[Attempt]) -> AgentError {
    if let Some(i) = failures.iter().position(|(_, e)| e.is_permanent()) {
        return failures.swap_remove(i).1;
    }
    if let [(_, only)] = &failures[..] {
        return only.clone();
    }
    let reasons: Vec<String> = failures
        .iter()
        .map(|(kind, e)| match e {
            AgentError::EdgeUnreachable { reason, .. } => format!("{kind}: {reason}"),
            other => format!("{kind}: {other}"),
        })
        .collect();
    AgentError::EdgeUnreachable {
        addr: attempts.first().map(|a| a.addr.clone()).unwrap_or_default(),
        reason: if reasons.is_empty() {
            "no transport could be tried (QUIC cannot run through the proxy and no other was offered)".into()
        } else {
            reasons.join("; ")
        },
    }
}

/// The proxy that applies to `addr`: `--proxy`, else `HTTPS_PROXY`/`NO_PROXY`.
fn proxy_for(config: &AgentConfig, addr: &str) -> Result<Option<Proxy>, AgentError> {
    match &config.proxy {
        Some(p) => Ok(Some(p.clone())),
        None if config.proxy_from_env => {
            Proxy::from_env(addr).map_err(|e| AgentError::EdgeUnreachable {
                addr: addr.to_string(),
                reason: e.to_string(),
            })
        }
        None => Ok(None),
    }
}

/// Dials one attempt within `deadline`.
async fn dial(
    config: &AgentConfig,
    attempt: &Attempt,
    proxy: Option<Proxy>,
    tls: &OnceLock<ClientTls>,
    deadline: Duration,
) -> Result<Session, AgentError> {
    let unreachable = |reason: String| AgentError::EdgeUnreachable {
        addr: attempt.addr.clone(),
        reason,
    };
    let dial = Dial {
        kind: attempt.kind,
        addr: attempt.addr.clone(),
        tls: client_tls(config, attempt.kind, tls)?,
        proxy,
        mux: config.mux.clone(),
    };
    tokio::time::timeout(deadline, dial.connect())
        .await
        .map_err(|_| unreachable(format!("no answer within {deadline:?}")))?
        .map_err(|e| match e {
            TransportError::UntrustedCertificate { .. } => AgentError::Refused {
                code: ErrorCode::UntrustedCertificate,
                message: e.to_string(),
            },
            TransportError::Proxy(netbore_transport::proxy::ProxyError::Refused { .. }) => {
                AgentError::Refused {
                    code: ErrorCode::ProxyRefused,
                    message: e.to_string(),
                }
            }
            // A 407: the same credentials will get the same answer.
            TransportError::Proxy(
                netbore_transport::proxy::ProxyError::CredentialsRequired { .. }
                | netbore_transport::proxy::ProxyError::CredentialsRejected { .. },
            ) => AgentError::Refused {
                code: ErrorCode::ProxyCredentials,
                message: e.to_string(),
            },
            other => unreachable(other.to_string()),
        })
}

/// Every `config.quic_probe_interval`, tries `attempt` (a QUIC Edge the agent fell back
/// from); returns the session once it connects. Never returns without one.
pub(crate) async fn probe(
    config: &AgentConfig,
    attempt: &Attempt,
    tls: &OnceLock<ClientTls>,
) -> Session {
    loop {
        tokio::time::sleep(config.quic_probe_interval).await;
        let deadline = config.quic_fallback_after.min(config.connect_timeout);
        match dial(config, attempt, None, tls, deadline).await {
            Ok(session) => return session,
            Err(e) => tracing::debug!(error = %e, "QUIC is still unreachable"),
        }
    }
}

/// The TLS settings for `kind`, made from `config.trust` on first use; `None` for
/// transports without TLS.
fn client_tls(
    config: &AgentConfig,
    kind: TransportKind,
    cache: &OnceLock<ClientTls>,
) -> Result<Option<ClientTls>, AgentError> {
    if !kind.uses_tls() {
        return Ok(None);
    }
    trust(config, cache).map(Some)
}

/// The agent's TLS settings, made from `config.trust` on first use (the control
/// plane's HTTPS and the TLS transports share them).
pub(crate) fn trust(
    config: &AgentConfig,
    cache: &OnceLock<ClientTls>,
) -> Result<ClientTls, AgentError> {
    if let Some(made) = cache.get() {
        return Ok(made.clone());
    }
    let made = ClientTls::new(&config.trust).map_err(|e| AgentError::Refused {
        code: ErrorCode::TlsConfig,
        message: e.to_string(),
    })?;
    Ok(cache.get_or_init(|| made).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ControlUrl, TunnelSpec};

    fn candidates(dev: bool) -> Vec<EdgeCandidate> {
        vec![EdgeCandidate {
            addr: "edge:7835".into(),
            transports: ["quic", "wss", "tls", "tcp", "ws"]
                .map(String::from)
                .to_vec(),
            development_ca: dev,
            ..EdgeCandidate::default()
        }]
    }

    fn config(transport: Option<TransportKind>, ca: bool) -> AgentConfig {
        let mut c = AgentConfig::new(
            "http://control:7000".parse::<ControlUrl>().unwrap(),
            vec![TunnelSpec::tcp("127.0.0.1:1".into(), None)],
        );
        c.transport = transport;
        c.trust.extra_ca = ca.then(|| "ca.pem".into());
        c
    }

    fn kinds(plan: &[Attempt]) -> Vec<&'static str> {
        plan.iter().map(|a| a.kind.as_str()).collect()
    }

    #[test]
    fn auto_follows_the_candidates_order() {
        let mut local = candidates(false);
        local[0].addr = "localhost:7835".into();
        let p = plan(&local, &config(None, false)).unwrap();
        assert_eq!(kinds(&p), ["quic", "wss", "tls", "tcp", "ws"]);
    }

    #[test]
    fn auto_never_falls_back_to_plain_text_across_a_network() {
        let e = plan(&candidates(true), &config(None, false)).unwrap_err();
        assert_eq!(e.code(), "no_edge");
        let p = plan(&candidates(true), &config(None, true)).unwrap();
        assert_eq!(kinds(&p), ["quic", "wss", "tls"]);
        let p = plan(&candidates(false), &config(None, false)).unwrap();
        assert_eq!(kinds(&p), ["quic", "wss", "tls"]);
        let mut local = candidates(true);
        local[0].addr = "127.0.0.1:7835".into();
        let p = plan(&local, &config(None, false)).unwrap();
        assert_eq!(kinds(&p), ["tcp", "ws"], "plain text only on this machine");
    }

    #[test]
    fn an_explicit_transport_is_the_only_attempt() {
        let p = plan(&candidates(true), &config(Some(TransportKind::Wss), false)).unwrap();
        assert_eq!(kinds(&p), ["wss"]);
        let mut only_tcp = candidates(false);
        only_tcp[0].transports = vec!["tcp".into()];
        let e = plan(&only_tcp, &config(Some(TransportKind::Quic), false)).unwrap_err();
        assert_eq!(e.code(), "no_edge");
        assert!(e.to_string().contains("over quic"), "{e}");
    }
}
