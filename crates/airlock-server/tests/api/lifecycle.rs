//! A tenant's keys and end of life through the operator API: its own key-encryption key
//! (BYOK, against a real OpenBao), export, and deletion.

use std::io::{Cursor, Write as _};
use std::time::{Duration, Instant};

use airlock_audit::NoteVerifier;
use airlock_audit::archive::verify_archive;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestApp, UNKNOWN_KEY_ID};

#[path = "../../../airlock-vault/tests/common/mod.rs"]
#[allow(
    dead_code,
    clippy::print_stderr,
    reason = "the key servers' helpers, shared with the vault's own tests"
)]
mod key_servers;

async fn delete_tenant(app: &TestApp, id: &str, key: &str, confirm: &str) -> crate::common::Reply {
    app.send(
        app.request(Method::DELETE, &format!("/admin/v1/tenants/{id}"))
            .bearer_auth(key)
            .json(&json!({"confirm": confirm})),
    )
    .await
}

/// Polls `path` with `key` until it answers `status` (the key cache expires in the meantime).
async fn until_status(app: &TestApp, path: &str, key: &str, status: u16) -> crate::common::Reply {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = app.get(path, key).await;
        if reply.status == status || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_tenant_with_its_own_key_is_cut_off_when_it_revokes_the_key_and_others_carry_on() {
    let bao = key_servers::Bao::start().await;
    bao.transit_with_key("tenant-acme").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("vault-token");
    std::fs::File::create(&token_file).unwrap().write_all(bao.token.as_bytes()).unwrap();

    let app = TestApp::spawn_with(|c| c.key_cache_ttl = Duration::from_millis(500)).await;
    let operator = app.operator("ops").await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let sealed = json!({"kind": "bearer", "token": "acme-secret"});
    app.put("/v1/credentials/mail", &acme.admin.key.secret, &sealed).await.expect_status(200);

    let path = format!("/admin/v1/tenants/{}/kek", acme.id);
    let before = app.get_ok(&path, &operator.secret).await;
    assert_eq!(before["provider"], Value::Null);
    assert!(before["kek_id"].as_str().unwrap().starts_with("file:"));
    // A tenant may not use a local key as its own, nor a key Airlock cannot use.
    app.put(&path, &operator.secret, &json!({"provider": {"kind": "file", "path": "/etc/passwd"}}))
        .await
        .expect_problem(422, "unprocessable");
    let unreachable = json!({"provider": {"kind": "vault_transit", "address": key_servers::closed_address(),
        "key": "tenant-acme", "token_file": token_file}});
    let refused = app.put(&path, &operator.secret, &unreachable).await.expect_problem(409, "conflict");
    assert!(refused["detail"].as_str().unwrap().contains("cannot be used"), "{refused}");
    // Tenants cannot reach the operator's routes.
    app.get(&path, &acme.admin.key.secret).await.expect_problem(403, "forbidden");

    let own = json!({"provider": {"kind": "vault_transit", "address": bao.url(), "key": "tenant-acme",
        "token_file": token_file}});
    let set = app.put(&path, &operator.secret, &own).await.expect_status(200);
    assert_eq!(set["kek_id"], format!("vault-transit:{}/transit/tenant-acme", bao.url()));
    assert_eq!(set["provider"]["kind"], "vault_transit");
    app.get_ok("/v1/credentials", &acme.admin.key.secret).await;

    // The tenant retires the key version that wraps its data key: Airlock fails closed for it.
    bao.post("/v1/transit/keys/tenant-acme/rotate", json!({})).await;
    bao.post("/v1/transit/keys/tenant-acme/config", json!({"min_decryption_version": 2})).await;
    let cut_off = until_status(&app, "/v1/credentials", &acme.admin.key.secret, 503).await;
    let problem = cut_off.expect_problem(503, "tenant-key-unavailable");
    assert!(problem["detail"].as_str().unwrap().contains(&acme.id), "{problem}");
    assert!(!cut_off.text.contains(&bao.token), "no token in the answer");
    app.get_ok("/v1/credentials", &globex.admin.key.secret).await;
    app.get_ok("/v1/tools", &globex.admin.key.secret).await;

    // Restored, it is served again.
    bao.post("/v1/transit/keys/tenant-acme/config", json!({"min_decryption_version": 1})).await;
    until_status(&app, "/v1/credentials", &acme.admin.key.secret, 200).await.expect_status(200);
    // And back to the platform's key.
    let back = app.put(&path, &operator.secret, &json!({"provider": null})).await.expect_status(200);
    assert!(back["kek_id"].as_str().unwrap().starts_with("file:"));
    app.get_ok("/v1/credentials", &acme.admin.key.secret).await;
}

#[tokio::test]
async fn an_operator_exports_a_tenant_as_a_streamed_signed_archive() {
    let app = TestApp::spawn().await;
    let operator = app.operator("ops").await;
    let acme = app.tenant("acme").await;
    let sealed = json!({"kind": "bearer", "token": "acme-secret-token"});
    app.put("/v1/credentials/mail", &acme.admin.key.secret, &sealed).await.expect_status(200);
    let path = format!("/admin/v1/tenants/{}/export", acme.id);
    app.get(&path, &acme.admin.key.secret).await.expect_problem(403, "forbidden");
    app.get(&format!("/admin/v1/tenants/{UNKNOWN_KEY_ID}/export"), &operator.secret)
        .await
        .expect_problem(400, "invalid-parameter");

    let response = app.request(Method::GET, &path).bearer_auth(&operator.secret).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    assert!(response.headers()["content-disposition"].to_str().unwrap().contains("airlock-export-acme-"));
    let archive = response.bytes().await.unwrap();
    let keys: Vec<NoteVerifier> = app
        .get_ok("/v1/audit/keys", &acme.admin.key.secret)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|k| NoteVerifier::parse(k["verifier"].as_str().unwrap()).unwrap())
        .collect();
    let summary = verify_archive(Cursor::new(&archive), &keys).unwrap();
    assert_eq!(summary.manifest.tenant, acme.id);
    assert!(!archive.windows(17).any(|w| w == b"acme-secret-token"));
}

#[tokio::test]
async fn an_operator_deletes_a_tenant_and_its_keys_stop_working() {
    let app = TestApp::spawn().await;
    let operator = app.operator("ops").await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let agent = app.agent(&acme.scope, "bot").await;

    delete_tenant(&app, &acme.id, &acme.admin.key.secret, "acme").await.expect_problem(403, "forbidden");
    let typo = delete_tenant(&app, &acme.id, &operator.secret, "acme-typo")
        .await
        .expect_problem(422, "unprocessable");
    assert!(typo["detail"].as_str().unwrap().contains("nothing was deleted"));
    app.get_ok("/v1/whoami", &acme.admin.key.secret).await;

    let done = delete_tenant(&app, &acme.id, &operator.secret, "acme").await.expect_status(200);
    assert_eq!(done, json!({"status": "deleted", "keys_destroyed": 1, "database_removed": true}));
    for key in [&acme.admin.key.secret, &agent.key.secret] {
        app.get("/v1/whoami", key).await.expect_problem(401, "unauthenticated");
    }
    delete_tenant(&app, &acme.id, &operator.secret, "acme").await.expect_problem(404, "not-found");
    let tenants = app.get_ok("/admin/v1/tenants", &operator.secret).await;
    assert!(!tenants.as_array().unwrap().iter().any(|t| t["id"] == acme.id.as_str()));
    app.get_ok("/v1/tools", &globex.admin.key.secret).await;
}

#[tokio::test]
async fn a_deletion_waits_for_a_second_operator_when_required() {
    let app = TestApp::spawn_with(|c| c.deletion_requires_second_operator = true).await;
    let (alice, bob) = (app.operator("alice").await, app.operator("bob").await);
    let acme = app.tenant("acme").await;
    let pending = delete_tenant(&app, &acme.id, &alice.secret, "acme").await.expect_status(202);
    assert_eq!(pending["status"], "awaiting_approval");
    assert!(pending["expires_at"].as_str().is_some());
    let again = delete_tenant(&app, &acme.id, &alice.secret, "acme").await.expect_problem(409, "conflict");
    assert!(again["detail"].as_str().unwrap().contains("another operator"), "{again}");
    app.get_ok("/v1/whoami", &acme.admin.key.secret).await;
    delete_tenant(&app, &acme.id, &bob.secret, "acme").await.expect_status(200);
    app.get("/v1/whoami", &acme.admin.key.secret).await.expect_problem(401, "unauthenticated");
}
