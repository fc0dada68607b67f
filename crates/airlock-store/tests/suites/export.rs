//! A tenant's export: complete, verifiable offline, streamed, and free of secrets.

use std::io::{Cursor, Read as _};
use std::time::Duration;

use airlock_audit::NoteVerifier;
use airlock_audit::archive::verify_archive;
use airlock_store::{ExportChunk, KeyOwner, NewUser, Principal, Store, TenantScope};
use airlock_types::{AgentName, Email, Role};
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::sqlite::SqlitePoolOptions;

use crate::common::{open_store, tenant};
use crate::suites::keys::fill;

async fn export(store: &Store, scope: &TenantScope) -> (Vec<u8>, Vec<ExportChunk>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let (store2, scope2) = (store.clone(), scope.clone());
    let task = tokio::spawn(async move {
        store2.export_tenant(&Principal::local_operator(), &scope2, tx).await.unwrap()
    });
    let mut bytes = Vec::new();
    let mut chunks = Vec::new();
    while let Some(chunk) = rx.recv().await {
        bytes.extend_from_slice(&chunk.bytes);
        chunks.push(ExportChunk { bytes: Vec::new(), ..chunk });
    }
    let summary = task.await.unwrap();
    assert_eq!(summary.archive_bytes, bytes.len() as u64);
    (bytes, chunks)
}

/// Every entry of the archive, uncompressed.
fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(Cursor::new(archive)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut file = zip.by_index(i).unwrap();
            let mut content = Vec::new();
            file.read_to_end(&mut content).unwrap();
            (file.name().unwrap().into_owned(), content)
        })
        .collect()
}

async fn verifiers(store: &Store, scope: &TenantScope) -> Vec<NoteVerifier> {
    store.audit_keys(scope).await.unwrap().iter().map(|k| NoteVerifier::parse(&k.verifier).unwrap()).collect()
}

#[tokio::test]
async fn an_export_holds_every_table_verifies_offline_and_holds_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), 100, Duration::from_secs(600)).await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    fill(&store, &acme, 300).await;
    fill(&store, &globex, 1).await;
    let user = store
        .create_user(
            &acme,
            NewUser {
                email: Email::parse("ana@acme.example").unwrap(),
                name: "Ana".into(),
                roles: [Role::Admin].into_iter().collect(),
                password: Some(SecretString::from("correct horse battery staple")),
            },
        )
        .await
        .unwrap();
    let agent = store.create_agent(&acme, &AgentName::parse("bot").unwrap(), "").await.unwrap();
    let key = store.create_api_key(&acme, KeyOwner::Agent(agent.id.clone()), "k", None).await.unwrap();
    let tokenization_key = store.tokenization_key(&acme).await.unwrap();

    let (archive, chunks) = export(&store, &acme).await;
    assert!(chunks.len() > 3, "the archive is handed over as it is written");
    assert!(chunks.windows(2).all(|w| w[0].rows <= w[1].rows));

    let summary = verify_archive(Cursor::new(&archive), &verifiers(&store, &acme).await).unwrap();
    assert_eq!(summary.manifest.tenant, acme.tenant_id().as_str());
    let audit = summary.audit.expect("the audit log is in the archive");
    assert!(audit.to_string().contains(acme.tenant_id().as_str()), "{audit}");
    // Another tenant's keys do not verify it.
    assert!(verify_archive(Cursor::new(&archive), &verifiers(&store, &globex).await).is_err());

    let entries = entries(&archive);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    for table in [
        "tables/runs.jsonl",
        "tables/actions.jsonl",
        "tables/tools.jsonl",
        "tables/credentials.jsonl",
        "tables/token_vault.jsonl",
        "tables/model_routes.jsonl",
        "tables/control_users.jsonl",
        "tables/control_agents.jsonl",
        "tables/control_api_keys.jsonl",
        "audit/log.jsonl",
        "audit/keys.json",
        "manifest.json",
        "manifest.sig",
    ] {
        assert!(names.contains(&table), "{table} missing from {names:?}");
    }
    assert!(
        !names.contains(&"tables/audit_entries.jsonl"),
        "the log is exported in its verifiable form only"
    );
    let rows = |name: &str| {
        let (_, content) = entries.iter().find(|(n, _)| n == name).unwrap();
        String::from_utf8(content.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let vault = rows("tables/token_vault.jsonl");
    assert_eq!(vault.len(), 300);
    assert_eq!(vault[0]["sealed"], "[redacted]");
    assert_eq!(vault[0]["token"], "EMAIL_000000000000");
    let users = rows("tables/control_users.jsonl");
    assert!(
        users
            .iter()
            .any(|u| u["id"] == user.id.as_str() && u["has_password"] == true && u["roles"][0] == "admin")
    );
    assert!(!names.iter().any(|n| n.contains("globex")));

    // Search every entry for every secret planted, in every encoding it could take.
    let pool = SqlitePoolOptions::new()
        .connect(&format!("sqlite://{}", dir.path().join("control.sqlite").display()))
        .await
        .unwrap();
    let wrapped: Vec<u8> = sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE owner = ?")
        .bind(acme.tenant_id().as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
    let key_hash: Vec<u8> = sqlx::query_scalar("SELECT secret_hash FROM api_keys WHERE id = ?")
        .bind(key.key.id.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
    let password_hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = ?")
        .bind(user.id.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    let tenant_pool = SqlitePoolOptions::new()
        .connect(&format!(
            "sqlite://{}",
            dir.path().join(format!("tenants/{}.sqlite", acme.tenant_id())).display()
        ))
        .await
        .unwrap();
    let mut sealed: Vec<Vec<u8>> = Vec::new();
    for sql in [
        "SELECT sealed_seed FROM signing_keys",
        "SELECT sealed FROM credentials",
        "SELECT sealed FROM tokenization_keys",
        "SELECT sealed FROM token_vault LIMIT 3",
        "SELECT key_sealed FROM model_routes",
        "SELECT lease_hash FROM runs",
    ] {
        sealed.extend(sqlx::query_scalar::<_, Vec<u8>>(sql).fetch_all(&tenant_pool).await.unwrap());
    }
    tenant_pool.close().await;

    let b64 = base64::engine::general_purpose::STANDARD;
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("credential".into(), b"cred-secret-1".to_vec()),
        ("provider key".into(), b"sk-provider-secret-1".to_vec()),
        ("a tokenized value".into(), b"person0@example.com".to_vec()),
        ("a tokenized value".into(), b"person299@example.com".to_vec()),
        ("the agent's API key".into(), key.secret.expose().as_bytes().to_vec()),
        ("the password".into(), b"correct horse battery staple".to_vec()),
        ("the password hash".into(), password_hash.as_bytes().to_vec()),
    ];
    for (what, bytes) in [
        ("the tokenization key", tokenization_key.expose_secret().to_vec()),
        ("the wrapped data key", wrapped),
        ("the API key's hash", key_hash),
    ]
    .into_iter()
    .chain(sealed.into_iter().map(|s| ("a sealed value", s)))
    {
        secrets.push((format!("{what} (hex)"), hex::encode(&bytes).into_bytes()));
        secrets.push((format!("{what} (HEX)"), hex::encode_upper(&bytes).into_bytes()));
        secrets.push((format!("{what} (base64)"), b64.encode(&bytes).into_bytes()));
        secrets.push((what.to_owned(), bytes));
    }
    for (name, content) in &entries {
        for (what, secret) in &secrets {
            assert!(!content.windows(secret.len()).any(|w| w == secret.as_slice()), "{name} holds {what}");
        }
    }
    store.close().await;
}

#[tokio::test]
async fn an_export_stops_cleanly_when_its_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), 100, Duration::from_secs(600)).await;
    let acme = tenant(&store, "acme").await;
    fill(&store, &acme, 2000).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let (store2, scope2) = (store.clone(), acme.clone());
    let task =
        tokio::spawn(async move { store2.export_tenant(&Principal::local_operator(), &scope2, tx).await });
    rx.recv().await.unwrap();
    drop(rx);
    let error = task.await.unwrap().unwrap_err();
    assert!(error.to_string().contains("reader went away"), "{error}");
    // The store carries on.
    let (archive, _) = export(&store, &acme).await;
    verify_archive(Cursor::new(&archive), &verifiers(&store, &acme).await).unwrap();
    store.close().await;
}
