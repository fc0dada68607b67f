//! The KEK providers: against real servers, OpenBao in dev mode for Vault Transit, moto's
//! server for AWS KMS, and the environment-variable provider; and (in `cloud`) Azure Key Vault
//! and Google Cloud KMS against fakes that speak their wire formats.
//!
//! Each test starts its own servers (see `common`), so tests share no keys, tokens or IAM
//! settings.
//!
//! What every provider must do: a wrapped DEK unwraps to the same bytes, and only for the
//! owner and version it was wrapped for (`Decrypt`); a key that is revoked, disabled or
//! deleted, a wrong credential, or an unreachable server fails closed (`Unavailable`, with
//! the provider's reason and never a credential), and recovers when access is restored.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr
)]

mod cloud;
mod common;

use std::time::{Duration, Instant};

use airlock_vault::provider::Environment;
use airlock_vault::{ConnectOptions, Dek, Keyring, ProviderSpec, VaultError, WrappedDek, connect};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Bao, Moto, between, closed_address};
use reqwest::Method;
use secrecy::ExposeSecret as _;
use serde_json::json;

fn options(variables: &[(&str, &str)]) -> ConnectOptions {
    ConnectOptions {
        environment: Some(Environment::new(variables.iter().copied())),
        ..ConnectOptions::default()
    }
}

async fn keyring(spec: &ProviderSpec, variables: &[(&str, &str)]) -> Keyring {
    Keyring::new(connect(spec, &options(variables)).await.unwrap(), vec![])
}

/// Wraps a new DEK of `ten_a` v1 and checks that it unwraps to the same bytes, and only for
/// that owner and version.
async fn round_trip(ring: &Keyring) -> (Dek, WrappedDek) {
    let dek = Dek::generate("ten_a", 1);
    let stored = ring.wrap(&dek).await.unwrap();
    assert_eq!(stored.kek_id, ring.current_id());
    assert_unwraps(ring, &stored, &dek).await;
    assert!(matches!(ring.unwrap("ten_b", 1, &stored).await, Err(VaultError::Decrypt(_))));
    assert!(matches!(ring.unwrap("ten_a", 2, &stored).await, Err(VaultError::Decrypt(_))));
    let mut altered = stored.clone();
    *altered.wrapped.last_mut().unwrap() ^= 1;
    assert!(matches!(ring.unwrap("ten_a", 1, &altered).await, Err(VaultError::Decrypt(_))));
    (dek, stored)
}

async fn assert_unwraps(ring: &Keyring, stored: &WrappedDek, dek: &Dek) {
    let again = ring.unwrap(dek.owner(), dek.version(), stored).await.unwrap();
    assert_eq!(again.bytes().expose_secret(), dek.bytes().expose_secret());
}

/// The message of an `Unavailable` error, which must not contain `secret`.
fn unavailable<T: std::fmt::Debug>(result: Result<T, VaultError>, secret: &str) -> String {
    match result {
        Err(err @ VaultError::Unavailable { .. }) => {
            let message = err.to_string();
            assert!(!message.contains(secret), "the error shows a credential: {message}");
            message
        }
        other => panic!("expected the key to be unavailable, got {other:?}"),
    }
}

// --- The environment variable --------------------------------------------------------------

#[tokio::test]
async fn env_key_wraps_and_a_missing_or_malformed_variable_is_named_without_its_value() {
    let key = STANDARD.encode(airlock_crypto::random_array::<32>());
    let spec = ProviderSpec::Env { variable: "AIRLOCK_KEK".to_owned() };
    let ring = keyring(&spec, &[("AIRLOCK_KEK", &key)]).await;
    assert!(ring.current_id().starts_with("env:"), "{}", ring.current_id());
    let (_, stored) = round_trip(&ring).await;
    // The id is the key's fingerprint: the same key gives the same id, another key another.
    assert_eq!(keyring(&spec, &[("AIRLOCK_KEK", &format!("{key}\n"))]).await.current_id(), ring.current_id());
    let other = keyring(&spec, &[("AIRLOCK_KEK", &STANDARD.encode([7u8; 32]))]).await;
    assert!(matches!(other.unwrap("ten_a", 1, &stored).await, Err(VaultError::UnknownKek(_))));

    let unset = connect(&spec, &options(&[])).await.unwrap_err();
    assert!(matches!(unset, VaultError::Config(_)), "{unset:?}");
    assert_eq!(unset.to_string(), "key provider: environment variable `AIRLOCK_KEK` is not set");
    for bad in ["hunter2-not-base64!", "c2hvcnQga2V5", ""] {
        let err = connect(&spec, &options(&[("AIRLOCK_KEK", bad)])).await.unwrap_err();
        assert!(matches!(err, VaultError::BadKey(_)), "{err:?}");
        assert_eq!(err.to_string(), "environment variable `AIRLOCK_KEK` does not hold a base64 256-bit key");
    }
    // Without an `environment`, the process's own is read.
    let spec = ProviderSpec::Env { variable: "AIRLOCK_TEST_NEVER_SET_4F1C".to_owned() };
    assert!(matches!(connect(&spec, &ConnectOptions::default()).await, Err(VaultError::Config(_))));
    // Options print variable names, never values.
    assert!(!format!("{:?}", options(&[("AIRLOCK_KEK", &key)])).contains(&key));
}

// --- Vault / OpenBao Transit -----------------------------------------------------------------

fn transit(address: &str, key: &str) -> ProviderSpec {
    ProviderSpec::VaultTransit {
        address: address.to_owned(),
        mount: "transit".to_owned(),
        key: key.to_owned(),
        namespace: None,
        token_file: None,
    }
}

#[tokio::test]
async fn transit_wraps_bound_to_owner_and_version_and_old_wraps_survive_key_rotation() {
    let bao = Bao::start().await;
    bao.transit_with_key("airlock").await;
    let ring = keyring(&transit(&format!("{}/", bao.url()), "airlock"), &[("VAULT_TOKEN", &bao.token)]).await;
    assert_eq!(ring.current_id(), format!("vault-transit:{}/transit/airlock", bao.url()));
    let (dek, stored) = round_trip(&ring).await;
    assert!(stored.wrapped.starts_with(b"vault:v1:"));

    bao.post("/v1/transit/keys/airlock/rotate", json!({})).await;
    assert_unwraps(&ring, &stored, &dek).await;
    let rewrapped = ring.wrap(&dek).await.unwrap();
    assert!(rewrapped.wrapped.starts_with(b"vault:v2:"));
    assert_unwraps(&ring, &rewrapped, &dek).await;
}

#[tokio::test]
async fn transit_fails_closed_when_the_token_is_revoked_or_the_key_retired_or_deleted() {
    let bao = Bao::start().await;
    bao.transit_with_key("airlock").await;
    // A least-privilege token, as production would have: `update` only, so it cannot
    // re-create a deleted key by encrypting with it.
    let policy = r#"
        path "transit/encrypt/airlock" { capabilities = ["update"] }
        path "transit/decrypt/airlock" { capabilities = ["update"] }
    "#;
    bao.post("/v1/sys/policies/acl/airlock", json!({"policy": policy})).await;
    let new_token = async || {
        let answer = bao.post("/v1/auth/token/create", json!({"policies": ["airlock"]})).await;
        answer["auth"]["client_token"].as_str().unwrap().to_owned()
    };
    let token = new_token().await;
    let token_file = bao.server.dir.path().join("airlock.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let spec = ProviderSpec::VaultTransit {
        address: bao.url().to_owned(),
        mount: "transit".to_owned(),
        key: "airlock".to_owned(),
        namespace: None,
        token_file: Some(token_file.clone()),
    };
    // The token file wins over `VAULT_TOKEN`.
    let ring = keyring(&spec, &[("VAULT_TOKEN", "s.not-this-one")]).await;
    let (dek, stored) = round_trip(&ring).await;

    bao.post("/v1/auth/token/revoke", json!({"token": token})).await;
    let message = unavailable(ring.unwrap("ten_a", 1, &stored).await, &token);
    assert!(message.contains("permission denied (HTTP 403)"), "{message}");
    unavailable(ring.wrap(&dek).await, &token);
    // A new token, read at connect, restores access.
    let token = new_token().await;
    std::fs::write(&token_file, &token).unwrap();
    let ring = keyring(&spec, &[]).await;
    assert_unwraps(&ring, &stored, &dek).await;

    // A retired key version fails closed, and opens again once un-retired.
    bao.post("/v1/transit/keys/airlock/rotate", json!({})).await;
    bao.post("/v1/transit/keys/airlock/config", json!({"min_decryption_version": 2})).await;
    let message = unavailable(ring.unwrap("ten_a", 1, &stored).await, &token);
    assert!(message.contains("disallowed by policy"), "{message}");
    bao.post("/v1/transit/keys/airlock/config", json!({"min_decryption_version": 1})).await;
    assert_unwraps(&ring, &stored, &dek).await;

    // A deleted key fails closed, and this token cannot bring up a new key under its name.
    bao.post("/v1/transit/keys/airlock/config", json!({"deletion_allowed": true})).await;
    let (status, answer) = bao.call(Method::DELETE, "/v1/transit/keys/airlock", None, None).await;
    assert!(status.is_success(), "{status} {answer}");
    let message = unavailable(ring.unwrap("ten_a", 1, &stored).await, &token);
    assert!(message.contains("encryption key not found (HTTP 400)"), "{message}");
    unavailable(ring.wrap(&dek).await, &token);
    let (status, _) = bao.call(Method::GET, "/v1/transit/keys/airlock", None, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn transit_refuses_a_wrong_or_missing_token_without_showing_it() {
    let bao = Bao::start().await;
    bao.transit_with_key("airlock").await;
    let spec = transit(bao.url(), "airlock");
    let wrong = "s.wrongtoken0123456789";
    let ring = keyring(&spec, &[("VAULT_TOKEN", wrong)]).await;
    let message = unavailable(ring.wrap(&Dek::generate("ten_a", 1)).await, wrong);
    assert!(
        message.starts_with(&format!("the key-encryption key `vault-transit:{}/transit/airlock`", bao.url()))
    );
    assert!(message.contains("permission denied"), "{message}");

    let missing = connect(&spec, &options(&[])).await.unwrap_err();
    assert!(matches!(&missing, VaultError::Config(m) if m.contains("VAULT_TOKEN")), "{missing:?}");
    let blank = bao.server.dir.path().join("blank.token");
    std::fs::write(&blank, "\n").unwrap();
    let with_blank = ProviderSpec::VaultTransit {
        address: bao.url().to_owned(),
        mount: "transit".to_owned(),
        key: "airlock".to_owned(),
        namespace: None,
        token_file: Some(blank),
    };
    assert!(matches!(connect(&with_blank, &options(&[])).await, Err(VaultError::Config(_))));
}

#[tokio::test]
async fn transit_sends_the_namespace() {
    let bao = Bao::start().await;
    bao.post("/v1/sys/namespaces/team", json!({})).await;
    let (status, answer) = bao
        .call(Method::POST, "/v1/sys/mounts/transit", Some("team"), Some(json!({"type": "transit"})))
        .await;
    assert!(status.is_success(), "{status} {answer}");
    let (status, answer) =
        bao.call(Method::POST, "/v1/transit/keys/airlock", Some("team"), Some(json!({}))).await;
    assert!(status.is_success(), "{status} {answer}");

    let in_team = ProviderSpec::VaultTransit {
        address: bao.url().to_owned(),
        mount: "transit".to_owned(),
        key: "airlock".to_owned(),
        namespace: Some("team".to_owned()),
        token_file: None,
    };
    round_trip(&keyring(&in_team, &[("VAULT_TOKEN", &bao.token)]).await).await;
    // The root namespace has no Transit mount.
    let outside = keyring(&transit(bao.url(), "airlock"), &[("VAULT_TOKEN", &bao.token)]).await;
    let message = unavailable(outside.wrap(&Dek::generate("ten_a", 1)).await, &bao.token);
    assert!(message.contains("HTTP 404"), "{message}");
}

#[tokio::test]
async fn transit_over_https_trusts_the_ca_in_vault_cacert() {
    let bao = Bao::start_tls().await;
    bao.transit_with_key("airlock").await;
    assert!(bao.url().starts_with("https://"));
    let spec = transit(bao.url(), "airlock");
    let untrusted = keyring(&spec, &[("VAULT_TOKEN", &bao.token)]).await;
    let message = unavailable(untrusted.wrap(&Dek::generate("ten_a", 1)).await, &bao.token);
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    let ca = bao.ca.as_ref().unwrap().to_str().unwrap();
    round_trip(&keyring(&spec, &[("VAULT_TOKEN", &bao.token), ("VAULT_CACERT", ca)]).await).await;
}

// --- AWS KMS ---------------------------------------------------------------------------------

fn kms(key_id: &str, moto: &Moto) -> ProviderSpec {
    ProviderSpec::AwsKms { key_id: key_id.to_owned(), region: None, endpoint: Some(moto.url().to_owned()) }
}

#[tokio::test]
async fn kms_wraps_bound_to_owner_and_version_through_a_key_id_or_an_alias() {
    let moto = Moto::start().await;
    let key_id = moto.create_key().await;
    // The region falls back to `AWS_DEFAULT_REGION`.
    let variables = [
        ("AWS_ACCESS_KEY_ID", "AKIATEST"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", Moto::REGION),
    ];
    let ring = keyring(&kms(&key_id, &moto), &variables).await;
    assert_eq!(ring.current_id(), format!("aws-kms:{key_id}"));
    round_trip(&ring).await;

    // Through an alias; deleting the alias fails closed, restoring it restores access.
    moto.kms("CreateAlias", json!({"AliasName": "alias/airlock", "TargetKeyId": key_id})).await;
    let ring = keyring(&kms("alias/airlock", &moto), &variables).await;
    let (dek, stored) = round_trip(&ring).await;
    moto.kms("DeleteAlias", json!({"AliasName": "alias/airlock"})).await;
    let message = unavailable(ring.unwrap("ten_a", 1, &stored).await, "test");
    assert!(message.contains("NotFoundException"), "{message}");
    unavailable(ring.wrap(&dek).await, "test");
    moto.kms("CreateAlias", json!({"AliasName": "alias/airlock", "TargetKeyId": key_id})).await;
    assert_unwraps(&ring, &stored, &dek).await;
}

/// moto checks signatures here, recomputing them with botocore's signer, and applies IAM
/// policies: what passes is correctly signed Signature Version 4.
#[tokio::test]
async fn kms_requests_are_signed_and_revoked_access_fails_closed_until_restored() {
    let moto = Moto::start().await;
    let key_id = moto.create_key().await;
    moto.iam(&[("Action", "CreateUser"), ("UserName", "airlock")]).await;
    let allow = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"}]});
    let allow = allow.to_string();
    moto.iam(&[
        ("Action", "PutUserPolicy"),
        ("UserName", "airlock"),
        ("PolicyName", "kms"),
        ("PolicyDocument", &allow),
    ])
    .await;
    let created = moto.iam(&[("Action", "CreateAccessKey"), ("UserName", "airlock")]).await;
    let access_key_id = between(&created, "<AccessKeyId>", "</AccessKeyId>").to_owned();
    let secret = between(&created, "<SecretAccessKey>", "</SecretAccessKey>").to_owned();
    moto.require_signatures(true).await;

    let spec = kms(&key_id, &moto);
    let credentials = [
        ("AWS_ACCESS_KEY_ID", access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", &secret),
        ("AWS_REGION", Moto::REGION),
    ];
    let ring = keyring(&spec, &credentials).await;
    let (dek, stored) = round_trip(&ring).await;

    let wrong_secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYWRONGKEY";
    let forged = keyring(
        &spec,
        &[
            ("AWS_ACCESS_KEY_ID", &access_key_id),
            ("AWS_SECRET_ACCESS_KEY", wrong_secret),
            ("AWS_REGION", "us-east-1"),
        ],
    )
    .await;
    let message = unavailable(forged.unwrap("ten_a", 1, &stored).await, wrong_secret);
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert!(!message.contains(&secret));

    // Denying Decrypt fails closed; lifting the denial restores access.
    let deny = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}]})
    .to_string();
    moto.require_signatures(false).await;
    moto.iam(&[
        ("Action", "PutUserPolicy"),
        ("UserName", "airlock"),
        ("PolicyName", "deny"),
        ("PolicyDocument", &deny),
    ])
    .await;
    moto.require_signatures(true).await;
    let message = unavailable(ring.unwrap("ten_a", 1, &stored).await, &secret);
    assert!(message.contains("AccessDenied") && message.contains("kms:Decrypt"), "{message}");
    moto.require_signatures(false).await;
    moto.iam(&[("Action", "DeleteUserPolicy"), ("UserName", "airlock"), ("PolicyName", "deny")]).await;
    moto.require_signatures(true).await;
    assert_unwraps(&ring, &stored, &dek).await;

    // A deleted access key is refused.
    moto.require_signatures(false).await;
    moto.iam(&[("Action", "DeleteAccessKey"), ("UserName", "airlock"), ("AccessKeyId", &access_key_id)])
        .await;
    moto.require_signatures(true).await;
    let message = unavailable(ring.wrap(&dek).await, &secret);
    assert!(message.contains("InvalidClientTokenId"), "{message}");
}

#[tokio::test]
async fn kms_signs_the_session_token_of_temporary_credentials() {
    let moto = Moto::start().await;
    let key_id = moto.create_key().await;
    let trust = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
    .to_string();
    let role = moto
        .iam(&[("Action", "CreateRole"), ("RoleName", "airlock"), ("AssumeRolePolicyDocument", &trust)])
        .await;
    let role_arn = between(&role, "<Arn>", "</Arn>").to_owned();
    let allow = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"}]})
    .to_string();
    moto.iam(&[
        ("Action", "PutRolePolicy"),
        ("RoleName", "airlock"),
        ("PolicyName", "kms"),
        ("PolicyDocument", &allow),
    ])
    .await;
    let assumed = moto
        .query(
            "sts",
            "2011-06-15",
            &[("Action", "AssumeRole"), ("RoleArn", &role_arn), ("RoleSessionName", "airlock")],
        )
        .await;
    let access_key_id = between(&assumed, "<AccessKeyId>", "</AccessKeyId>");
    let secret = between(&assumed, "<SecretAccessKey>", "</SecretAccessKey>");
    let session_token = between(&assumed, "<SessionToken>", "</SessionToken>");
    moto.require_signatures(true).await;

    let spec = kms(&key_id, &moto);
    let mut credentials = vec![
        ("AWS_ACCESS_KEY_ID", access_key_id),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_SESSION_TOKEN", session_token),
        ("AWS_REGION", Moto::REGION),
    ];
    round_trip(&keyring(&spec, &credentials).await).await;
    credentials[2].1 = "FwoGZXIvYXdzEBogus";
    let ring = keyring(&spec, &credentials).await;
    let message = unavailable(ring.wrap(&Dek::generate("ten_a", 1)).await, secret);
    assert!(message.contains("InvalidClientTokenId"), "{message}");
    assert!(!message.contains(session_token), "{message}");
}

#[tokio::test]
async fn kms_configuration_needs_a_region_and_credentials_and_never_shows_the_secret() {
    let spec = ProviderSpec::AwsKms { key_id: "alias/airlock".to_owned(), region: None, endpoint: None };
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    let credentials = [("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", secret)];
    let no_region = connect(&spec, &options(&credentials)).await.unwrap_err();
    assert!(matches!(&no_region, VaultError::Config(m) if m.contains("AWS_REGION")), "{no_region:?}");

    let no_secret =
        connect(&spec, &options(&[("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"), ("AWS_REGION", "eu-west-1")]))
            .await
            .unwrap_err();
    assert_eq!(no_secret.to_string(), "key provider: aws_kms: no credentials: set `AWS_SECRET_ACCESS_KEY`");

    let mut variables = credentials.to_vec();
    variables.push(("AWS_REGION", "eu-west-1"));
    let provider = connect(&spec, &options(&variables)).await.unwrap();
    assert_eq!(provider.id(), "aws-kms:alias/airlock");
    assert!(!format!("{provider:?}").contains(secret));

    let bad_region = ProviderSpec::AwsKms {
        key_id: "k".to_owned(),
        region: Some("eu-west-1/x".to_owned()),
        endpoint: None,
    };
    assert!(matches!(connect(&bad_region, &options(&credentials)).await, Err(VaultError::Config(_))));
    let bad_endpoint = ProviderSpec::AwsKms {
        key_id: "k".to_owned(),
        region: None,
        endpoint: Some("kms.internal:443".to_owned()),
    };
    assert!(matches!(connect(&bad_endpoint, &options(&variables)).await, Err(VaultError::Config(_))));
}

// --- Both external providers -----------------------------------------------------------------

#[tokio::test]
async fn an_unreachable_server_is_unavailable_within_seconds() {
    let address = closed_address();
    let specs = [
        transit(&address, "airlock"),
        ProviderSpec::AwsKms {
            key_id: "k".to_owned(),
            region: Some("us-east-1".to_owned()),
            endpoint: Some(address.clone()),
        },
    ];
    let variables =
        [("VAULT_TOKEN", "s.token"), ("AWS_ACCESS_KEY_ID", "AKIATEST"), ("AWS_SECRET_ACCESS_KEY", "secret")];
    for spec in specs {
        let ring = keyring(&spec, &variables).await;
        let started = Instant::now();
        let message = unavailable(ring.wrap(&Dek::generate("ten_a", 1)).await, "secret");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(message.contains("cannot connect"), "{message}");
        let stored = WrappedDek { kek_id: ring.current_id().to_owned(), wrapped: b"vault:v1:AAAA".to_vec() };
        unavailable(ring.unwrap("ten_a", 1, &stored).await, "secret");
    }
}
