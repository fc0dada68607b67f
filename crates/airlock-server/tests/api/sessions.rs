//! Console sessions: login sets an `HttpOnly`, `SameSite=Strict` cookie; state changes made
//! with it need the session's CSRF token; logout ends it; failed logins all look the same.

use std::time::Duration;

use airlock_types::Role;
use reqwest::Method;
use serde_json::json;

use crate::common::{DEFAULT_ADMIN, DEFAULT_TENANT, SESSION_COOKIE, TestApp};

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_returns_a_csrf_token() {
    let app = TestApp::spawn().await;
    let reply = app.login(DEFAULT_TENANT, DEFAULT_ADMIN, &app.admin_password).await;
    let body = reply.expect_status(201);

    let cookie = reply.header("set-cookie").expect("a session cookie");
    assert!(cookie.starts_with(&format!("{SESSION_COOKIE}=als_")), "{cookie}");
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    for expected in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&expected), "{expected} missing from {cookie}");
    }
    assert!(attributes.iter().any(|a| a.starts_with("Max-Age=")), "{cookie}");
    assert!(!attributes.contains(&"Secure"), "plain-HTTP dev mode cannot set Secure: {cookie}");

    assert!(body["id"].as_str().unwrap().starts_with("ses_"), "{body}");
    assert_eq!(body["csrf_token"].as_str().unwrap().len(), 64, "{body}");
    assert_eq!(body["principal"]["name"], DEFAULT_ADMIN);
    assert_eq!(body["principal"]["roles"], json!(["admin"]));
    assert_eq!(body["principal"]["authenticated_by"], "session");
    assert!(body["expires_at"].is_string(), "{body}");
    let token = cookie.split(';').next().unwrap().trim_start_matches(&format!("{SESSION_COOKIE}="));
    assert!(!reply.text.contains(token), "the session token is only in the cookie");
    assert!(!reply.text.contains(&app.admin_password), "the password is never echoed");
}

#[tokio::test]
async fn the_cookie_authenticates_reads() {
    let app = TestApp::spawn().await;
    let session = app.login_as_default_admin().await;

    let whoami =
        app.send(app.with_session(Method::GET, "/v1/whoami", &session, None)).await.expect_status(200);
    assert_eq!(whoami["name"], DEFAULT_ADMIN);
    assert_eq!(whoami["authenticated_by"], "session");
    let current = app
        .send(app.with_session(Method::GET, "/v1/sessions/current", &session, None))
        .await
        .expect_status(200);
    assert_eq!(current["csrf_token"], session.csrf.as_str());
    assert_eq!(current["id"], whoami["credential_id"]);
}

#[tokio::test]
async fn a_state_change_with_the_cookie_needs_the_csrf_token() {
    let app = TestApp::spawn().await;
    let tenant = app.default_tenant().await;
    let session = app.login_as_default_admin().await;
    let before = app.ids("/v1/agents", &tenant.admin.key.secret).await;
    let create = |csrf: Option<&str>| {
        app.with_session(Method::POST, "/v1/agents", &session, csrf).json(&json!({ "name": "console-bot" }))
    };

    let body = app.send(create(None)).await.expect_problem(403, "csrf-failed");
    assert_eq!(
        body["detail"],
        "a console session must send its CSRF token in `x-csrf-token` to change state"
    );
    let wrong = "0".repeat(64);
    app.send(create(Some(&wrong))).await.expect_problem(403, "csrf-failed");
    app.send(create(Some(""))).await.expect_problem(403, "csrf-failed");
    assert_eq!(app.ids("/v1/agents", &tenant.admin.key.secret).await, before, "nothing was created");

    let created = app.send(create(Some(&session.csrf))).await.expect_status(201);
    assert_eq!(created["name"], "console-bot");
}

#[tokio::test]
async fn another_sessions_csrf_token_does_not_fit() {
    let app = TestApp::spawn().await;
    let first = app.login_as_default_admin().await;
    let second = app.login_as_default_admin().await;
    assert_ne!(first.csrf, second.csrf);

    let request = app
        .with_session(Method::POST, "/v1/agents", &first, Some(&second.csrf))
        .json(&json!({ "name": "x" }));
    app.send(request).await.expect_problem(403, "csrf-failed");
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = TestApp::spawn().await;
    let session = app.login_as_default_admin().await;

    // Logging out changes state, so it needs the token too.
    app.send(app.with_session(Method::DELETE, "/v1/sessions/current", &session, None))
        .await
        .expect_problem(403, "csrf-failed");
    app.send(app.with_session(Method::GET, "/v1/whoami", &session, None)).await.expect_status(200);

    let reply = app
        .send(app.with_session(Method::DELETE, "/v1/sessions/current", &session, Some(&session.csrf)))
        .await;
    reply.expect_status(204);
    let cleared = reply.header("set-cookie").expect("the cookie is cleared");
    assert!(
        cleared.starts_with(&format!("{SESSION_COOKIE}=;")) && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    app.send(app.with_session(Method::GET, "/v1/whoami", &session, None))
        .await
        .expect_problem(401, "unauthenticated");
    app.send(app.with_session(Method::GET, "/v1/sessions/current", &session, None))
        .await
        .expect_problem(401, "unauthenticated");
}

#[tokio::test]
async fn an_api_key_needs_no_csrf_token_and_has_no_current_session() {
    let app = TestApp::spawn().await;
    let tenant = app.default_tenant().await;
    app.post("/v1/agents", &tenant.admin.key.secret, &json!({ "name": "bot" })).await.expect_status(201);
    app.get("/v1/sessions/current", &tenant.admin.key.secret).await.expect_problem(404, "not-found");
    app.delete("/v1/sessions/current", &tenant.admin.key.secret).await.expect_problem(404, "not-found");
    app.get_ok("/v1/whoami", &tenant.admin.key.secret).await;
}

#[tokio::test]
async fn every_failed_login_gets_the_same_401() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    app.user(&tenant.scope, "nopass@acme.example", &[Role::Admin]).await;
    let baseline = app.get_anonymous("/v1/whoami").await.problem_without_request_id();
    let password = app.admin_password.clone();

    for (what, tenant, email, password) in [
        ("a wrong password", DEFAULT_TENANT, DEFAULT_ADMIN, "wrong password, long enough"),
        ("an unknown user", DEFAULT_TENANT, "nobody@localhost", password.as_str()),
        ("an unknown tenant", "no-such-tenant", DEFAULT_ADMIN, password.as_str()),
        ("the right password in another tenant", "acme", DEFAULT_ADMIN, password.as_str()),
        ("a user without a password", "acme", "nopass@acme.example", ""),
        ("a malformed tenant", "NOT A SLUG", DEFAULT_ADMIN, password.as_str()),
        ("a malformed e-mail", DEFAULT_TENANT, "not an e-mail", password.as_str()),
    ] {
        let reply = app.login(tenant, email, password).await;
        reply.expect_problem(401, "unauthenticated");
        assert_eq!(reply.problem_without_request_id(), baseline, "{what}");
        assert!(reply.header("set-cookie").is_none(), "{what}: no cookie");
    }
}

#[tokio::test]
async fn a_user_created_with_a_password_can_log_in() {
    let app = TestApp::spawn().await;
    let tenant = app.default_tenant().await;
    app.post(
        "/v1/users",
        &tenant.admin.key.secret,
        &json!({ "email": "ann@example.com", "roles": ["approver"], "password": "correct horse battery" }),
    )
    .await
    .expect_status(201);

    let body = app.login(DEFAULT_TENANT, "ANN@example.com", "correct horse battery").await.expect_status(201);
    assert_eq!(body["principal"]["name"], "ann@example.com");
    assert_eq!(body["principal"]["roles"], json!(["approver"]));
}

#[tokio::test]
async fn a_session_left_idle_too_long_ends() {
    let idle = Duration::from_secs(1);
    let app = TestApp::spawn_with(|config| config.session_idle = idle).await;
    let session = app.login_as_default_admin().await;
    app.send(app.with_session(Method::GET, "/v1/whoami", &session, None)).await.expect_status(200);

    tokio::time::sleep(idle + Duration::from_millis(150)).await;
    app.send(app.with_session(Method::GET, "/v1/whoami", &session, None))
        .await
        .expect_problem(401, "unauthenticated");
}

#[tokio::test]
async fn a_session_ends_at_its_lifetime_however_active() {
    let lifetime = Duration::from_secs(1);
    let app = TestApp::spawn_with(|config| config.session_lifetime = lifetime).await;
    let reply = app.login(DEFAULT_TENANT, DEFAULT_ADMIN, &app.admin_password).await;
    reply.expect_status(201);
    assert!(
        reply.header("set-cookie").unwrap().contains("Max-Age=1"),
        "the cookie lives as long as the session"
    );
    let session = app.login_as_default_admin().await;

    // Activity keeps the idle timer fresh but does not extend the lifetime.
    for _ in 0..3 {
        app.send(app.with_session(Method::GET, "/v1/whoami", &session, None)).await.expect_status(200);
        tokio::time::sleep(lifetime / 3).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.send(app.with_session(Method::GET, "/v1/whoami", &session, None))
        .await
        .expect_problem(401, "unauthenticated");
}
