//! The Azure Key Vault and Google Cloud KMS providers against fakes that speak each service's
//! wire format (see `cloud`): neither service runs on a test machine, and their emulators do not
//! cover wrapping, token endpoints and integrity fields together.
//!
//! What each must do, as the providers of `providers.rs`: a wrapped DEK unwraps to the same
//! bytes, and only for the owner and version it was wrapped for (`Decrypt`); a disabled or
//! deleted key, a denied identity, a wrong credential or an unreachable server fails closed
//! (`Unavailable`, with the service's reason and never a credential), and recovers when access
//! is restored. And, for these two: access tokens are fetched once, replaced before they expire
//! and when refused; an answer that fails Cloud KMS's integrity checks is never used.

use std::task::Poll;
use std::time::{Duration, Instant};

use crate::cloud::{CLIENT_ID, FakeCloudKms, FakeKeyVault, TENANT, closed_address};
use crate::{assert_unwraps, unavailable};
use airlock_vault::provider::Environment;
use airlock_vault::{ConnectOptions, Dek, Keyring, ProviderSpec, VaultError, WrappedDek, connect};

fn options<K: AsRef<str>, V: AsRef<str>>(variables: &[(K, V)]) -> ConnectOptions {
    let pairs = variables.iter().map(|(name, value)| (name.as_ref().to_owned(), value.as_ref().to_owned()));
    ConnectOptions { environment: Some(Environment::new(pairs)), ..ConnectOptions::default() }
}

async fn keyring<K: AsRef<str>, V: AsRef<str>>(spec: &ProviderSpec, variables: &[(K, V)]) -> Keyring {
    Keyring::new(connect(spec, &options(variables)).await.unwrap(), vec![])
}

/// Wraps a new DEK of `ten_a` v1 and checks that it unwraps to the same bytes, and only for
/// that owner and version, and not once altered.
async fn round_trip(ring: &Keyring) -> (Dek, WrappedDek) {
    let dek = Dek::generate("ten_a", 1);
    let stored = ring.wrap(&dek).await.unwrap();
    assert_eq!(stored.kek_id, ring.current_id());
    assert_unwraps(ring, &stored, &dek).await;
    assert!(matches!(ring.unwrap("ten_b", 1, &stored).await, Err(VaultError::Decrypt(_))));
    assert!(matches!(ring.unwrap("ten_a", 2, &stored).await, Err(VaultError::Decrypt(_))));
    for at in [0, stored.wrapped.len() / 2, stored.wrapped.len() - 1] {
        let mut altered = stored.clone();
        altered.wrapped[at] ^= 1;
        let result = ring.unwrap("ten_a", 1, &altered).await;
        assert!(matches!(result, Err(VaultError::Decrypt(_))), "byte {at}: {result:?}");
    }
    (dek, stored)
}

// --- Azure Key Vault -------------------------------------------------------------------------

fn key_vault(vault: &FakeKeyVault, key: &str, version: Option<&str>) -> ProviderSpec {
    ProviderSpec::AzureKeyVault {
        vault_url: vault.url.clone(),
        key: key.to_owned(),
        key_version: version.map(str::to_owned),
    }
}

#[tokio::test]
async fn key_vault_wraps_bound_to_owner_and_version_and_old_wraps_survive_key_rotation() {
    let vault = FakeKeyVault::start().await;
    let v1 = vault.rotate("airlock-kek");
    let ring = keyring(&key_vault(&vault, "airlock-kek", None), &vault.client_secret()).await;
    assert_eq!(ring.current_id(), format!("azure-key-vault:{}/keys/airlock-kek", vault.url));
    let (dek, stored) = round_trip(&ring).await;
    assert!(stored.wrapped.starts_with(format!("akv1:{v1}:").as_bytes()));

    // Rotated in Key Vault: new wraps use the new version, old ones still unwrap with theirs.
    let v2 = vault.rotate("airlock-kek");
    assert_unwraps(&ring, &stored, &dek).await;
    let rewrapped = ring.wrap(&dek).await.unwrap();
    assert!(rewrapped.wrapped.starts_with(format!("akv1:{v2}:").as_bytes()));
    assert_unwraps(&ring, &rewrapped, &dek).await;

    // A pinned version wraps with that version; the id is the key's, so either ring unwraps.
    let pinned = keyring(&key_vault(&vault, "airlock-kek", Some(&v1)), &vault.client_secret()).await;
    assert_eq!(pinned.current_id(), ring.current_id());
    let (_, pinned_stored) = round_trip(&pinned).await;
    assert!(pinned_stored.wrapped.starts_with(format!("akv1:{v1}:").as_bytes()));
    assert_unwraps(&pinned, &rewrapped, &dek).await;

    // A wrap by another key of the same vault does not unwrap as this key's.
    vault.rotate("other-kek");
    let other = keyring(&key_vault(&vault, "other-kek", None), &vault.client_secret()).await;
    let foreign = WrappedDek { kek_id: ring.current_id().to_owned(), ..other.wrap(&dek).await.unwrap() };
    assert!(matches!(ring.unwrap("ten_a", 1, &foreign).await, Err(VaultError::Unavailable { .. })));
}

#[tokio::test]
async fn key_vault_fails_closed_when_the_key_is_disabled_deleted_or_denied_and_recovers() {
    let vault = FakeKeyVault::start().await;
    vault.rotate("airlock-kek");
    let ring = keyring(&key_vault(&vault, "airlock-kek", None), &vault.client_secret()).await;
    let (dek, stored) = round_trip(&ring).await;

    vault.set_enabled("airlock-kek", false);
    let message = unavailable(ring.unwrap("ten_a", 1, &stored).await, &vault.secret);
    assert!(
        message.ends_with(
            "Forbidden (KeyDisabled): Operation unwrapKey is not allowed on a disabled key. (HTTP 403)"
        ),
        "{message}"
    );
    unavailable(ring.wrap(&dek).await, &vault.secret);
    vault.set_enabled("airlock-kek", true);
    assert_unwraps(&ring, &stored, &dek).await;

    let backup = vault.delete("airlock-kek");
    let message = unavailable(ring.unwrap("ten_a", 1, &stored).await, &vault.secret);
    assert!(message.contains("KeyNotFound: A key with (name/id) airlock-kek was not found"), "{message}");
    assert!(message.ends_with("(HTTP 404)"), "{message}");
    vault.restore("airlock-kek", backup);
    assert_unwraps(&ring, &stored, &dek).await;

    vault.set_allowed(false);
    let message = unavailable(ring.wrap(&dek).await, &vault.secret);
    assert!(message.contains("Forbidden (ForbiddenByPolicy): The user, group or application"), "{message}");
    vault.set_allowed(true);
    assert_unwraps(&ring, &stored, &dek).await;
}

#[tokio::test]
async fn key_vault_refuses_wrong_credentials_without_showing_them() {
    let vault = FakeKeyVault::start().await;
    vault.rotate("airlock-kek");
    let spec = key_vault(&vault, "airlock-kek", None);
    let wrong = "wrong-secret-7f3a9c";
    let mut variables = vault.client_secret();
    variables[2].1 = wrong.to_owned();
    let ring = keyring(&spec, &variables).await;
    let message = unavailable(ring.wrap(&Dek::generate("ten_a", 1)).await, wrong);
    assert!(
        message
            .starts_with(&format!("the key-encryption key `azure-key-vault:{}/keys/airlock-kek`", vault.url))
    );
    assert!(
        message
            .contains("Microsoft Entra ID refused to issue an access token: invalid_client: AADSTS7000215"),
        "{message}"
    );
    assert!(message.ends_with("(HTTP 401)"), "{message}");

    // Half a credential is a configuration error, not a silent fall back to managed identity.
    let half = connect(&spec, &options(&[("AZURE_CLIENT_SECRET", wrong)])).await.unwrap_err();
    assert_eq!(
        half.to_string(),
        "key provider: azure_key_vault: `AZURE_CLIENT_SECRET` is set, but not `AZURE_TENANT_ID` or `AZURE_CLIENT_ID`"
    );
    assert!(!half.to_string().contains(wrong));
}

#[tokio::test]
async fn key_vault_tokens_are_cached_and_replaced_before_they_expire_and_when_refused() {
    let vault = FakeKeyVault::start().await;
    vault.rotate("airlock-kek");
    vault.set_token_lifetime(2);
    let ring = keyring(&key_vault(&vault, "airlock-kek", None), &vault.client_secret()).await;
    let (dek, stored) = round_trip(&ring).await;
    assert_eq!(vault.token_counts(), (1, 0), "one token for every request");

    // Replaced halfway through its two-second life, before Key Vault would refuse it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_unwraps(&ring, &stored, &dek).await;
    assert_eq!(vault.token_counts(), (2, 0));

    // Revoked early: Key Vault answers 401, and one new token is fetched and used.
    vault.set_token_lifetime(3600);
    vault.revoke_tokens();
    assert_unwraps(&ring, &stored, &dek).await;
    assert_eq!(vault.token_counts(), (3, 1));
    ring.wrap(&dek).await.unwrap();
    assert_eq!(vault.token_counts(), (3, 1));

    // Concurrent callers share one fetch.
    vault.revoke_tokens();
    for result in join_all((0..8).map(|_| ring.unwrap("ten_a", 1, &stored))).await {
        result.unwrap();
    }
    let (issued, _) = vault.token_counts();
    assert_eq!(issued, 4, "one fetch for eight callers");
}

/// Awaits every future concurrently, in this task: the keyring's futures borrow it, so they
/// cannot be spawned.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(&mut outputs) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn key_vault_through_workload_identity_and_managed_identities() {
    let vault = FakeKeyVault::start().await;
    vault.rotate("airlock-kek");
    let spec = key_vault(&vault, "airlock-kek", None);

    // Workload identity: the projected token is the client assertion, read at each fetch.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, format!("{}\n", vault.federated_token)).unwrap();
    let federated = [
        ("AZURE_TENANT_ID", TENANT.to_owned()),
        ("AZURE_CLIENT_ID", CLIENT_ID.to_owned()),
        ("AZURE_FEDERATED_TOKEN_FILE", token_file.display().to_string()),
        ("AZURE_AUTHORITY_HOST", format!("{}/", vault.url)),
    ];
    let ring = keyring(&spec, &federated).await;
    let (dek, stored) = round_trip(&ring).await;
    std::fs::write(&token_file, "eyJ.rotated-but-not-federated").unwrap();
    vault.revoke_tokens();
    let message = unavailable(ring.unwrap("ten_a", 1, &stored).await, "eyJ.rotated");
    assert!(message.contains("invalid_client"), "{message}");

    // IMDS, at the address Azure's SDKs let `AZURE_POD_IDENTITY_AUTHORITY_HOST` name.
    let imds = keyring(&spec, &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", &vault.url)]).await;
    assert_unwraps(&imds, &stored, &dek).await;

    // App Service's identity endpoint, with its header.
    let endpoint = format!("{}/msi/token", vault.url);
    let app_service = keyring(
        &spec,
        &[("IDENTITY_ENDPOINT", endpoint.as_str()), ("IDENTITY_HEADER", vault.identity_header.as_str())],
    )
    .await;
    assert_unwraps(&app_service, &stored, &dek).await;
    let wrong_header =
        keyring(&spec, &[("IDENTITY_ENDPOINT", endpoint.as_str()), ("IDENTITY_HEADER", "wrong")]).await;
    let message = unavailable(wrong_header.wrap(&dek).await, "wrong");
    assert!(
        message.contains("the App Service identity endpoint refused to issue an access token"),
        "{message}"
    );
}

// --- Google Cloud KMS ------------------------------------------------------------------------

fn cloud_kms(kms: &FakeCloudKms, key_name: &str) -> ProviderSpec {
    ProviderSpec::GcpKms { key_name: key_name.to_owned(), endpoint: Some(kms.url.clone()) }
}

fn metadata(kms: &FakeCloudKms) -> [(&'static str, &str); 1] {
    [("GCE_METADATA_HOST", kms.metadata_host())]
}

#[tokio::test]
async fn cloud_kms_wraps_bound_to_owner_and_version_with_checksums_and_survives_rotation() {
    let kms = FakeCloudKms::start().await;
    let key = kms.create_key("airlock-kek");
    let ring = keyring(&cloud_kms(&kms, &key), &metadata(&kms)).await;
    assert_eq!(ring.current_id(), format!("gcp-kms:{key}"));
    let (dek, stored) = round_trip(&ring).await;
    // Wrap, unwrap, two other contexts, three altered ciphertexts: each request with its checksums.
    assert_eq!(kms.checksummed(), 7);

    kms.rotate(&key);
    assert_unwraps(&ring, &stored, &dek).await;
    let rewrapped = ring.wrap(&dek).await.unwrap();
    assert_ne!(rewrapped.wrapped[..4], stored.wrapped[..4], "the fake's ciphertexts name their version");
    assert_unwraps(&ring, &rewrapped, &dek).await;

    // Another key's ciphertext does not decrypt under this one.
    let other = kms.create_key("other-kek");
    let other_ring = keyring(&cloud_kms(&kms, &other), &metadata(&kms)).await;
    let foreign = WrappedDek { kek_id: ring.current_id().to_owned(), ..other_ring.wrap(&dek).await.unwrap() };
    assert!(matches!(ring.unwrap("ten_a", 1, &foreign).await, Err(VaultError::Decrypt(_))));
}

#[tokio::test]
async fn cloud_kms_fails_closed_when_the_version_is_disabled_or_access_denied_and_recovers() {
    let kms = FakeCloudKms::start().await;
    let key = kms.create_key("airlock-kek");
    let ring = keyring(&cloud_kms(&kms, &key), &metadata(&kms)).await;
    let (dek, stored) = round_trip(&ring).await;

    kms.set_enabled(&key, 1, false);
    let message = unavailable(ring.unwrap("ten_a", 1, &stored).await, "ya29");
    assert!(
        message.ends_with(&format!(
            "FAILED_PRECONDITION: {key}/cryptoKeyVersions/1 is not enabled, current state is: DISABLED. (HTTP 400)"
        )),
        "{message}"
    );
    unavailable(ring.wrap(&dek).await, "ya29");
    kms.set_enabled(&key, 1, true);
    assert_unwraps(&ring, &stored, &dek).await;

    kms.set_allowed(false);
    let message = unavailable(ring.unwrap("ten_a", 1, &stored).await, "ya29");
    assert!(
        message.contains("PERMISSION_DENIED: Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied"),
        "{message}"
    );
    kms.set_allowed(true);
    assert_unwraps(&ring, &stored, &dek).await;

    let missing =
        keyring(&cloud_kms(&kms, &format!("{}/cryptoKeys/missing", crate::cloud::KEY_RING)), &metadata(&kms))
            .await;
    let message = unavailable(missing.wrap(&dek).await, "ya29");
    assert!(message.contains("NOT_FOUND: ") && message.ends_with("(HTTP 404)"), "{message}");
}

#[tokio::test]
async fn cloud_kms_refuses_a_wrong_token_without_showing_it_and_takes_a_given_one() {
    let kms = FakeCloudKms::start().await;
    let key = kms.create_key("airlock-kek");
    let spec = cloud_kms(&kms, &key);
    let wrong = "ya29.wrong-token-5e1d";
    let ring = keyring(&spec, &[("GOOGLE_OAUTH_ACCESS_TOKEN", wrong)]).await;
    let message = unavailable(ring.wrap(&Dek::generate("ten_a", 1)).await, wrong);
    assert!(message.starts_with(&format!("the key-encryption key `gcp-kms:{key}`")), "{message}");
    assert!(message.contains("UNAUTHENTICATED: Request had invalid authentication credentials"), "{message}");
    assert!(message.ends_with("the token in `GOOGLE_OAUTH_ACCESS_TOKEN` may have expired"), "{message}");
    assert_eq!(kms.token_counts(), (0, 1), "a given token is not replaced from the metadata server");

    let given = "ya29.given-by-a-sidecar";
    kms.accept_token(given);
    round_trip(&keyring(&spec, &[("GOOGLE_OAUTH_ACCESS_TOKEN", given)]).await).await;

    let key_file = connect(&spec, &options(&[("GOOGLE_APPLICATION_CREDENTIALS", "/etc/airlock/sa.json")]))
        .await
        .unwrap_err();
    assert!(matches!(&key_file, VaultError::Config(m) if m.contains("RS256")), "{key_file:?}");
}

#[tokio::test]
async fn cloud_kms_tokens_are_cached_and_replaced_before_they_expire_and_when_refused() {
    let kms = FakeCloudKms::start().await;
    let key = kms.create_key("airlock-kek");
    kms.set_token_lifetime(2);
    let ring = keyring(&cloud_kms(&kms, &key), &metadata(&kms)).await;
    let (dek, stored) = round_trip(&ring).await;
    assert_eq!(kms.token_counts(), (1, 0));

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_unwraps(&ring, &stored, &dek).await;
    assert_eq!(kms.token_counts(), (2, 0));

    kms.set_token_lifetime(3600);
    kms.revoke_tokens();
    assert_unwraps(&ring, &stored, &dek).await;
    assert_eq!(kms.token_counts(), (3, 1));

    // A server at the metadata address that does not say it is one gets no trust.
    let fresh = keyring(&cloud_kms(&kms, &key), &metadata(&kms)).await;
    kms.flavorless(true);
    let message = unavailable(fresh.wrap(&dek).await, "ya29");
    assert!(message.contains("answered without `Metadata-Flavor: Google`"), "{message}");
}

#[tokio::test]
async fn cloud_kms_answers_that_fail_their_checksums_are_retried_once_then_refused() {
    let kms = FakeCloudKms::start().await;
    let key = kms.create_key("airlock-kek");
    let ring = keyring(&cloud_kms(&kms, &key), &metadata(&kms)).await;
    let (dek, stored) = round_trip(&ring).await;

    // Altered once on the way: discarded, and the retry is used.
    kms.corrupt(1);
    let wrapped = ring.wrap(&dek).await.unwrap();
    assert_unwraps(&ring, &wrapped, &dek).await;
    kms.corrupt(1);
    assert_unwraps(&ring, &stored, &dek).await;

    // Altered every time: the key is unavailable, and nothing altered is used.
    kms.corrupt(2);
    let message = unavailable(ring.wrap(&dek).await, "ya29");
    assert!(
        message
            .contains("encrypt failed its integrity check twice: the ciphertext does not match its checksum"),
        "{message}"
    );
    kms.corrupt(2);
    let message = unavailable(ring.unwrap("ten_a", 1, &stored).await, "ya29");
    assert!(
        message
            .contains("decrypt failed its integrity check twice: the plaintext does not match its checksum"),
        "{message}"
    );

    // A server that did not check the request's checksums is not trusted with the DEK's wrap.
    kms.ignore_checksums(true);
    let message = unavailable(ring.wrap(&dek).await, "ya29");
    assert!(message.contains("Cloud KMS did not confirm the request's checksums"), "{message}");
}

// --- Both ------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unreachable_service_or_token_endpoint_is_unavailable_within_seconds() {
    let vault = FakeKeyVault::start().await;
    let kms = FakeCloudKms::start().await;
    let closed = closed_address();
    let key_name = format!("{}/cryptoKeys/airlock-kek", crate::cloud::KEY_RING);
    let mut unreachable_authority = vault.client_secret();
    unreachable_authority[3].1 = closed.clone();
    // A provider, its variables, and what the error says.
    type Case = (ProviderSpec, Vec<(&'static str, String)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            ProviderSpec::AzureKeyVault { vault_url: closed.clone(), key: "k".to_owned(), key_version: None },
            vault.client_secret(),
            "cannot connect",
        ),
        (
            key_vault(&vault, "k", None),
            unreachable_authority,
            "cannot get an access token from Microsoft Entra ID",
        ),
        (
            key_vault(&vault, "k", None),
            vec![("AZURE_POD_IDENTITY_AUTHORITY_HOST", closed.clone())],
            "cannot get an access token from the instance metadata service (IMDS)",
        ),
        (
            ProviderSpec::GcpKms { key_name: key_name.clone(), endpoint: Some(closed.clone()) },
            vec![("GOOGLE_OAUTH_ACCESS_TOKEN", "ya29.token".to_owned())],
            "cannot connect",
        ),
        (
            cloud_kms(&kms, &key_name),
            vec![("GCE_METADATA_HOST", closed.trim_start_matches("http://").to_owned())],
            "cannot get an access token from the metadata server",
        ),
    ];
    for (spec, variables, expected) in cases {
        let ring = keyring(&spec, &variables).await;
        let started = Instant::now();
        let message = unavailable(ring.wrap(&Dek::generate("ten_a", 1)).await, &vault.secret);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(message.contains(expected) && message.contains("cannot connect"), "{message}");
        let stored = WrappedDek { kek_id: ring.current_id().to_owned(), wrapped: b"akv1:abc:AAAA".to_vec() };
        unavailable(ring.unwrap("ten_a", 1, &stored).await, &vault.secret);
    }
}
