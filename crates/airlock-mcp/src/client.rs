//! Airlock as an MCP client of upstream tool servers: over stdio (a program Airlock starts, with
//! a restricted environment) and over streamable HTTP.
//!
//! Everything here speaks plain Rust and JSON to the rest of Airlock; `rmcp` types stay inside.
//! [`list_tools`] and [`call_tool`] open one connection per call (a stdio server is started,
//! used and killed): simple, and a crashed or hung server affects only the call that hit it.
//! [`ClientPool`] keeps one session per (tenant, server) open between calls instead, and
//! replaces it when it dies.
//! Every operation is bounded by the spec's timeout; credentials never appear in errors.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{Peer, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::TokioChildProcess;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod client_http;
mod client_pool;

pub use client_pool::ClientPool;

/// How long a call may take when the spec does not say (milliseconds).
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The longest timeout a spec may ask for (milliseconds).
pub const MAX_TIMEOUT_MS: u64 = 300_000;

/// Environment variables a spec may not set: they change how the dynamic loader or the
/// runtime behaves rather than configuring the server.
const RESERVED_ENV_PREFIXES: &[&str] = &["LD_", "DYLD_"];
const RESERVED_ENV: &[&str] = &["PATH", "HOME", "NODE_OPTIONS", "PYTHONSTARTUP"];

/// Where an upstream MCP server is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UpstreamSpec {
    /// A program Airlock starts and talks to over its standard input and output.
    Stdio(StdioSpec),
    /// A server reached over MCP's streamable HTTP transport.
    StreamableHttp(HttpSpec),
}

/// A stdio server: a program started without a shell, with a restricted environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioSpec {
    /// An absolute path or a bare program name looked up in `PATH`.
    pub command: String,
    /// The program's arguments, passed as they are (no shell).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables for the program (not secrets: those are the tool's credential).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory (an absolute path); a fresh temporary directory when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The environment variable carrying the tool's credential, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_env: Option<String>,
    /// How long a call may take, start-up included (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A streamable-HTTP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// The MCP endpoint, `http(s)://host/path`.
    pub url: String,
    /// How long a call may take, connection included (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A tool as an upstream server describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportedTool {
    /// The upstream's name for the tool.
    pub name: String,
    /// What the upstream says the tool does.
    pub description: Option<String>,
    /// The JSON Schema of the tool's arguments.
    pub input_schema: Value,
    /// The upstream's hints (`readOnlyHint`, `destructiveHint`, …), as JSON; hints only.
    pub annotations: Option<Value>,
}

/// What a tool call returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolOutput {
    /// The content blocks, as MCP JSON (`[{"type": "text", "text": …}, …]`).
    pub content: Value,
    /// The structured result, when the tool gave one.
    pub structured: Option<Value>,
    /// Whether the tool reported an error (`isError`).
    pub is_error: bool,
}

/// An upstream call that did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpClientError {
    /// The spec is not usable.
    #[error("invalid tool server: {0}")]
    InvalidSpec(String),
    /// The stdio program could not be started.
    #[error("could not start the tool server `{command}`: {reason}")]
    Spawn {
        /// The program.
        command: String,
        /// Why.
        reason: String,
    },
    /// The MCP handshake failed.
    #[error("could not connect to the tool server: {0}")]
    Connect(String),
    /// The server went away during the call (it exited or closed the connection).
    #[error("the tool server closed the connection (it may have crashed)")]
    Closed,
    /// The server did not answer in time; it was stopped.
    #[error("the tool server did not answer within {0} ms")]
    Timeout(u64),
    /// The server answered with a protocol error.
    #[error("the tool server refused the request: {0}")]
    Protocol(String),
}

impl UpstreamSpec {
    /// Checks the spec: a stdio command is an absolute path or a bare program name (never a
    /// shell line), environment names are plain, and timeouts are bounded.
    pub fn check(&self) -> Result<(), McpClientError> {
        let invalid = |m: String| Err(McpClientError::InvalidSpec(m));
        match self {
            UpstreamSpec::Stdio(stdio) => {
                let command = &stdio.command;
                let bare = !command.is_empty()
                    && command
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
                let absolute = command.starts_with('/')
                    && !command.contains("/../")
                    && !command.bytes().any(|b| b.is_ascii_control() || b.is_ascii_whitespace());
                if !(bare || absolute) || command == "." || command == ".." {
                    return invalid(format!(
                        "`command` must be an absolute path or a bare program name, not `{}`",
                        bounded(command)
                    ));
                }
                if stdio.args.iter().any(|a| a.contains('\0')) {
                    return invalid("an argument contains a NUL byte".into());
                }
                let names = stdio.env.keys().chain(stdio.credential_env.iter());
                for name in names {
                    let plain = !name.is_empty()
                        && !name.starts_with(|c: char| c.is_ascii_digit())
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !plain {
                        return invalid(format!("`{}` is not an environment variable name", bounded(name)));
                    }
                    let upper = name.to_ascii_uppercase();
                    if RESERVED_ENV.contains(&upper.as_str())
                        || RESERVED_ENV_PREFIXES.iter().any(|p| upper.starts_with(p))
                    {
                        return invalid(format!("environment variable `{name}` is reserved"));
                    }
                }
                if stdio.env.values().any(|v| v.contains('\0')) {
                    return invalid("an environment value contains a NUL byte".into());
                }
                if let Some(cwd) = &stdio.cwd
                    && !cwd.starts_with('/')
                {
                    return invalid(format!("`cwd` must be an absolute path, not `{}`", bounded(cwd)));
                }
            }
            UpstreamSpec::StreamableHttp(http) => {
                let rest = http.url.strip_prefix("https://").or_else(|| http.url.strip_prefix("http://"));
                let host = rest.and_then(|r| r.split(['/', '?', '#']).next()).unwrap_or_default();
                if host.is_empty() || host.contains('@') || http.url.chars().any(char::is_control) {
                    return invalid(format!(
                        "`url` must be http(s)://host/path without credentials, not `{}`",
                        bounded(&http.url)
                    ));
                }
            }
        }
        let timeout = self.timeout_ms();
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout) {
            return invalid(format!("`timeout_ms` must be between 1 and {MAX_TIMEOUT_MS}"));
        }
        Ok(())
    }

    /// The bound on one call, in milliseconds.
    #[must_use]
    pub fn timeout_ms(&self) -> u64 {
        match self {
            UpstreamSpec::Stdio(s) => s.timeout_ms,
            UpstreamSpec::StreamableHttp(h) => h.timeout_ms,
        }
        .unwrap_or(DEFAULT_TIMEOUT_MS)
    }
}

/// Lists the upstream's tools (all pages).
pub async fn list_tools(
    spec: &UpstreamSpec,
    credential: Option<&SecretString>,
) -> Result<Vec<ImportedTool>, McpClientError> {
    with_session(spec, credential, |client| async move {
        let tools = client.list_all_tools().await.map_err(service_error)?;
        Ok(tools
            .into_iter()
            .map(|tool| ImportedTool {
                name: tool.name.into_owned(),
                description: tool.description.map(std::borrow::Cow::into_owned),
                input_schema: Value::Object((*tool.input_schema).clone()),
                annotations: tool.annotations.and_then(|a| serde_json::to_value(a).ok()),
            })
            .collect())
    })
    .await
}

/// Calls one upstream tool with `arguments` (a JSON object, or null for none).
pub async fn call_tool(
    spec: &UpstreamSpec,
    credential: Option<&SecretString>,
    name: &str,
    arguments: Value,
) -> Result<ToolOutput, McpClientError> {
    let params = tool_params(name, arguments)?;
    with_session(spec, credential, |client| async move {
        let result = client.call_tool(params).await.map_err(service_error)?;
        Ok(output(result))
    })
    .await
}

fn tool_params(name: &str, arguments: Value) -> Result<CallToolRequestParams, McpClientError> {
    let arguments = match arguments {
        Value::Object(map) => Some(map),
        Value::Null => None,
        _ => return Err(McpClientError::Protocol("the arguments must be a JSON object".into())),
    };
    let mut params = CallToolRequestParams::new(name.to_owned());
    params.arguments = arguments;
    Ok(params)
}

fn output(result: rmcp::model::CallToolResult) -> ToolOutput {
    ToolOutput {
        content: serde_json::to_value(&result.content).unwrap_or(Value::Null),
        structured: result.structured_content,
        is_error: result.is_error.unwrap_or(false),
    }
}

/// Connects, runs `work`, and closes, all within the spec's timeout. On timeout or error the
/// session is dropped, which kills a stdio server.
async fn with_session<T, F, Fut>(
    spec: &UpstreamSpec,
    credential: Option<&SecretString>,
    work: F,
) -> Result<T, McpClientError>
where
    F: FnOnce(Peer<RoleClient>) -> Fut,
    Fut: Future<Output = Result<T, McpClientError>>,
{
    spec.check()?;
    let timeout = spec.timeout_ms();
    let run = async {
        let (session, _home) = connect(spec, credential).await?;
        let value = work(session.peer().clone()).await?;
        // A polite goodbye; the server is killed on drop regardless.
        let _closed = session.cancel().await;
        Ok(value)
    };
    let result = match tokio::time::timeout(Duration::from_millis(timeout), run).await {
        Ok(result) => result,
        Err(_elapsed) => Err(McpClientError::Timeout(timeout)),
    };
    result.map_err(|e| redact(e, credential))
}

/// A temporary HOME for a stdio server, removed when the session ends.
type Home = Option<tempfile::TempDir>;

async fn connect(
    spec: &UpstreamSpec,
    credential: Option<&SecretString>,
) -> Result<(RunningService<RoleClient, ()>, Home), McpClientError> {
    match spec {
        UpstreamSpec::Stdio(stdio) => {
            let home = tempfile::Builder::new()
                .prefix("airlock-mcp-home-")
                .tempdir()
                .map_err(|e| spawn_error(stdio, &e))?;
            let mut command = tokio::process::Command::new(&stdio.command);
            command.args(&stdio.args).env_clear().kill_on_drop(true);
            if let Some(path) = std::env::var_os("PATH") {
                command.env("PATH", path);
            }
            command.env("HOME", home.path());
            command.envs(&stdio.env);
            if let (Some(name), Some(secret)) = (&stdio.credential_env, credential) {
                command.env(name, secret.expose_secret());
            }
            command.current_dir(stdio.cwd.as_deref().map_or(home.path(), std::path::Path::new));
            // The server's diagnostics are not Airlock's to log: they may echo arguments.
            let (transport, _stderr) = TokioChildProcess::builder(command)
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| spawn_error(stdio, &e))?;
            let session =
                ().serve(transport).await.map_err(|e| McpClientError::Connect(bounded(&e.to_string())))?;
            Ok((session, Some(home)))
        }
        UpstreamSpec::StreamableHttp(http) => {
            let client = client_http::http_client()?;
            let mut config = StreamableHttpClientTransportConfig::with_uri(http.url.as_str());
            if let Some(secret) = credential {
                config = config.auth_header(secret.expose_secret());
            }
            let transport = StreamableHttpClientTransport::with_client(client, config);
            let session =
                ().serve(transport).await.map_err(|e| McpClientError::Connect(bounded(&e.to_string())))?;
            Ok((session, None))
        }
    }
}

fn spawn_error(stdio: &StdioSpec, error: &std::io::Error) -> McpClientError {
    McpClientError::Spawn { command: bounded(&stdio.command), reason: error.to_string() }
}

fn service_error(error: rmcp::ServiceError) -> McpClientError {
    match error {
        rmcp::ServiceError::TransportClosed | rmcp::ServiceError::TransportSend(_) => McpClientError::Closed,
        rmcp::ServiceError::McpError(e) => McpClientError::Protocol(bounded(&e.message)),
        other => McpClientError::Protocol(bounded(&other.to_string())),
    }
}

/// Removes the credential from an error message, should an upstream or the SDK echo it.
fn redact(error: McpClientError, credential: Option<&SecretString>) -> McpClientError {
    let Some(secret) = credential.map(ExposeSecret::expose_secret).filter(|s| !s.is_empty()) else {
        return error;
    };
    let clean = |s: String| s.replace(secret, "[redacted]");
    match error {
        McpClientError::InvalidSpec(m) => McpClientError::InvalidSpec(clean(m)),
        McpClientError::Spawn { command, reason } => {
            McpClientError::Spawn { command: clean(command), reason: clean(reason) }
        }
        McpClientError::Connect(m) => McpClientError::Connect(clean(m)),
        McpClientError::Protocol(m) => McpClientError::Protocol(clean(m)),
        other @ (McpClientError::Closed | McpClientError::Timeout(_)) => other,
    }
}

fn bounded(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
mod client_tests;
