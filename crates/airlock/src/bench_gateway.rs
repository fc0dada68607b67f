//! `airlock bench gateway`: the latency the model gateway adds over calling the model provider
//! directly, at a fixed request rate, with the standard redaction profile on; throughput at
//! saturation; and memory. `airlock bench upstream` serves the fake provider alone, so another
//! gateway (LiteLLM, say) can be pointed at the same server and measured in the same run.
//!
//! Everything on Airlock's side is real: a server on a fresh data directory, a route to the
//! provider, an agent's key, redaction and restoration of an e-mail, a phone number and a card
//! number in every prompt, the budget reservation, the vault and the audit entry. The provider
//! is a minimal OpenAI-compatible echo, so the tokens it is sent come back and are restored.
//! Load is open-loop at the given rate and each latency is measured from the moment its request
//! was due, so a backlog shows in the figures rather than in a slower send rate. Every answer
//! is checked (the values restored, the stream complete); a failed check counts as an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use airlock_store::{KeyOwner, NewUser};
use airlock_types::{AgentName, Email, Role};
use anyhow::{Context as _, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::bench::{BenchServer, ms, percentile};

/// How to run the gateway benchmark.
#[derive(Debug, clap::Args)]
pub struct GatewayBench {
    /// Requests per second in the fixed-rate phases.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds per fixed-rate phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Also measure streamed calls (`"stream": true`): time to first and to last byte.
    #[arg(long)]
    stream: bool,
    /// Base URL of another OpenAI-compatible gateway (LiteLLM: `http://127.0.0.1:4000`),
    /// measured with the same load right after Airlock.
    #[arg(long, value_name = "URL")]
    compare: Option<String>,
    /// Bearer key for the comparison gateway.
    #[arg(long, value_name = "KEY")]
    compare_key: Option<String>,
    /// The model name the comparison gateway routes to the same upstream.
    #[arg(long, default_value = "fast")]
    compare_model: String,
    /// What to call the comparison gateway in the report.
    #[arg(long, default_value = "comparison")]
    compare_label: String,
    /// Base URL of an external fake upstream (as `airlock bench upstream` serves it:
    /// `http://127.0.0.1:9100/v1`) instead of one inside this process.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Concurrent clients in the saturation phase (closed loop).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds per saturation phase; 0 skips saturation.
    #[arg(long, default_value_t = 5)]
    saturation_seconds: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// How to run the fake upstream alone.
#[derive(Debug, clap::Args)]
pub struct UpstreamBench {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
}

// ---- the request -------------------------------------------------------------------------

/// The values the standard profile replaces by tokens; the echo must bring each one back.
const VALUES: [&str; 3] = ["dana.whitfield@example.com", "+44 20 7946 0321", "4111 1111 1111 1111"];

/// A support conversation of about 1.5 KB whose last user message carries the values.
fn prompt() -> Value {
    let system = "You are the customer-support assistant for Northwind Outfitters, an online retailer \
        of outdoor clothing and camping equipment. Answer in a friendly, concise tone. Never promise \
        refunds above the order value, never share internal notes, and escalate to a human agent when \
        the customer asks for a chargeback, reports fraud, or is angry after two replies. When you \
        quote an order, give its number, the items, the dispatch date and the carrier. When you are \
        unsure, say so and offer to check. Keep answers under 150 words unless the customer asks for \
        detail. Use the customer's first name once.";
    let first = "Hi, I ordered a two-person tent and a pair of hiking boots last week (order NW-48213) \
        and only the boots arrived. The tracking page says the parcel was delivered in full, but the \
        tent is definitely not here. Can you check what happened?";
    let answer = "I'm sorry the tent is missing. Order NW-48213 shipped in two parcels: the boots went \
        with the first carrier on Monday, and the tent was dispatched separately on Tuesday. The second \
        parcel shows as delivered yesterday afternoon. Could you check with neighbours or a safe place?";
    let last = format!(
        "I checked with the neighbours and there is nothing. Please send a replacement or refund the \
         tent. You can reach me at {} or on {} during the day. If a refund is easier, it should go back \
         to the card I paid with, {}, expiry 09/28. I'd rather have the replacement before the weekend \
         trip, so let me know which option is faster.",
        VALUES[0], VALUES[1], VALUES[2]
    );
    json!([
        {"role": "system", "content": system},
        {"role": "user", "content": first},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": last},
    ])
}

fn request_body(model: &str, stream: bool) -> anyhow::Result<Bytes> {
    let mut body = json!({"model": model, "messages": prompt(), "temperature": 0.2, "max_tokens": 400});
    if stream && let Some(object) = body.as_object_mut() {
        object.insert("stream".into(), Value::Bool(true));
    }
    Ok(Bytes::from(serde_json::to_vec(&body)?))
}

// ---- the fake upstream -------------------------------------------------------------------

/// Bytes per streamed content event, on character boundaries: about four tokens each, and a
/// token minted by Airlock (18 bytes or more) always spans events.
const PIECE: usize = 16;

#[derive(Default)]
struct UpstreamStats {
    requests: AtomicU64,
    /// Requests whose body held one of [`VALUES`] as such, not redacted.
    raw: AtomicU64,
}

/// `POST /v1/chat/completions` answering with "You said: " and the last user message, JSON or
/// SSE (`chat.completion.chunk` events, the usage chunk when asked for, `[DONE]`), with no
/// generation delay; `GET /v1/bench-stats` counts the requests and those that arrived with the
/// values unredacted.
fn upstream_router() -> axum::Router {
    axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(complete))
        .route("/v1/bench-stats", axum::routing::get(stats))
        .with_state(Arc::new(UpstreamStats::default()))
}

async fn stats(State(stats): State<Arc<UpstreamStats>>) -> axum::Json<Value> {
    axum::Json(json!({
        "requests": stats.requests.load(Ordering::Relaxed),
        "raw": stats.raw.load(Ordering::Relaxed),
    }))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn last_user_text(request: &Value) -> String {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else { return String::new() };
    let Some(last) = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    match last.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

async fn complete(State(stats): State<Arc<UpstreamStats>>, body: Bytes) -> Response {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    if VALUES.iter().any(|v| contains(&body, v.as_bytes())) {
        stats.raw.fetch_add(1, Ordering::Relaxed);
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "the body is not JSON").into_response();
    };
    let model = request.get("model").and_then(Value::as_str).unwrap_or("unknown");
    let model = serde_json::to_string(model).unwrap_or_default();
    let reply = format!("You said: {}", last_user_text(&request));
    let input = body.len() / 4;
    let output = reply.len() / 4;
    let usage = format!(
        r#"{{"prompt_tokens":{input},"completion_tokens":{output},"total_tokens":{}}}"#,
        input + output
    );
    let head = format!(r#"{{"id":"chatcmpl-bench","created":1700000000,"model":{model},"#);
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        let content = serde_json::to_string(&reply).unwrap_or_default();
        let answer = format!(
            r#"{head}"object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":{content}}},"finish_reason":"stop"}}],"usage":{usage}}}"#
        );
        return ([(header::CONTENT_TYPE, "application/json")], answer).into_response();
    }
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {head}\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let mut out = chunk(r#"{"role":"assistant","content":""}"#, "null");
    let mut piece = String::new();
    for c in reply.chars() {
        if piece.len() + c.len_utf8() > PIECE {
            let text = serde_json::to_string(&std::mem::take(&mut piece)).unwrap_or_default();
            out.push_str(&chunk(&format!(r#"{{"content":{text}}}"#), "null"));
        }
        piece.push(c);
    }
    if !piece.is_empty() {
        let text = serde_json::to_string(&piece).unwrap_or_default();
        out.push_str(&chunk(&format!(r#"{{"content":{text}}}"#), "null"));
    }
    out.push_str(&chunk("{}", "\"stop\""));
    if request.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true) {
        out.push_str(&format!(
            "data: {head}\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{usage}}}\n\n"
        ));
    }
    out.push_str("data: [DONE]\n\n");
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], out).into_response()
}

/// Serves the fake upstream on `listener` until the process ends.
async fn serve_upstream(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    axum::serve(listener, upstream_router()).await.context("the fake upstream stopped")
}

/// `airlock bench upstream`: the fake provider alone, until interrupted.
pub async fn run_upstream(args: &UpstreamBench) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", args.listen))?;
    eprintln!(
        "fake OpenAI-compatible upstream on http://{}/v1 (POST /chat/completions echoes the last user message)",
        listener.local_addr()?
    );
    tokio::select! {
        served = serve_upstream(listener) => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

// ---- load --------------------------------------------------------------------------------

/// How long a request may take before it counts as an error.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One endpoint under load, with its request.
struct Target {
    client: reqwest::Client,
    url: String,
    key: Option<String>,
    body: Bytes,
    stream: bool,
}

/// One answered request: latency to the first body byte and to the last, from its due time.
#[derive(Clone, Copy)]
struct Sample {
    first: Duration,
    last: Duration,
}

/// Sends the request, reads the whole answer, and checks that it carries every value.
async fn call(target: &Target, due: Instant) -> anyhow::Result<Sample> {
    let mut request = target
        .client
        .post(&target.url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(target.body.clone());
    if let Some(key) = &target.key {
        request = request.bearer_auth(key);
    }
    let mut response = request.send().await?;
    let status = response.status();
    let mut body = Vec::new();
    let mut first = None;
    while let Some(chunk) = response.chunk().await? {
        if first.is_none() {
            first = Some(due.elapsed());
        }
        body.extend_from_slice(&chunk);
    }
    let last = due.elapsed();
    if !status.is_success() {
        let shown: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        bail!("status {status}: {shown}");
    }
    let content = if target.stream { streamed_content(&body)? } else { json_content(&body)? };
    if let Some(missing) = VALUES.iter().find(|v| !content.contains(**v)) {
        bail!("the answer lacks `{missing}`: {content}");
    }
    Ok(Sample { first: first.unwrap_or(last), last })
}

fn json_content(body: &[u8]) -> anyhow::Result<String> {
    let answer: Value = serde_json::from_slice(body).context("the answer is not JSON")?;
    let content = answer.pointer("/choices/0/message/content").and_then(Value::as_str);
    Ok(content.context("the answer has no message content")?.to_owned())
}

/// The content deltas of an SSE answer joined up; the stream must end with `[DONE]`.
fn streamed_content(body: &[u8]) -> anyhow::Result<String> {
    let text = std::str::from_utf8(body).context("the stream is not UTF-8")?;
    let mut content = String::new();
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else { continue };
        let data = data.trim_start();
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).context("an event is not JSON")?;
        if let Some(delta) = chunk.pointer("/choices/0/delta/content").and_then(Value::as_str) {
            content.push_str(delta);
        }
    }
    if !done {
        bail!("the stream ended without `[DONE]`");
    }
    Ok(content)
}

#[derive(Default)]
struct Outcome {
    samples: Vec<Sample>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Outcome {
    fn record(&mut self, result: anyhow::Result<Sample>) {
        match result {
            Ok(sample) => self.samples.push(sample),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
}

/// Sends `count` requests at `rate` per second on `load`, each in its own task, whatever the
/// answers take (open loop). The pacing runs on a thread of its own with the OS's sleep
/// (tens of microseconds late) rather than the runtime's timer (which rounds up to whole
/// milliseconds), so little of the generator's own lateness ends up in the figures.
async fn open_loop(
    load: tokio::runtime::Handle,
    target: Arc<Target>,
    rate: u64,
    count: u64,
) -> anyhow::Result<Outcome> {
    let start = Instant::now() + Duration::from_millis(20);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let tasks = tokio::task::spawn_blocking(move || {
        let mut tasks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for i in 0..count {
            let due = start + interval.mul_f64(i as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let target = Arc::clone(&target);
            tasks.push(load.spawn(async move { call(&target, due).await }));
        }
        tasks
    })
    .await?;
    let mut outcome = Outcome::default();
    for task in tasks {
        outcome.record(task.await.unwrap_or_else(|e| Err(e.into())));
    }
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// `clients` callers each sending their next request as soon as the last is answered, for
/// `length`.
async fn closed_loop(target: Arc<Target>, clients: usize, length: Duration) -> Outcome {
    let start = Instant::now();
    let end = start + length;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let target = Arc::clone(&target);
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            while Instant::now() < end {
                outcome.record(call(&target, Instant::now()).await);
            }
            outcome
        }));
    }
    let mut all = Outcome::default();
    for task in tasks {
        match task.await {
            Ok(mut outcome) => {
                all.samples.append(&mut outcome.samples);
                all.errors += outcome.errors;
                if all.first_error.is_none() {
                    all.first_error = outcome.first_error;
                }
            }
            Err(e) => all.record(Err(e.into())),
        }
    }
    all.elapsed = start.elapsed();
    all
}

/// A single-threaded runtime on its own thread: the load generator (and the in-process
/// upstream) do not queue behind Airlock's tasks, as they would not in separate processes.
struct SideRuntime {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl SideRuntime {
    fn start(name: &str) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        Ok(Self { handle, _stop: stop })
    }
}

// ---- the report --------------------------------------------------------------------------

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        Self {
            p50: ms(percentile(&latencies, 50.0)),
            p90: ms(percentile(&latencies, 90.0)),
            p99: ms(percentile(&latencies, 99.0)),
            max: ms(percentile(&latencies, 100.0)),
        }
    }
}

/// Added latency over the matching direct phase, in milliseconds; negative is noise.
#[derive(Debug, Clone, Copy, Serialize)]
struct Added {
    p50: f64,
    p99: f64,
}

impl Added {
    fn over(phase: &Percentiles, direct: &Percentiles) -> Self {
        Self { p50: phase.p50 - direct.p50, p99: phase.p99 - direct.p99 }
    }
}

#[derive(Debug, Serialize)]
struct PhaseReport {
    name: String,
    stream: bool,
    requests: u64,
    errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
    /// Answers per second over the phase (the offered rate, unless the target fell behind).
    achieved_per_sec: f64,
    /// No errors, and answers came at 95 % of the offered rate or more; otherwise the
    /// latencies are those of a growing queue.
    kept_up: bool,
    /// Latency to the last byte, from each request's due time.
    latency_ms: Percentiles,
    /// Latency to the first body byte (streamed phases).
    #[serde(skip_serializing_if = "Option::is_none")]
    first_byte_ms: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    added_ms: Option<Added>,
    #[serde(skip_serializing_if = "Option::is_none")]
    added_first_byte_ms: Option<Added>,
    /// Requests the upstream received in this phase with a value unredacted (when it counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_saw_values: Option<u64>,
}

#[derive(Debug, Serialize)]
struct SaturationReport {
    name: String,
    clients: usize,
    seconds: f64,
    requests: u64,
    errors: u64,
    per_sec: f64,
    latency_ms: Percentiles,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    rate: u64,
    seconds: u64,
    request_bytes: usize,
    upstream: String,
    phases: Vec<PhaseReport>,
    saturation: Vec<SaturationReport>,
    /// Peak resident memory of this process (VmHWM) before Airlock started and at the end.
    peak_rss_kib_before_airlock: u64,
    peak_rss_kib: u64,
    rss_kib_at_end: u64,
    notes: Vec<String>,
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn machine() -> Machine {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    Machine { cpus, cpu_model }
}

// ---- the benchmark -----------------------------------------------------------------------

/// Runs the phases against one target: a warm-up, then `count` requests at `rate`.
async fn phase(
    load: &SideRuntime,
    name: &str,
    target: Target,
    rate: u64,
    count: u64,
    stats: &StatsProbe,
) -> anyhow::Result<PhaseReport> {
    let target = Arc::new(target);
    let stream = target.stream;
    let warmup = rate.clamp(50, 500);
    open_loop(load.handle.clone(), Arc::clone(&target), rate, warmup).await?;
    stats.quiesce().await;
    let before = stats.raw().await;
    let outcome = open_loop(load.handle.clone(), target, rate, count).await?;
    let after = stats.raw().await;
    stats.quiesce().await;
    let succeeded = outcome.samples.len() as f64;
    let achieved_per_sec = succeeded / outcome.elapsed.as_secs_f64().max(1e-9);
    Ok(PhaseReport {
        name: name.to_owned(),
        stream,
        requests: count,
        errors: outcome.errors,
        first_error: outcome.first_error,
        achieved_per_sec,
        kept_up: outcome.errors == 0 && achieved_per_sec >= 0.95 * rate as f64,
        latency_ms: Percentiles::of(outcome.samples.iter().map(|s| s.last).collect()),
        first_byte_ms: stream.then(|| Percentiles::of(outcome.samples.iter().map(|s| s.first).collect())),
        added_ms: None,
        added_first_byte_ms: None,
        upstream_saw_values: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
    })
}

async fn saturate(
    load: &SideRuntime,
    name: &str,
    target: Target,
    clients: usize,
    length: Duration,
    stats: &StatsProbe,
) -> anyhow::Result<SaturationReport> {
    let target = Arc::new(target);
    load.handle.spawn(closed_loop(Arc::clone(&target), clients, Duration::from_millis(500))).await?;
    let outcome = load.handle.spawn(closed_loop(target, clients, length)).await?;
    stats.quiesce().await;
    let seconds = outcome.elapsed.as_secs_f64();
    Ok(SaturationReport {
        name: name.to_owned(),
        clients,
        seconds,
        requests: outcome.samples.len() as u64 + outcome.errors,
        errors: outcome.errors,
        per_sec: outcome.samples.len() as f64 / seconds.max(1e-9),
        latency_ms: Percentiles::of(outcome.samples.iter().map(|s| s.last).collect()),
    })
}

/// Reads the fake upstream's counters, when the upstream is one of ours.
struct StatsProbe {
    client: reqwest::Client,
    url: String,
}

impl StatsProbe {
    async fn counter(&self, name: &str) -> Option<u64> {
        let stats: Value = self.client.get(&self.url).send().await.ok()?.json().await.ok()?;
        stats.get(name).and_then(Value::as_u64)
    }

    async fn raw(&self) -> Option<u64> {
        self.counter("raw").await
    }

    /// Waits until the upstream has had no request for a second (at most two minutes), so a
    /// gateway still working through a backlog its callers gave up on does not slow the next
    /// phase; without counters, waits a second.
    async fn quiesce(&self) {
        let Some(mut last) = self.counter("requests").await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut still_since = Instant::now();
        while Instant::now() < deadline && still_since.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.counter("requests").await.unwrap_or(last);
            if now != last {
                last = now;
                still_since = Instant::now();
            }
        }
    }
}

/// Airlock on a fresh data directory, with an agent's key and the alias `fast` routed to the
/// upstream.
struct Airlock {
    base: String,
    key: String,
    server: BenchServer,
}

async fn start_airlock(upstream: &str) -> anyhow::Result<Airlock> {
    let server = BenchServer::start(|_| {}).await?;
    let (base, store, scope) = (server.base.clone(), server.store.clone(), server.scope.clone());
    let admin = NewUser {
        email: Email::parse("admin@bench.example")?,
        name: "bench admin".into(),
        roles: [Role::Admin].into_iter().collect(),
        password: None,
    };
    let admin = store.create_user(&scope, admin).await?;
    let admin_key = store.create_api_key(&scope, KeyOwner::User(admin.id), "bench admin", None).await?;
    let agent = store.create_agent(&scope, &AgentName::parse("bench-agent")?, "benchmark").await?;
    let key = store.create_api_key(&scope, KeyOwner::Agent(agent.id), "bench", None).await?;

    let routes = json!({
        "routes": [{"provider": "openai", "base_url": upstream, "model": "gpt-test", "api_key": "sk-bench-upstream"}],
        "input_cents_per_mtok": 15, "output_cents_per_mtok": 60,
    });
    reqwest::Client::new()
        .put(format!("{base}/v1/model-routes/fast"))
        .bearer_auth(admin_key.secret.expose())
        .json(&routes)
        .send()
        .await?
        .error_for_status()
        .context("cannot route the alias `fast` to the upstream")?;
    Ok(Airlock { base, key: key.secret.expose().to_owned(), server })
}

/// Runs the benchmark and prints the report.
pub async fn run(args: &GatewayBench) -> anyhow::Result<()> {
    if args.rate == 0 || args.seconds == 0 {
        bail!("`--rate` and `--seconds` must be positive");
    }
    let count = args.rate.saturating_mul(args.seconds);
    let load = SideRuntime::start("bench-load")?;
    let _upstream_runtime;
    let upstream = match &args.upstream {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let side = SideRuntime::start("bench-upstream")?;
            let listener = side.handle.spawn(tokio::net::TcpListener::bind("127.0.0.1:0")).await??;
            let addr = listener.local_addr()?;
            side.handle.spawn(serve_upstream(listener));
            _upstream_runtime = side;
            format!("http://{addr}/v1")
        }
    };
    let probe = StatsProbe { client: reqwest::Client::new(), url: format!("{upstream}/bench-stats") };
    let rss_before = status_kib("VmHWM:");
    let airlock = start_airlock(&upstream).await?;

    // Each target gets its own pool, made and used on the load generator's runtime.
    let client = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(TIMEOUT)
            .build()
            .context("cannot build an HTTP client")
    };
    let direct = |stream| -> anyhow::Result<Target> {
        Ok(Target {
            client: client()?,
            url: format!("{upstream}/chat/completions"),
            key: Some("sk-bench-upstream".into()),
            body: request_body("gpt-test", stream)?,
            stream,
        })
    };
    let through = |stream| -> anyhow::Result<Target> {
        Ok(Target {
            client: client()?,
            url: format!("{}/v1/chat/completions", airlock.base),
            key: Some(airlock.key.clone()),
            body: request_body("fast", stream)?,
            stream,
        })
    };
    let compare = |stream, base: &str| -> anyhow::Result<Target> {
        Ok(Target {
            client: client()?,
            url: format!("{}/v1/chat/completions", base.trim_end_matches('/')),
            key: args.compare_key.clone(),
            body: request_body(&args.compare_model, stream)?,
            stream,
        })
    };
    let label = &args.compare_label;

    let mut phases = Vec::new();
    let direct_json = phase(&load, "upstream directly", direct(false)?, args.rate, count, &probe).await?;
    let airlock_json = phase(&load, "through Airlock", through(false)?, args.rate, count, &probe).await?;
    phases.push(direct_json);
    phases.push(airlock_json);
    if args.stream {
        phases.push(phase(&load, "upstream directly", direct(true)?, args.rate, count, &probe).await?);
        phases.push(phase(&load, "through Airlock", through(true)?, args.rate, count, &probe).await?);
    }
    if let Some(base) = &args.compare {
        phases.push(phase(&load, label, compare(false, base)?, args.rate, count, &probe).await?);
        if args.stream {
            phases.push(phase(&load, label, compare(true, base)?, args.rate, count, &probe).await?);
        }
    }
    for stream in [false, true] {
        let Some(base) = phases.iter().find(|p| p.stream == stream).map(|p| (p.latency_ms, p.first_byte_ms))
        else {
            continue;
        };
        for p in phases.iter_mut().filter(|p| p.stream == stream).skip(1) {
            p.added_ms = Some(Added::over(&p.latency_ms, &base.0));
            p.added_first_byte_ms = p.first_byte_ms.zip(base.1).map(|(f, b)| Added::over(&f, &b));
        }
    }

    let mut saturation = Vec::new();
    if args.saturation_seconds > 0 {
        let length = Duration::from_secs(args.saturation_seconds);
        saturation
            .push(saturate(&load, "upstream directly", direct(false)?, args.clients, length, &probe).await?);
        saturation
            .push(saturate(&load, "through Airlock", through(false)?, args.clients, length, &probe).await?);
        if let Some(base) = &args.compare {
            saturation
                .push(saturate(&load, label, compare(false, base)?, args.clients, length, &probe).await?);
        }
    }
    let peak = status_kib("VmHWM:");
    let rss_end = status_kib("VmRSS:");
    airlock.server.stop().await;

    let mut notes = vec![
        format!("latency is measured from each request's due time (open loop); 'added' is the phase's percentile minus the direct phase's (stream vs stream), so negative values are noise; a request unanswered in {} s counts as an error", TIMEOUT.as_secs()),
        format!(
            "the load generator{} and Airlock run in this one process and share the machine's {} CPUs; peak RSS covers all of them",
            if args.upstream.is_some() { "" } else { ", the fake upstream" },
            machine().cpus
        ),
        "Airlock: standard redaction profile, every prompt carries an e-mail, a phone number and a card number that are tokenized, sent, echoed and restored; durable audit log, budget reservation and token vault on a fresh SQLite data directory".to_owned(),
        "the fake upstream answers at once (no generation delay) and sends a stream in one write, so time to first byte is close to time to last byte".to_owned(),
    ];
    if args.compare.is_some() {
        notes.push(format!(
            "{label} is measured with the same load after Airlock, in its own process(es), against the same upstream; it redacts nothing, so this compares proxy overhead"
        ));
    }
    let report = Report {
        machine: machine(),
        rate: args.rate,
        seconds: args.seconds,
        request_bytes: request_body("fast", false)?.len(),
        upstream: if args.upstream.is_some() { upstream.clone() } else { format!("{upstream} (in process)") },
        phases,
        saturation,
        peak_rss_kib_before_airlock: rss_before,
        peak_rss_kib: peak,
        rss_kib_at_end: rss_end,
        notes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "airlock bench gateway: {} req/s for {} s per phase, {}-byte chat request, upstream {}",
        r.rate, r.seconds, r.request_bytes, r.upstream
    );
    println!("machine: {} CPUs, {}", r.machine.cpus, r.machine.cpu_model);
    println!();
    println!(
        "{:<30} {:>6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "last byte, ms", "reqs", "errs", "req/s", "p50", "p90", "p99", "max", "+p50", "+p99"
    );
    let added = |a: Option<Added>| a.map_or((String::new(), String::new()), |a| (fmt(a.p50), fmt(a.p99)));
    for p in &r.phases {
        let name = if p.stream { format!("{} (stream)", p.name) } else { p.name.clone() };
        let (a50, a99) = added(p.added_ms);
        let l = p.latency_ms;
        println!(
            "{name:<30} {:>6} {:>5} {:>8.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {a50:>9} {a99:>9}",
            p.requests, p.errors, p.achieved_per_sec, l.p50, l.p90, l.p99, l.max
        );
    }
    if r.phases.iter().any(|p| p.first_byte_ms.is_some()) {
        println!();
        println!(
            "{:<30} {:>6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "first byte (stream), ms", "", "", "", "p50", "p90", "p99", "max", "+p50", "+p99"
        );
        for p in r.phases.iter().filter(|p| p.stream) {
            let Some(f) = p.first_byte_ms else { continue };
            let (a50, a99) = added(p.added_first_byte_ms);
            println!(
                "{:<30} {:>6} {:>5} {:>8} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {a50:>9} {a99:>9}",
                p.name, "", "", "", f.p50, f.p90, f.p99, f.max
            );
        }
    }
    for p in &r.phases {
        let name = if p.stream { format!("{} (stream)", p.name) } else { p.name.clone() };
        if !p.kept_up {
            println!(
                "  {name} did not keep up with {} req/s: {:.0} answers/s, {} errors; its latencies are those of a growing queue",
                r.rate, p.achieved_per_sec, p.errors
            );
        }
        if let Some(e) = &p.first_error {
            println!("  {name}: first error: {e}");
        }
    }
    let seen: Vec<String> = r
        .phases
        .iter()
        .filter_map(|p| {
            let stream = if p.stream { ", stream" } else { "" };
            p.upstream_saw_values.map(|n| format!("{}{stream}: {n}", p.name))
        })
        .collect();
    if !seen.is_empty() {
        println!("requests that reached the upstream with a value unredacted: {}", seen.join("; "));
    }
    if !r.saturation.is_empty() {
        println!();
        println!(
            "{:<30} {:>7} {:>7} {:>5} {:>8} {:>8} {:>8}",
            "saturation (closed loop)", "clients", "reqs", "errs", "req/s", "p50 ms", "p99 ms"
        );
        for s in &r.saturation {
            println!(
                "{:<30} {:>7} {:>7} {:>5} {:>8.0} {:>8.3} {:>8.3}",
                s.name, s.clients, s.requests, s.errors, s.per_sec, s.latency_ms.p50, s.latency_ms.p99
            );
        }
    }
    println!();
    println!(
        "peak RSS of this process: {:.1} MiB ({:.1} MiB before Airlock started); RSS at the end {:.1} MiB",
        r.peak_rss_kib as f64 / 1024.0,
        r.peak_rss_kib_before_airlock as f64 / 1024.0,
        r.rss_kib_at_end as f64 / 1024.0
    );
    for note in &r.notes {
        println!("note: {note}");
    }
}

fn fmt(v: f64) -> String {
    format!("{v:+.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_about_one_and_a_half_kilobytes() {
        let len = request_body("fast", false).unwrap().len();
        assert!((1300..=1900).contains(&len), "{len} bytes");
    }

    #[test]
    fn a_stream_of_deltas_joins_up_and_must_end_with_done() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"You \"}}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"said\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(streamed_content(body.as_bytes()).unwrap(), "You said");
        assert!(streamed_content(b"data: {\"choices\":[]}\n\n").is_err());
    }

    #[tokio::test]
    async fn the_fake_upstream_echoes_the_last_user_message_both_ways() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_upstream(listener));
        let client = reqwest::Client::new();
        for stream in [false, true] {
            let target = Target {
                client: client.clone(),
                url: format!("http://{addr}/v1/chat/completions"),
                key: None,
                body: request_body("m", stream).unwrap(),
                stream,
            };
            call(&target, Instant::now()).await.unwrap();
        }
        let stats: Value =
            client.get(format!("http://{addr}/v1/bench-stats")).send().await.unwrap().json().await.unwrap();
        assert_eq!(stats, json!({"requests": 2, "raw": 2}));
    }
}
