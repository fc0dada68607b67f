//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use airlock_store::Store;

use crate::config::Config;
use crate::metrics::Metrics;
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
    pub fn new(store: Store, executor: airlock_exec::Executor, config: Config, openapi_json: String) -> Self {
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

    /// The session cookie's name: `__Host-` prefixed (so browsers insist on `Secure`, the
    /// root path and no `Domain`) when Airlock is served over HTTPS.
    #[must_use]
    pub fn session_cookie_name(&self) -> &'static str {
        if self.inner.config.public_url_is_https { "__Host-airlock_session" } else { "airlock_session" }
    }
}
