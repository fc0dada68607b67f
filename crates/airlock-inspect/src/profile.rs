//! Redaction profiles: which kinds a tenant looks for and what happens to each (tokenize,
//! mask, drop, or block the request), plus the tenant's own patterns, dictionaries and
//! allowlist. A [`ProfileSpec`] is what tenants write; [`Profile`] is its compiled form, built
//! once and shared.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::InspectError;
use crate::detect::{CustomDictionary, CustomPattern, Detector, Finding};
use crate::kind::{Builtin, CustomName, Kind};
use crate::token::Tokenizer;

/// The starting point of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Nothing is looked for.
    Off,
    /// Structured identifiers and secrets: everything checkable by format or checksum.
    #[default]
    Standard,
    /// Standard plus names, postal addresses, URLs and domains (more false positives).
    Aggressive,
    /// Only the kinds listed in `kinds`.
    Custom,
}

/// What happens to a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replaced by its deterministic token; restored in responses.
    Tokenize,
    /// Replaced by its label (`[EMAIL]`); not restorable.
    Mask,
    /// Removed.
    Drop,
    /// The whole request is refused.
    Block,
    /// Not looked for (turns a kind of the mode off).
    Ignore,
}

/// A tenant-defined pattern in a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternSpec {
    /// The kind name its findings get (`matter_id`).
    pub name: String,
    /// A regular expression in Rust `regex` syntax (linear time: no look-around or
    /// back-references).
    pub pattern: String,
    /// Words of which one must appear shortly before a match (case-insensitive); empty for
    /// none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<String>,
    /// What happens to a match; tokenize by default.
    #[serde(default = "tokenize")]
    pub action: Action,
}

/// A tenant-defined dictionary in a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DictionarySpec {
    /// The kind name its findings get (`project_codename`).
    pub name: String,
    /// Whole-word terms, matched case-insensitively.
    pub terms: Vec<String>,
    /// What happens to a match; tokenize by default.
    #[serde(default = "tokenize")]
    pub action: Action,
}

fn tokenize() -> Action {
    Action::Tokenize
}

/// A redaction profile as a tenant writes it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// The starting point.
    pub mode: Mode,
    /// Per-kind actions: for `custom`, the kinds to look for; otherwise overrides of the
    /// mode's defaults (`ignore` turns a kind off).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<String, Action>,
    /// The tenant's own patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<PatternSpec>,
    /// The tenant's own dictionaries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dictionaries: Vec<DictionarySpec>,
    /// Terms never redacted, whatever finds them (case-insensitive, whole value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

impl ProfileSpec {
    /// The spec of a mode with no customisation.
    pub fn of(mode: Mode) -> Self {
        ProfileSpec { mode, ..Self::default() }
    }
}

/// The default action of each built-in kind in each mode; `None` when not looked for.
fn default_action(mode: Mode, kind: Builtin) -> Option<Action> {
    let broad = matches!(kind, Builtin::PersonName | Builtin::PostalAddress | Builtin::Url | Builtin::Domain);
    match mode {
        Mode::Off | Mode::Custom => None,
        Mode::Standard if broad => None,
        Mode::Standard | Mode::Aggressive => Some(Action::Tokenize),
    }
}

/// A compiled profile.
#[derive(Debug)]
pub struct Profile {
    spec: ProfileSpec,
    detector: Detector,
    actions: HashMap<Kind, Action>,
}

impl Profile {
    /// Checks and compiles a spec. Every problem is reported in one error.
    pub fn compile(spec: ProfileSpec) -> Result<Profile, InspectError> {
        let mut problems = Vec::new();
        let mut actions: HashMap<Kind, Action> = HashMap::new();
        for kind in Builtin::ALL {
            if let Some(action) = default_action(spec.mode, *kind) {
                actions.insert(Kind::Builtin(*kind), action);
            }
        }
        for (name, action) in &spec.kinds {
            match Builtin::from_name(name) {
                Some(kind) => {
                    actions.insert(Kind::Builtin(kind), *action);
                }
                None => problems.push(format!("`{name}` is not a built-in kind")),
            }
        }
        let mut custom_names = HashSet::new();
        let mut custom =
            |name: &str, action: Action, problems: &mut Vec<String>| match CustomName::parse(name) {
                Ok(n) if !custom_names.insert(n.clone()) => {
                    problems.push(format!("kind `{name}` is defined twice"));
                    None
                }
                Ok(n) => {
                    actions.insert(Kind::Custom(n.clone()), action);
                    Some(n)
                }
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            };
        let mut patterns = Vec::new();
        for p in &spec.patterns {
            if let Some(name) = custom(&p.name, p.action, &mut problems)
                && p.action != Action::Ignore
            {
                patterns.push(CustomPattern { name, pattern: p.pattern.clone(), context: p.context.clone() });
            }
        }
        let mut dictionaries = Vec::new();
        for d in &spec.dictionaries {
            if let Some(name) = custom(&d.name, d.action, &mut problems)
                && d.action != Action::Ignore
            {
                dictionaries.push(CustomDictionary { name, terms: d.terms.clone() });
            }
        }
        actions.retain(|_, action| *action != Action::Ignore);
        if spec.mode == Mode::Off {
            actions.clear();
            patterns.clear();
            dictionaries.clear();
        }
        let builtins: HashSet<Builtin> = actions
            .keys()
            .filter_map(|k| match k {
                Kind::Builtin(b) => Some(*b),
                Kind::Custom(_) => None,
            })
            .collect();
        let detector = match Detector::new(&builtins, &patterns, &dictionaries, &spec.allow) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        match detector {
            Some(detector) if problems.is_empty() => Ok(Profile { spec, detector, actions }),
            _ => Err(InspectError::Config(problems.join("; "))),
        }
    }

    /// The spec this profile was compiled from.
    pub fn spec(&self) -> &ProfileSpec {
        &self.spec
    }

    /// The action for a kind, if the profile looks for it.
    pub fn action(&self, kind: &Kind) -> Option<Action> {
        self.actions.get(kind).copied()
    }

    /// Everything the profile finds in `text`.
    pub fn detect(&self, text: &str) -> Vec<Finding> {
        self.detector.detect(text)
    }

    /// Redacts `text`: each finding is tokenized, masked or dropped by its kind's action,
    /// and findings whose action is `block` mark the redaction as blocked.
    pub fn redact(&self, text: &str, tokenizer: &Tokenizer) -> Redaction {
        let findings = self.detect(text);
        let mut out = String::with_capacity(text.len() + findings.len() * 8);
        let mut redacted = Vec::with_capacity(findings.len());
        let mut tokens: Vec<TokenEntry> = Vec::new();
        let mut seen = HashSet::new();
        let mut copied = 0;
        for finding in findings {
            let Some(action) = self.action(&finding.kind) else { continue };
            let value = finding.value(text);
            out.push_str(text.get(copied..finding.start).unwrap_or_default());
            let mut token = None;
            match action {
                Action::Tokenize => {
                    let core = tokenizer.core(&finding.kind, value);
                    out.push('[');
                    out.push_str(&core);
                    out.push(']');
                    if seen.insert(core.clone()) {
                        tokens.push(TokenEntry {
                            core: core.clone(),
                            kind: finding.kind.clone(),
                            value: value.to_owned(),
                        });
                    }
                    token = Some(format!("[{core}]"));
                }
                Action::Mask => {
                    out.push('[');
                    out.push_str(&finding.kind.label());
                    out.push(']');
                }
                Action::Drop => {}
                // A blocked request is refused as a whole; the text still hides the value
                // in case a caller logs it.
                Action::Block | Action::Ignore => {
                    out.push('[');
                    out.push_str(&finding.kind.label());
                    out.push(']');
                }
            }
            copied = finding.end;
            redacted.push(Redacted {
                kind: finding.kind,
                start: finding.start,
                end: finding.end,
                action,
                token,
            });
        }
        out.push_str(text.get(copied..).unwrap_or_default());
        Redaction { text: out, findings: redacted, tokens }
    }
}

/// What redaction did to one finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redacted {
    /// What was found.
    pub kind: Kind,
    /// Byte offset in the original text.
    pub start: usize,
    /// Byte offset one past the end in the original text.
    pub end: usize,
    /// What was done.
    pub action: Action,
    /// The token written in its place, for `tokenize`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A token minted by a redaction and the value it stands for: what the vault must keep to
/// restore it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// The token core (`EMAIL_3f9a0c41d2b7`).
    pub core: String,
    /// The kind.
    pub kind: Kind,
    /// The original value.
    pub value: String,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("core", &self.core)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The result of redacting a text.
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    /// The redacted text.
    pub text: String,
    /// What was found and done, in order.
    pub findings: Vec<Redacted>,
    /// The distinct tokens minted.
    pub tokens: Vec<TokenEntry>,
}

impl Redaction {
    /// Whether a finding's action is `block`: the request must be refused.
    pub fn blocked(&self) -> bool {
        self.findings.iter().any(|f| f.action == Action::Block)
    }

    /// The kinds that blocked the request.
    pub fn blocking_kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> =
            self.findings.iter().filter(|f| f.action == Action::Block).map(|f| f.kind.clone()).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// Findings per kind name: what the audit log records (never values).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for f in &self.findings {
            *counts.entry(f.kind.name().to_owned()).or_insert(0) += 1;
        }
        counts
    }

    /// The tokens as a lookup for restoring a response to the same request.
    pub fn lookup(&self) -> HashMap<String, String> {
        self.tokens.iter().map(|t| (t.core.clone(), t.value.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use proptest::prelude::*;
    use secrecy::SecretSlice;

    use super::*;
    use crate::kind::Builtin;
    use crate::token::{RestoreMode, restore};

    fn tokenizer() -> Tokenizer {
        Tokenizer::new(SecretSlice::from(vec![9u8; 32]))
    }

    fn profile(json: &str) -> Profile {
        Profile::compile(serde_json::from_str(json).unwrap()).unwrap()
    }

    const TEXT: &str = "Ana (ana@example.com, +44 20 7123 4567) paid with 4111 1111 1111 1111.";

    #[test]
    fn each_action_does_what_it_says() {
        let p =
            profile(r#"{"mode":"standard","kinds":{"email":"mask","phone":"drop","payment_card":"block"}}"#);
        let r = p.redact(TEXT, &tokenizer());
        assert_eq!(r.text, "Ana ([EMAIL], ) paid with [CARD].");
        assert!(r.blocked());
        assert_eq!(r.blocking_kinds(), vec![Kind::Builtin(Builtin::PaymentCard)]);
        assert!(r.tokens.is_empty());
        assert_eq!(
            r.counts().into_iter().collect::<Vec<_>>(),
            vec![("email".to_owned(), 1), ("payment_card".to_owned(), 1), ("phone".to_owned(), 1)]
        );
    }

    #[test]
    fn modes_choose_the_kinds() {
        let off = profile(r#"{"mode":"off","patterns":[{"name":"x","pattern":"Ana"}]}"#);
        assert_eq!(off.redact(TEXT, &tokenizer()).text, TEXT);
        let custom = profile(r#"{"mode":"custom","kinds":{"email":"tokenize"}}"#);
        let r = custom.redact(TEXT, &tokenizer());
        assert_eq!(r.findings.len(), 1);
        assert!(r.text.contains("4111 1111 1111 1111"));
        let ignored = profile(r#"{"mode":"standard","kinds":{"phone":"ignore"}}"#);
        assert!(ignored.redact(TEXT, &tokenizer()).text.contains("+44 20 7123 4567"));
        let standard = Profile::compile(ProfileSpec::default()).unwrap();
        assert_eq!(standard.action(&Kind::Builtin(Builtin::PersonName)), None);
        let aggressive = Profile::compile(ProfileSpec::of(Mode::Aggressive)).unwrap();
        assert_eq!(aggressive.action(&Kind::Builtin(Builtin::PersonName)), Some(Action::Tokenize));
    }

    #[test]
    fn every_problem_of_a_spec_is_reported_at_once() {
        let spec: ProfileSpec = serde_json::from_str(
            r#"{"mode":"custom","kinds":{"shoe_size":"mask"},
                "patterns":[{"name":"Bad Name","pattern":"x"},{"name":"ok","pattern":"(?<=a)b"}],
                "dictionaries":[{"name":"ok","terms":["a"]}]}"#,
        )
        .unwrap();
        let message = Profile::compile(spec).unwrap_err().to_string();
        for part in ["shoe_size", "Bad Name", "defined twice", "look-around"] {
            assert!(message.contains(part), "{part} missing from: {message}");
        }
    }

    #[test]
    fn redacted_text_restores_to_the_original() {
        let p = Profile::compile(ProfileSpec::of(Mode::Aggressive)).unwrap();
        let r = p.redact(TEXT, &tokenizer());
        assert_eq!(r.tokens.len(), r.findings.len());
        assert_eq!(restore(&r.text, &r.lookup(), RestoreMode::Text).0, TEXT);
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("ana.lopez@example.com".to_owned()),
            Just("4111 1111 1111 1111".to_owned()),
            Just("GB82 WEST 1234 5698 7654 32".to_owned()),
            Just("+44 20 7123 4567".to_owned()),
            Just("Dr. Jane Smith".to_owned()),
            Just("[EMAIL_0123456789ab]".to_owned()),
            Just("password=hunter2hunter2".to_owned()),
            "[ -~é中\n]{0,20}",
        ]
    }

    proptest! {
        #[test]
        fn tokenize_then_restore_is_the_identity(parts in proptest::collection::vec(fragment(), 0..10)) {
            static AGGRESSIVE: std::sync::LazyLock<Profile> =
                std::sync::LazyLock::new(|| Profile::compile(ProfileSpec::of(Mode::Aggressive)).unwrap());
            let text = parts.concat();
            let r = AGGRESSIVE.redact(&text, &tokenizer());
            prop_assert_eq!(restore(&r.text, &r.lookup(), RestoreMode::Text).0, text);
        }
    }
}
