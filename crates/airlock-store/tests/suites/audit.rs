//! The audit log in storage: durable, append-only at the database level, verifiable by the
//! offline verifier with the public key alone.

use std::path::Path;
use std::time::Duration;

use airlock_audit::{Checkpoint, NoteVerifier, verify_export};
use airlock_store::{AuditFilter, Store, TenantScope};
use airlock_types::AgentName;
use serde_json::{Map, Value};

use crate::common::{open_store, tenant};

async fn open(dir: &Path, every: u64) -> Store {
    open_store(dir, every, Duration::from_secs(60)).await
}

async fn export(store: &Store, scope: &TenantScope) -> String {
    let (header, size) = store.audit_export_begin(scope, "jsonl").await.unwrap();
    let mut text = format!("{header}\n");
    let mut from = 0;
    while from < size {
        for line in store.audit_export_page(scope, from, size, 7).await.unwrap() {
            text.push_str(&line);
            text.push('\n');
        }
        from += 7;
    }
    text
}

async fn verifiers(store: &Store, scope: &TenantScope) -> Vec<NoteVerifier> {
    store.audit_keys(scope).await.unwrap().iter().map(|k| NoteVerifier::parse(&k.verifier).unwrap()).collect()
}

fn meta(n: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("n".into(), Value::from(n));
    m
}

#[tokio::test]
async fn an_export_verifies_with_the_public_key_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 5).await;
    let scope = tenant(&store, "acme").await;
    for n in 0..23 {
        store.record(&scope, "test.event", &[("thing", "x")], meta(n)).await.unwrap();
    }
    let text = export(&store, &scope).await;
    let summary = verify_export(text.as_bytes(), &verifiers(&store, &scope).await, None).unwrap();
    // tenant.created + 23 events + audit.exported
    assert_eq!(summary.entries, 25);
    assert!(summary.checkpoints > 25 / 5, "header plus one per five entries: {summary}");
    let first = text.lines().nth(1).unwrap();
    assert!(first.contains("\"type\":\"tenant.created\""), "{first}");
    assert!(text.contains("\"type\":\"audit.exported\""));
}

#[tokio::test]
async fn concurrent_appends_are_all_durable_and_in_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100).await;
    let scope = tenant(&store, "acme").await;
    let mut tasks = Vec::new();
    for n in 0..400u64 {
        let (store, scope) = (store.clone(), scope.clone());
        tasks.push(tokio::spawn(async move {
            store.record(&scope, "test.event", &[], meta(n)).await.unwrap().index
        }));
    }
    let mut indexes = Vec::new();
    for task in tasks {
        indexes.push(task.await.unwrap());
    }
    indexes.sort_unstable();
    assert_eq!(indexes, (1..=400).collect::<Vec<u64>>(), "every append got its own index");
    store.close().await;

    let store = open(dir.path(), 100).await;
    let text = export(&store, &scope).await;
    let summary = verify_export(text.as_bytes(), &verifiers(&store, &scope).await, None).unwrap();
    assert_eq!(summary.entries, 402);
}

#[tokio::test]
async fn the_database_refuses_to_update_or_delete_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 5).await;
    let scope = tenant(&store, "acme").await;
    store.record(&scope, "test.event", &[], meta(1)).await.unwrap();
    store.audit_checkpoint(&scope).await.unwrap();
    let db = store.tenant_db(&scope).await.unwrap();
    let pool = db.database().clone();
    for statement in [
        "UPDATE audit_entries SET type = 'forged' WHERE idx = 0",
        "DELETE FROM audit_entries WHERE idx = 1",
        "DELETE FROM audit_entries",
        "UPDATE audit_checkpoints SET note = 'forged'",
        "DELETE FROM audit_checkpoints",
        "DELETE FROM signing_keys",
        "UPDATE signing_keys SET public_key = x'00'",
    ] {
        let err = pool.execute_raw(statement).await.expect_err(statement);
        assert!(
            err.to_string().contains("append-only") || err.to_string().contains("signing key"),
            "{statement}: {err}"
        );
    }
    let entries = store.audit_entries(&scope, &AuditFilter::default(), None, 100).await.unwrap();
    assert_eq!(entries.len(), 2);
}

#[tokio::test]
async fn a_log_altered_underneath_airlock_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (scope, db_path) = {
        let store = open(dir.path(), 2).await;
        let scope = tenant(&store, "acme").await;
        for n in 0..4 {
            store.record(&scope, "test.event", &[], meta(n)).await.unwrap();
        }
        store.audit_checkpoint(&scope).await.unwrap();
        store.close().await;
        (scope.clone(), dir.path().join("tenants").join(format!("{}.sqlite", scope.tenant_id())))
    };
    // Someone with file access drops the trigger and rewrites an entry's leaf.
    let db = airlock_store::Database::open_sqlite(&db_path, false, 1).await.unwrap();
    db.execute_raw("DROP TRIGGER audit_entries_no_update").await.unwrap();
    db.execute_raw("UPDATE audit_entries SET leaf_hash = zeroblob(32) WHERE idx = 1").await.unwrap();
    db.close().await;

    let store = open(dir.path(), 2).await;
    let err = store.record(&scope, "test.event", &[], meta(9)).await.unwrap_err();
    assert!(err.to_string().contains("signed checkpoint"), "{err}");
}

#[tokio::test]
async fn rotated_keys_stay_published_and_old_checkpoints_keep_verifying() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 3).await;
    let scope = tenant(&store, "acme").await;
    for n in 0..5 {
        store.record(&scope, "test.event", &[], meta(n)).await.unwrap();
    }
    let old = store.audit_checkpoint(&scope).await.unwrap();
    let rotated = store.rotate_signing_key(&scope).await.unwrap();
    assert_eq!(rotated.version, 2);
    for n in 0..5 {
        store.record(&scope, "test.event", &[], meta(n)).await.unwrap();
    }
    let keys = store.audit_keys(&scope).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].retired_at.is_none() && keys[1].retired_at.is_some());
    let all = verifiers(&store, &scope).await;
    // The old checkpoint verifies with the old key only.
    assert!(Checkpoint::verify(&old.note, &all[1..]).is_ok());
    assert!(Checkpoint::verify(&old.note, &all[..1]).is_err());
    // The whole log verifies with both keys published.
    let text = export(&store, &scope).await;
    verify_export(text.as_bytes(), &all, None).unwrap();
    assert!(verify_export(text.as_bytes(), &all[..1], None).is_err(), "old checkpoints need the old key");
}

#[tokio::test]
async fn proofs_from_storage_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 4).await;
    let scope = tenant(&store, "acme").await;
    for n in 0..20 {
        store.record(&scope, "test.event", &[], meta(n)).await.unwrap();
    }
    let checkpoint = store.audit_checkpoint(&scope).await.unwrap();
    for index in [0, 7, 20] {
        let proof = store.audit_inclusion_proof(&scope, index, checkpoint.size).await.unwrap();
        assert_eq!(airlock_audit::merkle::leaf_hash(proof.entry.as_bytes()), proof.leaf_hash);
        airlock_audit::merkle::verify_inclusion(
            &proof.leaf_hash,
            index,
            checkpoint.size,
            &proof.proof,
            &checkpoint.root,
        )
        .unwrap();
    }
    let old_size = 8;
    let old_entries = store.audit_entries(&scope, &AuditFilter::default(), None, old_size).await.unwrap();
    let old_leaves: Vec<_> =
        old_entries.iter().map(|e| airlock_audit::merkle::leaf_hash(e.canonical.as_bytes())).collect();
    let old_root = airlock_audit::merkle::root(&old_leaves);
    let proof = store.audit_consistency_proof(&scope, old_size, checkpoint.size).await.unwrap();
    airlock_audit::merkle::verify_consistency(old_size, checkpoint.size, &old_root, &checkpoint.root, &proof)
        .unwrap();
    assert!(store.audit_inclusion_proof(&scope, 99, 21).await.is_err());
    assert!(store.audit_consistency_proof(&scope, 0, 5).await.is_err());
}

#[tokio::test]
async fn identity_changes_are_recorded_with_their_actor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100).await;
    let scope = tenant(&store, "acme").await;
    let agent = store.create_agent(&scope, &AgentName::parse("bot").unwrap(), "").await.unwrap();
    let key = store
        .create_api_key(&scope, airlock_store::KeyOwner::Agent(agent.id.clone()), "k", None)
        .await
        .unwrap();
    let secret = key.secret.expose().to_owned();
    store.revoke_api_key(&scope, &key.key.id).await.unwrap();
    assert!(store.authenticate_api_key(&secret).await.is_err());
    let entries = store.audit_entries(&scope, &AuditFilter::default(), None, 100).await.unwrap();
    let types: Vec<String> = entries
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.canonical).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["tenant.created", "agent.created", "key.created", "key.revoked", "auth.key_rejected"]);
    let text: Vec<&str> = entries.iter().map(|e| e.canonical.as_str()).collect();
    assert!(!text.concat().contains(secret.rsplit('_').next().unwrap()), "a key's secret reached the log");
    let rejected: Value = serde_json::from_str(text[4]).unwrap();
    assert_eq!(rejected["actor"]["kind"], "anonymous");
    assert_eq!(rejected["metadata"]["reason"], "revoked credential");
    let by_type = AuditFilter { event_type: Some("key.".into()), ..AuditFilter::default() };
    assert_eq!(store.audit_entries(&scope, &by_type, None, 100).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_change_whose_entry_cannot_be_recorded_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (scope, db_path) = {
        let store = open(dir.path(), 1).await;
        let scope = tenant(&store, "acme").await;
        store.close().await;
        (scope.clone(), dir.path().join("tenants").join(format!("{}.sqlite", scope.tenant_id())))
    };
    // Alter the log underneath Airlock, so its writer refuses to extend it.
    let db = airlock_store::Database::open_sqlite(&db_path, false, 1).await.unwrap();
    db.execute_raw("DROP TRIGGER audit_entries_no_update").await.unwrap();
    db.execute_raw("UPDATE audit_entries SET leaf_hash = zeroblob(32) WHERE idx = 0").await.unwrap();
    db.close().await;

    let store = open(dir.path(), 1).await;
    let err = store.create_agent(&scope, &AgentName::parse("bot").unwrap(), "").await.unwrap_err();
    assert!(err.to_string().contains("signed checkpoint"), "{err}");
    assert!(store.list_agents(&scope).await.unwrap().is_empty(), "the agent was created without its entry");
}
