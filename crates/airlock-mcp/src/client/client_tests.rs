//! Tests against real MCP servers: the reference servers published on npm (installed as the CI
//! script does, their location in `AIRLOCK_TEST_MCP_SERVERS`) and a tiny misbehaving server.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::*;

const INSTALL: &str = "install the reference MCP servers: npm install --prefix \"$HOME/.cache/airlock/mcp-servers\" \
     --no-audit --no-fund @modelcontextprotocol/server-everything@2026.8.31 \
     @modelcontextprotocol/server-filesystem@2026.8.31 and export \
     AIRLOCK_TEST_MCP_SERVERS=\"$HOME/.cache/airlock/mcp-servers/node_modules\"";

/// The entry point of a reference server; fails (never skips) when it is not installed.
fn reference_server(package: &str) -> String {
    let root = std::env::var_os("AIRLOCK_TEST_MCP_SERVERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("AIRLOCK_TEST_MCP_SERVERS is not set: {INSTALL}"));
    let entry = root.join("@modelcontextprotocol").join(package).join("dist/index.js");
    assert!(entry.is_file(), "{} is missing: {INSTALL}", entry.display());
    entry.display().to_string()
}

fn everything_stdio() -> UpstreamSpec {
    UpstreamSpec::Stdio(StdioSpec {
        command: "node".into(),
        args: vec![reference_server("server-everything"), "stdio".into()],
        env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        cwd: None,
        credential_env: Some("UPSTREAM_TOKEN".into()),
        timeout_ms: Some(20_000),
    })
}

/// A stdio server that completes the handshake and lists one tool, then misbehaves on a call:
/// `crash` exits, `hang` never answers.
fn misbehaving(mode: &str, timeout_ms: u64) -> UpstreamSpec {
    const SCRIPT: &str = r#"
const mode = process.argv[1];
const rl = require("readline").createInterface({ input: process.stdin });
const send = (m) => process.stdout.write(JSON.stringify(m) + "\n");
rl.on("line", (line) => {
  const m = JSON.parse(line);
  if (m.id === undefined) return;
  if (m.method === "initialize") {
    send({ jsonrpc: "2.0", id: m.id, result: { protocolVersion: m.params.protocolVersion,
      capabilities: { tools: {} }, serverInfo: { name: "fixture", version: "0" } } });
  } else if (m.method === "tools/list") {
    send({ jsonrpc: "2.0", id: m.id, result: { tools: [{ name: "boom",
      inputSchema: { type: "object" } }] } });
  } else if (m.method === "tools/call") {
    if (mode === "crash") process.exit(3);
  } else {
    send({ jsonrpc: "2.0", id: m.id, result: {} });
  }
});
"#;
    UpstreamSpec::Stdio(StdioSpec {
        command: "node".into(),
        args: vec!["-e".into(), SCRIPT.into(), mode.into()],
        env: BTreeMap::new(),
        cwd: None,
        credential_env: None,
        timeout_ms: Some(timeout_ms),
    })
}

fn text_of(output: &ToolOutput) -> String {
    output.content.as_array().into_iter().flatten().filter_map(|b| b["text"].as_str()).collect()
}

#[tokio::test]
async fn stdio_reference_server_lists_and_calls_tools() {
    let spec = everything_stdio();
    let tools = list_tools(&spec, None).await.unwrap();
    let echo = tools.iter().find(|t| t.name == "echo").expect("the everything server has `echo`");
    assert_eq!(echo.input_schema["properties"]["message"]["type"], "string");
    assert!(tools.iter().any(|t| t.name == "get-sum"));

    let output = call_tool(&spec, None, "echo", json!({"message": "through the airlock"})).await.unwrap();
    assert!(!output.is_error);
    assert_eq!(text_of(&output), "Echo: through the airlock");

    let sum = call_tool(&spec, None, "get-sum", json!({"a": 2, "b": 40})).await.unwrap();
    assert!(text_of(&sum).contains("42"), "{sum:?}");
}

#[tokio::test]
async fn stdio_server_sees_only_a_restricted_environment() {
    // The test process has these; a server Airlock starts must not.
    assert!(std::env::var_os("AIRLOCK_TEST_MCP_SERVERS").is_some());
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let secret = SecretString::from("s3cret-token");
    let output = call_tool(&everything_stdio(), Some(&secret), "get-env", json!({})).await.unwrap();
    let env: BTreeMap<String, String> = serde_json::from_str(&text_of(&output)).unwrap();
    assert!(!env.contains_key("AIRLOCK_TEST_MCP_SERVERS"), "{env:?}");
    assert!(!env.contains_key("CARGO_MANIFEST_DIR"), "{env:?}");
    assert_eq!(env.get("GREETING").map(String::as_str), Some("hello"));
    assert_eq!(env.get("UPSTREAM_TOKEN").map(String::as_str), Some("s3cret-token"));
    let home = env.get("HOME").expect("HOME is set");
    assert!(home.contains("airlock-mcp-home-"), "{home}");
    assert!(!PathBuf::from(home).exists(), "the temporary HOME is removed after the call");
}

/// The everything server over streamable HTTP, stopped when dropped.
struct HttpServer {
    _child: tokio::process::Child,
    url: String,
}

async fn everything_http() -> HttpServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = tokio::process::Command::new("node")
        .args([reference_server("server-everything"), "streamableHttp".into()])
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return HttpServer { _child: child, url: format!("http://127.0.0.1:{port}/mcp") };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the streamable-HTTP everything server did not start on port {port}");
}

#[tokio::test]
async fn streamable_http_reference_server_lists_and_calls_tools() {
    let server = everything_http().await;
    let spec = UpstreamSpec::StreamableHttp(HttpSpec { url: server.url.clone(), timeout_ms: Some(20_000) });
    let secret = SecretString::from("bearer-for-upstream");
    let tools = list_tools(&spec, Some(&secret)).await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"));
    let output = call_tool(&spec, Some(&secret), "echo", json!({"message": "over http"})).await.unwrap();
    assert_eq!(text_of(&output), "Echo: over http");
}

#[tokio::test]
async fn a_server_that_exits_at_once_is_a_clear_error() {
    let spec = UpstreamSpec::Stdio(StdioSpec {
        command: "node".into(),
        args: vec!["-e".into(), "process.exit(1)".into()],
        env: BTreeMap::new(),
        cwd: None,
        credential_env: None,
        timeout_ms: Some(10_000),
    });
    let error = list_tools(&spec, None).await.unwrap_err();
    assert!(matches!(error, McpClientError::Connect(_)), "{error:?}");
}

#[tokio::test]
async fn a_missing_program_is_a_clear_error() {
    let mut spec = everything_stdio();
    if let UpstreamSpec::Stdio(stdio) = &mut spec {
        stdio.command = "/nonexistent/airlock-mcp-server".into();
    }
    let error = list_tools(&spec, None).await.unwrap_err();
    assert!(matches!(error, McpClientError::Spawn { .. }), "{error:?}");
}

#[tokio::test]
async fn a_server_that_crashes_mid_call_is_a_clear_error() {
    let spec = misbehaving("crash", 10_000);
    assert_eq!(list_tools(&spec, None).await.unwrap()[0].name, "boom");
    let error = call_tool(&spec, None, "boom", json!({})).await.unwrap_err();
    assert_eq!(error, McpClientError::Closed);
    assert_eq!(error.to_string(), "the tool server closed the connection (it may have crashed)");
}

#[tokio::test]
async fn a_hung_server_times_out_without_affecting_other_calls() {
    let hung = misbehaving("hang", 1_500);
    let healthy = everything_stdio();
    let (hung, healthy) = tokio::join!(
        call_tool(&hung, None, "boom", json!({})),
        call_tool(&healthy, None, "echo", json!({"message": "still here"})),
    );
    assert_eq!(hung.unwrap_err(), McpClientError::Timeout(1_500));
    assert_eq!(text_of(&healthy.unwrap()), "Echo: still here");
}

#[test]
fn specs_parse_from_json_and_unsafe_ones_are_refused() {
    let spec: UpstreamSpec = serde_json::from_value(json!({
        "kind": "stdio", "command": "npx", "args": ["-y", "server"], "env": {"A": "1"}
    }))
    .unwrap();
    spec.check().unwrap();
    let http: UpstreamSpec =
        serde_json::from_value(json!({"kind": "streamable_http", "url": "https://tools.example.com/mcp"}))
            .unwrap();
    http.check().unwrap();
    assert_eq!(http.timeout_ms(), DEFAULT_TIMEOUT_MS);

    for bad in [
        json!({"kind": "stdio", "command": "sh -c 'rm -rf /'"}),
        json!({"kind": "stdio", "command": "./server"}),
        json!({"kind": "stdio", "command": "bin/server"}),
        json!({"kind": "stdio", "command": ""}),
        json!({"kind": "stdio", "command": "node", "env": {"LD_PRELOAD": "/x.so"}}),
        json!({"kind": "stdio", "command": "node", "env": {"PATH": "/tmp"}}),
        json!({"kind": "stdio", "command": "node", "env": {"A B": "1"}}),
        json!({"kind": "stdio", "command": "node", "cwd": "relative"}),
        json!({"kind": "stdio", "command": "node", "timeout_ms": 0}),
        json!({"kind": "streamable_http", "url": "ftp://example.com"}),
        json!({"kind": "streamable_http", "url": "https://user:pw@example.com/mcp"}),
    ] {
        let spec: Result<UpstreamSpec, _> = serde_json::from_value(bad.clone());
        assert!(spec.map_or(true, |s| s.check().is_err()), "{bad}");
    }
    let unknown: Result<UpstreamSpec, _> =
        serde_json::from_value(json!({"kind": "stdio", "command": "node", "shell": true}));
    assert!(unknown.is_err());
}

#[test]
fn errors_never_carry_the_credential() {
    let secret = SecretString::from("tok-123");
    let error = redact(McpClientError::Connect("401 for tok-123".into()), Some(&secret));
    assert_eq!(error.to_string(), "could not connect to the tool server: 401 for [redacted]");
}

/// A stdio server whose tools report its process id (`pid`), exit (`exit`) or never answer
/// (`hang`).
fn pid_server(timeout_ms: u64) -> UpstreamSpec {
    const SCRIPT: &str = r#"
require("readline").createInterface({ input: process.stdin }).on("line", (line) => {
  const m = JSON.parse(line);
  if (m.id === undefined) return;
  const send = (result) => process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id: m.id, result }) + "\n");
  if (m.method === "initialize") {
    send({ protocolVersion: m.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: "pid", version: "0" } });
  } else if (m.method === "tools/call") {
    if (m.params.name === "exit") process.exit(3);
    if (m.params.name === "pid") send({ content: [{ type: "text", text: String(process.pid) }] });
  } else send({});
});
"#;
    UpstreamSpec::Stdio(StdioSpec {
        command: "node".into(),
        args: vec!["-e".into(), SCRIPT.into()],
        env: BTreeMap::new(),
        cwd: None,
        credential_env: None,
        timeout_ms: Some(timeout_ms),
    })
}

async fn pid(
    pool: &ClientPool,
    partition: &str,
    spec: &UpstreamSpec,
    credential: Option<&SecretString>,
) -> String {
    text_of(&pool.call_tool(partition, spec, credential, "pid", json!({})).await.unwrap())
}

#[tokio::test]
async fn a_pool_keeps_one_session_per_partition_and_server() {
    let pool = ClientPool::default();
    let spec = pid_server(10_000);
    let first = pid(&pool, "tenant-a", &spec, None).await;
    assert_eq!(pid(&pool, "tenant-a", &spec, None).await, first, "the session is reused");
    assert_ne!(pid(&pool, "tenant-b", &spec, None).await, first, "tenants never share a server");
    assert_eq!(pool.open_sessions(), 2);
    let secret = SecretString::from("another");
    assert_ne!(pid(&pool, "tenant-a", &spec, Some(&secret)).await, first, "a new credential, a new session");
    assert_eq!(pool.open_sessions(), 2);
}

#[tokio::test]
async fn a_pooled_server_that_crashes_or_hangs_is_replaced() {
    let pool = ClientPool::default();
    let spec = pid_server(1_000);
    let first = pid(&pool, "t", &spec, None).await;
    let crashed = pool.call_tool("t", &spec, None, "exit", json!({})).await.unwrap_err();
    assert_eq!(crashed, McpClientError::Closed);
    let second = pid(&pool, "t", &spec, None).await;
    assert_ne!(second, first, "a fresh server after the crash");
    let hung = pool.call_tool("t", &spec, None, "hang", json!({})).await.unwrap_err();
    assert_eq!(hung, McpClientError::Timeout(1_000));
    assert_ne!(pid(&pool, "t", &spec, None).await, second, "a fresh server after the timeout");
    assert_eq!(pool.open_sessions(), 1);
    // The hung server was stopped, not abandoned.
    let proc_entry = PathBuf::from(format!("/proc/{second}"));
    for _ in 0..100 {
        if !proc_entry.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!proc_entry.exists(), "the hung server {second} is still running");
}

#[tokio::test]
async fn an_idle_pooled_session_is_closed() {
    let pool = ClientPool::new(Duration::from_millis(50));
    let spec = pid_server(10_000);
    let first = pid(&pool, "t", &spec, None).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_ne!(pid(&pool, "t", &spec, None).await, first);
}
