//! A KEK in Google Cloud KMS: a symmetric `ENCRYPT_DECRYPT` key that wraps and unwraps DEKs
//! (`POST /v1/{key}:encrypt` and `:decrypt`) with the DEK's owner and version as additional
//! authenticated data. The key never leaves Cloud KMS.
//!
//! Every request carries CRC32C checksums of what it sends and every answer's checksums are
//! checked, as Google's data-integrity guidelines ask: an answer that fails (altered on the
//! way, or a request whose checksums Cloud KMS did not confirm) is discarded and the request
//! sent once more, then the key is [`VaultError::Unavailable`]. The ciphertext names the key
//! version that made it, so rotating the key in Cloud KMS needs nothing here.
//!
//! Access tokens (scope `https://www.googleapis.com/auth/cloudkms`) come from
//! `GOOGLE_OAUTH_ACCESS_TOKEN` when set (a token minted elsewhere, for example by
//! `gcloud auth print-access-token` or a sidecar; used as is, so it must be replaced before it
//! expires), else from the metadata server of GCE, GKE (Workload Identity) or Cloud Run
//! (`GCE_METADATA_HOST` names another address, as in Google's libraries), cached until shortly
//! before they expire and replaced once when Cloud KMS answers 401. Service-account key files
//! (`GOOGLE_APPLICATION_CREDENTIALS`) are not supported: they need RS256-signed JWTs, which
//! this crate does not make.
//!
//! Every refusal fails closed as [`VaultError::Unavailable`] with Cloud KMS's `error.status`
//! and message (a disabled or destroyed key version, a denied identity, an unknown key); only a
//! ciphertext Cloud KMS cannot decrypt under this key and context is [`VaultError::Decrypt`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::AUTHORIZATION;
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretBox, SecretSlice, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::token::{Fresh, TokenCache, bearer, metadata_client, read_answer, refusal, service_url};
use super::{
    BoxFuture, ConnectOptions, KekProvider, WrapContext, clip, describe_send_error, http_client, plain_var,
};
use crate::VaultError;

const DEFAULT_ENDPOINT: &str = "https://cloudkms.googleapis.com";
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";

/// CRC32C (Castagnoli), the checksum of Cloud KMS's integrity fields.
const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

fn crc32c(bytes: &[u8]) -> u32 {
    CASTAGNOLI.checksum(bytes)
}

/// A Cloud KMS key, reached with OAuth 2.0 access tokens.
pub struct GcpKms {
    id: String,
    key_name: String,
    encrypt: Url,
    decrypt: Url,
    credential: Credential,
    tokens: TokenCache,
    client: reqwest::Client,
}

impl std::fmt::Debug for GcpKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GcpKms({})", self.id)
    }
}

/// Where access tokens come from.
enum Credential {
    /// `GOOGLE_OAUTH_ACCESS_TOKEN`, which cannot be renewed from here.
    Given(SecretString),
    /// The metadata server's token for the instance's (or the pod's) service account.
    Metadata { url: Url, host: String, client: reqwest::Client },
}

fn config(what: String) -> VaultError {
    VaultError::Config(format!("gcp_kms: {what}"))
}

impl GcpKms {
    /// Checks the configuration and picks the credential (see the module's documentation).
    /// Nothing is sent yet.
    pub(super) fn connect(
        key_name: &str,
        endpoint: Option<&str>,
        options: &ConnectOptions,
    ) -> Result<Self, VaultError> {
        let key_name = key_name.trim().trim_matches('/');
        let segments = key_segments(key_name).ok_or_else(|| {
            config(format!(
                "`key_name` `{key_name}` is not `projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>`"
            ))
        })?;
        let endpoint = endpoint.map(str::trim).unwrap_or(DEFAULT_ENDPOINT).trim_end_matches('/');
        let base = service_url(endpoint, "endpoint").map_err(config)?;
        let method = |name: &str| {
            let mut url = base.clone();
            let (key, parents) =
                segments.split_last().ok_or_else(|| config("`key_name` is empty".to_owned()))?;
            url.path_segments_mut()
                .map_err(|()| config(format!("`endpoint` `{endpoint}` cannot take a path")))?
                .pop_if_empty()
                .push("v1")
                .extend(parents)
                .push(&format!("{key}:{name}"));
            Ok::<_, VaultError>(url)
        };
        Ok(Self {
            id: format!("gcp-kms:{key_name}"),
            key_name: key_name.to_owned(),
            encrypt: method("encrypt")?,
            decrypt: method("decrypt")?,
            credential: Credential::from_environment(options)?,
            tokens: TokenCache::default(),
            client: http_client(None)?,
        })
    }

    fn unavailable(&self, reason: String) -> VaultError {
        VaultError::Unavailable { kek: self.id.clone(), reason }
    }

    async fn token(&self) -> Result<SecretString, VaultError> {
        match &self.credential {
            Credential::Given(token) => Ok(token.clone()),
            Credential::Metadata { url, host, client } => self
                .tokens
                .get(|| fetch_from_metadata_server(client, url, host))
                .await
                .map_err(|reason| self.unavailable(reason)),
        }
    }

    /// Sends one request with the current access token, fetching one when needed and, from
    /// the metadata server, a new one once when Cloud KMS answers 401.
    async fn call<T: DeserializeOwned>(
        &self,
        url: &Url,
        body: &impl Serialize,
        decrypting: bool,
    ) -> Result<T, VaultError> {
        let mut refused_once = false;
        loop {
            let token = self.token().await?;
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
            if status == StatusCode::UNAUTHORIZED
                && !refused_once
                && matches!(self.credential, Credential::Metadata { .. })
            {
                self.tokens.forget(&token).await;
                refused_once = true;
                continue;
            }
            if status.is_success() {
                return serde_json::from_slice(&answer).map_err(|_| {
                    self.unavailable(format!("unexpected answer (HTTP {status}): not Cloud KMS's JSON"))
                });
            }
            let mut error = refused(&self.id, status, &answer, decrypting);
            if status == StatusCode::UNAUTHORIZED
                && let (Credential::Given(_), VaultError::Unavailable { reason, .. }) =
                    (&self.credential, &mut error)
            {
                reason.push_str("; the token in `GOOGLE_OAUTH_ACCESS_TOKEN` may have expired");
            }
            return Err(error);
        }
    }
}

impl Credential {
    fn from_environment(options: &ConnectOptions) -> Result<Self, VaultError> {
        if let Some(token) = options.var("GOOGLE_OAUTH_ACCESS_TOKEN") {
            let token = token.expose_secret().trim();
            if token.is_empty() || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
                return Err(config("`GOOGLE_OAUTH_ACCESS_TOKEN` does not hold an access token".to_owned()));
            }
            return Ok(Self::Given(SecretString::from(token.to_owned())));
        }
        if plain_var(options, "GOOGLE_APPLICATION_CREDENTIALS").is_some() {
            return Err(config(
                "service-account key files (`GOOGLE_APPLICATION_CREDENTIALS`) are not supported, as they need \
                 RS256-signed JWTs: use the metadata server's identity (GCE, GKE Workload Identity, Cloud Run) \
                 or a token in `GOOGLE_OAUTH_ACCESS_TOKEN`"
                    .to_owned(),
            ));
        }
        let host =
            plain_var(options, "GCE_METADATA_HOST").unwrap_or_else(|| DEFAULT_METADATA_HOST.to_owned());
        let mut url = Url::parse(&format!("http://{host}"))
            .ok()
            .filter(|url| url.path() == "/" && url.username().is_empty() && url.query().is_none())
            .ok_or_else(|| config(format!("`GCE_METADATA_HOST` `{host}` is not a host and port")))?;
        url.set_path("/computeMetadata/v1/instance/service-accounts/default/token");
        url.query_pairs_mut().append_pair("scopes", SCOPE);
        Ok(Self::Metadata { url, host, client: metadata_client()? })
    }
}

/// A token for the default service account from the metadata server, which must say it is one
/// (`Metadata-Flavor: Google`): anything else at that name is not to be trusted with a token.
async fn fetch_from_metadata_server(
    client: &reqwest::Client,
    url: &Url,
    host: &str,
) -> Result<Fresh, String> {
    let failed = |err: reqwest::Error| {
        format!(
            "cannot get an access token from the metadata server `{host}` (outside GCE, GKE and Cloud Run, \
             set `GOOGLE_OAUTH_ACCESS_TOKEN`): {}",
            describe_send_error(&err)
        )
    };
    let response =
        client.get(url.clone()).header("Metadata-Flavor", "Google").send().await.map_err(failed)?;
    let status = response.status();
    let flavor = response.headers().get("metadata-flavor").is_some_and(|value| value.as_bytes() == b"Google");
    let body = response.bytes().await.map_err(failed)?;
    if !status.is_success() {
        return Err(format!(
            "the metadata server `{host}` refused to issue an access token: {}",
            refusal(status, &body)
        ));
    }
    if !flavor {
        return Err(format!(
            "`{host}` answered without `Metadata-Flavor: Google`, so it is no metadata server"
        ));
    }
    read_answer(&body).map_err(|reason| format!("the metadata server `{host}`: {reason}"))
}

/// The segments of `projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>`. A project id
/// may be domain-scoped (`example.com:project`); the other ids are letters, digits, `-`, `_`.
fn key_segments(key_name: &str) -> Option<Vec<&str>> {
    let segments: Vec<&str> = key_name.split('/').collect();
    let id = |segment: &str, extra: &[u8]| {
        (1..=100).contains(&segment.len())
            && segment
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_".contains(&byte) || extra.contains(&byte))
    };
    match segments.as_slice() {
        ["projects", project, "locations", location, "keyRings", ring, "cryptoKeys", key]
            if id(project, b".:") && id(location, b"") && id(ring, b"") && id(key, b"") =>
        {
            Some(segments)
        }
        _ => None,
    }
}

/// The error a refused request becomes. Cloud KMS says what went wrong in `error.status` (a
/// `google.rpc.Code` name) and `error.message`.
fn refused(kek: &str, status: StatusCode, body: &[u8], decrypting: bool) -> VaultError {
    #[derive(Deserialize)]
    struct Refusal {
        error: Option<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        status: Option<String>,
        message: Option<String>,
    }
    let (code, message) = match serde_json::from_slice::<Refusal>(body).ok().and_then(|refusal| refusal.error)
    {
        Some(Detail { status, message }) => (status, message),
        None => (None, None),
    };
    // "Decryption failed: the ciphertext is invalid." or "...: verify that 'name' refers to the
    // correct CryptoKey." A checksum that did not match is INVALID_ARGUMENT too, but no failure
    // to decrypt.
    if decrypting
        && status == StatusCode::BAD_REQUEST
        && code.as_deref() == Some("INVALID_ARGUMENT")
        && message.as_deref().is_some_and(|message| message.starts_with("Decryption failed"))
    {
        return VaultError::Decrypt("the data key");
    }
    let said = match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {}", clip(&message)),
        (Some(code), None) => code,
        (None, Some(message)) => clip(&message),
        (None, None) => status.canonical_reason().unwrap_or("no reason given").to_owned(),
    };
    VaultError::Unavailable { kek: kek.to_owned(), reason: format!("{said} (HTTP {})", status.as_u16()) }
}

/// A checksum, which Cloud KMS sends as an int64 in its JSON form: a string of digits.
fn checksum(value: Option<&Value>) -> Option<u32> {
    match value? {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_u64().and_then(|number| u32::try_from(number).ok()),
        _ => None,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EncryptRequest<'a> {
    plaintext: &'a str,
    additional_authenticated_data: &'a str,
    plaintext_crc32c: String,
    additional_authenticated_data_crc32c: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Encrypted {
    name: Option<String>,
    #[serde(default)]
    ciphertext: String,
    ciphertext_crc32c: Option<Value>,
    #[serde(default)]
    verified_plaintext_crc32c: bool,
    #[serde(default)]
    verified_additional_authenticated_data_crc32c: bool,
}

impl Encrypted {
    /// The ciphertext, if the answer passes its integrity checks; else what failed.
    fn checked(&self) -> Result<Vec<u8>, &'static str> {
        if !self.verified_plaintext_crc32c || !self.verified_additional_authenticated_data_crc32c {
            return Err("Cloud KMS did not confirm the request's checksums");
        }
        let ciphertext = STANDARD.decode(&self.ciphertext).map_err(|_| "the ciphertext is not base64")?;
        match checksum(self.ciphertext_crc32c.as_ref()) {
            Some(sum) if sum == crc32c(&ciphertext) && !ciphertext.is_empty() => Ok(ciphertext),
            Some(_) => Err("the ciphertext does not match its checksum"),
            None => Err("the answer has no ciphertext checksum"),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DecryptRequest<'a> {
    ciphertext: &'a str,
    additional_authenticated_data: &'a str,
    ciphertext_crc32c: String,
    additional_authenticated_data_crc32c: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Decrypted {
    #[serde(default)]
    plaintext: String,
    plaintext_crc32c: Option<Value>,
}

impl KekProvider for GcpKms {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap<'a>(
        &'a self,
        at: WrapContext<'a>,
        dek: &'a SecretBox<[u8; 32]>,
    ) -> BoxFuture<'a, Result<Vec<u8>, VaultError>> {
        Box::pin(async move {
            let plaintext = SecretString::from(STANDARD.encode(dek.expose_secret()));
            let aad = at.aad();
            let request = EncryptRequest {
                plaintext: plaintext.expose_secret(),
                additional_authenticated_data: &STANDARD.encode(&aad),
                plaintext_crc32c: crc32c(dek.expose_secret()).to_string(),
                additional_authenticated_data_crc32c: crc32c(&aad).to_string(),
            };
            let mut failed = "";
            for _ in 0..2 {
                let answer: Encrypted = self.call(&self.encrypt, &request, false).await?;
                if let Some(name) = &answer.name
                    && !name
                        .strip_prefix(&self.key_name)
                        .is_some_and(|rest| rest.starts_with("/cryptoKeyVersions/"))
                {
                    return Err(self.unavailable(format!(
                        "Cloud KMS encrypted with `{}`, which is not a version of this key",
                        clip(name)
                    )));
                }
                match answer.checked() {
                    Ok(ciphertext) => return Ok(ciphertext),
                    Err(what) => failed = what,
                }
            }
            Err(self.unavailable(format!("the answer to encrypt failed its integrity check twice: {failed}")))
        })
    }

    fn unwrap<'a>(
        &'a self,
        at: WrapContext<'a>,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<SecretBox<[u8; 32]>, VaultError>> {
        Box::pin(async move {
            let aad = at.aad();
            let request = DecryptRequest {
                ciphertext: &STANDARD.encode(wrapped),
                additional_authenticated_data: &STANDARD.encode(&aad),
                ciphertext_crc32c: crc32c(wrapped).to_string(),
                additional_authenticated_data_crc32c: crc32c(&aad).to_string(),
            };
            let mut failed = "";
            for _ in 0..2 {
                let answer: Decrypted = self.call(&self.decrypt, &request, true).await?;
                let plaintext = SecretString::from(answer.plaintext);
                let Ok(bytes) = STANDARD.decode(plaintext.expose_secret()).map(SecretSlice::from) else {
                    failed = "the plaintext is not base64";
                    continue;
                };
                if checksum(answer.plaintext_crc32c.as_ref()) != Some(crc32c(bytes.expose_secret())) {
                    failed = "the plaintext does not match its checksum";
                    continue;
                }
                let key = <[u8; 32]>::try_from(bytes.expose_secret())
                    .map_err(|_| VaultError::Decrypt("the data key"))?;
                return Ok(SecretBox::new(Box::new(key)));
            }
            Err(self.unavailable(format!("the answer to decrypt failed its integrity check twice: {failed}")))
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

    const KEY: &str = "projects/airlock/locations/europe-west1/keyRings/ring/cryptoKeys/kek";

    #[test]
    fn crc32c_is_castagnoli() {
        // The check value of CRC-32C, and the test vectors of RFC 3720 (iSCSI), appendix B.4.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(&(0u8..32).collect::<Vec<_>>()), 0x46DD_794E);
        assert_eq!(crc32c(&(0u8..32).rev().collect::<Vec<_>>()), 0x113F_DB5C);
    }

    #[test]
    fn urls_and_the_id_are_built_from_the_configuration() {
        let variables = [("GOOGLE_OAUTH_ACCESS_TOKEN", "ya29.token\n")];
        let kms = GcpKms::connect(&format!("/{KEY}/"), None, &options(&variables)).unwrap();
        assert_eq!(kms.id(), format!("gcp-kms:{KEY}"));
        assert_eq!(kms.encrypt.as_str(), format!("https://cloudkms.googleapis.com/v1/{KEY}:encrypt"));
        assert_eq!(kms.decrypt.as_str(), format!("https://cloudkms.googleapis.com/v1/{KEY}:decrypt"));
        assert!(matches!(&kms.credential, Credential::Given(token) if token.expose_secret() == "ya29.token"));
        assert!(!format!("{kms:?}").contains("ya29"));

        let scoped = "projects/example.com:airlock/locations/global/keyRings/r/cryptoKeys/k";
        let regional = GcpKms::connect(
            scoped,
            Some("https://cloudkms.europe-west1.rep.googleapis.com/"),
            &options(&variables),
        )
        .unwrap();
        assert_eq!(
            regional.decrypt.as_str(),
            format!("https://cloudkms.europe-west1.rep.googleapis.com/v1/{scoped}:decrypt")
        );

        for bad in [
            "projects/p/locations/l/keyRings/r",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k:x",
            "projects//locations/l/keyRings/r/cryptoKeys/k",
            "projects/p/locations/l/keyRings/r/cryptoKeys/../k",
            "keyRings/r/cryptoKeys/k",
        ] {
            assert!(
                matches!(GcpKms::connect(bad, None, &options(&variables)), Err(VaultError::Config(_))),
                "{bad}"
            );
        }
        for bad in [
            "http://cloudkms.googleapis.com",
            "cloudkms.googleapis.com",
            "https://u:p@cloudkms.googleapis.com",
        ] {
            let err = GcpKms::connect(KEY, Some(bad), &options(&variables)).unwrap_err();
            assert!(matches!(err, VaultError::Config(_)), "{bad}");
        }
    }

    #[test]
    fn tokens_come_from_the_variable_or_the_metadata_server_never_a_key_file() {
        let connect = |variables: &[(&str, &str)]| {
            GcpKms::connect(KEY, None, &options(variables)).map(|k| k.credential)
        };
        match connect(&[]).unwrap() {
            Credential::Metadata { url, .. } => assert_eq!(
                url.as_str(),
                "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token\
                 ?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloudkms"
            ),
            Credential::Given(_) => panic!("expected the metadata server"),
        }
        match connect(&[("GCE_METADATA_HOST", "127.0.0.1:8080")]).unwrap() {
            Credential::Metadata { url, .. } => {
                assert!(url.as_str().starts_with("http://127.0.0.1:8080/computeMetadata/"))
            }
            Credential::Given(_) => panic!("expected the metadata server"),
        }
        assert!(matches!(connect(&[("GCE_METADATA_HOST", "h/path")]), Err(VaultError::Config(_))));
        let key_file = connect(&[("GOOGLE_APPLICATION_CREDENTIALS", "/etc/sa.json")]).err().unwrap();
        assert!(key_file.to_string().contains("are not supported"), "{key_file}");
        let both = connect(&[
            ("GOOGLE_APPLICATION_CREDENTIALS", "/etc/sa.json"),
            ("GOOGLE_OAUTH_ACCESS_TOKEN", "t"),
        ]);
        assert!(matches!(both, Ok(Credential::Given(_))));
        assert!(matches!(connect(&[("GOOGLE_OAUTH_ACCESS_TOKEN", " ")]), Err(VaultError::Config(_))));
    }

    #[test]
    fn refusals_fail_closed_and_only_undecryptable_ciphertexts_are_decrypt_errors() {
        let refuse =
            |status, body: &str, decrypting| refused("gcp-kms:k", status, body.as_bytes(), decrypting);
        let denied = r#"{"error":{"code":403,"message":"Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied on resource 'k' (or it may not exist).","status":"PERMISSION_DENIED"}}"#;
        assert!(matches!(refuse(StatusCode::FORBIDDEN, denied, true),
            VaultError::Unavailable { reason, .. } if reason.starts_with("PERMISSION_DENIED: Permission") && reason.ends_with("(HTTP 403)")));
        let disabled = r#"{"error":{"code":400,"message":"k/cryptoKeyVersions/1 is not enabled, current state is: DISABLED.","status":"FAILED_PRECONDITION"}}"#;
        assert!(matches!(refuse(StatusCode::BAD_REQUEST, disabled, true),
            VaultError::Unavailable { reason, .. } if reason.starts_with("FAILED_PRECONDITION: ")));
        for message in [
            "Decryption failed: the ciphertext is invalid.",
            "Decryption failed: verify that 'name' refers to the correct CryptoKey.",
        ] {
            let body =
                format!(r#"{{"error":{{"code":400,"message":"{message}","status":"INVALID_ARGUMENT"}}}}"#);
            assert!(matches!(refuse(StatusCode::BAD_REQUEST, &body, true), VaultError::Decrypt(_)));
            assert!(matches!(refuse(StatusCode::BAD_REQUEST, &body, false), VaultError::Unavailable { .. }));
        }
        let checksum = r#"{"error":{"code":400,"message":"The checksum in field ciphertext_crc32c did not match the data in field ciphertext.","status":"INVALID_ARGUMENT"}}"#;
        assert!(matches!(refuse(StatusCode::BAD_REQUEST, checksum, true), VaultError::Unavailable { .. }));
        assert!(matches!(refuse(StatusCode::SERVICE_UNAVAILABLE, "<html>", true),
            VaultError::Unavailable { reason, .. } if reason == "Service Unavailable (HTTP 503)"));
    }

    #[test]
    fn encrypt_answers_are_checked() {
        let ciphertext = b"ciphertext";
        let good = Encrypted {
            name: None,
            ciphertext: STANDARD.encode(ciphertext),
            ciphertext_crc32c: Some(Value::String(crc32c(ciphertext).to_string())),
            verified_plaintext_crc32c: true,
            verified_additional_authenticated_data_crc32c: true,
        };
        assert_eq!(good.checked().unwrap(), ciphertext);
        let unverified = Encrypted { verified_additional_authenticated_data_crc32c: false, ..good };
        assert!(unverified.checked().is_err());
        let altered = Encrypted {
            ciphertext: STANDARD.encode(b"ciphertexT"),
            verified_additional_authenticated_data_crc32c: true,
            ..unverified
        };
        assert_eq!(altered.checked(), Err("the ciphertext does not match its checksum"));
        let unsummed = Encrypted { ciphertext_crc32c: None, ..altered };
        assert_eq!(unsummed.checked(), Err("the answer has no ciphertext checksum"));
        assert_eq!(checksum(Some(&Value::from(4_294_967_295u64))), Some(u32::MAX));
        assert_eq!(checksum(Some(&Value::from(4_294_967_296u64))), None);
    }
}
