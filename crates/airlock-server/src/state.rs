//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use airlock_inspect::injection::Scanner;
use airlock_inspect::{Profile, ProfileSpec, Tokenizer};
use airlock_store::{Store, TenantScope};
use airlock_types::TenantId;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::ratelimit::Limiter;

/// Shared application state: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    store: Store,
    executor: airlock_exec::Executor,
    config: Config,
    metrics: Metrics,
    limits: Limits,
    openapi_json: String,
    inspection: Inspection,
    llm: airlock_llm::client::Client,
}

/// Compiled inspection state: the injection scanner, each tenant's compiled profile (by
/// version) and tokenizer. Keyed by tenant, so nothing compiled for one tenant serves
/// another.
struct Inspection {
    scanner: Scanner,
    standard: Arc<Profile>,
    profiles: Mutex<HashMap<TenantId, (i64, Arc<Profile>)>>,
    tokenizers: Mutex<HashMap<TenantId, Arc<Tokenizer>>>,
}

/// The rate limiters.
#[derive(Debug)]
pub struct Limits {
    /// Failed authentications per client address.
    pub failed_auth_by_address: Limiter,
    /// Login attempts per account (tenant and e-mail).
    pub login_by_account: Limiter,
    /// Requests per authenticated principal.
    pub requests_by_principal: Limiter,
    /// Actions proposed per run.
    pub actions_by_run: Limiter,
}

impl Limits {
    fn new(config: &Config) -> Self {
        let minute = Duration::from_secs(60);
        Self {
            failed_auth_by_address: Limiter::new(
                config.failed_auth_per_minute,
                minute,
                config.limiter_capacity,
            ),
            login_by_account: Limiter::new(config.login_attempts_per_minute, minute, config.limiter_capacity),
            requests_by_principal: Limiter::new(
                config.requests_per_second,
                Duration::from_secs(1),
                config.limiter_capacity,
            ),
            actions_by_run: Limiter::new(config.actions_per_run_per_minute, minute, config.limiter_capacity),
        }
    }
}

impl AppState {
    /// Builds the state.
    #[must_use]
    pub fn new(
        store: Store,
        executor: airlock_exec::Executor,
        llm: airlock_llm::client::Client,
        config: Config,
        openapi_json: String,
    ) -> Self {
        let limits = Limits::new(&config);
        // Airlock's own notifications follow no redirects, like the executor's calls.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                http,
                store,
                executor,
                config,
                metrics: Metrics::new(),
                limits,
                openapi_json,
                inspection: Inspection {
                    scanner: Scanner::new(),
                    #[expect(
                        clippy::expect_used,
                        reason = "the built-in standard profile compiles (unit-tested)"
                    )]
                    standard: Arc::new(
                        Profile::compile(ProfileSpec::default()).expect("the standard profile compiles"),
                    ),
                    profiles: Mutex::new(HashMap::new()),
                    tokenizers: Mutex::new(HashMap::new()),
                },
                llm,
            }),
        }
    }

    /// The client for Airlock's own notifications (never used with tool credentials).
    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The executor, the only holder of tool credentials while it calls a tool.
    #[must_use]
    pub fn executor(&self) -> &airlock_exec::Executor {
        &self.inner.executor
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The validated configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The rate limiters.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The OpenAPI document, rendered once at start.
    #[must_use]
    pub fn openapi_json(&self) -> &str {
        &self.inner.openapi_json
    }

    /// The model-provider client.
    #[must_use]
    pub fn llm(&self) -> &airlock_llm::client::Client {
        &self.inner.llm
    }

    /// The injection scanner.
    #[must_use]
    pub fn scanner(&self) -> &Scanner {
        &self.inner.inspection.scanner
    }

    /// The tenant's compiled redaction profile and its version (0: the standard profile,
    /// when the tenant has written none).
    pub async fn inspection_profile(&self, scope: &TenantScope) -> Result<(Arc<Profile>, i64), ApiError> {
        let inspection = &self.inner.inspection;
        let Some(stored) = self.store().inspection_profile(scope).await? else {
            return Ok((Arc::clone(&inspection.standard), 0));
        };
        let tenant = scope.tenant_id();
        if let Some((version, profile)) = lock(&inspection.profiles).get(tenant)
            && *version == stored.version
        {
            return Ok((Arc::clone(profile), stored.version));
        }
        // A stored profile was validated when written; one that no longer compiles fails
        // closed rather than letting text through unredacted.
        let spec: ProfileSpec = serde_json::from_str(&stored.text).map_err(|e| ApiError::internal(&e))?;
        let profile = Arc::new(Profile::compile(spec).map_err(|e| ApiError::internal(&e))?);
        lock(&inspection.profiles).insert(tenant.clone(), (stored.version, Arc::clone(&profile)));
        Ok((profile, stored.version))
    }

    /// The tenant's tokenizer.
    pub async fn tokenizer(&self, scope: &TenantScope) -> Result<Arc<Tokenizer>, ApiError> {
        let tenant = scope.tenant_id();
        if let Some(tokenizer) = lock(&self.inner.inspection.tokenizers).get(tenant) {
            return Ok(Arc::clone(tokenizer));
        }
        let key = self.store().tokenization_key(scope).await?;
        let tokenizer = Arc::new(Tokenizer::new(key));
        lock(&self.inner.inspection.tokenizers).insert(tenant.clone(), Arc::clone(&tokenizer));
        Ok(tokenizer)
    }

    /// The session cookie's name: `__Host-` prefixed (so browsers insist on `Secure`, the
    /// root path and no `Domain`) when Airlock is served over HTTPS.
    #[must_use]
    pub fn session_cookie_name(&self) -> &'static str {
        if self.inner.config.public_url_is_https { "__Host-airlock_session" } else { "airlock_session" }
    }
}

/// Locks a cache; a panic elsewhere while holding it leaves nothing half-written that a
/// reader could misuse (every write is one insert), so a poisoned lock is taken as is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
