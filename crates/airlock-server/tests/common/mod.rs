//! What the integration tests share: a running server on an ephemeral port with a fresh data
//! directory ([`TestApp`]), fixtures made through the store (tenants, users with roles,
//! agents, operators and their keys), and a reply type with assertions for problem details.
//! [`upstream`] is a recording HTTP server standing in for the APIs tools call; [`runs`]
//! opens runs and proposes actions against it.

pub mod provider;
pub mod runs;
pub mod upstream;

use std::time::Duration;

use airlock_server::bootstrap::ensure_first_tenant;
use airlock_server::{Application, Config};
use airlock_store::{KeyOwner, NewUser, Principal, Store, TenantScope};
use airlock_types::{AgentName, Email, Role, TenantSlug, Timestamp};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use secrecy::SecretString;
use serde_json::Value;

/// The slug of the tenant created at first start.
pub const DEFAULT_TENANT: &str = "default";
/// The e-mail address of the administrator created at first start.
pub const DEFAULT_ADMIN: &str = "admin@localhost";
/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// The name of the session cookie over plain HTTP.
pub const SESSION_COOKIE: &str = "airlock_session";
/// A well-formed API key id that no test ever creates.
pub const UNKNOWN_KEY_ID: &str = "key_00000000000000000000000000000000";
/// A well-formed user id that no test ever creates.
pub const UNKNOWN_USER_ID: &str = "usr_00000000000000000000000000000000";

/// A running server and a client for it. Dropping it stops the server.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    client: reqwest::Client,
    /// The server's store, for fixtures and for checking what changed.
    pub store: Store,
    /// The first-start administrator's generated password (tenant `default`).
    pub admin_password: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _data_dir: tempfile::TempDir,
}

/// A tenant made for a test, with an administrator holding an API key.
pub struct TenantFixture {
    /// The tenant's id.
    pub id: String,
    /// The operator's scope over the tenant, for more fixtures.
    pub scope: TenantScope,
    /// An administrator of the tenant.
    pub admin: UserFixture,
}

/// A user and one API key of theirs.
pub struct UserFixture {
    /// The user's id (`usr_…`).
    pub id: String,
    /// Their API key.
    pub key: KeyFixture,
}

/// An agent and one API key of its.
pub struct AgentFixture {
    /// The agent's id (`agt_…`).
    pub id: String,
    /// Its API key.
    pub key: KeyFixture,
}

/// An API key as created.
#[derive(Clone)]
pub struct KeyFixture {
    /// Its public id (`key_…`).
    pub id: String,
    /// The key itself (`alk_…`).
    pub secret: String,
}

/// A console session as logged in.
pub struct SessionFixture {
    /// The session token (`als_…`), as set in the cookie.
    pub token: String,
    /// The `Cookie` header value that carries it.
    pub cookie: String,
    /// The CSRF token from the login body.
    pub csrf: String,
}

impl TestApp {
    /// Starts a server with the default dev configuration and the first-start tenant.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a server after `adjust` has changed its configuration.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let mut config = Config::for_data_dir(data_dir.path());
        adjust(&mut config);
        let app = Application::build(config).await.expect("the server builds");
        let addr = app.local_addr().expect("a bound address");
        let store = app.store().clone();
        let first = ensure_first_tenant(&store).await.expect("first start").expect("a fresh data directory");
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client");
        Self {
            base: format!("http://{addr}"),
            client,
            store,
            admin_password: first.password().to_owned(),
            shutdown: Some(shutdown),
            _data_dir: data_dir,
        }
    }

    // ---- requests -------------------------------------------------------------------

    /// A request to `path`, to add headers and a body to.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// Sends a request and reads the whole reply.
    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a readable body");
        Reply { status, headers, text }
    }

    /// `GET path` without a credential.
    pub async fn get_anonymous(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    /// `GET path` with an API key.
    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.send(self.request(Method::GET, path).bearer_auth(key)).await
    }

    /// `POST path` with an API key and a JSON body.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).bearer_auth(key).json(body)).await
    }

    /// `PUT path` with an API key and a JSON body.
    pub async fn put(&self, path: &str, key: &str, body: &Value) -> Reply {
        self.send(self.request(Method::PUT, path).bearer_auth(key).json(body)).await
    }

    /// `DELETE path` with an API key.
    pub async fn delete(&self, path: &str, key: &str) -> Reply {
        self.send(self.request(Method::DELETE, path).bearer_auth(key)).await
    }

    /// `POST /v1/sessions`.
    pub async fn login(&self, tenant: &str, email: &str, password: &str) -> Reply {
        let body = serde_json::json!({ "tenant": tenant, "email": email, "password": password });
        self.send(self.request(Method::POST, "/v1/sessions").json(&body)).await
    }

    /// Logs the first-start administrator in.
    pub async fn login_as_default_admin(&self) -> SessionFixture {
        let reply = self.login(DEFAULT_TENANT, DEFAULT_ADMIN, &self.admin_password).await;
        let body = reply.expect_status(201);
        let set_cookie = reply.header("set-cookie").expect("a session cookie");
        let token = set_cookie
            .split(';')
            .next()
            .and_then(|pair| pair.strip_prefix(&format!("{SESSION_COOKIE}=")))
            .expect("the session cookie first")
            .to_owned();
        SessionFixture {
            cookie: format!("{SESSION_COOKIE}={token}"),
            token,
            csrf: body["csrf_token"].as_str().expect("a CSRF token").to_owned(),
        }
    }

    /// A request made with a console session's cookie, and the CSRF token if given.
    pub fn with_session(
        &self,
        method: Method,
        path: &str,
        session: &SessionFixture,
        csrf: Option<&str>,
    ) -> RequestBuilder {
        let request = self.request(method, path).header("cookie", &session.cookie);
        match csrf {
            Some(token) => request.header("x-csrf-token", token),
            None => request,
        }
    }

    // ---- fixtures -------------------------------------------------------------------

    /// Creates a tenant, an administrator in it, and a key for the administrator.
    pub async fn tenant(&self, slug: &str) -> TenantFixture {
        let operator = Principal::local_operator();
        let parsed = TenantSlug::parse(slug).expect("a valid slug");
        let tenant = self.store.create_tenant(&operator, &parsed, slug).await.expect("tenant created");
        let scope = self.store.operator_scope(&operator, &parsed).await.expect("tenant scope");
        let admin = self.user(&scope, &format!("admin@{slug}.example"), &[Role::Admin]).await;
        TenantFixture { id: tenant.id.to_string(), scope, admin }
    }

    /// The first-start tenant, with a key for its administrator.
    pub async fn default_tenant(&self) -> TenantFixture {
        let operator = Principal::local_operator();
        let slug = TenantSlug::parse(DEFAULT_TENANT).expect("a valid slug");
        let scope = self.store.operator_scope(&operator, &slug).await.expect("tenant scope");
        let email = Email::parse(DEFAULT_ADMIN).expect("a valid e-mail");
        let user = self.store.get_user_by_email(&scope, &email).await.expect("the first administrator");
        let key = self.key_for(&scope, KeyOwner::User(user.id.clone()), "admin key", None).await;
        let admin = UserFixture { id: user.id.to_string(), key };
        TenantFixture { id: scope.tenant_id().to_string(), scope, admin }
    }

    /// Creates a user without a password (so no Argon2 work) holding `roles`, and a key.
    pub async fn user(&self, scope: &TenantScope, email: &str, roles: &[Role]) -> UserFixture {
        self.user_with_password(scope, email, roles, None).await
    }

    /// Creates a user holding `roles`, optionally with a console password, and a key.
    pub async fn user_with_password(
        &self,
        scope: &TenantScope,
        email: &str,
        roles: &[Role],
        password: Option<&str>,
    ) -> UserFixture {
        let new = NewUser {
            email: Email::parse(email).expect("a valid e-mail"),
            name: email.to_owned(),
            roles: roles.iter().copied().collect(),
            password: password.map(|p| SecretString::from(p.to_owned())),
        };
        let user = self.store.create_user(scope, new).await.expect("user created");
        let key = self.key_for(scope, KeyOwner::User(user.id.clone()), "user key", None).await;
        UserFixture { id: user.id.to_string(), key }
    }

    /// Creates an agent and a key for it.
    pub async fn agent(&self, scope: &TenantScope, name: &str) -> AgentFixture {
        let parsed = AgentName::parse(name).expect("a valid agent name");
        let agent = self.store.create_agent(scope, &parsed, "made by a test").await.expect("agent created");
        let key = self.key_for(scope, KeyOwner::Agent(agent.id.clone()), "agent key", None).await;
        AgentFixture { id: agent.id.to_string(), key }
    }

    /// Creates an API key through the store.
    pub async fn key_for(
        &self,
        scope: &TenantScope,
        owner: KeyOwner,
        name: &str,
        expires_at: Option<Timestamp>,
    ) -> KeyFixture {
        let created = self.store.create_api_key(scope, owner, name, expires_at).await.expect("key created");
        KeyFixture { id: created.key.id.to_string(), secret: created.secret.expose().to_owned() }
    }

    /// Creates a platform operator and a key for it.
    pub async fn operator(&self, name: &str) -> KeyFixture {
        let created = self
            .store
            .create_operator_key(&Principal::local_operator(), name, None)
            .await
            .expect("operator key created");
        KeyFixture { id: created.key.id.to_string(), secret: created.secret.expose().to_owned() }
    }

    // ---- observations ---------------------------------------------------------------

    /// `GET path` with `key`, expecting 200, as JSON.
    pub async fn get_ok(&self, path: &str, key: &str) -> Value {
        self.get(path, key).await.expect_status(200)
    }

    /// The ids of a JSON array of records, sorted.
    pub async fn ids(&self, path: &str, key: &str) -> Vec<String> {
        ids_of(&self.get_ok(path, key).await)
    }

    /// The tenants' slugs, as the store sees them.
    pub async fn tenant_slugs(&self) -> Vec<String> {
        let tenants = self.store.list_tenants(&Principal::local_operator()).await.expect("tenants");
        tenants.into_iter().map(|t| t.slug.to_string()).collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The `id` fields of a JSON array, sorted.
pub fn ids_of(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|item| item["id"].as_str().expect("an id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// An answer from the server, read in full.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text))
    }

    /// Asserts the status and returns the body as JSON (`null` when empty).
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        if self.text.is_empty() { Value::Null } else { self.json() }
    }

    /// Asserts that this is problem details of type `urn:airlock:problem:<name>` with
    /// `status`, carrying the request id of its `x-request-id` header, and returns the body.
    #[track_caller]
    pub fn expect_problem(&self, status: u16, name: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some(PROBLEM_JSON),
            "problem content type; body: {}",
            self.text
        );
        let body = self.json();
        assert_eq!(body["type"], format!("urn:airlock:problem:{name}"), "problem type; body: {body}");
        assert_eq!(body["status"], status, "the body repeats the status");
        assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()), "a title: {body}");
        assert!(body["detail"].as_str().is_some_and(|t| !t.is_empty()), "a detail: {body}");
        let request_id = self.header("x-request-id").expect("an x-request-id header");
        assert_eq!(body["request_id"], request_id, "the body's request_id is the header's");
        body
    }

    /// The problem body with its request id removed, for comparing two refusals.
    #[track_caller]
    pub fn problem_without_request_id(&self) -> Value {
        let mut body = self.json();
        body.as_object_mut().expect("a JSON object").remove("request_id");
        body
    }
}
