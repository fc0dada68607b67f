//! Tools, credentials and policies in the tenant's database.

use std::path::Path;
use std::time::Duration;

use airlock_store::{AuditFilter, Store, StoreError, TenantScope, ToolSpec};
use airlock_types::ToolName;
use secrecy::SecretBox;
use serde_json::{Value, json};

use crate::common::{open_store, tenant};

async fn open(dir: &Path) -> Store {
    open_store(dir, 100, Duration::from_secs(60)).await
}

fn spec(credential: Option<&str>) -> ToolSpec {
    ToolSpec {
        description: "Send an e-mail".into(),
        input_schema: json!({"type": "object", "properties": {"to": {"type": "string"}}, "additionalProperties": false}),
        tier: "egress".into(),
        side_effects: true,
        classification: "internal".into(),
        trusted_source: false,
        cost_cents: 1,
        daily_cost_ceiling_cents: None,
        connector: json!({"kind": "http", "method": "POST", "url": "https://mail.example.com/send"}),
        credential: credential.map(|c| ToolName::parse(c).unwrap()),
    }
}

fn name(n: &str) -> ToolName {
    ToolName::parse(n).unwrap()
}

async fn event_types(store: &Store, scope: &TenantScope) -> Vec<String> {
    store
        .audit_entries(scope, &AuditFilter::default(), None, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.canonical).unwrap()["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_credential_is_sealed_and_never_returned_and_its_tool_refers_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let scope = tenant(&store, "acme").await;
    let secret = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c";
    let material = SecretBox::new(json!({"token": secret}).to_string().into_bytes().into_boxed_slice());
    let credential = store.put_credential(&scope, &name("mail-token"), "bearer", &material).await.unwrap();
    assert!(credential.id.starts_with("crd_"));
    let tool = store.create_tool(&scope, &name("send_email"), spec(Some("mail-token"))).await.unwrap();
    assert_eq!(tool.credential.as_deref(), Some("mail-token"));
    assert_eq!(tool.version, 1);
    let listed = serde_json::to_string(&store.list_credentials(&scope).await.unwrap()).unwrap();
    assert!(!listed.contains(secret));

    // Rotation replaces the secret under the same id.
    let rotated = SecretBox::new(
        json!({"token": "sk-live-rotated-0000000000000000"}).to_string().into_bytes().into_boxed_slice(),
    );
    let again = store.put_credential(&scope, &name("mail-token"), "bearer", &rotated).await.unwrap();
    assert_eq!(again.id, credential.id);

    store.close().await;
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("sk-live"), "a secret is in {}", entry.display());
    }
    let store = open(dir.path()).await;
    assert_eq!(
        event_types(&store, &scope).await,
        ["tenant.created", "credential.stored", "tool.registered", "credential.rotated"]
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn tools_conflict_update_and_stay_in_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = tenant(&store, "acme").await;
    let b = tenant(&store, "globex").await;
    store.create_tool(&a, &name("send_email"), spec(None)).await.unwrap();
    assert!(matches!(
        store.create_tool(&a, &name("send_email"), spec(None)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.create_tool(&a, &name("other"), spec(Some("missing"))).await,
        Err(StoreError::NotFound { .. })
    ));
    let mut changed = spec(None);
    changed.tier = "financial".into();
    let updated = store.update_tool(&a, &name("send_email"), changed).await.unwrap();
    assert_eq!((updated.version, updated.tier.as_str()), (2, "financial"));
    assert!(matches!(
        store.update_tool(&a, &name("nope"), spec(None)).await,
        Err(StoreError::NotFound { .. })
    ));
    // Tenant B sees none of it.
    assert!(store.list_tools(&b).await.unwrap().is_empty());
    assert!(matches!(store.get_tool(&b, &name("send_email")).await, Err(StoreError::NotFound { .. })));
    assert_eq!(store.list_tools(&a).await.unwrap().len(), 1);
}

#[tokio::test]
async fn policy_versions_accumulate_and_are_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let scope = tenant(&store, "acme").await;
    assert!(store.current_policies(&scope).await.unwrap().is_none());
    store.put_policies(&scope, "permit(principal, action, resource);").await.unwrap();
    let v2 = store.put_policies(&scope, "forbid(principal, action, resource);").await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(
        store.current_policies(&scope).await.unwrap().unwrap().text,
        "forbid(principal, action, resource);"
    );
    let db = store.tenant_db(&scope).await.unwrap();
    let err = db
        .database()
        .execute_raw("UPDATE policies SET text = 'permit(principal, action, resource);'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    let types = event_types(&store, &scope).await;
    assert_eq!(types.iter().filter(|t| *t == "policy.updated").count(), 2);
}
