use airlock_types::Role;
use proptest::prelude::*;
use serde_json::json;

use super::*;

/// 2025-01-15 (a Wednesday) at 14:30 UTC.
const WEDNESDAY_AFTERNOON_MS: i64 = 1_736_951_400_000;

fn user(roles: &[Role]) -> PrincipalFacts {
    PrincipalFacts {
        kind: PrincipalKind::User,
        id: "usr_alice".into(),
        roles: roles.iter().copied().collect(),
        attributes: BTreeMap::new(),
    }
}

fn agent() -> PrincipalFacts {
    PrincipalFacts {
        kind: PrincipalKind::Agent,
        id: "agt_invoicer".into(),
        roles: RoleSet::new(),
        attributes: [("name".to_owned(), "invoice-bot".to_owned())].into(),
    }
}

fn tool(name: &str, tier: RiskTier) -> ToolFacts {
    ToolFacts {
        name: name.into(),
        side_effects: tier != RiskTier::Read,
        tier,
        classification: "internal".into(),
        cost_cents: 0,
    }
}

fn call(principal: PrincipalFacts, tool: ToolFacts, arguments: Value) -> ActionContext {
    ActionContext {
        principal,
        tool,
        arguments,
        run: RunFacts {
            id: "run_1".into(),
            intent: "pay the March invoice from ACME".into(),
            on_behalf_of: None,
        },
        time_unix_ms: WEDNESDAY_AFTERNOON_MS,
        flow: crate::flow::FlowFacts::default(),
    }
}

fn pay(amount_cents: i64) -> ActionContext {
    call(
        agent(),
        tool("pay_invoice", RiskTier::Financial),
        json!({"to": "billing@acme.example", "amount_cents": amount_cents, "currency": "EUR", "urgent": true}),
    )
}

fn policies(text: &str) -> TenantPolicies {
    TenantPolicies::parse(text).unwrap()
}

#[test]
fn without_policies_high_risk_tiers_need_one_approval() {
    for tier in [RiskTier::Financial, RiskTier::Destructive, RiskTier::Bulk, RiskTier::Egress] {
        let decision = decide(&TenantPolicies::empty(), &call(agent(), tool("t", tier.clone()), json!({})));
        assert_eq!(decision.verdict, Verdict::RequireApproval { approvers: 1 }, "{tier}");
        assert!(decision.policies.is_empty());
        assert_eq!(
            decision.reasons,
            [format!("No tenant policy matched; `{tier}` tools need one approval by default.")]
        );
    }
}

#[test]
fn without_policies_other_tiers_are_permitted() {
    for tier in [RiskTier::Read, RiskTier::Write, RiskTier::parse("custom:ml").unwrap()] {
        let decision = decide(&TenantPolicies::empty(), &call(agent(), tool("t", tier.clone()), json!({})));
        assert_eq!(decision.verdict, Verdict::Permit, "{tier}");
        assert_eq!(
            decision.reasons,
            [format!("No tenant policy matched; `{tier}` tools are permitted by default.")]
        );
    }
}

#[test]
fn a_policy_that_does_not_match_leaves_the_default() {
    let set = policies(r#"forbid (principal, action, resource) when { resource.name == "drop_database" };"#);
    assert_eq!(decide(&set, &pay(100)).verdict, Verdict::RequireApproval { approvers: 1 });
}

#[test]
fn forbid_beats_permit() {
    let set = policies(
        r#"
        @id("agents-may-pay")
        permit (principal is Airlock::Agent, action, resource);

        @id("no-payments-to-acme")
        @reason("ACME's account is under review")
        forbid (principal, action, resource) when { context.args.hasTag("to") && context.args.getTag("to") like "*@acme.example" };
        "#,
    );
    let decision = decide(&set, &pay(100));
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(decision.policies, ["no-payments-to-acme"]);
    assert_eq!(
        decision.reasons,
        ["Policy `no-payments-to-acme` forbids this call: ACME's account is under review"]
    );

    let mut elsewhere = pay(100);
    elsewhere.arguments["to"] = json!("billing@other.example");
    let decision = decide(&set, &elsewhere);
    assert_eq!(decision.verdict, Verdict::Permit);
    assert_eq!(decision.policies, ["agents-may-pay"]);
    assert_eq!(decision.reasons, ["Policy `agents-may-pay` permits this call."]);
}

#[test]
fn every_matching_forbid_is_named() {
    let set = policies(
        r#"forbid (principal, action, resource) when { resource.tier == "financial" };
           @reason("weekend") forbid (principal, action, resource) when { context.weekday == 3 };"#,
    );
    let decision = decide(&set, &pay(1));
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(decision.policies, ["policy0", "policy1"]);
    assert_eq!(
        decision.reasons,
        ["Policy `policy0` forbids this call.", "Policy `policy1` forbids this call: weekend"]
    );
}

#[test]
fn an_approval_annotation_sets_the_number_of_approvers() {
    let set = policies(
        r#"@id("big-payments") @approval("2") @reason("two people sign large payments")
           permit (principal, action, resource)
           when { context.integers.hasTag("amount_cents") && context.integers.getTag("amount_cents") >= 100000 };

           @id("small-payments")
           permit (principal, action, resource)
           when { context.integers.hasTag("amount_cents") && context.integers.getTag("amount_cents") < 100000 };"#,
    );
    let decision = decide(&set, &pay(250_000));
    assert_eq!(decision.verdict, Verdict::RequireApproval { approvers: 2 });
    assert_eq!(decision.policies, ["big-payments"]);
    assert_eq!(
        decision.reasons,
        ["Policy `big-payments` permits this call with 2 approvals: two people sign large payments"]
    );

    // A tenant permit overrides the default approval of a financial tool.
    let decision = decide(&set, &pay(500));
    assert_eq!(decision.verdict, Verdict::Permit);
    assert_eq!(decision.policies, ["small-payments"]);
}

#[test]
fn the_largest_approval_among_matching_permits_applies() {
    let set = policies(
        r#"permit (principal, action, resource);
           @approval("1") permit (principal, action, resource) when { resource.tier == "financial" };
           @approval("3") permit (principal, action, resource) when { context.arguments.contains("urgent=true") };"#,
    );
    let decision = decide(&set, &pay(1));
    assert_eq!(decision.verdict, Verdict::RequireApproval { approvers: 3 });
    assert_eq!(decision.policies, ["policy0", "policy1", "policy2"]);
    assert_eq!(
        decision.reasons,
        [
            "Policy `policy0` permits this call.",
            "Policy `policy1` permits this call with one approval.",
            "Policy `policy2` permits this call with 3 approvals.",
        ]
    );
}

#[test]
fn a_permit_can_require_approval_for_a_low_risk_tier() {
    let set = policies(
        r#"@approval("1") permit (principal, action, resource) when { resource.classification == "restricted" };"#,
    );
    let mut read = call(agent(), tool("read_hr_file", RiskTier::Read), json!({}));
    read.tool.classification = "restricted".into();
    assert_eq!(decide(&set, &read).verdict, Verdict::RequireApproval { approvers: 1 });
}

#[test]
fn conditions_on_arguments() {
    let set = policies(
        r#"@id("eur") forbid (principal, action, resource) unless { context.arguments.contains("currency=EUR") };
           @id("no-cc") forbid (principal, action, resource) when { context.argument_names.contains("cc") };
           @id("ok") permit (principal, action, resource);"#,
    );
    assert_eq!(decide(&set, &pay(1)).verdict, Verdict::Permit);

    let mut dollars = pay(1);
    dollars.arguments["currency"] = json!("USD");
    assert_eq!(decide(&set, &dollars).policies, ["eur"]);

    let mut copied = pay(1);
    copied.arguments["cc"] = json!(["boss@acme.example"]);
    let decision = decide(&set, &copied);
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(decision.policies, ["no-cc"]);
}

#[test]
fn arguments_reach_cedar_in_every_shape() {
    let arguments = Arguments::of(&json!({
        "s": "x=y", "n": 12, "f": 1.5, "big": 18_446_744_073_709_551_615_u64, "b": false, "nil": null,
        "list": [1], "obj": {"k": "v"}
    }));
    assert_eq!(arguments.names, ["b", "big", "f", "list", "n", "nil", "obj", "s"]);
    assert_eq!(
        arguments.text,
        [
            ("b".to_owned(), "false".to_owned()),
            ("big".to_owned(), "18446744073709551615".to_owned()),
            ("f".to_owned(), "1.5".to_owned()),
            ("n".to_owned(), "12".to_owned()),
            ("s".to_owned(), "x=y".to_owned()),
        ]
    );
    assert_eq!(arguments.integers, [("n".to_owned(), 12)]);

    let set = policies(
        r#"permit (principal, action, resource) when {
             context.arguments.contains("s=x=y") && context.arguments.contains("f=1.5") &&
             context.args.hasTag("b") && context.args.getTag("b") == "false" &&
             context.integers.hasTag("n") && context.integers.getTag("n") == 12 &&
             !context.integers.hasTag("big") && !context.integers.hasTag("f") &&
             context.argument_names.containsAll(["list", "obj", "nil"])
           };"#,
    );
    let context = call(
        agent(),
        tool("t", RiskTier::Financial),
        json!({"s": "x=y", "n": 12, "f": 1.5, "big": 18_446_744_073_709_551_615_u64, "b": false, "nil": null, "list": [1], "obj": {}}),
    );
    assert_eq!(decide(&set, &context).verdict, Verdict::Permit);
}

#[test]
fn conditions_on_roles_and_user_attributes() {
    let set = policies(
        r#"@id("approvers-may-delete")
           permit (principal is Airlock::User, action, resource)
           when { principal.roles.contains("admin") && principal has team && principal.team == "platform" };"#,
    );
    let delete = |principal| call(principal, tool("delete_repo", RiskTier::Destructive), json!({}));
    let mut admin = user(&[Role::Admin]);
    admin.attributes.insert("team".into(), "platform".into());
    admin.attributes.insert("shoe_size".into(), "44".into());
    assert_eq!(decide(&set, &delete(admin)).verdict, Verdict::Permit);

    let mut member = user(&[Role::Member]);
    member.attributes.insert("team".into(), "platform".into());
    assert_eq!(decide(&set, &delete(member)).verdict, Verdict::RequireApproval { approvers: 1 });

    // Without the optional attribute the `has` guard keeps the policy from matching.
    assert_eq!(
        decide(&set, &delete(user(&[Role::Admin]))).verdict,
        Verdict::RequireApproval { approvers: 1 }
    );
}

#[test]
fn conditions_on_the_agent() {
    let set = policies(
        r#"forbid (principal is Airlock::Agent, action, resource) when { principal.name == "invoice-bot" };"#,
    );
    assert_eq!(decide(&set, &pay(1)).verdict, Verdict::Deny);
    let mut unnamed = pay(1);
    unnamed.principal.attributes.clear();
    assert_eq!(decide(&set, &unnamed).verdict, Verdict::RequireApproval { approvers: 1 });
}

#[test]
fn conditions_on_tier_cost_and_side_effects() {
    let set = policies(
        r#"permit (principal, action, resource) when { resource.tier == "egress" && resource.cost_cents <= 5 && resource.side_effects };
           forbid (principal, action, resource) when { resource.tier == "custom:ml" };"#,
    );
    let mut send = call(agent(), tool("send_mail", RiskTier::Egress), json!({}));
    send.tool.cost_cents = 5;
    assert_eq!(decide(&set, &send).verdict, Verdict::Permit);
    send.tool.cost_cents = 6;
    assert_eq!(decide(&set, &send).verdict, Verdict::RequireApproval { approvers: 1 });

    let train = call(agent(), tool("train", RiskTier::parse("custom:ml").unwrap()), json!({}));
    assert_eq!(decide(&set, &train).verdict, Verdict::Deny);
}

#[test]
fn conditions_on_time() {
    let set = policies(
        r#"@id("office-hours") forbid (principal, action, resource) unless { context.hour >= 9 && context.hour < 17 && context.weekday <= 5 };"#,
    );
    assert_eq!(decide(&set, &pay(1)).verdict, Verdict::RequireApproval { approvers: 1 });
    let mut night = pay(1);
    night.time_unix_ms = WEDNESDAY_AFTERNOON_MS + 10 * 3_600_000;
    assert_eq!(decide(&set, &night).policies, ["office-hours"]);
    let mut saturday = pay(1);
    saturday.time_unix_ms = WEDNESDAY_AFTERNOON_MS + 3 * 86_400_000;
    assert_eq!(decide(&set, &saturday).verdict, Verdict::Deny);
}

#[test]
fn hours_and_weekdays_are_utc_and_iso() {
    assert_eq!(hour_and_weekday(0), (0, 4), "1970-01-01 00:00 was a Thursday");
    assert_eq!(hour_and_weekday(WEDNESDAY_AFTERNOON_MS), (14, 3));
    assert_eq!(hour_and_weekday(WEDNESDAY_AFTERNOON_MS + 4 * 86_400_000), (14, 7), "Sunday");
    assert_eq!(hour_and_weekday(WEDNESDAY_AFTERNOON_MS + 5 * 86_400_000), (14, 1), "Monday");
    assert_eq!(hour_and_weekday(-1), (23, 3), "1969-12-31 23:59 was a Wednesday");
    let (hour, weekday) = hour_and_weekday(i64::MIN);
    assert!((0..24).contains(&hour) && (1..=7).contains(&weekday));
}

#[test]
fn conditions_on_intent_and_run() {
    let set = policies(
        r#"permit (principal, action, resource) when { context.intent like "*invoice*" && context.on_behalf_of == "" && context.run_id == "run_1" && !context.untrusted_sensitive };"#,
    );
    assert_eq!(decide(&set, &pay(1)).verdict, Verdict::Permit);
    let mut other = pay(1);
    other.run.intent = "book a flight".into();
    assert_eq!(decide(&set, &other).verdict, Verdict::RequireApproval { approvers: 1 });
    let mut delegated = pay(1);
    delegated.run.on_behalf_of = Some("usr_bob".into());
    assert_eq!(decide(&set, &delegated).verdict, Verdict::RequireApproval { approvers: 1 });
}

#[test]
fn a_policy_that_fails_to_evaluate_denies_even_a_read_only_tool() {
    // Strict validation refuses this text (see the cedar tests); built without validation it
    // stands for any policy that fails at evaluation time.
    let set = TenantPolicies::unvalidated(
        r#"permit (principal, action, resource);
           forbid (principal, action, resource) when { principal.team == "contractors" };"#,
    );
    for tool in [tool("read_wiki", RiskTier::Read), tool("write_wiki", RiskTier::Write)] {
        let decision = decide(&set, &call(user(&[Role::Member]), tool, json!({})));
        assert_eq!(decision.verdict, Verdict::Deny);
        assert_eq!(decision.policies, ["policy1"]);
        assert_eq!(decision.reasons.len(), 1);
        assert!(
            decision.reasons[0].contains("policy1") && decision.reasons[0].contains("team"),
            "{decision:?}"
        );
    }
}

#[test]
fn a_validated_policy_that_overflows_denies() {
    let set = policies(
        r#"@id("overflow") permit (principal, action, resource) when { resource.cost_cents + 9223372036854775807 > 0 };"#,
    );
    let mut context = call(agent(), tool("t", RiskTier::Read), json!({}));
    assert_eq!(decide(&set, &context).verdict, Verdict::Permit, "0 + max does not overflow");
    context.tool.cost_cents = 1;
    let decision = decide(&set, &context);
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(decision.policies, ["overflow"]);
    assert!(decision.reasons[0].starts_with("Denied because a policy failed to evaluate ("), "{decision:?}");
}

#[test]
fn arguments_that_are_not_an_object_expose_nothing() {
    let set = policies(r#"permit (principal, action, resource) when { context.argument_names.isEmpty() };"#);
    let context = call(agent(), tool("t", RiskTier::Financial), json!(["not", "an", "object"]));
    assert_eq!(decide(&set, &context).verdict, Verdict::Permit);
}

#[test]
fn decisions_serialize_with_a_tagged_verdict() {
    let decision = decide(&TenantPolicies::empty(), &pay(1));
    let value = serde_json::to_value(&decision).unwrap();
    assert_eq!(value["verdict"], json!("require_approval"));
    assert_eq!(value["approvers"], json!(1));
    assert_eq!(value["policies"], json!([]));
    assert_eq!(serde_json::from_value::<Decision>(value).unwrap(), decision);
    assert_eq!(serde_json::to_value(Verdict::Deny).unwrap(), json!({"verdict": "deny"}));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the facts, the empty policy set decides by tier alone and never errors.
    #[test]
    fn any_facts_decide_by_tier_without_policies(
        id in ".{0,40}",
        tool_name in ".{0,40}",
        intent in ".{0,80}",
        key in "[a-z_=]{1,10}",
        text in ".{0,40}",
        number in any::<i64>(),
        time in any::<i64>(),
        tier in prop::sample::select(RiskTier::BUILT_IN.to_vec()),
        is_agent in any::<bool>(),
    ) {
        let principal = if is_agent {
            PrincipalFacts { id, ..agent() }
        } else {
            PrincipalFacts { id, ..user(&[Role::Member]) }
        };
        let mut context = call(principal, tool(&tool_name, tier.clone()), json!({ key.clone(): text, format!("{key}_n"): number }));
        context.run.intent = intent;
        context.time_unix_ms = time;
        let decision = decide(&TenantPolicies::empty(), &context);
        let expected = if tier.needs_approval_by_default() { Verdict::RequireApproval { approvers: 1 } } else { Verdict::Permit };
        prop_assert_eq!(decision.verdict, expected);
    }
}

#[test]
fn a_guarded_tool_is_left_to_the_flow_rules_and_policies_see_the_flow_facts() {
    use crate::flow::{Finding, FlowClass, FlowFacts};
    let mut context = pay(5000);
    let finding = |class| Finding {
        argument: "/iban".into(),
        kind: "account".into(),
        value: "DE89370400440532013000".into(),
        class,
        explanation: String::new(),
    };
    context.flow =
        FlowFacts { guarded: true, findings: vec![finding(FlowClass::Grounded)], ..FlowFacts::default() };
    let empty = TenantPolicies::empty();
    let decided = decide(&empty, &context);
    assert_eq!(decided.verdict, Verdict::Permit, "{decided:?}");
    assert!(decided.reasons[0].contains("flow rules"));
    // Unguarded, the tier default still asks for approval.
    context.flow.guarded = false;
    assert_eq!(decide(&empty, &context).verdict, Verdict::RequireApproval { approvers: 1 });

    let set = policies(
        r#"@reason("untrusted payees need two approvers") @approval("2")
        permit (principal, action, resource) when { context.flow_classes.contains("untrusted") };
        permit (principal, action, resource) when { context.flow_grounded && context.read_classification == "" };"#,
    );
    context.flow.guarded = true;
    assert_eq!(decide(&set, &context).verdict, Verdict::Permit);
    context.flow.findings = vec![finding(FlowClass::Untrusted)];
    assert_eq!(decide(&set, &context).verdict, Verdict::RequireApproval { approvers: 2 });
}
