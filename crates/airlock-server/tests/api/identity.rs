//! Users, agents and keys inside a tenant, and what each role may do with them.

use airlock_types::Role;
use serde_json::json;

use crate::common::TestApp;

#[tokio::test]
async fn an_admin_creates_a_user_who_then_appears_in_the_list() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;

    let created = app
        .post("/v1/users", admin, &json!({ "email": "Pat@Acme.Example", "roles": ["approver", "viewer"] }))
        .await
        .expect_status(201);
    assert_eq!(created["email"], "pat@acme.example", "e-mail addresses are stored lowercased");
    assert_eq!(created["name"], "pat@acme.example", "the name defaults to the e-mail address");
    assert_eq!(created["roles"], json!(["approver", "viewer"]));

    let users = app.get_ok("/v1/users", admin).await;
    let emails: Vec<&str> = users.as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["admin@acme.example", "pat@acme.example"]);
    let fetched = app.get_ok(&format!("/v1/users/{}", created["id"].as_str().unwrap()), admin).await;
    assert_eq!(fetched, created);
}

#[tokio::test]
async fn a_second_user_with_the_same_email_conflicts() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    let before = app.ids("/v1/users", admin).await;

    let body = app
        .post("/v1/users", admin, &json!({ "email": "ADMIN@acme.example", "roles": ["viewer"] }))
        .await
        .expect_problem(409, "conflict");
    assert!(body["detail"].as_str().unwrap().contains("`admin@acme.example`"), "{body}");
    assert_eq!(app.ids("/v1/users", admin).await, before);
}

#[tokio::test]
async fn an_unknown_role_is_refused_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    let before = app.ids("/v1/users", admin).await;

    for roles in [json!(["superuser"]), json!([])] {
        app.post("/v1/users", admin, &json!({ "email": "pat@acme.example", "roles": roles }))
            .await
            .expect_problem(422, "invalid-body");
    }
    app.post(
        "/v1/users",
        admin,
        &json!({ "email": "pat@acme.example", "roles": ["viewer"], "password": "short" }),
    )
    .await
    .expect_problem(422, "unprocessable");
    assert_eq!(app.ids("/v1/users", admin).await, before);
}

#[tokio::test]
async fn a_viewer_cannot_create_users() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let viewer = app.user(&tenant.scope, "vic@acme.example", &[Role::Viewer]).await;
    let before = app.ids("/v1/users", &tenant.admin.key.secret).await;

    let body = app
        .post("/v1/users", &viewer.key.secret, &json!({ "email": "new@acme.example", "roles": ["admin"] }))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(body["detail"], "this needs the admin role");
    app.get("/v1/users", &viewer.key.secret).await.expect_problem(403, "forbidden");
    assert_eq!(app.ids("/v1/users", &tenant.admin.key.secret).await, before);
}

#[tokio::test]
async fn a_viewer_can_list_agents_but_not_create_them() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let viewer = app.user(&tenant.scope, "vic@acme.example", &[Role::Viewer]).await;
    let agent = app.agent(&tenant.scope, "bot").await;

    assert_eq!(app.ids("/v1/agents", &viewer.key.secret).await, [agent.id.as_str()]);
    app.post("/v1/agents", &viewer.key.secret, &json!({ "name": "rogue" }))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(app.ids("/v1/agents", &viewer.key.secret).await, [agent.id]);
}

#[tokio::test]
async fn a_builder_can_create_agents_but_not_users() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let builder = app.user(&tenant.scope, "bob@acme.example", &[Role::Builder]).await;
    let users_before = app.ids("/v1/users", &tenant.admin.key.secret).await;

    let agent = app
        .post(
            "/v1/agents",
            &builder.key.secret,
            &json!({ "name": "invoice-bot", "description": "pays invoices" }),
        )
        .await
        .expect_status(201);
    assert_eq!(agent["name"], "invoice-bot");
    assert!(agent["id"].as_str().unwrap().starts_with("agt_"), "{agent}");
    let key = app
        .post("/v1/keys", &builder.key.secret, &json!({ "name": "bot key", "agent": "invoice-bot" }))
        .await
        .expect_status(201);
    assert_eq!(key["key"]["owner"], json!({ "kind": "agent", "id": agent["id"] }));

    app.post("/v1/users", &builder.key.secret, &json!({ "email": "new@acme.example", "roles": ["viewer"] }))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(app.ids("/v1/users", &tenant.admin.key.secret).await, users_before);
}

#[tokio::test]
async fn a_duplicate_agent_name_conflicts() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    app.post("/v1/agents", admin, &json!({ "name": "bot" })).await.expect_status(201);
    let before = app.ids("/v1/agents", admin).await;

    app.post("/v1/agents", admin, &json!({ "name": "bot" })).await.expect_problem(409, "conflict");
    app.post("/v1/agents", admin, &json!({ "name": "not a valid name!" }))
        .await
        .expect_problem(422, "invalid-body");
    assert_eq!(app.ids("/v1/agents", admin).await, before);
}

#[tokio::test]
async fn an_agent_key_cannot_create_keys() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let agent = app.agent(&tenant.scope, "bot").await;
    let before = app.ids("/v1/keys", &tenant.admin.key.secret).await;

    let body = app
        .post("/v1/keys", &agent.key.secret, &json!({ "name": "more" }))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(body["detail"], "agents cannot create API keys");
    app.post("/v1/keys", &agent.key.secret, &json!({ "name": "more", "agent": "bot" }))
        .await
        .expect_problem(403, "forbidden");
    app.post("/v1/keys", &agent.key.secret, &json!({ "name": "more", "user_id": tenant.admin.id }))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(app.ids("/v1/keys", &tenant.admin.key.secret).await, before);
}

#[tokio::test]
async fn an_agent_sees_only_its_own_keys() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let agent = app.agent(&tenant.scope, "bot").await;
    assert_eq!(app.ids("/v1/keys", &agent.key.secret).await, [agent.key.id.as_str()]);
    app.get(&format!("/v1/keys/{}", tenant.admin.key.id), &agent.key.secret)
        .await
        .expect_problem(404, "not-found");
}

#[tokio::test]
async fn a_non_admin_user_sees_and_revokes_only_their_own_keys() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let member = app.user(&tenant.scope, "mo@acme.example", &[Role::Member]).await;
    let other = app.user(&tenant.scope, "oz@acme.example", &[Role::Member]).await;
    let agent = app.agent(&tenant.scope, "bot").await;

    let second =
        app.post("/v1/keys", &member.key.secret, &json!({ "name": "laptop" })).await.expect_status(201);
    assert_eq!(second["key"]["owner"], json!({ "kind": "user", "id": member.id }));
    let mut own = vec![member.key.id.clone(), second["key"]["id"].as_str().unwrap().to_owned()];
    own.sort();
    assert_eq!(app.ids("/v1/keys", &member.key.secret).await, own);

    // Everybody else's keys are as invisible as another tenant's.
    for key in [&tenant.admin.key.id, &other.key.id, &agent.key.id] {
        let path = format!("/v1/keys/{key}");
        app.get(&path, &member.key.secret).await.expect_problem(404, "not-found");
        app.delete(&path, &member.key.secret).await.expect_problem(404, "not-found");
    }
    app.post("/v1/keys", &member.key.secret, &json!({ "name": "for oz", "user_id": other.id }))
        .await
        .expect_problem(403, "forbidden");
    app.get_ok("/v1/whoami", &other.key.secret).await;
    app.get_ok("/v1/whoami", &agent.key.secret).await;

    // The admin sees every key.
    let all = app.ids("/v1/keys", &tenant.admin.key.secret).await;
    assert_eq!(all.len(), 5, "{all:?}");
}

#[tokio::test]
async fn a_user_can_read_themself_but_not_others() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let member = app.user(&tenant.scope, "mo@acme.example", &[Role::Member]).await;

    let me = app.get_ok(&format!("/v1/users/{}", member.id), &member.key.secret).await;
    assert_eq!(me["email"], "mo@acme.example");
    app.get(&format!("/v1/users/{}", tenant.admin.id), &member.key.secret)
        .await
        .expect_problem(403, "forbidden");
}

#[tokio::test]
async fn an_admin_can_change_another_users_roles() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let member = app.user(&tenant.scope, "mo@acme.example", &[Role::Member]).await;

    let changed = app
        .put(
            &format!("/v1/users/{}/roles", member.id),
            &tenant.admin.key.secret,
            &json!({ "roles": ["builder"] }),
        )
        .await
        .expect_status(200);
    assert_eq!(changed["roles"], json!(["builder"]));
    // The new roles apply to the user's next request, with the same key.
    let whoami = app.get_ok("/v1/whoami", &member.key.secret).await;
    assert_eq!(whoami["roles"], json!(["builder"]));
    app.post("/v1/agents", &member.key.secret, &json!({ "name": "bot" })).await.expect_status(201);
}

#[tokio::test]
async fn an_admin_cannot_remove_their_own_admin_role() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let path = format!("/v1/users/{}/roles", tenant.admin.id);

    let body = app
        .put(&path, &tenant.admin.key.secret, &json!({ "roles": ["viewer"] }))
        .await
        .expect_problem(422, "unprocessable");
    assert_eq!(body["detail"], "you cannot remove your own admin role");
    let me = app.get_ok(&format!("/v1/users/{}", tenant.admin.id), &tenant.admin.key.secret).await;
    assert_eq!(me["roles"], json!(["admin"]));

    // Keeping the admin role while adding another is fine.
    let changed = app
        .put(&path, &tenant.admin.key.secret, &json!({ "roles": ["admin", "approver"] }))
        .await
        .expect_status(200);
    assert_eq!(changed["roles"], json!(["admin", "approver"]));
}

#[tokio::test]
async fn a_non_admin_cannot_change_roles_even_their_own() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let member = app.user(&tenant.scope, "mo@acme.example", &[Role::Member]).await;

    app.put(&format!("/v1/users/{}/roles", member.id), &member.key.secret, &json!({ "roles": ["admin"] }))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(app.get_ok("/v1/whoami", &member.key.secret).await["roles"], json!(["member"]));
}
