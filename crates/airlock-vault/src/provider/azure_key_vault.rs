//! A KEK in Azure Key Vault or a Managed HSM: an RSA key that wraps and unwraps DEKs with
//! RSA-OAEP-256 (`POST {vault}/keys/{key}/{version}/wrapkey` and `.../unwrapkey`, API version
//! 7.4). The private key never leaves Key Vault.
//!
//! RSA-OAEP takes no associated data, so the binding to the DEK's owner and version is made
//! here: Key Vault wraps `SHA-256(WrapContext::aad()) ‖ DEK`, and an unwrapped value whose
//! prefix does not match (compared in constant time) is [`VaultError::Decrypt`]. The stored
//! blob is `akv1:<key version>:<wrapped value, base64url>`; unwrapping asks for that version, so
//! DEKs wrapped before the key was rotated in Key Vault still unwrap.
//!
//! Access tokens come from Microsoft Entra ID, through the first of:
//! 1. a client secret: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`;
//! 2. workload identity (AKS): `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
//!    `AZURE_FEDERATED_TOKEN_FILE`, read again at each fetch since the kubelet rotates it;
//! 3. a managed identity: App Service's `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` when set, else
//!    the VM's instance metadata service (IMDS; `AZURE_POD_IDENTITY_AUTHORITY_HOST` names another
//!    address, as in Azure's SDKs), with `AZURE_CLIENT_ID` choosing a user-assigned identity.
//!
//! `AZURE_AUTHORITY_HOST` names another Entra ID authority (a sovereign cloud's). A token is
//! cached until shortly before it expires, and replaced once when Key Vault answers 401.
//!
//! Every refusal fails closed as [`VaultError::Unavailable`] with Key Vault's `error.code` and
//! message (a disabled or deleted key, a denied identity, a rejected token), never a credential;
//! only a wrapped value Key Vault cannot unwrap, or one bound to another owner or version, is
//! [`VaultError::Decrypt`].

use std::path::{Path, PathBuf};

use airlock_crypto::{constant_time_eq, sha256};
use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox, SecretSlice, SecretString};
use serde::{Deserialize, Serialize};

use super::token::{
    Fresh, TokenCache, bearer, may_carry_credentials, metadata_client, read_answer, refusal, service_url,
};
use super::{
    BoxFuture, ConnectOptions, KekProvider, WrapContext, clip, describe_send_error, http_client, plain_var,
};
use crate::VaultError;

const API_VERSION: &str = "7.4";
const ALGORITHM: &str = "RSA-OAEP-256";
const BLOB_PREFIX: &str = "akv1:";
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_IMDS: &str = "http://169.254.169.254";

/// base64url as Key Vault writes it (no padding), read with or without padding.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A Key Vault key, reached with Entra ID access tokens.
pub struct AzureKeyVault {
    id: String,
    /// `{vault}/keys/{key}`.
    key_url: Url,
    key: String,
    /// The version to wrap with; the key's current one when `None`.
    key_version: Option<String>,
    credential: Credential,
    tokens: TokenCache,
    client: reqwest::Client,
}

impl std::fmt::Debug for AzureKeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AzureKeyVault({})", self.id)
    }
}

/// Where access tokens come from.
enum Credential {
    /// Entra ID's client-credentials grant with a client secret.
    Secret { token_url: Url, client_id: String, secret: SecretString, scope: String },
    /// The same grant with a federated token (a Kubernetes service account's) as the assertion.
    Federated { token_url: Url, client_id: String, token_file: PathBuf, scope: String },
    /// App Service's (and Functions', Container Apps') managed identity endpoint.
    AppService { url: Url, header: SecretString, client: reqwest::Client },
    /// A VM's managed identity, from IMDS.
    Imds { url: Url, client: reqwest::Client },
}

fn config(what: String) -> VaultError {
    VaultError::Config(format!("azure_key_vault: {what}"))
}

impl AzureKeyVault {
    /// Checks the configuration and picks the credential (see the module's documentation).
    /// Nothing is sent yet.
    pub(super) fn connect(
        vault_url: &str,
        key: &str,
        key_version: Option<&str>,
        options: &ConnectOptions,
    ) -> Result<Self, VaultError> {
        let vault_url = vault_url.trim().trim_end_matches('/');
        let key = key.trim();
        let base = service_url(vault_url, "vault_url").map_err(config)?;
        if !is_key_name(key) {
            return Err(config(format!(
                "`key` `{key}` is not a Key Vault key name (letters, digits and `-`)"
            )));
        }
        let key_version = key_version.map(str::trim).filter(|version| !version.is_empty());
        if let Some(version) = key_version
            && !is_version(version)
        {
            return Err(config(format!("`key_version` `{version}` is not a Key Vault key version")));
        }
        let mut key_url = base.clone();
        key_url
            .path_segments_mut()
            .map_err(|()| config(format!("`vault_url` `{vault_url}` cannot take a path")))?
            .pop_if_empty()
            .push("keys")
            .push(key);
        let resource = resource_for(base.host_str().unwrap_or_default());
        Ok(Self {
            id: format!("azure-key-vault:{vault_url}/keys/{key}"),
            key_url,
            key: key.to_owned(),
            key_version: key_version.map(str::to_owned),
            credential: Credential::from_environment(resource, options)?,
            tokens: TokenCache::default(),
            client: http_client(None)?,
        })
    }

    fn unavailable(&self, reason: String) -> VaultError {
        VaultError::Unavailable { kek: self.id.clone(), reason }
    }

    /// `{vault}/keys/{key}/{version}/{operation}?api-version=7.4`; an empty `version` is the
    /// key's current one, as in Azure's SDKs.
    fn operation_url(&self, version: &str, operation: &str) -> Url {
        let mut url = self.key_url.clone();
        // `key_url` took a path at connect, so it takes these too.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(version).push(operation);
        }
        url.query_pairs_mut().append_pair("api-version", API_VERSION);
        url
    }

    /// Sends one key operation with the current access token, fetching one when needed and a
    /// new one once when Key Vault answers 401 (a token revoked or expired early).
    async fn call(
        &self,
        url: &Url,
        body: &KeyOperation<'_>,
        unwrapping: bool,
    ) -> Result<KeyOperationResult, VaultError> {
        let mut refused_once = false;
        loop {
            let token = self
                .tokens
                .get(|| self.credential.fetch(&self.client))
                .await
                .map_err(|reason| self.unavailable(reason))?;
            let authorization = bearer(&token).map_err(|reason| self.unavailable(reason))?;
            let response = self
                .client
                .post(url.clone())
                .header(AUTHORIZATION, authorization)
                .json(body)
                .send()
                .await
                .map_err(|err| self.unavailable(describe_send_error(&err)))?;
            let status = response.status();
            let answer = response.bytes().await.map_err(|err| self.unavailable(describe_send_error(&err)))?;
            if status == StatusCode::UNAUTHORIZED && !refused_once {
                self.tokens.forget(&token).await;
                refused_once = true;
                continue;
            }
            if status.is_success() {
                return serde_json::from_slice(&answer).map_err(|_| {
                    self.unavailable(format!("unexpected answer (HTTP {status}): not Key Vault's JSON"))
                });
            }
            return Err(refused(&self.id, status, &answer, unwrapping));
        }
    }
}

impl Credential {
    fn from_environment(resource: &str, options: &ConnectOptions) -> Result<Self, VaultError> {
        let tenant = plain_var(options, "AZURE_TENANT_ID");
        let client_id = plain_var(options, "AZURE_CLIENT_ID");
        let secret = options
            .var("AZURE_CLIENT_SECRET")
            .map(|value| SecretString::from(value.expose_secret().trim().to_owned()))
            .filter(|value| !value.expose_secret().is_empty());
        let token_file = plain_var(options, "AZURE_FEDERATED_TOKEN_FILE");
        let scope = format!("{resource}/.default");
        // Entra ID's token endpoint, for the two grants that name the tenant and the client.
        let grant = |what: &str| -> Result<(Url, String), VaultError> {
            let (tenant, client_id) = match (&tenant, &client_id) {
                (Some(tenant), Some(client_id)) => (tenant, client_id.clone()),
                _ => {
                    let missing: Vec<&str> = [
                        tenant.is_none().then_some("`AZURE_TENANT_ID`"),
                        client_id.is_none().then_some("`AZURE_CLIENT_ID`"),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    return Err(config(format!("`{what}` is set, but not {}", missing.join(" or "))));
                }
            };
            if !tenant.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.')) {
                return Err(config(format!("`AZURE_TENANT_ID` `{tenant}` is not a tenant id or domain")));
            }
            let authority =
                plain_var(options, "AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned());
            let authority = authority.trim_end_matches('/');
            let mut token_url = Url::parse(authority)
                .ok()
                .filter(|url| may_carry_credentials(url) && url.query().is_none())
                .ok_or_else(|| config(format!("`AZURE_AUTHORITY_HOST` `{authority}` is not an https URL")))?;
            token_url
                .path_segments_mut()
                .map_err(|()| config(format!("`AZURE_AUTHORITY_HOST` `{authority}` cannot take a path")))?
                .pop_if_empty()
                .extend([tenant.as_str(), "oauth2", "v2.0", "token"]);
            Ok((token_url, client_id))
        };
        if let Some(secret) = secret {
            let (token_url, client_id) = grant("AZURE_CLIENT_SECRET")?;
            return Ok(Self::Secret { token_url, client_id, secret, scope });
        }
        if let Some(token_file) = token_file {
            let (token_url, client_id) = grant("AZURE_FEDERATED_TOKEN_FILE")?;
            let token_file = PathBuf::from(token_file);
            read_federated_token(&token_file).map_err(config)?;
            return Ok(Self::Federated { token_url, client_id, token_file, scope });
        }
        let identity = |url: &str, api_version: &str, name: &str| -> Result<Url, VaultError> {
            let mut url = Url::parse(url).map_err(|_| config(format!("`{name}` `{url}` is not a URL")))?;
            let mut query = url.query_pairs_mut();
            query.append_pair("api-version", api_version).append_pair("resource", resource);
            if let Some(client_id) = &client_id {
                query.append_pair("client_id", client_id);
            }
            drop(query);
            Ok(url)
        };
        if let Some(endpoint) = plain_var(options, "IDENTITY_ENDPOINT") {
            let header = options
                .var("IDENTITY_HEADER")
                .filter(|value| !value.expose_secret().trim().is_empty())
                .ok_or_else(|| {
                    config(
                        "`IDENTITY_ENDPOINT` is set without `IDENTITY_HEADER` (Azure Arc's managed identity is not supported)"
                            .to_owned(),
                    )
                })?;
            let url = identity(&endpoint, "2019-08-01", "IDENTITY_ENDPOINT")?;
            if !may_carry_credentials(&url) {
                return Err(config(format!(
                    "`IDENTITY_ENDPOINT` `{endpoint}` is neither https nor on this machine"
                )));
            }
            return Ok(Self::AppService { url, header, client: metadata_client()? });
        }
        let host = plain_var(options, "AZURE_POD_IDENTITY_AUTHORITY_HOST")
            .unwrap_or_else(|| DEFAULT_IMDS.to_owned());
        let url = identity(
            &format!("{}/metadata/identity/oauth2/token", host.trim_end_matches('/')),
            "2018-02-01",
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        )?;
        Ok(Self::Imds { url, client: metadata_client()? })
    }

    /// A new access token.
    async fn fetch(&self, client: &reqwest::Client) -> Result<Fresh, String> {
        let (from, request) = match self {
            Self::Secret { token_url, client_id, secret, scope } => (
                "Microsoft Entra ID",
                client.post(token_url.clone()).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", secret.expose_secret()),
                    ("scope", scope),
                ]),
            ),
            Self::Federated { token_url, client_id, token_file, scope } => {
                let assertion = read_federated_token(token_file)?;
                (
                    "Microsoft Entra ID",
                    client.post(token_url.clone()).form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id),
                        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                        ("client_assertion", assertion.expose_secret()),
                        ("scope", scope),
                    ]),
                )
            }
            Self::AppService { url, header, client } => {
                let mut header = HeaderValue::from_str(header.expose_secret().trim())
                    .map_err(|_| "`IDENTITY_HEADER` is not a valid header value".to_owned())?;
                header.set_sensitive(true);
                (
                    "the App Service identity endpoint",
                    client.get(url.clone()).header("X-IDENTITY-HEADER", header),
                )
            }
            Self::Imds { url, client } => {
                ("the instance metadata service (IMDS)", client.get(url.clone()).header("Metadata", "true"))
            }
        };
        let response = request.send().await.map_err(|err| {
            format!("cannot get an access token from {from}: {}", describe_send_error(&err))
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|err| {
            format!("cannot get an access token from {from}: {}", describe_send_error(&err))
        })?;
        if !status.is_success() {
            return Err(format!("{from} refused to issue an access token: {}", refusal(status, &body)));
        }
        read_answer(&body).map_err(|reason| format!("{from}: {reason}"))
    }
}

/// The federated token (a signed JWT) in `path`.
fn read_federated_token(path: &Path) -> Result<SecretString, String> {
    let token = std::fs::read_to_string(path)
        .map_err(|err| format!("`AZURE_FEDERATED_TOKEN_FILE` `{}`: {err}", path.display()))?;
    let token = SecretString::from(token);
    let trimmed = token.expose_secret().trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(format!("`AZURE_FEDERATED_TOKEN_FILE` `{}` does not hold a token", path.display()));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// The Entra ID resource a vault's tokens are for, from its host: Managed HSM and the sovereign
/// clouds have their own; anything else (a private endpoint's alias, a local emulator) is
/// taken as the public cloud's Key Vault.
fn resource_for(host: &str) -> &'static str {
    let host = host.to_ascii_lowercase();
    if host.ends_with(".managedhsm.azure.net") {
        "https://managedhsm.azure.net"
    } else if host.ends_with(".vault.azure.cn") {
        "https://vault.azure.cn"
    } else if host.ends_with(".vault.usgovcloudapi.net") {
        "https://vault.usgovcloudapi.net"
    } else {
        "https://vault.azure.net"
    }
}

/// Key Vault's key names: 1 to 127 letters, digits and dashes.
fn is_key_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

/// Key versions are 32 hex digits; anything alphanumeric is taken, and nothing that would
/// change the URL or the blob's format.
fn is_version(version: &str) -> bool {
    (1..=64).contains(&version.len()) && version.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

/// The version at the end of a key id, `https://{vault}/keys/{key}/{version}`, if the id is
/// of a version of `key`.
fn version_in_kid<'a>(kid: &'a str, key: &str) -> Option<&'a str> {
    let mut segments = kid.split_once("://")?.1.rsplit('/');
    let version = segments.next()?;
    let name = segments.next()?;
    (segments.next()? == "keys" && name.eq_ignore_ascii_case(key) && is_version(version)).then_some(version)
}

/// The key version and the wrapped value (base64url, as sent back to Key Vault) of a blob.
fn parse_blob(wrapped: &[u8]) -> Option<(&str, &str)> {
    let (version, value) = std::str::from_utf8(wrapped).ok()?.strip_prefix(BLOB_PREFIX)?.split_once(':')?;
    let decodes = BASE64URL.decode(value).is_ok_and(|bytes| !bytes.is_empty());
    (is_version(version) && decodes).then_some((version, value))
}

/// The error a refused key operation becomes. Key Vault says what went wrong in `error.code`
/// and `error.message`, with a narrower code in `error.innererror.code` (`KeyDisabled`,
/// `ForbiddenByPolicy`).
fn refused(kek: &str, status: StatusCode, body: &[u8], unwrapping: bool) -> VaultError {
    #[derive(Deserialize)]
    struct Refusal {
        error: Option<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: Option<String>,
        message: Option<String>,
        innererror: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: Option<String>,
    }
    let detail = serde_json::from_slice::<Refusal>(body).ok().and_then(|refusal| refusal.error);
    let (code, message, inner) = match detail {
        Some(Detail { code, message, innererror }) => {
            (code, message, innererror.and_then(|inner| inner.code))
        }
        None => (None, None, None),
    };
    // A value Key Vault could not unwrap with this key version (altered, or wrapped by another
    // key): RSA-OAEP's decoding failed.
    let about_the_value = code.as_deref() == Some("BadParameter")
        || message
            .as_deref()
            .is_some_and(|message| message.to_ascii_lowercase().contains("decryption failed"));
    if unwrapping && status == StatusCode::BAD_REQUEST && about_the_value {
        return VaultError::Decrypt("the data key");
    }
    let code = match (code, inner) {
        (Some(code), Some(inner)) if inner != code => Some(format!("{code} ({inner})")),
        (code, inner) => code.or(inner),
    };
    let said = match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {}", clip(&message)),
        (Some(code), None) => code,
        (None, Some(message)) => clip(&message),
        (None, None) => status.canonical_reason().unwrap_or("no reason given").to_owned(),
    };
    VaultError::Unavailable { kek: kek.to_owned(), reason: format!("{said} (HTTP {})", status.as_u16()) }
}

#[derive(Serialize)]
struct KeyOperation<'a> {
    alg: &'a str,
    value: &'a str,
}

#[derive(Deserialize)]
struct KeyOperationResult {
    #[serde(default)]
    kid: String,
    value: String,
}

impl KekProvider for AzureKeyVault {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap<'a>(
        &'a self,
        at: WrapContext<'a>,
        dek: &'a SecretBox<[u8; 32]>,
    ) -> BoxFuture<'a, Result<Vec<u8>, VaultError>> {
        Box::pin(async move {
            let mut bound = SecretBox::new(Box::new([0u8; 64]));
            let (context, key) = bound.expose_secret_mut().split_at_mut(32);
            context.copy_from_slice(sha256(&at.aad()).as_bytes());
            key.copy_from_slice(dek.expose_secret());
            let value = SecretString::from(BASE64URL.encode(bound.expose_secret()));
            let version = self.key_version.as_deref().unwrap_or_default();
            let request = KeyOperation { alg: ALGORITHM, value: value.expose_secret() };
            let answer = self.call(&self.operation_url(version, "wrapkey"), &request, false).await?;
            let used = version_in_kid(&answer.kid, &self.key)
                .filter(|used| version.is_empty() || *used == version)
                .ok_or_else(|| {
                    self.unavailable(format!(
                        "unexpected answer to wrapkey: `kid` `{}` is not a version of key `{}`",
                        clip(&answer.kid),
                        self.key
                    ))
                })?;
            let wrapped =
                BASE64URL.decode(&answer.value).ok().filter(|wrapped| !wrapped.is_empty()).ok_or_else(
                    || self.unavailable("unexpected answer to wrapkey: `value` is not base64url".to_owned()),
                )?;
            Ok(format!("{BLOB_PREFIX}{used}:{}", BASE64URL.encode(wrapped)).into_bytes())
        })
    }

    fn unwrap<'a>(
        &'a self,
        at: WrapContext<'a>,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<SecretBox<[u8; 32]>, VaultError>> {
        Box::pin(async move {
            let (version, value) = parse_blob(wrapped).ok_or(VaultError::Decrypt("the data key"))?;
            let request = KeyOperation { alg: ALGORITHM, value };
            let answer = self.call(&self.operation_url(version, "unwrapkey"), &request, true).await?;
            let value = SecretString::from(answer.value);
            let bound = SecretSlice::from(
                BASE64URL.decode(value.expose_secret()).map_err(|_| VaultError::Decrypt("the data key"))?,
            );
            let (context, key) = bound
                .expose_secret()
                .split_at_checked(32)
                .filter(|(_, key)| key.len() == 32)
                .ok_or(VaultError::Decrypt("the data key"))?;
            if !constant_time_eq(context, sha256(&at.aad()).as_bytes()) {
                return Err(VaultError::Decrypt("the data key"));
            }
            let key = <[u8; 32]>::try_from(key).map_err(|_| VaultError::Decrypt("the data key"))?;
            Ok(SecretBox::new(Box::new(key)))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::provider::Environment;

    fn options(variables: &[(&str, &str)]) -> ConnectOptions {
        ConnectOptions {
            environment: Some(Environment::new(variables.iter().copied())),
            ..ConnectOptions::default()
        }
    }

    const SECRET: [(&str, &str); 3] = [
        ("AZURE_TENANT_ID", "contoso.onmicrosoft.com"),
        ("AZURE_CLIENT_ID", "app"),
        ("AZURE_CLIENT_SECRET", "s3cr3t"),
    ];

    #[test]
    fn urls_and_the_id_are_built_from_the_configuration() {
        let vault =
            AzureKeyVault::connect("https://airlock.vault.azure.net/", "kek", None, &options(&SECRET))
                .unwrap();
        assert_eq!(vault.id(), "azure-key-vault:https://airlock.vault.azure.net/keys/kek");
        assert_eq!(
            vault.operation_url("", "wrapkey").as_str(),
            "https://airlock.vault.azure.net/keys/kek//wrapkey?api-version=7.4"
        );
        assert_eq!(
            vault.operation_url("0123abcd", "unwrapkey").as_str(),
            "https://airlock.vault.azure.net/keys/kek/0123abcd/unwrapkey?api-version=7.4"
        );
        match &vault.credential {
            Credential::Secret { token_url, scope, .. } => {
                assert_eq!(
                    token_url.as_str(),
                    "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
                );
                assert_eq!(scope, "https://vault.azure.net/.default");
            }
            _ => panic!("expected a client secret"),
        }
        assert!(!format!("{vault:?}").contains("s3cr3t"));

        for (url, key, version) in [
            ("http://airlock.vault.azure.net", "kek", None),
            ("https://user:pw@airlock.vault.azure.net", "kek", None),
            ("airlock.vault.azure.net", "kek", None),
            ("https://airlock.vault.azure.net", "k/e", None),
            ("https://airlock.vault.azure.net", "", None),
            ("https://airlock.vault.azure.net", "kek", Some("v/1")),
        ] {
            let err = AzureKeyVault::connect(url, key, version, &options(&SECRET)).unwrap_err();
            assert!(matches!(err, VaultError::Config(_)), "{url} {key} {version:?}: {err:?}");
        }
    }

    #[test]
    fn the_credential_is_the_first_one_configured() {
        let connect = |variables: &[(&str, &str)]| {
            AzureKeyVault::connect("https://v.vault.azure.net", "k", None, &options(variables))
                .map(|v| v.credential)
        };
        assert!(matches!(connect(&[]).unwrap(), Credential::Imds { .. }));
        match connect(&[("AZURE_CLIENT_ID", "user-assigned")]).unwrap() {
            Credential::Imds { url, .. } => assert_eq!(
                url.as_str(),
                "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01\
                 &resource=https%3A%2F%2Fvault.azure.net&client_id=user-assigned"
            ),
            _ => panic!("expected IMDS"),
        }
        let app_service =
            [("IDENTITY_ENDPOINT", "http://localhost:8081/msi/token"), ("IDENTITY_HEADER", "h")];
        assert!(matches!(connect(&app_service).unwrap(), Credential::AppService { .. }));
        let arc = connect(&[("IDENTITY_ENDPOINT", "http://localhost:40342/metadata/identity/oauth2/token")]);
        assert!(matches!(arc, Err(VaultError::Config(m)) if m.contains("IDENTITY_HEADER")));

        let half = connect(&[("AZURE_CLIENT_SECRET", "s3cr3t"), ("AZURE_CLIENT_ID", "app")]).err().unwrap();
        assert_eq!(
            half.to_string(),
            "key provider: azure_key_vault: `AZURE_CLIENT_SECRET` is set, but not `AZURE_TENANT_ID`"
        );
        let missing_file = connect(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "app"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/airlock/token"),
        ]);
        assert!(
            matches!(missing_file, Err(VaultError::Config(m)) if m.contains("/nonexistent/airlock/token"))
        );
        let insecure =
            connect(&[("AZURE_AUTHORITY_HOST", "http://login.example.com"), SECRET[0], SECRET[1], SECRET[2]]);
        assert!(matches!(insecure, Err(VaultError::Config(m)) if m.contains("AZURE_AUTHORITY_HOST")));
    }

    #[test]
    fn managed_hsm_and_sovereign_clouds_have_their_own_resource() {
        assert_eq!(resource_for("airlock.vault.azure.net"), "https://vault.azure.net");
        assert_eq!(resource_for("Airlock.ManagedHSM.azure.net"), "https://managedhsm.azure.net");
        assert_eq!(resource_for("airlock.vault.azure.cn"), "https://vault.azure.cn");
        assert_eq!(resource_for("airlock.vault.usgovcloudapi.net"), "https://vault.usgovcloudapi.net");
        assert_eq!(resource_for("127.0.0.1"), "https://vault.azure.net");
    }

    #[test]
    fn key_ids_and_blobs_name_a_version() {
        let kid = "https://airlock.vault.azure.net/keys/KEK/78deebed173b48e48f55abf87ed4cf71";
        assert_eq!(version_in_kid(kid, "kek"), Some("78deebed173b48e48f55abf87ed4cf71"));
        assert_eq!(version_in_kid(kid, "other"), None);
        assert_eq!(version_in_kid("https://airlock.vault.azure.net/keys/kek", "kek"), None);
        assert_eq!(version_in_kid("https://airlock.vault.azure.net/secrets/kek/abc", "kek"), None);

        assert_eq!(parse_blob(b"akv1:abc123:AAEC"), Some(("abc123", "AAEC")));
        for bad in [
            &b"akv1:abc123:"[..],
            b"akv1::AAEC",
            b"akv2:abc:AAEC",
            b"akv1:a/b:AAEC",
            b"akv1:abc:AA+C",
            b"\xff",
        ] {
            assert_eq!(parse_blob(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        // Bits past the last byte are not ignored, so an altered last character is caught here
        // even when the bytes it decodes to are the same.
        assert_eq!(parse_blob(b"akv1:abc:AAE"), Some(("abc", "AAE")));
        assert_eq!(parse_blob(b"akv1:abc:AAF"), None);
    }

    #[test]
    fn refusals_fail_closed_and_only_undecryptable_values_are_decrypt_errors() {
        let refuse = |status, body: &str, unwrapping| {
            refused("azure-key-vault:k", status, body.as_bytes(), unwrapping)
        };
        let disabled = r#"{"error":{"code":"Forbidden","message":"Operation unwrapKey is not allowed on a disabled key.","innererror":{"code":"KeyDisabled"}}}"#;
        match refuse(StatusCode::FORBIDDEN, disabled, true) {
            VaultError::Unavailable { reason, .. } => assert_eq!(
                reason,
                "Forbidden (KeyDisabled): Operation unwrapKey is not allowed on a disabled key. (HTTP 403)"
            ),
            other => panic!("{other:?}"),
        }
        let missing = r#"{"error":{"code":"KeyNotFound","message":"A key with (name/id) kek was not found in this key vault."}}"#;
        assert!(matches!(refuse(StatusCode::NOT_FOUND, missing, true),
            VaultError::Unavailable { reason, .. } if reason.starts_with("KeyNotFound: A key with") && reason.ends_with("(HTTP 404)")));
        let bad = r#"{"error":{"code":"BadParameter","message":"Decryption failed."}}"#;
        assert!(matches!(refuse(StatusCode::BAD_REQUEST, bad, true), VaultError::Decrypt(_)));
        assert!(matches!(refuse(StatusCode::BAD_REQUEST, bad, false), VaultError::Unavailable { .. }));
        let disabled_400 = r#"{"error":{"code":"KeyDisabled","message":"The key is disabled."}}"#;
        assert!(matches!(
            refuse(StatusCode::BAD_REQUEST, disabled_400, true),
            VaultError::Unavailable { .. }
        ));
        assert!(matches!(refuse(StatusCode::TOO_MANY_REQUESTS, "", true),
            VaultError::Unavailable { reason, .. } if reason == "Too Many Requests (HTTP 429)"));
    }
}
