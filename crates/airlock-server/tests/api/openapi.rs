//! The OpenAPI document: version 3.1, and exactly the routes the server serves.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::common::TestApp;

/// Every route the server serves, as `METHOD path`.
const EXPECTED_ROUTES: &[&str] = &[
    "DELETE /admin/v1/kill",
    "DELETE /v1/keys/{id}",
    "DELETE /v1/kill/{id}",
    "DELETE /v1/model-routes/{alias}",
    "DELETE /v1/sessions/current",
    "GET /admin/v1/tenants",
    "GET /v1/allowlists",
    "POST /v1/allowlists",
    "DELETE /v1/allowlists/{id}",
    "GET /v1/flow-settings",
    "PUT /v1/flow-settings",
    "GET /admin/v1/tenants/{id}/export",
    "GET /admin/v1/tenants/{id}/kek",
    "PUT /admin/v1/tenants/{id}/kek",
    "DELETE /admin/v1/tenants/{id}",
    "GET /healthz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /readyz",
    "GET /v1/actions/{id}",
    "GET /v1/agents",
    "GET /v1/approvals",
    "GET /v1/approvals/{id}",
    "GET /v1/audit/checkpoint",
    "GET /v1/audit/entries",
    "GET /v1/audit/export",
    "GET /v1/audit/keys",
    "GET /v1/audit/proofs/consistency",
    "GET /v1/audit/proofs/inclusion",
    "GET /v1/credentials",
    "GET /v1/inspection/profile",
    "GET /v1/keys",
    "GET /v1/keys/{id}",
    "GET /v1/kill",
    "GET /v1/model-routes",
    "GET /v1/model-settings",
    "GET /v1/models",
    "GET /v1/policies",
    "GET /v1/policies/schema",
    "GET /v1/receipts/{id}",
    "GET /v1/runs/{run}",
    "GET /v1/sessions/current",
    "GET /v1/tools",
    "GET /v1/tools/{name}",
    "GET /v1/users",
    "GET /v1/users/{id}",
    "GET /v1/whoami",
    "POST /admin/v1/kill",
    "POST /admin/v1/tenants",
    "POST /v1/agents",
    "POST /v1/approvals/{id}/decision",
    "POST /v1/audit/keys/rotate",
    "POST /v1/chat/completions",
    "POST /v1/inspect",
    "POST /v1/inspect/restore",
    "POST /v1/keys",
    "POST /v1/kill",
    "POST /v1/messages",
    "POST /v1/runs",
    "POST /v1/runs/{run}/actions",
    "POST /v1/runs/{run}/complete",
    "POST /v1/sessions",
    "POST /v1/tool-servers/import",
    "POST /v1/tool-servers/refresh",
    "POST /v1/tools",
    "POST /v1/users",
    "PUT /v1/credentials/{name}",
    "PUT /v1/inspection/profile",
    "PUT /v1/model-routes/{alias}",
    "PUT /v1/model-settings",
    "PUT /v1/policies",
    "PUT /v1/tools/{name}",
    "PUT /v1/users/{id}/roles",
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

async fn document(app: &TestApp) -> Value {
    let reply = app.get_anonymous("/openapi.json").await;
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.expect_status(200)
}

fn documented_routes(document: &Value) -> BTreeSet<String> {
    let paths = document["paths"].as_object().expect("`paths` is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item");
            METHODS
                .iter()
                .filter(|method| item.contains_key(**method))
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect()
}

/// A concrete path for a route template: ids of the right type that exist nowhere.
fn concrete(path: &str) -> String {
    if path.starts_with("/v1/users/") {
        path.replace("{id}", crate::common::UNKNOWN_USER_ID)
    } else {
        path.replace("{id}", crate::common::UNKNOWN_KEY_ID)
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let version = document["openapi"].as_str().expect("an `openapi` field");
    assert!(version.starts_with("3.1"), "OpenAPI version {version}");
    assert_eq!(document["info"]["title"], "Airlock");
    let schemes = document["components"]["securitySchemes"].as_object().expect("security schemes");
    assert!(schemes.contains_key("api_key") && schemes.contains_key("session"), "{schemes:?}");
    assert!(document["components"]["schemas"]["Problem"].is_object(), "the problem schema is documented");
}

#[tokio::test]
async fn the_document_lists_exactly_the_expected_routes() {
    let app = TestApp::spawn().await;
    let documented = documented_routes(&document(&app).await);
    let expected: BTreeSet<String> = EXPECTED_ROUTES.iter().map(|r| (*r).to_owned()).collect();
    assert_eq!(documented, expected);
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let app = TestApp::spawn().await;
    let tenant = app.default_tenant().await;
    for route in documented_routes(&document(&app).await) {
        let (method, path) = route.split_once(' ').expect("`METHOD path`");
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = app.request(method.clone(), &concrete(path)).bearer_auth(&tenant.admin.key.secret);
        if method == Method::POST || method == Method::PUT {
            request = request.json(&serde_json::json!({}));
        }
        let reply = app.send(request).await;
        assert_ne!(reply.status, 405, "{route} is documented but its method is not served: {}", reply.text);
        if reply.status == 404 {
            let detail = reply.json()["detail"].as_str().unwrap_or_default().to_owned();
            assert!(!detail.starts_with("no such route"), "{route} is documented but not served: {detail}");
        }
    }
}

#[tokio::test]
async fn the_document_matches_its_snapshot() {
    let app = TestApp::spawn().await;
    // The package version is redacted so a release does not churn the snapshot.
    insta::assert_json_snapshot!("openapi_document", document(&app).await, { ".info.version" => "[version]" });
}
