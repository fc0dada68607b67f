//! A KEK in HashiCorp Vault or OpenBao Transit. The key never leaves the server, which wraps
//! and unwraps DEKs over HTTP (`POST /v1/<mount>/encrypt/<key>` and `.../decrypt/<key>`),
//! with the DEK's owner and version as associated data.
//!
//! Every refusal fails closed as [`VaultError::Unavailable`] with the server's own words (a
//! revoked token, a deleted key, a retired key version), never the token; only a ciphertext
//! the key cannot open under this context is [`VaultError::Decrypt`]. Rotating the Transit key
//! needs nothing here: each ciphertext names its key version and still unwraps.
//!
//! Give the token `update`, not `create`, on the encrypt path: with `create`, Transit makes a
//! new key of the same name when the configured one has been deleted, and wraps with it.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::Url;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, ConnectOptions, KekProvider, WrapContext, clip, describe_send_error, http_client, plain_var,
};
use crate::VaultError;

/// Where a Transit key lives, as configured.
pub(super) struct Location<'a> {
    /// The server, for example `https://vault.internal:8200`.
    pub address: &'a str,
    /// The Transit mount, which may be nested (`team/transit`).
    pub mount: &'a str,
    /// The key's name.
    pub key: &'a str,
    /// A Vault Enterprise or OpenBao namespace.
    pub namespace: Option<&'a str>,
}

/// A Transit key, reached with a token.
pub struct VaultTransit {
    id: String,
    encrypt: Url,
    decrypt: Url,
    namespace: Option<HeaderValue>,
    token: SecretString,
    client: reqwest::Client,
}

impl std::fmt::Debug for VaultTransit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultTransit({})", self.id)
    }
}

impl VaultTransit {
    /// Checks the configuration and reads the token (from `token_file`, else `VAULT_TOKEN`);
    /// `VAULT_CACERT` names a PEM bundle for a server with a private CA. Nothing is sent yet.
    pub(super) fn connect(
        at: Location<'_>,
        token_file: Option<&Path>,
        options: &ConnectOptions,
    ) -> Result<Self, VaultError> {
        let config = |what: String| VaultError::Config(format!("vault_transit: {what}"));
        let address = at.address.trim().trim_end_matches('/');
        let mount = at.mount.trim().trim_matches('/');
        let key = at.key.trim();
        let base = Url::parse(address)
            .ok()
            .filter(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.has_host()
                    && url.username().is_empty()
                    && url.password().is_none()
                    && url.query().is_none()
                    && url.fragment().is_none()
            })
            .ok_or_else(|| {
                config(format!("`address` `{address}` is not an http(s) URL without credentials"))
            })?;
        if mount.is_empty() || mount.split('/').any(|segment| matches!(segment, "" | "." | "..")) {
            return Err(config(format!("`mount` `{mount}` is not a mount path")));
        }
        if key.is_empty() || key.contains('/') || key == "." || key == ".." {
            return Err(config(format!("`key` `{key}` is not a Transit key name")));
        }
        let namespace = at
            .namespace
            .map(|namespace| {
                HeaderValue::from_str(namespace.trim())
                    .map_err(|_| config(format!("`namespace` `{namespace}` is not a namespace path")))
            })
            .transpose()?;
        let endpoint = |operation: &str| {
            let mut url = base.clone();
            url.path_segments_mut()
                .map_err(|()| config(format!("`address` `{address}` cannot take a path")))?
                .pop_if_empty()
                .push("v1")
                .extend(mount.split('/'))
                .push(operation)
                .push(key);
            Ok::<_, VaultError>(url)
        };
        let ca_file = plain_var(options, "VAULT_CACERT");
        Ok(Self {
            id: format!("vault-transit:{address}/{mount}/{key}"),
            encrypt: endpoint("encrypt")?,
            decrypt: endpoint("decrypt")?,
            namespace,
            token: read_token(token_file, options)?,
            client: http_client(ca_file.as_deref().map(Path::new))?,
        })
    }

    fn unavailable(&self, reason: String) -> VaultError {
        VaultError::Unavailable { kek: self.id.clone(), reason }
    }

    /// Sends one Transit request and reads its `data`. A 400 about the ciphertext itself
    /// (wrong associated data, altered, not a Transit ciphertext) is a failed decryption when
    /// `decrypting`; every other refusal makes the key unavailable.
    async fn post<T: DeserializeOwned>(
        &self,
        url: &Url,
        body: &impl Serialize,
        decrypting: bool,
    ) -> Result<T, VaultError> {
        let mut token = HeaderValue::from_str(self.token.expose_secret())
            .map_err(|_| self.unavailable("the token is not a valid header value".to_owned()))?;
        token.set_sensitive(true);
        let mut request = self.client.post(url.clone()).header("X-Vault-Token", token).json(body);
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace.clone());
        }
        let response = request.send().await.map_err(|err| self.unavailable(describe_send_error(&err)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|err| self.unavailable(describe_send_error(&err)))?;
        if status.is_success() {
            return serde_json::from_slice::<Answer<T>>(&body).map(|answer| answer.data).map_err(|_| {
                self.unavailable(format!("unexpected answer (HTTP {status}): not Transit's JSON"))
            });
        }
        let said = serde_json::from_slice::<Refusal>(&body)
            .map(|refusal| error_text(&refusal.errors))
            .ok()
            .filter(|text| !text.is_empty())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no reason given").to_owned());
        if decrypting && status == reqwest::StatusCode::BAD_REQUEST && is_about_the_ciphertext(&said) {
            return Err(VaultError::Decrypt("the data key"));
        }
        Err(self.unavailable(format!("{said} (HTTP {})", status.as_u16())))
    }
}

/// Reads the token from `token_file` (trimmed: files usually end in a newline), else from
/// `VAULT_TOKEN`.
fn read_token(token_file: Option<&Path>, options: &ConnectOptions) -> Result<SecretString, VaultError> {
    let (token, source) = match token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|err| {
                VaultError::Config(format!("vault_transit: token file `{}`: {err}", path.display()))
            })?;
            (SecretString::from(text), format!("token file `{}`", path.display()))
        }
        None => {
            let token = options.var("VAULT_TOKEN").ok_or_else(|| {
                VaultError::Config("vault_transit: no token: set `VAULT_TOKEN` or `token_file`".to_owned())
            })?;
            (token, "`VAULT_TOKEN`".to_owned())
        }
    };
    let trimmed = token.expose_secret().trim();
    if trimmed.is_empty() {
        return Err(VaultError::Config(format!("vault_transit: {source} is empty")));
    }
    if !trimmed.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(VaultError::Config(format!("vault_transit: {source} holds characters no token has")));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// Transit's `errors`, one line: Vault wraps some as `1 error occurred:\n\t* permission denied`.
fn error_text(errors: &[String]) -> String {
    let lines: Vec<&str> = errors
        .iter()
        .flat_map(|error| error.lines())
        .map(|line| line.trim().trim_start_matches("* "))
        .filter(|line| !line.is_empty() && !is_error_count(line))
        .collect();
    clip(&lines.join("; "))
}

/// `1 error occurred:`, `2 errors occurred:`.
fn is_error_count(line: &str) -> bool {
    line.starts_with(char::is_numeric) && line.ends_with("occurred:")
}

/// Whether Transit refused a decryption because of the ciphertext, not the key or the token.
fn is_about_the_ciphertext(said: &str) -> bool {
    said.contains("message authentication failed") || said.starts_with("invalid ciphertext")
}

#[derive(Deserialize)]
struct Answer<T> {
    data: T,
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    errors: Vec<String>,
}

#[derive(Serialize)]
struct EncryptRequest<'a> {
    plaintext: &'a str,
    associated_data: &'a str,
}

#[derive(Deserialize)]
struct Encrypted {
    ciphertext: String,
}

#[derive(Serialize)]
struct DecryptRequest<'a> {
    ciphertext: &'a str,
    associated_data: &'a str,
}

#[derive(Deserialize)]
struct Decrypted {
    plaintext: String,
}

impl KekProvider for VaultTransit {
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
            let associated_data = STANDARD.encode(at.aad());
            let request =
                EncryptRequest { plaintext: plaintext.expose_secret(), associated_data: &associated_data };
            let answer: Encrypted = self.post(&self.encrypt, &request, false).await?;
            // The `vault:vN:...` text as bytes: it names the key version that opens it.
            Ok(answer.ciphertext.into_bytes())
        })
    }

    fn unwrap<'a>(
        &'a self,
        at: WrapContext<'a>,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<SecretBox<[u8; 32]>, VaultError>> {
        Box::pin(async move {
            let ciphertext = std::str::from_utf8(wrapped).map_err(|_| VaultError::Decrypt("the data key"))?;
            let associated_data = STANDARD.encode(at.aad());
            let request = DecryptRequest { ciphertext, associated_data: &associated_data };
            let answer: Decrypted = self.post(&self.decrypt, &request, true).await?;
            let plaintext = SecretString::from(answer.plaintext);
            let bytes = STANDARD
                .decode(plaintext.expose_secret())
                .map_err(|_| VaultError::Decrypt("the data key"))?;
            let key = <[u8; 32]>::try_from(bytes).map_err(|_| VaultError::Decrypt("the data key"))?;
            Ok(SecretBox::new(Box::new(key)))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn transit_errors_read_as_one_line() {
        let wrapped = ["1 error occurred:\n\t* permission denied\n\n".to_owned()];
        assert_eq!(error_text(&wrapped), "permission denied");
        let two = ["encryption key not found".to_owned(), "2 errors occurred:\n\t* a\n\t* b".to_owned()];
        assert_eq!(error_text(&two), "encryption key not found; a; b");
        assert!(is_about_the_ciphertext("cipher: message authentication failed"));
        assert!(is_about_the_ciphertext("invalid ciphertext: no prefix"));
        assert!(!is_about_the_ciphertext("encryption key not found"));
        assert!(!is_about_the_ciphertext(
            "ciphertext or signature version is disallowed by policy (too old)"
        ));
    }

    #[test]
    fn paths_are_built_from_encoded_segments() {
        let options = ConnectOptions {
            environment: Some(super::super::Environment::new([("VAULT_TOKEN", "s.token")])),
            ..ConnectOptions::default()
        };
        let at = Location {
            address: "https://vault.internal:8200/prefix/",
            mount: "/team/transit/",
            key: "airlock key?#%",
            namespace: None,
        };
        let transit = VaultTransit::connect(at, None, &options).unwrap();
        assert_eq!(
            transit.id(),
            "vault-transit:https://vault.internal:8200/prefix/team/transit/airlock key?#%"
        );
        assert_eq!(
            transit.encrypt.as_str(),
            "https://vault.internal:8200/prefix/v1/team/transit/encrypt/airlock%20key%3F%23%25"
        );
        for bad in ["", "a/b", ".."] {
            let at =
                Location { address: "http://127.0.0.1:8200", mount: "transit", key: bad, namespace: None };
            assert!(matches!(VaultTransit::connect(at, None, &options), Err(VaultError::Config(_))), "{bad}");
        }
        for bad in ["vault.internal:8200", "ftp://vault", "https://user:pw@vault.internal"] {
            let at = Location { address: bad, mount: "transit", key: "k", namespace: None };
            assert!(matches!(VaultTransit::connect(at, None, &options), Err(VaultError::Config(_))), "{bad}");
        }
    }
}
