//! A recording upstream: a real HTTP server on an ephemeral loopback port that stands in for
//! the APIs tools call. It records every request it receives (method, path with query,
//! headers, body) and answers each path as the test told it to: a status and a JSON body, a
//! body that is not JSON, or the request's own headers echoed back, optionally after a delay.
//! Paths it was told nothing about answer `200 {"ok": true}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The method (`POST`).
    pub method: String,
    /// The path, with the query string if there was one.
    pub path: String,
    /// The headers, names in lowercase; repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body as received.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the upstream got a body that is not JSON ({e}): {:?}", self.body))
    }
}

/// What the upstream sends back.
#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Raw(String),
    EchoHeaders,
}

/// How the upstream answers one path.
#[derive(Debug, Clone)]
pub struct Behaviour {
    status: u16,
    body: Body,
    delay: Duration,
}

impl Behaviour {
    /// Answers `status` with a JSON body.
    pub fn json(status: u16, body: Value) -> Self {
        Self { status, body: Body::Json(body), delay: Duration::ZERO }
    }

    /// Answers `status` with a body that is not JSON (sent as `application/json` all the same).
    pub fn garbage(status: u16, body: &str) -> Self {
        Self { status, body: Body::Raw(body.to_owned()), delay: Duration::ZERO }
    }

    /// Answers `status` with `{"headers": {…}}`: the request's own headers, as received.
    pub fn echo_headers(status: u16) -> Self {
        Self { status, body: Body::EchoHeaders, delay: Duration::ZERO }
    }

    /// Waits this long (after recording the request) before answering.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    behaviours: Mutex<HashMap<String, Behaviour>>,
}

/// A running recording upstream. Dropping it stops the server.
pub struct Upstream {
    base: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream on `127.0.0.1:0`.
    pub async fn spawn() -> Self {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let router = Router::new().fallback(answer).with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { base: format!("http://{addr}"), shared, server }
    }

    /// The absolute URL of `path` (which may hold `{placeholders}` for a connector template).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sets how `path` (without its query string) is answered from now on.
    pub fn on(&self, path: &str, behaviour: Behaviour) {
        self.shared
            .behaviours
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), behaviour);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The requests received so far whose path (without query) is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.path.split('?').next() == Some(path)).collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut recorded_headers = BTreeMap::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        recorded_headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined: &mut String| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let behaviour = shared
        .behaviours
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(uri.path())
        .cloned()
        .unwrap_or_else(|| Behaviour::json(200, json!({"ok": true})));
    let echoed = json!({ "headers": &recorded_headers });
    shared.requests.lock().unwrap_or_else(PoisonError::into_inner).push(RecordedRequest {
        method: method.as_str().to_owned(),
        path,
        headers: recorded_headers,
        body: body.to_vec(),
    });
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    let status = StatusCode::from_u16(behaviour.status).expect("a valid status");
    let text = match behaviour.body {
        Body::Json(value) => value.to_string(),
        Body::Raw(text) => text,
        Body::EchoHeaders => echoed.to_string(),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}
