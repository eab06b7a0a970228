//! The control API (axum): tunnels, reserved names and the OpenAPI document.
//!
//! Every answer that is not a success has one JSON shape,
//! `{"error": {"code": "...", "message": "..."}}` ([`ErrorResponse`]); every request is
//! first counted against its client's rate limit. `docs/openapi.yaml` describes it all.

mod error;
mod handlers;
mod types;

use netbore_codes::ErrorCode;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use error::{ApiError, ApiErrorBody, ErrorResponse};
pub use types::*;

use crate::Control;

/// The OpenAPI document (JSON, which is also YAML 1.2), served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

/// Every route the router serves, as (method, path template). The OpenAPI test checks
/// each against the document and against the router.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/tunnels/create"),
    ("GET", "/tunnels"),
    ("GET", "/tunnels/{id}"),
    ("DELETE", "/tunnels/{id}"),
    ("POST", "/names"),
    ("GET", "/names"),
    ("DELETE", "/names/{name}"),
    ("POST", "/admin/drain"),
    ("GET", "/openapi.json"),
];

/// The API's routes. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: rate limits and anonymous
/// owners are per client address.
pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/tunnels/create", post(handlers::create_tunnel))
        .route("/tunnels", get(handlers::list_tunnels))
        .route(
            "/tunnels/{id}",
            get(handlers::show_tunnel).delete(handlers::delete_tunnel),
        )
        .route(
            "/names",
            post(handlers::reserve_name).get(handlers::list_names),
        )
        .route("/names/{name}", axum::routing::delete(handlers::release_name))
        .route("/admin/drain", post(handlers::drain))
        .route("/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "there is no such API endpoint; see GET /openapi.json for the ones there are",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "this endpoint does not take that method; see GET /openapi.json for the ones it takes",
            )
        })
        .layer(from_fn_with_state(control.clone(), rate_limit))
        .with_state(control)
}

async fn openapi() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
}

/// Counts the request against its client's bucket (the peer, or what a trusted proxy
/// says: [`crate::client_addr`]); 429 with `Retry-After` when empty.
async fn rate_limit(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let client = control.client_ip(client, request.headers());
    let mut allowed = control
        .rate_limiter()
        .check(client, std::time::Instant::now());
    // In a fleet the client's requests also count at every other node; this node's
    // own bucket first, so a flood from one client does not reach Redis.
    if let (Ok(()), Some(shared)) = (allowed, control.shared_rate()) {
        let (shared, config) = (shared.clone(), control.rate_limiter().config());
        let key = crate::rate::client_key(client);
        allowed = tokio::task::spawn_blocking(move || shared.take(key, config.rate, config.burst))
            .await
            .unwrap_or(Ok(()));
    }
    match allowed {
        Ok(()) => {
            // The route's template, not its path: ids stay out of the labels.
            let route = route_of(request.uri().path());
            let response = next.run(request).await;
            netbore_metrics::server()
                .api_requests
                .inc(&[route, response.status().as_str()]);
            response
        }
        Err(wait) => {
            netbore_metrics::server().rate_limited.inc(&["api"]);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!(
                    "too many requests from your address; wait {} s and try again",
                    secs.max(1)
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            response
        }
    }
}

/// The template in [`ROUTES`] that `path` matches (`/tunnels/{id}` for
/// `/tunnels/t_123`), or `unmatched`: ids and names stay out of metrics labels.
fn route_of(path: &str) -> &'static str {
    let parts: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .map(|(_, template)| *template)
        .find(|template| {
            let t: Vec<&str> = template.split('/').collect();
            t.len() == parts.len()
                && t.iter()
                    .zip(&parts)
                    .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
        })
        .unwrap_or("unmatched")
}

#[cfg(test)]
mod tests;
