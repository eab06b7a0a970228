//! One handler a route: authenticate, parse, call [`Control`], answer.

use std::net::SocketAddr;
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

fn caller(control: &Control, headers: &HeaderMap, client: SocketAddr) -> Result<Caller, ApiError> {
    control.authenticate(
        headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
        client.ip(),
    )
}

fn body<T: DeserializeOwned>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
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
            "bad_request",
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
    let caller = caller(&control, &headers, client)?;
    let request = body(request)?;
    control.create_tunnel(&caller, &request).map(Json)
}

pub(super) async fn list_tunnels(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<TunnelList>, ApiError> {
    let caller = caller(&control, &headers, client)?;
    let tunnels = control.list_tunnels(&caller)?;
    Ok(Json(TunnelList { tunnels }))
}

pub(super) async fn show_tunnel(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TunnelInfo>, ApiError> {
    let caller = caller(&control, &headers, client)?;
    control.tunnel(&caller, &path(id)?).map(Json)
}

pub(super) async fn delete_tunnel(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = caller(&control, &headers, client)?;
    control.delete_tunnel(&caller, &path(id)?)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn reserve_name(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Result<Json<NameRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, client)?;
    let request = body(request)?;
    let (info, reserved): (NameInfo, Reserved) = control.reserve_name(&caller, &request.name)?;
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
    let caller = caller(&control, &headers, client)?;
    let names = control.list_names(&caller)?;
    Ok(Json(NameList { names }))
}

pub(super) async fn release_name(
    State(control): State<Arc<Control>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = caller(&control, &headers, client)?;
    control.release_name(&caller, &path(name)?)?;
    Ok(StatusCode::NO_CONTENT)
}
