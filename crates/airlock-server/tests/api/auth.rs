//! Authentication: who a key says the caller is, and the one answer every refused credential
//! gets, whatever the reason.

use std::time::Duration;

use airlock_store::KeyOwner;
use airlock_types::{Role, Timestamp, UserId};
use reqwest::Method;
use serde_json::Value;

use crate::common::{Reply, TestApp, UNKNOWN_KEY_ID};

/// The 401 every refusal must match: what a request without any credential gets.
async fn baseline_401(app: &TestApp) -> (Value, Option<String>) {
    let reply = app.get_anonymous("/v1/whoami").await;
    reply.expect_problem(401, "unauthenticated");
    (reply.problem_without_request_id(), reply.header("www-authenticate").map(str::to_owned))
}

#[track_caller]
fn assert_same_refusal(reply: &Reply, baseline: &(Value, Option<String>), what: &str) {
    reply.expect_problem(401, "unauthenticated");
    assert_eq!(reply.problem_without_request_id(), baseline.0, "{what}: the body differs");
    assert_eq!(
        reply.header("www-authenticate").map(str::to_owned),
        baseline.1,
        "{what}: the challenge differs"
    );
}

/// The key with its 43-character secret replaced by another of the same form.
fn with_wrong_secret(key: &str) -> String {
    let (prefix, secret) = key.split_at(key.len() - 43);
    let replacement = if secret.starts_with('A') { "B" } else { "A" };
    format!("{prefix}{}", replacement.repeat(43))
}

#[tokio::test]
async fn whoami_names_an_agent_by_its_name_without_roles() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let agent = app.agent(&tenant.scope, "invoice-bot").await;

    let body = app.get_ok("/v1/whoami", &agent.key.secret).await;
    assert_eq!(
        body,
        serde_json::json!({
            "kind": "agent",
            "id": agent.id,
            "name": "invoice-bot",
            "tenant": { "id": tenant.id, "slug": "acme" },
            "roles": [],
            "authenticated_by": "api_key",
            "credential_id": agent.key.id,
        })
    );
}

#[tokio::test]
async fn whoami_names_a_user_with_their_roles() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let user = app.user(&tenant.scope, "pat@acme.example", &[Role::Builder, Role::Approver]).await;

    let body = app.get_ok("/v1/whoami", &user.key.secret).await;
    assert_eq!(body["kind"], "user");
    assert_eq!(body["id"], user.id);
    assert_eq!(body["name"], "pat@acme.example");
    assert_eq!(body["tenant"]["slug"], "acme");
    assert_eq!(body["roles"], serde_json::json!(["builder", "approver"]));
    assert_eq!(body["credential_id"], user.key.id);
}

#[tokio::test]
async fn whoami_names_an_operator_with_no_tenant() {
    let app = TestApp::spawn().await;
    let operator = app.operator("ops").await;

    let body = app.get_ok("/v1/whoami", &operator.secret).await;
    assert_eq!(body["kind"], "operator");
    assert_eq!(body["name"], "ops");
    assert_eq!(body["tenant"], Value::Null);
    assert_eq!(body["roles"], serde_json::json!([]));
    assert_eq!(body["credential_id"], operator.id);
}

#[tokio::test]
async fn the_x_api_key_header_authenticates_like_a_bearer_token() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let agent = app.agent(&tenant.scope, "bot").await;

    let by_bearer = app.get_ok("/v1/whoami", &agent.key.secret).await;
    let by_header = app
        .send(app.request(Method::GET, "/v1/whoami").header("x-api-key", &agent.key.secret))
        .await
        .expect_status(200);
    assert_eq!(by_bearer, by_header);
    assert_eq!(by_header["id"], agent.id);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let request = app
        .request(Method::GET, "/v1/whoami")
        .header("authorization", format!("bearer {}", tenant.admin.key.secret));
    app.send(request).await.expect_status(200);
}

#[tokio::test]
async fn a_request_without_a_credential_is_challenged() {
    let app = TestApp::spawn().await;
    let reply = app.get_anonymous("/v1/whoami").await;
    let body = reply.expect_problem(401, "unauthenticated");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer realm=\"airlock\""));
    assert!(body["detail"].as_str().unwrap_or_default().contains("`Authorization: Bearer alk_…`"), "{body}");
}

#[tokio::test]
async fn every_refused_credential_gets_the_same_401() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let agent = app.agent(&tenant.scope, "bot").await;
    let session = app.login_as_default_admin().await;
    let baseline = baseline_401(&app).await;

    let unknown = format!("alk_{UNKNOWN_KEY_ID}_{}", "A".repeat(43));
    let refused: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("garbage bearer", app.request(Method::GET, "/v1/whoami").bearer_auth("garbage")),
        ("well formed but unknown", app.request(Method::GET, "/v1/whoami").bearer_auth(&unknown)),
        (
            "a real key id with the wrong secret",
            app.request(Method::GET, "/v1/whoami").bearer_auth(with_wrong_secret(&agent.key.secret)),
        ),
        ("a session token as bearer", app.request(Method::GET, "/v1/whoami").bearer_auth(&session.token)),
        (
            "the Basic scheme",
            app.request(Method::GET, "/v1/whoami").basic_auth(&agent.key.secret, Some("password")),
        ),
        (
            "a key under the Basic scheme",
            app.request(Method::GET, "/v1/whoami")
                .header("authorization", format!("Basic {}", agent.key.secret)),
        ),
        ("an empty bearer", app.request(Method::GET, "/v1/whoami").header("authorization", "Bearer ")),
        ("garbage in x-api-key", app.request(Method::GET, "/v1/whoami").header("x-api-key", "garbage")),
        (
            "a garbage cookie",
            app.request(Method::GET, "/v1/whoami").header("cookie", "airlock_session=als_garbage"),
        ),
    ];
    for (what, request) in refused {
        let reply = app.send(request).await;
        assert_same_refusal(&reply, &baseline, what);
    }
    // The real key was never harmed by the guesses.
    app.get_ok("/v1/whoami", &agent.key.secret).await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_on_the_next_request() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let agent = app.agent(&tenant.scope, "bot").await;
    let baseline = baseline_401(&app).await;
    app.get_ok("/v1/whoami", &agent.key.secret).await;

    let revoked =
        app.delete(&format!("/v1/keys/{}", agent.key.id), &tenant.admin.key.secret).await.expect_status(200);
    assert_eq!(revoked["id"], agent.key.id);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    let reply = app.get("/v1/whoami", &agent.key.secret).await;
    assert_same_refusal(&reply, &baseline, "a revoked key");
    // The revocation touched only that key.
    app.get_ok("/v1/whoami", &tenant.admin.key.secret).await;
}

#[tokio::test]
async fn a_user_can_revoke_their_own_key() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let user = app.user(&tenant.scope, "pat@acme.example", &[Role::Member]).await;

    app.delete(&format!("/v1/keys/{}", user.key.id), &user.key.secret).await.expect_status(200);
    app.get("/v1/whoami", &user.key.secret).await.expect_problem(401, "unauthenticated");
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let baseline = baseline_401(&app).await;
    let lifetime = Duration::from_millis(1500);
    let user = UserId::parse(&tenant.admin.id).unwrap();
    let key = app
        .key_for(&tenant.scope, KeyOwner::User(user), "short-lived", Some(Timestamp::now().plus(lifetime)))
        .await;

    app.get_ok("/v1/whoami", &key.secret).await;
    tokio::time::sleep(lifetime + Duration::from_millis(100)).await;
    let reply = app.get("/v1/whoami", &key.secret).await;
    assert_same_refusal(&reply, &baseline, "an expired key");
}

#[tokio::test]
async fn a_key_created_with_a_lifetime_reports_its_expiry() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let created = app
        .post(
            "/v1/keys",
            &tenant.admin.key.secret,
            &serde_json::json!({ "name": "ci", "expires_in_secs": 3600 }),
        )
        .await
        .expect_status(201);
    assert!(created["key"]["expires_at"].is_string(), "{created}");
    app.get_ok("/v1/whoami", created["secret"].as_str().unwrap()).await;
}
