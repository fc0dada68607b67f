//! Airlock as the MCP server agents connect to: a streamable-HTTP endpoint (`/mcp`) over a
//! [`Backend`] that speaks plain Rust and JSON.
//!
//! This module owns the protocol side only: DNS-rebinding checks (`Host`, `Origin`), the body
//! limit, JSON-RPC framing errors, sessions, and the translation between MCP messages and the
//! backend's types. It authenticates nobody: the caller mounts [`endpoint`] behind its own
//! authentication, which leaves the principal in the request's extensions; every request of
//! a session reaches the backend with the principal that sent it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientJsonRpcMessage, ContentBlock, ErrorCode,
    ErrorData, InitializeRequestParams, InitializeResult, ListToolsResult, MetaObject,
    PaginatedRequestParams, ProgressNotificationParam, ProgressToken, ProtocolVersion, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

/// A boxed, sendable future, as the [`Backend`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A tool as the agent sees it in `tools/list`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema of its arguments (an object schema).
    pub input_schema: Value,
}

/// A `tools/call` request.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// Its arguments (a JSON object; `{}` when the client sent none).
    pub arguments: Value,
    /// The client's `_meta.idempotency_key`, if it sent one.
    pub idempotency_key: Option<String>,
}

/// What a tool call answers: one text item, optional structured content, and `_meta`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallResult {
    /// The text the agent reads.
    pub text: String,
    /// The same as structured content (a JSON object), if any.
    pub structured: Option<Value>,
    /// Whether the call failed (a tool-level error the agent sees, not a protocol error).
    pub is_error: bool,
    /// The result's `_meta` members.
    pub meta: Map<String, Value>,
    /// Whether the call changed the session's tools (the client is told to list them again).
    pub tools_changed: bool,
}

/// Why a request could not be served; the agent sees the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The tool does not exist for this session (absent, another tenant's, outside the lease).
    #[error("unknown tool `{0}`")]
    UnknownTool(String),
    /// The request's parameters are not acceptable.
    #[error("{0}")]
    InvalidParams(String),
    /// The request is refused (no valid run, a stopped agent, a used-up lease, …).
    #[error("{0}")]
    Refused(String),
    /// Something failed inside; the detail is in the server's log.
    #[error("internal error")]
    Internal,
}

impl From<CallError> for ErrorData {
    fn from(error: CallError) -> Self {
        let message = error.to_string();
        match error {
            CallError::UnknownTool(_) | CallError::InvalidParams(_) => Self::invalid_params(message, None),
            CallError::Refused(_) => Self::invalid_request(message, None),
            CallError::Internal => Self::internal_error(message, None),
        }
    }
}

/// Progress notifications for one `tools/call`: a no-op unless the client sent a
/// `progressToken`.
pub struct Progress {
    target: Option<(Peer<RoleServer>, ProgressToken)>,
    cancelled: Option<tokio_util::sync::CancellationToken>,
}

impl Progress {
    /// Progress that goes nowhere (for calls made outside MCP, and tests).
    #[must_use]
    pub fn none() -> Self {
        Self { target: None, cancelled: None }
    }

    /// Whether the client cancelled the call (or its session ended): a backend that waits
    /// can stop waiting.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.as_ref().is_some_and(tokio_util::sync::CancellationToken::is_cancelled)
    }

    /// Whether the client asked for progress.
    #[must_use]
    pub fn wanted(&self) -> bool {
        self.target.is_some()
    }

    /// Reports `progress` (increasing) out of `total`, if known, with a message. A failure to
    /// deliver (the client went away) is not an error of the call.
    pub async fn report(&self, progress: f64, total: Option<f64>, message: impl Into<String>) {
        if let Some((peer, token)) = &self.target {
            let mut param = ProgressNotificationParam::new(token.clone(), progress);
            param.total = total;
            param.message = Some(message.into());
            if let Err(error) = peer.notify_progress(param).await {
                tracing::debug!(%error, "cannot send an MCP progress notification");
            }
        }
    }
}

/// What Airlock plugs into the endpoint. `Principal` is whatever the caller's authentication
/// left in the request's extensions; `Session` is the backend's state for one MCP session.
pub trait Backend: Send + Sync + 'static {
    /// The authenticated caller, taken from the HTTP request's extensions.
    type Principal: Clone + Send + Sync + 'static;
    /// The state of one MCP session.
    type Session: Send + Sync + 'static;

    /// A stable identifier of the principal: a session is served only to the principal that
    /// opened it.
    fn principal_key(principal: &Self::Principal) -> String;

    /// Opens a session at `initialize`, with the HTTP headers of that request.
    fn open_session<'a>(
        &'a self,
        principal: &'a Self::Principal,
        headers: &'a HeaderMap,
    ) -> BoxFuture<'a, Result<Self::Session, CallError>>;

    /// The tools the session may call, exactly.
    fn list_tools<'a>(
        &'a self,
        principal: &'a Self::Principal,
        session: &'a Self::Session,
    ) -> BoxFuture<'a, Result<Vec<ToolInfo>, CallError>>;

    /// Calls a tool.
    fn call_tool<'a>(
        &'a self,
        principal: &'a Self::Principal,
        session: &'a Self::Session,
        call: ToolCall,
        progress: Progress,
    ) -> BoxFuture<'a, Result<CallResult, CallError>>;
}

/// The endpoint's settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The public URL clients reach the server at (`https://airlock.example.com`): its host
    /// and origin are accepted besides loopback ones.
    pub public_url: String,
    /// Largest request body, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// The name the server gives in `initialize`.
    pub server_name: String,
    /// Its version.
    pub server_version: String,
    /// Instructions for the agent, given in `initialize`.
    pub instructions: Option<String>,
    /// Most sessions held at once; a new one beyond gets 503. Idle sessions close after
    /// five minutes, so with this the endpoint's memory is bounded.
    pub max_sessions: usize,
}

/// The `/mcp` endpoint for `backend`, as a method router to mount behind authentication.
pub fn endpoint<B: Backend, S: Clone + Send + Sync + 'static>(
    backend: Arc<B>,
    config: EndpointConfig,
) -> axum::routing::MethodRouter<S> {
    let origin = Origins::from_public_url(&config.public_url);
    let limit = config.max_body_bytes;
    let max_sessions = config.max_sessions.max(1);
    let sessions = Arc::new(LocalSessionManager::default());
    let info = Arc::new(config);
    // rmcp's own Host check is replaced by ours (the public host besides loopback); its body
    // limit stays as a second bound.
    let rmcp_config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(limit);
    let service = StreamableHttpService::new(
        move || {
            Ok(Handler { backend: Arc::clone(&backend), info: Arc::clone(&info), session: OnceLock::new() })
        },
        Arc::clone(&sessions),
        rmcp_config,
    );
    let origin = Arc::new(origin);
    let owners = Owners::default();
    axum::routing::any(move |request: Request| {
        let (service, origin, owners, sessions) =
            (service.clone(), Arc::clone(&origin), owners.clone(), Arc::clone(&sessions));
        async move {
            if let Err(header) = origin.check(request.headers()) {
                return plain(StatusCode::FORBIDDEN, format!("the `{header}` header is not allowed"));
            }
            let Some(key) = request.extensions().get::<B::Principal>().map(B::principal_key) else {
                return plain(StatusCode::UNAUTHORIZED, "the request is not authenticated".to_owned());
            };
            let session =
                request.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
            // Someone else's session does not exist for this principal.
            if let Some(id) = &session
                && owners.owner(id).is_some_and(|owner| owner != key)
            {
                return plain(StatusCode::NOT_FOUND, "no such session".to_owned());
            }
            let method = request.method().clone();
            if session.is_none() && method == Method::POST {
                let held = sessions.sessions.read().await.len();
                if held >= max_sessions {
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the server holds {held} MCP sessions, its most; try again later"),
                    );
                }
            }
            let request = match checked_body(request, limit).await {
                Ok(request) => request,
                Err(refusal) => return *refusal,
            };
            let response = service.handle(request).await.into_response();
            match (&session, response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok())) {
                (None, Some(opened)) => {
                    owners.insert(opened, key);
                    // Sessions that closed while idle leave their owner behind: drop those.
                    if owners.len() > max_sessions {
                        let live = sessions.sessions.read().await;
                        owners.retain(|id| live.keys().any(|k| k.as_ref() == id));
                    }
                }
                (Some(id), _) if method == Method::DELETE && response.status().is_success() => {
                    owners.remove(id)
                }
                _ => {}
            }
            response
        }
    })
}

/// The header carrying the MCP session's id.
const SESSION_HEADER: &str = "mcp-session-id";

/// Which principal opened each session.
#[derive(Clone, Default)]
struct Owners(Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>);

impl Owners {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        // Every write is one insert or remove: a poisoned map is still consistent.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn owner(&self, session: &str) -> Option<String> {
        self.lock().get(session).cloned()
    }

    fn insert(&self, session: &str, principal: String) {
        self.lock().insert(session.to_owned(), principal);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|id, _| keep(id));
    }

    fn remove(&self, session: &str) {
        self.lock().remove(session);
    }
}

/// Reads a POST body within the limit and checks it is one JSON-RPC message, answering
/// JSON-RPC errors (parse error, invalid request) in JSON before the SDK sees it.
async fn checked_body(request: Request, limit: usize) -> Result<Request, Box<Response>> {
    if request.method() != Method::POST {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Box::new(plain(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body exceeds {limit} bytes")))
    })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Box::new(jsonrpc_error(ErrorCode::PARSE_ERROR, &format!("parse error: {e}"))))?;
    if let Err(e) = serde_json::from_value::<ClientJsonRpcMessage>(value) {
        return Err(Box::new(jsonrpc_error(ErrorCode::INVALID_REQUEST, &format!("invalid request: {e}"))));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn jsonrpc_error(code: ErrorCode, message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code.0, "message": message}});
    let mut response = (StatusCode::BAD_REQUEST, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn plain(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

/// The hosts and origins a request may name: the public URL's, and loopback ones.
#[derive(Debug, Clone, PartialEq)]
struct Origins {
    /// `scheme://host[:port]` of the public URL, lowercase, default port omitted.
    origin: Option<String>,
    /// Its host, lowercase, without port.
    host: Option<String>,
}

impl Origins {
    fn from_public_url(url: &str) -> Self {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Self { origin: None, host: None };
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("").to_ascii_lowercase();
        let scheme = scheme.to_ascii_lowercase();
        Self {
            origin: Some(normalise_origin(&scheme, &authority)),
            host: Some(host_of(&authority).to_owned()),
        }
    }

    /// Refuses (naming the header) unless `Host` names the public host or a loopback one and
    /// `Origin`, when present, is the public origin or a loopback one.
    fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let forbidden = |what: &'static str| what;
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
        let Some(host) = host else {
            return Err(forbidden("Host"));
        };
        let name = host_of(&host);
        if !(is_loopback(name) || self.host.as_deref() == Some(name)) {
            return Err(forbidden("Host"));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().map_err(|_| forbidden("Origin"))?.to_ascii_lowercase();
            let Some((scheme, authority)) = origin.split_once("://") else {
                return Err(forbidden("Origin"));
            };
            let loopback = matches!(scheme, "http" | "https") && is_loopback(host_of(authority));
            if !(loopback || self.origin.as_deref() == Some(normalise_origin(scheme, authority).as_str())) {
                return Err(forbidden("Origin"));
            }
        }
        Ok(())
    }
}

fn normalise_origin(scheme: &str, authority: &str) -> String {
    let authority = match scheme {
        "https" => authority.strip_suffix(":443").unwrap_or(authority),
        "http" => authority.strip_suffix(":80").unwrap_or(authority),
        _ => authority,
    };
    format!("{scheme}://{authority}")
}

/// The host of an authority (`host`, `host:port`, `[v6]:port`), without the port.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority.rsplit_once(':').map_or(authority, |(host, _)| host)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host == "::1"
        || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// One MCP session's handler: rmcp makes one per session.
struct Handler<B: Backend> {
    backend: Arc<B>,
    info: Arc<EndpointConfig>,
    session: OnceLock<B::Session>,
}

impl<B: Backend> Handler<B> {
    fn principal(context: &RequestContext<RoleServer>) -> Result<B::Principal, ErrorData> {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<B::Principal>())
            .cloned()
            .ok_or_else(|| ErrorData::invalid_request("the request is not authenticated", None))
    }

    fn session(&self) -> Result<&B::Session, ErrorData> {
        self.session.get().ok_or_else(|| {
            ErrorData::invalid_request("this server needs an MCP session: send `initialize` first", None)
        })
    }
}

impl<B: Backend> ServerHandler for Handler<B> {
    fn get_info(&self) -> ServerConfig {
        let mut config = ServerConfig::new(
            ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build(),
        )
        .with_server_info(rmcp::model::Implementation::new(
            &self.info.server_name,
            &self.info.server_version,
        ));
        config.instructions.clone_from(&self.info.instructions);
        config
    }

    /// Sessions are Airlock's runs: only the revisions with an `initialize` handshake.
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        let principal = Self::principal(&context)?;
        let headers = context
            .extensions
            .get::<http::request::Parts>()
            .map(|parts| parts.headers.clone())
            .unwrap_or_default();
        if self.session.get().is_none() {
            let session = self.backend.open_session(&principal, &headers).await?;
            // Only the first `initialize` of a session opens it.
            let _ = self.session.set(session);
        }
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let principal = Self::principal(&context)?;
        let tools = self.backend.list_tools(&principal, self.session()?).await?;
        Ok(ListToolsResult::with_all_items(tools.into_iter().map(to_tool).collect()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let principal = Self::principal(&context)?;
        let session = self.session()?;
        let idempotency_key = request
            .meta
            .as_ref()
            .and_then(|meta| meta.0.0.get("idempotency_key"))
            .or_else(|| context.meta.0.0.get("idempotency_key"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let progress = Progress {
            target: context.meta.get_progress_token().map(|token| (context.peer.clone(), token)),
            cancelled: Some(context.ct.clone()),
        };
        let call = ToolCall {
            name: request.name.to_string(),
            arguments: Value::Object(request.arguments.unwrap_or_default()),
            idempotency_key,
        };
        let result = self.backend.call_tool(&principal, session, call, progress).await?;
        if result.tools_changed
            && let Err(error) = context.peer.notify_tool_list_changed().await
        {
            tracing::debug!(%error, "cannot tell the client its tools changed");
        }
        Ok(CallToolResponse::Complete(from_result(result)))
    }
}

fn to_tool(info: ToolInfo) -> Tool {
    let schema = match info.input_schema {
        Value::Object(schema) => schema,
        _ => Map::from_iter([("type".to_owned(), Value::from("object"))]),
    };
    Tool::new(info.name, info.description, Arc::new(schema))
}

fn from_result(result: CallResult) -> CallToolResult {
    let mut answer = CallToolResult::success(vec![ContentBlock::text(result.text)]);
    answer.is_error = Some(result.is_error);
    answer.structured_content = result.structured;
    if !result.meta.is_empty() {
        answer.meta = Some(MetaObject(result.meta));
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap_or(HeaderValue::from_static("x")));
        if let Some(origin) = origin {
            headers.insert(
                header::ORIGIN,
                HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("x")),
            );
        }
        headers
    }

    #[test]
    fn the_public_host_and_loopback_hosts_pass() {
        let origins = Origins::from_public_url("https://Airlock.example.com:443/base");
        assert!(origins.check(&headers("airlock.example.com", None)).is_ok());
        assert!(
            origins.check(&headers("airlock.example.com:443", Some("https://airlock.example.com"))).is_ok()
        );
        assert!(origins.check(&headers("127.0.0.1:8080", Some("http://localhost:3000"))).is_ok());
        assert!(origins.check(&headers("[::1]:8080", Some("http://[::1]:5173"))).is_ok());
    }

    #[test]
    fn a_rebinding_host_or_a_foreign_origin_is_refused() {
        let origins = Origins::from_public_url("https://airlock.example.com");
        for (host, origin) in [
            ("evil.example", None),
            ("127.0.0.1:8080", Some("http://evil.example")),
            ("airlock.example.com", Some("http://airlock.example.com")),
            ("airlock.example.com", Some("null")),
            ("localhost.evil.example", None),
        ] {
            let refused = origins.check(&headers(host, origin));
            assert!(refused.is_err(), "{host} {origin:?}");
        }
    }

    #[test]
    fn call_errors_map_to_jsonrpc_codes() {
        assert_eq!(ErrorData::from(CallError::UnknownTool("x".into())).code, ErrorCode::INVALID_PARAMS);
        assert_eq!(ErrorData::from(CallError::Refused("no".into())).code, ErrorCode::INVALID_REQUEST);
        assert_eq!(ErrorData::from(CallError::Internal).code, ErrorCode::INTERNAL_ERROR);
    }

    #[test]
    fn results_carry_text_structure_and_meta() {
        let mut meta = Map::new();
        meta.insert("airlock".into(), json!({"untrusted": true}));
        let result = from_result(CallResult {
            text: "{}".into(),
            structured: Some(json!({"type": "untrusted_data"})),
            is_error: false,
            meta,
            tools_changed: false,
        });
        let wire = serde_json::to_value(&result).unwrap_or_default();
        assert_eq!(wire["content"][0]["text"], "{}");
        assert_eq!(wire["structuredContent"]["type"], "untrusted_data");
        assert_eq!(wire["_meta"]["airlock"]["untrusted"], true);
        assert_eq!(wire["isError"], false);
    }
}
