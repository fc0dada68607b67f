//! Every behaviour is checked against a real HTTP upstream on loopback: a small axum service
//! that records each request it receives and answers as a test tells it to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use secrecy::SecretBox;
use serde_json::{Value, json};

use super::*;

// ---------------------------------------------------------------------------------------------
// The test upstream

#[derive(Clone)]
enum ReplyBody {
    Json(Value),
    Raw(Vec<u8>),
    /// Sent without a `Content-Length`, in 64 KiB chunks.
    Chunked(Vec<u8>),
    /// The request's headers as a JSON object.
    EchoHeaders,
    /// The request's headers as plain `name: value` lines.
    EchoHeadersText,
}

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: ReplyBody,
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self { status, headers: Vec::new(), body: ReplyBody::Json(body), delay: Duration::ZERO }
    }

    fn raw(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { body: ReplyBody::Raw(body.into()), ..Self::json(status, Value::Null) }
    }

    fn chunked(status: u16, body: Vec<u8>) -> Self {
        Self { body: ReplyBody::Chunked(body), ..Self::json(status, Value::Null) }
    }

    fn status(status: u16) -> Self {
        Self::raw(status, "")
    }

    fn echo() -> Self {
        Self { body: ReplyBody::EchoHeaders, ..Self::json(200, Value::Null) }
    }

    fn echo_text() -> Self {
        Self { body: ReplyBody::EchoHeadersText, ..Self::json(200, Value::Null) }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn after(mut self, millis: u64) -> Self {
        self.delay = Duration::from_millis(millis);
        self
    }
}

/// One request the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The request target exactly as sent: path and query, still percent-encoded.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn body_text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

#[derive(Default)]
struct Shared {
    /// Per path, the replies in order; the last one repeats.
    replies: Mutex<HashMap<String, Vec<Reply>>>,
    seen: Mutex<Vec<Seen>>,
}

struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Upstream {
    async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new().fallback(answer).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, shared }
    }

    fn on(&self, path: &str, replies: Vec<Reply>) {
        self.shared.replies.lock().unwrap().insert(path.to_owned(), replies);
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.target.split('?').next() == Some(path)).collect()
    }
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let target = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let count = {
        let mut seen = shared.seen.lock().unwrap();
        seen.push(Seen {
            method: parts.method.as_str().to_owned(),
            target,
            headers: headers.clone(),
            body: body.to_vec(),
            at: Instant::now(),
        });
        seen.iter().filter(|s| s.target.split('?').next() == Some(path.as_str())).count()
    };
    let reply = {
        let replies = shared.replies.lock().unwrap();
        replies.get(&path).and_then(|r| r.get(count - 1).or_else(|| r.last())).cloned()
    };
    let Some(reply) = reply else {
        return Response::builder().status(404).body(Body::empty()).unwrap();
    };
    tokio::time::sleep(reply.delay).await;
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(*name, value);
    }
    let body = match reply.body {
        ReplyBody::Json(value) => {
            response = response.header("content-type", "application/json");
            Body::from(value.to_string())
        }
        ReplyBody::Raw(bytes) => Body::from(bytes),
        ReplyBody::Chunked(bytes) => {
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                bytes.chunks(64 << 10).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            Body::from_stream(futures_util::stream::iter(chunks))
        }
        ReplyBody::EchoHeaders => {
            let map: serde_json::Map<String, Value> =
                headers.into_iter().map(|(n, v)| (n, Value::String(v))).collect();
            Body::from(json!({"received": {"headers": map}}).to_string())
        }
        ReplyBody::EchoHeadersText => {
            Body::from(headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect::<String>())
        }
    };
    response.body(body).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn connector(settings: Value) -> Connector {
    Connector::parse(&settings).unwrap()
}

/// An HTTP connector: `method` to `url`, with `extra` settings merged in.
fn http(method: &str, url: &str, extra: Value) -> Connector {
    let mut settings = json!({"kind": "http", "method": method, "url": url});
    if method == "GET" {
        settings["body"] = json!("none");
    }
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        settings[k] = v;
    }
    connector(settings)
}

fn credential(kind: &str, material: Value) -> CredentialMaterial {
    CredentialMaterial::new(kind, SecretBox::new(material.to_string().into_bytes().into_boxed_slice()))
}

fn executor() -> Executor {
    Executor::new().unwrap()
}

/// The whole outcome as text, to check that a secret appears nowhere in it.
fn everything(outcome: &Outcome) -> String {
    serde_json::to_string(outcome).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. URL

#[tokio::test]
async fn placeholders_fill_one_path_segment_each_and_cannot_change_the_path() {
    let up = Upstream::start().await;
    up.on("/files/..%2Fadmin/a%2Fb%3Fx%3D1%23y/42/true", vec![Reply::json(200, json!({"ok": true}))]);
    let c = http("GET", &up.url("/files/{a}/{b}/{n}/{flag}?q={b}"), json!({}));
    let outcome = executor()
        .execute(&c, &json!({"a": "../admin", "b": "a/b?x=1#y", "n": 42, "flag": true}), None, "k")
        .await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/files/..%2Fadmin/a%2Fb%3Fx%3D1%23y/42/true?q=a%2Fb%3Fx%3D1%23y");
    assert_eq!(seen[0].method, "GET");
}

#[tokio::test]
async fn a_missing_or_unusable_placeholder_argument_fails_before_any_request() {
    let up = Upstream::start().await;
    let c = http("GET", &up.url("/items/{id}"), json!({}));
    let ex = executor();
    for (arguments, expected) in [
        (json!({}), "the argument `id` is missing"),
        (json!({"id": null}), "the argument `id` is missing"),
        (json!({"id": {"nested": 1}}), "must be a string, number or boolean"),
        (json!({"id": ""}), "is empty"),
        (json!({"id": ".."}), "`..` segment"),
        (json!({"id": "."}), "`..` segment"),
    ] {
        let outcome = ex.execute(&c, &arguments, None, "k").await;
        assert_eq!(outcome.status, OutcomeStatus::Failed);
        assert_eq!(outcome.attempts, 0);
        assert!(outcome.reason.contains(expected), "{arguments}: {}", outcome.reason);
    }
    // Two placeholders that together would make `..` are refused too.
    let c = http("GET", &up.url("/items/{a}{b}"), json!({}));
    let outcome = ex.execute(&c, &json!({"a": ".", "b": "."}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed, "{outcome:?}");
    assert!(up.seen().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. Body and headers

#[tokio::test]
async fn the_arguments_are_the_json_body_and_connector_headers_are_sent() {
    let up = Upstream::start().await;
    up.on("/send", vec![Reply::json(201, json!({"id": "msg_1"}))]);
    let c = http("POST", &up.url("/send"), json!({"headers": {"x-team": "ops"}}));
    let arguments = json!({"to": "a@example.com", "n": 3});
    let outcome = executor().execute(&c, &arguments, None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let seen = &up.seen()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("x-team"), Some("ops"));
    assert_eq!(serde_json::from_slice::<Value>(&seen.body).unwrap(), arguments);
    assert_eq!(seen.header("authorization"), None);
}

#[tokio::test]
async fn body_none_sends_no_body() {
    let up = Upstream::start().await;
    up.on("/items/7", vec![Reply::status(204)]);
    let c = http("DELETE", &up.url("/items/{id}"), json!({"body": "none"}));
    let outcome = executor().execute(&c, &json!({"id": 7}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(outcome.http_status, Some(204));
    assert_eq!(outcome.output, Value::Null);
    let seen = &up.seen()[0];
    assert_eq!(seen.method, "DELETE");
    assert!(seen.body.is_empty());
    assert_eq!(seen.header("content-type"), None);
}

// ---------------------------------------------------------------------------------------------
// 3. Credentials

#[tokio::test]
async fn bearer_basic_and_api_key_credentials_are_sent_in_their_headers() {
    let up = Upstream::start().await;
    up.on("/x", vec![Reply::json(200, json!({}))]);
    let c = http("GET", &up.url("/x"), json!({}));
    let ex = executor();
    let cases = [
        (credential("bearer", json!({"token": "tok-123"})), "authorization", "Bearer tok-123"),
        (
            credential("basic", json!({"username": "ann", "password": "pw:1"})),
            "authorization",
            // base64("ann:pw:1")
            "Basic YW5uOnB3OjE=",
        ),
        (
            credential("api_key_header", json!({"header": "X-Api-Key", "value": "key-9"})),
            "x-api-key",
            "key-9",
        ),
    ];
    for (i, (credential, header, expected)) in cases.iter().enumerate() {
        let outcome = ex.execute(&c, &json!({}), Some(credential), "k").await;
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
        assert_eq!(up.seen()[i].header(header), Some(*expected));
    }
}

#[tokio::test]
async fn malformed_or_unknown_credentials_fail_without_quoting_the_material() {
    let up = Upstream::start().await;
    let c = http("GET", &up.url("/x"), json!({}));
    let ex = executor();
    let bad = credential("bearer", json!({"tokn": "sekrit-value"}));
    let outcome = ex.execute(&c, &json!({}), Some(&bad), "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.reason, "the credential is not a valid `bearer` credential");
    let odd = credential("kerberos", json!({"token": "sekrit-value"}));
    let outcome = ex.execute(&c, &json!({}), Some(&odd), "k").await;
    assert!(outcome.reason.contains("`kerberos` are not supported"), "{}", outcome.reason);
    let unsendable = credential("bearer", json!({"token": "line\nbreak"}));
    let outcome = ex.execute(&c, &json!({}), Some(&unsendable), "k").await;
    assert_eq!(outcome.reason, "the credential cannot be sent in an HTTP header");
    assert!(up.seen().is_empty());
}

fn oauth(up: &Upstream, scope: Option<&str>) -> CredentialMaterial {
    credential(
        "oauth_client_credentials",
        json!({"token_url": up.url("/token"), "client_id": "client-1", "client_secret": "s3cret!", "scope": scope}),
    )
}

#[tokio::test]
async fn oauth_client_credentials_are_exchanged_once_and_the_token_cached() {
    let up = Upstream::start().await;
    up.on(
        "/token",
        vec![Reply::json(200, json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600}))],
    );
    up.on("/x", vec![Reply::json(200, json!({"ok": true}))]);
    let c = http("GET", &up.url("/x"), json!({}));
    let ex = executor();
    let credential = oauth(&up, Some("mail.send"));
    for _ in 0..2 {
        let outcome = ex.execute(&c, &json!({}), Some(&credential), "k").await;
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    }
    let token_requests = up.seen_at("/token");
    assert_eq!(token_requests.len(), 1, "the token is cached");
    let token_request = &token_requests[0];
    assert_eq!(token_request.method, "POST");
    assert_eq!(token_request.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(token_request.body_text(), "grant_type=client_credentials&scope=mail.send");
    // base64("client-1:s3cret%21"): the id and secret are form-encoded first (RFC 6749 §2.3.1).
    assert_eq!(token_request.header("authorization"), Some("Basic Y2xpZW50LTE6czNjcmV0JTIx"));
    for call in up.seen_at("/x") {
        assert_eq!(call.header("authorization"), Some("Bearer at-1"));
    }
    // A clone shares the cache.
    let outcome = ex.clone().execute(&c, &json!({}), Some(&credential), "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(up.seen_at("/token").len(), 1);
}

#[tokio::test]
async fn an_oauth_token_is_not_shared_with_a_different_client_secret_or_kept_past_its_expiry() {
    let up = Upstream::start().await;
    up.on("/token", vec![Reply::json(200, json!({"access_token": "at-short", "expires_in": 20}))]);
    up.on("/x", vec![Reply::json(200, json!({}))]);
    let c = http("GET", &up.url("/x"), json!({}));
    let ex = executor();
    // expires_in 20 s is within the 30 s margin: never cached.
    ex.execute(&c, &json!({}), Some(&oauth(&up, None)), "k").await;
    ex.execute(&c, &json!({}), Some(&oauth(&up, None)), "k").await;
    assert_eq!(up.seen_at("/token").len(), 2);
    assert_eq!(up.seen_at("/token")[0].body_text(), "grant_type=client_credentials");

    up.on("/token", vec![Reply::json(200, json!({"access_token": "at-long", "expires_in": "3600"}))]);
    ex.execute(&c, &json!({}), Some(&oauth(&up, None)), "k").await;
    assert_eq!(up.seen_at("/token").len(), 3);
    // Same token URL and client id, another secret (say, another tenant guessing the id).
    let impostor = credential(
        "oauth_client_credentials",
        json!({"token_url": up.url("/token"), "client_id": "client-1", "client_secret": "guess"}),
    );
    ex.execute(&c, &json!({}), Some(&impostor), "k").await;
    assert_eq!(up.seen_at("/token").len(), 4, "a different secret never reuses a cached token");
}

#[tokio::test]
async fn a_failing_token_endpoint_fails_the_call_without_naming_the_secret() {
    let up = Upstream::start().await;
    up.on("/token", vec![Reply::json(401, json!({"error": "invalid_client", "echo": "s3cret!"}))]);
    up.on("/x", vec![Reply::json(200, json!({}))]);
    let c = http("POST", &up.url("/x"), json!({}));
    let ex = executor();
    let outcome = ex.execute(&c, &json!({}), Some(&oauth(&up, None)), "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.attempts, 0);
    assert_eq!(
        outcome.reason,
        "the credential could not be exchanged for an access token: the token endpoint answered status 401"
    );
    assert!(!everything(&outcome).contains("s3cret"));

    for (reply, expected) in [
        (Reply::raw(200, "<html>oops</html>"), "is not a token response"),
        (Reply::json(200, json!({"access_token": "at", "token_type": "mac"})), "token type `mac`"),
        (Reply::json(200, json!({"access_token": ""})), "empty access token"),
    ] {
        up.on("/token", vec![reply]);
        let outcome = ex.execute(&c, &json!({}), Some(&oauth(&up, None)), "k").await;
        assert_eq!(outcome.status, OutcomeStatus::Failed);
        assert!(outcome.reason.starts_with("the credential could not be exchanged"), "{}", outcome.reason);
        assert!(outcome.reason.contains(expected), "{}", outcome.reason);
    }
    assert!(up.seen_at("/x").is_empty(), "the tool is never called without a token");
}

#[tokio::test]
async fn a_refused_oauth_token_is_dropped_from_the_cache() {
    let up = Upstream::start().await;
    up.on("/token", vec![Reply::json(200, json!({"access_token": "at-1", "expires_in": 3600}))]);
    up.on("/x", vec![Reply::json(401, json!({"error": "token revoked"})), Reply::json(200, json!({}))]);
    let c = http("GET", &up.url("/x"), json!({}));
    let ex = executor();
    let first = ex.execute(&c, &json!({}), Some(&oauth(&up, None)), "k").await;
    assert_eq!(first.status, OutcomeStatus::Failed);
    assert_eq!(first.attempts, 1, "a 401 is not retried");
    let second = ex.execute(&c, &json!({}), Some(&oauth(&up, None)), "k").await;
    assert_eq!(second.status, OutcomeStatus::Succeeded);
    assert_eq!(up.seen_at("/token").len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 4. Timeouts and response bodies

#[tokio::test]
async fn a_post_without_idempotency_header_that_times_out_is_sent_once() {
    let up = Upstream::start().await;
    up.on("/slow", vec![Reply::json(200, json!({})).after(1_000)]);
    let c = http("POST", &up.url("/slow"), json!({"timeout_ms": 200}));
    let started = Instant::now();
    let outcome = executor().execute(&c, &json!({}), None, "k").await;
    assert!(started.elapsed() < Duration::from_millis(900), "{:?}", started.elapsed());
    // It may have happened upstream: unverified, never retried.
    assert_eq!(outcome.status, OutcomeStatus::Unverified);
    assert_eq!(outcome.attempts, 1);
    assert_eq!(outcome.http_status, None);
    assert_eq!(outcome.reason, "timed out after 200 ms; the upstream may have acted");
    assert!(outcome.duration_ms >= 200);
    assert_eq!(up.seen().len(), 1, "the upstream saw exactly one request");
}

#[tokio::test]
async fn a_get_that_keeps_timing_out_fails_after_three_attempts() {
    let up = Upstream::start().await;
    up.on("/slow", vec![Reply::json(200, json!({})).after(1_000)]);
    let c = http("GET", &up.url("/slow"), json!({"timeout_ms": 150}));
    let outcome = executor().execute(&c, &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.attempts, 3);
    assert_eq!(outcome.reason, "timed out after 150 ms");
    assert_eq!(up.seen().len(), 3);
}

#[tokio::test]
async fn responses_over_one_mib_are_refused_with_or_without_a_length() {
    let up = Upstream::start().await;
    let big = vec![b' '; (1 << 20) + 1];
    up.on("/sized", vec![Reply::raw(200, big.clone())]);
    up.on("/streamed", vec![Reply::chunked(200, big)]);
    up.on("/fits", vec![Reply::chunked(200, format!("[{}1]", " ".repeat((1 << 20) - 3)).into_bytes())]);
    let ex = executor();
    for path in ["/sized", "/streamed"] {
        let outcome = ex.execute(&http("GET", &up.url(path), json!({})), &json!({}), None, "k").await;
        assert_eq!(outcome.status, OutcomeStatus::Failed, "{path}");
        assert_eq!(outcome.reason, "status 200 but the response is too large (over 1 MiB)", "{path}");
        assert_eq!(outcome.attempts, 1, "{path}");
        assert_eq!(outcome.output, Value::Null);
    }
    let outcome = ex.execute(&http("GET", &up.url("/fits"), json!({})), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.output, json!([1]));
    // A POST whose too-large answer carries a success status did happen: unverified.
    let c = http("POST", &up.url("/sized"), json!({}));
    let outcome = ex.execute(&c, &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Unverified);
}

#[tokio::test]
async fn a_body_that_is_not_json_comes_back_as_truncated_text() {
    let up = Upstream::start().await;
    let garbage: Vec<u8> = (0..200_000u32).map(|i| b"ab\xffcd"[(i % 5) as usize]).collect();
    up.on("/garbage", vec![Reply::raw(200, garbage)]);
    up.on("/text", vec![Reply::raw(201, "created, id 17")]);
    let ex = executor();
    let outcome = ex.execute(&http("GET", &up.url("/garbage"), json!({})), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.reason, "status 200; the response is not JSON");
    let text = outcome.output.as_str().unwrap();
    assert!(text.len() <= 64 << 10 && text.len() > (64 << 10) - 4, "{}", text.len());
    assert!(text.starts_with("ab\u{fffd}cd"));

    // With a returned id required, text is never better than unverified.
    let c = http("POST", &up.url("/text"), json!({"returned_id_pointer": "/id"}));
    let outcome = ex.execute(&c, &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Unverified);
    assert_eq!(outcome.output, json!("created, id 17"));
    assert_eq!(outcome.reason, "status 201 but the response is not JSON, so no returned id");
}

// ---------------------------------------------------------------------------------------------
// 5. Retries

#[tokio::test]
async fn an_idempotent_method_is_retried_on_5xx_with_backoff() {
    let up = Upstream::start().await;
    up.on("/flaky", vec![Reply::status(500), Reply::status(503), Reply::json(200, json!({"v": 1}))]);
    let c = http("PUT", &up.url("/flaky"), json!({}));
    let outcome = executor().execute(&c, &json!({"v": 1}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(outcome.attempts, 3);
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    let first_wait = seen[1].at - seen[0].at;
    let second_wait = seen[2].at - seen[1].at;
    assert!(first_wait >= Duration::from_millis(50), "{first_wait:?}");
    assert!(second_wait >= Duration::from_millis(200), "{second_wait:?}");
    assert!(seen.iter().all(|s| s.body == seen[0].body));
}

#[tokio::test]
async fn retries_stop_after_three_attempts() {
    let up = Upstream::start().await;
    up.on("/down", vec![Reply::json(502, json!({"error": "bad gateway"}))]);
    let outcome = executor().execute(&http("GET", &up.url("/down"), json!({})), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.attempts, 3);
    assert_eq!(outcome.http_status, Some(502));
    assert_eq!(outcome.reason, "status 502");
    assert_eq!(outcome.output, json!({"error": "bad gateway"}));
    assert_eq!(up.seen().len(), 3);
}

#[tokio::test]
async fn a_post_with_an_idempotency_header_is_retried_with_the_same_key() {
    let up = Upstream::start().await;
    up.on("/pay", vec![Reply::status(503), Reply::status(500), Reply::json(201, json!({"id": "pay_9"}))]);
    let c = http(
        "POST",
        &up.url("/pay"),
        json!({"idempotency_header": "Idempotency-Key", "expect_status": [201], "returned_id_pointer": "/id"}),
    );
    let outcome = executor().execute(&c, &json!({"amount": 5}), None, "run1-act7").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(outcome.returned_id.as_deref(), Some("pay_9"));
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.header("idempotency-key") == Some("run1-act7")), "{seen:?}");
}

#[tokio::test]
async fn a_post_without_idempotency_header_is_never_retried() {
    let up = Upstream::start().await;
    up.on("/send", vec![Reply::status(500), Reply::json(200, json!({}))]);
    let outcome = executor().execute(&http("POST", &up.url("/send"), json!({})), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.reason, "status 500");
    assert_eq!(outcome.attempts, 1);
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let up = Upstream::start().await;
    up.on("/limited", vec![Reply::status(429).header("retry-after", "1"), Reply::json(200, json!({}))]);
    let outcome =
        executor().execute(&http("GET", &up.url("/limited"), json!({})), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.attempts, 2);
    let seen = up.seen();
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1), "{:?}", seen[1].at - seen[0].at);
}

#[test]
fn retry_delays_back_off_with_jitter_and_cap_retry_after() {
    for _ in 0..100 {
        let first = retry_delay(1, Duration::ZERO);
        assert!((Duration::from_millis(50)..Duration::from_millis(150)).contains(&first), "{first:?}");
        let second = retry_delay(2, Duration::ZERO);
        assert!((Duration::from_millis(200)..Duration::from_millis(600)).contains(&second), "{second:?}");
    }
    assert_eq!(retry_delay(1, Duration::from_secs(3)), Duration::from_secs(3));
    assert_eq!(retry_delay(1, Duration::from_secs(3600)), Duration::from_secs(5));
}

#[tokio::test]
async fn other_4xx_are_never_retried() {
    let up = Upstream::start().await;
    up.on("/missing", vec![Reply::json(404, json!({"error": "no such item"}))]);
    let c = http("GET", &up.url("/missing"), json!({"response_pointer": "/data"}));
    let outcome = executor().execute(&c, &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.attempts, 1);
    assert_eq!(outcome.reason, "status 404");
    // The error body is returned whole, not narrowed by the success pointer.
    assert_eq!(outcome.output, json!({"error": "no such item"}));
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn connection_failures_are_retried_for_idempotent_methods_only() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/x");
    let ex = executor();
    let outcome = ex.execute(&http("GET", &url, json!({})), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.attempts, 3);
    assert!(outcome.reason.starts_with("could not connect to the upstream ("), "{}", outcome.reason);
    assert!(!outcome.reason.contains(&url), "{}", outcome.reason);
    let outcome = ex.execute(&http("POST", &url, json!({})), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.attempts, 1);
}

// ---------------------------------------------------------------------------------------------
// 6. Outcome verification

#[tokio::test]
async fn outcomes_are_verified_by_status_and_returned_id() {
    let up = Upstream::start().await;
    let c = |path: &str| {
        http(
            "POST",
            &up.url(path),
            json!({"expect_status": [201], "returned_id_pointer": "/message/id", "response_pointer": "/message"}),
        )
    };
    up.on("/ok", vec![Reply::json(201, json!({"message": {"id": "msg_1", "to": "a"}, "meta": 1}))]);
    up.on("/number", vec![Reply::json(201, json!({"message": {"id": 42}}))]);
    up.on("/no-id", vec![Reply::json(201, json!({"message": {"to": "a"}}))]);
    up.on("/empty-id", vec![Reply::json(201, json!({"message": {"id": ""}}))]);
    up.on("/wrong-status", vec![Reply::json(200, json!({"message": {"id": "msg_2"}}))]);
    up.on("/no-body", vec![Reply::status(201)]);
    let ex = executor();

    let outcome = ex.execute(&c("/ok"), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.reason, "status 201 and returned id `msg_1`");
    assert_eq!(outcome.returned_id.as_deref(), Some("msg_1"));
    assert_eq!(outcome.output, json!({"id": "msg_1", "to": "a"}));
    assert_eq!(outcome.http_status, Some(201));

    let outcome = ex.execute(&c("/number"), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.returned_id.as_deref(), Some("42"));

    for path in ["/no-id", "/empty-id"] {
        let outcome = ex.execute(&c(path), &json!({}), None, "k").await;
        assert_eq!(outcome.status, OutcomeStatus::Unverified, "{path}");
        assert_eq!(outcome.reason, "status 201 but no returned id at `/message/id`");
        assert_eq!(outcome.returned_id, None);
    }

    let outcome = ex.execute(&c("/wrong-status"), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.reason, "status 200");
    assert_eq!(outcome.returned_id, None);

    let outcome = ex.execute(&c("/no-body"), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Unverified);
    assert_eq!(outcome.reason, "status 201 but the response is empty, so no returned id");

    // Without a returned id pointer, any 2xx is enough; a missing response pointer target is null.
    up.on("/plain", vec![Reply::json(202, json!({"queued": true}))]);
    let plain = http("POST", &up.url("/plain"), json!({"response_pointer": "/nothing"}));
    let outcome = ex.execute(&plain, &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.reason, "status 202");
    assert_eq!(outcome.output, Value::Null);
}

#[tokio::test]
async fn a_redirect_fails_and_is_not_followed() {
    let up = Upstream::start().await;
    up.on("/moved", vec![Reply::status(302).header("location", &up.url("/elsewhere"))]);
    up.on("/elsewhere", vec![Reply::echo()]);
    let c = http("GET", &up.url("/moved"), json!({}));
    let token = credential("bearer", json!({"token": "tok-redirect"}));
    let outcome = executor().execute(&c, &json!({}), Some(&token), "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.http_status, Some(302));
    assert_eq!(outcome.reason, "status 302: redirects are not followed");
    assert_eq!(outcome.attempts, 1);
    assert!(up.seen_at("/elsewhere").is_empty());
}

// ---------------------------------------------------------------------------------------------
// 7. Secrets never come back

#[tokio::test]
async fn secrets_echoed_by_the_upstream_are_redacted() {
    let up = Upstream::start().await;
    up.on("/token", vec![Reply::json(200, json!({"access_token": "oauth-access-77", "expires_in": 3600}))]);
    up.on("/echo", vec![Reply::echo()]);
    up.on("/echo-text", vec![Reply::echo_text()]);
    let ex = executor();
    let cases = [
        (credential("bearer", json!({"token": "bearer-secret-1"})), vec!["bearer-secret-1"]),
        (
            credential("basic", json!({"username": "ann", "password": "basic-pass-2"})),
            // The password, and the base64 of "ann:basic-pass-2".
            vec!["basic-pass-2", "YW5uOmJhc2ljLXBhc3MtMg=="],
        ),
        (
            credential("api_key_header", json!({"header": "X-Api-Key", "value": "api-key-value-3"})),
            vec!["api-key-value-3"],
        ),
        (oauth(&up, None), vec!["oauth-access-77", "s3cret!"]),
    ];
    for path in ["/echo", "/echo-text"] {
        let c = http("GET", &up.url(path), json!({}));
        for (credential, secrets) in &cases {
            let outcome = ex.execute(&c, &json!({}), Some(credential), "k").await;
            assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
            let all = everything(&outcome);
            for secret in secrets {
                assert!(!all.contains(secret), "{secret} leaked through {path}: {all}");
            }
            assert!(all.contains(REDACTED), "{all}");
        }
    }
    // The upstream did get the credential; only the way back is scrubbed.
    assert!(up.seen_at("/echo").iter().any(|s| s.header("authorization") == Some("Bearer bearer-secret-1")));
}

#[tokio::test]
async fn secrets_are_redacted_in_keys_returned_ids_and_error_bodies() {
    let up = Upstream::start().await;
    up.on("/ok", vec![Reply::json(201, json!({"id": "tok-abc", "tok-abc": ["x tok-abc y"]}))]);
    up.on("/err", vec![Reply::json(400, json!({"error": "bad token tok-abc"}))]);
    let ex = executor();
    let token = credential("bearer", json!({"token": "tok-abc"}));
    let c = http("POST", &up.url("/ok"), json!({"returned_id_pointer": "/id"}));
    let outcome = ex.execute(&c, &json!({}), Some(&token), "k").await;
    assert_eq!(outcome.output, json!({"id": "[REDACTED]", "[REDACTED]": ["x [REDACTED] y"]}));
    assert_eq!(outcome.returned_id.as_deref(), Some("[REDACTED]"));
    assert!(!everything(&outcome).contains("tok-abc"));
    let outcome = ex.execute(&http("POST", &up.url("/err"), json!({})), &json!({}), Some(&token), "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.output, json!({"error": "bad token [REDACTED]"}));
}

#[tokio::test]
async fn debug_output_never_shows_a_secret() {
    let up = Upstream::start().await;
    up.on(
        "/token",
        vec![Reply::json(200, json!({"access_token": "cached-access-token", "expires_in": 3600}))],
    );
    up.on("/x", vec![Reply::json(200, json!({}))]);
    let ex = executor();
    let material = oauth(&up, None);
    ex.execute(&http("GET", &up.url("/x"), json!({})), &json!({}), Some(&material), "k").await;
    let shown = format!("{material:?} {material:#?} {ex:?} {ex:#?}");
    for secret in ["s3cret!", "client-1", "cached-access-token", "token_url"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("oauth_client_credentials"));
    assert!(shown.contains("cached_tokens: 1"), "{shown}");
    let bearer = credential("bearer", json!({"token": "tok-debug"}));
    assert_eq!(format!("{bearer:?}"), r#"CredentialMaterial { kind: "bearer", .. }"#);
}

// ---------------------------------------------------------------------------------------------
// 8. Idempotency key

#[tokio::test]
async fn the_idempotency_key_is_sent_when_configured_and_required() {
    let up = Upstream::start().await;
    up.on("/x", vec![Reply::json(200, json!({}))]);
    let ex = executor();
    let with_header = http("POST", &up.url("/x"), json!({"idempotency_header": "Idempotency-Key"}));
    ex.execute(&with_header, &json!({}), None, "key-1").await;
    assert_eq!(up.seen()[0].header("idempotency-key"), Some("key-1"));
    let outcome = ex.execute(&with_header, &json!({}), None, "").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.reason, "this connector sends an idempotency key, and none was given");
    ex.execute(&http("POST", &up.url("/x"), json!({})), &json!({}), None, "key-2").await;
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("idempotency-key"), None);
}

#[test]
fn outcome_status_serializes_in_lowercase() {
    assert_eq!(serde_json::to_value(OutcomeStatus::Unverified).unwrap(), json!("unverified"));
    assert_eq!(OutcomeStatus::Succeeded.as_str(), "succeeded");
}

// ---------------------------------------------------------------------------------------------
// MCP connectors, against the reference `server-everything` over stdio

/// The everything server's entry point; fails (never skips) when it is not installed.
fn everything_server() -> String {
    const INSTALL: &str = "install the reference MCP servers as `.ci/run` does (npm install --prefix \
         \"$HOME/.cache/airlock/mcp-servers\" @modelcontextprotocol/server-everything@2026.8.31) and export \
         AIRLOCK_TEST_MCP_SERVERS=\"$HOME/.cache/airlock/mcp-servers/node_modules\"";
    let root = std::env::var("AIRLOCK_TEST_MCP_SERVERS")
        .unwrap_or_else(|_| panic!("AIRLOCK_TEST_MCP_SERVERS is not set: {INSTALL}"));
    let entry = std::path::Path::new(&root).join("@modelcontextprotocol/server-everything/dist/index.js");
    assert!(entry.is_file(), "{} is missing: {INSTALL}", entry.display());
    entry.display().to_string()
}

fn mcp_connector(tool: &str) -> Connector {
    Connector::parse(&json!({
        "kind": "mcp", "tool": tool,
        "server": {"kind": "stdio", "command": "node", "args": [everything_server(), "stdio"],
                   "credential_env": "UPSTREAM_TOKEN", "timeout_ms": 20000}
    }))
    .unwrap()
}

#[tokio::test]
async fn an_mcp_tool_call_succeeds_with_the_servers_content() {
    let executor = Executor::new().unwrap();
    let outcome = executor.execute(&mcp_connector("echo"), &json!({"message": "hi"}), None, "key-1").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(outcome.output, json!([{"type": "text", "text": "Echo: hi"}]));
    assert_eq!(outcome.attempts, 1);
}

#[tokio::test]
async fn an_mcp_credential_reaches_a_stdio_server_but_never_the_output() {
    let executor = Executor::new().unwrap();
    let credential = CredentialMaterial::new(
        "bearer",
        SecretBox::new(json!({"token": "mcp-s3cret"}).to_string().into_bytes().into_boxed_slice()),
    );
    let outcome = executor.execute(&mcp_connector("get-env"), &json!({}), Some(&credential), "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    let text = outcome.output.to_string();
    assert!(text.contains("UPSTREAM_TOKEN"), "the server saw the variable: {text}");
    assert!(!text.contains("mcp-s3cret"), "{text}");
    assert!(text.contains(REDACTED), "{text}");
}

#[tokio::test]
async fn an_mcp_tool_error_or_unknown_tool_fails_with_a_reason() {
    let executor = Executor::new().unwrap();
    let outcome = executor.execute(&mcp_connector("no-such-tool"), &json!({}), None, "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed, "{outcome:?}");
    assert!(!outcome.reason.is_empty());

    let api_key = CredentialMaterial::new(
        "api_key_header",
        SecretBox::new(json!({"header": "x-key", "value": "v"}).to_string().into_bytes().into_boxed_slice()),
    );
    let outcome =
        executor.execute(&mcp_connector("echo"), &json!({"message": "x"}), Some(&api_key), "k").await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert!(outcome.reason.contains("cannot be used with an MCP tool server"), "{}", outcome.reason);
}

#[tokio::test]
async fn an_mcp_server_that_dies_or_hangs_mid_call_leaves_the_outcome_unverified() {
    // Completes the handshake, then exits (`crash`) or never answers (`hang`) on `tools/call`.
    const SCRIPT: &str = r#"
const mode = process.argv[1];
require("readline").createInterface({ input: process.stdin }).on("line", (line) => {
  const m = JSON.parse(line);
  if (m.id === undefined) return;
  const send = (result) => process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id: m.id, result }) + "\n");
  if (m.method === "initialize") send({ protocolVersion: m.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: "f", version: "0" } });
  else if (m.method === "tools/call") { if (mode === "crash") process.exit(3); }
  else send({});
});
"#;
    let executor = Executor::new().unwrap();
    for (mode, reason) in
        [("crash", "the tool server closed the connection"), ("hang", "did not answer within 1000 ms")]
    {
        let connector = Connector::parse(&json!({
            "kind": "mcp", "tool": "anything",
            "server": {"kind": "stdio", "command": "node", "args": ["-e", SCRIPT, mode], "timeout_ms": 1000}
        }))
        .unwrap();
        let outcome = executor.execute(&connector, &json!({}), None, "k").await;
        assert_eq!(outcome.status, OutcomeStatus::Unverified, "{mode}: {outcome:?}");
        assert!(outcome.reason.contains(reason), "{mode}: {}", outcome.reason);
        assert_eq!(outcome.output, Value::Null);
    }
}

#[tokio::test]
async fn a_tenants_mcp_session_is_kept_for_its_next_calls() {
    let executor = Executor::new().unwrap();
    let connector = mcp_connector("echo");
    for message in ["one", "two"] {
        let outcome =
            executor.execute_for_tenant("ten_a", &connector, &json!({"message": message}), None, "k").await;
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
        assert_eq!(outcome.output[0]["text"], format!("Echo: {message}"));
    }
    assert_eq!(executor.mcp.open_sessions(), 1);
    executor.execute_for_tenant("ten_b", &connector, &json!({"message": "x"}), None, "k").await;
    assert_eq!(executor.mcp.open_sessions(), 2, "one session per tenant");
}
