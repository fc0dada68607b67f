//! A model provider on loopback that speaks the real wire formats: OpenAI Chat Completions
//! (`POST /v1/chat/completions`, JSON or SSE with `chat.completion.chunk` events, the usage
//! chunk and `[DONE]`) and Anthropic Messages (`POST /v1/messages`, JSON or SSE with
//! `message_start` … `message_stop`). It records every request, and by default answers by
//! echoing the last user text back, as text and as a tool call's arguments, streamed a few
//! bytes per event, so a test can see both what left Airlock and what came back. It can
//! also fail on command: a status, a hang, malformed JSON, or a stream cut off midway; or
//! answer with a fixed text, as a model judge answers with its verdict.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What the provider does with the next requests.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Echo the last user text (the default).
    Echo,
    /// Answer with this status and body.
    Status(u16, Value),
    /// Never answer.
    Hang,
    /// Answer 200 with a body that is not JSON.
    Malformed,
    /// Stream part of the echo, then drop the connection.
    CutOff,
    /// Stream the echo slowly (one event per 100 ms), noting when the client went away.
    Slow,
    /// Answer (not streamed) with this assistant text, as a model judge's verdict would come.
    Answer(String),
}

/// A request the provider received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path.
    #[allow(dead_code, reason = "shown by Debug when a test fails")]
    pub path: String,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as JSON.
    pub body: Value,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    modes: Vec<Mode>,
    /// Slow streams whose reader went away before the end.
    abandoned: usize,
}

/// The running provider.
#[derive(Clone)]
pub struct Provider {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    shared: Arc<Mutex<Shared>>,
}

impl Provider {
    /// Starts a provider on an ephemeral loopback port.
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new()
            .route("/v1/chat/completions", axum::routing::post(openai))
            .route("/v1/messages", axum::routing::post(anthropic))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base: format!("http://{addr}"), shared }
    }

    /// The next requests get these answers, in order; after them, `Echo`.
    pub fn then(&self, modes: Vec<Mode>) {
        self.lock().modes = modes;
    }

    /// How many slow streams lost their reader before the end.
    pub fn abandoned(&self) -> usize {
        self.lock().abandoned
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn take(shared: &Mutex<Shared>, path: &str, headers: &HeaderMap, body: &Value) -> Mode {
    let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
    shared.received.push(Received {
        path: path.to_owned(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: body.clone(),
    });
    if shared.modes.is_empty() { Mode::Echo } else { shared.modes.remove(0) }
}

/// The text of the last user message, whatever its shape.
fn last_user_text(body: &Value) -> String {
    let Some(messages) = body["messages"].as_array() else { return String::new() };
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "user") else { return String::new() };
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str().or_else(|| p["content"].as_str()))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn failure(mode: &Mode) -> Option<Response> {
    match mode {
        Mode::Status(code, body) => Some(
            (
                StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                axum::Json(body.clone()),
            )
                .into_response(),
        ),
        Mode::Malformed => Some(
            ([(header::CONTENT_TYPE, "application/json")], "{\"id\": \"x\", \"choices\": [").into_response(),
        ),
        Mode::Echo | Mode::Hang | Mode::CutOff | Mode::Slow | Mode::Answer(_) => None,
    }
}

async fn hang() -> Response {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::OK.into_response()
}

/// Splits text into pieces of at most 3 bytes on character boundaries, so any token in it
/// arrives in several events.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if current.len() + c.len_utf8() > 3 {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Sends the events one per 100 ms; counts the stream as abandoned when a send fails.
fn slow_sse(events: Vec<(Option<&'static str>, String)>, shared: Arc<Mutex<Shared>>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
    tokio::spawn(async move {
        for (event, data) in events {
            let mut frame = String::new();
            if let Some(event) = event {
                frame.push_str(&format!("event: {event}\n"));
            }
            frame.push_str(&format!("data: {data}\n\n"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tx.send(Ok(Bytes::from(frame))).await.is_err() {
                shared.lock().unwrap_or_else(PoisonError::into_inner).abandoned += 1;
                return;
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(stream)).into_response()
}

fn sse(events: Vec<(Option<&'static str>, String)>, cut_after: Option<usize>) -> Response {
    let mut frames: Vec<Result<Bytes, Infallible>> = Vec::new();
    for (i, (event, data)) in events.into_iter().enumerate() {
        if cut_after.is_some_and(|n| i >= n) {
            break;
        }
        let mut frame = String::new();
        if let Some(event) = event {
            frame.push_str(&format!("event: {event}\n"));
        }
        frame.push_str(&format!("data: {data}\n\n"));
        frames.push(Ok(Bytes::from(frame)));
    }
    let cut = cut_after.is_some();
    let stream = futures_util::stream::iter(frames);
    let body =
        if cut {
            // End with an error so the connection is reset rather than closed cleanly.
            use futures_util::StreamExt as _;
            Body::from_stream(stream.map(|f| f.map_err(|_| std::io::Error::other("never"))).chain(
                futures_util::stream::once(async { Err(std::io::Error::other("provider went away")) }),
            ))
        } else {
            Body::from_stream(stream)
        };
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

async fn openai(State(shared): State<Arc<Mutex<Shared>>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mode = take(&shared, "/v1/chat/completions", &headers, &request);
    if let Some(answer) = failure(&mode) {
        return answer;
    }
    if matches!(mode, Mode::Hang) {
        return hang().await;
    }
    let text = last_user_text(&request);
    let model = request["model"].as_str().unwrap_or("unknown").to_owned();
    if let Mode::Answer(answer) = &mode {
        return axum::Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": text.len() as u64 / 4 + 10, "completion_tokens": answer.len() as u64 / 4 + 1, "total_tokens": 0}
        }))
        .into_response();
    }
    let arguments = json!({"note": text}).to_string();
    let (prompt_tokens, completion_tokens) = (text.len() as u64 / 4 + 10, text.len() as u64 / 4 + 5);
    let with_tool = request["tools"].is_array();
    if request["stream"] != true {
        let mut message = json!({"role": "assistant", "content": format!("You said: {text}")});
        if with_tool {
            message["tool_calls"] = json!([{"id": "call_1", "type": "function", "function": {"name": "note", "arguments": arguments}}]);
        }
        return axum::Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": if with_tool { "tool_calls" } else { "stop" }}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut events = vec![(None, chunk(json!({"role": "assistant", "content": ""}), Value::Null))];
    for piece in pieces(&format!("You said: {text}")) {
        events.push((None, chunk(json!({"content": piece}), Value::Null)));
    }
    if with_tool {
        events.push((None, chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "note", "arguments": ""}}]}), Value::Null)));
        for piece in pieces(&arguments) {
            events.push((
                None,
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), Value::Null),
            ));
        }
    }
    events.push((None, chunk(json!({}), json!(if with_tool { "tool_calls" } else { "stop" }))));
    if request["stream_options"]["include_usage"] == true {
        events.push((None, json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}}).to_string()));
    }
    events.push((None, "[DONE]".to_owned()));
    if matches!(mode, Mode::Slow) {
        return slow_sse(events, shared);
    }
    let cut = matches!(mode, Mode::CutOff).then_some(events.len() / 2);
    sse(events, cut)
}

async fn anthropic(State(shared): State<Arc<Mutex<Shared>>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mode = take(&shared, "/v1/messages", &headers, &request);
    if let Some(answer) = failure(&mode) {
        return answer;
    }
    if matches!(mode, Mode::Hang) {
        return hang().await;
    }
    let text = last_user_text(&request);
    let model = request["model"].as_str().unwrap_or("unknown").to_owned();
    if let Mode::Answer(answer) = &mode {
        return axum::Json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": text.len() as u64 / 4 + 10, "output_tokens": answer.len() as u64 / 4 + 1}
        }))
        .into_response();
    }
    let with_tool = request["tools"].is_array();
    let (input_tokens, output_tokens) = (text.len() as u64 / 4 + 10, text.len() as u64 / 4 + 5);
    if request["stream"] != true {
        let mut content = vec![json!({"type": "text", "text": format!("You said: {text}")})];
        if with_tool {
            content
                .push(json!({"type": "tool_use", "id": "toolu_1", "name": "note", "input": {"note": text}}));
        }
        return axum::Json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": if with_tool { "tool_use" } else { "end_turn" }, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}
        }))
        .into_response();
    }
    let mut events: Vec<(Option<&'static str>, String)> = vec![(
        Some("message_start"),
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input_tokens, "output_tokens": 1}}})
        .to_string(),
    )];
    events.push((
        Some("content_block_start"),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            .to_string(),
    ));
    events.push((Some("ping"), json!({"type": "ping"}).to_string()));
    for piece in pieces(&format!("You said: {text}")) {
        events.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}).to_string()));
    }
    events.push((Some("content_block_stop"), json!({"type": "content_block_stop", "index": 0}).to_string()));
    if with_tool {
        events.push((Some("content_block_start"), json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "note", "input": {}}}).to_string()));
        for piece in pieces(&json!({"note": text}).to_string()) {
            events.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": piece}}).to_string()));
        }
        events.push((
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 1}).to_string(),
        ));
    }
    events.push((Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": if with_tool { "tool_use" } else { "end_turn" }, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}).to_string()));
    events.push((Some("message_stop"), json!({"type": "message_stop"}).to_string()));
    let cut = matches!(mode, Mode::CutOff).then_some(events.len() / 2);
    sse(events, cut)
}
