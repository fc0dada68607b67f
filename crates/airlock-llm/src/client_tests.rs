//! Every behaviour is checked against real HTTP upstreams on loopback: small axum services that
//! record each request they receive and answer as the test scripts them to. Timeouts are a few
//! hundred milliseconds so the whole file runs in about a second.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::StreamExt as _;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::*;
use crate::upstream::ProviderKind;

// ---------------------------------------------------------------------------------------------
// The test upstream

#[derive(Clone)]
enum ReplyBody {
    /// Sent with a `Content-Length`.
    Bytes(Vec<u8>),
    /// Sent without a `Content-Length`, in one chunk.
    Chunked(Vec<u8>),
    /// Chunks `gap` apart, then `end`.
    Chunks { chunks: Vec<&'static str>, gap: Duration, end: End },
    /// Chunks every 10 ms for as long as the client reads; `gone` is notified when one cannot
    /// be sent because the client went away.
    UntilGone(Arc<Notify>),
}

#[derive(Clone, Copy)]
enum End {
    Finish,
    /// The connection is cut mid-body.
    Break,
    /// Nothing more is ever sent.
    Hang,
}

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: ReplyBody,
    /// No answer at all, ever.
    hang: bool,
}

impl Reply {
    fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: ReplyBody::Bytes(body.to_string().into_bytes()),
            hang: false,
        }
    }

    fn ok() -> Self {
        Self::json(200, &json!({"id": "chatcmpl-1", "choices": []}))
    }

    fn status(status: u16) -> Self {
        Self::json(status, &json!({"error": {"message": format!("status {status} from the test upstream")}}))
    }

    fn hang() -> Self {
        Self { hang: true, ..Self::ok() }
    }

    fn stream(chunks: Vec<&'static str>, end: End) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            body: ReplyBody::Chunks { chunks, gap: Duration::from_millis(20), end },
            hang: false,
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn body(mut self, body: ReplyBody) -> Self {
        self.body = body;
        self
    }
}

/// One request the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    target: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    /// The replies in order; the last one repeats.
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Server {
    async fn start(replies: Vec<Reply>) -> Self {
        let shared = Arc::new(Shared { replies: Mutex::new(replies.into()), seen: Mutex::default() });
        let app = axum::Router::new().fallback(answer).with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, shared }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    fn hits(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    fn then(&self, reply: Reply) {
        let mut replies = self.shared.replies.lock().unwrap();
        replies.clear();
        replies.push_back(reply);
    }
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    shared.seen.lock().unwrap().push(Seen {
        method: parts.method.as_str().to_owned(),
        target: parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let reply = {
        let mut replies = shared.replies.lock().unwrap();
        if replies.len() > 1 { replies.pop_front() } else { replies.front().cloned() }
    };
    let reply = reply.unwrap_or_else(Reply::ok);
    if reply.hang {
        std::future::pending::<()>().await;
    }
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(*name, value);
    }
    let body = match reply.body {
        ReplyBody::Bytes(bytes) => Body::from(bytes),
        ReplyBody::Chunked(bytes) => {
            Body::from_stream(stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]))
        }
        ReplyBody::Chunks { chunks, gap, end } => {
            let items = stream::iter(chunks).then(move |chunk| async move {
                tokio::time::sleep(gap).await;
                Ok::<_, std::io::Error>(Bytes::from_static(chunk.as_bytes()))
            });
            let tail = stream::once(async move { end }).filter_map(move |end| async move {
                // So the last chunk is flushed before the connection is cut.
                tokio::time::sleep(gap).await;
                match end {
                    End::Finish => None,
                    End::Break => Some(Err(std::io::Error::other("cut"))),
                    End::Hang => {
                        std::future::pending::<()>().await;
                        None
                    }
                }
            });
            Body::from_stream(items.chain(tail))
        }
        ReplyBody::UntilGone(gone) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            tokio::spawn(async move {
                loop {
                    if tx.send(Ok(Bytes::from_static(b"data: {}\n\n"))).await.is_err() {
                        gone.notify_one();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            Body::from_stream(stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
            ))
        }
    };
    response.body(body).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Helpers

const KEY: &str = "sk-test-0123456789abcdef";

fn upstream(id: &str, kind: ProviderKind, base_url: String) -> Upstream {
    Upstream {
        id: id.into(),
        kind,
        base_url,
        model: "upstream-model".into(),
        api_version: (kind == ProviderKind::AzureOpenAi).then(|| "2024-10-21".into()),
        api_key: Some(SecretString::from(KEY)),
    }
}

fn openai(id: &str, server: &Server) -> Upstream {
    upstream(id, ProviderKind::OpenAi, server.url("/v1"))
}

/// An address where nothing listens: connecting is refused.
async fn refusing() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

fn fast() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(300),
        first_byte_timeout: Duration::from_millis(300),
        total_timeout: Duration::from_secs(1),
        idle_stream_timeout: Duration::from_millis(200),
        max_attempts_per_upstream: 2,
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
        max_response_bytes: 1 << 20,
        breaker: BreakerConfig { failure_threshold: 100, open_for: Duration::from_secs(60) },
    }
}

fn client(config: ClientConfig) -> Client {
    Client::new(config).unwrap()
}

fn chat() -> Value {
    json!({"model": "caller-alias", "messages": [{"role": "user", "content": "hi"}]})
}

fn complete(sent: Sent) -> Bytes {
    match sent.body {
        SentBody::Complete(body) => body,
        SentBody::Stream(_) => panic!("expected a complete body"),
    }
}

fn stream_of(sent: Sent) -> BoxStream<'static, Result<Bytes, LlmError>> {
    match sent.body {
        SentBody::Stream(stream) => stream,
        SentBody::Complete(_) => panic!("expected a stream"),
    }
}

fn unavailable(error: LlmError) -> Vec<String> {
    match error {
        LlmError::Unavailable { reasons } => reasons,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// What goes on the wire, per provider kind

#[tokio::test]
async fn openai_request_carries_the_bearer_key_and_the_upstream_model() {
    let server = Server::start(vec![Reply::ok()]).await;
    let sent = client(fast()).send(&[openai("a", &server)], &chat(), false, &[]).await.unwrap();

    assert_eq!((sent.upstream, sent.status, sent.attempts), (0, 200, 1));
    assert_eq!(sent.content_type.as_deref(), Some("application/json"));
    assert_eq!(complete(sent), json!({"id": "chatcmpl-1", "choices": []}).to_string());
    let seen = server.seen();
    let [request] = seen.as_slice() else { panic!("expected one request, got {seen:?}") };
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/v1/chat/completions");
    assert_eq!(request.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("accept"), Some("application/json"));
    assert_eq!(request.body["model"], "upstream-model");
    assert_eq!(request.body["messages"], chat()["messages"]);
    assert!(request.body.get("stream").is_none());
}

#[tokio::test]
async fn azure_request_uses_the_deployment_url_the_api_version_and_the_api_key_header() {
    let server = Server::start(vec![Reply::ok()]).await;
    let mut azure = upstream("az", ProviderKind::AzureOpenAi, server.url(""));
    azure.model = "gpt-4o-prod".into();
    client(fast()).send(&[azure], &chat(), false, &[]).await.unwrap();

    let request = &server.seen()[0];
    assert_eq!(request.target, "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21");
    assert_eq!(request.header("api-key"), Some(KEY));
    assert_eq!(request.header("authorization"), None);
    assert!(request.body.get("model").is_none(), "the deployment decides the model: {:?}", request.body);
}

#[tokio::test]
async fn anthropic_request_carries_x_api_key_and_anthropic_version() {
    let server = Server::start(vec![Reply::ok()]).await;
    let anthropic = upstream("an", ProviderKind::Anthropic, server.url(""));
    client(fast()).send(&[anthropic], &chat(), false, &[]).await.unwrap();

    let request = &server.seen()[0];
    assert_eq!(request.target, "/v1/messages");
    assert_eq!(request.header("x-api-key"), Some(KEY));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.body["model"], "upstream-model");
}

#[tokio::test]
async fn anthropic_takes_the_callers_version_and_beta_headers_and_nothing_else() {
    let server = Server::start(vec![Reply::ok()]).await;
    let anthropic = upstream("an", ProviderKind::Anthropic, server.url("/v1/"));
    let extra = [
        ("anthropic-version".to_owned(), "2024-01-01".to_owned()),
        ("Anthropic-Beta".to_owned(), "prompt-caching-2024-07-31".to_owned()),
        ("x-api-key".to_owned(), "caller-key".to_owned()),
        ("authorization".to_owned(), "Bearer caller".to_owned()),
        ("host".to_owned(), "evil.example".to_owned()),
    ];
    client(fast()).send(&[anthropic], &chat(), false, &extra).await.unwrap();

    let request = &server.seen()[0];
    assert_eq!(request.target, "/v1/messages");
    assert_eq!(request.header("anthropic-version"), Some("2024-01-01"));
    assert_eq!(request.header("anthropic-beta"), Some("prompt-caching-2024-07-31"));
    assert_eq!(request.header("x-api-key"), Some(KEY));
    assert_eq!(request.header("authorization"), None);
    assert_ne!(request.header("host"), Some("evil.example"));
}

#[tokio::test]
async fn openai_forwards_no_caller_header() {
    let server = Server::start(vec![Reply::ok()]).await;
    let extra = [
        ("authorization".to_owned(), "Bearer caller".to_owned()),
        ("anthropic-beta".to_owned(), "x".to_owned()),
    ];
    client(fast()).send(&[openai("a", &server)], &chat(), false, &extra).await.unwrap();

    let request = &server.seen()[0];
    assert_eq!(request.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(request.header("anthropic-beta"), None);
}

// ---------------------------------------------------------------------------------------------
// Retries, Retry-After and answers returned as they are

#[tokio::test]
async fn server_error_is_retried_then_succeeds() {
    let server = Server::start(vec![Reply::status(500), Reply::ok()]).await;
    let sent = client(fast()).send(&[openai("a", &server)], &chat(), false, &[]).await.unwrap();

    assert_eq!((sent.upstream, sent.status, sent.attempts), (0, 200, 2));
    assert_eq!(server.hits(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_before_the_next_attempt() {
    let server = Server::start(vec![Reply::status(429).header("retry-after", "1"), Reply::ok()]).await;
    let started = Instant::now();
    let sent = client(fast()).send(&[openai("a", &server)], &chat(), false, &[]).await.unwrap();

    // The clock is paused, so this is the time the client asked to sleep, not a measurement.
    assert!(started.elapsed() >= Duration::from_secs(1), "waited only {:?}", started.elapsed());
    assert_eq!((sent.upstream, sent.status, sent.attempts), (0, 200, 2));
}

#[tokio::test]
async fn retry_after_longer_than_allowed_moves_to_the_next_upstream_at_once() {
    let first = Server::start(vec![Reply::status(429).header("retry-after", "3600")]).await;
    let second = Server::start(vec![Reply::ok()]).await;
    let chain = [openai("a", &first), openai("b", &second)];
    let sent = client(fast()).send(&chain, &chat(), false, &[]).await.unwrap();

    assert_eq!((sent.upstream, sent.status, sent.attempts), (1, 200, 2));
    assert_eq!(first.hits(), 1, "no second attempt on an upstream that asked for an hour");
}

#[tokio::test]
async fn client_error_is_returned_as_is_without_retry_or_fallback() {
    let error = json!({"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}});
    let first = Server::start(vec![Reply::json(400, &error)]).await;
    let second = Server::start(vec![Reply::ok()]).await;
    let chain = [openai("a", &first), openai("b", &second)];
    let sent = client(fast()).send(&chain, &chat(), true, &[]).await.unwrap();

    assert_eq!((sent.upstream, sent.status, sent.attempts), (0, 400, 1));
    assert_eq!(complete(sent), error.to_string(), "an error answer to a streamed request is complete");
    assert_eq!((first.hits(), second.hits()), (1, 0));
}

#[tokio::test]
async fn an_echoed_key_is_scrubbed_from_the_error_returned() {
    let echo = json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}});
    let server = Server::start(vec![Reply::json(401, &echo)]).await;
    let sent = client(fast()).send(&[openai("a", &server)], &chat(), false, &[]).await.unwrap();

    assert_eq!(sent.status, 401);
    let body = String::from_utf8(complete(sent).to_vec()).unwrap();
    assert!(!body.contains(KEY), "{body}");
    assert!(body.contains("Incorrect API key provided: [REDACTED]"), "{body}");
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let first = Server::start(vec![Reply::status(307).header("location", "http://127.0.0.1:1/steal")]).await;
    let second = Server::start(vec![Reply::ok()]).await;
    let chain = [openai("a", &first), openai("b", &second)];
    let sent = client(fast()).send(&chain, &chat(), false, &[]).await.unwrap();

    assert_eq!((sent.upstream, sent.attempts), (1, 2));
    assert_eq!(first.hits(), 1);
}

#[tokio::test]
async fn a_success_that_is_not_json_counts_as_a_failure() {
    let html = Reply::ok()
        .header("content-type", "text/html")
        .body(ReplyBody::Bytes(b"<html>login</html>".to_vec()));
    let first = Server::start(vec![html]).await;
    let second = Server::start(vec![Reply::ok()]).await;
    let chain = [openai("a", &first), openai("b", &second)];
    let sent = client(fast()).send(&chain, &chat(), false, &[]).await.unwrap();

    assert_eq!(sent.upstream, 1);
}

// ---------------------------------------------------------------------------------------------
// Fallback and failure reasons

#[tokio::test]
async fn falls_back_to_the_second_upstream_when_the_first_answers_503() {
    let first = Server::start(vec![Reply::status(503)]).await;
    let second = Server::start(vec![Reply::ok()]).await;
    let chain = [openai("a", &first), openai("b", &second)];
    let sent = client(fast()).send(&chain, &chat(), false, &[]).await.unwrap();

    assert_eq!((sent.upstream, sent.status, sent.attempts), (1, 200, 3));
    assert_eq!((first.hits(), second.hits()), (2, 1));
}

#[tokio::test]
async fn falls_back_to_the_second_upstream_when_the_first_refuses_connections() {
    let second = Server::start(vec![Reply::ok()]).await;
    let chain = [upstream("a", ProviderKind::OpenAi, refusing().await), openai("b", &second)];
    let sent = client(fast()).send(&chain, &chat(), false, &[]).await.unwrap();

    assert_eq!((sent.upstream, sent.status, sent.attempts), (1, 200, 3));
}

#[tokio::test]
async fn every_upstream_failing_gives_one_short_clean_reason_each() {
    let chatty = format!("overloaded\n\u{202E}{KEY} {}", "x".repeat(1000));
    let first = Server::start(vec![Reply::json(503, &json!({"error": {"message": chatty}}))]).await;
    let chain = [openai("a", &first), upstream("b", ProviderKind::OpenAi, refusing().await)];
    let error = client(fast()).send(&chain, &chat(), false, &[]).await.unwrap_err();

    assert_eq!(error.status(), 502);
    let reasons = unavailable(error);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("`a`: status 503 Service Unavailable: overloaded [REDACTED] xxx"),
        "{reasons:?}"
    );
    assert!(reasons[0].ends_with("… (2 attempts)"), "{reasons:?}");
    assert!(reasons[0].chars().count() < 300, "{reasons:?}");
    assert!(reasons[1].starts_with("`b`: could not connect"), "{reasons:?}");
    for reason in &reasons {
        assert!(
            !reason.contains(KEY) && !reason.contains('\n') && !reason.contains('\u{202E}'),
            "{reason:?}"
        );
    }
}

#[tokio::test]
async fn a_misconfigured_upstream_is_skipped() {
    let second = Server::start(vec![Reply::ok()]).await;
    let mut broken = openai("a", &second);
    broken.base_url = "ftp://example.com".into();
    let sent = client(fast()).send(&[broken, openai("b", &second)], &chat(), false, &[]).await.unwrap();

    assert_eq!((sent.upstream, sent.attempts), (1, 1));
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_sent() {
    let client = client(fast());
    assert!(matches!(client.send(&[], &chat(), false, &[]).await, Err(LlmError::NoUpstream)));
    let server = Server::start(vec![Reply::ok()]).await;
    let error = client.send(&[openai("a", &server)], &json!([1]), false, &[]).await.unwrap_err();
    assert!(matches!(error, LlmError::Malformed(_)), "{error:?}");
    assert_eq!(server.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker

#[tokio::test]
async fn the_breaker_opens_skips_the_upstream_and_half_opens_after_open_for() {
    let first = Server::start(vec![Reply::status(503)]).await;
    let second = Server::start(vec![Reply::ok()]).await;
    let config = ClientConfig {
        max_attempts_per_upstream: 1,
        breaker: BreakerConfig { failure_threshold: 2, open_for: Duration::from_millis(150) },
        ..fast()
    };
    let client = client(config);
    let chain = [openai("a", &first), openai("b", &second)];

    for _ in 0..2 {
        assert_eq!(client.send(&chain, &chat(), false, &[]).await.unwrap().upstream, 1);
    }
    assert_eq!(client.breaker_state("a"), BreakerState::Open);
    assert_eq!(client.breaker_state("b"), BreakerState::Closed);

    // Open: the first upstream is not even tried.
    let sent = client.send(&chain, &chat(), false, &[]).await.unwrap();
    assert_eq!((sent.upstream, sent.attempts), (1, 1));
    assert_eq!(first.hits(), 2);

    // Half-open: one trial, which fails and opens the breaker again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client.breaker_state("a"), BreakerState::HalfOpen);
    assert_eq!(client.send(&chain, &chat(), false, &[]).await.unwrap().upstream, 1);
    assert_eq!(first.hits(), 3);
    assert_eq!(client.breaker_state("a"), BreakerState::Open);

    // Half-open again: this trial succeeds and closes it.
    first.then(Reply::ok());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = client.send(&chain, &chat(), false, &[]).await.unwrap();
    assert_eq!(sent.upstream, 0);
    assert_eq!(client.breaker_state("a"), BreakerState::Closed);
}

#[tokio::test]
async fn every_breaker_open_gives_circuit_open() {
    let server = Server::start(vec![Reply::status(500)]).await;
    let config = ClientConfig {
        breaker: BreakerConfig { failure_threshold: 1, open_for: Duration::from_secs(60) },
        ..fast()
    };
    let client = client(config);
    let chain = [openai("a", &server)];

    let reasons = unavailable(client.send(&chain, &chat(), false, &[]).await.unwrap_err());
    assert!(reasons[0].contains("then the circuit opened"), "{reasons:?}");
    let error = client.send(&chain, &chat(), false, &[]).await.unwrap_err();
    assert!(matches!(error, LlmError::CircuitOpen), "{error:?}");
    assert_eq!(error.status(), 503);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_client_error_does_not_count_against_the_breaker() {
    let server = Server::start(vec![Reply::status(400)]).await;
    let config = ClientConfig {
        breaker: BreakerConfig { failure_threshold: 1, open_for: Duration::from_secs(60) },
        ..fast()
    };
    let client = client(config);
    for _ in 0..3 {
        assert_eq!(client.send(&[openai("a", &server)], &chat(), false, &[]).await.unwrap().status, 400);
    }
    assert_eq!(client.breaker_state("a"), BreakerState::Closed);
}

// ---------------------------------------------------------------------------------------------
// Timeouts and limits

#[tokio::test]
async fn a_hanging_upstream_times_out_at_the_first_byte() {
    let server = Server::start(vec![Reply::hang()]).await;
    let config = ClientConfig { max_attempts_per_upstream: 1, ..fast() };
    let error = client(config).send(&[openai("a", &server)], &chat(), false, &[]).await.unwrap_err();

    assert!(matches!(error, LlmError::Timeout), "{error:?}");
    assert_eq!(error.status(), 504);
}

#[tokio::test]
async fn a_hanging_upstream_falls_back_to_the_next() {
    let first = Server::start(vec![Reply::hang()]).await;
    let second = Server::start(vec![Reply::ok()]).await;
    let config = ClientConfig { max_attempts_per_upstream: 1, ..fast() };
    let sent =
        client(config).send(&[openai("a", &first), openai("b", &second)], &chat(), false, &[]).await.unwrap();

    assert_eq!(sent.upstream, 1);
}

#[tokio::test]
async fn a_response_over_the_limit_is_too_large() {
    let big = vec![b' '; 4096];
    let declared = Server::start(vec![Reply::ok().body(ReplyBody::Bytes(big.clone()))]).await;
    let chunked = Server::start(vec![Reply::ok().body(ReplyBody::Chunked(big))]).await;
    let client = client(ClientConfig { max_response_bytes: 1024, ..fast() });

    for server in [&declared, &chunked] {
        let error = client.send(&[openai("a", server)], &chat(), false, &[]).await.unwrap_err();
        assert!(matches!(error, LlmError::TooLarge), "{error:?}");
        assert_eq!(server.hits(), 1, "no retry: the answer would be as large again");
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming

async fn collect(mut stream: BoxStream<'static, Result<Bytes, LlmError>>) -> (Vec<Bytes>, Option<LlmError>) {
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => chunks.push(chunk),
            Err(error) => {
                assert!(stream.next().await.is_none(), "an error item is the last one");
                return (chunks, Some(error));
            }
        }
    }
    (chunks, None)
}

#[tokio::test]
async fn stream_chunks_arrive_as_sent() {
    let events = vec!["data: {\"n\":1}\n\n", "data: {\"n\":2}\n\n", "data: [DONE]\n\n"];
    let server = Server::start(vec![Reply::stream(events.clone(), End::Finish)]).await;
    let sent = client(fast()).send(&[openai("a", &server)], &chat(), true, &[]).await.unwrap();

    assert_eq!(sent.status, 200);
    assert_eq!(sent.content_type.as_deref(), Some("text/event-stream"));
    let (chunks, error) = collect(stream_of(sent)).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(chunks.concat(), events.concat().as_bytes());
    let request = &server.seen()[0];
    assert_eq!(request.header("accept"), Some("text/event-stream"));
    assert_eq!(request.body["stream"], true);
}

#[tokio::test]
async fn an_upstream_cut_mid_stream_yields_an_error_item() {
    let server = Server::start(vec![Reply::stream(vec!["data: {\"n\":1}\n\n"], End::Break)]).await;
    let sent = client(fast()).send(&[openai("a", &server)], &chat(), true, &[]).await.unwrap();

    let (chunks, error) = collect(stream_of(sent)).await;
    assert_eq!(chunks.concat(), b"data: {\"n\":1}\n\n");
    let error = error.unwrap();
    assert!(matches!(error, LlmError::Interrupted(_)), "{error:?}");
    assert_eq!(error.status(), 502);
}

#[tokio::test]
async fn a_quiet_stream_ends_with_a_timeout_item() {
    let server = Server::start(vec![Reply::stream(vec!["data: {\"n\":1}\n\n"], End::Hang)]).await;
    let sent = client(fast()).send(&[openai("a", &server)], &chat(), true, &[]).await.unwrap();

    let (chunks, error) = collect(stream_of(sent)).await;
    assert_eq!(chunks.concat(), b"data: {\"n\":1}\n\n");
    assert!(matches!(error, Some(LlmError::Timeout)), "{error:?}");
}

#[tokio::test]
async fn a_stream_over_the_limit_ends_with_too_large() {
    let server = Server::start(vec![Reply::stream(vec!["0123456789", "0123456789"], End::Finish)]).await;
    let client = client(ClientConfig { max_response_bytes: 15, ..fast() });
    let sent = client.send(&[openai("a", &server)], &chat(), true, &[]).await.unwrap();

    let (chunks, error) = collect(stream_of(sent)).await;
    assert_eq!(chunks.concat(), b"0123456789");
    assert!(matches!(error, Some(LlmError::TooLarge)), "{error:?}");
}

#[tokio::test]
async fn dropping_the_stream_closes_the_upstream_connection() {
    let gone = Arc::new(Notify::new());
    let server = Server::start(vec![Reply::ok().body(ReplyBody::UntilGone(Arc::clone(&gone)))]).await;
    let sent = client(fast()).send(&[openai("a", &server)], &chat(), true, &[]).await.unwrap();
    let mut stream = stream_of(sent);
    assert!(stream.next().await.unwrap().is_ok());

    drop(stream);
    tokio::time::timeout(Duration::from_secs(2), gone.notified())
        .await
        .expect("the upstream should see the client go away");
}

// ---------------------------------------------------------------------------------------------
// The pure parts

#[test]
fn retry_after_reads_seconds_dates_and_milliseconds() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    let headers = |pairs: &[(&'static str, &str)]| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    };
    assert_eq!(retry_after(&headers(&[("retry-after", "7")]), now), Some(Duration::from_secs(7)));
    assert_eq!(retry_after(&headers(&[("retry-after", " 0 ")]), now), Some(Duration::ZERO));
    assert_eq!(
        retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT")]), now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]), now),
        Some(Duration::ZERO)
    );
    assert_eq!(
        retry_after(&headers(&[("retry-after", "99999999999999999999999")]), now),
        Some(Duration::MAX)
    );
    assert_eq!(
        retry_after(&headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]), now),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
    assert_eq!(retry_after(&headers(&[("retry-after", "-3")]), now), None);
    assert_eq!(retry_after(&headers(&[]), now), None);
}

#[test]
fn backoff_doubles_is_capped_and_jittered_into_the_upper_half() {
    let config = ClientConfig {
        base_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        ..ClientConfig::default()
    };
    assert_eq!(backoff(&config, 1, 0), Duration::from_millis(100));
    assert!(backoff(&config, 1, u16::MAX) < Duration::from_millis(200));
    assert!(backoff(&config, 1, u16::MAX) > Duration::from_millis(199));
    assert_eq!(backoff(&config, 2, 0), Duration::from_millis(200));
    assert_eq!(backoff(&config, 3, 0), Duration::from_millis(400));
    assert_eq!(backoff(&config, 4, 0), Duration::from_millis(500), "capped at max_backoff");
    assert_eq!(backoff(&config, u32::MAX, 0), Duration::from_millis(500));
}

#[test]
fn error_messages_are_found_in_either_dialect_and_bounded() {
    let message = |v: Value| error_message(v.to_string().as_bytes());
    assert_eq!(message(json!({"error": {"message": "rate limited"}})).as_deref(), Some("rate limited"));
    assert_eq!(
        message(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
            .as_deref(),
        Some("Overloaded")
    );
    assert_eq!(message(json!({"error": "model not loaded"})).as_deref(), Some("model not loaded"));
    assert_eq!(message(json!({"message": "busy"})).as_deref(), Some("busy"));
    assert_eq!(error_message(b"<html>502 Bad Gateway</html>"), None);
    assert_eq!(error_message(b"{\"error\": {\"code\": 5}}"), None);
}

#[test]
fn error_statuses_are_the_gateway_ones() {
    assert_eq!(LlmError::Unavailable { reasons: vec![] }.status(), 502);
    assert_eq!(LlmError::TooLarge.status(), 502);
    assert_eq!(LlmError::CircuitOpen.status(), 503);
    assert_eq!(LlmError::NoUpstream.status(), 503);
    assert_eq!(LlmError::Timeout.status(), 504);
    assert_eq!(LlmError::Malformed(String::new()).status(), 500);
}

#[test]
fn the_defaults_are_the_documented_ones() {
    let config = ClientConfig::default();
    assert_eq!(config.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.first_byte_timeout, Duration::from_secs(60));
    assert_eq!(config.total_timeout, Duration::from_secs(300));
    assert_eq!(config.idle_stream_timeout, Duration::from_secs(60));
    assert_eq!(config.max_attempts_per_upstream, 2);
    assert_eq!(config.max_response_bytes, 32 << 20);
}

#[test]
fn the_client_and_its_futures_can_cross_threads() {
    fn shared<T: Send + Sync>(_: &T) {}
    fn movable<T: Send>(_: &T) {}
    let client = client(fast());
    shared(&client);
    let body = json!({});
    let future = client.send(&[], &body, true, &[]);
    movable(&future);
}
