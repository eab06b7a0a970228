//! One handler a route: authenticate, parse, call [`Control`], answer. The work runs
//! on tokio's blocking pool: the store is synchronous and may wait on another writer.

use netbore_codes::ErrorCode;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::{
    ApiError, CreateTunnelRequest, CreateTunnelResponse, NameInfo, NameList, NameRequest,
    TunnelInfo, TunnelList,
};
use crate::{Caller, Control, Reserved};

/// Who sent the request: the `Authorization` header and the client address (the
/// peer, or what a trusted proxy says: [`crate::client_addr`]), checked on the
/// blocking pool.
struct Credentials {
    authorization: Option<Vec<u8>>,
    client: IpAddr,
}

impl Credentials {
    fn new(control: &Control, headers: &HeaderMap, peer: SocketAddr) -> Self {
        Credentials {
            authorization: headers
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec()),
            client: control.client_ip(peer, headers),
        }
    }

    fn caller(&self, control: &Control) -> Result<Caller, ApiError> {
        control.authenticate(self.authorization.as_deref(), self.client)
    }
}

/// Runs `f` with the control plane on the blocking pool.
async fn blocking<T: Send + 'static>(
    control: Arc<Control>,
    f: impl FnOnce(&Control) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || f(&control))
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(e)))
}

fn body<T: DeserializeOwned>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "the request body is not valid ({}); send JSON as docs/openapi.yaml describes",
                e.body_text()
            ),
        )
    })
}

fn path(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(v)| v).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "the request path is not valid ({}); fix it and retry",
                e.body_text()
            ),
        )
    })
}

pub(super) async fn create_tunnel(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Result<Json<CreateTunnelRequest>, JsonRejection>,
) -> Result<Json<CreateTunnelResponse>, ApiError> {
    let who = Credentials::new(&control, &headers, client);
    blocking(control, move |control| {
        let caller = who.caller(control)?;
        let request = body(request)?;
        control.create_tunnel_from(&caller, Some(who.client), &request)
    })
    .await
    .map(Json)
}

pub(super) async fn list_tunnels(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<TunnelList>, ApiError> {
    let who = Credentials::new(&control, &headers, client);
    let tunnels = blocking(control, move |control| {
        control.list_tunnels(&who.caller(control)?)
    })
    .await?;
    Ok(Json(TunnelList { tunnels }))
}

pub(super) async fn show_tunnel(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TunnelInfo>, ApiError> {
    let who = Credentials::new(&control, &headers, client);
    blocking(control, move |control| {
        let caller = who.caller(control)?;
        control.tunnel(&caller, &path(id)?)
    })
    .await
    .map(Json)
}

pub(super) async fn delete_tunnel(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let who = Credentials::new(&control, &headers, client);
    blocking(control, move |control| {
        let caller = who.caller(control)?;
        control.delete_tunnel(&caller, &path(id)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn reserve_name(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Result<Json<NameRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let who = Credentials::new(&control, &headers, client);
    let (info, reserved): (NameInfo, Reserved) = blocking(control, move |control| {
        let caller = who.caller(control)?;
        let request = body(request)?;
        control.reserve_name(&caller, &request.name)
    })
    .await?;
    let status = match reserved {
        Reserved::New => StatusCode::CREATED,
        Reserved::Existing => StatusCode::OK,
    };
    Ok((status, Json(info)).into_response())
}

pub(super) async fn list_names(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<NameList>, ApiError> {
    let who = Credentials::new(&control, &headers, client);
    let names = blocking(control, move |control| {
        control.list_names(&who.caller(control)?)
    })
    .await?;
    Ok(Json(NameList { names }))
}

pub(super) async fn release_name(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let who = Credentials::new(&control, &headers, client);
    blocking(control, move |control| {
        let caller = who.caller(control)?;
        control.release_name(&caller, &path(name)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn drain(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = Credentials::new(&control, &headers, client);
    let node = blocking(control, move |control| {
        let caller = who.caller(control)?;
        control.request_drain(&caller)
    })
    .await?;
    let answer = super::DrainAnswer {
        draining: true,
        node,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}
