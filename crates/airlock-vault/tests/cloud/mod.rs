//! Fake Azure Key Vault and Google Cloud KMS servers for the provider tests: axum apps on a
//! loopback port that speak each service's wire format (and that of the token endpoints in front
//! of it) and enforce what the providers rely on: bearer tokens the fake issued and that have not
//! expired, key versions, disabled keys, denied identities, and for Cloud KMS the associated data
//! and the CRC32C integrity fields. Neither holds real keys: a wrap is AES-GCM under a key of the
//! fake's, which the providers cannot tell from the real thing because they treat wrapped values
//! as opaque.
//!
//! Each server stops when its guard drops.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_crypto::AeadKey;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// A loopback address nothing listens on.
pub fn closed_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// Serves `app` on a free loopback port; returns its address and the task.
async fn serve(app: Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, task)
}

fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The query's parameters, decoded.
fn query(uri: &Uri) -> HashMap<String, String> {
    form(uri.query().unwrap_or_default().as_bytes())
}

/// An `application/x-www-form-urlencoded` body's fields.
fn form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    reqwest::Url::parse(&format!("http://form/?{text}")).unwrap().query_pairs().into_owned().collect()
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Access tokens a fake issued, each valid until its expiry.
#[derive(Default)]
struct Tokens {
    issued: HashMap<String, Instant>,
    lifetime: u64,
    /// Tokens handed out.
    requests: usize,
    /// Requests refused for want of a valid token.
    refused: usize,
}

impl Tokens {
    fn issue(&mut self, prefix: &str) -> (String, u64) {
        let token = format!("{prefix}{}", airlock_crypto::random_hex(16));
        self.issued.insert(token.clone(), Instant::now() + Duration::from_secs(self.lifetime));
        self.requests += 1;
        (token, self.lifetime)
    }

    /// Whether `headers` carry a token that was issued and has not expired; counts refusals.
    fn admit(&mut self, headers: &HeaderMap) -> bool {
        let valid = bearer(headers)
            .and_then(|token| self.issued.get(token))
            .is_some_and(|until| Instant::now() < *until);
        if !valid {
            self.refused += 1;
        }
        valid
    }
}

// --- Azure Key Vault ---------------------------------------------------------------------------
//
// Wire formats from:
// - https://learn.microsoft.com/en-us/rest/api/keyvault/keys/wrap-key/wrap-key (and unwrap-key):
//   `POST {vaultBaseUrl}/keys/{key-name}/{key-version}/wrapkey?api-version=7.4`, body
//   `{"alg", "value": base64url}`, answer `KeyOperationResult` `{"kid", "value"}`;
// - https://learn.microsoft.com/en-us/azure/key-vault/general/rest-error-codes and the
//   `KeyVaultError` schema: `{"error": {"code", "message", "innererror": {"code"}}}`;
// - https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow:
//   `POST {authority}/{tenant}/oauth2/v2.0/token`, form `grant_type=client_credentials`,
//   `client_id`, `client_secret` or `client_assertion_type` + `client_assertion`, `scope`;
//   answer `{"token_type", "expires_in", "access_token"}`, errors `{"error", "error_description"}`;
// - https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/how-to-use-vm-token#get-a-token-using-http:
//   IMDS `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...`,
//   `Metadata: true`, answer with `expires_in` and `expires_on` as strings;
// - https://learn.microsoft.com/en-us/azure/app-service/overview-managed-identity#rest-endpoint-reference:
//   `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...`, `X-IDENTITY-HEADER`.

/// The tenant and client the fake Entra ID knows.
pub const TENANT: &str = "airlock-tenant";
pub const CLIENT_ID: &str = "airlock-app";

/// A fake Key Vault, with Entra ID's token endpoint, IMDS and App Service's identity endpoint
/// on the same address.
pub struct FakeKeyVault {
    /// The vault's address (also the authority host, IMDS and App Service endpoint).
    pub url: String,
    /// The client secret of [`CLIENT_ID`].
    pub secret: String,
    /// The federated token Entra ID accepts as [`CLIENT_ID`]'s assertion.
    pub federated_token: String,
    /// App Service's `IDENTITY_HEADER`.
    pub identity_header: String,
    state: Arc<Mutex<Vault>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKeyVault {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Vault {
    url: String,
    secret: String,
    federated_token: String,
    identity_header: String,
    tokens: Tokens,
    /// Each key's versions, oldest first.
    keys: BTreeMap<String, Vec<KeyVersion>>,
    /// Whether the client may use keys (its access policy or RBAC role).
    allowed: bool,
}

struct KeyVersion {
    id: String,
    key: AeadKey,
    enabled: bool,
}

impl FakeKeyVault {
    /// A vault with no keys, whose tokens last an hour.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(Vault {
            url: String::new(),
            secret: format!("kv-secret-{}", airlock_crypto::random_hex(12)),
            federated_token: format!("eyJ.federated.{}", airlock_crypto::random_hex(12)),
            identity_header: airlock_crypto::random_hex(16),
            tokens: Tokens { lifetime: 3600, ..Tokens::default() },
            keys: BTreeMap::new(),
            allowed: true,
        }));
        let app = Router::new().fallback(key_vault).with_state(state.clone());
        let (url, task) = serve(app).await;
        let mut vault = lock(&state);
        vault.url = url.clone();
        Self {
            url,
            secret: vault.secret.clone(),
            federated_token: vault.federated_token.clone(),
            identity_header: vault.identity_header.clone(),
            state: state.clone(),
            task,
        }
    }

    fn vault(&self) -> MutexGuard<'_, Vault> {
        lock(&self.state)
    }

    /// The variables of a client-secret credential against this fake.
    pub fn client_secret(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_TENANT_ID", TENANT.to_owned()),
            ("AZURE_CLIENT_ID", CLIENT_ID.to_owned()),
            ("AZURE_CLIENT_SECRET", self.secret.clone()),
            ("AZURE_AUTHORITY_HOST", self.url.clone()),
        ]
    }

    /// Creates the key `name`, or a new current version of it; returns the version.
    pub fn rotate(&self, name: &str) -> String {
        let id = airlock_crypto::random_hex(16);
        let version = KeyVersion { id: id.clone(), key: AeadKey::generate(), enabled: true };
        self.vault().keys.entry(name.to_owned()).or_default().push(version);
        id
    }

    /// Enables or disables every version of `name`.
    pub fn set_enabled(&self, name: &str, enabled: bool) {
        for version in self.vault().keys.get_mut(name).unwrap() {
            version.enabled = enabled;
        }
    }

    /// Deletes `name`; returns its versions, for [`FakeKeyVault::restore`].
    pub fn delete(&self, name: &str) -> Vec<KeyVersionBackup> {
        let versions = self.vault().keys.remove(name).unwrap();
        versions.into_iter().map(KeyVersionBackup).collect()
    }

    /// Restores a deleted key.
    pub fn restore(&self, name: &str, backup: Vec<KeyVersionBackup>) {
        self.vault().keys.insert(name.to_owned(), backup.into_iter().map(|b| b.0).collect());
    }

    /// Grants or revokes the client's permissions on keys.
    pub fn set_allowed(&self, allowed: bool) {
        self.vault().allowed = allowed;
    }

    /// How long tokens issued from now on last, in seconds.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.vault().tokens.lifetime = seconds;
    }

    /// Invalidates every token issued so far.
    pub fn revoke_tokens(&self) {
        self.vault().tokens.issued.clear();
    }

    /// Tokens issued, and requests refused for want of a valid token.
    pub fn token_counts(&self) -> (usize, usize) {
        let vault = self.vault();
        (vault.tokens.requests, vault.tokens.refused)
    }
}

/// A deleted key's versions.
pub struct KeyVersionBackup(KeyVersion);

fn vault_error(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(inner) = inner {
        error["innererror"] = json!({"code": inner});
    }
    reply(status, json!({ "error": error }))
}

fn entra_error(status: StatusCode, error: &str, description: &str) -> Response {
    reply(
        status,
        json!({"error": error, "error_description": description, "error_codes": [0], "trace_id": "0"}),
    )
}

async fn key_vault(
    State(state): State<Arc<Mutex<Vault>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut vault = lock(&state);
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) => entra_token(&mut vault, tenant, &body),
        (&Method::GET, ["metadata", "identity", "oauth2", "token"]) => {
            let query = query(&uri);
            if headers.get("metadata").is_none_or(|value| value != "true") {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Required metadata header not specified",
                );
            }
            if query.get("api-version").map(String::as_str) != Some("2018-02-01")
                || query.get("resource").map(String::as_str) != Some("https://vault.azure.net")
            {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "bad api-version or resource",
                );
            }
            let (token, lifetime) = vault.tokens.issue("imds-");
            // IMDS gives its numbers as strings.
            reply(
                StatusCode::OK,
                json!({"access_token": token, "client_id": CLIENT_ID, "expires_in": lifetime.to_string(),
                       "expires_on": (now_unix() + lifetime).to_string(), "resource": "https://vault.azure.net",
                       "token_type": "Bearer"}),
            )
        }
        (&Method::GET, ["msi", "token"]) => {
            let query = query(&uri);
            if headers.get("x-identity-header").is_none_or(|value| value != vault.identity_header.as_str())
                || query.get("api-version").map(String::as_str) != Some("2019-08-01")
                || query.get("resource").map(String::as_str) != Some("https://vault.azure.net")
            {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "bad identity header or query",
                );
            }
            let (token, lifetime) = vault.tokens.issue("app-service-");
            // App Service says only when the token expires.
            reply(
                StatusCode::OK,
                json!({"access_token": token, "expires_on": (now_unix() + lifetime).to_string(),
                       "resource": "https://vault.azure.net", "token_type": "Bearer", "client_id": CLIENT_ID}),
            )
        }
        (&Method::POST, ["keys", name, version, operation @ ("wrapkey" | "unwrapkey")]) => {
            let (name, version, operation) = (name.to_string(), version.to_string(), operation.to_string());
            key_operation(&mut vault, &uri, &headers, &body, &name, &version, &operation)
        }
        _ => vault_error(StatusCode::NOT_FOUND, "NotFound", "no such operation", None),
    }
}

fn entra_token(vault: &mut Vault, tenant: &str, body: &[u8]) -> Response {
    let form = form(body);
    let field = |name: &str| form.get(name).map(String::as_str);
    if tenant != TENANT {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") != Some("client_credentials") {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: unsupported grant type",
        );
    }
    if field("client_id") != Some(CLIENT_ID) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            &format!(
                "AADSTS700016: Application with identifier '{}' was not found in the directory.",
                field("client_id").unwrap_or("")
            ),
        );
    }
    if field("scope") != Some("https://vault.azure.net/.default") {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS70011: The provided value for scope is not valid.",
        );
    }
    let authenticated =
        match (field("client_secret"), field("client_assertion_type"), field("client_assertion")) {
            (Some(secret), None, None) => secret == vault.secret,
            (None, Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"), Some(assertion)) => {
                assertion == vault.federated_token
            }
            _ => false,
        };
    if !authenticated {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the \
             client secret value, not the client secret ID.",
        );
    }
    let (token, lifetime) = vault.tokens.issue("entra-");
    reply(
        StatusCode::OK,
        json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}),
    )
}

fn key_operation(
    vault: &mut Vault,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    name: &str,
    version: &str,
    operation: &str,
) -> Response {
    if !vault.tokens.admit(headers) {
        let mut response = vault_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token, or it has expired.",
            None,
        );
        let challenge =
            format!("Bearer authorization=\"{}/{TENANT}\", resource=\"https://vault.azure.net\"", vault.url);
        response.headers_mut().insert("www-authenticate", challenge.parse().unwrap());
        return response;
    }
    if query(uri).get("api-version").map(String::as_str) != Some("7.4") {
        return vault_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The specified version is not recognized.",
            None,
        );
    }
    let permission = if operation == "wrapkey" { "wrapKey" } else { "unwrapKey" };
    if !vault.allowed {
        return vault_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "The user, group or application 'appid={CLIENT_ID}' does not have keys {permission} permission on key vault 'fake'."
            ),
            Some("ForbiddenByPolicy"),
        );
    }
    let not_found = || {
        vault_error(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            &format!("A key with (name/id) {name} was not found in this key vault."),
            None,
        )
    };
    let Some(versions) = vault.keys.get(name) else { return not_found() };
    let found = if version.is_empty() { versions.last() } else { versions.iter().find(|v| v.id == version) };
    let Some(key) = found else { return not_found() };
    if !key.enabled {
        return vault_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("Operation {permission} is not allowed on a disabled key."),
            Some("KeyDisabled"),
        );
    }
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    if request["alg"] != "RSA-OAEP-256" {
        return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "Invalid algorithm.", None);
    }
    let Some(value) = request["value"].as_str().and_then(|value| URL_SAFE_NO_PAD.decode(value).ok()) else {
        return vault_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "Property value is not base64url.",
            None,
        );
    };
    let aad = format!("{name}/{}", key.id);
    let kid = format!("{}/keys/{name}/{}", vault.url, key.id);
    if operation == "wrapkey" {
        // RSA-OAEP-256 with a 2048-bit key wraps at most 190 bytes.
        if value.len() > 190 {
            return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "The value is too long.", None);
        }
        let wrapped = key.key.seal(aad.as_bytes(), &value);
        return reply(StatusCode::OK, json!({"kid": kid, "value": URL_SAFE_NO_PAD.encode(wrapped)}));
    }
    match key.key.open(aad.as_bytes(), &value) {
        Ok(unwrapped) => {
            reply(StatusCode::OK, json!({"kid": kid, "value": URL_SAFE_NO_PAD.encode(unwrapped)}))
        }
        Err(_) => vault_error(StatusCode::BAD_REQUEST, "BadParameter", "Decryption failed.", None),
    }
}

// --- Google Cloud KMS --------------------------------------------------------------------------
//
// Wire formats from:
// - https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/encrypt
//   and .../decrypt: `POST /v1/{name}:encrypt` with `plaintext`, `additionalAuthenticatedData`,
//   `plaintextCrc32c`, `additionalAuthenticatedDataCrc32c` (int64 as strings), answer `name`,
//   `ciphertext`, `ciphertextCrc32c`, `verifiedPlaintextCrc32c`,
//   `verifiedAdditionalAuthenticatedDataCrc32c`; decrypt with `ciphertext`, `ciphertextCrc32c`
//   and the same AAD fields, answer `plaintext`, `plaintextCrc32c`;
// - https://cloud.google.com/kms/docs/data-integrity-guidelines: a checksum that does not match
//   is INVALID_ARGUMENT; `verified*` flags are set when a checksum was received and checked;
// - https://cloud.google.com/apis/design/errors: `{"error": {"code", "message", "status"}}`;
// - https://cloud.google.com/compute/docs/access/authenticate-workloads#applications: the
//   metadata server's `GET /computeMetadata/v1/instance/service-accounts/default/token` with
//   `Metadata-Flavor: Google`, answer `{"access_token", "expires_in", "token_type"}`.

/// The project, location and key ring of the fake's keys.
pub const KEY_RING: &str = "projects/airlock-test/locations/global/keyRings/airlock";

/// A fake Cloud KMS, with a metadata server on the same address.
pub struct FakeCloudKms {
    /// The KMS endpoint (and the metadata server).
    pub url: String,
    state: Arc<Mutex<Kms>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCloudKms {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Kms {
    tokens: Tokens,
    /// Tokens minted elsewhere (`GOOGLE_OAUTH_ACCESS_TOKEN`) and accepted, forever.
    given: Vec<String>,
    keys: BTreeMap<String, CryptoKey>,
    /// Whether the service account may use keys.
    allowed: bool,
    /// How many answers to alter after their checksums were computed.
    corrupt: usize,
    /// Whether to ignore the request's checksums, as a server that predates them would.
    ignore_checksums: bool,
    /// Whether the metadata server forgets to say it is one.
    flavorless: bool,
    /// Requests that carried every checksum field.
    checksummed: usize,
}

struct CryptoKey {
    /// Versions 1, 2, ... and whether each is enabled.
    versions: Vec<(AeadKey, bool)>,
    /// The primary version's index.
    primary: usize,
}

impl FakeCloudKms {
    /// A Cloud KMS with no keys, whose metadata server's tokens last an hour.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(Kms {
            tokens: Tokens { lifetime: 3600, ..Tokens::default() },
            given: Vec::new(),
            keys: BTreeMap::new(),
            allowed: true,
            corrupt: 0,
            ignore_checksums: false,
            flavorless: false,
            checksummed: 0,
        }));
        let app = Router::new().fallback(cloud_kms).with_state(state.clone());
        let (url, task) = serve(app).await;
        Self { url, state, task }
    }

    fn kms(&self) -> MutexGuard<'_, Kms> {
        lock(&self.state)
    }

    /// `GCE_METADATA_HOST` for this fake's metadata server.
    pub fn metadata_host(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Creates the key `id` in [`KEY_RING`] with one version; returns its resource name.
    pub fn create_key(&self, id: &str) -> String {
        let name = format!("{KEY_RING}/cryptoKeys/{id}");
        self.kms()
            .keys
            .insert(name.clone(), CryptoKey { versions: vec![(AeadKey::generate(), true)], primary: 0 });
        name
    }

    /// Adds a version to `name` and makes it the primary one.
    pub fn rotate(&self, name: &str) {
        let mut kms = self.kms();
        let key = kms.keys.get_mut(name).unwrap();
        key.versions.push((AeadKey::generate(), true));
        key.primary = key.versions.len() - 1;
    }

    /// Enables or disables version `version` (from 1) of `name`.
    pub fn set_enabled(&self, name: &str, version: usize, enabled: bool) {
        self.kms().keys.get_mut(name).unwrap().versions[version - 1].1 = enabled;
    }

    /// Grants or revokes the service account's permissions on keys.
    pub fn set_allowed(&self, allowed: bool) {
        self.kms().allowed = allowed;
    }

    /// Accepts `token` as if minted elsewhere for an allowed identity.
    pub fn accept_token(&self, token: &str) {
        self.kms().given.push(token.to_owned());
    }

    /// How long the metadata server's tokens last from now on, in seconds.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.kms().tokens.lifetime = seconds;
    }

    /// Invalidates every token the metadata server issued so far.
    pub fn revoke_tokens(&self) {
        self.kms().tokens.issued.clear();
    }

    /// Tokens issued, and requests refused for want of a valid token.
    pub fn token_counts(&self) -> (usize, usize) {
        let kms = self.kms();
        (kms.tokens.requests, kms.tokens.refused)
    }

    /// Alters the next `answers` answers after computing their checksums.
    pub fn corrupt(&self, answers: usize) {
        self.kms().corrupt = answers;
    }

    /// Ignores the requests' checksums (and so confirms none).
    pub fn ignore_checksums(&self, ignore: bool) {
        self.kms().ignore_checksums = ignore;
    }

    /// Makes the metadata server answer without `Metadata-Flavor: Google`.
    pub fn flavorless(&self, flavorless: bool) {
        self.kms().flavorless = flavorless;
    }

    /// Requests that carried every checksum field.
    pub fn checksummed(&self) -> usize {
        self.kms().checksummed
    }
}

fn crc32c(bytes: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(bytes)
}

fn google_error(status: StatusCode, code: &str, message: &str) -> Response {
    reply(status, json!({"error": {"code": status.as_u16(), "message": message, "status": code}}))
}

async fn cloud_kms(
    State(state): State<Arc<Mutex<Kms>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut kms = lock(&state);
    if method == Method::GET && uri.path() == "/computeMetadata/v1/instance/service-accounts/default/token" {
        if headers.get("metadata-flavor").is_none_or(|value| value != "Google") {
            return (
                StatusCode::FORBIDDEN,
                [("metadata-flavor", "Google")],
                "Missing Metadata-Flavor:Google header.\n",
            )
                .into_response();
        }
        let (token, lifetime) = kms.tokens.issue("ya29.metadata-");
        let mut response = reply(
            StatusCode::OK,
            json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}),
        );
        if !kms.flavorless {
            response.headers_mut().insert("metadata-flavor", "Google".parse().unwrap());
        }
        return response;
    }
    let Some((name, operation)) = uri
        .path()
        .strip_prefix("/v1/")
        .and_then(|path| path.rsplit_once(':'))
        .filter(|_| method == Method::POST)
    else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method");
    };
    let given = bearer(&headers).is_some_and(|token| kms.given.iter().any(|given| given == token));
    if !given && !kms.tokens.admit(&headers) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other \
             valid authentication credential.",
        );
    }
    let permission = if operation == "encrypt" { "useToEncrypt" } else { "useToDecrypt" };
    if !kms.allowed {
        return google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            &format!(
                "Permission 'cloudkms.cryptoKeyVersions.{permission}' denied on resource '{name}' (or it may not exist)."
            ),
        );
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let bytes = |field: &str| STANDARD.decode(request[field].as_str().unwrap_or_default()).ok();
    let sum = |field: &str| request[field].as_str().and_then(|sum| sum.parse::<u32>().ok());
    let Some(aad) = bytes("additionalAuthenticatedData") else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid additional_authenticated_data.",
        );
    };
    let data_field = if operation == "encrypt" { "plaintext" } else { "ciphertext" };
    let Some(data) = bytes(data_field) else {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &format!("Invalid {data_field}."));
    };
    // The checksums, checked when sent (unless this server ignores them).
    let mut verified = (false, false);
    if !kms.ignore_checksums {
        for (field, sum_field, value, flag) in [
            (data_field, format!("{data_field}Crc32c"), &data, &mut verified.0),
            (
                "additional_authenticated_data",
                "additionalAuthenticatedDataCrc32c".to_owned(),
                &aad,
                &mut verified.1,
            ),
        ] {
            if let Some(sent) = sum(&sum_field) {
                if sent != crc32c(value) {
                    return google_error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_ARGUMENT",
                        &format!(
                            "The checksum in field {field}_crc32c did not match the data in field {field}."
                        ),
                    );
                }
                *flag = true;
            }
        }
        if verified == (true, true) {
            kms.checksummed += 1;
        }
    }
    let Some(key) = kms.keys.get(name) else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("{name} not found."));
    };
    let corrupt = |kms: &mut Kms, bytes: &mut Vec<u8>| {
        if kms.corrupt > 0 {
            kms.corrupt -= 1;
            bytes[0] ^= 1;
        }
    };
    let not_enabled = |number: usize| {
        google_error(
            StatusCode::BAD_REQUEST,
            "FAILED_PRECONDITION",
            &format!("{name}/cryptoKeyVersions/{number} is not enabled, current state is: DISABLED."),
        )
    };
    let bound = |aad: &[u8]| [name.as_bytes(), b"\0", aad].concat();
    if operation == "encrypt" {
        let (version, enabled) = &key.versions[key.primary];
        let number = key.primary + 1;
        if !enabled {
            return not_enabled(number);
        }
        let mut ciphertext = (number as u32).to_be_bytes().to_vec();
        ciphertext.extend(version.seal(&bound(&aad), &data));
        let checksum = crc32c(&ciphertext);
        corrupt(&mut kms, &mut ciphertext);
        let mut answer = json!({
            "name": format!("{name}/cryptoKeyVersions/{number}"),
            "ciphertext": STANDARD.encode(&ciphertext),
            "ciphertextCrc32c": checksum.to_string(),
            "protectionLevel": "SOFTWARE",
        });
        // Protobuf's JSON leaves out fields at their default, `false`.
        if verified.0 {
            answer["verifiedPlaintextCrc32c"] = json!(true);
        }
        if verified.1 {
            answer["verifiedAdditionalAuthenticatedDataCrc32c"] = json!(true);
        }
        return reply(StatusCode::OK, answer);
    }
    if operation != "decrypt" {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method");
    }
    let invalid = || {
        google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Decryption failed: the ciphertext is invalid.",
        )
    };
    let Some((number, sealed)) = data.split_first_chunk::<4>() else { return invalid() };
    let number = u32::from_be_bytes(*number) as usize;
    let Some((version, enabled)) = number.checked_sub(1).and_then(|index| key.versions.get(index)) else {
        return invalid();
    };
    if !enabled {
        return not_enabled(number);
    }
    let Ok(mut plaintext) = version.open(&bound(&aad), sealed) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Decryption failed: verify that 'name' refers to the correct CryptoKey.",
        );
    };
    let used_primary = number == key.primary + 1;
    let checksum = crc32c(&plaintext);
    corrupt(&mut kms, &mut plaintext);
    reply(
        StatusCode::OK,
        json!({"plaintext": STANDARD.encode(&plaintext), "plaintextCrc32c": checksum.to_string(),
               "usedPrimary": used_primary, "protectionLevel": "SOFTWARE"}),
    )
}

mod suite;
