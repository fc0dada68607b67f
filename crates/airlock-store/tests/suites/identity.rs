//! Tenants, identities, keys and sessions.

use std::path::Path;
use std::time::Duration;

use airlock_crypto::KeyedHasher;
use airlock_store::{AuthError, KeyOwner, NewUser, Principal, Store, StoreError, StoreOptions, TenantScope};
use airlock_types::{AgentName, Email, Role, RoleSet, TenantSlug, Timestamp};
use secrecy::SecretString;

use crate::common::{self, open_store, tenant};

async fn open(dir: &Path) -> Store {
    open_store(dir, 5, Duration::from_secs(3600)).await
}

async fn open_with(dir: &Path, idle: Duration) -> Store {
    open_store(dir, 5, idle).await
}

fn options(dir: &Path, idle: Duration) -> StoreOptions {
    common::options(dir, 5, idle)
}

fn roles(list: &[Role]) -> RoleSet {
    list.iter().copied().collect()
}

async fn user(
    store: &Store,
    scope: &TenantScope,
    email: &str,
    password: Option<&str>,
) -> airlock_store::User {
    store
        .create_user(
            scope,
            NewUser {
                email: Email::parse(email).unwrap(),
                name: email.to_owned(),
                roles: roles(&[Role::Member]),
                password: password.map(|p| SecretString::from(p.to_owned())),
            },
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn each_tenant_gets_its_own_database_file_recording_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = tenant(&store, "acme").await;
    let b = tenant(&store, "globex").await;
    assert!(dir.path().join("tenants").join(format!("{}.sqlite", a.tenant_id())).is_file());
    assert!(dir.path().join("tenants").join(format!("{}.sqlite", b.tenant_id())).is_file());
    let db = store.tenant_db(&a).await.unwrap();
    assert_eq!(db.tenant_id(), a.tenant_id());
    assert!(db.created_at().await.unwrap() <= Timestamp::now());
}

#[tokio::test]
async fn a_tenant_database_swapped_for_another_tenants_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let store = open(dir.path()).await;
        let a = tenant(&store, "acme").await;
        let b = tenant(&store, "globex").await;
        store.close().await;
        (a, b)
    };
    let tenants = dir.path().join("tenants");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(tenants.join(format!("{}.sqlite{suffix}", b.tenant_id())));
    }
    std::fs::copy(
        tenants.join(format!("{}.sqlite", a.tenant_id())),
        tenants.join(format!("{}.sqlite", b.tenant_id())),
    )
    .unwrap();
    let store = open(dir.path()).await;
    assert!(matches!(store.tenant_db(&b).await, Err(StoreError::TenantMismatch { .. })));
    assert!(store.tenant_db(&a).await.is_ok());
}

#[tokio::test]
async fn only_operators_manage_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let scope = tenant(&store, "acme").await;
    let admin = store
        .create_user(
            &scope,
            NewUser {
                email: Email::parse("ada@acme.test").unwrap(),
                name: "Ada".into(),
                roles: roles(&[Role::Admin]),
                password: None,
            },
        )
        .await
        .unwrap();
    let key = store.create_api_key(&scope, KeyOwner::User(admin.id), "k", None).await.unwrap();
    let principal = store.authenticate_api_key(key.secret.expose()).await.unwrap();
    let slug = TenantSlug::parse("evil").unwrap();
    assert!(matches!(store.create_tenant(&principal, &slug, "").await, Err(StoreError::Forbidden(_))));
    assert!(matches!(store.list_tenants(&principal).await, Err(StoreError::Forbidden(_))));
    assert!(matches!(store.operator_scope(&principal, &slug).await, Err(StoreError::Forbidden(_))));
    assert_eq!(store.count_tenants().await.unwrap(), 1);
}

#[tokio::test]
async fn a_duplicate_slug_conflicts_and_leaves_no_database_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    tenant(&store, "acme").await;
    let operator = Principal::local_operator();
    let err = store.create_tenant(&operator, &TenantSlug::parse("acme").unwrap(), "").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let files = std::fs::read_dir(dir.path().join("tenants"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sqlite"))
        .count();
    assert_eq!(files, 1);
}

#[tokio::test]
async fn scoped_reads_never_see_another_tenants_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = tenant(&store, "acme").await;
    let b = tenant(&store, "globex").await;
    let b_user = user(&store, &b, "bob@globex.test", None).await;
    let b_agent = store.create_agent(&b, &AgentName::parse("bot").unwrap(), "").await.unwrap();
    let b_key = store.create_api_key(&b, KeyOwner::Agent(b_agent.id.clone()), "k", None).await.unwrap();

    assert!(store.list_users(&a).await.unwrap().is_empty());
    assert!(store.list_agents(&a).await.unwrap().is_empty());
    assert!(store.list_api_keys(&a).await.unwrap().is_empty());
    assert!(matches!(store.get_user(&a, &b_user.id).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.get_agent(&a, &b_agent.id).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.get_api_key(&a, &b_key.key.id).await, Err(StoreError::NotFound { .. })));
    // Revoking through the wrong tenant changes nothing.
    assert!(store.revoke_api_key(&a, &b_key.key.id).await.is_err());
    assert!(store.authenticate_api_key(b_key.secret.expose()).await.is_ok());
    // Issuing a key in tenant A to B's agent or user fails.
    assert!(matches!(
        store.create_api_key(&a, KeyOwner::Agent(b_agent.id), "x", None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.create_api_key(&a, KeyOwner::User(b_user.id), "x", None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.list_api_keys(&a).await.unwrap().is_empty());
}

#[tokio::test]
async fn api_keys_are_stored_only_as_keyed_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let scope = tenant(&store, "acme").await;
    let agent = store.create_agent(&scope, &AgentName::parse("bot").unwrap(), "").await.unwrap();
    let created = store.create_api_key(&scope, KeyOwner::Agent(agent.id), "k", None).await.unwrap();
    let secret = created.secret.expose().to_owned();
    let secret_part = secret.rsplit('_').next().unwrap().to_owned();
    store.close().await;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&secret_part), "the key's secret is in {}", path.display());
        }
    }
    // A store with a different server key cannot verify the key.
    let other = Store::open(
        options(dir.path(), Duration::from_secs(60)),
        KeyedHasher::new(b"a different server key of enough length!".to_vec().into()),
    )
    .await
    .unwrap();
    assert_eq!(other.authenticate_api_key(&secret).await.unwrap_err(), AuthError::Unknown);
    other.close().await;
    let store = open(dir.path()).await;
    assert!(store.authenticate_api_key(&secret).await.is_ok());
}

#[tokio::test]
async fn tampered_revoked_and_expired_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let scope = tenant(&store, "acme").await;
    let agent = store.create_agent(&scope, &AgentName::parse("bot").unwrap(), "").await.unwrap();
    let created = store.create_api_key(&scope, KeyOwner::Agent(agent.id.clone()), "k", None).await.unwrap();
    let secret = created.secret.expose().to_owned();

    // Flip one character of the secret part.
    let mut tampered = secret.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(store.authenticate_api_key(&tampered).await.unwrap_err(), AuthError::Unknown);
    assert_eq!(store.authenticate_api_key("alk_nonsense").await.unwrap_err(), AuthError::Malformed);

    store.revoke_api_key(&scope, &created.key.id).await.unwrap();
    assert_eq!(store.authenticate_api_key(&secret).await.unwrap_err(), AuthError::Revoked);

    let soon = Timestamp::now().plus(Duration::from_millis(300));
    let short = store.create_api_key(&scope, KeyOwner::Agent(agent.id), "short", Some(soon)).await.unwrap();
    assert!(store.authenticate_api_key(short.secret.expose()).await.is_ok());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.authenticate_api_key(short.secret.expose()).await.unwrap_err(), AuthError::Expired);

    let past = Timestamp::now();
    assert!(matches!(
        store
            .create_api_key(
                &scope,
                KeyOwner::User(user(&store, &scope, "u@acme.test", None).await.id),
                "p",
                Some(past)
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn login_fails_the_same_way_for_every_wrong_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let scope = tenant(&store, "acme").await;
    tenant(&store, "globex").await;
    user(&store, &scope, "ada@acme.test", Some("correct horse battery staple")).await;
    user(&store, &scope, "nopass@acme.test", None).await;
    let pw = |p: &str| SecretString::from(p.to_owned());
    let acme = TenantSlug::parse("acme").unwrap();
    let globex = TenantSlug::parse("globex").unwrap();
    let ada = Email::parse("ada@acme.test").unwrap();

    let ok = store.login(&acme, &ada, &pw("correct horse battery staple")).await.unwrap();
    assert_eq!(ok.principal.tenant_id(), Some(scope.tenant_id()));
    for (tenant, email, password) in [
        (&acme, &ada, "wrong password entirely"),
        (&globex, &ada, "correct horse battery staple"),
        (&acme, &Email::parse("nobody@acme.test").unwrap(), "correct horse battery staple"),
        (&acme, &Email::parse("nopass@acme.test").unwrap(), ""),
    ] {
        let err = store.login(tenant, email, &pw(password)).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidLogin, "{tenant} {email}");
    }
}

#[tokio::test]
async fn sessions_end_when_idle_and_when_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Duration::from_millis(400)).await;
    let scope = tenant(&store, "acme").await;
    user(&store, &scope, "ada@acme.test", Some("correct horse battery staple")).await;
    let login = || async {
        store
            .login(
                &TenantSlug::parse("acme").unwrap(),
                &Email::parse("ada@acme.test").unwrap(),
                &SecretString::from("correct horse battery staple".to_owned()),
            )
            .await
            .unwrap()
    };
    let session = login().await;
    let token = session.secret.expose().to_owned();
    // Use keeps the session alive past the idle timeout.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(store.authenticate_session(&token).await.is_ok());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.authenticate_session(&token).await.unwrap_err(), AuthError::Expired);

    let session = login().await;
    store.revoke_session(&session.principal.tenant_scope().unwrap(), &session.session.id).await.unwrap();
    assert_eq!(store.authenticate_session(session.secret.expose()).await.unwrap_err(), AuthError::Revoked);
    // A session token is not an API key and vice versa.
    assert_eq!(store.authenticate_api_key(session.secret.expose()).await.unwrap_err(), AuthError::Malformed);
}

#[tokio::test]
async fn role_changes_take_effect_on_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let scope = tenant(&store, "acme").await;
    let u = user(&store, &scope, "ada@acme.test", None).await;
    let key = store.create_api_key(&scope, KeyOwner::User(u.id.clone()), "k", None).await.unwrap();
    let p = store.authenticate_api_key(key.secret.expose()).await.unwrap();
    assert!(p.has_role(Role::Member) && !p.has_role(Role::Approver));
    store.set_user_roles(&scope, &u.id, &roles(&[Role::Approver])).await.unwrap();
    let p = store.authenticate_api_key(key.secret.expose()).await.unwrap();
    assert!(p.has_role(Role::Approver) && !p.has_role(Role::Member));
    assert!(matches!(
        store.set_user_roles(&scope, &u.id, &RoleSet::new()).await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn reopening_the_data_directory_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let secret = {
        let store = open(dir.path()).await;
        let scope = tenant(&store, "acme").await;
        let agent = store.create_agent(&scope, &AgentName::parse("bot").unwrap(), "").await.unwrap();
        let key = store.create_api_key(&scope, KeyOwner::Agent(agent.id), "k", None).await.unwrap();
        store.close().await;
        key.secret.expose().to_owned()
    };
    let store = open(dir.path()).await;
    assert_eq!(store.count_tenants().await.unwrap(), 1);
    let principal = store.authenticate_api_key(&secret).await.unwrap();
    assert_eq!(principal.tenant_slug().unwrap().as_str(), "acme");
    let scope = principal.tenant_scope().unwrap();
    assert!(store.tenant_db(&scope).await.is_ok());
}

#[tokio::test]
async fn operator_keys_are_created_only_locally_and_belong_to_no_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let created = store.create_operator_key(&Principal::local_operator(), "ops", None).await.unwrap();
    let operator = store.authenticate_api_key(created.secret.expose()).await.unwrap();
    assert!(operator.is_operator());
    assert!(operator.tenant_scope().is_none());
    // An operator authenticated by key cannot mint further operators.
    assert!(matches!(
        store.create_operator_key(&operator, "ops2", None).await,
        Err(StoreError::Forbidden(_))
    ));
    // A tenant scope cannot issue an operator key.
    let scope = tenant(&store, "acme").await;
    assert!(matches!(
        store
            .create_api_key(
                &scope,
                KeyOwner::Operator(match operator.kind() {
                    airlock_store::PrincipalKind::Operator { id: Some(id), .. } => id.clone(),
                    _ => unreachable!(),
                }),
                "x",
                None
            )
            .await,
        Err(StoreError::Forbidden(_))
    ));
}
