//! Building and running the server.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use airlock_store::Store;
use anyhow::Context as _;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument as _;

use crate::auth::AuthSlot;
use crate::config::Config;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::state::AppState;
use crate::{openapi, problem};

/// A built server, bound to its port and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Opens the store (migrating it), binds the listen address, and assembles the routes.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = crate::secrets::open_store(&config).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on `{}`", config.listen))?;
        let (routes, document) = openapi::router_and_document();
        let openapi_json = document.to_pretty_json().context("cannot render the OpenAPI document")?;
        let executor = airlock_exec::Executor::new().context("cannot start the executor")?;
        let llm = airlock_llm::client::Client::new(config.model_client.clone())
            .context("cannot start the model-provider client")?;
        let state = AppState::new(store, executor, llm, config, openapi_json);
        let router = assemble(routes, state.clone());
        Ok(Self { listener, router, state })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The store, for bootstrap and tests.
    #[must_use]
    pub fn store(&self) -> &Store {
        self.state.store()
    }

    /// Serves until `shutdown` completes, then stops accepting connections and lets
    /// in-flight requests finish for the configured grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let grace = self.state.config().shutdown_grace;
        let refresh = self.state.config().mcp_refresh;
        // Aborted when `run` returns (or is dropped), so it never outlives the server.
        let refresher = (!refresh.is_zero()).then(|| {
            AbortOnDrop(tokio::spawn(crate::routes::tool_servers::refresh_periodically(
                self.state.clone(),
                refresh,
            )))
        });
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; draining in-flight requests");
            let _ = signalled_tx.send(());
        };
        let serve =
            axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(signal);
        let deadline = async move {
            if signalled_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = serve => result.context("the HTTP server failed")?,
            () = deadline => tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining connections"),
        }
        drop(refresher);
        self.state.store().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// A background task that stops when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn assemble(routes: Router<AppState>, state: AppState) -> Router {
    // The MCP endpoint is a protocol of its own, outside the OpenAPI document.
    let routes = routes.route("/mcp", crate::mcp::route(&state));
    let config = state.config();
    let mut security_headers = vec![
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
        (header::CACHE_CONTROL, "no-store"),
        (HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
    ];
    if config.public_url_is_https {
        security_headers.push((header::STRICT_TRANSPORT_SECURITY, "max-age=63072000; includeSubDomains"));
    }
    let mut router = routes
        .layer(axum::extract::DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, config.request_timeout));
    for (name, value) in security_headers {
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value)));
    }
    router.layer(middleware::from_fn_with_state(state.clone(), request_context)).with_state(state)
}

/// Gives each request an id, a span carrying it, metrics, a log line, and error bodies in
/// problem-details form.
async fn request_context(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let id: String = airlock_crypto::random_hex(16);
    let method = metric_method(request.method()).to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert("x-request-id", value);
    }
    let slot = AuthSlot::default();
    request.extensions_mut().insert(slot.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = %route,
        tenant = tracing::field::Empty,
        principal = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    if response.status() == StatusCode::FORBIDDEN
        && let Some(scope) = slot.principal().and_then(airlock_store::Principal::tenant_scope)
    {
        // A refusal is on the record before it is answered; if it cannot be recorded, the
        // caller gets a 500 instead of an unrecorded 403.
        let mut metadata = serde_json::Map::new();
        metadata.insert("method".into(), serde_json::Value::from(method.as_str()));
        metadata.insert("route".into(), serde_json::Value::from(route.as_str()));
        let recorded =
            state.store().record(&scope, "access.denied", &[], metadata).instrument(span.clone()).await;
        if let Err(error) = recorded {
            response = span.in_scope(|| problem::ApiError::internal(&error)).into_response();
        }
    }
    let mut response = problem::normalise(Some(id.clone()), response).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let metrics = state.metrics();
    metrics
        .http_requests
        .get_or_create(&RequestLabels { method: method.clone(), route: route.clone(), status })
        .inc();
    metrics.http_duration.get_or_create(&RouteLabels { method, route }).observe(elapsed.as_secs_f64());
    span.in_scope(|| tracing::info!(status, latency_ms = duration_ms(elapsed), "request finished"));
    response
}

/// The method as a metric label: clients can send any token as a method, so anything but the
/// standard methods is counted as `other` to keep the number of series bounded.
fn metric_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
