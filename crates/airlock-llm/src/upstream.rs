//! Upstreams: the model providers a request can be routed to, and how each kind is addressed
//! on the wire.
//!
//! This module owns everything that differs between provider kinds: the endpoint URL, the
//! header that carries the API key, the fixed and passed-through headers, and what happens to
//! the body's `model` field. All of it sits behind one `match` in `Upstream::wire`, so adding a
//! provider kind touches nothing else. It is also the one place an upstream's API key is read
//! (`expose_secret`): to put it in its header, and to scrub it from anything the upstream sends
//! back before that leaves this crate.

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `anthropic-version` sent when the caller gave none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// The longest upstream id accepted.
const MAX_ID_CHARS: usize = 128;
/// The longest model (or Azure deployment) name accepted.
const MAX_MODEL_CHARS: usize = 256;
/// What is said of a key that cannot be used (the key itself is never quoted).
const BAD_KEY: &str = "the API key is empty or cannot be sent in an HTTP header";
/// What replaces an upstream's API key wherever the upstream echoes it back.
const REDACTED: &[u8] = b"[REDACTED]";

/// The kind of model provider an upstream is, which decides its URL, its authentication header
/// and its dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible server: OpenAI itself, vLLM, Ollama, llama.cpp, LiteLLM and the
    /// like. Requests go to `{base_url}/chat/completions` with `Authorization: Bearer <key>`
    /// (no header without a key, for local servers that need none).
    // Named as people write it, not as snake_case would split it (`open_ai`, still accepted).
    #[serde(rename = "openai", alias = "open_ai")]
    OpenAi,
    /// Azure OpenAI: requests go to
    /// `{base_url}/openai/deployments/{model}/chat/completions?api-version={api_version}` with
    /// the key in the `api-key` header.
    #[serde(rename = "azure_openai", alias = "azure_open_ai")]
    AzureOpenAi,
    /// Anthropic's Messages API: requests go to `{base_url}/v1/messages` with the key in
    /// `x-api-key` and an `anthropic-version` header ([`DEFAULT_ANTHROPIC_VERSION`] unless the
    /// caller sent one). The caller's `anthropic-version` and `anthropic-beta` headers are the
    /// only caller headers forwarded, to this kind or any other.
    Anthropic,
}

impl ProviderKind {
    /// Whether requests to this kind speak the Anthropic Messages dialect (otherwise, the
    /// OpenAI Chat Completions dialect).
    #[must_use]
    pub fn dialect_is_anthropic(self) -> bool {
        matches!(self, Self::Anthropic)
    }

    /// The kind named `name` as it is written in configuration (`openai`, `azure_openai` or
    /// `anthropic`; `open_ai` and `azure_open_ai` are accepted too, as by serde), or `None`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "openai" | "open_ai" => Some(Self::OpenAi),
            "azure_openai" | "azure_open_ai" => Some(Self::AzureOpenAi),
            "anthropic" => Some(Self::Anthropic),
            _ => None,
        }
    }

    /// The kind's name as it is written in configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::AzureOpenAi => "azure_openai",
            Self::Anthropic => "anthropic",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One model provider endpoint a request can be sent to: one link of a fallback chain.
///
/// `Debug` never shows the API key.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The route's id, which keys its circuit breaker and its metrics. It must be unique across
    /// the whole deployment (prefix it with the tenant id, for instance): two upstreams with
    /// the same id share one breaker.
    pub id: String,
    /// The kind of provider.
    pub kind: ProviderKind,
    /// Where the provider's API lives: an `http` or `https` URL without credentials, query or
    /// fragment; a trailing `/` is ignored. For `openai` it is the prefix that
    /// `/chat/completions` is appended to, so it normally ends in `/v1`
    /// (`https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`); for `azure_openai` it is the
    /// resource (`https://myres.openai.azure.com`); for `anthropic` it may be given with or
    /// without the trailing `/v1` (`https://api.anthropic.com` and
    /// `https://api.anthropic.com/v1` both send to `https://api.anthropic.com/v1/messages`).
    pub base_url: String,
    /// The model name the upstream knows, which replaces the body's `model`; for
    /// `azure_openai`, the deployment name, which goes in the URL (letters, digits, `.`, `-`
    /// and `_`) while the body's `model` is removed (the deployment decides, and the caller's
    /// alias need not leave Airlock).
    pub model: String,
    /// The Azure OpenAI API version (for instance `2024-10-21`); required for `azure_openai`
    /// and refused for the other kinds.
    pub api_version: Option<String>,
    /// The API key; required for `azure_openai` and `anthropic`, optional for `openai` (local
    /// servers often need none).
    pub api_key: Option<SecretString>,
}

/// A request ready to send to one upstream: its URL, its headers (the credential among them,
/// marked sensitive) and its encoded body.
pub(crate) struct Prepared {
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// How one provider kind addresses a chat request. Built only by [`Upstream::wire`].
struct Wire {
    url: Url,
    /// The credential's header, if there is a key.
    auth: Option<(HeaderName, HeaderValue)>,
    /// Headers every request carries, unless the caller passed one of the same name through.
    defaults: Vec<(HeaderName, HeaderValue)>,
    /// The caller's headers (lowercase names) forwarded to this kind; every other is dropped.
    passthrough: &'static [&'static str],
    /// What to do with the body's `model` field.
    model: ModelField,
}

enum ModelField {
    /// Set it to the upstream's model name.
    Set,
    /// Remove it: the deployment in the URL decides the model, and the caller's alias need not
    /// leave Airlock.
    Remove,
}

impl Upstream {
    /// Checks the upstream's configuration; the error lists every problem found, separated by
    /// `; `.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.id.is_empty() {
            problems.push("the upstream id is empty".to_owned());
        } else if self.id.chars().count() > MAX_ID_CHARS || !self.id.chars().all(|c| c.is_ascii_graphic()) {
            problems.push(format!(
                "the upstream id `{}` must be at most {MAX_ID_CHARS} printable ASCII characters \
                 without spaces",
                one_line(&self.id, 40)
            ));
        }
        if self.model.trim().is_empty() {
            problems.push("the model name is empty".to_owned());
        } else if self.model.chars().count() > MAX_MODEL_CHARS || self.model.chars().any(char::is_control) {
            problems.push(format!(
                "the model name `{}` must be at most {MAX_MODEL_CHARS} characters without control characters",
                one_line(&self.model, 40)
            ));
        }
        if let Some(key) = &self.api_key
            && !is_header_token(key.expose_secret())
        {
            problems.push(BAD_KEY.to_owned());
        }
        // The kind-specific checks: the wire must be buildable. Skipped when the base URL is
        // unusable, which `wire` would only report again.
        match self.base() {
            Err(problem) => problems.push(problem),
            Ok(_) => {
                if let Err(problem) = self.wire() {
                    problems.push(problem);
                }
            }
        }
        // A bad key is reported by both checks, one after the other.
        problems.dedup();
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// The URL requests to this upstream are sent to. It holds no secret, so it may be logged.
    pub fn endpoint(&self) -> Result<Url, String> {
        self.wire().map(|wire| wire.url)
    }

    /// The one place that knows how each provider kind is addressed.
    fn wire(&self) -> Result<Wire, String> {
        let base = self.base()?;
        let key = self.api_key.as_ref();
        let no_version = || {
            if self.api_version.is_some() {
                Err(format!("`api_version` is only used by `azure_openai`, not by `{}`", self.kind))
            } else {
                Ok(())
            }
        };
        match self.kind {
            ProviderKind::OpenAi => {
                no_version()?;
                let auth = match key {
                    Some(key) => {
                        Some((header::AUTHORIZATION, sensitive(&format!("Bearer {}", key.expose_secret()))?))
                    }
                    None => None,
                };
                Ok(Wire {
                    url: extend(base, &["chat", "completions"])?,
                    auth,
                    defaults: Vec::new(),
                    passthrough: &[],
                    model: ModelField::Set,
                })
            }
            ProviderKind::AzureOpenAi => {
                let Some(version) = self.api_version.as_deref() else {
                    return Err("`azure_openai` needs an `api_version` (for instance `2024-10-21`)".into());
                };
                if version.is_empty()
                    || !version.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    return Err(format!("the api_version `{}` is not valid", one_line(version, 40)));
                }
                if !is_deployment_name(&self.model) {
                    return Err(format!(
                        "the Azure deployment name `{}` may hold only letters, digits, `.`, `-` and `_`",
                        one_line(&self.model, 40)
                    ));
                }
                let Some(key) = key else {
                    return Err("`azure_openai` needs an API key".into());
                };
                let mut url = extend(base, &["openai", "deployments", &self.model, "chat", "completions"])?;
                url.query_pairs_mut().append_pair("api-version", version);
                Ok(Wire {
                    url,
                    auth: Some((HeaderName::from_static("api-key"), sensitive(key.expose_secret())?)),
                    defaults: Vec::new(),
                    passthrough: &[],
                    model: ModelField::Remove,
                })
            }
            ProviderKind::Anthropic => {
                no_version()?;
                let Some(key) = key else {
                    return Err("`anthropic` needs an API key".into());
                };
                let has_v1 = base.path_segments().and_then(|mut s| s.rfind(|s| !s.is_empty())) == Some("v1");
                let url =
                    if has_v1 { extend(base, &["messages"])? } else { extend(base, &["v1", "messages"])? };
                Ok(Wire {
                    url,
                    auth: Some((HeaderName::from_static("x-api-key"), sensitive(key.expose_secret())?)),
                    defaults: vec![(
                        HeaderName::from_static("anthropic-version"),
                        HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
                    )],
                    passthrough: &["anthropic-version", "anthropic-beta"],
                    model: ModelField::Set,
                })
            }
        }
    }

    /// The base URL, parsed and checked.
    fn base(&self) -> Result<Url, String> {
        // A URL that may carry credentials is not quoted.
        let shown =
            || if self.base_url.contains('@') { "…".to_owned() } else { one_line(&self.base_url, 80) };
        let url = Url::parse(self.base_url.trim())
            .map_err(|_| format!("the base URL `{}` is not a valid URL", shown()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("the base URL `{}` must use http or https", shown()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("the base URL `{}` has no host", shown()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Not quoted: the userinfo may be a credential.
            return Err("the base URL must not hold a user name or password".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("the base URL `{}` must not have a query or fragment", shown()));
        }
        Ok(url)
    }

    /// The request for `body`, addressed to this upstream.
    ///
    /// The body's `model` is set to [`Upstream::model`] (removed for Azure, whose deployment
    /// decides), and its `stream` flag made to agree with `stream`: `true` when streaming,
    /// absent otherwise. Of `extra_headers`, only those this kind takes from the caller are
    /// forwarded (`anthropic-version` and `anthropic-beta` for Anthropic, none for the others):
    /// a caller cannot set the credential, the host or anything else.
    pub(crate) fn prepare(
        &self,
        body: &Value,
        stream: bool,
        extra_headers: &[(String, String)],
    ) -> Result<Prepared, String> {
        self.validate()?;
        let wire = self.wire()?;
        let Some(object) = body.as_object() else {
            return Err("the request body is not a JSON object".into());
        };
        let mut object = object.clone();
        match wire.model {
            ModelField::Set => {
                object.insert("model".into(), Value::String(self.model.clone()));
            }
            ModelField::Remove => {
                object.remove("model");
            }
        }
        if stream {
            object.insert("stream".into(), Value::Bool(true));
        } else {
            object.remove("stream");
        }
        let body =
            serde_json::to_vec(&object).map_err(|_| "the request body could not be encoded".to_owned())?;

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let accept = if stream { "text/event-stream" } else { "application/json" };
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        for (name, value) in wire.defaults {
            headers.insert(name, value);
        }
        for (name, value) in extra_headers {
            let name = name.trim().to_ascii_lowercase();
            if !wire.passthrough.contains(&name.as_str()) {
                let header = one_line(&name, 40);
                tracing::debug!(%header, upstream = %self.id, "caller header not forwarded");
                continue;
            }
            let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.trim()))
            else {
                continue;
            };
            headers.insert(name, value);
        }
        if let Some((name, value)) = wire.auth {
            headers.insert(name, value);
        }
        Ok(Prepared { url: wire.url, headers, body: Bytes::from(body) })
    }

    /// `text` with this upstream's API key replaced by `[REDACTED]`.
    pub(crate) fn scrub_text(&self, text: &str) -> String {
        match self.api_key.as_ref().map(ExposeSecret::expose_secret) {
            Some(key) if !key.is_empty() && text.contains(key) => text.replace(key, "[REDACTED]"),
            _ => text.to_owned(),
        }
    }

    /// `text` with this upstream's API key replaced by `[REDACTED]`, for anything the upstream
    /// sent back that leaves this crate (an upstream may echo the key in an error).
    pub(crate) fn scrub(&self, text: Bytes) -> Bytes {
        let Some(key) = self.api_key.as_ref().map(|k| k.expose_secret().as_bytes()) else {
            return text;
        };
        if key.is_empty() || !contains(&text, key) {
            return text;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut rest: &[u8] = &text;
        while let Some(at) = find(rest, key) {
            let (before, after) = rest.split_at(at);
            out.extend_from_slice(before);
            out.extend_from_slice(REDACTED);
            rest = after.get(key.len()..).unwrap_or_default();
        }
        out.extend_from_slice(rest);
        Bytes::from(out)
    }
}

/// `base` with `segments` appended to its path (a trailing `/` is ignored).
fn extend(mut base: Url, segments: &[&str]) -> Result<Url, String> {
    base.path_segments_mut()
        .map_err(|()| "the base URL cannot have a path".to_owned())?
        .pop_if_empty()
        .extend(segments);
    Ok(base)
}

/// A header value the HTTP client treats as secret: never shown by its `Debug`, never indexed
/// by header compression.
fn sensitive(value: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(value).map_err(|_| BAD_KEY.to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// Non-empty, and printable ASCII without spaces: what an API key looks like, and all that can
/// go in a header unquoted.
fn is_header_token(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

/// An Azure deployment name: safe as one URL path segment.
fn is_deployment_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// `text` as one line of at most `max_chars` characters: control and bidirectional-formatting
/// characters become spaces, runs of whitespace collapse, and a cut is marked with `…`. For
/// anything an upstream (or a configuration) said that goes into a log line or an error.
pub(crate) fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut pending_space = false;
    for c in text.chars() {
        let c = if c.is_control() || is_format_control(c) { ' ' } else { c };
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        let needed = if pending_space { 2 } else { 1 };
        if count + needed > max_chars {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
        count += needed;
    }
    out
}

/// Invisible characters that can reorder or hide text in a terminal or a log viewer.
fn is_format_control(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
