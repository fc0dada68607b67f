//! Secrets never leave: a key's secret is shown once, at creation; no response carries a
//! password or a stored hash.

use reqwest::Method;
use serde_json::json;

use crate::common::{Reply, TestApp};

/// Field names no response may carry.
const FORBIDDEN_FIELDS: &[&str] = &["secret_hash", "password", "password_hash", "token"];

#[track_caller]
fn assert_no_secret(reply: &Reply, secret: &str, what: &str) {
    assert!(!reply.text.contains(secret), "{what} leaks the key");
    let random_part = &secret[secret.len() - 43..];
    assert!(!reply.text.contains(random_part), "{what} leaks the key's random part");
    for field in FORBIDDEN_FIELDS {
        assert!(
            !reply.text.contains(&format!("\"{field}\"")),
            "{what} carries a `{field}` field: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn a_created_keys_secret_is_shown_once_and_never_again() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;

    let created = app.post("/v1/keys", admin, &json!({ "name": "ci" })).await;
    let body = created.expect_status(201);
    let secret = body["secret"].as_str().unwrap().to_owned();
    let id = body["key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(&format!("alk_{id}_")), "the key embeds its id: {secret}");
    assert_eq!(body["key"]["owner"], json!({ "kind": "user", "id": tenant.admin.id }));

    let later = [
        ("the key list", app.get("/v1/keys", admin).await),
        ("the key", app.get(&format!("/v1/keys/{id}"), admin).await),
        ("whoami with the key", app.get("/v1/whoami", &secret).await),
        ("the key list seen by the key", app.get("/v1/keys", &secret).await),
        ("the revoked key", app.delete(&format!("/v1/keys/{id}"), admin).await),
        ("the key list after revocation", app.get("/v1/keys", admin).await),
        ("a refusal of the key", app.get("/v1/whoami", &secret).await),
        ("the users", app.get("/v1/users", admin).await),
        ("the metrics", app.get_anonymous("/metrics").await),
    ];
    for (what, reply) in &later {
        assert!(reply.status < 500, "{what}: {}", reply.text);
        assert_no_secret(reply, &secret, what);
    }
}

#[tokio::test]
async fn passwords_and_hashes_appear_in_no_response() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    let password = "a password nobody may see";

    let created = app
        .post(
            "/v1/users",
            admin,
            &json!({ "email": "ann@acme.example", "roles": ["viewer"], "password": password }),
        )
        .await;
    let user = created.expect_status(201);
    let login = app.login("acme", "ann@acme.example", password).await;
    let session_token =
        login.header("set-cookie").unwrap().split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let cookie = format!("airlock_session={session_token}");

    let replies = [
        ("the created user", created),
        ("the login", login),
        ("the users", app.get("/v1/users", admin).await),
        ("the user", app.get(&format!("/v1/users/{}", user["id"].as_str().unwrap()), admin).await),
        (
            "the current session",
            app.send(app.request(Method::GET, "/v1/sessions/current").header("cookie", &cookie)).await,
        ),
        (
            "whoami by session",
            app.send(app.request(Method::GET, "/v1/whoami").header("cookie", &cookie)).await,
        ),
        ("the keys", app.get("/v1/keys", admin).await),
    ];
    for (what, reply) in &replies {
        assert!(reply.status < 300, "{what}: {}", reply.text);
        assert!(!reply.text.contains(password), "{what} leaks the password");
        assert!(!reply.text.contains("$argon2"), "{what} leaks a password hash");
        assert!(!reply.text.contains(&session_token), "{what} leaks the session token");
        for field in FORBIDDEN_FIELDS {
            assert!(
                !reply.text.contains(&format!("\"{field}\"")),
                "{what} carries a `{field}` field: {}",
                reply.text
            );
        }
    }
}

#[tokio::test]
async fn a_refused_credential_is_not_echoed() {
    let app = TestApp::spawn().await;
    let guess = format!("alk_{}_{}", crate::common::UNKNOWN_KEY_ID, "S".repeat(43));
    let reply = app.get("/v1/whoami", &guess).await;
    reply.expect_problem(401, "unauthenticated");
    assert!(!reply.text.contains(&guess[4..]), "{}", reply.text);
}
