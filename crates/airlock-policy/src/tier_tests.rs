use proptest::prelude::*;

use super::*;

#[test]
fn built_in_tiers_round_trip_through_text_and_serde() {
    for tier in RiskTier::BUILT_IN {
        assert_eq!(RiskTier::parse(tier.as_str()), Ok(tier.clone()));
        let json = serde_json::to_string(&tier).unwrap();
        assert_eq!(json, format!("\"{}\"", tier.as_str()));
        assert_eq!(serde_json::from_str::<RiskTier>(&json).unwrap(), tier);
    }
}

#[test]
fn custom_tiers_keep_their_prefix() {
    let tier = RiskTier::parse("custom:ml-training").unwrap();
    assert_eq!(tier, RiskTier::Custom("custom:ml-training".into()));
    assert_eq!(tier.as_str(), "custom:ml-training");
    assert_eq!(tier.to_string(), "custom:ml-training");
    assert_eq!(serde_json::to_value(&tier).unwrap(), serde_json::json!("custom:ml-training"));
    assert!(!tier.needs_approval_by_default());
}

#[test]
fn malformed_tiers_are_rejected() {
    for bad in [
        "",
        "Read",
        "READ",
        "financial ",
        "custom:",
        "custom",
        "custom:Upper",
        "custom:1st",
        "custom:with space",
        "custom:a/b",
        "custom:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "other",
    ] {
        assert!(RiskTier::parse(bad).is_err(), "{bad:?} parsed");
    }
    assert!(serde_json::from_str::<RiskTier>("\"nope\"").is_err());
    let message = RiskTier::parse("nope").unwrap_err().to_string();
    assert!(message.starts_with("`nope` is not a risk tier"), "{message}");
}

#[test]
fn high_risk_tiers_need_approval_by_default() {
    let needing: Vec<&str> =
        RiskTier::BUILT_IN.iter().filter(|t| t.needs_approval_by_default()).map(RiskTier::as_str).collect();
    assert_eq!(needing, ["destructive", "financial", "egress", "bulk"]);
}

proptest! {
    #[test]
    fn any_well_formed_custom_name_round_trips(name in "[a-z][a-z0-9_-]{0,31}") {
        let text = format!("custom:{name}");
        let tier = RiskTier::parse(&text).unwrap();
        prop_assert_eq!(tier.as_str(), text.as_str());
        prop_assert_eq!(RiskTier::parse(tier.as_str()).unwrap(), tier);
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in ".{0,64}") {
        if let Ok(tier) = RiskTier::parse(&text) {
            prop_assert_eq!(tier.as_str(), text.as_str());
        }
    }
}
