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
