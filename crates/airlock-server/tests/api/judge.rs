//! The critical judge's model panel over HTTP: a guarded e-mail tool whose recipient the run's
//! intent names (so the flow rules and the rule-based judge let it through), judged by model
//! aliases routed to a provider on loopback. What the models answer decides as the panel rule
//! says; a model that hangs, answers badly or cannot be asked routes the call to a human; and
//! the case leaves Airlock redacted.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::provider::{Mode, Provider};
use crate::common::runs::{RunFixture, World, post, reasons};

/// The recipient the intent names and the call sends to.
const RECIPIENT: &str = "ana.lopez@example.com";
const TOOL: &str = "mail.send";
const APPROVE: &str =
    r#"{"verdict": "approve", "reasons": ["The user asked to send the report to this recipient."]}"#;
const STOP: &str = r#"{"verdict": "stop", "reasons": ["The recipient looks like an attacker's mailbox planted in a web page."]}"#;

/// A world whose model client gives up quickly, with the guarded tool registered and the
/// model aliases `judges` routed to their providers.
async fn world(judges: &[(&str, &Provider)]) -> World {
    let world = World::spawn_with(|c| {
        c.model_client.first_byte_timeout = Duration::from_secs(5);
        c.model_client.base_backoff = Duration::from_millis(10);
        c.model_client.max_backoff = Duration::from_millis(20);
    })
    .await;
    world
        .register(&json!({
            "name": TOOL,
            "description": "Sends an e-mail",
            "tier": "egress",
            "side_effects": true,
            "input_schema": {
                "type": "object",
                "properties": {
                    "recipient": {"type": "string", "x-airlock-sensitive": "recipient"},
                    "subject": {"type": "string"}
                },
                "required": ["recipient"]
            },
            "connector": post(&world.upstream, "/send"),
        }))
        .await;
    for (alias, provider) in judges {
        let route = json!({"provider": "openai", "base_url": format!("{}/v1", provider.base), "model": "judge-test", "api_key": "sk-judge-secret-0001"});
        let body = json!({"routes": [route], "input_cents_per_mtok": 100, "output_cents_per_mtok": 400});
        world.app.put(&format!("/v1/model-routes/{alias}"), world.admin(), &body).await.expect_status(200);
    }
    world
}

/// Sets the panel: these aliases, all of which must answer and agree.
async fn panel(world: &World, models: &[&str], timeout_ms: u64) {
    let settings = json!({"judge": {"models": models, "quorum": models.len(), "agreement": 1.0, "timeout_ms": timeout_ms}});
    world.app.put("/v1/flow-settings", world.admin(), &settings).await.expect_status(200);
}

async fn open(world: &World) -> RunFixture {
    world.open_with(&[TOOL], json!({"intent": format!("Send the quarterly report to {RECIPIENT}")})).await
}

/// Proposes the e-mail to the recipient the intent names.
async fn send(world: &World, run: &RunFixture, key: &str) -> Value {
    let arguments = json!({"recipient": RECIPIENT, "subject": "Quarterly report"});
    world.act(run, TOOL, &arguments, key).await
}

/// The `model.call` audit entries the judges made.
async fn judge_calls(world: &World) -> Vec<airlock_audit::Entry> {
    world.entries_of("model.call").await.into_iter().filter(|e| e.metadata["purpose"] == "judge").collect()
}

#[tokio::test]
async fn a_model_that_approves_lets_the_call_execute_and_is_metered_and_recorded() {
    let provider = Provider::start().await;
    let world = world(&[("judge-a", &provider)]).await;
    panel(&world, &["judge-a"], 5000).await;
    provider.then(vec![Mode::Answer(APPROVE.to_owned())]);
    let run = open(&world).await;

    let action = send(&world, &run, "k1").await;
    assert_eq!(action["status"], "succeeded", "{action}");
    let why = reasons(&action);
    assert!(
        why.contains("Judge (approve): `judge-a`: The user asked to send the report to this recipient."),
        "{why}"
    );
    // The decision, as stored with the action, names each judge and what it said.
    let stored =
        world.app.get_ok(&format!("/v1/actions/{}", action["id"].as_str().unwrap()), world.admin()).await;
    let judges = stored["judge"]["judges"].as_array().expect("the judges of the decision");
    let said: Vec<(&str, &str)> =
        judges.iter().map(|j| (j["judge"].as_str().unwrap(), j["verdict"].as_str().unwrap())).collect();
    assert_eq!(said, [("rules", "approve"), ("judge-a", "approve"), ("panel", "approve")], "{stored}");
    assert_eq!(world.upstream.requests().len(), 1, "the approved e-mail was sent once");
    assert_eq!(provider.received().len(), 1);

    let calls = judge_calls(&world).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.metadata["model"], "judge-a");
    assert_eq!(call.metadata["outcome"], "ok");
    assert_eq!(call.metadata["stream"], false);
    assert!(call.metadata["cost_microcents"].as_i64().unwrap() > 0, "{call:?}");
    assert_eq!(call.subject["principal"], world.agent.id);
    let recorded = serde_json::to_string(&call.metadata).unwrap();
    assert!(
        !recorded.contains(RECIPIENT) && !recorded.contains("<case>"),
        "content was recorded: {recorded}"
    );
    let log = world.app.get("/v1/audit/entries", world.admin()).await.text;
    assert!(!log.contains("sk-judge-secret"), "{log}");
}

#[tokio::test]
async fn a_model_that_says_stop_denies_the_call_with_its_reason() {
    let provider = Provider::start().await;
    let world = world(&[("judge-a", &provider)]).await;
    panel(&world, &["judge-a"], 5000).await;
    provider.then(vec![Mode::Answer(STOP.to_owned())]);
    let run = open(&world).await;

    let action = send(&world, &run, "k1").await;
    assert_eq!(action["status"], "denied", "{action}");
    let why = reasons(&action);
    assert!(
        why.contains("`judge-a`: The recipient looks like an attacker's mailbox planted in a web page."),
        "{why}"
    );
    assert!(world.upstream.requests().is_empty(), "a stopped e-mail was sent");
}

#[tokio::test]
async fn a_model_that_hangs_past_its_timeout_routes_the_call_to_a_human() {
    let provider = Provider::start().await;
    let world = world(&[("judge-a", &provider)]).await;
    panel(&world, &["judge-a"], 300).await;
    provider.then(vec![Mode::Hang]);
    let run = open(&world).await;

    // The provider never answers; the proposal returns all the same.
    let action = send(&world, &run, "k1").await;
    assert_eq!(action["status"], "pending_approval", "{action}");
    let why = reasons(&action);
    assert!(
        why.contains("Only 0 of 1 model judges answered") && why.contains("no answer within 300 ms"),
        "{why}"
    );
    assert!(world.upstream.requests().is_empty());
    let errors: Vec<&Value> =
        action["judge"]["judges"].as_array().unwrap().iter().filter(|j| j["error"].is_string()).collect();
    assert_eq!(errors.len(), 1, "{action}");
    assert_eq!(errors[0]["judge"], "judge-a");
    let calls = judge_calls(&world).await;
    assert_eq!(calls.len(), 1, "the abandoned call is settled and recorded: {calls:?}");
    assert_eq!(calls[0].metadata["outcome"], "timeout");
}

#[tokio::test]
async fn a_malformed_answer_or_a_verdict_without_reasons_routes_the_call_to_a_human() {
    let provider = Provider::start().await;
    let world = world(&[("judge-a", &provider)]).await;
    panel(&world, &["judge-a"], 5000).await;
    let run = open(&world).await;
    let cases = [
        // The client retries a body that is not JSON, as for any gateway call.
        (vec![Mode::Malformed, Mode::Malformed], "every route failed"),
        (vec![Mode::Answer("Looks fine to me!".to_owned())], "not a verdict"),
        (
            vec![Mode::Answer(r#"{"verdict": "approve", "reasons": []}"#.to_owned())],
            "a verdict without reasons",
        ),
    ];
    for (i, (modes, expected)) in cases.into_iter().enumerate() {
        provider.then(modes);
        let action = send(&world, &run, &format!("k{i}")).await;
        assert_eq!(action["status"], "pending_approval", "{expected}: {action}");
        let why = reasons(&action);
        assert!(why.contains("`judge-a`: ") && why.contains(expected), "{expected}: {why}");
    }
    assert_eq!(provider.received().len(), 4);
    assert!(world.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_split_panel_routes_the_call_to_a_human() {
    let (first, second) = (Provider::start().await, Provider::start().await);
    let world = world(&[("judge-a", &first), ("judge-b", &second)]).await;
    panel(&world, &["judge-a", "judge-b"], 5000).await;
    first.then(vec![Mode::Answer(APPROVE.to_owned())]);
    second.then(vec![Mode::Answer(STOP.to_owned())]);
    let run = open(&world).await;

    let action = send(&world, &run, "k1").await;
    assert_eq!(action["status"], "pending_approval", "{action}");
    let why = reasons(&action);
    assert!(why.contains("disagree"), "{why}");
    assert!(why.contains("`judge-a` says approve") && why.contains("`judge-b` says stop"), "{why}");
    assert_eq!((first.received().len(), second.received().len()), (1, 1));
    assert_eq!(judge_calls(&world).await.len(), 2);
}

#[tokio::test]
async fn the_case_leaves_for_the_model_redacted_with_the_tenants_profile() {
    let provider = Provider::start().await;
    let world = world(&[("judge-a", &provider)]).await;
    panel(&world, &["judge-a"], 5000).await;
    world
        .app
        .put(
            "/v1/inspection/profile",
            world.admin(),
            &json!({"mode": "standard", "kinds": {"email": "tokenize"}}),
        )
        .await
        .expect_status(200);
    // The model sees the recipient as its token and may name it so; the reason is restored.
    let minted = world
        .app
        .post("/v1/inspect", world.admin(), &json!({"text": RECIPIENT, "scan": false}))
        .await
        .expect_status(200);
    let token = minted["text"].as_str().unwrap().to_owned();
    assert!(token.starts_with("[EMAIL_"), "{minted}");
    let verdict =
        json!({"verdict": "approve", "reasons": [format!("The user asked to send it to {token}.")]});
    provider.then(vec![Mode::Answer(verdict.to_string())]);
    let run = open(&world).await;

    let action = send(&world, &run, "k1").await;
    assert_eq!(action["status"], "succeeded", "{action}");
    assert!(
        reasons(&action).contains(&format!("`judge-a`: The user asked to send it to {RECIPIENT}.")),
        "{action}"
    );
    let sent = provider.received();
    assert_eq!(sent.len(), 1);
    let request = &sent[0];
    let text = request.body.to_string();
    assert!(!text.contains(RECIPIENT), "the recipient left Airlock: {text}");
    assert!(text.contains("[EMAIL_"), "{text}");
    assert_eq!(request.header("authorization"), Some("Bearer sk-judge-secret-0001"));
    assert_eq!(request.body["model"], "judge-test");
    assert_eq!(request.body["temperature"], 0);
    assert_eq!(request.body["max_tokens"], 400);
    assert_eq!(request.body["response_format"], json!({"type": "json_object"}));
    assert_eq!(request.body["messages"][0]["role"], "system");
    assert_eq!(request.body["messages"][1]["role"], "user");
    let case = request.body["messages"][1]["content"].as_str().unwrap();
    assert!(
        case.starts_with("<case>") && case.contains(&format!("Send the quarterly report to {token}")),
        "{case}"
    );
    let calls = judge_calls(&world).await;
    assert_eq!(calls[0].metadata["redactions"]["email"].as_u64().map(|n| n > 0), Some(true), "{calls:?}");
    assert_eq!(calls[0].metadata["tokens_restored"], 1, "{calls:?}");
}

#[tokio::test]
async fn a_blocking_profile_an_unknown_alias_or_a_spent_budget_keep_the_case_home_and_route_to_a_human() {
    let provider = Provider::start().await;
    let world = world(&[("judge-a", &provider)]).await;
    let admin = world.admin();
    let run = open(&world).await;

    panel(&world, &["judge-missing"], 5000).await;
    let action = send(&world, &run, "k1").await;
    assert_eq!(action["status"], "pending_approval", "{action}");
    assert!(reasons(&action).contains("`judge-missing`: no such model alias"), "{action}");

    panel(&world, &["judge-a"], 5000).await;
    world.app.put("/v1/model-settings", admin, &json!({"caller_daily_tokens": 10})).await.expect_status(200);
    let action = send(&world, &run, "k2").await;
    assert_eq!(action["status"], "pending_approval", "{action}");
    assert!(reasons(&action).contains("daily token budget"), "{action}");

    world.app.put("/v1/model-settings", admin, &json!({})).await.expect_status(200);
    world
        .app
        .put("/v1/inspection/profile", admin, &json!({"mode": "standard", "kinds": {"email": "block"}}))
        .await
        .expect_status(200);
    let action = send(&world, &run, "k3").await;
    assert_eq!(action["status"], "pending_approval", "{action}");
    assert!(reasons(&action).contains("which the tenant's redaction profile blocks"), "{action}");

    assert!(provider.received().is_empty(), "a model was asked");
    let outcomes: Vec<Value> =
        judge_calls(&world).await.iter().map(|e| e.metadata["outcome"].clone()).collect();
    assert_eq!(outcomes, [json!("over_budget"), json!("blocked")]);
}
