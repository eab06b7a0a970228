//! Creating or reclaiming the tunnels at a control plane, before each hello.

use crate::control_client;
use crate::{
    AgentConfig, AgentError, ClientTls, ControlUrl, CreateTunnelRequest, CreateTunnelResponse,
    ErrorCode, Held, TunnelSpec, dialer, state,
};

/// Creates (or reclaims) one tunnel: with its recreate token when it has one, falling
/// back to a fresh create when the server no longer knows the token.
pub(crate) async fn create_one(
    config: &AgentConfig,
    server: &ControlUrl,
    spec: &TunnelSpec,
    held: &mut Held,
    store: Option<&state::StateDir>,
    tls: &std::sync::OnceLock<ClientTls>,
) -> Result<CreateTunnelResponse, AgentError> {
    let key = config.api_key.as_deref();
    let trust = match server.tls {
        true => Some(dialer::trust(config, tls)?.http1),
        false => None,
    };
    let (trust, insecure) = (trust.as_ref(), config.insecure_http);
    let fresh = CreateTunnelRequest {
        protocol: spec.protocol,
        name: held.name.clone().or_else(|| spec.name.clone()),
        remote_port: held.port,
        recreate_token: None,
    };
    if let Some(token) = held.recreate_token.clone() {
        let reclaim = CreateTunnelRequest {
            recreate_token: Some(token),
            ..fresh.clone()
        };
        match control_call(
            config,
            server,
            control_client::create_tunnel(server, trust, insecure, key, &reclaim),
        )
        .await
        {
            Err(AgentError::Refused { code, .. })
                if code == ErrorCode::NotFound && held.online_this_run =>
            {
                if let Some(s) = store {
                    s.forget(spec);
                }
                return Err(AgentError::Refused {
                    code: ErrorCode::TunnelDeleted,
                    message: "the server no longer knows this tunnel (it was deleted through the control API, or the server lost its data); run the command again for a new tunnel".into(),
                });
            }
            Err(AgentError::Refused {
                code: ErrorCode::NotFound,
                ..
            }) => {
                tracing::info!("the server no longer knows this tunnel; creating a new one");
                held.recreate_token = None;
                if let Some(s) = store {
                    s.forget(spec);
                }
            }
            other => return other,
        }
    }
    let created = control_call(
        config,
        server,
        control_client::create_tunnel(server, trust, insecure, key, &fresh),
    )
    .await?;
    if let Some(token) = &created.recreate_token {
        held.recreate_token = Some(token.clone());
        if let Some(s) = store {
            s.save(spec, token);
        }
    }
    Ok(created)
}

/// `call` to the control plane, cut after `config.connect_timeout`: a server that
/// accepts and never answers must not hold the agent.
pub(crate) async fn control_call<T>(
    config: &AgentConfig,
    server: &ControlUrl,
    call: impl std::future::Future<Output = Result<T, AgentError>>,
) -> Result<T, AgentError> {
    tokio::time::timeout(config.connect_timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(AgentError::ControlUnreachable {
                url: server.to_string(),
                reason: format!("no answer within {:?}", config.connect_timeout),
            })
        })
}

/// The port of a `tcp://host:port` URL.
pub(crate) fn public_port(url: &str) -> Option<u16> {
    url.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}
