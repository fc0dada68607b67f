//! The MCP endpoint (`/mcp`): the official MCP Python SDK as the agent (a session is a run,
//! `tools/list` is the lease, `tools/call` goes through the pipeline, approvals returned or
//! waited for), and plain HTTP for what an SDK never sends: no key, a forged key, a foreign
//! origin, malformed JSON-RPC, unknown methods and oversized bodies.
//!
//! The SDK is installed by `.ci/run` (`pip install 'mcp>=1.9,<2'`); `AIRLOCK_PYTHON` names
//! another interpreter.

use std::process::Command;
use std::time::{Duration, Instant};

use airlock_types::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::Reply;
use crate::common::runs::{World, merged, post, tool};
use crate::common::upstream::Behaviour;

const ACCEPT: &str = "application/json, text/event-stream";

/// A world with a read tool `lookup`, a financial tool `pay` and a tool outside every test
/// lease, `wire_transfer`.
async fn world() -> World {
    let world = World::new().await;
    world.upstream.on("/lookup", Behaviour::json(200, json!({"ticket": 7, "status": "open"})));
    world.upstream.on("/pay", Behaviour::json(201, json!({"id": "pay-1"})));
    world.register(&tool("lookup", "read", post(&world.upstream, "/lookup"))).await;
    world
        .register(&merged(tool("pay", "financial", post(&world.upstream, "/pay")), json!({"cost_cents": 1})))
        .await;
    world.register(&tool("wire_transfer", "financial", post(&world.upstream, "/wire"))).await;
    world
}

/// The JSON-RPC messages of a reply, whether sent as JSON or as server-sent events.
fn messages(reply: &Reply) -> Vec<Value> {
    if reply.header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        return vec![reply.json()];
    }
    reply
        .text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

/// `POST /mcp` with `key`, the session if any, and a raw body.
async fn send(world: &World, key: Option<&str>, session: Option<&str>, body: String) -> Reply {
    let mut request = world
        .app
        .request(Method::POST, "/mcp")
        .header("accept", ACCEPT)
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    world.app.send(request).await
}

/// Initializes a session with `x-airlock-intent` and `lookup` in its lease, and returns its id.
async fn initialize(world: &World) -> String {
    initialize_with(world, "lookup").await
}

/// Initializes a session with `x-airlock-intent` and `tools`, and returns its id.
async fn initialize_with(world: &World, tools: &str) -> String {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    });
    let request = world
        .app
        .request(Method::POST, "/mcp")
        .bearer_auth(world.agent_key())
        .header("accept", ACCEPT)
        .header("content-type", "application/json")
        .header("x-airlock-intent", "look up the customer's ticket")
        .header("x-airlock-tools", tools)
        .body(body.to_string());
    let reply = world.app.send(request).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let session = reply.header("mcp-session-id").expect("a session id").to_owned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply = send(world, Some(world.agent_key()), Some(&session), initialized.to_string()).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    session
}

/// The session's tool names, from `tools/list`.
async fn tool_names(world: &World, session: &str) -> Vec<String> {
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let reply = send(world, Some(world.agent_key()), Some(session), list.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answer = messages(&reply).into_iter().find(|m| m["id"] == 2).expect("a tools/list answer");
    answer["result"]["tools"]
        .as_array()
        .expect("a list of tools")
        .iter()
        .map(|t| t["name"].as_str().expect("a name").to_owned())
        .collect()
}

#[tokio::test]
async fn the_official_mcp_sdk_works_through_the_pipeline_with_approvals_returned_and_waited_for() {
    let world = world().await;
    let approver = world.app.user(&world.tenant.scope, "ann@acme.example", &[Role::Approver]).await;
    let python = std::env::var("AIRLOCK_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = format!("{}/tests/sdk/mcp_client.py", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .env("AIRLOCK_BASE_URL", &world.app.base)
        .env("AIRLOCK_KEY", world.agent_key())
        .env("AIRLOCK_ADMIN_KEY", world.admin())
        .env("AIRLOCK_APPROVER_KEY", &approver.key.secret);
    let client = tokio::task::spawn_blocking(move || command.output());

    // Once the tenant waits for approvals, the approver decides the held payment while the
    // agent's call is open.
    let started = Instant::now();
    let mut approved = false;
    while !client.is_finished() && started.elapsed() < Duration::from_secs(60) && !approved {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let settings = world.app.get_ok("/v1/flow-settings", world.admin()).await;
        if settings["settings"]["mcp"]["approvals"] != "wait" {
            continue;
        }
        let pending = world.app.get_ok("/v1/approvals?status=pending", world.admin()).await;
        if let Some(approval) = pending.as_array().and_then(|all| all.first()) {
            let id = approval["id"].as_str().expect("an approval id");
            let body = json!({"decision": "approve", "reason": "the customer confirmed invoice 43"});
            world
                .app
                .post(&format!("/v1/approvals/{id}/decision"), &approver.key.secret, &body)
                .await
                .expect_status(200);
            approved = true;
        }
    }
    let output =
        client.await.expect("the client task").unwrap_or_else(|e| panic!("cannot run `{python}`: {e}"));
    assert!(
        output.status.success(),
        "mcp_client.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(approved, "the waited payment was approved by the Rust side");
    assert_eq!(world.upstream.requests_to("/pay").len(), 2, "each approved payment ran once");
    assert!(world.upstream.requests_to("/wire").is_empty());
    assert_eq!(world.entries_of("mcp.session_opened").await.len(), 1);
}

#[tokio::test]
async fn without_a_valid_key_or_from_a_foreign_origin_nothing_reaches_the_protocol() {
    let world = world().await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).to_string();
    let missing = send(&world, None, None, initialize.clone()).await;
    assert_eq!(missing.status, 401, "{}", missing.text);
    let forged = send(&world, Some("alk_forged_0000000000000000"), None, initialize.clone()).await;
    assert_eq!(forged.status, 401, "{}", forged.text);

    let request = world
        .app
        .request(Method::POST, "/mcp")
        .bearer_auth(world.agent_key())
        .header("accept", ACCEPT)
        .header("content-type", "application/json")
        .header("origin", "http://evil.example")
        .body(initialize.clone());
    let foreign = world.app.send(request).await;
    assert_eq!(foreign.status, 403, "{}", foreign.text);

    let request = world
        .app
        .request(Method::POST, "/mcp")
        .bearer_auth(world.agent_key())
        .header("accept", ACCEPT)
        .header("content-type", "application/json")
        .header("host", "rebound.evil.example")
        .body(initialize);
    let rebound = world.app.send(request).await;
    assert_eq!(rebound.status, 403, "{}", rebound.text);

    // An operator manages tenants and opens no runs.
    let operator = world.app.operator("ops").await;
    let reply = send(&world, Some(&operator.secret), None, "{}".to_owned()).await;
    assert_eq!(reply.status, 403, "{}", reply.text);
}

#[tokio::test]
async fn protocol_errors_are_clear_and_the_session_keeps_working() {
    let world = world().await;
    let session = initialize(&world).await;
    assert_eq!(tool_names(&world, &session).await, ["lookup"], "exactly the lease");

    let key = Some(world.agent_key());
    let malformed = send(&world, key, Some(&session), "{\"jsonrpc\": \"2.0\", \"id\": ".to_owned()).await;
    assert_eq!(malformed.status, 400, "{}", malformed.text);
    assert_eq!(malformed.json()["error"]["code"], -32700, "{}", malformed.text);

    let not_jsonrpc = send(&world, key, Some(&session), "[1, 2]".to_owned()).await;
    assert_eq!(not_jsonrpc.status, 400, "{}", not_jsonrpc.text);
    assert_eq!(not_jsonrpc.json()["error"]["code"], -32600, "{}", not_jsonrpc.text);

    let unknown = json!({"jsonrpc": "2.0", "id": 7, "method": "airlock/escape", "params": {}});
    let reply = send(&world, key, Some(&session), unknown.to_string()).await;
    let answer = messages(&reply).into_iter().find(|m| m["id"] == 7).expect("an answer");
    assert_eq!(answer["error"]["code"], -32601, "{answer}");

    let outside = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "wire_transfer", "arguments": {"to": "x"}}});
    let reply = send(&world, key, Some(&session), outside.to_string()).await;
    let answer = messages(&reply).into_iter().find(|m| m["id"] == 8).expect("an answer");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("unknown tool")), "{answer}");

    let huge =
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {"pad": "x".repeat(2 << 20)}});
    let reply = send(&world, key, Some(&session), huge.to_string()).await;
    assert_eq!(reply.status, 413, "{}", reply.text);

    // Another principal cannot use the session.
    let other = world.app.agent(&world.tenant.scope, "other").await;
    let list = json!({"jsonrpc": "2.0", "id": 10, "method": "tools/list"});
    let reply = send(&world, Some(&other.key.secret), Some(&session), list.to_string()).await;
    assert_eq!(reply.status, 404, "{}", reply.text);

    let list = json!({"jsonrpc": "2.0", "id": 11, "method": "tools/list"});
    let reply = send(&world, key, Some("no-such-session"), list.to_string()).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert!(reply.json()["detail"].as_str().is_some_and(|d| d.contains("MCP session")), "{}", reply.text);

    // Another tenant's tool does not exist here, in a call or in the lease asked for.
    let globex = world.app.tenant("globex").await;
    let theirs = tool("ledger", "read", post(&world.upstream, "/ledger"));
    world.app.post("/v1/tools", &globex.admin.key.secret, &theirs).await.expect_status(201);
    let theirs = json!({"jsonrpc": "2.0", "id": 12, "method": "tools/call", "params": {"name": "ledger", "arguments": {"to": "x"}}});
    let reply = send(&world, key, Some(&session), theirs.to_string()).await;
    let answer = messages(&reply).into_iter().find(|m| m["id"] == 12).expect("an answer");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("unknown tool")), "{answer}");
    let request = world
        .app
        .request(Method::POST, "/mcp")
        .bearer_auth(world.agent_key())
        .header("accept", ACCEPT)
        .header("content-type", "application/json")
        .header("x-airlock-intent", "read the ledger")
        .header("x-airlock-tools", "ledger")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
                .to_string(),
        );
    let reply = world.app.send(request).await;
    let answer = messages(&reply).into_iter().find(|m| m["id"] == 1).expect("an answer");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("no tool `ledger`")), "{answer}");
    assert!(world.upstream.requests_to("/ledger").is_empty());

    assert_eq!(tool_names(&world, &session).await, ["lookup"], "the session still works");
    assert!(world.upstream.requests_to("/wire").is_empty());
}

#[tokio::test]
async fn without_an_intent_the_session_offers_only_open_run() {
    let world = world().await;
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    });
    let reply = send(&world, Some(world.agent_key()), None, body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let session = reply.header("mcp-session-id").expect("a session id").to_owned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    send(&world, Some(world.agent_key()), Some(&session), initialized.to_string()).await;
    assert_eq!(tool_names(&world, &session).await, ["airlock.open_run"]);

    let open = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "airlock.open_run", "arguments": {"intent": "look up ticket 7", "tools": ["lookup"]}}});
    let reply = send(&world, Some(world.agent_key()), Some(&session), open.to_string()).await;
    let answer = messages(&reply).into_iter().find(|m| m["id"] == 3).expect("an answer");
    assert!(
        answer["result"]["structuredContent"]["run_id"].as_str().is_some_and(|r| r.starts_with("run_")),
        "{answer}"
    );
    assert_eq!(tool_names(&world, &session).await, ["lookup"]);

    let call = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "lookup", "arguments": {"to": "ticket-7"}}});
    let reply = send(&world, Some(world.agent_key()), Some(&session), call.to_string()).await;
    let answer = messages(&reply).into_iter().find(|m| m["id"] == 4).expect("an answer");
    assert_eq!(answer["result"]["_meta"]["airlock"]["untrusted"], true, "{answer}");
    assert_eq!(answer["result"]["structuredContent"]["content"], json!({"ticket": 7, "status": "open"}));
}

/// `tools/call` in `session` with JSON-RPC id 1; the answer's `result`.
async fn call(world: &World, session: &str, name: &str, arguments: Value) -> Value {
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}});
    let reply = send(world, Some(world.agent_key()), Some(session), call.to_string()).await;
    let answer = messages(&reply).into_iter().find(|m| m["id"] == 1).expect("an answer");
    answer["result"].clone()
}

#[tokio::test]
async fn a_denied_call_is_an_error_result_and_a_held_call_waits_at_most_wait_secs() {
    let world = world().await;
    let bad = json!({"mcp": {"approvals": "wait", "wait_secs": 0}});
    world.app.put("/v1/flow-settings", world.admin(), &bad).await.expect_problem(422, "invalid-body");
    let settings = json!({"mcp": {"approvals": "wait", "wait_secs": 1}});
    world.app.put("/v1/flow-settings", world.admin(), &settings).await.expect_status(200);
    let session = initialize_with(&world, "lookup,pay").await;

    let denied = call(&world, &session, "lookup", json!({"count": 0})).await;
    assert_eq!(denied["isError"], true, "{denied}");
    assert_eq!(denied["structuredContent"]["status"], "denied", "{denied}");
    assert!(denied["content"][0]["text"].as_str().is_some_and(|t| t.contains("argument")), "{denied}");

    let started = Instant::now();
    let held =
        call(&world, &session, "pay", json!({"to": "acct-42", "subject": "invoice 42", "count": 100})).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "the call was held for `wait_secs`");
    assert_eq!(held["isError"], false, "{held}");
    assert_eq!(held["structuredContent"]["status"], "pending_approval", "{held}");
    assert!(
        held["_meta"]["airlock"]["approval_id"].as_str().is_some_and(|a| a.starts_with("apr_")),
        "{held}"
    );
    assert!(world.upstream.requests_to("/pay").is_empty(), "nothing ran without approval");
}

#[tokio::test]
async fn sessions_beyond_the_configured_most_are_refused_and_held_ones_keep_working() {
    let world = World::spawn_with(|c| c.mcp_max_sessions = 2).await;
    world.upstream.on("/lookup", Behaviour::json(200, json!({"ticket": 7})));
    world.register(&tool("lookup", "read", post(&world.upstream, "/lookup"))).await;
    let first = initialize(&world).await;
    let _second = initialize(&world).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let refused = send(&world, Some(world.agent_key()), None, body.to_string()).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(refused.text.contains("MCP sessions"), "{}", refused.text);
    assert_eq!(tool_names(&world, &first).await, ["lookup"]);
}
