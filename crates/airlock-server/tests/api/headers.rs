//! Security headers and request ids, on every kind of response.

use std::collections::BTreeSet;

use reqwest::Method;

use crate::common::{Reply, TestApp};

#[track_caller]
fn assert_security_headers(reply: &Reply, what: &str) {
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
        ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        assert_eq!(reply.header(name), Some(value), "{what}: {name}");
    }
    assert!(reply.header("strict-transport-security").is_none(), "{what}: no HSTS over plain HTTP");
    let id = reply.header("x-request-id").unwrap_or_else(|| panic!("{what}: no x-request-id"));
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{what}: request id {id}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_a_request_id() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let key = &tenant.admin.key.secret;

    let successes = [
        ("healthz", app.get_anonymous("/healthz").await),
        ("metrics", app.get_anonymous("/metrics").await),
        ("openapi", app.get_anonymous("/openapi.json").await),
        ("whoami", app.get("/v1/whoami", key).await),
        ("created", app.post("/v1/agents", key, &serde_json::json!({ "name": "bot" })).await),
    ];
    for (what, reply) in &successes {
        assert!((200..300).contains(&reply.status), "{what}: {}", reply.status);
        assert_security_headers(reply, what);
    }

    let errors = [
        ("401", app.get_anonymous("/v1/whoami").await, 401, "unauthenticated"),
        (
            "403",
            app.post("/admin/v1/tenants", key, &serde_json::json!({ "slug": "x1" })).await,
            403,
            "forbidden",
        ),
        ("404 route", app.get_anonymous("/nowhere").await, 404, "not-found"),
        (
            "404 record",
            app.get(&format!("/v1/keys/{}", crate::common::UNKNOWN_KEY_ID), key).await,
            404,
            "not-found",
        ),
        (
            "405",
            app.send(app.request(Method::PATCH, "/v1/keys").bearer_auth(key)).await,
            405,
            "method-not-allowed",
        ),
        ("400", app.get("/v1/keys/nope", key).await, 400, "invalid-parameter"),
        (
            "415",
            app.send(app.request(Method::POST, "/v1/agents").bearer_auth(key).body("{}")).await,
            415,
            "unsupported-media-type",
        ),
        ("422", app.post("/v1/agents", key, &serde_json::json!({})).await, 422, "invalid-body"),
    ];
    for (what, reply, status, name) in &errors {
        // Also checks that the body's request_id is the header's.
        reply.expect_problem(*status, name);
        assert_security_headers(reply, what);
    }

    let ids: BTreeSet<&str> = successes
        .iter()
        .map(|(_, r)| r)
        .chain(errors.iter().map(|(_, r, _, _)| r))
        .map(|r| r.header("x-request-id").unwrap())
        .collect();
    assert_eq!(ids.len(), successes.len() + errors.len(), "every request gets its own id");
}

#[tokio::test]
async fn a_request_id_sent_by_the_client_is_not_trusted() {
    let app = TestApp::spawn().await;
    let forged = "my-own-request-id";
    let reply = app.send(app.request(Method::GET, "/v1/whoami").header("x-request-id", forged)).await;
    let body = reply.expect_problem(401, "unauthenticated");
    assert_ne!(reply.header("x-request-id"), Some(forged));
    assert_ne!(body["request_id"], forged);
}
