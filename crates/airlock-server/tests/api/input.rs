//! Bad input gets a clear, typed problem and changes nothing.

use reqwest::Method;
use serde_json::json;

use crate::common::{TenantFixture, TestApp};

/// What a bad request might have created: the tenant's agents, users and keys.
async fn state_of(app: &TestApp, tenant: &TenantFixture) -> [Vec<String>; 3] {
    let key = &tenant.admin.key.secret;
    [app.ids("/v1/agents", key).await, app.ids("/v1/users", key).await, app.ids("/v1/keys", key).await]
}

fn post_raw(
    app: &TestApp,
    tenant: &TenantFixture,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    let request = app.request(Method::POST, path).bearer_auth(&tenant.admin.key.secret).body(body);
    match content_type {
        Some(content_type) => request.header("content-type", content_type),
        None => request,
    }
}

#[tokio::test]
async fn an_unknown_field_is_refused_by_name() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let before = state_of(&app, &tenant).await;

    let body = app
        .post("/v1/agents", &tenant.admin.key.secret, &json!({ "name": "bot", "colour": "red" }))
        .await
        .expect_problem(422, "invalid-body");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("unknown field `colour`"), "{detail}");
    assert!(
        detail.contains("`name`") && detail.contains("`description`"),
        "the accepted fields are listed: {detail}"
    );

    // A misspelt optional field is an error too, not silently ignored.
    let body = app
        .post("/v1/keys", &tenant.admin.key.secret, &json!({ "name": "k", "expires_in": 60 }))
        .await
        .expect_problem(422, "invalid-body");
    assert!(body["detail"].as_str().unwrap().contains("unknown field `expires_in`"), "{body}");
    assert_eq!(state_of(&app, &tenant).await, before);
}

#[tokio::test]
async fn a_missing_field_is_refused_by_name() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let before = state_of(&app, &tenant).await;

    let body = app
        .post("/v1/agents", &tenant.admin.key.secret, &json!({}))
        .await
        .expect_problem(422, "invalid-body");
    assert!(body["detail"].as_str().unwrap().contains("missing field `name`"), "{body}");
    let body = app
        .post("/v1/users", &tenant.admin.key.secret, &json!({ "email": "x@acme.example" }))
        .await
        .expect_problem(422, "invalid-body");
    assert!(body["detail"].as_str().unwrap().contains("missing field `roles`"), "{body}");
    assert_eq!(state_of(&app, &tenant).await, before);
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_refused() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let before = state_of(&app, &tenant).await;

    for (path, body) in [
        ("/v1/agents", json!({ "name": 5 })),
        ("/v1/users", json!({ "email": "x@acme.example", "roles": "admin" })),
        ("/v1/keys", json!({ "name": "k", "expires_in_secs": -1 })),
        ("/v1/keys", json!({ "name": "k", "expires_in_secs": "soon" })),
        ("/v1/agents", json!("bot")),
    ] {
        let problem =
            app.post(path, &tenant.admin.key.secret, &body).await.expect_problem(422, "invalid-body");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("invalid type") || detail.starts_with("invalid value"),
            "{path} {body}: {detail}"
        );
    }
    assert_eq!(state_of(&app, &tenant).await, before);
}

#[tokio::test]
async fn out_of_range_values_are_refused() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let before = state_of(&app, &tenant).await;

    for body in [
        json!({ "name": "k", "expires_in_secs": 0 }),
        json!({ "name": "k", "expires_in_secs": 10_u64 * 365 * 24 * 3600 + 1 }),
        json!({ "name": "k", "agent": "x", "user_id": tenant.admin.id }),
        json!({ "name": "k", "user_id": "not-a-user-id" }),
    ] {
        app.post("/v1/keys", &tenant.admin.key.secret, &body).await.expect_problem(422, "invalid-body");
    }
    app.post(
        "/v1/agents",
        &tenant.admin.key.secret,
        &json!({ "name": "bot", "description": "x".repeat(201) }),
    )
    .await
    .expect_problem(422, "unprocessable");
    assert_eq!(state_of(&app, &tenant).await, before);
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let before = state_of(&app, &tenant).await;

    for raw in [r#"{"name": "bot""#, "{name: bot}", "", r#"{"name": "bot"} trailing"#] {
        let reply = app.send(post_raw(&app, &tenant, "/v1/agents", Some("application/json"), raw)).await;
        reply.expect_problem(400, "malformed-json");
    }
    assert_eq!(state_of(&app, &tenant).await, before);
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_a_415() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let before = state_of(&app, &tenant).await;
    let json_text = r#"{"name": "bot"}"#;

    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let reply = app.send(post_raw(&app, &tenant, "/v1/agents", content_type, json_text)).await;
        let body = reply.expect_problem(415, "unsupported-media-type");
        assert_eq!(
            body["detail"], "send the body as JSON with `Content-Type: application/json`",
            "{content_type:?}"
        );
    }
    // Parameters and `+json` types are JSON.
    let reply = app
        .send(post_raw(&app, &tenant, "/v1/agents", Some("application/json; charset=utf-8"), json_text))
        .await;
    reply.expect_status(201);
    assert_ne!(state_of(&app, &tenant).await, before);
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let before = state_of(&app, &tenant).await;

    let huge = format!(r#"{{"name": "bot", "description": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let reply = app.send(post_raw(&app, &tenant, "/v1/agents", Some("application/json"), huge)).await;
    let body = reply.expect_problem(413, "payload-too-large");
    assert_eq!(body["detail"], "the request body exceeds the configured limit");
    assert_eq!(state_of(&app, &tenant).await, before);
}

#[tokio::test]
async fn a_malformed_path_id_is_a_400() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let before = state_of(&app, &tenant).await;
    let key = &tenant.admin.key.secret;

    let body = app.get("/v1/keys/not-an-id", key).await.expect_problem(400, "invalid-parameter");
    assert!(body["detail"].as_str().unwrap().contains("`not-an-id` is not"), "{body}");
    app.delete("/v1/keys/not-an-id", key).await.expect_problem(400, "invalid-parameter");
    // An id of the wrong type is not an id of this type.
    app.delete(&format!("/v1/keys/{}", tenant.admin.id), key).await.expect_problem(400, "invalid-parameter");
    app.get(&format!("/v1/users/{}", tenant.admin.key.id), key)
        .await
        .expect_problem(400, "invalid-parameter");
    app.put("/v1/users/usr_XYZ/roles", key, &json!({ "roles": ["viewer"] }))
        .await
        .expect_problem(400, "invalid-parameter");

    assert_eq!(state_of(&app, &tenant).await, before);
    app.get_ok("/v1/whoami", key).await;
}

#[tokio::test]
async fn a_method_a_route_does_not_accept_is_a_405() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let before = state_of(&app, &tenant).await;
    let key = &tenant.admin.key.secret;

    for (method, path) in [
        (Method::PATCH, "/v1/keys".to_owned()),
        (Method::DELETE, "/v1/users".to_owned()),
        (Method::PUT, "/v1/agents".to_owned()),
        (Method::POST, format!("/v1/keys/{}", tenant.admin.key.id)),
        (Method::DELETE, "/admin/v1/tenants".to_owned()),
        (Method::POST, "/healthz".to_owned()),
    ] {
        let reply =
            app.send(app.request(method.clone(), &path).bearer_auth(key).json(&json!({ "name": "x" }))).await;
        let body = reply.expect_problem(405, "method-not-allowed");
        assert_eq!(body["detail"], "this route does not accept that method", "{method} {path}");
        assert!(reply.header("allow").is_some(), "{method} {path} says which methods it allows");
    }
    assert_eq!(state_of(&app, &tenant).await, before);
    app.get_ok(&format!("/v1/keys/{}", tenant.admin.key.id), key).await;
}

#[tokio::test]
async fn authentication_comes_before_the_body_is_read() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let before = state_of(&app, &tenant).await;

    let request =
        app.request(Method::POST, "/v1/agents").header("content-type", "application/json").body("{not json");
    app.send(request).await.expect_problem(401, "unauthenticated");
    assert_eq!(state_of(&app, &tenant).await, before);
}
