//! The inspector's web server: the page at `/` and a JSON API that follows ngrok's
//! agent API (`/api/tunnels`, `/api/requests/http`), with HAR and curl export,
//! replay, TCP connections and a live feed (server-sent events).
//!
//! It listens on loopback by default. A web page the user visits could still aim
//! requests at it, so it answers only requests whose `Host` is a loopback name or
//! its own address (DNS rebinding), and changes (replay, clear) only for requests
//! with a JSON body and without a foreign `Origin` (cross-site forms).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use super::json::{self as show, View};
use super::paged::{Paged, Show};
use super::replay::{Edits, ReplayError, replay};
use super::store::Change;
use super::{DEFAULT_ADDR, DEFAULT_PORT_LAST, Inspector, har};

/// The page, one file with its styles and script.
const PAGE: &str = include_str!("page.html");
/// Records a list answers with when no `limit` is given (and at most).
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 10_000;

/// Where the inspector should listen (`--inspect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectAddr {
    /// 127.0.0.1:4040, or the next free port up to 4049.
    Default,
    /// This address, or an error.
    At(SocketAddr),
}

/// Why the inspector could not listen.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The given address was taken or not allowed.
    #[error(
        "the inspector could not listen on {addr} ({reason}); pass another --inspect ADDR or --inspect off"
    )]
    At {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        reason: String,
    },
    /// Every default port was taken.
    #[error(
        "the inspector found ports 4040 to 4049 on 127.0.0.1 all taken; pass --inspect ADDR or --inspect off"
    )]
    AllTaken,
}

/// Binds the inspector's listener and notes its address in `inspector`.
pub async fn bind(inspector: &Inspector, at: InspectAddr) -> Result<TcpListener, BindError> {
    let listener = match at {
        InspectAddr::At(addr) => TcpListener::bind(addr).await.map_err(|e| BindError::At {
            addr,
            reason: e.to_string(),
        })?,
        InspectAddr::Default => bind_first_free(DEFAULT_ADDR, DEFAULT_PORT_LAST)
            .await
            .ok_or(BindError::AllTaken)?,
    };
    if let Ok(addr) = listener.local_addr() {
        inspector.set_addr(addr);
    }
    Ok(listener)
}

/// The first of `first`'s port up to `last` that can be bound on its host.
async fn bind_first_free(first: SocketAddr, last: u16) -> Option<TcpListener> {
    for port in first.port()..=last {
        let mut addr = first;
        addr.set_port(port);
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
    }
    None
}

/// Serves the page and the API on `listener` until the process ends.
pub async fn serve(inspector: Inspector, listener: TcpListener) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(page))
        .route("/api/tunnels", get(tunnels))
        .route(
            "/api/requests/http",
            get(list).post(replay_one).delete(clear),
        )
        .route("/api/requests/http/har", get(har_all))
        .route("/api/requests/http/{id}", get(one))
        .route("/api/requests/http/{id}/har", get(har_one))
        .route("/api/requests/http/{id}/curl", get(curl))
        .route("/api/connections/tcp", get(connections))
        .route("/api/events", get(events))
        .layer(middleware::from_fn_with_state(inspector.clone(), guard))
        .with_state(inspector);
    axum::serve(listener, app).await
}

/// Refuses requests a foreign web page could have aimed at the inspector.
async fn guard(State(inspector): State<Inspector>, request: Request, next: Next) -> Response {
    let own = inspector.addr();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !local_host(host, own) {
        return error(
            StatusCode::FORBIDDEN,
            "bad_host",
            "the inspector answers only to its own address; open it at the address the agent printed",
        );
    }
    // Browsers say where a request comes from: another site's page may not even
    // read (a history export costs the agent memory and CPU, answered or not).
    let site = request
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if site == "cross-site" || site == "same-site" {
        return error(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "the inspector answers only its own page; open it at the address the agent printed",
        );
    }
    if request.method() != Method::GET {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let origin_ok = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .is_none_or(|o| {
                o.strip_prefix("http://")
                    .is_some_and(|h| local_host(h, own))
            });
        if request.method() != Method::DELETE && !json || !origin_ok {
            return error(
                StatusCode::FORBIDDEN,
                "bad_origin",
                "changes need a JSON body from the inspector's own page; send Content-Type: application/json",
            );
        }
    }
    // What an answer shows includes every request that passed before it was asked.
    inspector.settle().await;
    let mut response = next.run(request).await;
    // Never inside another site's frame (a disguised click on Replay), never
    // sniffed as another type.
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
    }
    response
}

/// `localhost[:port]`, a loopback address, or the inspector's own address.
fn local_host(host: &str, own: Option<SocketAddr>) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || own.is_some_and(|a| a.ip() == ip),
        Err(_) => false,
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (
        status,
        axum::Json(json!({ "error_code": code, "msg": message })),
    )
        .into_response();
    response.headers_mut().insert(
        "x-netbore-error",
        HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("error")),
    );
    response
}

fn view<R>(inspector: &Inspector, f: impl FnOnce(View<'_>) -> R) -> R {
    let tunnels = inspector.tunnels();
    f(View {
        secrets: inspector.config().secrets,
        tunnels: &tunnels,
    })
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

async fn tunnels(State(inspector): State<Inspector>) -> axum::Json<Value> {
    axum::Json(show::tunnels(&inspector))
}

/// `limit` from the query string.
fn limit(uri: &Uri) -> usize {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("limit="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LIMIT)
        .min(MAX_LIMIT)
}

async fn list(State(inspector): State<Inspector>, uri: Uri) -> Response {
    let summary = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|p| p == "summary=1");
    let show = if summary {
        Show::Outline(show::summary)
    } else {
        Show::Full(|v, e| show::exchange(v, e, true))
    };
    let seqs = inspector.newest_seqs(limit(&uri));
    let head = r#"{"uri":"/api/requests/http","requests":["#.to_string();
    json_response(Paged::new(inspector, seqs, show, head, "]}"))
}

/// A JSON answer written as it is read.
fn json_response(paged: Paged) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        paged.into_body(),
    )
        .into_response()
}

fn find(inspector: &Inspector, id: &str) -> Result<super::Exchange, Box<Response>> {
    show::parse_id(id, "r_")
        .and_then(|seq| inspector.exchange(seq))
        .ok_or_else(|| {
            Box::new(error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no request {id} is kept; it may have left the history"),
            ))
        })
}

async fn one(State(inspector): State<Inspector>, Path(id): Path<String>) -> Response {
    match find(&inspector, &id) {
        Ok(e) => axum::Json(view(&inspector, |v| show::exchange(v, &e, true))).into_response(),
        Err(r) => *r,
    }
}

async fn har_one(State(inspector): State<Inspector>, Path(id): Path<String>) -> Response {
    match find(&inspector, &id) {
        Ok(e) => {
            let entry = view(&inspector, |v| har::entry(v, &e));
            let log = format!("{}{entry}{}", har::head(), har::TAIL);
            download(
                ([(header::CONTENT_TYPE, "application/json")], log).into_response(),
                &format!("netbore-{id}.har"),
            )
        }
        Err(r) => *r,
    }
}

async fn har_all(State(inspector): State<Inspector>) -> Response {
    let mut seqs = inspector.newest_seqs(usize::MAX);
    seqs.reverse();
    har_response(&inspector, seqs, "netbore.har")
}

/// A HAR log of the exchanges `seqs`, oldest first, as a download.
fn har_response(inspector: &Inspector, seqs: Vec<u64>, file: &str) -> Response {
    let paged = Paged::new(
        inspector.clone(),
        seqs,
        Show::Full(har::entry),
        har::head(),
        har::TAIL,
    );
    download(json_response(paged), file)
}

/// `response` as a download named `file`.
fn download(mut response: Response, file: &str) -> Response {
    let disposition = format!("attachment; filename=\"{file}\"");
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

async fn curl(State(inspector): State<Inspector>, Path(id): Path<String>) -> Response {
    match find(&inspector, &id) {
        Ok(e) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            view(&inspector, |v| show::curl(v, &e)),
        )
            .into_response(),
        Err(r) => *r,
    }
}

async fn replay_one(State(inspector): State<Inspector>, body: axum::body::Bytes) -> Response {
    let edits: Edits = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!(
                    "the replay request is not valid JSON of the documented shape ({e}); send {{\"id\": \"r_…\"}}"
                ),
            );
        }
    };
    let Some(seq) = show::parse_id(&edits.id, "r_") else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no request {} is kept; ids look like r_00000001", edits.id),
        );
    };
    match replay(&inspector, seq, &edits).await {
        Ok(new) => axum::Json(json!({ "id": show::request_id(new) })).into_response(),
        Err(e @ ReplayError::NotFound(_)) => {
            error(StatusCode::NOT_FOUND, "not_found", &e.to_string())
        }
        Err(e @ (ReplayError::Truncated | ReplayError::BadEdit(_))) => {
            error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string())
        }
        Err(e @ ReplayError::Origin { .. }) => error(
            StatusCode::BAD_GATEWAY,
            "origin_unreachable",
            &e.to_string(),
        ),
    }
}

async fn clear(State(inspector): State<Inspector>) -> StatusCode {
    inspector.clear();
    StatusCode::NO_CONTENT
}

async fn connections(State(inspector): State<Inspector>, uri: Uri) -> axum::Json<Value> {
    let list = inspector.connections(limit(&uri));
    let connections: Vec<Value> = view(&inspector, |v| {
        list.iter().map(|c| show::connection(v, c)).collect()
    });
    axum::Json(json!({ "uri": "/api/connections/tcp", "connections": connections }))
}

/// The live feed: each change to the history as an event with its record.
async fn events(State(inspector): State<Inspector>, headers: HeaderMap) -> Response {
    let _ = headers;
    let feed = inspector.subscribe();
    let stream =
        futures_util::stream::unfold((inspector, feed), |(inspector, mut feed)| async move {
            let event = loop {
                let event = match feed.recv().await {
                    // A summary, from a copy without the bodies' bytes: a record's
                    // bodies are fetched when a person opens it, not for every change.
                    Ok(Change::Request(seq)) => {
                        let tunnels = inspector.tunnels();
                        let v = View {
                            secrets: inspector.config().secrets,
                            tunnels: &tunnels,
                        };
                        match inspector.copy(seq, true).map(|e| show::summary(v, &e)) {
                            Some(summary) => {
                                Event::default().event("request").data(summary.to_string())
                            }
                            None => continue,
                        }
                    }
                    Ok(Change::Connection(seq)) => match inspector.connection(seq) {
                        Some(c) => Event::default()
                            .event("connection")
                            .data(view(&inspector, |v| show::connection(v, &c)).to_string()),
                        None => continue,
                    },
                    Ok(Change::Cleared) => Event::default().event("clear").data("{}"),
                    Err(RecvError::Lagged(_)) => Event::default().event("reload").data("{}"),
                    Err(RecvError::Closed) => return None,
                };
                break event;
            };
            Some((Ok::<_, Infallible>(event), (inspector, feed)))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_moves_the_inspector_to_the_next() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let first = taken.local_addr().unwrap();
        let Some(last) = first.port().checked_add(3) else {
            return;
        };
        let got = bind_first_free(first, last).await.expect("a free port");
        let port = got.local_addr().unwrap().port();
        assert!(port > first.port() && port <= last, "{port}");
        // None free: none found.
        assert!(bind_first_free(first, first.port()).await.is_none());
    }

    #[test]
    fn only_local_hosts_pass() {
        let own = Some("127.0.0.1:4040".parse().unwrap());
        for ok in [
            "127.0.0.1:4040",
            "localhost:4041",
            "[::1]:4040",
            "LOCALHOST",
        ] {
            assert!(local_host(ok, own), "{ok}");
        }
        for bad in [
            "evil.example:4040",
            "192.0.2.1:4040",
            "",
            "localhost.evil.example",
        ] {
            assert!(!local_host(bad, own), "{bad}");
        }
        let wide = Some("192.0.2.9:4040".parse().unwrap());
        assert!(local_host("192.0.2.9:4040", wide));
    }
}
