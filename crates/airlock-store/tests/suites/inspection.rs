//! The tenant's redaction profile, tokenization key and token vault.

use std::path::Path;
use std::time::Duration;

use airlock_store::{Store, StoreError, VaultEntry};
use secrecy::ExposeSecret;

use crate::common::{open_store, tenant};

async fn open(dir: &Path) -> Store {
    open_store(dir, 100, Duration::from_secs(60)).await
}

fn entry(token: &str, value: &str) -> VaultEntry {
    VaultEntry { token: token.to_owned(), kind: "email".to_owned(), value: value.to_owned() }
}

fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                // (A WAL file may vanish between listing and reading.)
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    return true;
                }
            }
        }
    }
    false
}

#[tokio::test]
async fn the_tokenization_key_is_stable_sealed_and_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let first = store.tokenization_key(&acme).await.unwrap();
    let again = store.tokenization_key(&acme).await.unwrap();
    let other = store.tokenization_key(&globex).await.unwrap();
    assert_eq!(first.expose_secret(), again.expose_secret());
    assert_ne!(first.expose_secret(), other.expose_secret());
    assert_eq!(first.expose_secret().len(), 32);
    drop(store);
    assert!(!files_contain(dir.path(), first.expose_secret()), "the key is stored in the clear");
}

#[tokio::test]
async fn the_vault_restores_only_live_values_of_its_own_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let value = "ana.lopez@example.com";
    store
        .remember_tokens(&acme, &[entry("EMAIL_0123456789ab", value)], Duration::from_secs(3600))
        .await
        .unwrap();
    // The same value again only extends its retention.
    store
        .remember_tokens(&acme, &[entry("EMAIL_0123456789ab", value)], Duration::from_secs(7200))
        .await
        .unwrap();
    let wanted = vec!["EMAIL_0123456789ab".to_owned(), "EMAIL_ffffffffffff".to_owned()];
    let found = store.lookup_tokens(&acme, &wanted).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found["EMAIL_0123456789ab"], value);
    assert!(
        store.lookup_tokens(&globex, &wanted).await.unwrap().is_empty(),
        "another tenant's token restored"
    );

    // A token can never come to stand for a second value while the first is live.
    let clash = store
        .remember_tokens(&acme, &[entry("EMAIL_0123456789ab", "eve@example.net")], Duration::from_secs(60))
        .await;
    assert!(matches!(clash, Err(StoreError::Refused(_))), "{clash:?}");
    assert_eq!(store.lookup_tokens(&acme, &wanted).await.unwrap()["EMAIL_0123456789ab"], value);

    drop(store);
    assert!(!files_contain(dir.path(), value.as_bytes()), "a vault value is stored in the clear");
}

#[tokio::test]
async fn expired_values_are_not_restored_and_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    store
        .remember_tokens(&acme, &[entry("EMAIL_0123456789ab", "a@example.com")], Duration::ZERO)
        .await
        .unwrap();
    store
        .remember_tokens(&acme, &[entry("EMAIL_aaaaaaaaaaaa", "b@example.com")], Duration::from_secs(3600))
        .await
        .unwrap();
    let wanted = vec!["EMAIL_0123456789ab".to_owned(), "EMAIL_aaaaaaaaaaaa".to_owned()];
    assert_eq!(store.lookup_tokens(&acme, &wanted).await.unwrap().len(), 1);
    store
        .remember_tokens(&acme, &[entry("EMAIL_bbbbbbbbbbbb", "d@example.com")], Duration::ZERO)
        .await
        .unwrap();
    // Writing purged the first expired value; the second goes on request.
    assert_eq!(store.purge_expired_tokens(&acme).await.unwrap(), 1);
    // Once expired, a token may be minted again for whatever value it now stands for.
    store
        .remember_tokens(&acme, &[entry("EMAIL_0123456789ab", "c@example.com")], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.lookup_tokens(&acme, &wanted).await.unwrap()["EMAIL_0123456789ab"], "c@example.com");
}

#[tokio::test]
async fn profile_versions_are_kept_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    assert!(store.inspection_profile(&acme).await.unwrap().is_none());
    store.put_inspection_profile(&acme, r#"{"mode":"standard"}"#).await.unwrap();
    let v2 = store.put_inspection_profile(&acme, r#"{"mode":"aggressive"}"#).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(store.inspection_profile(&acme).await.unwrap().unwrap().text, r#"{"mode":"aggressive"}"#);
    let entries = store.audit_entries(&acme, &Default::default(), None, 100).await.unwrap();
    assert_eq!(entries.iter().filter(|e| e.canonical.contains("inspection.profile_updated")).count(), 2);
}
