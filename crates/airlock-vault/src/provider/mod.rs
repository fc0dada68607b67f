//! Key-encryption-key providers, behind one trait.
//!
//! A provider wraps and unwraps DEKs; it never hands out the KEK. Each wrapped DEK is stored
//! with the id of the KEK that wrapped it ([`KekProvider::id`]), so a [`Keyring`] holding the
//! current provider and the previous ones opens DEKs wrapped before a KEK rotation, and a
//! rotation can tell which DEKs still need re-wrapping.
//!
//! The wrap is bound to the DEK's owner and version ([`WrapContext`]): as AEAD associated
//! data for local keys, Transit and Cloud KMS, as the encryption context for AWS KMS, and as a
//! digest wrapped with the DEK and checked on unwrap for Azure Key Vault's RSA-OAEP, which takes
//! no associated data. A wrapped DEK copied to another owner's row does not unwrap.

mod aws_kms;
mod azure_key_vault;
mod env;
mod file;
mod gcp_kms;
mod token;
mod transit;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};

use crate::{Dek, VaultError};

pub use file::{LocalKek, new_key_base64, write_owner_only};

/// A boxed future, so providers can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a wrapped DEK is bound to.
#[derive(Debug, Clone, Copy)]
pub struct WrapContext<'a> {
    /// The DEK's owner: a tenant id or `platform`.
    pub owner: &'a str,
    /// The DEK's version.
    pub version: u32,
}

impl WrapContext<'_> {
    /// The associated data for providers that take bytes.
    #[must_use]
    pub fn aad(&self) -> Vec<u8> {
        format!("airlock/v2\0dek\0{}\0{}", self.owner, self.version).into_bytes()
    }
}

/// A source of key-encryption keys.
pub trait KekProvider: Send + Sync + std::fmt::Debug {
    /// The stable id of the key that wraps, recorded with every wrapped DEK: for example
    /// `file:3f9a0c41d2b7e5a8` (a fingerprint, not the key), `vault-transit:<address>/<mount>/<key>`,
    /// `aws-kms:<key id>`, `azure-key-vault:<vault>/keys/<key>` or `gcp-kms:<key name>`.
    fn id(&self) -> &str;

    /// Wraps a DEK's bytes.
    fn wrap<'a>(
        &'a self,
        at: WrapContext<'a>,
        dek: &'a SecretBox<[u8; 32]>,
    ) -> BoxFuture<'a, Result<Vec<u8>, VaultError>>;

    /// Unwraps what [`KekProvider::wrap`] produced for the same context.
    fn unwrap<'a>(
        &'a self,
        at: WrapContext<'a>,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<SecretBox<[u8; 32]>, VaultError>>;
}

/// A provider, as configured (in the server's configuration, or as a tenant's own key).
/// It names keys and where to reach them; credentials come from the environment
/// (`VAULT_TOKEN` or `token_file`; the standard `AWS_*` and `AZURE_*` variables, managed
/// identities, `GOOGLE_OAUTH_ACCESS_TOKEN` or the GCE metadata server), never from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderSpec {
    /// A local file holding a base64 256-bit key, owner-only.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A base64 256-bit key in an environment variable (for secret stores that inject
    /// variables).
    Env {
        /// The variable's name.
        variable: String,
    },
    /// A HashiCorp Vault or OpenBao Transit key.
    VaultTransit {
        /// The server, for example `https://vault.internal:8200`.
        address: String,
        /// The Transit mount. Default `transit`.
        #[serde(default = "default_transit_mount")]
        mount: String,
        /// The key's name.
        key: String,
        /// A Vault Enterprise or OpenBao namespace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// A file holding the token; `VAULT_TOKEN` when unset.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_file: Option<PathBuf>,
    },
    /// An AWS KMS symmetric key.
    AwsKms {
        /// The key's id, ARN or alias (`alias/airlock`).
        key_id: String,
        /// The region. Default: `AWS_REGION`, then `AWS_DEFAULT_REGION`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// Another endpoint (a VPC endpoint, or a KMS-compatible server).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    /// An RSA key in Azure Key Vault or a Managed HSM, wrapping with RSA-OAEP-256.
    AzureKeyVault {
        /// The vault, for example `https://airlock.vault.azure.net`.
        vault_url: String,
        /// The key's name.
        key: String,
        /// The key version to wrap with. Default: the key's current version. Unwrapping always
        /// uses the version that wrapped, which each wrapped DEK records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_version: Option<String>,
    },
    /// A Google Cloud KMS symmetric key.
    GcpKms {
        /// The key's resource name,
        /// `projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>`.
        key_name: String,
        /// Another endpoint (a regional or Private Service Connect endpoint). Default
        /// `https://cloudkms.googleapis.com`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
}

fn default_transit_mount() -> String {
    "transit".to_owned()
}

/// How providers are connected.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Create a missing key file (dev mode's embedded default).
    pub create_missing_file: bool,
    /// The variables providers read (the `env` provider's key, `VAULT_TOKEN`,
    /// `VAULT_CACERT`, the `AWS_*` and `AZURE_*` credentials, `GOOGLE_OAUTH_ACCESS_TOKEN`, the
    /// metadata endpoints' overrides) instead of the process environment, which is
    /// read when this is `None`. For embedders that hold credentials elsewhere, and for
    /// tests: a Rust 2024 program cannot set its own environment without `unsafe`.
    pub environment: Option<Environment>,
}

impl ConnectOptions {
    /// The variable `name`, from [`ConnectOptions::environment`] or the process environment.
    /// A value that is not UTF-8 is read lossily, so it fails as a malformed key or a
    /// rejected credential rather than as a missing one.
    fn var(&self, name: &str) -> Option<SecretString> {
        match &self.environment {
            Some(environment) => environment.0.get(name).cloned(),
            None => {
                std::env::var_os(name).map(|value| SecretString::from(value.to_string_lossy().into_owned()))
            }
        }
    }
}

/// Environment variables standing in for the process environment (see
/// [`ConnectOptions::environment`]). Values are secrets: `Debug` shows only the names.
#[derive(Clone, Default)]
pub struct Environment(BTreeMap<String, SecretString>);

impl Environment {
    /// The variables `pairs` names.
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self(pairs.into_iter().map(|(name, value)| (name.into(), SecretString::from(value.into()))).collect())
    }
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Environment").field(&self.0.keys().collect::<Vec<_>>()).finish()
    }
}

/// Connects to the provider `spec` describes. Local keys and credentials are read now;
/// external providers are checked on first use, so a provider that is down delays only what
/// needs it.
pub async fn connect(
    spec: &ProviderSpec,
    options: &ConnectOptions,
) -> Result<Arc<dyn KekProvider>, VaultError> {
    Ok(match spec {
        ProviderSpec::File { path } => Arc::new(LocalKek::from_file(path, options.create_missing_file)?),
        ProviderSpec::Env { variable } => Arc::new(env::connect(variable, options)?),
        ProviderSpec::VaultTransit { address, mount, key, namespace, token_file } => {
            Arc::new(transit::VaultTransit::connect(
                transit::Location { address, mount, key, namespace: namespace.as_deref() },
                token_file.as_deref(),
                options,
            )?)
        }
        ProviderSpec::AwsKms { key_id, region, endpoint } => {
            Arc::new(aws_kms::AwsKms::connect(key_id, region.as_deref(), endpoint.as_deref(), options)?)
        }
        ProviderSpec::AzureKeyVault { vault_url, key, key_version } => Arc::new(
            azure_key_vault::AzureKeyVault::connect(vault_url, key, key_version.as_deref(), options)?,
        ),
        ProviderSpec::GcpKms { key_name, endpoint } => {
            Arc::new(gcp_kms::GcpKms::connect(key_name, endpoint.as_deref(), options)?)
        }
    })
}

/// The HTTP client external providers share the settings of: bounded waits, so a provider
/// that is down fails a request in seconds rather than hanging it, and no redirects, which
/// would carry a token or a signed request to an address nobody configured. `ca_file`
/// (a PEM bundle) adds roots for a server with a private CA.
fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, VaultError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|err| VaultError::Config(format!("certificate bundle `{}`: {err}", path.display())))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
            VaultError::Config(format!("`{}` is not a PEM certificate bundle", path.display()))
        })?;
        if roots.is_empty() {
            return Err(VaultError::Config(format!("`{}` holds no PEM certificate", path.display())));
        }
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder.build().map_err(|err| VaultError::Config(format!("cannot set up an HTTP client: {err}")))
}

/// Why a request to a provider got no answer, for [`VaultError::Unavailable`]: the deepest
/// cause (`Connection refused`, a TLS error) says more than reqwest's own summary.
fn describe_send_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out (5 s to connect, 15 s in all)".to_owned();
    }
    let mut cause: &dyn std::error::Error = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let what = if err.is_connect() { "cannot connect" } else { "the request failed" };
    format!("{what}: {cause}")
}

/// A server's error text, cut to a length that fits a log line.
fn clip(text: &str) -> String {
    const MAX: usize = 300;
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", text.get(..at).unwrap_or_default()),
        None => text,
    }
}

/// Reads a variable that names something, not a secret (a region, a file), if it is set and
/// not blank.
fn plain_var(options: &ConnectOptions, name: &str) -> Option<String> {
    options.var(name).map(|value| value.expose_secret().trim().to_owned()).filter(|value| !value.is_empty())
}

/// The current KEK provider and the previous ones still able to unwrap.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: Arc<dyn KekProvider>,
    previous: Vec<Arc<dyn KekProvider>>,
}

/// A DEK wrapped for storage, with the id of the KEK that wrapped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDek {
    /// The KEK's id.
    pub kek_id: String,
    /// The wrapped bytes.
    pub wrapped: Vec<u8>,
}

impl Keyring {
    /// A keyring that wraps with `current` and unwraps with it or any of `previous`.
    #[must_use]
    pub fn new(current: Arc<dyn KekProvider>, previous: Vec<Arc<dyn KekProvider>>) -> Self {
        Self { current, previous }
    }

    /// The id of the KEK new DEKs are wrapped with.
    #[must_use]
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// A keyring that wraps with `current` and still unwraps with every key of this one (a
    /// tenant's own KEK, taking over from the platform's).
    #[must_use]
    pub fn with_current(&self, current: Arc<dyn KekProvider>) -> Self {
        let mut previous = vec![self.current.clone()];
        previous.extend(self.previous.iter().cloned());
        Self { current, previous }
    }

    /// The current provider.
    #[must_use]
    pub fn current(&self) -> &Arc<dyn KekProvider> {
        &self.current
    }

    /// Wraps a DEK with the current KEK.
    pub async fn wrap(&self, dek: &Dek) -> Result<WrappedDek, VaultError> {
        let at = WrapContext { owner: dek.owner(), version: dek.version() };
        let wrapped = self.current.wrap(at, dek.bytes()).await?;
        Ok(WrappedDek { kek_id: self.current.id().to_owned(), wrapped })
    }

    /// Unwraps a stored DEK with the KEK that wrapped it.
    pub async fn unwrap(&self, owner: &str, version: u32, stored: &WrappedDek) -> Result<Dek, VaultError> {
        let provider = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|p| p.id() == stored.kek_id)
            .ok_or_else(|| VaultError::UnknownKek(stored.kek_id.clone()))?;
        let bytes = provider.unwrap(WrapContext { owner, version }, &stored.wrapped).await?;
        Ok(Dek::from_bytes(owner, version, bytes))
    }
}
