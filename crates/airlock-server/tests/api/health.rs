//! Liveness, readiness, metrics, and what an unknown route gets.

use crate::common::TestApp;

#[tokio::test]
async fn healthz_answers_ok_without_a_credential() {
    let app = TestApp::spawn().await;
    let reply = app.get_anonymous("/healthz").await;
    assert_eq!(reply.expect_status(200), serde_json::json!({ "status": "ok" }));
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn readyz_answers_ok_when_the_database_answers() {
    let app = TestApp::spawn().await;
    let reply = app.get_anonymous("/readyz").await;
    assert_eq!(reply.expect_status(200), serde_json::json!({ "status": "ok" }));
}

#[tokio::test]
async fn metrics_count_requests_and_refusals_in_prometheus_text() {
    let app = TestApp::spawn().await;
    app.get_anonymous("/healthz").await.expect_status(200);
    app.get_anonymous("/healthz").await.expect_status(200);
    app.get("/v1/whoami", "not-a-key").await.expect_problem(401, "unauthenticated");

    let reply = app.get_anonymous("/metrics").await;
    assert_eq!(reply.status, 200);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = &reply.text;
    assert!(text.contains("# TYPE airlock_http_requests counter"), "{text}");
    assert!(
        text.contains(r#"airlock_http_requests_total{method="GET",route="/healthz",status="200"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"airlock_http_requests_total{method="GET",route="/v1/whoami",status="401"} 1"#),
        "{text}"
    );
    assert!(text.contains("airlock_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains(r#"airlock_auth_failures_total{reason="malformed"} 1"#), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with `# EOF`");
}

#[tokio::test]
async fn metrics_label_routes_by_template_never_by_requested_path() {
    let app = TestApp::spawn().await;
    let tenant = app.default_tenant().await;
    app.get(&format!("/v1/keys/{}", tenant.admin.key.id), &tenant.admin.key.secret).await.expect_status(200);
    app.get_anonymous("/no/such/route/secret-looking-path").await.expect_problem(404, "not-found");

    let text = app.get_anonymous("/metrics").await.text;
    assert!(text.contains(r#"route="/v1/keys/{id}""#), "{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(!text.contains(&tenant.admin.key.id), "a key id is never a label");
    assert!(!text.contains("secret-looking-path"), "a requested path is never a label");
}

#[tokio::test]
async fn an_unknown_route_is_a_problem_pointing_at_the_openapi_document() {
    let app = TestApp::spawn().await;
    let body = app.get_anonymous("/v1/nothing-here").await.expect_problem(404, "not-found");
    assert_eq!(body["detail"], "no such route; `GET /openapi.json` lists every route");
}
