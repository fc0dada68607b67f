//! The key hierarchy through the store: sealed values bound to their place, KEK and DEK
//! rotation, a wrong KEK, and tenant deletion by crypto-shred.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_crypto::KeyedHasher;
use airlock_store::{
    Deletion, NewModelRoute, Principal, RotateOptions, Store, StoreError, TenantScope, ToolSpec, VaultEntry,
};
use airlock_types::{TenantSlug, ToolName};
use airlock_vault::provider::LocalKek;
use airlock_vault::{ConnectOptions, Keyring};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde_json::json;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Row, SqlitePool};

use crate::common::{SERVER_KEY, options, tenant};

const NO_GRACE: RotateOptions = RotateOptions { dry_run: false, grace: Duration::ZERO, batch: 7, all: false };

fn operator() -> Principal {
    Principal::local_operator()
}

/// A store whose keyring wraps with the key file `current` and still unwraps with `previous`.
async fn open_with_keys(dir: &Path, current: &str, previous: &[&str]) -> Result<Store, StoreError> {
    let kek = |name: &str| {
        Arc::new(LocalKek::from_file(&dir.join("keys").join(name), true).unwrap())
            as Arc<dyn airlock_vault::KekProvider>
    };
    let mut opts = options(dir, 100, Duration::from_secs(600));
    opts.keyring = Keyring::new(kek(current), previous.iter().map(|p| kek(p)).collect());
    opts.connect = ConnectOptions::default();
    Store::open(opts, KeyedHasher::new(SERVER_KEY.to_vec().into())).await
}

async fn open(dir: &Path) -> Store {
    open_with_keys(dir, "kek.key", &[]).await.unwrap()
}

/// Puts a value in every sealed column of the tenant: a credential, a model route's key, the
/// tokenization key and `tokens` token-vault values (the signing key exists already).
pub(crate) async fn fill(store: &Store, scope: &TenantScope, tokens: usize) {
    let secret = SecretBox::new(br#"{"token":"cred-secret-1"}"#.to_vec().into_boxed_slice());
    store.put_credential(scope, &ToolName::parse("mail-cred").unwrap(), "bearer", &secret).await.unwrap();
    let spec = ToolSpec {
        description: "Send an e-mail".into(),
        input_schema: json!({"type": "object"}),
        tier: "egress".into(),
        side_effects: true,
        classification: "internal".into(),
        trusted_source: false,
        cost_cents: 1,
        daily_cost_ceiling_cents: None,
        connector: json!({"kind": "http", "method": "POST", "url": "https://mail.example.com/send"}),
        credential: Some(ToolName::parse("mail-cred").unwrap()),
    };
    match store.create_tool(scope, &ToolName::parse("send-mail").unwrap(), spec).await {
        Ok(_) | Err(StoreError::Conflict { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    let route = NewModelRoute {
        provider: "openai".into(),
        base_url: "https://api.example.com/v1".into(),
        upstream_model: "gpt-x".into(),
        api_version: None,
        api_key: Some(SecretString::from("sk-provider-secret-1")),
    };
    store.put_model_routes(scope, "fast", vec![route], 10, 30).await.unwrap();
    store.tokenization_key(scope).await.unwrap();
    let entries: Vec<VaultEntry> = (0..tokens)
        .map(|i| VaultEntry {
            token: format!("EMAIL_{i:012x}"),
            kind: "email".into(),
            value: format!("person{i}@example.com"),
        })
        .collect();
    for chunk in entries.chunks(500) {
        store.remember_tokens(scope, chunk, Duration::from_secs(3600)).await.unwrap();
    }
}

/// Reads every sealed value back through the store.
async fn read_all(store: &Store, scope: &TenantScope, tokens: usize) -> Result<(), StoreError> {
    let (_, material) =
        store.open_credential_for_executor(scope, &ToolName::parse("send-mail").unwrap()).await?.unwrap();
    assert_eq!(material.expose_secret(), br#"{"token":"cred-secret-1"}"#);
    let routes = store.open_model_routes(scope, "fast").await?;
    assert_eq!(routes[0].api_key.as_ref().unwrap().expose_secret(), "sk-provider-secret-1");
    store.tokenization_key(scope).await?;
    let wanted: Vec<String> = (0..tokens).map(|i| format!("EMAIL_{i:012x}")).collect();
    let found = store.lookup_tokens(scope, &wanted).await?;
    assert_eq!(found.len(), tokens);
    assert_eq!(found["EMAIL_000000000000"], "person0@example.com");
    Ok(())
}

async fn raw(dir: &Path, file: &str) -> SqlitePool {
    let url = format!("sqlite://{}", dir.join(file).display());
    SqlitePoolOptions::new().max_connections(1).connect(&url).await.unwrap()
}

fn tenant_file(scope: &TenantScope) -> String {
    format!("tenants/{}.sqlite", scope.tenant_id())
}

#[tokio::test]
async fn a_sealed_value_moved_to_another_row_column_or_tenant_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    fill(&store, &acme, 2).await;
    fill(&store, &globex, 2).await;
    store.close().await;

    // An attacker with write access to the files moves ciphertexts around.
    let a = raw(dir.path(), &tenant_file(&acme)).await;
    let g = raw(dir.path(), &tenant_file(&globex)).await;
    let acme_key: Vec<u8> =
        sqlx::query_scalar("SELECT key_sealed FROM model_routes").fetch_one(&a).await.unwrap();
    let acme_token: Vec<u8> =
        sqlx::query_scalar("SELECT sealed FROM token_vault WHERE token = 'EMAIL_000000000000'")
            .fetch_one(&a)
            .await
            .unwrap();
    // Another tenant's route key in globex's route row.
    sqlx::query("UPDATE model_routes SET key_sealed = ?").bind(&acme_key).execute(&g).await.unwrap();
    // Another row's value: token 0's value under token 1 (same tenant, same column).
    sqlx::query("UPDATE token_vault SET sealed = ? WHERE token = 'EMAIL_000000000001'")
        .bind(&acme_token)
        .execute(&a)
        .await
        .unwrap();
    // Another column's value: the route key as the credential (same tenant).
    sqlx::query("UPDATE credentials SET sealed = ?").bind(&acme_key).execute(&a).await.unwrap();
    a.close().await;
    g.close().await;

    let store = open(dir.path()).await;
    let acme = store.operator_scope(&operator(), &TenantSlug::parse("acme").unwrap()).await.unwrap();
    let globex = store.operator_scope(&operator(), &TenantSlug::parse("globex").unwrap()).await.unwrap();
    let moved = store.open_model_routes(&globex, "fast").await.unwrap_err();
    assert!(matches!(moved, StoreError::Vault(_)), "{moved}");
    let wrong_row = store.lookup_tokens(&acme, &["EMAIL_000000000001".to_owned()]).await.unwrap_err();
    assert!(matches!(wrong_row, StoreError::Vault(_)), "{wrong_row}");
    let wrong_column =
        store.open_credential_for_executor(&acme, &ToolName::parse("send-mail").unwrap()).await.unwrap_err();
    assert!(matches!(wrong_column, StoreError::Vault(_)), "{wrong_column}");
    // What was left in place still opens.
    assert_eq!(store.open_model_routes(&acme, "fast").await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn a_wrong_kek_fails_closed_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    fill(&store, &acme, 1).await;
    store.close().await;

    // Started with another key file: nothing of the tenant is served.
    let wrong = open_with_keys(dir.path(), "other.key", &[]).await.unwrap();
    let scope = wrong.operator_scope(&operator(), &TenantSlug::parse("acme").unwrap()).await.unwrap();
    let error = wrong.tenant_db(&scope).await.unwrap_err();
    let StoreError::KeyUnavailable { owner, reason } = &error else { panic!("{error}") };
    assert!(owner.contains(scope.tenant_id().as_str()), "{owner}");
    assert!(reason.contains("not configured") && reason.contains("key_provider.previous"), "{reason}");
    assert!(wrong.lookup_tokens(&scope, &["EMAIL_000000000000".to_owned()]).await.is_err());
    wrong.close().await;

    // A forged wrap under the right id is refused too.
    let pool = raw(dir.path(), "control.sqlite").await;
    sqlx::query("UPDATE data_keys SET wrapped = zeroblob(60) WHERE owner = ?")
        .bind(scope.tenant_id().as_str())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let store = open(dir.path()).await;
    let error = store.tenant_db(&scope).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::KeyUnavailable { reason, .. } if reason.contains("cannot decrypt")),
        "{error}"
    );
    store.close().await;
}

#[tokio::test]
async fn a_kek_rotation_rewraps_every_data_key_and_the_old_kek_can_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    fill(&store, &acme, 3).await;
    fill(&store, &globex, 3).await;
    store.platform_audit_keys().await.unwrap();
    store.close().await;

    let store = open_with_keys(dir.path(), "new.key", &["kek.key"]).await.unwrap();
    let dry = store.rotate_kek(&operator(), RotateOptions { dry_run: true, ..NO_GRACE }).await.unwrap();
    assert_eq!((dry.rewrapped, dry.current, dry.failed.len()), (3, 0, 0), "two tenants and the platform");
    let done = store.rotate_kek(&operator(), NO_GRACE).await.unwrap();
    assert_eq!((done.rewrapped, done.current), (3, 0));
    let again = store.rotate_kek(&operator(), NO_GRACE).await.unwrap();
    assert_eq!((again.rewrapped, again.current), (0, 3), "idempotent");
    store.close().await;

    // Without the old key everything still opens.
    let store = open_with_keys(dir.path(), "new.key", &[]).await.unwrap();
    let acme = store.operator_scope(&operator(), acme.slug()).await.unwrap();
    read_all(&store, &acme, 3).await.unwrap();
    read_all(&store, &globex, 3).await.unwrap();
    let platform = store.platform_audit_export_begin(&operator()).await.unwrap();
    assert!(platform.1 >= 2, "the rotation was recorded in the platform log");
    store.close().await;
}

async fn versions(dir: &Path, owner: &str) -> Vec<i64> {
    let pool = raw(dir, "control.sqlite").await;
    let v = sqlx::query_scalar("SELECT version FROM data_keys WHERE owner = ? ORDER BY version")
        .bind(owner)
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    v
}

async fn headers(dir: &Path, scope: &TenantScope) -> Vec<Vec<u8>> {
    let pool = raw(dir, &tenant_file(scope)).await;
    let mut all = Vec::new();
    for sql in [
        "SELECT substr(sealed_seed, 1, 4) FROM signing_keys",
        "SELECT substr(sealed, 1, 4) FROM credentials",
        "SELECT substr(sealed, 1, 4) FROM tokenization_keys",
        "SELECT substr(sealed, 1, 4) FROM token_vault",
        "SELECT substr(key_sealed, 1, 4) FROM model_routes",
    ] {
        all.extend(sqlx::query_scalar::<_, Vec<u8>>(sql).fetch_all(&pool).await.unwrap());
    }
    pool.close().await;
    all
}

#[tokio::test]
async fn a_dek_rotation_reencrypts_every_sealed_row_and_destroys_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    fill(&store, &acme, 40).await;
    fill(&store, &globex, 2).await;
    let before = std::fs::read(dir.path().join(tenant_file(&acme))).unwrap();

    let dry = store
        .rotate_tenant_dek(&operator(), &acme, RotateOptions { dry_run: true, ..NO_GRACE }, &|_| {})
        .await
        .unwrap();
    // signing key + credential + tokenization key + 40 tokens + route key
    assert_eq!((dry.reencrypted, dry.to, dry.failed.len()), (44, 2, 0));
    assert_eq!(versions(dir.path(), acme.tenant_id().as_str()).await, [1], "a dry run changes nothing");
    assert_eq!(std::fs::read(dir.path().join(tenant_file(&acme))).unwrap(), before);

    let seen = std::sync::Mutex::new(Vec::new());
    let report = store
        .rotate_tenant_dek(&operator(), &acme, NO_GRACE, &|n| seen.lock().unwrap().push(n))
        .await
        .unwrap();
    assert!(report.finished(), "{report:?}");
    assert_eq!((report.from.as_slice(), report.to, report.reencrypted), ([1].as_slice(), 2, 44));
    assert_eq!(report.destroyed, [1]);
    assert!(seen.lock().unwrap().last() == Some(&44));
    assert_eq!(versions(dir.path(), acme.tenant_id().as_str()).await, [2]);
    assert!(headers(dir.path(), &acme).await.iter().all(|h| h == &2u32.to_be_bytes()));
    read_all(&store, &acme, 40).await.unwrap();
    // Writes after the rotation are sealed with the new key; the other tenant is untouched.
    fill(&store, &acme, 41).await;
    assert!(headers(dir.path(), &acme).await.iter().all(|h| h == &2u32.to_be_bytes()));
    assert_eq!(versions(dir.path(), globex.tenant_id().as_str()).await, [1]);
    read_all(&store, &globex, 2).await.unwrap();
    store.close().await;

    // A fresh process reads it all (the signing key's seed included).
    let store = open(dir.path()).await;
    read_all(&store, &acme, 41).await.unwrap();
    store.audit_checkpoint(&acme).await.unwrap();
    let entries = store.audit_entries(&acme, &Default::default(), None, 1000).await.unwrap();
    assert!(entries.iter().any(|e| e.canonical.contains("keys.dek_rotated")));
    store.close().await;
}

#[tokio::test]
async fn a_row_that_does_not_open_is_reported_and_keeps_the_old_key_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    fill(&store, &acme, 10).await;
    store.close().await;
    let pool = raw(dir.path(), &tenant_file(&acme)).await;
    // Change the last byte of one value's tag.
    sqlx::query(
        "UPDATE token_vault SET sealed = CAST(substr(sealed, 1, length(sealed) - 1) || X'00' AS BLOB) \
         WHERE token = 'EMAIL_000000000003'",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = open(dir.path()).await;
    let report = store.rotate_tenant_dek(&operator(), &acme, NO_GRACE, &|_| {}).await.unwrap();
    assert!(!report.finished());
    assert_eq!(report.failed.len(), 1);
    assert_eq!(
        (report.failed[0].table.as_str(), report.failed[0].row.as_str()),
        ("token_vault", "EMAIL_000000000003")
    );
    assert_eq!((report.reencrypted, report.remaining), (13, 1));
    assert!(report.destroyed.is_empty());
    assert_eq!(versions(dir.path(), acme.tenant_id().as_str()).await, [1, 2], "the old key is kept");
    store.close().await;

    // The operator removes the bad row; running again finishes the same rotation.
    let pool = raw(dir.path(), &tenant_file(&acme)).await;
    sqlx::query("DELETE FROM token_vault WHERE token = 'EMAIL_000000000003'").execute(&pool).await.unwrap();
    pool.close().await;
    let store = open(dir.path()).await;
    let dry = store
        .rotate_tenant_dek(&operator(), &acme, RotateOptions { dry_run: true, ..NO_GRACE }, &|_| {})
        .await
        .unwrap();
    assert!(dry.resumed && dry.reencrypted == 0 && dry.to == 2, "{dry:?}");
    let report = store.rotate_tenant_dek(&operator(), &acme, NO_GRACE, &|_| {}).await.unwrap();
    assert!(report.resumed && report.finished(), "{report:?}");
    assert_eq!((report.to, report.reencrypted, report.destroyed.as_slice()), (2, 0, [1].as_slice()));
    assert_eq!(versions(dir.path(), acme.tenant_id().as_str()).await, [2]);
    store.close().await;
}

#[tokio::test]
async fn the_platform_data_key_rotates_and_its_log_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    tenant(&store, "acme").await;
    store.record_platform(&operator(), "test.event", &[], Default::default()).await.unwrap();
    let report = store.rotate_platform_dek(&operator(), NO_GRACE, &|_| {}).await.unwrap();
    assert!(report.finished() && report.reencrypted == 1, "{report:?}");
    store.close().await;
    let store = open(dir.path()).await;
    store.record_platform(&operator(), "test.event", &[], Default::default()).await.unwrap();
    let (header, size) = store.platform_audit_export_begin(&operator()).await.unwrap();
    let mut export = format!("{header}\n");
    for line in store.platform_audit_export_page(&operator(), 0, size, 1000).await.unwrap() {
        export.push_str(&line);
        export.push('\n');
    }
    let keys: Vec<_> = store
        .platform_audit_keys()
        .await
        .unwrap()
        .iter()
        .map(|k| airlock_audit::NoteVerifier::parse(&k.verifier).unwrap())
        .collect();
    let summary = airlock_audit::verify_export(export.as_bytes(), &keys, None).unwrap();
    assert!(summary.to_string().contains("airlock/platform"), "{summary}");
    store.close().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn deleting_a_tenant_shreds_its_key_removes_its_file_and_leaves_a_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    fill(&store, &acme, 5).await;
    fill(&store, &globex, 1).await;
    let agent =
        store.create_agent(&acme, &airlock_types::AgentName::parse("bot").unwrap(), "").await.unwrap();
    let key = store
        .create_api_key(&acme, airlock_store::KeyOwner::Agent(agent.id.clone()), "k", None)
        .await
        .unwrap();
    store.close().await;
    let file = dir.path().join(tenant_file(&acme));
    let backup = std::fs::read(&file).unwrap();
    let control = raw(dir.path(), "control.sqlite").await;
    let wrapped: Vec<u8> = sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE owner = ?")
        .bind(acme.tenant_id().as_str())
        .fetch_one(&control)
        .await
        .unwrap();
    control.close().await;

    let store = open(dir.path()).await;
    let acme = store.operator_scope(&operator(), acme.slug()).await.unwrap();
    let typo = store.delete_tenant(&operator(), &acme, "acme2", false).await.unwrap_err();
    assert!(matches!(typo, StoreError::Invalid(_)), "{typo}");
    assert!(file.exists(), "a wrong confirmation deletes nothing");
    let deleted = store.delete_tenant(&operator(), &acme, "acme", false).await.unwrap();
    assert_eq!(deleted, Deletion::Deleted { keys_destroyed: 1, database_removed: true });
    assert!(!file.exists());
    for suffix in ["-wal", "-shm"] {
        assert!(!dir.path().join(format!("{}{suffix}", tenant_file(&acme))).exists());
    }
    // The tenant is gone for every path in; its key no longer authenticates.
    assert!(store.operator_scope(&operator(), acme.slug()).await.is_err());
    assert!(store.tenant_db(&acme).await.is_err());
    assert!(store.authenticate_api_key(key.secret.expose()).await.is_err());
    assert!(store.delete_tenant(&operator(), &acme, "acme", false).await.is_err());
    // Others carry on.
    read_all(&store, &globex, 1).await.unwrap();
    let (header, size) = store.platform_audit_export_begin(&operator()).await.unwrap();
    let entries = store.platform_audit_export_page(&operator(), 0, size, 100).await.unwrap();
    assert!(entries.iter().any(|e| e.contains("tenant.deleted") && e.contains(acme.tenant_id().as_str())));
    assert!(header.contains("airlock/platform"));
    store.close().await;

    // The key is gone from the control plane's files: no leftover page holds it.
    for name in ["control.sqlite", "control.sqlite-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(name)) {
            assert!(!contains(&bytes, &wrapped), "{name} still holds the wrapped key");
        }
    }
    let control = raw(dir.path(), "control.sqlite").await;
    let tombstone = sqlx::query("SELECT slug, deleted_at, deleted_by FROM tenants WHERE id = ?")
        .bind(acme.tenant_id().as_str())
        .fetch_one(&control)
        .await
        .unwrap();
    assert_eq!(tombstone.get::<String, _>("slug"), "acme");
    assert!(tombstone.get::<Option<i64>, _>("deleted_at").is_some());
    let keys: Vec<(String, i64, String, Vec<u8>)> =
        sqlx::query_as("SELECT owner, version, kek_id, wrapped FROM data_keys")
            .fetch_all(&control)
            .await
            .unwrap();
    control.close().await;

    // A copy of the database taken before the deletion: no key left anywhere opens its
    // sealed values.
    std::fs::write(dir.path().join("backup.sqlite"), &backup).unwrap();
    let copy = raw(dir.path(), "backup.sqlite").await;
    let sealed: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT token, sealed FROM token_vault").fetch_all(&copy).await.unwrap();
    copy.close().await;
    assert_eq!(sealed.len(), 5);
    let kek: Arc<dyn airlock_vault::KekProvider> =
        Arc::new(LocalKek::from_file(&dir.path().join("keys/kek.key"), false).unwrap());
    let ring = Keyring::new(kek, vec![]);
    for (owner, version, kek_id, wrapped) in keys {
        let stored = airlock_vault::WrappedDek { kek_id, wrapped };
        let dek = ring.unwrap(&owner, u32::try_from(version).unwrap(), &stored).await.unwrap();
        // Even relabelled as the deleted tenant's key, another owner's DEK opens nothing.
        let relabelled = airlock_vault::Dek::from_bytes(
            acme.tenant_id().as_str(),
            1,
            SecretBox::new(Box::new(*dek.bytes().expose_secret())),
        );
        for (token, value) in &sealed {
            let at = airlock_vault::Context { table: "token_vault", column: "sealed", row: token };
            assert!(dek.open(at, value).is_err() && relabelled.open(at, value).is_err());
        }
    }
    assert!(!contains(&backup, b"person0@example.com"), "the values are sealed in the copy");
}

#[tokio::test]
async fn a_second_operator_must_confirm_a_deletion_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let operator = Principal::local_operator();
    let acme = tenant(&store, "acme").await;
    let principal = async |name: &str| {
        let key = store.create_operator_key(&operator, name, None).await.unwrap();
        store.authenticate_api_key(key.secret.expose()).await.unwrap()
    };
    let (alice, bob) = (principal("alice").await, principal("bob").await);
    let pending = store.delete_tenant(&alice, &acme, "acme", true).await.unwrap();
    assert!(matches!(pending, Deletion::AwaitingApproval { .. }), "{pending:?}");
    let again = store.delete_tenant(&alice, &acme, "acme", true).await.unwrap_err();
    assert!(matches!(again, StoreError::Refused(_)), "self-approval: {again}");
    assert!(store.tenant_db(&acme).await.is_ok(), "nothing deleted yet");
    let done = store.delete_tenant(&bob, &acme, "acme", true).await.unwrap();
    assert!(matches!(done, Deletion::Deleted { .. }));
    assert!(store.operator_scope(&operator, acme.slug()).await.is_err());
    store.close().await;
}
