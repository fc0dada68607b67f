//! Execution: one tool call, from a connector's settings and the agent's arguments to a
//! verified outcome.
//!
//! The executor fills the URL template (each argument percent-encoded so it stays inside its
//! path segment), attaches the credential, sends the request with a per-attempt timeout,
//! retries only where repeating is safe, and decides from the upstream's answer whether the
//! call `succeeded`, is `unverified` or `failed`. It guarantees that no secret it used (token,
//! password, API key, OAuth client secret or access token) appears in the output or the reason
//! it returns, even when the upstream echoes the request back, and it never follows a redirect,
//! so a credential is only ever sent to the connector's own host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connector::{BodyMapping, Connector, HttpConnector, HttpMethod, McpConnector};

/// How many times one call may be sent, the first included.
const MAX_ATTEMPTS: u32 = 3;
/// How long to wait for a TCP (and TLS) connection to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response body read; a bigger one is refused, not truncated, because a
/// truncated JSON document could not be verified anyway.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// The most of a non-JSON response body handed back to the agent.
const MAX_TEXT_OUTPUT_BYTES: usize = 64 << 10;
/// The largest token-endpoint answer read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 << 10;
/// The longest wait a `Retry-After` header can impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The backoff before the second attempt; each later one waits four times longer.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// An OAuth access token is used until this long before the token endpoint said it expires.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// No access token is cached longer than this, whatever the token endpoint said.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// What replaces a secret found in the upstream's answer.
const REDACTED: &str = "[REDACTED]";

/// Everything but the unreserved characters of RFC 3986: an argument so encoded cannot add a
/// path segment, a query or a fragment to the URL.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Form encoding for the OAuth client id and secret in HTTP Basic client authentication
/// (RFC 6749 §2.3.1).
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'*');

/// The executor could not be constructed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The HTTP client could not be built (for instance, no TLS roots could be loaded).
    #[error("the HTTP client could not be built")]
    Client(#[source] reqwest::Error),
}

/// An upstream MCP server's tools could not be listed. No variant carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpListError {
    /// The server definition is not usable.
    #[error("{0}")]
    Invalid(String),
    /// The credential cannot be used with the server.
    #[error("{0}")]
    Credential(String),
    /// The server did not answer in time.
    #[error("the tool server did not answer within {0} ms")]
    Timeout(u64),
    /// The server could not be started, reached or listed.
    #[error("{0}")]
    Upstream(String),
}

/// A credential's secret material, opened by the caller from the tenant's sealed store and
/// handed straight to the executor. Never printed by `Debug`, never serialized back out.
///
/// `material` is the JSON the credential was stored as: `{"token"}` for `bearer`,
/// `{"username", "password"}` for `basic`, `{"header", "value"}` for `api_key_header`, and
/// `{"token_url", "client_id", "client_secret", "scope"}` for `oauth_client_credentials`.
pub struct CredentialMaterial {
    kind: String,
    material: SecretBox<[u8]>,
}

impl CredentialMaterial {
    /// Wraps a credential of `kind` (`bearer`, `basic`, `api_key_header` or
    /// `oauth_client_credentials`) and its secret material.
    #[must_use]
    pub fn new(kind: &str, material: SecretBox<[u8]>) -> Self {
        Self { kind: kind.to_owned(), material }
    }

    /// The credential's kind.
    #[must_use]
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

impl std::fmt::Debug for CredentialMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialMaterial").field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeStatus {
    /// The upstream answered with an expected status and, where one is required, a returned id.
    Succeeded,
    /// The upstream may have acted, but its answer does not prove it: the expected status
    /// without the required returned id, or no answer at all to a call with side effects.
    Unverified,
    /// The call did not happen, or the upstream said it did not succeed.
    Failed,
}

impl OutcomeStatus {
    /// The status as it is written in the API and the audit log.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Unverified => "unverified",
            Self::Failed => "failed",
        }
    }
}

/// The result of one call, attempts included. Holds no secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Whether the call succeeded, as far as the upstream's answer shows.
    pub status: OutcomeStatus,
    /// The HTTP status of the last answer, if there was one.
    pub http_status: Option<u16>,
    /// How many requests were sent (or tried); 0 when the call stopped before any.
    pub attempts: u32,
    /// What the agent gets back: the response body's JSON (for an expected status, the part
    /// the connector's `response_pointer` selects; `null` when it selects nothing), or a
    /// string holding the first 64 KiB of a body that is not JSON. Secrets are replaced by
    /// `[REDACTED]`.
    pub output: Value,
    /// The id the upstream returned, read at the connector's `returned_id_pointer`.
    pub returned_id: Option<String>,
    /// A short explanation of the status, for people and the audit log.
    pub reason: String,
    /// How long the call took, retries and waits included.
    pub duration_ms: u64,
}

impl Outcome {
    fn failed(reason: impl Into<String>, attempts: u32) -> Self {
        Self {
            status: OutcomeStatus::Failed,
            http_status: None,
            attempts,
            output: Value::Null,
            returned_id: None,
            reason: reason.into(),
            duration_ms: 0,
        }
    }
}

/// Runs tool calls. Cheap to clone: clones share one HTTP client (and its connection pool),
/// one cache of OAuth access tokens, and one pool of sessions with upstream MCP servers.
///
/// The token cache is keyed by a digest of the token URL, client id, client secret and scope,
/// so a cached token is only ever reused by a caller holding that same client secret, which
/// could have obtained the token itself: nothing crosses from one tenant's credential to
/// another's.
#[derive(Clone)]
pub struct Executor {
    client: reqwest::Client,
    tokens: Arc<Mutex<HashMap<airlock_crypto::Digest, CachedToken>>>,
    /// Open sessions with upstream MCP servers, one per (tenant, server).
    mcp: airlock_mcp::client::ClientPool,
}

struct CachedToken {
    token: SecretString,
    expires_at: Instant,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.tokens.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("Executor")
            .field("cached_tokens", &cached)
            .field("mcp_sessions", &self.mcp.open_sessions())
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor with one shared HTTP client that never follows redirects (a redirect is an
    /// outcome, not something to chase with credentials) and gives up connecting after 5 s.
    pub fn new() -> Result<Self, ExecError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ExecError::Client)?;
        Ok(Self { client, tokens: Arc::default(), mcp: airlock_mcp::client::ClientPool::default() })
    }

    /// Executes one call. `idempotency_key` is sent in the connector's `idempotency_header`,
    /// when it has one, on every attempt. An MCP server gets a session of its own for the call.
    pub async fn execute(
        &self,
        connector: &Connector,
        arguments: &Value,
        credential: Option<&CredentialMaterial>,
        idempotency_key: &str,
    ) -> Outcome {
        self.execute_in(None, connector, arguments, credential, idempotency_key).await
    }

    /// Executes one call for `tenant`, as [`Executor::execute`], except that an MCP server's
    /// session is kept open for the tenant's next calls (never shared with another tenant).
    pub async fn execute_for_tenant(
        &self,
        tenant: &str,
        connector: &Connector,
        arguments: &Value,
        credential: Option<&CredentialMaterial>,
        idempotency_key: &str,
    ) -> Outcome {
        self.execute_in(Some(tenant), connector, arguments, credential, idempotency_key).await
    }

    async fn execute_in(
        &self,
        tenant: Option<&str>,
        connector: &Connector,
        arguments: &Value,
        credential: Option<&CredentialMaterial>,
        idempotency_key: &str,
    ) -> Outcome {
        let started = Instant::now();
        let mut outcome = match connector {
            Connector::Http(http) => self.execute_http(http, arguments, credential, idempotency_key).await,
            Connector::Mcp(mcp) => self.execute_mcp(tenant, mcp, arguments, credential).await,
        };
        outcome.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        outcome
    }

    async fn execute_http(
        &self,
        http: &HttpConnector,
        arguments: &Value,
        credential: Option<&CredentialMaterial>,
        idempotency_key: &str,
    ) -> Outcome {
        let url = match fill_url(&http.url, arguments) {
            Ok(url) => url,
            Err(reason) => return Outcome::failed(reason, 0),
        };
        let timeout = Duration::from_millis(http.timeout_ms);
        let mut scrubber = Scrubber::default();
        let auth = match credential {
            None => None,
            Some(credential) => match self.authorization(credential, timeout, &mut scrubber).await {
                Ok(auth) => Some(auth),
                Err(reason) => return Outcome::failed(scrubber.text(&reason), 0),
            },
        };
        let headers = match request_headers(http, idempotency_key, auth.as_ref()) {
            Ok(headers) => headers,
            Err(reason) => return Outcome::failed(reason, 0),
        };
        let body = match http.body {
            BodyMapping::Arguments => match serde_json::to_vec(arguments) {
                Ok(body) => Some(body),
                Err(_) => return Outcome::failed("the arguments could not be encoded as JSON", 0),
            },
            BodyMapping::None => None,
        };
        let retry_safe = http.method.is_idempotent() || http.idempotency_header.is_some();

        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut request = self.client.request(method(http.method), url.clone()).headers(headers.clone());
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let answer = match tokio::time::timeout(timeout, send(request)).await {
                Ok(answer) => answer,
                Err(_) => Answer::TimedOut,
            };
            let verdict = judge(http, answer, &scrubber);
            match verdict.retry_after {
                Some(wait) if retry_safe && attempts < MAX_ATTEMPTS => {
                    tokio::time::sleep(retry_delay(attempts, wait)).await;
                }
                _ => {
                    if verdict.outcome.http_status == Some(401)
                        && let Some(Authorization { cache_key: Some(key), .. }) = &auth
                    {
                        // A refused access token may have been revoked: the next call fetches
                        // a fresh one.
                        self.tokens.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
                    }
                    let mut outcome = verdict.outcome;
                    outcome.attempts = attempts;
                    outcome.reason = scrubber.text(&outcome.reason);
                    return outcome;
                }
            }
        }
    }

    /// Calls a tool of an upstream MCP server, once (an MCP call carries no idempotency key, so
    /// it is never retried). The credential, a bearer token or an OAuth client whose access
    /// token is used, goes to a streamable-HTTP server as `Authorization: Bearer` and to a
    /// stdio server in the environment variable its spec names.
    async fn execute_mcp(
        &self,
        tenant: Option<&str>,
        mcp: &McpConnector,
        arguments: &Value,
        credential: Option<&CredentialMaterial>,
    ) -> Outcome {
        use airlock_mcp::client::{McpClientError, UpstreamSpec};

        let timeout = Duration::from_millis(mcp.server.timeout_ms());
        let mut scrubber = Scrubber::default();
        let token = match credential {
            None => None,
            Some(credential) => match self.mcp_token(credential, timeout, &mut scrubber).await {
                Ok(token) => Some(token),
                Err(reason) => return Outcome::failed(scrubber.text(&reason), 0),
            },
        };
        if let (Some(_), UpstreamSpec::Stdio(stdio)) = (&token, &mcp.server)
            && stdio.credential_env.is_none()
        {
            return Outcome::failed(
                "the tool has a credential but its stdio server names no `credential_env` to pass it in",
                0,
            );
        }
        let result = match tenant {
            Some(tenant) => {
                self.mcp.call_tool(tenant, &mcp.server, token.as_ref(), &mcp.tool, arguments.clone()).await
            }
            None => {
                airlock_mcp::client::call_tool(&mcp.server, token.as_ref(), &mcp.tool, arguments.clone())
                    .await
            }
        };
        let mut outcome = match result {
            Ok(output) if !output.is_error => Outcome {
                status: OutcomeStatus::Succeeded,
                http_status: None,
                attempts: 1,
                output: scrubber.json(output.content),
                returned_id: None,
                reason: "the tool server returned a result".into(),
                duration_ms: 0,
            },
            Ok(output) => {
                let text: String = output
                    .content
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|block| block.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" ");
                Outcome {
                    output: scrubber.json(output.content),
                    ..Outcome::failed(format!("the tool reported an error: {}", bounded(&text)), 1)
                }
            }
            // The call was sent and no answer came: the upstream may have acted.
            Err(error @ (McpClientError::Closed | McpClientError::Timeout(_))) => {
                Outcome { status: OutcomeStatus::Unverified, ..Outcome::failed(error.to_string(), 1) }
            }
            Err(error) => Outcome::failed(error.to_string(), 1),
        };
        outcome.reason = scrubber.text(&outcome.reason);
        outcome
    }

    /// Lists an upstream MCP server's tools, with the credential its tools will use (so a
    /// server that wants authentication for `tools/list` gets it). The error names no secret.
    pub async fn list_mcp_tools(
        &self,
        server: &airlock_mcp::client::UpstreamSpec,
        credential: Option<&CredentialMaterial>,
    ) -> Result<Vec<airlock_mcp::client::ImportedTool>, McpListError> {
        let timeout = Duration::from_millis(server.timeout_ms());
        let mut scrubber = Scrubber::default();
        let token = match credential {
            None => None,
            Some(credential) => Some(
                self.mcp_token(credential, timeout, &mut scrubber)
                    .await
                    .map_err(|reason| McpListError::Credential(scrubber.text(&reason)))?,
            ),
        };
        airlock_mcp::client::list_tools(server, token.as_ref()).await.map_err(|e| match e {
            airlock_mcp::client::McpClientError::Timeout(ms) => McpListError::Timeout(ms),
            airlock_mcp::client::McpClientError::InvalidSpec(m) => McpListError::Invalid(scrubber.text(&m)),
            other => McpListError::Upstream(scrubber.text(&other.to_string())),
        })
    }

    /// The token an MCP server receives, registered with `scrubber`.
    async fn mcp_token(
        &self,
        credential: &CredentialMaterial,
        timeout: Duration,
        scrubber: &mut Scrubber,
    ) -> Result<SecretString, String> {
        match self.bearer_token(credential, timeout, scrubber).await? {
            Some((token, _)) => Ok(token),
            None => Err(format!(
                "credentials of kind `{}` cannot be used with an MCP tool server (use `bearer` or `oauth_client_credentials`)",
                bounded(&credential.kind)
            )),
        }
    }

    /// For a `bearer` or `oauth_client_credentials` credential, the bearer token (with the
    /// token cache's key for OAuth), every secret registered with `scrubber`; `None` for
    /// other kinds.
    async fn bearer_token(
        &self,
        credential: &CredentialMaterial,
        timeout: Duration,
        scrubber: &mut Scrubber,
    ) -> Result<Option<(SecretString, Option<airlock_crypto::Digest>)>, String> {
        // Reviewers: the credential's material is opened here for bearer tokens.
        let material = credential.material.expose_secret();
        // Parse errors are never shown: serde's messages can quote the input.
        let invalid = || format!("the credential is not a valid `{}` credential", bounded(&credential.kind));
        match credential.kind.as_str() {
            "bearer" => {
                let m: BearerMaterial = serde_json::from_slice(material).map_err(|_| invalid())?;
                scrubber.add(m.token.expose_secret());
                Ok(Some((m.token, None)))
            }
            "oauth_client_credentials" => {
                let m: OauthMaterial = serde_json::from_slice(material).map_err(|_| invalid())?;
                scrubber.add(m.client_secret.expose_secret());
                let (token, cache_key) = self.access_token(&m, timeout, scrubber).await?;
                scrubber.add(token.expose_secret());
                Ok(Some((token, Some(cache_key))))
            }
            _ => Ok(None),
        }
    }

    /// Opens the credential into the header that carries it, registering every secret value
    /// with `scrubber`. The error is a reason that names no secret.
    async fn authorization(
        &self,
        credential: &CredentialMaterial,
        timeout: Duration,
        scrubber: &mut Scrubber,
    ) -> Result<Authorization, String> {
        // Reviewers: the credential's material is opened here, and in `bearer_token`.
        let material = credential.material.expose_secret();
        // Parse errors are never shown: serde's messages can quote the input.
        let invalid = || format!("the credential is not a valid `{}` credential", bounded(&credential.kind));
        if let Some((token, cache_key)) = self.bearer_token(credential, timeout, scrubber).await? {
            return Ok(Authorization {
                cache_key,
                ..Authorization::new(header::AUTHORIZATION, bearer(&token)?)
            });
        }
        match credential.kind.as_str() {
            "basic" => {
                let m: BasicMaterial = serde_json::from_slice(material).map_err(|_| invalid())?;
                let encoded = SecretString::from(BASE64.encode(format!(
                    "{}:{}",
                    m.username.expose_secret(),
                    m.password.expose_secret()
                )));
                scrubber.add(m.password.expose_secret());
                scrubber.add(encoded.expose_secret());
                let value = sensitive(&format!("Basic {}", encoded.expose_secret()))?;
                Ok(Authorization::new(header::AUTHORIZATION, value))
            }
            "api_key_header" => {
                let m: ApiKeyMaterial = serde_json::from_slice(material).map_err(|_| invalid())?;
                let name = HeaderName::from_bytes(m.header.as_bytes()).map_err(|_| invalid())?;
                scrubber.add(m.value.expose_secret());
                Ok(Authorization::new(name, sensitive(m.value.expose_secret())?))
            }
            other => Err(format!("credentials of kind `{}` are not supported", bounded(other))),
        }
    }

    /// An access token for the client, from the cache or the token endpoint (OAuth 2.0 client
    /// credentials grant, RFC 6749 §4.4, with HTTP Basic client authentication).
    async fn access_token(
        &self,
        oauth: &OauthMaterial,
        timeout: Duration,
        scrubber: &mut Scrubber,
    ) -> Result<(SecretString, airlock_crypto::Digest), String> {
        let key = token_cache_key(oauth);
        let now = Instant::now();
        {
            let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
            tokens.retain(|_, cached| cached.expires_at > now);
            if let Some(cached) = tokens.get(&key) {
                return Ok((cached.token.clone(), key));
            }
        }

        let refused = |why: &str| format!("the credential could not be exchanged for an access token: {why}");
        let url = reqwest::Url::parse(&oauth.token_url).map_err(|_| refused("the token URL is not valid"))?;
        let client_auth = SecretString::from(BASE64.encode(format!(
            "{}:{}",
            utf8_percent_encode(oauth.client_id.expose_secret(), FORM),
            utf8_percent_encode(oauth.client_secret.expose_secret(), FORM),
        )));
        scrubber.add(client_auth.expose_secret());
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = oauth.scope.as_deref().filter(|s| !s.is_empty()) {
            form.push(("scope", scope));
        }
        let request = self
            .client
            .post(url)
            .header(header::AUTHORIZATION, sensitive(&format!("Basic {}", client_auth.expose_secret()))?)
            .header(header::ACCEPT, "application/json")
            .form(&form);
        let answer =
            match tokio::time::timeout(timeout, send_limited(request, MAX_TOKEN_RESPONSE_BYTES)).await {
                Ok(answer) => answer,
                Err(_) => Answer::TimedOut,
            };
        let body = match answer {
            Answer::Response { status, body, .. } if (200..300).contains(&status) => body,
            Answer::Response { status, .. } | Answer::TooLarge { status } => {
                return Err(refused(&format!("the token endpoint answered status {status}")));
            }
            Answer::TimedOut => {
                return Err(refused(&format!(
                    "the token endpoint timed out after {} ms",
                    timeout.as_millis()
                )));
            }
            Answer::Unreachable(why) | Answer::Broken(why) => {
                return Err(refused(&format!("the token endpoint could not be reached ({why})")));
            }
        };
        let response: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| refused("the token endpoint's answer is not a token response"))?;
        if response.access_token.expose_secret().is_empty() {
            return Err(refused("the token endpoint returned an empty access token"));
        }
        if let Some(kind) = response.token_type.as_deref().filter(|t| !t.eq_ignore_ascii_case("bearer")) {
            return Err(refused(&format!("token type `{}` is not supported", bounded(kind))));
        }
        let lifetime = response
            .expires_in
            .as_ref()
            .and_then(seconds)
            .map(|s| Duration::from_secs(s).min(MAX_TOKEN_LIFETIME));
        if let Some(usable) =
            lifetime.and_then(|l| l.checked_sub(TOKEN_EXPIRY_MARGIN)).filter(|u| !u.is_zero())
            && let Some(expires_at) = now.checked_add(usable)
        {
            let cached = CachedToken { token: response.access_token.clone(), expires_at };
            self.tokens.lock().unwrap_or_else(PoisonError::into_inner).insert(key, cached);
        }
        Ok((response.access_token, key))
    }
}

#[derive(Deserialize)]
struct BearerMaterial {
    token: SecretString,
}

#[derive(Deserialize)]
struct BasicMaterial {
    username: SecretString,
    password: SecretString,
}

#[derive(Deserialize)]
struct ApiKeyMaterial {
    header: String,
    value: SecretString,
}

#[derive(Deserialize)]
struct OauthMaterial {
    token_url: String,
    client_id: SecretString,
    client_secret: SecretString,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    #[serde(default)]
    token_type: Option<String>,
    /// Seconds; some token endpoints send it as a string.
    #[serde(default)]
    expires_in: Option<Value>,
}

/// The header carrying a credential, and for an OAuth token where it is cached.
struct Authorization {
    name: HeaderName,
    value: HeaderValue,
    cache_key: Option<airlock_crypto::Digest>,
}

impl Authorization {
    fn new(name: HeaderName, value: HeaderValue) -> Self {
        Self { name, value, cache_key: None }
    }
}

fn bearer(token: &SecretString) -> Result<HeaderValue, String> {
    sensitive(&format!("Bearer {}", token.expose_secret()))
}

/// A header value the HTTP client must treat as secret (never indexed by HTTP/2 header
/// compression, never shown by its `Debug`).
fn sensitive(value: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| "the credential cannot be sent in an HTTP header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// The token cache's key: the four parts, each preceded by its length so no two different
/// credentials can share a key.
fn token_cache_key(oauth: &OauthMaterial) -> airlock_crypto::Digest {
    let scope = oauth.scope.as_deref().unwrap_or_default();
    let parts = [
        oauth.token_url.as_bytes(),
        oauth.client_id.expose_secret().as_bytes(),
        oauth.client_secret.expose_secret().as_bytes(),
        scope.as_bytes(),
    ];
    let lengths = parts.map(|p| (p.len() as u64).to_be_bytes());
    let mut framed: Vec<&[u8]> = Vec::with_capacity(8);
    for (length, part) in lengths.iter().zip(parts) {
        framed.push(length);
        framed.push(part);
    }
    airlock_crypto::sha256_parts(&framed)
}

/// A non-negative whole number of seconds, given as a JSON number or string.
fn seconds(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Fills the URL template's `{placeholders}` from the top-level arguments. Each value is
/// percent-encoded as a path segment, so it can neither add a segment, a query or a fragment,
/// nor (refused here) make a `.` or `..` segment that the URL parser would resolve away.
fn fill_url(template: &str, arguments: &Value) -> Result<reqwest::Url, String> {
    let mut filled = String::with_capacity(template.len());
    let mut rest = template;
    // Placeholders before the template's own `?` or `#` fill the path.
    let mut in_path = true;
    while let Some(open) = rest.find('{') {
        let (literal, after) = rest.split_at_checked(open).unwrap_or((rest, ""));
        in_path &= !literal.contains(['?', '#']);
        filled.push_str(literal);
        let after = after.get(1..).unwrap_or_default();
        let Some(close) = after.find('}') else {
            return Err("the connector's URL template has an unclosed `{`".into());
        };
        let name = after.get(..close).unwrap_or_default();
        let value = match arguments.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            None | Some(Value::Null) => {
                return Err(format!("the argument `{}` is missing: the URL needs it", bounded(name)));
            }
            Some(Value::Array(_) | Value::Object(_)) => {
                return Err(format!(
                    "the argument `{}` must be a string, number or boolean to go in the URL",
                    bounded(name)
                ));
            }
        };
        if in_path && value.is_empty() {
            return Err(format!(
                "the argument `{}` is empty: it cannot fill a URL path segment",
                bounded(name)
            ));
        }
        filled.extend(utf8_percent_encode(&value, SEGMENT));
        rest = after.get(close + 1..).unwrap_or_default();
    }
    filled.push_str(rest);

    let path = filled
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').and_then(|slash| rest.get(slash..)))
        .unwrap_or_default();
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path.split('/').any(|segment| {
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        decoded == "." || decoded == ".."
    }) {
        return Err("the arguments would put a `.` or `..` segment in the URL path".into());
    }
    reqwest::Url::parse(&filled).map_err(|_| "the arguments do not make a valid URL".into())
}

/// The request's headers: the connector's, the idempotency key, and the credential's (which
/// wins over a connector header of the same name).
fn request_headers(
    http: &HttpConnector,
    idempotency_key: &str,
    auth: Option<&Authorization>,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if http.body == BodyMapping::Arguments {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    for (name, value) in &http.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{}` is not a header name", bounded(name)))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header `{name}` cannot be sent"))?;
        headers.insert(name, value);
    }
    if let Some(name) = &http.idempotency_header {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{}` is not a header name", bounded(name)))?;
        if idempotency_key.is_empty() {
            return Err("this connector sends an idempotency key, and none was given".into());
        }
        let value = HeaderValue::from_str(idempotency_key)
            .map_err(|_| "the idempotency key cannot be sent in an HTTP header".to_owned())?;
        headers.insert(name, value);
    }
    if let Some(auth) = auth {
        headers.insert(auth.name.clone(), auth.value.clone());
    }
    Ok(headers)
}

fn method(method: HttpMethod) -> reqwest::Method {
    match method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
    }
}

/// What one attempt got back.
enum Answer {
    /// A complete answer.
    Response { status: u16, retry_after: Option<Duration>, body: Vec<u8> },
    /// An answer whose body is over the limit.
    TooLarge { status: u16 },
    /// No complete answer within the timeout.
    TimedOut,
    /// No connection: the request never left.
    Unreachable(String),
    /// The exchange broke after the connection was made.
    Broken(String),
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    send_limited(request, MAX_RESPONSE_BYTES).await
}

async fn send_limited(request: reqwest::RequestBuilder, limit: usize) -> Answer {
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) if e.is_connect() => return Answer::Unreachable(describe(&e)),
        Err(e) => return Answer::Broken(describe(&e)),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Answer::TooLarge { status };
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len().saturating_add(chunk.len()) > limit {
                    return Answer::TooLarge { status };
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Answer::Response { status, retry_after, body },
            Err(e) => return Answer::Broken(describe(&e)),
        }
    }
}

/// The innermost cause of a transport error (such as "Connection refused (os error 111)"),
/// which says more than reqwest's own summary and never holds the URL.
fn describe(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    bounded(&cause.to_string())
}

/// One attempt's outcome, and whether it may be retried (after at least how long).
struct Verdict {
    outcome: Outcome,
    retry_after: Option<Duration>,
}

impl Verdict {
    fn done(outcome: Outcome) -> Self {
        Self { outcome, retry_after: None }
    }
}

/// Decides what one attempt's answer means.
fn judge(http: &HttpConnector, answer: Answer, scrubber: &Scrubber) -> Verdict {
    // Without an answer, a call with side effects may still have happened upstream.
    let uncertain =
        if http.method == HttpMethod::Get { OutcomeStatus::Failed } else { OutcomeStatus::Unverified };
    let may_have_acted =
        if uncertain == OutcomeStatus::Unverified { "; the upstream may have acted" } else { "" };
    let (status, retry_after, body) = match answer {
        Answer::Response { status, retry_after, body } => (status, retry_after, body),
        Answer::TooLarge { status } => {
            let mut outcome = Outcome::failed("the response is too large (over 1 MiB)", 0);
            outcome.http_status = Some(status);
            if expected(http, status) {
                outcome.status = uncertain;
                outcome.reason = format!("status {status} but the response is too large (over 1 MiB)");
            }
            return Verdict::done(outcome);
        }
        Answer::TimedOut => {
            let mut outcome =
                Outcome::failed(format!("timed out after {} ms{may_have_acted}", http.timeout_ms), 0);
            outcome.status = uncertain;
            return Verdict { outcome, retry_after: Some(Duration::ZERO) };
        }
        Answer::Unreachable(why) => {
            let outcome = Outcome::failed(format!("could not connect to the upstream ({why})"), 0);
            return Verdict { outcome, retry_after: Some(Duration::ZERO) };
        }
        Answer::Broken(why) => {
            let mut outcome =
                Outcome::failed(format!("the exchange with the upstream broke ({why}){may_have_acted}"), 0);
            outcome.status = uncertain;
            return Verdict { outcome, retry_after: Some(Duration::ZERO) };
        }
    };

    let document = parse_body(&body, scrubber);
    let mut outcome = Outcome {
        status: OutcomeStatus::Failed,
        http_status: Some(status),
        attempts: 0,
        output: Value::Null,
        returned_id: None,
        reason: format!("status {status}"),
        duration_ms: 0,
    };
    if !expected(http, status) {
        // An error body helps the agent understand the refusal; it is not narrowed by the
        // response pointer, which describes a successful answer.
        outcome.output = document.into_output();
        if (300..400).contains(&status) {
            outcome.reason = format!("status {status}: redirects are not followed");
        }
        let retry_after =
            (status == 429 || (500..600).contains(&status)).then(|| retry_after.unwrap_or(Duration::ZERO));
        return Verdict { outcome, retry_after };
    }

    match document {
        Document::Json(value) => {
            outcome.returned_id = http.returned_id_pointer.as_deref().and_then(|p| returned_id(&value, p));
            outcome.output = match http.response_pointer.as_deref() {
                Some(pointer) => value.pointer(pointer).cloned().unwrap_or(Value::Null),
                None => value,
            };
            match (&http.returned_id_pointer, &outcome.returned_id) {
                (None, _) => {
                    outcome.status = OutcomeStatus::Succeeded;
                }
                (Some(_), Some(id)) => {
                    outcome.status = OutcomeStatus::Succeeded;
                    outcome.reason = format!("status {status} and returned id `{}`", bounded(id));
                }
                (Some(pointer), None) => {
                    outcome.status = OutcomeStatus::Unverified;
                    outcome.reason = format!("status {status} but no returned id at `{}`", bounded(pointer));
                }
            }
        }
        Document::Empty => {
            if http.returned_id_pointer.is_some() {
                outcome.status = OutcomeStatus::Unverified;
                outcome.reason = format!("status {status} but the response is empty, so no returned id");
            } else {
                outcome.status = OutcomeStatus::Succeeded;
            }
        }
        Document::Text(text) => {
            outcome.output = Value::String(text);
            if http.returned_id_pointer.is_some() {
                outcome.status = OutcomeStatus::Unverified;
                outcome.reason = format!("status {status} but the response is not JSON, so no returned id");
            } else {
                outcome.status = OutcomeStatus::Succeeded;
                outcome.reason = format!("status {status}; the response is not JSON");
            }
        }
    }
    Verdict::done(outcome)
}

/// Whether the status means success for this connector.
fn expected(http: &HttpConnector, status: u16) -> bool {
    if http.expect_status.is_empty() {
        (200..300).contains(&status)
    } else {
        http.expect_status.contains(&status)
    }
}

/// A non-empty string or a number at `pointer`.
fn returned_id(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A response body, already scrubbed of secrets.
enum Document {
    Json(Value),
    Empty,
    /// Not JSON: the text (lossily decoded), truncated to 64 KiB.
    Text(String),
}

impl Document {
    fn into_output(self) -> Value {
        match self {
            Self::Json(value) => value,
            Self::Empty => Value::Null,
            Self::Text(text) => Value::String(text),
        }
    }
}

fn parse_body(body: &[u8], scrubber: &Scrubber) -> Document {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Document::Empty;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => Document::Json(scrubber.json(value)),
        Err(_) => {
            // Scrub before truncating, so a cut cannot leave part of a secret behind.
            let text = scrubber.text(&String::from_utf8_lossy(body));
            Document::Text(truncate(text, MAX_TEXT_OUTPUT_BYTES))
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The wait before attempt `attempt + 1`: exponential backoff (100 ms, 400 ms, …) with ±50 %
/// jitter, or the upstream's `Retry-After` (at most 5 s) when that is longer.
fn retry_delay(attempt: u32, retry_after: Duration) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(4u32.saturating_pow(attempt.saturating_sub(1)));
    let jitter = u32::from(u16::from_be_bytes(airlock_crypto::random_array::<2>()));
    // base × (0.5 + jitter / 65536), in [0.5, 1.5) × base.
    let jittered = (base / 2).saturating_add(base.saturating_mul(jitter) / 65_536);
    jittered.max(retry_after.min(MAX_RETRY_AFTER))
}

/// Replaces every secret used for a call wherever it shows up in what goes back out.
#[derive(Default)]
struct Scrubber {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<SecretString>,
}

impl Scrubber {
    fn add(&mut self, secret: &str) {
        if !secret.is_empty() {
            self.secrets.push(SecretString::from(secret));
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.expose_secret().len()));
        }
    }

    fn text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            let secret = secret.expose_secret();
            if text.contains(secret) {
                text = text.replace(secret, REDACTED);
            }
        }
        text
    }

    /// Every string in the document, object keys included.
    fn json(&self, value: Value) -> Value {
        if self.secrets.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.text(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.json(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (self.text(&k), self.json(v))).collect())
            }
            other => other,
        }
    }
}

fn bounded(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
#[path = "execute_tests.rs"]
mod tests;
