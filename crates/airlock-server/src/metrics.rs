//! Every metric Airlock exports, by name, in one place.
//!
//! Labels never carry tenant data, principal ids or anything a caller chose freely: routes
//! are the matched route template (`/v1/keys/{id}`), not the requested path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method.
    pub method: String,
    /// The matched route template, or `unmatched`.
    pub route: String,
    /// The response status code.
    pub status: u16,
}

/// Labels of a route's latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The HTTP method.
    pub method: String,
    /// The matched route template, or `unmatched`.
    pub route: String,
}

/// Labels of a refused authentication.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    /// Why: `malformed`, `unknown`, `revoked`, `expired`, `owner_disabled`, `invalid_login`,
    /// `csrf`, `rate_limited`.
    pub reason: String,
}

/// Labels of a model call. The model is the provider's model name (`gpt-4o-mini`), not the
/// tenant's alias; the outcome is one of a fixed few.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// `openai`, `azure_openai` or `anthropic`.
    pub provider: String,
    /// The model name at the provider.
    pub model: String,
    /// `ok`, `refused` (by the provider), `failed`, `abandoned` (by the client).
    pub outcome: String,
}

/// Labels of a model call's tokens.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelTokenLabels {
    /// `openai`, `azure_openai` or `anthropic`.
    pub provider: String,
    /// The model name at the provider.
    pub model: String,
    /// `input` or `output`.
    pub direction: String,
}

/// Labels of a model call's cost and latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelRouteLabels {
    /// `openai`, `azure_openai` or `anthropic`.
    pub provider: String,
    /// The model name at the provider.
    pub model: String,
}

/// The metrics registry and handles.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `airlock_http_requests_total`
    pub http_requests: Family<RequestLabels, Counter>,
    /// `airlock_http_request_duration_seconds`
    pub http_duration: Family<RouteLabels, Histogram>,
    /// `airlock_auth_failures_total`
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    /// `airlock_model_requests_total`
    pub model_requests: Family<ModelLabels, Counter>,
    /// `airlock_model_tokens_total`
    pub model_tokens: Family<ModelTokenLabels, Counter>,
    /// `airlock_model_cost_microcents_total`
    pub model_cost: Family<ModelRouteLabels, Counter>,
    /// `airlock_model_request_duration_seconds`
    pub model_duration: Family<ModelRouteLabels, Histogram>,
    /// How long the critical judge took per high-stakes call (rules and model panel).
    pub judge_seconds: Histogram,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

impl Metrics {
    /// Registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("airlock");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", http_requests.clone());
        let http_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request",
            prometheus_client::registry::Unit::Seconds,
            http_duration.clone(),
        );
        let auth_failures = Family::<AuthFailureLabels, Counter>::default();
        registry.register("auth_failures", "Refused authentications, by reason", auth_failures.clone());
        let model_requests = Family::<ModelLabels, Counter>::default();
        registry.register(
            "model_requests",
            "Model calls, by provider, model and outcome",
            model_requests.clone(),
        );
        let model_tokens = Family::<ModelTokenLabels, Counter>::default();
        registry.register("model_tokens", "Tokens reported by model providers", model_tokens.clone());
        let model_cost = Family::<ModelRouteLabels, Counter>::default();
        registry.register(
            "model_cost_microcents",
            "Model spend, in millionths of a cent",
            model_cost.clone(),
        );
        let model_duration = Family::<ModelRouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "model_request_duration",
            "Time from a model call's arrival to its last byte",
            prometheus_client::registry::Unit::Seconds,
            model_duration.clone(),
        );
        let judge_seconds = latency_histogram();
        registry.register_with_unit(
            "judge_duration",
            "Time the critical judge took on a high-stakes call",
            prometheus_client::registry::Unit::Seconds,
            judge_seconds.clone(),
        );
        Self {
            registry,
            judge_seconds,
            http_requests,
            http_duration,
            auth_failures,
            model_requests,
            model_tokens,
            model_cost,
            model_duration,
        }
    }

    /// Counts a refused authentication.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.get_or_create(&AuthFailureLabels { reason: reason.to_owned() }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
