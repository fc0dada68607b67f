//! Golden problem-details bodies: the shape clients code against. Request ids differ on
//! every request and are redacted.

use serde_json::json;

use crate::common::{TestApp, UNKNOWN_KEY_ID};

#[tokio::test]
async fn the_401_body() {
    let app = TestApp::spawn().await;
    let body = app.get_anonymous("/v1/whoami").await.expect_problem(401, "unauthenticated");
    insta::assert_json_snapshot!("unauthenticated", body, { ".request_id" => "[id]" });
}

#[tokio::test]
async fn the_422_body_for_an_unknown_field() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let body = app
        .post("/v1/agents", &tenant.admin.key.secret, &json!({ "name": "bot", "tenant": "other" }))
        .await
        .expect_problem(422, "invalid-body");
    insta::assert_json_snapshot!("unknown_field", body, { ".request_id" => "[id]" });
}

#[tokio::test]
async fn the_404_body_for_a_key_that_is_not_there() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let body = app
        .get(&format!("/v1/keys/{UNKNOWN_KEY_ID}"), &tenant.admin.key.secret)
        .await
        .expect_problem(404, "not-found");
    insta::assert_json_snapshot!("key_not_found", body, { ".request_id" => "[id]" });
}

#[tokio::test]
async fn the_404_body_for_a_route_that_is_not_there() {
    let app = TestApp::spawn().await;
    let body = app.get_anonymous("/v1/nothing-here").await.expect_problem(404, "not-found");
    insta::assert_json_snapshot!("route_not_found", body, { ".request_id" => "[id]" });
}
