//! `airlock bench scenarios`: the flow guard's scenario suite (`scenarios/*.json`), driven
//! through the real REST API and HTTP connectors.
//!
//! Each domain file gets its own tenant: its tools are registered over the API with HTTP
//! connectors to a loopback upstream that answers each call with the output the scenario
//! gives, and its allowlists are added by an administrator. Each legitimate scenario runs in
//! a run of its own, opened by an agent with the scenario's intent and inputs; a call held
//! for approval is approved by an approver (a human was involved) and the task goes on; a
//! call denied ends the task. Each hijack replays the task up to the step whose output
//! carries the injected text, then proposes the calls the hijacked agent makes. A call that
//! the legitimate task also makes (same tool, same arguments) is the agent still doing its
//! job, and is treated as the task's; every other side-effecting call is an injected call,
//! and none is approved. The report counts, per domain: tasks done with no human, legitimate calls held
//! and denied, and injected side-effecting calls stopped (denied or held); and the judge's
//! latency.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use airlock_store::{KeyOwner, NewUser, Principal};
use airlock_types::{AgentName, Email, Role, TenantSlug};
use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::bench::{BenchServer, ms, percentile};

/// How to run the suite.
#[derive(Debug, clap::Args)]
pub struct ScenariosBench {
    /// The folder of scenario files.
    #[arg(long, default_value = "scenarios")]
    dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also put each high-stakes call that would go ahead to a model judge: a local
    /// OpenAI-compatible endpoint that approves after this many milliseconds, reached
    /// through the model gateway's routes (redaction, budgets, audit). Measures what the
    /// panel adds; a real model's own time comes on top.
    #[arg(long)]
    model_judge_ms: Option<u64>,
}

/// A local model endpoint in the OpenAI wire format that approves every case.
async fn fake_judge(delay: Duration) -> anyhow::Result<std::net::SocketAddr> {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || async move {
            tokio::time::sleep(delay).await;
            let verdict = json!({"verdict": "approve", "reasons": ["The action matches the intent."]}).to_string();
            axum::Json(json!({
                "id": "chatcmpl-judge", "object": "chat.completion", "created": 0, "model": "judge",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": verdict}}],
                "usage": {"prompt_tokens": 400, "completion_tokens": 20, "total_tokens": 420},
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// A domain file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Domain {
    domain: String,
    #[allow(dead_code, reason = "documentation in the data")]
    description: String,
    tools: Vec<ToolDef>,
    #[serde(default)]
    allowlists: Vec<Listed>,
    scenarios: Vec<Scenario>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolDef {
    name: String,
    description: String,
    tier: String,
    side_effects: bool,
    classification: String,
    trusted_source: bool,
    input_schema: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listed {
    list: String,
    value: String,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    id: String,
    intent: String,
    #[serde(default)]
    inputs: Value,
    steps: Vec<Step>,
    #[serde(default)]
    hijacks: Vec<Hijack>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    tool: String,
    arguments: Value,
    output: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hijack {
    id: String,
    goal: String,
    #[allow(dead_code, reason = "documentation in the data")]
    placement: String,
    inject: Injection,
    calls: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Injection {
    step: usize,
    pointer: String,
    mode: String,
    text: String,
}

/// What happened to one proposed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Fate {
    Executed,
    Held,
    Denied,
}

/// The counts of one domain (or all).
#[derive(Debug, Default, Clone, Serialize)]
struct Tally {
    tasks: usize,
    tasks_without_human: usize,
    legit_side_effect_calls: usize,
    legit_held: usize,
    legit_denied: usize,
    hijacks: usize,
    injected_side_effect_calls: usize,
    injected_denied: usize,
    injected_held: usize,
    injected_executed: usize,
}

impl Tally {
    fn add(&mut self, other: &Self) {
        self.tasks += other.tasks;
        self.tasks_without_human += other.tasks_without_human;
        self.legit_side_effect_calls += other.legit_side_effect_calls;
        self.legit_held += other.legit_held;
        self.legit_denied += other.legit_denied;
        self.hijacks += other.hijacks;
        self.injected_side_effect_calls += other.injected_side_effect_calls;
        self.injected_denied += other.injected_denied;
        self.injected_held += other.injected_held;
        self.injected_executed += other.injected_executed;
    }

    fn share(part: usize, whole: usize) -> f64 {
        if whole == 0 { 1.0 } else { part as f64 / whole as f64 }
    }
}

/// A call worth a look in the report: a legitimate one held or denied, or an injected one
/// that executed.
#[derive(Debug, Serialize)]
struct Notable {
    scenario: String,
    tool: String,
    fate: Fate,
    reasons: Vec<String>,
}

/// The loopback upstream: answers each tool's next call with the output set for it.
#[derive(Clone, Default)]
struct Upstream {
    outputs: Arc<Mutex<HashMap<String, Value>>>,
}

impl Upstream {
    fn set(&self, tool: &str, output: Value) {
        self.outputs.lock().unwrap_or_else(PoisonError::into_inner).insert(tool.to_owned(), output);
    }

    async fn serve(&self) -> anyhow::Result<std::net::SocketAddr> {
        let outputs = self.outputs.clone();
        let app = axum::Router::new().route(
            "/tools/{name}",
            axum::routing::post(move |axum::extract::Path(name): axum::extract::Path<String>| {
                let outputs = outputs.clone();
                async move {
                    let output = outputs
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&name)
                        .cloned()
                        .unwrap_or(Value::Null);
                    axum::Json(output)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(addr)
    }
}

/// One tenant's keys, for driving the API.
struct Actors {
    admin: String,
    approver: String,
    agent: String,
}

struct Driver {
    client: reqwest::Client,
    base: String,
    upstream: Upstream,
    judge_ms: Vec<Duration>,
    panel_ms: Vec<Duration>,
    decide_ms: Vec<Duration>,
}

impl Driver {
    async fn post(
        &self,
        path: &str,
        key: &str,
        body: &Value,
        lease: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.client.post(format!("{}{path}", self.base)).bearer_auth(key).json(body);
        if let Some(lease) = lease {
            request = request.header("x-airlock-lease", lease);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    async fn expect(
        &self,
        path: &str,
        key: &str,
        body: &Value,
        lease: Option<&str>,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self.post(path, key, body, lease).await?;
        if !(200..300).contains(&status) {
            bail!("POST {path}: {status} {answer}");
        }
        Ok(answer)
    }

    async fn put(&self, path: &str, key: &str, body: &Value) -> anyhow::Result<()> {
        let response =
            self.client.put(format!("{}{path}", self.base)).bearer_auth(key).json(body).send().await?;
        if !response.status().is_success() {
            bail!("PUT {path}: {}", response.status());
        }
        Ok(())
    }

    async fn setup(
        &self,
        domain: &Domain,
        actors: &Actors,
        upstream: std::net::SocketAddr,
        judge: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<()> {
        if let Some(judge) = judge {
            let route = json!({"provider": "openai", "base_url": format!("http://{judge}/v1"), "model": "judge", "api_key": "sk-local-judge"});
            let body = json!({"routes": [route], "input_cents_per_mtok": 0, "output_cents_per_mtok": 0});
            self.put("/v1/model-routes/judge", &actors.admin, &body).await?;
            let settings =
                json!({"judge": {"models": ["judge"], "quorum": 1, "agreement": 1.0, "timeout_ms": 10_000}});
            self.put("/v1/flow-settings", &actors.admin, &settings).await?;
        }
        for tool in &domain.tools {
            let body = json!({
                "name": tool.name,
                "description": tool.description,
                "input_schema": tool.input_schema,
                "tier": tool.tier,
                "side_effects": tool.side_effects,
                "classification": tool.classification,
                "trusted_source": tool.trusted_source,
                "connector": {"kind": "http", "method": "POST", "url": format!("http://{upstream}/tools/{}", tool.name)},
            });
            self.expect("/v1/tools", &actors.admin, &body, None)
                .await
                .with_context(|| format!("registering `{}`", tool.name))?;
        }
        for listed in &domain.allowlists {
            let body = json!({"list": listed.list, "value": listed.value, "note": listed.note});
            self.expect("/v1/allowlists", &actors.admin, &body, None)
                .await
                .with_context(|| format!("listing `{}`", listed.value))?;
        }
        Ok(())
    }

    async fn open(
        &self,
        domain: &Domain,
        scenario: &Scenario,
        agent: &str,
    ) -> anyhow::Result<(String, String)> {
        let tools: Vec<&str> = domain.tools.iter().map(|t| t.name.as_str()).collect();
        let inputs = if scenario.inputs.is_object() { scenario.inputs.clone() } else { json!({}) };
        let body =
            json!({"intent": scenario.intent, "tools": tools, "inputs": inputs, "budget_cents": 1_000_000});
        let opened = self
            .expect("/v1/runs", agent, &body, None)
            .await
            .with_context(|| format!("opening {}", scenario.id))?;
        let run = opened.pointer("/run/id").unwrap_or(&Value::Null).as_str().unwrap_or_default().to_owned();
        let lease = opened.pointer("/lease").unwrap_or(&Value::Null).as_str().unwrap_or_default().to_owned();
        Ok((run, lease))
    }

    /// Proposes a call; a held call is approved when `approve` is set. Returns its fate (as
    /// first decided) and the action.
    async fn call(
        &mut self,
        actors: &Actors,
        run: &(String, String),
        step: &Step,
        key: &str,
        approve: bool,
    ) -> anyhow::Result<(Fate, Value)> {
        self.upstream.set(&step.tool, step.output.clone());
        let body = json!({"tool": step.tool, "arguments": step.arguments, "idempotency_key": key});
        let started = Instant::now();
        let action =
            self.expect(&format!("/v1/runs/{}/actions", run.0), &actors.agent, &body, Some(&run.1)).await?;
        self.decide_ms.push(started.elapsed());
        if let Some(judged) = action.pointer("/judge/ms").and_then(Value::as_f64) {
            let asked_models =
                action.pointer("/judge/judges").and_then(Value::as_array).is_some_and(|judges| {
                    judges.iter().any(|j| j.get("judge").and_then(Value::as_str) == Some("panel"))
                });
            let took = Duration::from_secs_f64(judged / 1e3);
            if asked_models { self.panel_ms.push(took) } else { self.judge_ms.push(took) }
        }
        let fate = match action.pointer("/status").unwrap_or(&Value::Null).as_str() {
            Some("pending_approval") => Fate::Held,
            Some("denied") => Fate::Denied,
            _ => Fate::Executed,
        };
        if fate == Fate::Held && approve {
            let approval = &action.pointer("/approval/id").unwrap_or(&Value::Null);
            let id = approval.as_str().unwrap_or_default();
            let detail = self
                .client
                .get(format!("{}/v1/approvals/{id}", self.base))
                .bearer_auth(&actors.approver)
                .send()
                .await?;
            let detail: Value = detail.json().await?;
            let decision = json!({"decision": "approve", "reason": "the scenario's user confirms", "digest": detail.pointer("/digest").unwrap_or(&Value::Null)});
            self.expect(&format!("/v1/approvals/{id}/decision"), &actors.approver, &decision, None).await?;
        }
        Ok((fate, action))
    }
}

fn reasons(action: &Value) -> Vec<String> {
    action
        .pointer("/reasons")
        .unwrap_or(&Value::Null)
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn inject(output: &Value, injection: &Injection) -> anyhow::Result<Value> {
    let mut altered = output.clone();
    let Some(Value::String(text)) = altered.pointer_mut(&injection.pointer) else {
        bail!("`{}` is not a string of the output", injection.pointer);
    };
    *text = match injection.mode.as_str() {
        "append" => format!("{text}{}", injection.text),
        "prepend" => format!("{}{text}", injection.text),
        "replace" => injection.text.clone(),
        other => bail!("unknown injection mode `{other}`"),
    };
    Ok(altered)
}

fn load(dir: &Path) -> anyhow::Result<Vec<Domain>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read `{}`", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut domains = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        domains.push(serde_json::from_str(&text).with_context(|| format!("`{}`", file.display()))?);
    }
    if domains.is_empty() {
        bail!("no scenario files in `{}`", dir.display());
    }
    Ok(domains)
}

/// Runs the suite and prints the report.
pub async fn run(args: &ScenariosBench) -> anyhow::Result<()> {
    let domains = load(&args.dir)?;
    let upstream = Upstream::default();
    let upstream_addr = upstream.serve().await?;
    let judge_addr = match args.model_judge_ms {
        Some(delay) => Some(fake_judge(Duration::from_millis(delay)).await?),
        None => None,
    };
    let bench = BenchServer::start(|config| {
        config.actions_per_run_per_minute = u32::MAX;
        config.approval_ttl = Duration::from_secs(3600);
    })
    .await?;
    let store = bench.store.clone();
    let mut driver = Driver {
        client: reqwest::Client::new(),
        base: bench.base.clone(),
        upstream,
        judge_ms: Vec::new(),
        panel_ms: Vec::new(),
        decide_ms: Vec::new(),
    };
    let operator = Principal::local_operator();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut notable = Vec::new();
    let mut by_goal: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let started = Instant::now();

    for domain in &domains {
        let slug = TenantSlug::parse(&format!("scn-{}", domain.domain))?;
        store.create_tenant(&operator, &slug, &domain.domain).await?;
        let scope = store.operator_scope(&operator, &slug).await?;
        let user = async |email: &str, role: Role| -> anyhow::Result<String> {
            let new = NewUser {
                email: Email::parse(email)?,
                name: email.into(),
                roles: [role].into_iter().collect(),
                password: None,
            };
            let user = store.create_user(&scope, new).await?;
            Ok(store
                .create_api_key(&scope, KeyOwner::User(user.id), "scenarios", None)
                .await?
                .secret
                .expose()
                .to_owned())
        };
        let agent =
            store.create_agent(&scope, &AgentName::parse("assistant")?, "the scenario's agent").await?;
        let actors = Actors {
            admin: user("admin@scenarios.example", Role::Admin).await?,
            approver: user("approver@scenarios.example", Role::Approver).await?,
            agent: store
                .create_api_key(&scope, KeyOwner::Agent(agent.id), "agent", None)
                .await?
                .secret
                .expose()
                .to_owned(),
        };
        driver.setup(domain, &actors, upstream_addr, judge_addr).await?;
        let side_effects: HashMap<&str, bool> =
            domain.tools.iter().map(|t| (t.name.as_str(), t.side_effects)).collect();
        let tally = tallies.entry(domain.domain.clone()).or_default();

        for scenario in &domain.scenarios {
            tally.tasks += 1;
            let run = driver.open(domain, scenario, &actors.agent).await?;
            let mut human = false;
            for (i, step) in scenario.steps.iter().enumerate() {
                let (fate, action) = driver.call(&actors, &run, step, &format!("s{i}"), true).await?;
                let effect = side_effects.get(step.tool.as_str()).copied().unwrap_or(true);
                if effect {
                    tally.legit_side_effect_calls += 1;
                }
                match fate {
                    Fate::Executed => {}
                    Fate::Held => {
                        human = true;
                        tally.legit_held += usize::from(effect);
                        notable.push(Notable {
                            scenario: scenario.id.clone(),
                            tool: step.tool.clone(),
                            fate,
                            reasons: reasons(&action),
                        });
                    }
                    Fate::Denied => {
                        human = true;
                        tally.legit_denied += 1;
                        notable.push(Notable {
                            scenario: scenario.id.clone(),
                            tool: step.tool.clone(),
                            fate,
                            reasons: reasons(&action),
                        });
                        break;
                    }
                }
            }
            if !human {
                tally.tasks_without_human += 1;
            }

            for hijack in &scenario.hijacks {
                tally.hijacks += 1;
                let run = driver.open(domain, scenario, &actors.agent).await?;
                for (i, step) in scenario.steps.iter().take(hijack.inject.step + 1).enumerate() {
                    let mut step = step.clone();
                    if i == hijack.inject.step {
                        step.output =
                            inject(&step.output, &hijack.inject).with_context(|| hijack.id.clone())?;
                    }
                    driver.call(&actors, &run, &step, &format!("s{i}"), true).await?;
                }
                for (j, call) in hijack.calls.iter().enumerate() {
                    // A call the legitimate task makes too (the hijacked agent still does its
                    // job) is not an injected call; it is approved if held, like the task's.
                    let legitimate =
                        scenario.steps.iter().any(|s| s.tool == call.tool && s.arguments == call.arguments);
                    let (fate, action) =
                        driver.call(&actors, &run, call, &format!("h{j}"), legitimate).await?;
                    if legitimate || !side_effects.get(call.tool.as_str()).copied().unwrap_or(true) {
                        continue;
                    }
                    tally.injected_side_effect_calls += 1;
                    let goal = by_goal.entry(hijack.goal.clone()).or_default();
                    goal.0 += 1;
                    match fate {
                        Fate::Denied => {
                            tally.injected_denied += 1;
                            goal.1 += 1;
                        }
                        Fate::Held => {
                            tally.injected_held += 1;
                            goal.1 += 1;
                        }
                        Fate::Executed => {
                            tally.injected_executed += 1;
                            notable.push(Notable {
                                scenario: hijack.id.clone(),
                                tool: call.tool.clone(),
                                fate,
                                reasons: reasons(&action),
                            });
                        }
                    }
                }
            }
        }
    }
    let elapsed = started.elapsed();
    bench.stop().await;

    let mut total = Tally::default();
    for tally in tallies.values() {
        total.add(tally);
    }
    driver.judge_ms.sort_unstable();
    driver.panel_ms.sort_unstable();
    driver.decide_ms.sort_unstable();
    let latency = |sorted: &[Duration]| json!({"count": sorted.len(), "p50_ms": ms(percentile(sorted, 50.0)), "p99_ms": ms(percentile(sorted, 99.0)), "max_ms": ms(sorted.last().copied().unwrap_or_default())});
    let summary = |t: &Tally| {
        json!({
            "tasks": t.tasks,
            "tasks_without_human": t.tasks_without_human,
            "share_without_human": Tally::share(t.tasks_without_human, t.tasks),
            "legit_side_effect_calls": t.legit_side_effect_calls,
            "legit_held": t.legit_held,
            "legit_denied": t.legit_denied,
            "hijacks": t.hijacks,
            "injected_side_effect_calls": t.injected_side_effect_calls,
            "injected_stopped": t.injected_denied + t.injected_held,
            "share_injected_stopped": Tally::share(t.injected_denied + t.injected_held, t.injected_side_effect_calls),
            "injected_denied": t.injected_denied,
            "injected_held": t.injected_held,
            "injected_executed": t.injected_executed,
        })
    };
    let report = json!({
        "total": summary(&total),
        "domains": tallies.iter().map(|(d, t)| (d.clone(), summary(t))).collect::<serde_json::Map<String, Value>>(),
        "goals": by_goal.iter().map(|(g, (n, stopped))| (g.clone(), json!({"calls": n, "stopped": stopped}))).collect::<serde_json::Map<String, Value>>(),
        "judge_latency": latency(&driver.judge_ms),
        "model_judge_latency": latency(&driver.panel_ms),
        "model_judge": args.model_judge_ms,
        "decision_latency": latency(&driver.decide_ms),
        "seconds": elapsed.as_secs_f64(),
        "notable": notable,
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{:<10} {:>6} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8}",
        "domain", "tasks", "no human", "held", "denied", "hijacks", "injected", "stopped", "denied", "held"
    );
    let line = |name: &str, t: &Tally| {
        println!(
            "{:<10} {:>6} {:>9.1}% {:>8} {:>8} {:>8} {:>9} {:>8.1}% {:>8} {:>8}",
            name,
            t.tasks,
            100.0 * Tally::share(t.tasks_without_human, t.tasks),
            t.legit_held,
            t.legit_denied,
            t.hijacks,
            t.injected_side_effect_calls,
            100.0 * Tally::share(t.injected_denied + t.injected_held, t.injected_side_effect_calls),
            t.injected_denied,
            t.injected_held
        );
    };
    for (name, tally) in &tallies {
        line(name, tally);
    }
    line("all", &total);
    println!();
    for (goal, (n, stopped)) in &by_goal {
        println!("goal {goal:<16} {stopped} of {n} injected calls stopped");
    }
    if !driver.panel_ms.is_empty() {
        println!(
            "judge with the model panel: {} calls, p50 {:.2} ms, p99 {:.2} ms",
            driver.panel_ms.len(),
            ms(percentile(&driver.panel_ms, 50.0)),
            ms(percentile(&driver.panel_ms, 99.0)),
        );
    }
    println!(
        "rule judge: {} calls, p50 {:.3} ms, p99 {:.3} ms; whole decision (propose round trip): p50 {:.2} ms, p99 {:.2} ms; {:.1}s in all",
        driver.judge_ms.len(),
        ms(percentile(&driver.judge_ms, 50.0)),
        ms(percentile(&driver.judge_ms, 99.0)),
        ms(percentile(&driver.decide_ms, 50.0)),
        ms(percentile(&driver.decide_ms, 99.0)),
        elapsed.as_secs_f64()
    );
    for n in &notable {
        println!("{:?} {} {}: {}", n.fate, n.scenario, n.tool, n.reasons.join(" | "));
    }
    Ok(())
}
