//! `--metrics-addr`: `GET /metrics` (Prometheus text format), `GET /healthz` (the
//! process is up) and `GET /readyz` (it can serve), on their own listener, served
//! with the control API's connection caps and deadlines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use netbore_metrics::Role;

/// Says whether the process can serve; `Err` carries the reason it cannot.
pub(crate) type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Connections the metrics listener serves at once (a scraper holds one or two).
const MAX_CONNECTIONS: usize = 64;
/// Connections one address may hold.
const MAX_CONNECTIONS_PER_IP: usize = 16;

/// Binds `addr` and serves the endpoints for `role` in the background; returns the
/// bound address.
pub(crate) async fn start(
    addr: SocketAddr,
    role: Role,
    ready: Readiness,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("could not listen for metrics on {addr}; pass another --metrics-addr")
    })?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, netbore_metrics::CONTENT_TYPE)],
                    netbore_metrics::render(role),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
                        Err(why) => {
                            (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
                        }
                    }
                }
            }),
        );
    let config = netbore_control::serve::ServeConfig {
        tls: None,
        // The operator chose the address; metrics hold no secret.
        insecure_http: true,
        max_connections: MAX_CONNECTIONS,
        max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
        header_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
    };
    tokio::spawn(async move {
        if let Err(e) = netbore_control::serve::serve(listener, app, config).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(bound)
}
