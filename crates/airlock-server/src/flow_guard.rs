//! The flow guard in the action path: what a run has seen, the flow rules and the critical
//! judge for a proposed call, and the injection scan of what tools return.
//!
//! Tool outputs are scanned when they are recorded: each string of the output is scanned, and
//! the flagged ones are kept with the outcome (`injection`), so the decision on a later call
//! knows which text was an instruction, and the agent gets the findings with the data.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use airlock_inspect::injection::Scanner;
use airlock_policy::flow::{
    self, AllowlistEntry, Call, FlowFacts, FlowSettings, FlowVerdict, Source, SourceKind,
};
use airlock_policy::judge::{self, Case, JudgeVerdict, Judgement, PanelRule};
use airlock_policy::{RiskTier, SensitiveArgument};
use airlock_store::{Run, TenantScope, Tool};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::problem::ApiError;
use crate::state::AppState;

/// Most bytes of tool output a decision reads, across the run: a run that has read more is
/// judged on its first bytes (values first seen later count as unknown, which holds them).
const MAX_SOURCE_BYTES: usize = 4 * 1024 * 1024;
/// Strings shorter than this are not scanned for injection: no instruction fits.
const MIN_SCANNED: usize = 16;

/// The tenant's flow settings document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSettings {
    /// What each class of value gets.
    pub flow: FlowSettings,
    /// The model judges, if any.
    pub judge: JudgeSettings,
    /// How the MCP endpoint answers a call that needs approval.
    pub mcp: McpSettings,
}

/// What an MCP `tools/call` does when its action needs approval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpApprovals {
    /// Answer at once: a result saying the action is pending, with the approval's id.
    #[default]
    Return,
    /// Hold the call (with progress notifications) until the action is decided, up to
    /// `wait_secs`; then answer as `return` does.
    Wait,
}

/// The MCP endpoint's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpSettings {
    /// `return` (default) or `wait`.
    pub approvals: McpApprovals,
    /// With `wait`: the longest a call is held, in seconds.
    pub wait_secs: u64,
}

impl Default for McpSettings {
    fn default() -> Self {
        Self { approvals: McpApprovals::Return, wait_secs: 60 }
    }
}

/// The model panel of the critical judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeSettings {
    /// Model aliases (routes of the model gateway) that judge high-stakes calls; empty for the
    /// rule-based judge alone.
    pub models: Vec<String>,
    /// Answers needed.
    pub quorum: usize,
    /// Share of answers that must agree.
    pub agreement: f64,
    /// How long each model may take, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for JudgeSettings {
    fn default() -> Self {
        Self { models: Vec::new(), quorum: 1, agreement: 1.0, timeout_ms: 10_000 }
    }
}

impl GuardSettings {
    /// Reads and checks a settings document; every problem is named.
    pub fn parse(text: &str) -> Result<Self, String> {
        let settings: Self = serde_json::from_str(text).map_err(|e| format!("flow settings: {e}"))?;
        let judge = &settings.judge;
        let mut problems = Vec::new();
        if judge.models.len() > 5 {
            problems.push("judge.models: at most 5 models".to_owned());
        }
        if judge.models.iter().any(|m| m.is_empty() || m.len() > 64) {
            problems.push("judge.models: each alias is 1 to 64 characters".to_owned());
        }
        if !judge.models.is_empty() && (judge.quorum == 0 || judge.quorum > judge.models.len()) {
            problems.push("judge.quorum: between 1 and the number of models".to_owned());
        }
        if !(0.5..=1.0).contains(&judge.agreement) {
            problems.push("judge.agreement: between 0.5 and 1".to_owned());
        }
        if !(100..=60_000).contains(&judge.timeout_ms) {
            problems.push("judge.timeout_ms: between 100 and 60000".to_owned());
        }
        if !(1..=600).contains(&settings.mcp.wait_secs) {
            problems.push("mcp.wait_secs: between 1 and 600".to_owned());
        }
        if problems.is_empty() { Ok(settings) } else { Err(problems.join("; ")) }
    }
}

/// The injection scan of a tool's output: every string with an instruction in it, with the
/// spans the scanner found, and the highest score.
pub fn scan_output(scanner: &Scanner, output: &Value) -> Value {
    let mut flagged = Vec::new();
    let mut highest = 0.0f32;
    let mut budget = MAX_SOURCE_BYTES;
    walk(output, &mut String::new(), &mut |pointer, text| {
        if text.len() < MIN_SCANNED || budget == 0 {
            return;
        }
        let scanned = text.get(..budget.min(text.len())).unwrap_or(text);
        budget = budget.saturating_sub(scanned.len());
        let scan = scanner.scan(scanned);
        highest = highest.max(scan.score);
        if scan.flagged {
            let rules: Vec<&str> = scan.findings.iter().map(|f| f.rule).collect();
            let spans: Vec<[usize; 2]> = scan.findings.iter().map(|f| [f.start, f.end]).collect();
            flagged.push(json!({"pointer": pointer, "score": scan.score, "rules": rules, "spans": spans}));
        }
    });
    json!({"flagged": !flagged.is_empty(), "score": highest, "findings": flagged})
}

/// Calls `visit` with the JSON pointer and text of every string (and number) under `value`.
fn walk(value: &Value, pointer: &mut String, visit: &mut dyn FnMut(&str, &str)) {
    match value {
        Value::String(text) => visit(pointer, text),
        Value::Number(n) => visit(pointer, &n.to_string()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                walk(item, pointer, visit);
                pointer.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                walk(item, pointer, visit);
                pointer.truncate(len);
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// The texts a run has seen, for the flow rules, and the classifications of what it read.
pub fn sources(
    run: &Run,
    outputs: &[airlock_store::RunOutput],
    tools: &HashMap<String, Tool>,
) -> (Vec<Source>, Vec<String>) {
    let mut sources = vec![Source {
        kind: SourceKind::Intent,
        action: None,
        pointer: String::new(),
        text: run.intent.clone(),
        flagged: false,
    }];
    walk(&run.inputs, &mut String::new(), &mut |pointer, text| {
        sources.push(Source {
            kind: SourceKind::Inputs,
            action: None,
            pointer: pointer.to_owned(),
            text: text.to_owned(),
            flagged: false,
        });
    });
    for destination in &run.destinations {
        sources.push(Source {
            kind: SourceKind::Destinations,
            action: None,
            pointer: String::new(),
            text: destination.clone(),
            flagged: false,
        });
    }
    let mut read = Vec::new();
    let mut budget = MAX_SOURCE_BYTES;
    for output in outputs {
        let tool = tools.get(&output.tool);
        if let Some(tool) = tool {
            read.push(tool.classification.clone());
        }
        let trusted = tool.is_some_and(|t| t.trusted_source);
        let flagged: HashMap<&str, Vec<[usize; 2]>> = output
            .outcome
            .pointer("/injection/findings")
            .and_then(Value::as_array)
            .map(|findings| {
                findings
                    .iter()
                    .filter_map(|f| {
                        let spans = f["spans"].as_array()?.iter().filter_map(|s| {
                            Some([
                                usize::try_from(s.get(0)?.as_u64()?).ok()?,
                                usize::try_from(s.get(1)?.as_u64()?).ok()?,
                            ])
                        });
                        Some((f["pointer"].as_str()?, spans.collect()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let action = Some((output.position, output.tool.clone()));
        let kind = if trusted { SourceKind::TrustedOutput } else { SourceKind::UntrustedOutput };
        let returned = output.outcome.get("output").unwrap_or(&Value::Null);
        walk(returned, &mut String::new(), &mut |pointer, text| {
            if budget == 0 {
                return;
            }
            let text = text.get(..budget.min(text.len())).unwrap_or(text);
            budget = budget.saturating_sub(text.len());
            let source = |text: &str, flagged: bool| Source {
                kind,
                action: action.clone(),
                pointer: pointer.to_owned(),
                text: text.to_owned(),
                flagged,
            };
            match flagged.get(pointer) {
                // A flagged string counts paragraph by paragraph: only the paragraphs that hold
                // an instruction are flagged, so a real address above an injected P.S. stays
                // merely untrusted.
                Some(spans) => {
                    let mut start = 0;
                    for paragraph in text.split_inclusive('\n') {
                        let end = start + paragraph.len();
                        let holds = spans.iter().any(|[s, e]| *s < end && *e > start);
                        sources.push(source(paragraph, holds));
                        start = end;
                    }
                }
                None => sources.push(source(text, false)),
            }
        });
    }
    (sources, read)
}

/// The flow facts and the flow rules' verdict for a call.
pub struct Assessment {
    /// What the flow rules found.
    pub facts: FlowFacts,
    /// What they make of it.
    pub verdict: FlowVerdict,
    /// The tenant's settings.
    pub settings: GuardSettings,
}

/// The tenant's flow settings document, or the defaults.
pub async fn settings(state: &AppState, scope: &TenantScope) -> Result<GuardSettings, ApiError> {
    Ok(match state.store().flow_settings(scope).await? {
        Some(version) => GuardSettings::parse(&version.text).map_err(|e| {
            ApiError::internal(&std::io::Error::other(format!("the stored flow settings: {e}")))
        })?,
        None => GuardSettings::default(),
    })
}

/// Assesses a proposed call against everything the run has seen.
pub async fn assess(
    state: &AppState,
    scope: &TenantScope,
    run: &Run,
    sensitive: &[SensitiveArgument],
    arguments: &Value,
) -> Result<Assessment, ApiError> {
    let store = state.store();
    let settings = settings(state, scope).await?;
    if sensitive.is_empty() {
        // Nothing to trace: the call has no value the flow rules judge.
        let facts = FlowFacts::default();
        let verdict = flow::verdict(&facts, &settings.flow);
        return Ok(Assessment { facts, verdict, settings });
    }
    let outputs = store.run_outputs(scope, &run.id).await?;
    let tools: HashMap<String, Tool> =
        store.list_tools(scope).await?.into_iter().map(|t| (t.name.to_string(), t)).collect();
    let (sources, read) = sources(run, &outputs, &tools);
    let allowlists: Vec<AllowlistEntry> = store
        .live_allowlist(scope)
        .await?
        .into_iter()
        .map(|live| AllowlistEntry {
            list: live.entry.list,
            value: live.entry.value,
            owner: live.entry.owner,
            valid: live.valid,
        })
        .collect();
    let facts = flow::analyse(Call { sensitive, arguments }, &sources, &allowlists, &read);
    let verdict = flow::verdict(&facts, &settings.flow);
    Ok(Assessment { facts, verdict, settings })
}

/// The judges' verdict on a high-stakes call, with what each said and how long they took.
pub struct Judged {
    /// The combined verdict.
    pub judgement: Judgement,
    /// Per judge: `rules` or the model alias, its verdict, and its time in milliseconds.
    pub judges: Vec<Value>,
    /// How long judging took in all.
    pub elapsed: Duration,
}

/// Runs the rule-based judge and, if the tenant configured one and `ask_models` is set, the
/// model panel.
pub async fn judge(
    state: &AppState,
    scope: &TenantScope,
    case: &Case<'_>,
    settings: &JudgeSettings,
    ask_models: bool,
) -> Judged {
    let started = Instant::now();
    let rules = judge::rule_judge(case);
    let mut judges = vec![
        json!({"judge": "rules", "verdict": rules.verdict, "ms": started.elapsed().as_secs_f64() * 1e3}),
    ];
    let mut judgement = rules;
    if ask_models && !settings.models.is_empty() {
        let panel_started = Instant::now();
        let answers = crate::judge_models::ask_panel(state, scope, case, settings).await;
        for (model, answer) in &answers {
            judges.push(match answer {
                Ok(j) => json!({"judge": model, "verdict": j.verdict}),
                Err(e) => json!({"judge": model, "error": e}),
            });
        }
        let panel =
            judge::aggregate(&answers, &PanelRule { quorum: settings.quorum, agreement: settings.agreement });
        judges.push(json!({"judge": "panel", "verdict": panel.verdict, "ms": panel_started.elapsed().as_secs_f64() * 1e3}));
        judgement = judgement.combine(panel);
    }
    Judged { judgement, judges, elapsed: started.elapsed() }
}

/// Whether a judge verdict lets the call go ahead as decided.
pub fn lets_through(verdict: JudgeVerdict) -> bool {
    verdict == JudgeVerdict::Approve
}

/// The tier a tool's text names, failing closed to the strictest.
pub fn tier_of(tool: &Tool) -> RiskTier {
    RiskTier::parse(&tool.tier).unwrap_or(RiskTier::Destructive)
}
