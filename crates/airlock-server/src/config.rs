//! Configuration: read raw, validate once, use typed.
//!
//! Sources, later ones winning: built-in defaults, a TOML file, `AIRLOCK_*` environment
//! variables (`__` separates sections: `AIRLOCK_SERVER__LISTEN`), `AIRLOCK_*_FILE` variables
//! whose file holds the value (for secrets), and command-line flags. Unknown keys are errors
//! wherever they come from, so a misspelt setting never passes silently.
//!
//! [`RawConfig::validate`] turns the raw form into a [`Config`], collecting every problem
//! rather than stopping at the first. Production mode checks harder and refuses to start on
//! any of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use toml::Table;

/// Whether Airlock runs for development or for production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Zero configuration: generated secrets under the data directory, plain HTTP on loopback.
    #[default]
    Dev,
    /// Every secret and key provider configured explicitly, HTTPS public URL, no debug options.
    Production,
}

/// Configuration as read, before validation. Every field is optional; defaults are applied
/// by [`RawConfig::validate`].
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `dev` (the default) or `production`.
    pub mode: Option<Mode>,
    /// Directory holding every database and generated file. Default `./airlock-data`.
    pub data_dir: Option<PathBuf>,
    /// The URL people and agents reach Airlock at, such as `https://airlock.example.com`.
    /// Defaults to `http://<listen address>` in dev mode; required in production.
    pub public_url: Option<String>,
    /// The HTTP server.
    #[serde(default)]
    pub server: RawServer,
    /// Authentication and sessions.
    #[serde(default)]
    pub auth: RawAuth,
    /// Server secrets.
    #[serde(default)]
    pub secrets: RawSecrets,
    /// Where the key-encryption key comes from.
    #[serde(default)]
    pub key_provider: RawKeyProvider,
    /// Tenants' lifecycle.
    #[serde(default)]
    pub tenants: RawTenants,
    /// The MCP endpoint.
    #[serde(default)]
    pub mcp: RawMcp,
    /// The audit log.
    #[serde(default)]
    pub audit: RawAudit,
    /// Approval requests.
    #[serde(default)]
    pub approvals: RawApprovals,
    /// Actions.
    #[serde(default)]
    pub actions: RawActions,
    /// Content inspection.
    #[serde(default)]
    pub inspection: RawInspection,
    /// The model gateway.
    #[serde(default)]
    pub models: RawModels,
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
    /// Options for local development only; production refuses to start with any of them on.
    #[serde(default)]
    pub debug: RawDebug,
}

/// The HTTP server, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address and port to listen on. Default `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// Longest time a request may take before it is answered with 503. Default 30.
    pub request_timeout_secs: Option<u64>,
    /// Largest request body accepted, in bytes. Default 1 MiB.
    pub body_limit_bytes: Option<usize>,
    /// Time allowed for in-flight requests to finish at shutdown. Default 10.
    pub shutdown_grace_secs: Option<u64>,
}

/// Authentication and sessions, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Longest a console session lives, in seconds. Default 12 hours.
    pub session_lifetime_secs: Option<u64>,
    /// A console session unused this long ends, in seconds. Default 30 minutes.
    pub session_idle_secs: Option<u64>,
    /// Failed authentications allowed per client address per minute. Default 30.
    pub failed_auth_per_minute: Option<u32>,
    /// Login attempts allowed per account per minute. Default 10.
    pub login_attempts_per_minute: Option<u32>,
    /// Requests allowed per principal per second, sustained. Default 200.
    pub requests_per_second: Option<u32>,
    /// Most client addresses and principals tracked by the rate limiters. Default 100000.
    pub limiter_capacity: Option<usize>,
}

/// Server secrets, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecrets {
    /// Keys the hashes under which API keys and session tokens are stored, and CSRF tokens.
    /// At least 32 bytes. In dev mode it is generated into `<data_dir>/server.key` when
    /// unset; production requires it (`AIRLOCK_SECRETS__SERVER_KEY_FILE` reads it from a file).
    pub server_key: Option<String>,
}

/// The key-encryption-key provider, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyProvider {
    /// `file` (a local key file), `env` (a key in an environment variable), `vault_transit`
    /// (HashiCorp Vault or OpenBao Transit), `aws_kms`, `azure_key_vault` or `gcp_kms`. Dev
    /// mode defaults to `file` under the data directory; production requires an explicit
    /// provider.
    pub kind: Option<String>,
    /// For `file`: the key file's path.
    pub path: Option<PathBuf>,
    /// For `env`: the variable holding the base64 key.
    pub variable: Option<String>,
    /// For `vault_transit`: the server's address.
    pub address: Option<String>,
    /// For `vault_transit`: the Transit mount (default `transit`).
    pub mount: Option<String>,
    /// For `vault_transit`: the key's name.
    pub key: Option<String>,
    /// For `vault_transit`: the namespace, if any.
    pub namespace: Option<String>,
    /// For `vault_transit`: a file holding the token (default: the `VAULT_TOKEN` variable).
    pub token_file: Option<PathBuf>,
    /// For `aws_kms`: the key's id, ARN or alias.
    pub key_id: Option<String>,
    /// For `aws_kms`: the region (default: `AWS_REGION`).
    pub region: Option<String>,
    /// For `aws_kms` and `gcp_kms`: another endpoint.
    pub endpoint: Option<String>,
    /// For `azure_key_vault`: the vault's URL.
    pub vault_url: Option<String>,
    /// For `azure_key_vault`: the key version new wraps use (default: the current one).
    pub key_version: Option<String>,
    /// For `gcp_kms`: the key's resource name.
    pub key_name: Option<String>,
    /// Earlier key-encryption keys, still able to unwrap the data keys they wrapped until
    /// `airlock keys rotate --kek` re-wraps them under the current one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<airlock_vault::ProviderSpec>,
    /// Seconds unwrapped data keys stay in memory before being unwrapped again: the longest a
    /// revoked key keeps working. Default 60.
    pub cache_ttl_secs: Option<u64>,
}

/// The MCP endpoint, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    /// Most MCP sessions held at once (about 90 KiB each; idle ones close after five
    /// minutes). Default 10000.
    pub max_sessions: Option<usize>,
    /// Seconds between automatic refreshes of imported tools from their upstream MCP servers
    /// (changed descriptions and schemas applied, the builder's settings kept). Default 300;
    /// 0 disables.
    pub refresh_secs: Option<u64>,
}

/// Tenants' lifecycle, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenants {
    /// Deleting a tenant takes two different operators: the first asks, the second confirms
    /// within 24 hours. Default false; production deployments should turn it on.
    pub deletion_requires_second_operator: Option<bool>,
}

/// The audit log, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Sign a checkpoint after this many new entries. Default 1000.
    pub checkpoint_every: Option<u64>,
    /// Sign a checkpoint this often, in seconds, when the log has grown. Default 10.
    pub checkpoint_interval_secs: Option<u64>,
}

/// Actions, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActions {
    /// Actions a run may propose per minute. Default 600.
    pub per_run_per_minute: Option<u32>,
}

/// Approval requests, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    /// How long an approval request waits before it expires, in seconds. Default 86400 (24 h).
    pub ttl_secs: Option<u64>,
    /// A URL notified (POST, JSON) of every new approval request.
    pub webhook_url: Option<String>,
    /// The key the webhook's HMAC-SHA256 signature is made with (at least 32 bytes); required
    /// with `webhook_url`.
    pub webhook_secret: Option<String>,
}

/// Content inspection, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInspection {
    /// How long the token vault keeps a value after its token was last minted, so that it can
    /// be restored, in seconds. Default 2592000 (30 days).
    pub token_retention_secs: Option<u64>,
}

/// The model gateway, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModels {
    /// Seconds to wait for a provider's response headers. Default 60.
    pub first_byte_timeout_secs: Option<u64>,
    /// Seconds a non-streamed provider response may take in all. Default 300.
    pub total_timeout_secs: Option<u64>,
    /// Seconds a streamed response may go quiet before it is cut off. Default 60.
    pub stream_idle_timeout_secs: Option<u64>,
    /// Attempts per provider route before falling back to the next. Default 2.
    pub attempts_per_route: Option<u32>,
}

impl RawKeyProvider {
    /// The provider these fields describe; each missing or stray field is a problem.
    fn spec(
        &self,
        data_dir: &Path,
        production: bool,
        problems: &mut Vec<String>,
    ) -> airlock_vault::ProviderSpec {
        use airlock_vault::ProviderSpec;
        let default_file = || ProviderSpec::File { path: data_dir.join("keys").join("kek.key") };
        let mut required = |field: &str, value: &Option<String>| -> String {
            value.clone().unwrap_or_else(|| {
                problems.push(format!("key_provider.{field}: required for this kind of provider"));
                String::new()
            })
        };
        match self.kind.as_deref() {
            None if !production => default_file(),
            None => {
                problems.push(
                    "key_provider: required in production (for example `kind = \"file\"` with `path`, or `vault_transit`, or `aws_kms`)"
                        .to_owned(),
                );
                default_file()
            }
            Some("file") => match (&self.path, production) {
                (Some(path), _) => ProviderSpec::File { path: path.clone() },
                (None, false) => default_file(),
                (None, true) => {
                    problems
                        .push("key_provider.path: required in production for the `file` provider".to_owned());
                    default_file()
                }
            },
            Some("env") => ProviderSpec::Env { variable: required("variable", &self.variable) },
            Some("vault_transit") => ProviderSpec::VaultTransit {
                address: required("address", &self.address),
                mount: self.mount.clone().unwrap_or_else(|| "transit".to_owned()),
                key: required("key", &self.key),
                namespace: self.namespace.clone(),
                token_file: self.token_file.clone(),
            },
            Some("aws_kms") => ProviderSpec::AwsKms {
                key_id: required("key_id", &self.key_id),
                region: self.region.clone(),
                endpoint: self.endpoint.clone(),
            },
            Some("azure_key_vault") => ProviderSpec::AzureKeyVault {
                vault_url: required("vault_url", &self.vault_url),
                key: required("key", &self.key),
                key_version: self.key_version.clone(),
            },
            Some("gcp_kms") => ProviderSpec::GcpKms {
                key_name: required("key_name", &self.key_name),
                endpoint: self.endpoint.clone(),
            },
            Some(other) => {
                problems.push(format!(
                    "key_provider.kind: `{other}` is not a key provider (expected `file`, `env`, `vault_transit`, `aws_kms`, `azure_key_vault` or `gcp_kms`)"
                ));
                default_file()
            }
        }
    }
}

impl RawModels {
    fn client_config(&self) -> airlock_llm::client::ClientConfig {
        let mut c = airlock_llm::client::ClientConfig::default();
        if let Some(s) = self.first_byte_timeout_secs {
            c.first_byte_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(s) = self.total_timeout_secs {
            c.total_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(s) = self.stream_idle_timeout_secs {
            c.idle_stream_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(n) = self.attempts_per_route {
            c.max_attempts_per_upstream = n.clamp(1, 10);
        }
        c
    }
}

/// Logging, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `json` (the default) or `text`.
    pub format: Option<String>,
    /// A `tracing` filter such as `info` or `airlock_server=debug,info`. Default `info`.
    pub level: Option<String>,
}

/// Development-only options, as read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDebug {
    /// Put internal error details in 500 responses instead of only in the log.
    pub verbose_errors: Option<bool>,
    /// Log every SQL statement at debug level.
    pub log_sql: Option<bool>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Dev or production.
    pub mode: Mode,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The public URL, without a trailing slash.
    pub public_url: String,
    /// Whether the public URL is HTTPS (cookies are then `Secure` and `__Host-` prefixed).
    pub public_url_is_https: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Request body limit in bytes.
    pub body_limit_bytes: usize,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Session lifetime.
    pub session_lifetime: Duration,
    /// Session idle timeout.
    pub session_idle: Duration,
    /// Failed authentications per client address per minute.
    pub failed_auth_per_minute: u32,
    /// Login attempts per account per minute.
    pub login_attempts_per_minute: u32,
    /// Requests per principal per second.
    pub requests_per_second: u32,
    /// Rate-limiter capacity.
    pub limiter_capacity: usize,
    /// The server key, if configured; `None` in dev mode means "generate under the data dir".
    pub server_key: Option<SecretString>,
    /// The key-encryption-key provider.
    pub key_provider: airlock_vault::ProviderSpec,
    /// Earlier key-encryption keys, for unwrapping only.
    pub previous_key_providers: Vec<airlock_vault::ProviderSpec>,
    /// How long unwrapped data keys are cached.
    pub key_cache_ttl: Duration,
    /// Whether deleting a tenant takes a second operator.
    pub deletion_requires_second_operator: bool,
    /// Most MCP sessions held at once.
    pub mcp_max_sessions: usize,
    /// Time between automatic refreshes of imported tools; zero disables them.
    pub mcp_refresh: Duration,
    /// Entries between signed checkpoints.
    pub checkpoint_every: u64,
    /// Longest time between signed checkpoints while the log grows.
    pub checkpoint_interval: Duration,
    /// How long an approval request waits.
    pub approval_ttl: Duration,
    /// How long the token vault keeps a value.
    pub token_retention: Duration,
    /// How the model gateway calls providers: timeouts, retries, circuit breaking.
    pub model_client: airlock_llm::client::ClientConfig,
    /// Actions a run may propose per minute.
    pub actions_per_run_per_minute: u32,
    /// Where new approval requests are announced, with the signing key.
    pub approval_webhook: Option<(String, SecretString)>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Internal details in 500 responses.
    pub verbose_errors: bool,
    /// SQL statement logging.
    pub log_sql: bool,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Configuration that could not be loaded or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or parsed (bad TOML, unknown key, wrong type).
    #[error("cannot read configuration: {0}")]
    Load(String),
    /// The configuration was read but is not valid; every problem is listed.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

/// Values that are well known, and so no secret at all.
const KNOWN_DEFAULT_SECRETS: &[&str] = &[
    "changeme",
    "change-me",
    "secret",
    "password",
    "airlock",
    "default",
    "development",
    "insecure",
    "replace-me-with-at-least-32-random-bytes",
];

/// Minimum length of a server secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Loads raw configuration from an optional TOML file, the process environment, and
/// command-line overrides.
pub fn load(file: Option<&Path>, overrides: &RawConfig) -> Result<RawConfig, ConfigError> {
    load_from(file, std::env::vars(), overrides)
}

/// As [`load`], with the environment given explicitly (for tests).
///
/// Each source is checked on its own before the sources are merged, so an unknown key or a
/// wrong type is reported with the file or variable it came from.
pub fn load_from(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &RawConfig,
) -> Result<RawConfig, ConfigError> {
    let mut merged = Table::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError::Load(format!("cannot read `{}`: {e}", file.display())))?;
        let table: Table =
            toml::from_str(&text).map_err(|e| ConfigError::Load(format!("`{}`: {e}", file.display())))?;
        check_layer(&table, &format!("`{}`", file.display()))?;
        merge(&mut merged, table);
    }
    let mut vars: Vec<(String, String)> =
        env.into_iter().filter(|(k, _)| k.starts_with("AIRLOCK_") && k != "AIRLOCK_CONFIG").collect();
    vars.sort();
    for (key, value) in vars {
        let Some(path) = key.strip_prefix("AIRLOCK_") else { continue };
        let (path, value) = match path.strip_suffix("_FILE") {
            Some(path) => {
                let content = std::fs::read_to_string(&value)
                    .map_err(|e| ConfigError::Load(format!("`{key}`: cannot read `{value}`: {e}")))?;
                let content = content.strip_suffix('\n').unwrap_or(&content);
                let content = content.strip_suffix('\r').unwrap_or(content);
                (path, toml::Value::String(content.to_owned()))
            }
            None => (path, env_value(&value)),
        };
        let table = nested(path, value);
        check_layer(&table, &format!("environment variable `{key}`"))?;
        merge(&mut merged, table);
    }
    match toml::Value::try_from(overrides) {
        Ok(toml::Value::Table(table)) => merge(&mut merged, table),
        Ok(_) => {}
        Err(e) => return Err(ConfigError::Load(format!("command line: {e}"))),
    }
    RawConfig::deserialize(merged).map_err(|e| ConfigError::Load(e.to_string()))
}

/// An environment value as TOML would read it (`8080` a number, `true` a boolean), and
/// otherwise as a string.
fn env_value(value: &str) -> toml::Value {
    if let Ok(n) = value.parse::<i64>() {
        return toml::Value::Integer(n);
    }
    match value {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(value.to_owned()),
    }
}

/// `SERVER__LISTEN` and a value → `{server = {listen = value}}`.
fn nested(path: &str, value: toml::Value) -> Table {
    let mut parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    let mut value = value;
    let last = parts.pop().unwrap_or_default();
    let mut table = Table::new();
    table.insert(last, value);
    while let Some(section) = parts.pop() {
        value = toml::Value::Table(table);
        table = Table::new();
        table.insert(section, value);
    }
    table
}

fn check_layer(table: &Table, source: &str) -> Result<(), ConfigError> {
    RawConfig::deserialize(table.clone()).map(|_| ()).map_err(|e| {
        let message = e.to_string();
        ConfigError::Load(format!("{source}: {}", message.trim()))
    })
}

/// Merges `layer` into `base`, tables recursively, other values replaced.
fn merge(base: &mut Table, layer: Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => merge(existing, incoming),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a secret is a well-known value or too uniform to be random.
fn weak_secret(secret: &str) -> Option<&'static str> {
    let lowered = secret.to_ascii_lowercase();
    if KNOWN_DEFAULT_SECRETS
        .iter()
        .any(|known| lowered == *known || lowered.trim_matches(|c: char| !c.is_alphanumeric()) == *known)
    {
        return Some("is a well-known default");
    }
    let distinct: std::collections::BTreeSet<u8> = secret.bytes().collect();
    if distinct.len() < 8 {
        return Some("uses fewer than 8 distinct characters, so it is not random");
    }
    None
}

impl RawConfig {
    /// Applies defaults and checks everything, reporting every problem at once.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mode = self.mode.unwrap_or_default();
        let production = mode == Mode::Production;

        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from("airlock-data"));

        let listen_text = self.server.listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen = match listen_text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                problems.push(format!(
                    "server.listen: `{listen_text}` is not an address and port such as `127.0.0.1:8080`"
                ));
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        };

        let public_url = match (self.public_url, production) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, false) => format!("http://{listen}"),
            (None, true) => {
                problems.push(
                    "public_url: required in production (the HTTPS URL clients reach Airlock at)".to_owned(),
                );
                String::new()
            }
        };
        let mut public_url_is_https = false;
        if !public_url.is_empty() {
            match public_url.parse::<http::Uri>() {
                Ok(uri) if uri.host().is_some() && matches!(uri.scheme_str(), Some("http" | "https")) => {
                    public_url_is_https = uri.scheme_str() == Some("https");
                    let loopback = uri.host().is_some_and(is_loopback_host);
                    if production && !public_url_is_https && !loopback {
                        problems.push(format!(
                            "public_url: `{public_url}` is plain http; production requires https (plain http is allowed only on loopback)"
                        ));
                    }
                }
                _ => problems.push(format!("public_url: `{public_url}` is not an http(s) URL")),
            }
        }

        let server_key = match self.secrets.server_key {
            Some(key) => {
                if key.len() < MIN_SECRET_BYTES {
                    problems.push(format!(
                        "secrets.server_key: {} bytes long; it must be at least {MIN_SECRET_BYTES} bytes",
                        key.len()
                    ));
                } else if let Some(why) = weak_secret(&key) {
                    problems.push(format!(
                        "secrets.server_key: {why}; generate one with `openssl rand -base64 48`"
                    ));
                }
                Some(SecretString::from(key))
            }
            None => {
                if production {
                    problems.push(
                        "secrets.server_key: required in production (set AIRLOCK_SECRETS__SERVER_KEY_FILE to a file holding at least 32 random bytes)".to_owned(),
                    );
                }
                None
            }
        };

        let key_provider = self.key_provider.spec(&data_dir, production, &mut problems);
        let key_cache_ttl = Duration::from_secs(self.key_provider.cache_ttl_secs.unwrap_or(60));
        if key_cache_ttl.is_zero() {
            problems.push("key_provider.cache_ttl_secs: must be at least 1".to_owned());
        }

        let log_format = match self.log.format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                problems
                    .push(format!("log.format: `{other}` is not a log format (expected `json` or `text`)"));
                LogFormat::Json
            }
        };
        let log_level = self.log.level.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            problems.push(format!("log.level: `{log_level}` is not a log filter"));
        }

        let verbose_errors = self.debug.verbose_errors.unwrap_or(false);
        let log_sql = self.debug.log_sql.unwrap_or(false);
        if production {
            if verbose_errors {
                problems.push(
                    "debug.verbose_errors: a debug option; production refuses to start with it on".to_owned(),
                );
            }
            if log_sql {
                problems
                    .push("debug.log_sql: a debug option; production refuses to start with it on".to_owned());
            }
        }

        let positive = |problems: &mut Vec<String>, name: &str, value: Option<u64>, default: u64| -> u64 {
            match value {
                Some(0) => {
                    problems.push(format!("{name}: must be greater than zero"));
                    default
                }
                Some(v) => v,
                None => default,
            }
        };
        let request_timeout =
            positive(&mut problems, "server.request_timeout_secs", self.server.request_timeout_secs, 30);
        let body_limit = positive(
            &mut problems,
            "server.body_limit_bytes",
            self.server.body_limit_bytes.map(|v| v as u64),
            1024 * 1024,
        );
        let shutdown_grace =
            positive(&mut problems, "server.shutdown_grace_secs", self.server.shutdown_grace_secs, 10);
        let session_lifetime =
            positive(&mut problems, "auth.session_lifetime_secs", self.auth.session_lifetime_secs, 12 * 3600);
        let session_idle =
            positive(&mut problems, "auth.session_idle_secs", self.auth.session_idle_secs, 30 * 60);
        let failed_auth = positive(
            &mut problems,
            "auth.failed_auth_per_minute",
            self.auth.failed_auth_per_minute.map(u64::from),
            30,
        );
        let login_attempts = positive(
            &mut problems,
            "auth.login_attempts_per_minute",
            self.auth.login_attempts_per_minute.map(u64::from),
            10,
        );
        let rps = positive(
            &mut problems,
            "auth.requests_per_second",
            self.auth.requests_per_second.map(u64::from),
            200,
        );
        let checkpoint_every =
            positive(&mut problems, "audit.checkpoint_every", self.audit.checkpoint_every, 1000);
        let checkpoint_interval = positive(
            &mut problems,
            "audit.checkpoint_interval_secs",
            self.audit.checkpoint_interval_secs,
            10,
        );
        let approval_ttl = positive(&mut problems, "approvals.ttl_secs", self.approvals.ttl_secs, 86_400);
        let token_retention = positive(
            &mut problems,
            "inspection.token_retention_secs",
            self.inspection.token_retention_secs,
            30 * 86_400,
        );
        let approval_webhook = match (self.approvals.webhook_url, self.approvals.webhook_secret) {
            (None, None) => None,
            (Some(url), Some(secret)) => {
                let https = url.starts_with("https://");
                let loopback = url
                    .parse::<http::Uri>()
                    .ok()
                    .and_then(|u| u.host().map(is_loopback_host))
                    .unwrap_or(false);
                if !(https || (url.starts_with("http://") && (loopback || !production))) {
                    problems.push(format!("approvals.webhook_url: `{url}` must be https (plain http only on loopback, or in dev mode)"));
                }
                if secret.len() < MIN_SECRET_BYTES {
                    problems
                        .push(format!("approvals.webhook_secret: must be at least {MIN_SECRET_BYTES} bytes"));
                }
                Some((url, SecretString::from(secret)))
            }
            (Some(_), None) => {
                problems.push("approvals.webhook_secret: required with approvals.webhook_url".to_owned());
                None
            }
            (None, Some(_)) => {
                problems.push("approvals.webhook_url: required with approvals.webhook_secret".to_owned());
                None
            }
        };
        let per_run = positive(
            &mut problems,
            "actions.per_run_per_minute",
            self.actions.per_run_per_minute.map(u64::from),
            600,
        );
        let capacity = positive(
            &mut problems,
            "auth.limiter_capacity",
            self.auth.limiter_capacity.map(|v| v as u64),
            100_000,
        );

        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Config {
            mode,
            data_dir,
            public_url,
            public_url_is_https,
            listen,
            request_timeout: Duration::from_secs(request_timeout),
            body_limit_bytes: usize::try_from(body_limit).unwrap_or(usize::MAX),
            shutdown_grace: Duration::from_secs(shutdown_grace),
            session_lifetime: Duration::from_secs(session_lifetime),
            session_idle: Duration::from_secs(session_idle),
            failed_auth_per_minute: u32::try_from(failed_auth).unwrap_or(u32::MAX),
            login_attempts_per_minute: u32::try_from(login_attempts).unwrap_or(u32::MAX),
            requests_per_second: u32::try_from(rps).unwrap_or(u32::MAX),
            limiter_capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            server_key,
            key_provider,
            previous_key_providers: self.key_provider.previous.clone(),
            key_cache_ttl,
            deletion_requires_second_operator: self
                .tenants
                .deletion_requires_second_operator
                .unwrap_or(false),
            mcp_max_sessions: self.mcp.max_sessions.unwrap_or(10_000).max(1),
            mcp_refresh: Duration::from_secs(self.mcp.refresh_secs.unwrap_or(300)),
            checkpoint_every,
            checkpoint_interval: Duration::from_secs(checkpoint_interval),
            approval_ttl: Duration::from_secs(approval_ttl),
            token_retention: Duration::from_secs(token_retention),
            model_client: self.models.client_config(),
            actions_per_run_per_minute: u32::try_from(per_run).unwrap_or(u32::MAX),
            approval_webhook,
            log_format,
            log_level,
            verbose_errors,
            log_sql,
        })
    }
}

impl Config {
    /// Configuration for tests and embedding: dev mode, the given data directory, an
    /// ephemeral loopback port.
    #[must_use]
    pub fn for_data_dir(data_dir: &Path) -> Self {
        let raw = RawConfig {
            data_dir: Some(data_dir.to_path_buf()),
            server: RawServer { listen: Some("127.0.0.1:0".into()), ..RawServer::default() },
            ..RawConfig::default()
        };
        match raw.validate() {
            Ok(config) => config,
            Err(_) => unreachable_default(),
        }
    }

    /// The server key's bytes, if configured.
    #[must_use]
    pub fn server_key_bytes(&self) -> Option<Vec<u8>> {
        self.server_key.as_ref().map(|k| k.expose_secret().as_bytes().to_vec())
    }
}

#[expect(clippy::panic, reason = "the built-in defaults are valid; a test covers it")]
fn unreachable_default() -> Config {
    panic!("the default configuration failed validation")
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
