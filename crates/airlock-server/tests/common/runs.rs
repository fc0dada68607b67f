//! Runs and actions, shared by the run and approval tests: a [`World`] (a running server, a
//! tenant with an administrator and an agent, and a recording upstream), tool definitions,
//! opening runs with their lease, proposing actions, and reading the audit trail back.

use airlock_audit::{Entry, NoteVerifier};
use airlock_server::Config;
use reqwest::Method;
use serde_json::{Value, json};

use super::upstream::Upstream;
use super::{AgentFixture, Reply, TenantFixture, TestApp};

/// The header carrying a run's lease.
pub const LEASE: &str = "x-airlock-lease";

/// A tool definition with a small schema (`to` required, `subject`, `count` ≥ 1).
pub fn tool(name: &str, tier: &str, connector: Value) -> Value {
    json!({
        "name": name,
        "description": format!("{name}, for the tests"),
        "tier": tier,
        "side_effects": tier != "read",
        "input_schema": {
            "type": "object",
            "properties": {
                "to": {"type": "string"},
                "subject": {"type": "string"},
                "count": {"type": "integer", "minimum": 1}
            },
            "required": ["to"]
        },
        "connector": connector,
    })
}

/// An HTTP POST connector to the upstream's `path` that sends the arguments as its body.
pub fn post(upstream: &Upstream, path: &str) -> Value {
    json!({"kind": "http", "method": "POST", "url": upstream.url(path), "timeout_ms": 2000})
}

/// `base` with the members of `extra` added or replaced.
pub fn merged(mut base: Value, extra: Value) -> Value {
    for (name, value) in extra.as_object().expect("an object to merge") {
        base[name.as_str()] = value.clone();
    }
    base
}

/// The hex SHA-256 of a value's canonical JSON, as receipts and approvals carry it.
pub fn digest_hex(value: &Value) -> String {
    let canonical = airlock_audit::canonical::to_canonical(value).expect("canonical JSON");
    airlock_crypto::sha256(canonical.as_bytes()).as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A run as opened: its id and lease.
#[derive(Debug, Clone)]
pub struct RunFixture {
    /// The run's id (`run_…`).
    pub id: String,
    /// Its lease (`alr_…`).
    pub lease: String,
}

/// `POST /v1/runs` with `body`, expecting 201.
pub async fn open_run(app: &TestApp, key: &str, body: &Value) -> RunFixture {
    let opened = app.post("/v1/runs", key, body).await.expect_status(201);
    assert_eq!(opened["run"]["status"], "active", "{opened}");
    RunFixture {
        id: opened["run"]["id"].as_str().expect("a run id").to_owned(),
        lease: opened["lease"].as_str().expect("a lease").to_owned(),
    }
}

/// `POST /v1/runs/{run}/actions` with `key`, the lease if given, and `body`.
pub async fn propose_raw(app: &TestApp, key: &str, run: &str, lease: Option<&str>, body: &Value) -> Reply {
    let mut request =
        app.request(Method::POST, &format!("/v1/runs/{run}/actions")).bearer_auth(key).json(body);
    if let Some(lease) = lease {
        request = request.header(LEASE, lease);
    }
    app.send(request).await
}

/// `POST /v1/runs/{run}/complete` with `key` and the lease.
pub async fn complete(app: &TestApp, key: &str, run: &RunFixture, status: &str) -> Reply {
    let request = app
        .request(Method::POST, &format!("/v1/runs/{}/complete", run.id))
        .bearer_auth(key)
        .header(LEASE, &run.lease)
        .json(&json!({ "status": status }));
    app.send(request).await
}

/// A proposal's body.
pub fn proposal(tool: &str, arguments: &Value, idempotency_key: &str) -> Value {
    json!({"tool": tool, "arguments": arguments, "idempotency_key": idempotency_key})
}

/// The reasons of an action, joined.
pub fn reasons(action: &Value) -> String {
    action["reasons"]
        .as_array()
        .expect("a list of reasons")
        .iter()
        .map(|r| r.as_str().expect("a sentence"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A tenant (`acme`) with an administrator and an agent (`bot`), a running server, and an
/// upstream.
pub struct World {
    /// The server.
    pub app: TestApp,
    /// The recording upstream the tools call.
    pub upstream: Upstream,
    /// The tenant.
    pub tenant: TenantFixture,
    /// The agent.
    pub agent: AgentFixture,
}

impl World {
    /// A world with the default configuration.
    pub async fn new() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A world whose server's configuration `adjust` has changed.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let app = TestApp::spawn_with(adjust).await;
        let tenant = app.tenant("acme").await;
        let agent = app.agent(&tenant.scope, "bot").await;
        let upstream = Upstream::spawn().await;
        Self { app, upstream, tenant, agent }
    }

    /// The administrator's key.
    pub fn admin(&self) -> &str {
        &self.tenant.admin.key.secret
    }

    /// The agent's key.
    pub fn agent_key(&self) -> &str {
        &self.agent.key.secret
    }

    /// Registers a tool, as the administrator.
    pub async fn register(&self, definition: &Value) {
        self.app.post("/v1/tools", self.admin(), definition).await.expect_status(201);
    }

    /// Stores a credential, as the administrator.
    pub async fn credential(&self, name: &str, material: &Value) {
        self.app.put(&format!("/v1/credentials/{name}"), self.admin(), material).await.expect_status(200);
    }

    /// Sets the tenant's policy, as the administrator.
    pub async fn policy(&self, text: &str) {
        self.app.put("/v1/policies", self.admin(), &json!({ "text": text })).await.expect_status(200);
    }

    /// Opens a run for the agent with these tools and `extra` members in the body.
    pub async fn open_with(&self, tools: &[&str], extra: Value) -> RunFixture {
        let body = merged(json!({"intent": "help a customer with their ticket", "tools": tools}), extra);
        open_run(&self.app, self.agent_key(), &body).await
    }

    /// Opens a run for the agent with these tools.
    pub async fn open(&self, tools: &[&str]) -> RunFixture {
        self.open_with(tools, json!({})).await
    }

    /// The agent proposes an action in `run` with its lease.
    pub async fn propose(&self, run: &RunFixture, tool: &str, arguments: &Value, key: &str) -> Reply {
        let body = proposal(tool, arguments, key);
        propose_raw(&self.app, self.agent_key(), &run.id, Some(&run.lease), &body).await
    }

    /// Proposes and expects the action to be decided (201).
    pub async fn act(&self, run: &RunFixture, tool: &str, arguments: &Value, key: &str) -> Value {
        self.propose(run, tool, arguments, key).await.expect_status(201)
    }

    /// The run, as its agent reads it.
    pub async fn get_run(&self, run: &RunFixture) -> Value {
        self.app.get_ok(&format!("/v1/runs/{}", run.id), self.agent_key()).await
    }

    /// The tenant's published verifier keys.
    pub async fn verifiers(&self) -> Vec<NoteVerifier> {
        let keys = self.app.get_ok("/v1/audit/keys", self.admin()).await;
        keys.as_array()
            .expect("a list of keys")
            .iter()
            .map(|k| NoteVerifier::parse(k["verifier"].as_str().expect("a verifier")).expect("a valid key"))
            .collect()
    }

    /// `/v1/audit/entries<query>`, parsed.
    pub async fn entries(&self, query: &str) -> Vec<Entry> {
        let reply = self.app.get(&format!("/v1/audit/entries{query}"), self.admin()).await;
        assert_eq!(reply.status, 200, "entries: {}", reply.text);
        reply.text.lines().map(|line| serde_json::from_str(line).expect("an audit entry")).collect()
    }

    /// The audit entries of one type (or family, ending with `.`).
    pub async fn entries_of(&self, event_type: &str) -> Vec<Entry> {
        self.entries(&format!("?type={event_type}")).await
    }
}
