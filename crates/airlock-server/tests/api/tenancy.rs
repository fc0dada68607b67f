//! Tenants are isolated: a tenant's credential reaches nothing of another tenant, whatever it
//! names in a path or body. Platform operators manage tenants and nothing inside them.

use airlock_types::Role;
use serde_json::{Value, json};

use crate::common::{TenantFixture, TestApp};

/// What tenant B holds, as B's admin sees it.
async fn snapshot_of(app: &TestApp, tenant: &TenantFixture) -> Value {
    let key = &tenant.admin.key.secret;
    json!({
        "users": app.get_ok("/v1/users", key).await,
        "agents": app.get_ok("/v1/agents", key).await,
        "keys": app.ids("/v1/keys", key).await,
    })
}

#[tokio::test]
async fn a_key_reads_and_revokes_nothing_of_another_tenant() {
    let app = TestApp::spawn().await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let b_agent = app.agent(&b.scope, "b-bot").await;
    let b_before = snapshot_of(&app, &b).await;

    for key_id in [&b.admin.key.id, &b_agent.key.id] {
        let path = format!("/v1/keys/{key_id}");
        let body = app.get(&path, &a.admin.key.secret).await.expect_problem(404, "not-found");
        assert_eq!(
            body["detail"],
            format!("API key `{key_id}` not found"),
            "indistinguishable from a key that never existed"
        );
        app.delete(&path, &a.admin.key.secret).await.expect_problem(404, "not-found");
    }

    // B's keys still work, unrevoked.
    app.get_ok("/v1/whoami", &b.admin.key.secret).await;
    app.get_ok("/v1/whoami", &b_agent.key.secret).await;
    let b_key = app.get_ok(&format!("/v1/keys/{}", b_agent.key.id), &b.admin.key.secret).await;
    assert_eq!(b_key["revoked_at"], Value::Null);
    assert_eq!(snapshot_of(&app, &b).await, b_before);
}

#[tokio::test]
async fn a_key_reads_and_changes_no_user_of_another_tenant() {
    let app = TestApp::spawn().await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let b_user = app.user(&b.scope, "bea@b.example", &[Role::Viewer]).await;
    let b_before = snapshot_of(&app, &b).await;

    let body = app
        .get(&format!("/v1/users/{}", b_user.id), &a.admin.key.secret)
        .await
        .expect_problem(404, "not-found");
    assert_eq!(body["detail"], format!("user `{}` not found", b_user.id));
    app.put(&format!("/v1/users/{}/roles", b_user.id), &a.admin.key.secret, &json!({ "roles": ["admin"] }))
        .await
        .expect_problem(404, "not-found");

    assert_eq!(snapshot_of(&app, &b).await, b_before);
    assert_eq!(app.get_ok("/v1/whoami", &b_user.key.secret).await["roles"], json!(["viewer"]));
}

#[tokio::test]
async fn a_key_cannot_be_issued_to_an_owner_in_another_tenant() {
    let app = TestApp::spawn().await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let b_user = app.user(&b.scope, "bea@b.example", &[Role::Viewer]).await;
    app.agent(&b.scope, "only-in-b").await;
    let a_before = snapshot_of(&app, &a).await;
    let b_before = snapshot_of(&app, &b).await;

    let body = app
        .post("/v1/keys", &a.admin.key.secret, &json!({ "name": "stolen", "user_id": b_user.id }))
        .await
        .expect_problem(404, "not-found");
    assert_eq!(body["detail"], format!("user `{}` not found", b_user.id));
    let body = app
        .post("/v1/keys", &a.admin.key.secret, &json!({ "name": "stolen", "agent": "only-in-b" }))
        .await
        .expect_problem(404, "not-found");
    assert_eq!(body["detail"], "agent `only-in-b` not found");

    assert_eq!(snapshot_of(&app, &a).await, a_before);
    assert_eq!(snapshot_of(&app, &b).await, b_before);
}

#[tokio::test]
async fn lists_show_only_the_callers_tenant() {
    let app = TestApp::spawn().await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let a_agent = app.agent(&a.scope, "bot").await;
    app.agent(&b.scope, "bot").await;
    app.user(&b.scope, "bea@b.example", &[Role::Viewer]).await;

    assert_eq!(app.ids("/v1/users", &a.admin.key.secret).await, [a.admin.id.as_str()]);
    assert_eq!(app.ids("/v1/agents", &a.admin.key.secret).await, [a_agent.id.as_str()]);
    let mut keys = vec![a.admin.key.id.clone(), a_agent.key.id.clone()];
    keys.sort();
    assert_eq!(app.ids("/v1/keys", &a.admin.key.secret).await, keys);
    assert_eq!(app.get_ok("/v1/whoami", &a_agent.key.secret).await["tenant"]["slug"], "tenant-a");
}

#[tokio::test]
async fn the_same_names_in_two_tenants_do_not_collide() {
    let app = TestApp::spawn().await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    for tenant in [&a, &b] {
        app.post("/v1/agents", &tenant.admin.key.secret, &json!({ "name": "bot" })).await.expect_status(201);
        app.post(
            "/v1/users",
            &tenant.admin.key.secret,
            &json!({ "email": "same@example.com", "roles": ["viewer"] }),
        )
        .await
        .expect_status(201);
    }
}

#[tokio::test]
async fn no_body_can_name_a_tenant() {
    let app = TestApp::spawn().await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let a_before = snapshot_of(&app, &a).await;
    let b_before = snapshot_of(&app, &b).await;

    let attempts = [
        ("/v1/agents", json!({ "name": "bot", "tenant": "tenant-b" }), "tenant"),
        ("/v1/agents", json!({ "name": "bot", "tenant_id": b.id }), "tenant_id"),
        ("/v1/users", json!({ "email": "x@b.example", "roles": ["admin"], "tenant": "tenant-b" }), "tenant"),
        ("/v1/keys", json!({ "name": "k", "tenant": "tenant-b" }), "tenant"),
    ];
    for (path, body, field) in attempts {
        let problem = app.post(path, &a.admin.key.secret, &body).await.expect_problem(422, "invalid-body");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("unknown field `{field}`")), "{path}: {detail}");
    }
    let problem = app
        .put(
            &format!("/v1/users/{}/roles", a.admin.id),
            &a.admin.key.secret,
            &json!({ "roles": ["admin"], "tenant": "tenant-b" }),
        )
        .await
        .expect_problem(422, "invalid-body");
    assert!(problem["detail"].as_str().unwrap().contains("unknown field `tenant`"), "{problem}");

    assert_eq!(snapshot_of(&app, &a).await, a_before);
    assert_eq!(snapshot_of(&app, &b).await, b_before);
}

// ---- platform operators ---------------------------------------------------------------

#[tokio::test]
async fn an_operator_creates_and_lists_tenants() {
    let app = TestApp::spawn().await;
    let operator = app.operator("ops").await;

    let created = app
        .post("/admin/v1/tenants", &operator.secret, &json!({ "slug": "acme", "name": "Acme Corp" }))
        .await
        .expect_status(201);
    assert_eq!(created["slug"], "acme");
    assert_eq!(created["name"], "Acme Corp");
    assert!(created["id"].as_str().unwrap().starts_with("ten_"), "{created}");
    let unnamed =
        app.post("/admin/v1/tenants", &operator.secret, &json!({ "slug": "beta" })).await.expect_status(201);
    assert_eq!(unnamed["name"], "beta", "the name defaults to the slug");

    let listed = app.get_ok("/admin/v1/tenants", &operator.secret).await;
    let slugs: Vec<&str> = listed.as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["default", "acme", "beta"]);
}

#[tokio::test]
async fn only_operators_reach_the_admin_routes() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let agent = app.agent(&tenant.scope, "bot").await;
    let before = app.tenant_slugs().await;

    for key in [&tenant.admin.key.secret, &agent.key.secret] {
        let body = app
            .post("/admin/v1/tenants", key, &json!({ "slug": "sneaky" }))
            .await
            .expect_problem(403, "forbidden");
        assert_eq!(body["detail"], "only platform operators may use `/admin/v1`");
        app.get("/admin/v1/tenants", key).await.expect_problem(403, "forbidden");
    }
    let anonymous =
        app.request(reqwest::Method::POST, "/admin/v1/tenants").json(&json!({ "slug": "sneaky" }));
    app.send(anonymous).await.expect_problem(401, "unauthenticated");
    app.get_anonymous("/admin/v1/tenants").await.expect_problem(401, "unauthenticated");

    assert_eq!(app.tenant_slugs().await, before);
}

#[tokio::test]
async fn a_taken_slug_conflicts_and_a_bad_slug_is_refused() {
    let app = TestApp::spawn().await;
    let operator = app.operator("ops").await;
    let before = app.tenant_slugs().await;

    let body = app
        .post("/admin/v1/tenants", &operator.secret, &json!({ "slug": "default" }))
        .await
        .expect_problem(409, "conflict");
    assert_eq!(body["detail"], "a tenant with slug `default` already exists");
    for slug in ["Bad Slug!", "a", "-edge", "edge-", "UPPER"] {
        app.post("/admin/v1/tenants", &operator.secret, &json!({ "slug": slug }))
            .await
            .expect_problem(422, "invalid-body");
    }
    app.post("/admin/v1/tenants", &operator.secret, &json!({ "slug": "fine", "owner": "me" }))
        .await
        .expect_problem(422, "invalid-body");
    assert_eq!(app.tenant_slugs().await, before);
}

#[tokio::test]
async fn an_operator_key_reaches_nothing_inside_a_tenant() {
    let app = TestApp::spawn().await;
    let tenant = app.default_tenant().await;
    let operator = app.operator("ops").await;
    let users_before = app.ids("/v1/users", &tenant.admin.key.secret).await;
    let agents_before = app.ids("/v1/agents", &tenant.admin.key.secret).await;

    for path in ["/v1/users", "/v1/agents", "/v1/keys"] {
        app.get(path, &operator.secret).await.expect_problem(403, "forbidden");
    }
    app.get(&format!("/v1/users/{}", tenant.admin.id), &operator.secret)
        .await
        .expect_problem(403, "forbidden");
    app.get(&format!("/v1/keys/{}", tenant.admin.key.id), &operator.secret)
        .await
        .expect_problem(403, "forbidden");
    app.delete(&format!("/v1/keys/{}", tenant.admin.key.id), &operator.secret)
        .await
        .expect_problem(403, "forbidden");
    app.post("/v1/users", &operator.secret, &json!({ "email": "x@example.com", "roles": ["admin"] }))
        .await
        .expect_problem(403, "forbidden");
    app.post("/v1/agents", &operator.secret, &json!({ "name": "bot" }))
        .await
        .expect_problem(403, "forbidden");
    app.post("/v1/keys", &operator.secret, &json!({ "name": "k", "user_id": tenant.admin.id }))
        .await
        .expect_problem(403, "forbidden");

    assert_eq!(app.ids("/v1/users", &tenant.admin.key.secret).await, users_before);
    assert_eq!(app.ids("/v1/agents", &tenant.admin.key.secret).await, agents_before);
    app.get_ok("/v1/whoami", &tenant.admin.key.secret).await;
}
