use super::*;

fn invalid_messages(text: &str) -> Vec<String> {
    match TenantPolicies::parse(text) {
        Err(PolicyError::Invalid(messages)) => messages,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn the_built_in_schema_loads() {
    assert!(schema().is_ok(), "{:?}", schema().err());
    assert!(cedar_schema_text().contains("namespace Airlock"));
}

#[test]
fn empty_text_is_an_empty_policy_set() {
    let policies = TenantPolicies::parse("").unwrap();
    assert!(policies.is_empty());
    assert_eq!(policies.text(), "");
    assert!(TenantPolicies::empty().is_empty());
    assert!(TenantPolicies::parse("// only a comment\n").unwrap().is_empty());
}

#[test]
fn a_valid_policy_set_keeps_its_text_and_ids() {
    let text = r#"
        @id("finance-team-pays")
        @approval("2")
        permit (principal is Airlock::User, action == Airlock::Action::"call", resource)
        when { principal.roles.contains("member") && resource.tier == "financial" };

        forbid (principal is Airlock::Agent, action, resource)
        when { resource.classification == "restricted" };
    "#;
    let policies = TenantPolicies::parse(text).unwrap();
    assert_eq!(policies.text(), text);
    assert_eq!(policies.ids(), ["finance-team-pays", "policy1"]);
    assert_eq!(policies.approvals("finance-team-pays"), 2);
    assert_eq!(policies.approvals("policy1"), 0);
}

#[test]
fn syntax_errors_are_reported_with_positions() {
    let error =
        TenantPolicies::parse("permit (principal, action, resource)\nwhen { principal.roles.contains( };")
            .unwrap_err();
    let PolicyError::Parse(messages) = &error else { panic!("expected a parse error, got {error:?}") };
    assert!(!messages.is_empty());
    assert!(messages.iter().all(|m| m.starts_with("line ")), "{messages:?}");
    assert!(error.to_string().starts_with("the policies do not parse: line 2"), "{error}");

    assert!(matches!(TenantPolicies::parse("permit"), Err(PolicyError::Parse(_))));
    assert!(matches!(
        TenantPolicies::parse("allow (principal, action, resource);"),
        Err(PolicyError::Parse(_))
    ));
}

#[test]
fn an_unknown_attribute_is_rejected_by_the_validator() {
    let messages =
        invalid_messages(r#"permit (principal, action, resource) when { resource.owner == "x" };"#);
    let joined = messages.join("\n");
    assert!(joined.contains("owner"), "{joined}");
    assert!(joined.starts_with("line 1, column "), "{joined}");
}

#[test]
fn a_wrongly_typed_comparison_is_rejected_by_the_validator() {
    let messages =
        invalid_messages(r#"permit (principal, action, resource) when { resource.cost_cents == "cheap" };"#);
    assert!(!messages.is_empty());
    let messages =
        invalid_messages(r#"permit (principal, action, resource) when { context.hour like "1*" };"#);
    assert!(!messages.is_empty());
}

#[test]
fn an_unknown_entity_type_or_action_is_rejected() {
    assert!(!invalid_messages(r#"permit (principal is Airlock::Robot, action, resource);"#).is_empty());
    assert!(
        !invalid_messages(r#"permit (principal, action == Airlock::Action::"delete", resource);"#).is_empty()
    );
    // Without the namespace the types do not exist.
    assert!(!invalid_messages(r#"permit (principal is User, action, resource);"#).is_empty());
}

#[test]
fn reading_an_optional_attribute_without_has_is_rejected_in_strict_mode() {
    let messages = invalid_messages(
        r#"permit (principal is Airlock::User, action, resource) when { principal.team == "payments" };"#,
    );
    assert!(messages.join("\n").contains("team"), "{messages:?}");
    // Guarded by `has`, the same condition validates.
    TenantPolicies::parse(
        r#"permit (principal is Airlock::User, action, resource)
           when { principal has team && principal.team == "payments" };"#,
    )
    .unwrap();
}

#[test]
fn reading_a_tag_without_has_tag_is_rejected() {
    assert!(
        !invalid_messages(
            r#"forbid (principal, action, resource) when { context.args.getTag("to") like "*@evil.com" };"#
        )
        .is_empty()
    );
    TenantPolicies::parse(
        r#"forbid (principal, action, resource)
           when { context.args.hasTag("to") && context.args.getTag("to") like "*@evil.com" };"#,
    )
    .unwrap();
}

#[test]
fn templates_are_refused() {
    let error = TenantPolicies::parse("permit (principal == ?principal, action, resource);").unwrap_err();
    assert!(matches!(error, PolicyError::Template(_)), "{error:?}");
}

#[test]
fn approval_annotations_are_checked() {
    for bad in ["0", "-1", "two", "", "11", "1.5", " 2"] {
        let text = format!(r#"@approval("{bad}") permit (principal, action, resource);"#);
        let error = TenantPolicies::parse(&text).unwrap_err();
        assert!(matches!(error, PolicyError::Annotation { .. }), "{bad}: {error:?}");
    }
    let error = TenantPolicies::parse(r#"@approval("1") forbid (principal, action, resource);"#).unwrap_err();
    assert_eq!(error.to_string(), "policy `policy0`: `@approval` only makes sense on a `permit`");
    for good in ["1", "10"] {
        TenantPolicies::parse(&format!(r#"@approval("{good}") permit (principal, action, resource);"#))
            .unwrap();
    }
}

#[test]
fn policy_ids_are_checked_and_unique() {
    let error = TenantPolicies::parse(
        r#"@id("same") permit (principal, action, resource);
           @id("same") forbid (principal, action, resource);"#,
    )
    .unwrap_err();
    assert_eq!(error, PolicyError::DuplicateId("same".into()));
    // An explicit id may not take the default id of another policy either.
    let error = TenantPolicies::parse(
        r#"permit (principal, action, resource);
           @id("policy0") forbid (principal, action, resource);"#,
    )
    .unwrap_err();
    assert_eq!(error, PolicyError::DuplicateId("policy0".into()));
    for bad in ["", "has space", "semi;colon", &"x".repeat(65)] {
        let text = format!(r#"@id("{bad}") permit (principal, action, resource);"#);
        assert!(matches!(TenantPolicies::parse(&text), Err(PolicyError::Annotation { .. })), "{bad}");
    }
}

#[test]
fn oversized_and_deeply_nested_text_is_refused_before_cedar_sees_it() {
    let huge = format!("// {}\n", "x".repeat(MAX_POLICY_BYTES));
    assert!(matches!(TenantPolicies::parse(&huge), Err(PolicyError::TooLarge { .. })));

    let deep = format!(
        "permit (principal, action, resource) when {{ {}true{} }};",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    assert_eq!(TenantPolicies::parse(&deep).unwrap_err(), PolicyError::TooDeep);
    let deep_sets =
        format!("permit (principal, action, resource) when {{ {}1{} }};", "[".repeat(100), "]".repeat(100));
    assert_eq!(TenantPolicies::parse(&deep_sets).unwrap_err(), PolicyError::TooDeep);

    // Brackets inside strings and comments do not count.
    let text = format!(
        "// {}\npermit (principal, action, resource) when {{ context.intent == \"{}\\\"\" }};",
        "(".repeat(100),
        "[".repeat(100)
    );
    TenantPolicies::parse(&text).unwrap();
}

#[test]
fn long_flat_chains_and_repeated_negation_do_not_overflow_the_stack() {
    let chain = format!(
        "permit (principal, action, resource) when {{ {} }};",
        vec!["context.hour == 1"; 5_000].join(" || ")
    );
    let _ = TenantPolicies::parse(&chain);
    let negations = format!("permit (principal, action, resource) when {{ {}true }};", "!".repeat(5_000));
    let _ = TenantPolicies::parse(&negations);
    let members =
        format!("permit (principal, action, resource) when {{ context{} }};", ".intent".repeat(5_000));
    let _ = TenantPolicies::parse(&members);
    let arithmetic =
        format!("permit (principal, action, resource) when {{ {} > 0 }};", vec!["1"; 5_000].join(" + "));
    let _ = TenantPolicies::parse(&arithmetic);
}

#[test]
fn positions_count_lines_and_characters() {
    assert_eq!(position("ab\ncé\nx", 0), Some((1, 1)));
    assert_eq!(position("ab\ncé\nx", 3), Some((2, 1)));
    assert_eq!(position("ab\ncé\nx", 7), Some((3, 1)));
    assert_eq!(position("ab\ncé\nx", 5), None, "inside a multi-byte character");
    assert_eq!(position("ab", 99), None);
}
