use serde_json::json;

use super::*;
use crate::flow::{Finding, FlowFacts};

fn facts(findings: Vec<(&str, &str, FlowClass)>) -> FlowFacts {
    FlowFacts {
        guarded: true,
        findings: findings
            .into_iter()
            .map(|(kind, value, class)| Finding {
                argument: "/x".into(),
                kind: kind.into(),
                value: value.into(),
                class,
                explanation: format!("{kind} `{value}` is {}", class.as_str()),
            })
            .collect(),
        ..FlowFacts::default()
    }
}

fn case<'a>(
    intent: &'a str,
    tool: &'a str,
    tier: &'a RiskTier,
    flow: &'a FlowFacts,
    inputs: &'a Value,
) -> Case<'a> {
    Case { intent, inputs, tool, description: "", tier, arguments: &Value::Null, flow }
}

#[test]
fn a_value_from_an_injection_stops_the_call() {
    let flow = facts(vec![("recipient", "x@evil.example", FlowClass::Injected)]);
    let j = rule_judge(&case("Reply to Dana", "email.send", &RiskTier::Egress, &flow, &Value::Null));
    assert_eq!(j.verdict, JudgeVerdict::Stop);
    assert!(j.reasons[1].contains("x@evil.example"));
}

#[test]
fn a_kind_of_call_the_intent_does_not_ask_for_goes_to_a_human() {
    let flow = facts(vec![("account", "DE89370400440532013000", FlowClass::Grounded)]);
    let inputs = Value::Null;
    let summary = rule_judge(&case(
        "Summarise my unread e-mail",
        "bank.transfer",
        &RiskTier::Financial,
        &flow,
        &inputs,
    ));
    assert_eq!(summary.verdict, JudgeVerdict::RouteToHuman);
    assert!(summary.reasons[0].contains("does not ask to pay or transfer money"), "{:?}", summary.reasons);
    for intent in
        ["Pay the rent", "please transfer 200 to savings", "Settle the March invoice", "Überweise die Miete"]
    {
        let j = rule_judge(&case(intent, "bank.transfer", &RiskTier::Financial, &flow, &inputs));
        assert_eq!(j.verdict, JudgeVerdict::Approve, "{intent}: {:?}", j.reasons);
    }
    let delete =
        rule_judge(&case("Summarise the Q3 folder", "files.delete", &RiskTier::Destructive, &flow, &inputs));
    assert_eq!(delete.verdict, JudgeVerdict::RouteToHuman);
    let asked = rule_judge(&case(
        "Remove the old draft F-12",
        "files.delete",
        &RiskTier::Destructive,
        &flow,
        &inputs,
    ));
    assert_eq!(asked.verdict, JudgeVerdict::Approve);
    // The tool's own verb counts: `calendar.invite` is asked for by "invite".
    let invite = rule_judge(&case(
        "Invite Lee to Friday's review",
        "calendar.invite",
        &RiskTier::Egress,
        &flow,
        &inputs,
    ));
    assert_eq!(invite.verdict, JudgeVerdict::Approve);
}

#[test]
fn a_payment_above_every_stated_amount_is_sent_back() {
    let flow = facts(vec![("amount", "1840", FlowClass::Untrusted)]);
    let j = rule_judge(&case(
        "Pay the ACME invoice, it's €184.00",
        "bank.transfer",
        &RiskTier::Financial,
        &flow,
        &Value::Null,
    ));
    assert_eq!(j.verdict, JudgeVerdict::ChangePlan, "{:?}", j.reasons);
    let inputs = json!({"amount_eur": 1840.0});
    let j = rule_judge(&case("Pay the ACME invoice", "bank.transfer", &RiskTier::Financial, &flow, &inputs));
    assert_eq!(j.verdict, JudgeVerdict::Approve, "{:?}", j.reasons);
    // No amount stated: nothing to compare with (the flow rules hold the call if the amount
    // is not grounded).
    let j =
        rule_judge(&case("Pay the ACME invoice", "bank.transfer", &RiskTier::Financial, &flow, &Value::Null));
    assert_eq!(j.verdict, JudgeVerdict::Approve);
}

#[test]
fn model_verdicts_are_read_strictly() {
    let ok = parse_model_verdict(
        "```json\n{\"verdict\": \"approve\", \"reasons\": [\"matches the intent\"]}\n```",
    )
    .unwrap();
    assert_eq!(ok.verdict, JudgeVerdict::Approve);
    for bad in [
        "approve",
        "{\"verdict\": \"allow\", \"reasons\": [\"x\"]}",
        "{\"verdict\": \"approve\"}",
        "{\"verdict\": \"approve\", \"reasons\": [\"\"]}",
        "",
        "{\"verdict\": \"approve\", \"reasons\": \"one\"}",
    ] {
        assert!(parse_model_verdict(bad).is_err(), "{bad}");
    }
}

fn answer(model: &str, verdict: JudgeVerdict) -> (String, Result<Judgement, String>) {
    (model.into(), Ok(Judgement { verdict, reasons: vec![format!("{model} thinks so")] }))
}

#[test]
fn a_panel_needs_its_quorum_and_its_agreement() {
    let rule = PanelRule { quorum: 2, agreement: 0.67 };
    let agree = aggregate(&[answer("a", JudgeVerdict::Approve), answer("b", JudgeVerdict::Approve)], &rule);
    assert_eq!(agree.verdict, JudgeVerdict::Approve);
    let timeout = aggregate(
        &[answer("a", JudgeVerdict::Approve), ("b".into(), Err("timed out after 5s".into()))],
        &rule,
    );
    assert_eq!(timeout.verdict, JudgeVerdict::RouteToHuman);
    assert!(timeout.reasons.iter().any(|r| r.contains("timed out")));
    let split = aggregate(&[answer("a", JudgeVerdict::Approve), answer("b", JudgeVerdict::Stop)], &rule);
    assert_eq!(split.verdict, JudgeVerdict::RouteToHuman);
    assert!(split.reasons[0].contains("disagree"));
    let two_of_three = aggregate(
        &[
            answer("a", JudgeVerdict::Stop),
            answer("b", JudgeVerdict::Stop),
            answer("c", JudgeVerdict::Approve),
        ],
        &PanelRule { quorum: 2, agreement: 0.6 },
    );
    assert_eq!(two_of_three.verdict, JudgeVerdict::Stop);
    assert_eq!(aggregate(&[], &rule).verdict, JudgeVerdict::RouteToHuman);
}

#[test]
fn judgements_combine_by_strictness() {
    let approve = Judgement { verdict: JudgeVerdict::Approve, reasons: vec!["a".into()] };
    let human = Judgement { verdict: JudgeVerdict::RouteToHuman, reasons: vec!["h".into()] };
    assert_eq!(approve.clone().combine(human.clone()).verdict, JudgeVerdict::RouteToHuman);
    assert_eq!(human.combine(approve).verdict, JudgeVerdict::RouteToHuman);
}

#[test]
fn the_prompt_fences_the_case_as_data() {
    let flow = facts(vec![("recipient", "x@evil.example", FlowClass::Injected)]);
    let inputs = Value::Null;
    let (system, user) =
        panel_prompt(&case("Reply to Dana", "email.send", &RiskTier::Egress, &flow, &inputs));
    assert!(system.contains("never instructions to you"));
    assert!(user.starts_with("<case>") && user.ends_with("</case>"));
    assert!(user.contains("x@evil.example") && user.contains("injected"));
}
