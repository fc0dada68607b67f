//! The model client: sends one already-redacted request along a fallback chain of upstreams and
//! hands back the answer, complete or as a byte stream.
//!
//! It owns reliability and nothing else (no tenant policy): per-phase timeouts, retries of
//! 408/409/429/5xx, connect errors and timeouts with exponential backoff, jitter and
//! `Retry-After`, fallback to the next upstream, a circuit breaker per upstream, a cap on
//! response size, and an idle timeout between stream chunks. It never follows a redirect, so a
//! key only ever goes to its own upstream, and never logs a key, a prompt or a response body:
//! what it says about a failure is a status line and at most 200 sanitised characters of the
//! upstream's error message, with the key scrubbed out.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::{self, BoxStream};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::Value;
use tokio::time::Instant;

use crate::breaker::{BreakerConfig, BreakerState, Breakers};
use crate::upstream::{Prepared, Upstream, one_line};

/// The most of a failed answer's body read, to find its error message.
const ERROR_BODY_BYTES: usize = 16 << 10;
/// The longest wait for a failed answer's body.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(2);
/// The most characters of an upstream's error message kept in a failure reason.
const ERROR_MESSAGE_CHARS: usize = 200;

/// How the client connects, waits, retries and limits. Every timeout applies to one attempt.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long to wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// How long to wait, from sending, for the response headers.
    pub first_byte_timeout: Duration,
    /// How long a non-streamed attempt may take in all, the whole body included.
    pub total_timeout: Duration,
    /// The longest gap between two chunks of a streamed response.
    pub idle_stream_timeout: Duration,
    /// How many times a request may be sent to one upstream before falling back to the next;
    /// 0 counts as 1.
    pub max_attempts_per_upstream: u32,
    /// The backoff before the second attempt; it doubles for each later one.
    pub base_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured: an upstream that asks for a longer wait is left for
    /// the next one at once.
    pub max_retry_after: Duration,
    /// The largest response body accepted, streamed or not; a larger one is refused, not
    /// truncated.
    pub max_response_bytes: usize,
    /// When a breaker opens, and for how long.
    pub breaker: BreakerConfig,
}

impl Default for ClientConfig {
    /// 5 s to connect, 60 s to the first byte, 300 s for a whole non-streamed answer, 60 s
    /// between stream chunks, 2 attempts per upstream, backoff from 200 ms to 5 s, `Retry-After`
    /// up to 10 s, 32 MiB per response.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(300),
            idle_stream_timeout: Duration::from_secs(60),
            max_attempts_per_upstream: 2,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(10),
            max_response_bytes: 32 << 20,
            breaker: BreakerConfig::default(),
        }
    }
}

/// Why a request got no answer to hand back. Messages name no key and quote no body.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The fallback chain is empty.
    #[error("no upstream is configured")]
    NoUpstream,
    /// Every upstream failed; one short reason per upstream, in chain order.
    #[error("every upstream failed: {}", .reasons.join("; "))]
    Unavailable {
        /// `` `id`: what went wrong `` for each upstream, without secrets or bodies beyond
        /// the upstream's short error message.
        reasons: Vec<String>,
    },
    /// Every upstream's circuit breaker is open.
    #[error("every upstream's circuit breaker is open")]
    CircuitOpen,
    /// Every attempt timed out, or a stream went quiet for longer than the idle timeout.
    #[error("the upstream timed out")]
    Timeout,
    /// A streamed response broke off before its end.
    #[error("the upstream's stream broke off ({0})")]
    Interrupted(String),
    /// The response is larger than `max_response_bytes`.
    #[error("the upstream's response is larger than the limit")]
    TooLarge,
    /// The request cannot be sent: its body is not a JSON object.
    #[error("the request is malformed: {0}")]
    Malformed(String),
    /// The HTTP client could not be built (for instance, no TLS roots could be loaded).
    #[error("the HTTP client could not be built")]
    Setup(#[source] reqwest::Error),
}

impl LlmError {
    /// The HTTP status to answer the caller with: 502 when upstreams failed or answered badly,
    /// 503 when none could be tried, 504 on timeouts, 500 for Airlock's own mistakes.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Unavailable { .. } | Self::Interrupted(_) | Self::TooLarge => 502,
            Self::NoUpstream | Self::CircuitOpen => 503,
            Self::Timeout => 504,
            Self::Malformed(_) | Self::Setup(_) => 500,
        }
    }
}

/// An upstream's answer: a success, or an error that is the caller's own (4xx other than
/// 408, 409 and 429), returned as the upstream said it.
#[derive(Debug)]
pub struct Sent {
    /// The index in the chain of the upstream that answered.
    pub upstream: usize,
    /// The upstream's HTTP status.
    pub status: u16,
    /// How many requests were sent, over all upstreams.
    pub attempts: u32,
    /// The upstream's `Content-Type`, if it sent one.
    pub content_type: Option<String>,
    /// The body.
    pub body: SentBody,
}

/// The body of an answer.
pub enum SentBody {
    /// The whole body (the upstream's key, if it echoed it, replaced by `[REDACTED]`).
    Complete(Bytes),
    /// A 2xx answer to a streamed request, chunk by chunk as the upstream sends them (whatever
    /// its content type: an upstream that ignored `stream` sends JSON here). An error
    /// item ([`LlmError::Timeout`] after `idle_stream_timeout` without a chunk,
    /// [`LlmError::Interrupted`], [`LlmError::TooLarge`]) is the last one. Dropping the stream
    /// closes the upstream connection.
    Stream(BoxStream<'static, Result<Bytes, LlmError>>),
}

impl fmt::Debug for SentBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the content: it is a prompt's answer.
        match self {
            Self::Complete(body) => write!(f, "Complete({} bytes)", body.len()),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// Sends model requests. Cheap to clone: clones share one connection pool and one set of
/// circuit breakers.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    config: Arc<ClientConfig>,
    breakers: Arc<Breakers>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("config", &self.config).finish_non_exhaustive()
    }
}

/// How one attempt ended.
enum Attempt {
    /// An answer to hand back.
    Answered { status: u16, content_type: Option<String>, body: SentBody },
    /// A 2xx answer over the size limit: no other attempt would do better.
    TooLarge,
    /// A failure worth retrying, here or on the next upstream.
    Failed(Failure),
    /// This upstream cannot serve the request (it redirects): on to the next one.
    Skip(String),
}

struct Failure {
    reason: String,
    /// How long the upstream asked to wait before the next attempt.
    retry_after: Option<Duration>,
    /// Whether the circuit breaker counts it.
    counts: bool,
    timed_out: bool,
}

impl Failure {
    fn counted(reason: String) -> Self {
        Self { reason, retry_after: None, counts: true, timed_out: false }
    }

    fn timed_out(reason: String) -> Self {
        Self { reason, retry_after: None, counts: true, timed_out: true }
    }
}

impl Client {
    /// A client with one connection pool that never follows redirects (a redirect would take
    /// the key elsewhere), speaks TLS through rustls, and gives up connecting after
    /// `connect_timeout`.
    pub fn new(config: ClientConfig) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(LlmError::Setup)?;
        let breakers = Arc::new(Breakers::new(config.breaker));
        Ok(Self { http, config: Arc::new(config), breakers })
    }

    /// Sends `body` to the first healthy upstream of `chain`, retrying 408, 409, 429, 5xx,
    /// connect errors and timeouts with exponential backoff and jitter (waiting at least what
    /// `Retry-After` or `retry-after-ms` asks, in seconds or as an HTTP-date, unless that is
    /// over `max_retry_after`, in which case the next upstream is tried at once), and falling
    /// back to the next upstream after `max_attempts_per_upstream`. Upstreams whose breaker is
    /// open are skipped.
    ///
    /// A 2xx answer, or a 4xx other than 408, 409 and 429 (the caller's own error, which the
    /// caller should see as the provider said it), is returned as is, without retry or fallback.
    /// A stream is returned only for a 2xx answer when `stream` is set; a non-streamed 2xx body
    /// must be JSON (otherwise the upstream is treated as failing).
    ///
    /// Of `extra_headers` (name, value), only those the upstream's kind takes from callers are
    /// forwarded: `anthropic-version` and `anthropic-beta` to Anthropic, none to the others
    /// (see [`ProviderKind`](crate::upstream::ProviderKind)). The body's `model` and `stream`
    /// fields are set for each upstream (see [`Upstream::model`]). There is no deadline over
    /// the whole chain: wrap the call in one if the caller needs it.
    pub async fn send(
        &self,
        chain: &[Upstream],
        body: &Value,
        stream: bool,
        extra_headers: &[(String, String)],
    ) -> Result<Sent, LlmError> {
        if chain.is_empty() {
            return Err(LlmError::NoUpstream);
        }
        if !body.is_object() {
            return Err(LlmError::Malformed("the request body is not a JSON object".into()));
        }
        let max_attempts = self.config.max_attempts_per_upstream.max(1);
        let mut reasons = Vec::with_capacity(chain.len());
        let mut attempts: u32 = 0;
        let mut skipped_open = 0;
        let mut only_timeouts = true;

        for (index, upstream) in chain.iter().enumerate() {
            let id = one_line(&upstream.id, 64);
            let prepared = match upstream.prepare(body, stream, extra_headers) {
                Ok(prepared) => prepared,
                Err(problem) => {
                    tracing::warn!(upstream = %id, %problem, "model upstream is misconfigured; skipped");
                    reasons.push(format!("`{id}`: misconfigured: {problem}"));
                    only_timeouts = false;
                    continue;
                }
            };
            let mut tried: u32 = 0;
            let mut last = String::new();
            loop {
                let Some(admission) = self.breakers.admit(&upstream.id) else {
                    if tried == 0 {
                        skipped_open += 1;
                        reasons.push(format!("`{id}`: circuit open"));
                    } else {
                        reasons.push(format!(
                            "`{id}`: {last} ({}, then the circuit opened)",
                            attempts_text(tried)
                        ));
                    }
                    break;
                };
                tried += 1;
                attempts = attempts.saturating_add(1);
                match self.attempt(upstream, &prepared, stream).await {
                    Attempt::Answered { status, content_type, body } => {
                        admission.succeeded();
                        tracing::debug!(upstream = %id, status, attempts, "model upstream answered");
                        return Ok(Sent { upstream: index, status, attempts, content_type, body });
                    }
                    Attempt::TooLarge => {
                        admission.succeeded();
                        let limit = self.config.max_response_bytes;
                        tracing::warn!(upstream = %id, limit, "model response too large");
                        return Err(LlmError::TooLarge);
                    }
                    Attempt::Skip(reason) => {
                        drop(admission);
                        tracing::warn!(upstream = %id, %reason, "model upstream skipped");
                        reasons.push(format!("`{id}`: {reason}"));
                        only_timeouts = false;
                        break;
                    }
                    Attempt::Failed(failure) => {
                        if failure.counts {
                            admission.failed();
                        } else {
                            drop(admission);
                        }
                        only_timeouts &= failure.timed_out;
                        tracing::warn!(
                            upstream = %id,
                            attempt = tried,
                            reason = %failure.reason,
                            "model upstream attempt failed"
                        );
                        last = failure.reason;
                        if tried >= max_attempts {
                            reasons.push(format!("`{id}`: {last} ({})", attempts_text(tried)));
                            break;
                        }
                        let asked = failure.retry_after.unwrap_or_default();
                        if asked > self.config.max_retry_after {
                            reasons.push(format!(
                                "`{id}`: {last} (asked to wait {} s, longer than allowed)",
                                asked.as_secs()
                            ));
                            break;
                        }
                        let jitter = u16::from_be_bytes(airlock_crypto::random_array::<2>());
                        tokio::time::sleep(backoff(&self.config, tried, jitter).max(asked)).await;
                    }
                }
            }
        }

        let error = if skipped_open == chain.len() {
            LlmError::CircuitOpen
        } else if only_timeouts && attempts > 0 {
            LlmError::Timeout
        } else {
            LlmError::Unavailable { reasons }
        };
        tracing::warn!(error = %error, "no model upstream answered");
        Err(error)
    }

    /// The circuit breaker's state for `upstream_id`.
    #[must_use]
    pub fn breaker_state(&self, upstream_id: &str) -> BreakerState {
        self.breakers.state(upstream_id)
    }

    /// Sends the request once and judges the answer.
    async fn attempt(&self, upstream: &Upstream, prepared: &Prepared, stream: bool) -> Attempt {
        let config = &*self.config;
        let started = Instant::now();
        let total_deadline = deadline(started, config.total_timeout);
        let mut header_deadline = deadline(started, config.first_byte_timeout);
        if !stream {
            header_deadline = header_deadline.min(total_deadline);
        }
        let request = self
            .http
            .post(prepared.url.clone())
            .headers(prepared.headers.clone())
            .body(prepared.body.clone());
        let response = match tokio::time::timeout_at(header_deadline, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) if e.is_connect() => {
                let reason = format!("could not connect ({})", describe(&e));
                return Attempt::Failed(if e.is_timeout() {
                    Failure::timed_out(reason)
                } else {
                    Failure::counted(reason)
                });
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Attempt::Failed(Failure::timed_out(format!("timed out ({})", describe(&e))));
            }
            Ok(Err(e)) => {
                return Attempt::Failed(Failure::counted(format!("the exchange failed ({})", describe(&e))));
            }
            Err(_) => {
                let waited = header_deadline.saturating_duration_since(started).as_millis();
                return Attempt::Failed(Failure::timed_out(format!("no response within {waited} ms")));
            }
        };

        let status = response.status();
        let code = status.as_u16();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);

        if status.is_success() {
            let limit = u64::try_from(config.max_response_bytes).unwrap_or(u64::MAX);
            if response.content_length().is_some_and(|length| length > limit) {
                return Attempt::TooLarge;
            }
            if stream {
                let body = guard_stream(
                    response,
                    config.idle_stream_timeout,
                    config.max_response_bytes,
                    Arc::clone(&self.breakers),
                    upstream.id.clone(),
                );
                return Attempt::Answered { status: code, content_type, body: SentBody::Stream(body) };
            }
            return match read_body(response, config.max_response_bytes, total_deadline).await {
                Ok(body) if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() => {
                    Attempt::Answered { status: code, content_type, body: SentBody::Complete(body) }
                }
                Ok(_) => Attempt::Failed(Failure::counted(format!("status {code} but the body is not JSON"))),
                Err(e) => e.into_attempt(code, config.total_timeout),
            };
        }

        if matches!(code, 408 | 409 | 429) || status.is_server_error() {
            let retry_after = retry_after(response.headers(), SystemTime::now());
            let wait = deadline(Instant::now(), ERROR_BODY_WAIT).min(total_deadline);
            let prefix = read_prefix(response, ERROR_BODY_BYTES, wait).await;
            // Scrubbed before it is cut, so a cut cannot leave part of the key behind.
            let message = error_message(&prefix)
                .map(|message| one_line(&upstream.scrub_text(&message), ERROR_MESSAGE_CHARS))
                .filter(|message| !message.is_empty());
            let mut reason = status_line(status);
            if let Some(message) = message {
                reason.push_str(": ");
                reason.push_str(&message);
            }
            let counts = code == 429 || status.is_server_error();
            return Attempt::Failed(Failure { reason, retry_after, counts, timed_out: false });
        }

        if status.is_redirection() {
            return Attempt::Skip(format!("{}: redirects are not followed", status_line(status)));
        }

        // Any other status is the caller's own error: it goes back as the upstream said it.
        match read_body(response, config.max_response_bytes, total_deadline).await {
            Ok(body) => Attempt::Answered {
                status: code,
                content_type,
                body: SentBody::Complete(upstream.scrub(body)),
            },
            Err(e) => e.into_attempt(code, config.total_timeout),
        }
    }
}

/// `start + after`, or far in the future if that overflows.
fn deadline(start: Instant, after: Duration) -> Instant {
    start
        .checked_add(after)
        .unwrap_or_else(|| start.checked_add(Duration::from_secs(86_400 * 365)).unwrap_or(start))
}

/// The backoff before attempt `attempt + 1`: `base_backoff × 2^(attempt - 1)`, at most
/// `max_backoff`, scaled by a random factor in [0.5, 1) taken from `jitter` ("equal jitter", so
/// clients that failed together do not retry together).
fn backoff(config: &ClientConfig, attempt: u32, jitter: u16) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    let full = config.base_backoff.saturating_mul(factor).min(config.max_backoff);
    (full / 2).saturating_add(full.saturating_mul(u32::from(jitter)) / 131_072)
}

/// The wait an answer asks for: `retry-after-ms` (milliseconds, as Azure OpenAI sends it), else
/// `Retry-After` in seconds or as an HTTP-date (a date in the past means no wait).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && let Ok(wait) = Duration::try_from_secs_f64(ms / 1000.0)
    {
        return Some(wait);
    }
    let value = text(header::RETRY_AFTER.as_str())?;
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A number too large for a u64 is still a request to wait very long.
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or_default())
}

/// `503 Service Unavailable`.
fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("status {} {reason}", status.as_u16()),
        None => format!("status {}", status.as_u16()),
    }
}

/// The message of an OpenAI- or Anthropic-style JSON error (`{"error": {"message": …}}`,
/// `{"error": "…"}` or `{"message": …}`), raw: scrub and shorten it before use. Bodies that
/// are not JSON (an HTML error page) say nothing worth repeating.
fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let message = match value.get("error") {
        Some(Value::Object(error)) => error.get("message").and_then(Value::as_str),
        Some(Value::String(message)) => Some(message.as_str()),
        _ => value.get("message").and_then(Value::as_str),
    }?;
    Some(message.to_owned())
}

/// `1 attempt`, `2 attempts`.
fn attempts_text(n: u32) -> String {
    if n == 1 { "1 attempt".to_owned() } else { format!("{n} attempts") }
}

/// The innermost cause of a transport error (such as "Connection refused (os error 111)"),
/// which says more than reqwest's summary and holds no URL.
fn describe(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    one_line(&cause.to_string(), 120)
}

/// Why a body could not be read whole.
enum ReadError {
    TooLarge,
    TimedOut,
    Broken(String),
}

impl ReadError {
    fn into_attempt(self, status: u16, total: Duration) -> Attempt {
        match self {
            Self::TooLarge => Attempt::TooLarge,
            Self::TimedOut => Attempt::Failed(Failure::timed_out(format!(
                "status {status} but the body did not arrive within {} ms",
                total.as_millis()
            ))),
            Self::Broken(why) => {
                Attempt::Failed(Failure::counted(format!("status {status} but the body broke off ({why})")))
            }
        }
    }
}

/// The whole body, refused past `limit` bytes or `deadline`.
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    deadline: Instant,
) -> Result<Bytes, ReadError> {
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if response.content_length().is_some_and(|length| length > limit_u64) {
        return Err(ReadError::TooLarge);
    }
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| ReadError::Broken(describe(&e)))? {
            if body.len().saturating_add(chunk.len()) > limit {
                return Err(ReadError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    };
    tokio::time::timeout_at(deadline, read).await.unwrap_or(Err(ReadError::TimedOut))
}

/// At most the first `limit` bytes of the body, whatever arrived by `deadline`.
async fn read_prefix(mut response: reqwest::Response, limit: usize, deadline: Instant) -> Bytes {
    let mut body = Vec::new();
    while body.len() < limit {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = limit.saturating_sub(body.len());
                body.extend_from_slice(chunk.get(..room).unwrap_or(&chunk));
            }
            _ => break,
        }
    }
    Bytes::from(body)
}

/// The state of a streamed body between chunks.
struct Guarded {
    /// `None` once the stream has ended with an error, so the connection closes at once.
    inner: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    idle: Duration,
    remaining: usize,
    breakers: Arc<Breakers>,
    upstream_id: String,
}

/// The response's body as a stream that ends with an error item when the upstream goes quiet
/// for `idle`, breaks off, or sends more than `limit` bytes; the first two count as a failure
/// for the upstream's breaker.
fn guard_stream(
    response: reqwest::Response,
    idle: Duration,
    limit: usize,
    breakers: Arc<Breakers>,
    upstream_id: String,
) -> BoxStream<'static, Result<Bytes, LlmError>> {
    let state = Guarded {
        inner: Some(response.bytes_stream().boxed()),
        idle,
        remaining: limit,
        breakers,
        upstream_id,
    };
    stream::unfold(state, |mut state| async move {
        let inner = state.inner.as_mut()?;
        let item = match tokio::time::timeout(state.idle, inner.next()).await {
            Ok(None) => return None,
            Ok(Some(Ok(chunk))) => match state.remaining.checked_sub(chunk.len()) {
                Some(remaining) => {
                    state.remaining = remaining;
                    return Some((Ok(chunk), state));
                }
                None => LlmError::TooLarge,
            },
            Ok(Some(Err(e))) => {
                state.breakers.record_failure(&state.upstream_id);
                LlmError::Interrupted(describe(&e))
            }
            Err(_) => {
                state.breakers.record_failure(&state.upstream_id);
                LlmError::Timeout
            }
        };
        let upstream = one_line(&state.upstream_id, 64);
        tracing::warn!(%upstream, error = %item, "model stream ended early");
        state.inner = None;
        Some((Err(item), state))
    })
    .boxed()
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
