//! Tools, credentials and policies over the API: validated before they are stored, recorded
//! in the audit log, scoped to the tenant, and credential secrets never shown again.

use airlock_types::Role;
use serde_json::{Value, json};

use crate::common::TestApp;

fn tool(name: &str) -> Value {
    json!({
        "name": name,
        "description": "Send an e-mail",
        "tier": "egress",
        "side_effects": true,
        "input_schema": {
            "type": "object",
            "properties": {
                "to": {"type": "string", "x-airlock-sensitive": "recipient"},
                "subject": {"type": "string"}
            },
            "required": ["to"]
        },
        "connector": {"kind": "http", "method": "POST", "url": "https://mail.example.com/send/{to}"},
    })
}

#[tokio::test]
async fn a_builder_registers_a_tool_whose_schema_then_rejects_unknown_arguments() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let builder = app.user(&tenant.scope, "bo@acme.example", &[Role::Builder]).await;
    let created = app.post("/v1/tools", &builder.key.secret, &tool("send_email")).await.expect_status(201);
    assert_eq!(created["version"], 1);
    assert_eq!(created["input_schema"]["additionalProperties"], false, "unknown arguments are rejected");
    assert_eq!(created["sensitive_arguments"], json!([{"pointer": "/to", "kind": "recipient"}]));
    assert_eq!(created["classification"], "internal");

    let mut changed = tool("send_email");
    changed.as_object_mut().unwrap().remove("name");
    changed["tier"] = json!("financial");
    let updated = app.put("/v1/tools/send_email", &builder.key.secret, &changed).await.expect_status(200);
    assert_eq!((updated["version"].as_i64(), updated["tier"].as_str()), (Some(2), Some("financial")));
    app.post("/v1/tools", &builder.key.secret, &tool("send_email")).await.expect_problem(409, "conflict");
}

#[tokio::test]
async fn invalid_tools_are_refused_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let key = &tenant.admin.key.secret;
    let cases: Vec<(&str, Value)> = vec![
        ("name", json!("Send Email")),
        ("tier", json!("nuclear")),
        ("classification", json!("top-secret")),
        ("cost_cents", json!(-1)),
        ("input_schema", json!({"type": "string"})),
        (
            "input_schema",
            json!({"type": "object", "properties": {"u": {"$ref": "https://evil.example.com/x.json"}}}),
        ),
        (
            "input_schema",
            json!({"type": "object", "properties": {"u": {"type": "string", "pattern": "(?<=a)b"}}}),
        ),
        (
            "connector",
            json!({"kind": "http", "method": "POST", "url": "https://x.example.com", "headers": {"Authorization": "Bearer leak"}}),
        ),
        ("connector", json!({"kind": "http", "method": "POST", "url": "https://{host}/x"})),
        ("connector", json!({"kind": "smtp"})),
        ("credential", json!("no-such-credential")),
    ];
    for (field, value) in cases {
        let mut body = tool("send_email");
        body[field] = value.clone();
        let reply = app.post("/v1/tools", key, &body).await;
        assert!(matches!(reply.status, 404 | 422), "{field}={value}: {} {}", reply.status, reply.text);
    }
    let mut unknown = tool("send_email");
    unknown["owner"] = json!("me");
    app.post("/v1/tools", key, &unknown).await.expect_problem(422, "invalid-body");
    assert_eq!(app.get_ok("/v1/tools", key).await, json!([]));
}

#[tokio::test]
async fn only_builders_and_admins_change_tools_and_agents_do_not_browse_them() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let viewer = app.user(&tenant.scope, "vi@acme.example", &[Role::Viewer]).await;
    let agent = app.agent(&tenant.scope, "bot").await;
    app.post("/v1/tools", &viewer.key.secret, &tool("t")).await.expect_problem(403, "forbidden");
    app.post("/v1/tools", &agent.key.secret, &tool("t")).await.expect_problem(403, "forbidden");
    app.post("/v1/tools", &tenant.admin.key.secret, &tool("t")).await.expect_status(201);
    assert_eq!(app.get_ok("/v1/tools", &viewer.key.secret).await.as_array().unwrap().len(), 1);
    app.get("/v1/tools", &agent.key.secret).await.expect_problem(403, "forbidden");
}

#[tokio::test]
async fn a_credential_secret_is_never_returned_logged_or_audited() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let key = &tenant.admin.key.secret;
    let secret = "sk-live-9b8a7c6d5e4f3a2b1c0d";
    let stored = app
        .put("/v1/credentials/mail-token", key, &json!({"kind": "bearer", "token": secret}))
        .await
        .expect_status(200);
    assert_eq!(stored["kind"], "bearer");
    let mut body = tool("send_email");
    body["credential"] = json!("mail-token");
    app.post("/v1/tools", key, &body).await.expect_status(201);
    let rotated = app
        .put(
            "/v1/credentials/mail-token",
            key,
            &json!({"kind": "basic", "username": "u", "password": format!("{secret}-2")}),
        )
        .await
        .expect_status(200);
    assert_eq!(rotated["id"], stored["id"]);

    let mut seen = String::new();
    for path in [
        "/v1/credentials",
        "/v1/tools",
        "/v1/tools/send_email",
        "/v1/audit/export",
        "/v1/audit/entries?format=csv",
    ] {
        seen.push_str(&app.get(path, key).await.text);
    }
    assert!(!seen.contains("sk-live"), "a credential secret was returned");
    assert!(seen.contains("credential.stored") && seen.contains("credential.rotated"));
    for bad in [
        json!({"kind": "bearer", "token": ""}),
        json!({"kind": "bearer"}),
        json!({"kind": "api_key_header", "header": "Host", "value": "x"}),
        json!({"kind": "oauth_client_credentials", "token_url": "http://idp.example.com/token", "client_id": "a", "client_secret": "b"}),
        json!({"kind": "password", "value": "x"}),
    ] {
        app.put("/v1/credentials/other", key, &bad).await.expect_problem(422, "invalid-body");
    }
    let builder = app.user(&tenant.scope, "bo@acme.example", &[Role::Builder]).await;
    app.put("/v1/credentials/x", &builder.key.secret, &json!({"kind": "bearer", "token": "t"}))
        .await
        .expect_problem(403, "forbidden");
}

#[tokio::test]
async fn policies_are_validated_versioned_and_audited() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let key = &tenant.admin.key.secret;
    assert_eq!(app.get_ok("/v1/policies", key).await["version"], 0);
    let schema = app.get("/v1/policies/schema", key).await;
    assert_eq!(schema.status, 200);
    assert!(schema.text.contains("namespace Airlock"), "{}", schema.text);
    let invalid = app
        .put(
            "/v1/policies",
            key,
            &json!({"text": "forbid(principal, action, resource) when { resource.owner == \"x\" };"}),
        )
        .await
        .expect_problem(422, "unprocessable");
    assert!(invalid["detail"].as_str().unwrap().contains("owner"), "{invalid}");
    app.put("/v1/policies", key, &json!({"text": "permit(principal, action, resource"}))
        .await
        .expect_problem(422, "unprocessable");
    assert_eq!(app.get_ok("/v1/policies", key).await["version"], 0, "a refused policy changes nothing");

    let text = "@id(\"no-bulk\") @reason(\"bulk actions are off\") forbid(principal, action, resource) when { resource.tier == \"bulk\" };";
    let written = app.put("/v1/policies", key, &json!({"text": text})).await.expect_status(200);
    assert_eq!(written["version"], 1);
    assert_eq!(app.get_ok("/v1/policies", key).await["text"], text);
    let entries = app.get("/v1/audit/entries?type=policy.updated", key).await.text;
    assert_eq!(entries.lines().count(), 1);

    let agent = app.agent(&tenant.scope, "bot").await;
    app.put("/v1/policies", &agent.key.secret, &json!({"text": text})).await.expect_problem(403, "forbidden");
}

#[tokio::test]
async fn another_tenants_tools_do_not_exist() {
    let app = TestApp::spawn().await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    app.post("/v1/tools", &b.admin.key.secret, &tool("b_only")).await.expect_status(201);
    app.get("/v1/tools/b_only", &a.admin.key.secret).await.expect_problem(404, "not-found");
    let mut update = tool("b_only");
    update.as_object_mut().unwrap().remove("name");
    app.put("/v1/tools/b_only", &a.admin.key.secret, &update).await.expect_problem(404, "not-found");
    assert_eq!(app.get_ok("/v1/tools", &a.admin.key.secret).await, json!([]));
    assert_eq!(app.get_ok("/v1/tools/b_only", &b.admin.key.secret).await["version"], 1);
}
