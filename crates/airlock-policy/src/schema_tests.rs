use proptest::prelude::*;
use serde_json::json;

use super::*;

fn payment_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "to": {"type": "string", "x-airlock-sensitive": "recipient"},
            "amount_cents": {"type": "integer", "minimum": 1, "x-airlock-sensitive": "amount"},
            "memo": {"type": "string", "maxLength": 140},
            "bank": {
                "type": "object",
                "properties": {
                    "iban": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}[A-Z0-9]{1,30}$", "x-airlock-sensitive": "account"},
                    "name": {"type": "string"}
                },
                "required": ["iban"]
            }
        },
        "required": ["to", "amount_cents"]
    })
}

fn pointers(violations: &[Violation]) -> Vec<&str> {
    violations.iter().map(|v| v.pointer.as_str()).collect()
}

#[test]
fn valid_arguments_pass() {
    let schema = ArgumentSchema::compile(&payment_schema()).unwrap();
    schema
        .validate(
            &json!({"to": "a@example.com", "amount_cents": 1200, "bank": {"iban": "DE89370400440532013000"}}),
        )
        .unwrap();
    schema.validate(&json!({"to": "a@example.com", "amount_cents": 1})).unwrap();
}

#[test]
fn unknown_fields_are_rejected_at_every_level() {
    let schema = ArgumentSchema::compile(&payment_schema()).unwrap();
    let violations =
        schema.validate(&json!({"to": "a@b.c", "amount_cents": 5, "cc": "boss@b.c"})).unwrap_err();
    assert_eq!(pointers(&violations), [""]);
    assert!(violations[0].message.contains("cc"), "{violations:?}");

    let violations = schema
        .validate(&json!({"to": "a@b.c", "amount_cents": 5, "bank": {"iban": "DE89370400440532013000", "swift": "X"}}))
        .unwrap_err();
    assert_eq!(pointers(&violations), ["/bank"]);

    // The injected keyword is part of the stored schema.
    assert_eq!(schema.as_json()["additionalProperties"], json!(false));
    assert_eq!(schema.as_json()["properties"]["bank"]["additionalProperties"], json!(false));
}

#[test]
fn a_schema_that_says_otherwise_keeps_its_choice() {
    let schema = ArgumentSchema::compile(&json!({
        "type": "object",
        "properties": {
            "labels": {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "string"}},
            "meta": {"type": "object", "properties": {"a": {}}, "unevaluatedProperties": false}
        },
        "additionalProperties": true
    }))
    .unwrap();
    assert_eq!(schema.as_json()["additionalProperties"], json!(true));
    assert!(schema.as_json()["properties"]["meta"].get("additionalProperties").is_none());
    schema.validate(&json!({"extra": 1, "labels": {"x": "y"}})).unwrap();
    assert_eq!(pointers(&schema.validate(&json!({"labels": {"x": 1}})).unwrap_err()), ["/labels/x"]);
    assert_eq!(pointers(&schema.validate(&json!({"meta": {"x": 1}})).unwrap_err()), ["/meta"]);
}

#[test]
fn composed_objects_are_closed_where_they_meet() {
    let schema = ArgumentSchema::compile(&json!({
        "type": "object",
        "properties": {"id": {"type": "integer"}},
        "allOf": [
            {"properties": {"a": {"type": "string"}}},
            {"properties": {"b": {"type": "string"}}}
        ]
    }))
    .unwrap();
    assert_eq!(schema.as_json()["unevaluatedProperties"], json!(false));
    assert!(schema.as_json()["allOf"][0].get("additionalProperties").is_none());
    schema.validate(&json!({"id": 1, "a": "x", "b": "y"})).unwrap();
    assert_eq!(pointers(&schema.validate(&json!({"a": "x", "c": "z"})).unwrap_err()), [""]);
}

#[test]
fn a_reference_beside_properties_extends_the_definition() {
    let schema = ArgumentSchema::compile(&json!({
        "type": "object",
        "$defs": {"base": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "properties": {
            "plain": {"$ref": "#/$defs/base"},
            "extended": {"$ref": "#/$defs/base", "properties": {"extra": {"type": "integer"}}},
            "optional": {"anyOf": [{"$ref": "#/$defs/base"}, {"type": "null"}]},
            "free": {"type": "object"},
            "free_or_null": {"anyOf": [{"type": "object"}, {"type": "null"}]}
        }
    }))
    .unwrap();
    schema
        .validate(&json!({
            "plain": {"name": "a"},
            "extended": {"name": "a", "extra": 1},
            "optional": null,
            "free": {"anything": [1, 2]},
            "free_or_null": {"anything": true}
        }))
        .unwrap();
    schema.validate(&json!({"optional": {"name": "a"}})).unwrap();
    for (arguments, pointer) in [
        (json!({"plain": {"name": "a", "extra": 1}}), "/plain"),
        (json!({"extended": {"name": "a", "other": 1}}), "/extended"),
        (json!({"optional": {"name": "a", "other": 1}}), "/optional"),
    ] {
        let violations = schema.validate(&arguments).unwrap_err();
        assert!(pointers(&violations).contains(&pointer), "{arguments}: {violations:?}");
    }
}

#[test]
fn compiling_the_stored_schema_again_changes_nothing() {
    let schema = json!({
        "type": "object",
        "$defs": {"base": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "properties": {"a": {"$ref": "#/$defs/base"}, "b": {"type": "object", "properties": {"c": {}}}}
    });
    let first = ArgumentSchema::compile(&schema).unwrap();
    let second = ArgumentSchema::compile(first.as_json()).unwrap();
    assert_eq!(first.as_json(), second.as_json());
    assert_ne!(first.as_json(), &schema);
}

#[test]
fn a_negation_is_not_closed() {
    // Closing the `not` branch would turn "must not have a = 1" into "must have other fields".
    let schema = ArgumentSchema::compile(&json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "not": {"properties": {"a": {"const": 1}}, "required": ["a"]}
    }))
    .unwrap();
    schema.validate(&json!({"a": 2, "b": 3})).unwrap();
    assert!(schema.validate(&json!({"a": 1, "b": 3})).is_err());
    assert!(schema.validate(&json!({"a": 2, "c": 3})).is_err());
}

#[test]
fn missing_required_and_wrong_types_are_all_reported() {
    let schema = ArgumentSchema::compile(&payment_schema()).unwrap();
    let violations = schema.validate(&json!({"amount_cents": "12", "memo": 7})).unwrap_err();
    let mut found = pointers(&violations);
    found.sort_unstable();
    assert_eq!(found, ["", "/amount_cents", "/memo"], "{violations:?}");

    let violations = schema.validate(&json!({"to": "x", "amount_cents": 0})).unwrap_err();
    assert_eq!(pointers(&violations), ["/amount_cents"]);

    let violations =
        schema.validate(&json!({"to": "x", "amount_cents": 1, "bank": {"iban": "nope"}})).unwrap_err();
    assert_eq!(pointers(&violations), ["/bank/iban"]);

    assert!(schema.validate(&json!([1, 2])).is_err());
    assert!(schema.validate(&json!(null)).is_err());
}

#[test]
fn violation_messages_do_not_echo_argument_values() {
    let schema = ArgumentSchema::compile(&payment_schema()).unwrap();
    let violations = schema
        .validate(&json!({"to": 4_111_111_111_111_111_u64, "amount_cents": "secret-looking-value"}))
        .unwrap_err();
    for violation in &violations {
        assert!(!violation.message.contains("4111111111111111"), "{violation:?}");
        assert!(!violation.message.contains("secret-looking-value"), "{violation:?}");
    }
}

#[test]
fn violations_are_bounded() {
    let schema = ArgumentSchema::compile(&json!({
        "type": "object",
        "properties": {"xs": {"type": "array", "items": {"type": "integer"}}}
    }))
    .unwrap();
    let many: Vec<&str> = vec!["x"; 500];
    let violations = schema.validate(&json!({ "xs": many })).unwrap_err();
    assert_eq!(violations.len(), MAX_VIOLATIONS + 1);
    assert_eq!(violations[MAX_VIOLATIONS].message, "400 more violations not listed");
}

#[test]
fn formats_are_asserted() {
    let schema = ArgumentSchema::compile(&json!({
        "type": "object",
        "properties": {"to": {"type": "string", "format": "email"}, "when": {"type": "string", "format": "date"}}
    }))
    .unwrap();
    schema.validate(&json!({"to": "a@example.com", "when": "2025-01-31"})).unwrap();
    assert!(schema.validate(&json!({"to": "not an address"})).is_err());
    assert!(schema.validate(&json!({"when": "2025-02-31"})).is_err());
}

#[test]
fn remote_references_are_refused_at_compile() {
    for reference in [
        "https://example.com/schema.json",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "other.json#/x",
        "//example.com/x",
        "urn:uuid:00000000-0000-0000-0000-000000000000",
        "https://json-schema.org/draft/2020-12/schema",
    ] {
        let nested = json!({
            "type": "object",
            "properties": {"a": {"type": "object", "properties": {"b": {"$ref": reference}}}}
        });
        let error = ArgumentSchema::compile(&nested).unwrap_err();
        assert_eq!(
            error,
            SchemaError::NonLocalRef {
                pointer: "/properties/a/properties/b/$ref".into(),
                reference: reference.into()
            }
        );
        let in_defs = json!({"type": "object", "$defs": {"x": {"$dynamicRef": reference}}});
        assert!(
            matches!(ArgumentSchema::compile(&in_defs), Err(SchemaError::NonLocalRef { .. })),
            "{reference}"
        );
    }
    let message =
        ArgumentSchema::compile(&json!({"type": "object", "$ref": "https://evil.test/s"})).unwrap_err();
    assert!(message.to_string().contains("refers outside the schema"), "{message}");
}

#[test]
fn a_property_named_like_a_keyword_is_just_a_property() {
    let schema = ArgumentSchema::compile(&json!({
        "type": "object",
        "properties": {"$ref": {"type": "string"}, "$schema": {"type": "string"}, "$id": {"type": "string"}}
    }))
    .unwrap();
    schema.validate(&json!({"$ref": "https://example.com", "$schema": "x", "$id": "y"})).unwrap();
}

#[test]
fn local_references_work() {
    let schema = ArgumentSchema::compile(&json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "type": "object",
                "properties": {"email": {"type": "string", "x-airlock-sensitive": "recipient"}},
                "required": ["email"]
            },
            "tree": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/tree"}}}},
            "named": {"$anchor": "cc", "type": "string", "x-airlock-sensitive": "recipient"}
        },
        "properties": {
            "to": {"$ref": "#/$defs/address"},
            "cc": {"$ref": "#cc"},
            "tree": {"$ref": "#/$defs/tree"}
        }
    }))
    .unwrap();
    schema.validate(&json!({"to": {"email": "a@b.c"}, "tree": {"children": [{"children": []}]}})).unwrap();
    assert_eq!(pointers(&schema.validate(&json!({"to": {"email": "a@b.c", "x": 1}})).unwrap_err()), ["/to"]);
    assert_eq!(pointers(&schema.validate(&json!({"to": {}})).unwrap_err()), ["/to"]);
    assert!(schema.validate(&json!({"tree": {"children": [{"children": [{"leaf": 1}]}]}})).is_err());
    let sensitive: Vec<(&str, &str)> =
        schema.sensitive_arguments().iter().map(|s| (s.pointer.as_str(), s.kind.as_str())).collect();
    assert_eq!(sensitive, [("/cc", "recipient"), ("/to/email", "recipient")]);
}

#[test]
fn a_dangling_local_reference_is_invalid() {
    let error = ArgumentSchema::compile(&json!({
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/missing"}}
    }))
    .unwrap_err();
    assert!(matches!(error, SchemaError::Invalid { .. }), "{error:?}");
}

#[test]
fn other_dialects_and_embedded_ids_are_refused() {
    for dialect in ["http://json-schema.org/draft-07/schema#", "https://example.com/my-meta", "2020-12"] {
        let error = ArgumentSchema::compile(&json!({"$schema": dialect, "type": "object"})).unwrap_err();
        assert!(matches!(error, SchemaError::UnsupportedDialect { .. }), "{dialect}: {error:?}");
    }
    ArgumentSchema::compile(
        &json!({"$schema": "https://json-schema.org/draft/2020-12/schema#", "type": "object"}),
    )
    .unwrap();
    let nested_dialect = json!({
        "type": "object",
        "properties": {"a": {"$schema": "https://json-schema.org/draft/2020-12/schema"}}
    });
    assert!(matches!(ArgumentSchema::compile(&nested_dialect), Err(SchemaError::UnsupportedDialect { .. })));
    let embedded = json!({
        "type": "object",
        "properties": {"a": {"$id": "https://evil.test/a", "type": "object", "$ref": "#/x"}}
    });
    assert_eq!(
        ArgumentSchema::compile(&embedded).unwrap_err(),
        SchemaError::EmbeddedId { pointer: "/properties/a/$id".into() }
    );
    ArgumentSchema::compile(&json!({"$id": "https://tools.example/send", "type": "object"})).unwrap();
}

#[test]
fn a_pathological_pattern_runs_in_linear_time() {
    let schema = ArgumentSchema::compile(&json!({
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(b+)+$": {"type": "integer"}}
    }))
    .unwrap();
    let evil = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!";
    assert_eq!(pointers(&schema.validate(&json!({ "s": evil })).unwrap_err()), ["/s"]);
    schema.validate(&json!({"s": "aaaa"})).unwrap();
    // A key that almost matches the evil `patternProperties` regex is an unknown field.
    let evil_key = format!("{}!", "b".repeat(40));
    assert!(schema.validate(&json!({ evil_key: "x" })).is_err());
    assert_eq!(pointers(&schema.validate(&json!({"bbbb": "x"})).unwrap_err()), ["/bbbb"]);
}

#[test]
fn lookaround_and_backreferences_are_refused_at_compile() {
    for pattern in ["^(?!admin).*$", "(?<=@)example\\.com", "^(a)\\1$", "(?=.*\\d)\\w+"] {
        let schema = json!({"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}});
        let error = ArgumentSchema::compile(&schema).unwrap_err();
        let SchemaError::Invalid { pointer, message } = &error else { panic!("{pattern}: {error:?}") };
        assert_eq!(pointer, "/properties/s/pattern", "{pattern}");
        assert!(message.contains("linear-time"), "{pattern}: {message}");

        let schema = json!({"type": "object", "patternProperties": {pattern: {"type": "string"}}});
        assert!(matches!(ArgumentSchema::compile(&schema), Err(SchemaError::Invalid { .. })), "{pattern}");
    }
}

#[test]
fn the_top_level_must_be_an_object_schema() {
    for schema in [
        json!(true),
        json!({}),
        json!({"type": "string"}),
        json!({"type": ["object", "null"]}),
        json!([{"type": "object"}]),
        json!("object"),
    ] {
        assert_eq!(ArgumentSchema::compile(&schema).unwrap_err(), SchemaError::NotAnObject, "{schema}");
    }
}

#[test]
fn invalid_schemas_are_refused_with_a_pointer() {
    let error = ArgumentSchema::compile(&json!({
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": "zero"}}
    }))
    .unwrap_err();
    let SchemaError::Invalid { pointer, .. } = &error else { panic!("{error:?}") };
    assert_eq!(pointer, "/properties/n/minimum");
    assert!(error.to_string().starts_with("invalid schema at `/properties/n/minimum`"), "{error}");
    assert!(ArgumentSchema::compile(&json!({"type": "object", "required": "a"})).is_err());
    assert!(ArgumentSchema::compile(&json!({"type": "object", "properties": {"a": 5}})).is_err());
}

#[test]
fn oversized_and_too_deep_schemas_are_refused() {
    let mut properties = Map::new();
    for i in 0..3_000 {
        properties.insert(format!("field_{i}"), json!({"type": "string"}));
    }
    let big = json!({"type": "object", "properties": properties});
    assert!(
        matches!(ArgumentSchema::compile(&big), Err(SchemaError::TooLarge { bytes }) if bytes > MAX_SCHEMA_BYTES)
    );

    let mut deep = json!({"type": "string"});
    for _ in 0..20 {
        deep = json!({"type": "object", "properties": {"x": deep}});
    }
    assert_eq!(ArgumentSchema::compile(&deep).unwrap_err(), SchemaError::TooDeep);

    // Depth counts arrays too, including in keywords the validator ignores.
    let mut nested = json!(1);
    for _ in 0..40 {
        nested = json!([nested]);
    }
    assert_eq!(
        ArgumentSchema::compile(&json!({"type": "object", "examples": nested})).unwrap_err(),
        SchemaError::TooDeep
    );

    // Just inside the limit is fine: 16 levels of `properties` is 32 levels of JSON.
    let mut ok = json!({"type": "string"});
    for _ in 0..15 {
        ok = json!({"type": "object", "properties": {"x": ok}});
    }
    ArgumentSchema::compile(&ok).unwrap();
}

#[test]
fn references_that_fan_out_are_bounded() {
    // Each definition refers to the next twice: 2^30 paths if followed naively.
    let mut defs = Map::new();
    for i in 0..30 {
        let next = format!("#/$defs/d{}", i + 1);
        defs.insert(
            format!("d{i}"),
            json!({"type": "object", "properties": {"l": {"$ref": next}, "r": {"$ref": next}}}),
        );
    }
    defs.insert("d30".into(), json!({"type": "string", "x-airlock-sensitive": "url"}));
    let schema = json!({"type": "object", "$defs": defs, "properties": {"root": {"$ref": "#/$defs/d0"}}});
    assert_eq!(ArgumentSchema::compile(&schema).unwrap_err(), SchemaError::TooComplex);
}

#[test]
fn sensitive_arguments_are_found_with_pointers() {
    let schema = ArgumentSchema::compile(&json!({
        "type": "object",
        "properties": {
            "to": {"type": "string", "x-airlock-sensitive": "recipient"},
            "link/url": {"type": "string", "x-airlock-sensitive": "url"},
            "a~b": {"type": "string", "x-airlock-sensitive": "custom_kind"},
            "payment": {
                "type": "object",
                "properties": {"account": {"type": "string", "x-airlock-sensitive": "account"}},
                "anyOf": [{"properties": {"iban": {"type": "string", "x-airlock-sensitive": "account"}}}]
            },
            "invitees": {
                "type": "array",
                "items": {"type": "object", "properties": {"email": {"type": "string", "x-airlock-sensitive": "invitee"}}}
            },
            "plain": {"type": "string"}
        }
    }))
    .unwrap();
    let found: Vec<(&str, &str)> =
        schema.sensitive_arguments().iter().map(|s| (s.pointer.as_str(), s.kind.as_str())).collect();
    assert_eq!(
        found,
        [
            ("/a~0b", "custom_kind"),
            ("/invitees", "invitee"),
            ("/link~1url", "url"),
            ("/payment/account", "account"),
            ("/payment/iban", "account"),
            ("/to", "recipient"),
        ]
    );
    for (pointer, _) in &found {
        let arguments = json!({
            "to": "x", "link/url": "x", "a~b": "x",
            "payment": {"account": "x", "iban": "x"}, "invitees": []
        });
        assert!(arguments.pointer(pointer).is_some(), "{pointer} does not address the argument");
    }
}

#[test]
fn malformed_or_misplaced_sensitive_annotations_are_refused() {
    for kind in
        [json!("Recipient"), json!(""), json!("two words"), json!(3), json!(["url"]), json!("x".repeat(33))]
    {
        let schema =
            json!({"type": "object", "properties": {"a": {"type": "string", "x-airlock-sensitive": kind}}});
        assert!(matches!(ArgumentSchema::compile(&schema), Err(SchemaError::Sensitive { .. })), "{kind}");
    }
    let on_everything = json!({"type": "object", "x-airlock-sensitive": "recipient"});
    assert!(matches!(ArgumentSchema::compile(&on_everything), Err(SchemaError::Sensitive { .. })));
    let on_unnamed = json!({"type": "object", "additionalProperties": {"x-airlock-sensitive": "url"}});
    assert!(matches!(ArgumentSchema::compile(&on_unnamed), Err(SchemaError::Sensitive { .. })));
}

#[test]
fn json_pointer_fragments_are_percent_decoded() {
    assert_eq!(percent_decode("/$defs/a%20b").as_deref(), Some("/$defs/a b"));
    assert_eq!(percent_decode("/%7E"), Some("/~".into()));
    assert_eq!(percent_decode("/%zz"), None);
    assert_eq!(percent_decode("/%4"), None);
    assert_eq!(percent_decode("/%ff"), None, "not UTF-8");
    let schema = ArgumentSchema::compile(&json!({
        "type": "object",
        "$defs": {"a b": {"type": "string", "x-airlock-sensitive": "url"}},
        "properties": {"link": {"$ref": "#/$defs/a%20b"}}
    }))
    .unwrap();
    assert_eq!(
        schema.sensitive_arguments(),
        [SensitiveArgument { pointer: "/link".into(), kind: "url".into() }]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever JSON a caller sends as a schema, compiling it fails cleanly or yields a schema
    /// that validates arbitrary arguments without panicking.
    #[test]
    fn arbitrary_schemas_never_panic(schema in arb_json(), arguments in arb_json()) {
        let wrapped = json!({"type": "object", "properties": {"a": schema}});
        if let Ok(compiled) = ArgumentSchema::compile(&wrapped) {
            let _ = compiled.validate(&json!({ "a": arguments }));
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let keywords = prop::sample::select(vec![
        "type",
        "properties",
        "items",
        "$ref",
        "pattern",
        "required",
        "allOf",
        "anyOf",
        "not",
        "minimum",
        "additionalProperties",
        "x-airlock-sensitive",
        "$defs",
        "enum",
        "const",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z#/$]{0,8}".prop_map(Value::String),
        Just(json!("object")),
        Just(json!("#/$defs/a")),
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keywords.clone(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}
