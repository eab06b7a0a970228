//! The OpenAPI document against the router: every route documented, every documented
//! route served, unknown paths and methods answered in the one error shape.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{OPENAPI, ROUTES, router};
use crate::store::SqliteStore;
use crate::tokens::TokenSigner;
use crate::{
    Control, ControlConfig, DisconnectReason, PlaceRequest, Placed, Placement, PlacementError,
    TunnelStatus,
};

/// A control plane with no Edge behind it: it places nothing.
struct NoEdge;

impl Placement for NoEdge {
    fn place(&self, _: &PlaceRequest) -> Result<Placed, PlacementError> {
        Err(PlacementError {
            code: netbore_codes::ErrorCode::ProtocolNotServed,
            message: "no Edge serves this control plane".into(),
        })
    }
    fn status(&self, _: &str) -> TunnelStatus {
        TunnelStatus::Offline
    }
    fn disconnect(&self, _: &str, _: DisconnectReason) -> bool {
        false
    }
}

#[test]
fn document_is_json_and_lists_every_route() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("docs/openapi.yaml is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        let op = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is missing from docs/openapi.yaml"))
            [method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{method} {path} is missing from docs/openapi.yaml"
        );
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} documents no responses"
        );
    }
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            assert!(
                ROUTES
                    .iter()
                    .any(|(m, p)| p == path && m.eq_ignore_ascii_case(method)),
                "docs/openapi.yaml documents {method} {path}, which the router does not serve"
            );
        }
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, head.to_string(), body)
}

#[tokio::test]
async fn router_serves_every_documented_route() {
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let control = Control::new(
        ControlConfig::default(),
        TokenSigner::generate(),
        Box::new(NoEdge),
        store,
    );
    let app = router(Arc::new(control)).into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    for (method, path) in ROUTES {
        let path = path.replace("{id}", "tun_x").replace("{name}", "x");
        let (status, _, body) = request(addr, method, &path).await;
        let fell_through = body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such API endpoint"));
        assert!(
            !fell_through,
            "{method} {path} fell through to the fallback"
        );
        assert_ne!(status, 405, "{method} {path} is not routed");
        if status >= 400 {
            assert!(body["error"]["code"].is_string(), "{method} {path}: {body}");
            assert!(
                body["error"]["message"].is_string(),
                "{method} {path}: {body}"
            );
        }
    }
    let (status, _, body) = request(addr, "GET", "/no/such/thing").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, head, body) = request(addr, "PATCH", "/tunnels").await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert!(
        head.to_ascii_lowercase().contains("\r\nallow: get"),
        "{head}"
    );
    let (status, head, body) = request(addr, "GET", "/openapi.json").await;
    assert_eq!(status, 200);
    assert!(head.contains("application/json"));
    assert_eq!(body, serde_json::from_str::<Value>(OPENAPI).unwrap());
}

#[test]
fn metrics_label_requests_by_route_template() {
    assert_eq!(super::route_of("/tunnels/t_abc"), "/tunnels/{id}");
    assert_eq!(super::route_of("/tunnels/create"), "/tunnels/create");
    assert_eq!(super::route_of("/names/x"), "/names/{name}");
    assert_eq!(super::route_of("/tunnels/"), "unmatched");
    assert_eq!(super::route_of("/etc/passwd"), "unmatched");
}
