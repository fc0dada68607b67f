//! Rate limits: login attempts per account, and failed authentications per client address.

use airlock_types::Role;
use reqwest::Method;

use crate::common::{DEFAULT_ADMIN, DEFAULT_TENANT, Reply, TestApp};

/// The default limits.
const LOGIN_ATTEMPTS_PER_MINUTE: usize = 10;
const FAILED_AUTH_PER_MINUTE: usize = 30;

#[track_caller]
fn assert_rate_limited(reply: &Reply) {
    let body = reply.expect_problem(429, "rate-limited");
    let retry_after: u64 =
        reply.header("retry-after").expect("a Retry-After header").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
    assert_eq!(body["detail"], format!("rate limit exceeded; retry in {retry_after} s"));
}

#[tokio::test]
async fn login_attempts_are_limited_per_account() {
    let app = TestApp::spawn().await;
    let tenant = app.default_tenant().await;
    app.user_with_password(&tenant.scope, "ann@localhost", &[Role::Viewer], Some("another long password"))
        .await;

    for _ in 0..LOGIN_ATTEMPTS_PER_MINUTE {
        app.login(DEFAULT_TENANT, DEFAULT_ADMIN, "a wrong password guess")
            .await
            .expect_problem(401, "unauthenticated");
    }
    // Even the right password is refused now, before it is checked.
    let reply = app.login(DEFAULT_TENANT, DEFAULT_ADMIN, &app.admin_password).await;
    assert_rate_limited(&reply);
    assert!(reply.header("set-cookie").is_none());
    // The account's name is matched without regard to case.
    assert_rate_limited(&app.login(DEFAULT_TENANT, "ADMIN@localhost", &app.admin_password).await);

    // Another account from the same address is not affected, nor are API keys.
    app.login(DEFAULT_TENANT, "ann@localhost", "another long password").await.expect_status(201);
    app.get_ok("/v1/whoami", &tenant.admin.key.secret).await;
}

#[tokio::test]
async fn after_too_many_failed_attempts_even_a_valid_key_is_refused_from_that_address() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    app.get_ok("/v1/whoami", &tenant.admin.key.secret).await;

    let mut refused = 0;
    let limited = loop {
        let reply = app.get("/v1/whoami", "garbage").await;
        if reply.status == 429 {
            break reply;
        }
        reply.expect_problem(401, "unauthenticated");
        refused += 1;
        assert!(refused <= FAILED_AUTH_PER_MINUTE + 2, "no limit after {refused} failed attempts");
    };
    assert!(refused >= FAILED_AUTH_PER_MINUTE, "limited after only {refused} failed attempts");
    assert_rate_limited(&limited);

    // Intended: the address is blocked for a while, whatever it presents.
    assert_rate_limited(&app.get("/v1/whoami", &tenant.admin.key.secret).await);
    assert_rate_limited(&app.login(DEFAULT_TENANT, DEFAULT_ADMIN, &app.admin_password).await);
    // Routes that need no credential still answer.
    app.get_anonymous("/healthz").await.expect_status(200);

    let metrics = app.get_anonymous("/metrics").await.text;
    assert!(metrics.contains(r#"airlock_auth_failures_total{reason="rate_limited"}"#), "{metrics}");
    assert!(
        metrics.contains(&format!(r#"airlock_auth_failures_total{{reason="malformed"}} {refused}"#)),
        "{metrics}"
    );
}

#[tokio::test]
async fn missing_credentials_do_not_count_as_failed_attempts() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    for _ in 0..FAILED_AUTH_PER_MINUTE + 5 {
        app.send(app.request(Method::GET, "/v1/whoami")).await.expect_problem(401, "unauthenticated");
    }
    app.get_ok("/v1/whoami", &tenant.admin.key.secret).await;
}
