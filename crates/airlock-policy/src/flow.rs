//! The flow rules: where each sensitive value of a proposed call came from, and what that
//! means for the call.
//!
//! A run sees text from several places. The intent, the principal's inputs and the run's
//! declared destinations are trusted: the person asked for them. So are the outputs of tools
//! declared trusted sources (a company directory, the bank's list of registered payees), and
//! the tenant's allowlists (known contacts, payees and domains), each entry while it is
//! unexpired and its owner still active. Everything else a tool returns is untrusted: anyone
//! can write an e-mail, a web page or a calendar invitation.
//!
//! Each sensitive value of a call (an argument marked `x-airlock-sensitive`, and the
//! addresses, links and account numbers inside `content` arguments) is classified:
//!
//! - **grounded**: it appears in a trusted source or an allowlist;
//! - **untrusted**: it appears only in untrusted tool output;
//! - **injected**: it appears only in untrusted text the injection scanner flagged as an
//!   instruction to the agent;
//! - **unknown**: it appears nowhere the run has seen.
//!
//! The tenant's flow settings map each class to allow, approval or deny (by default:
//! approval, deny for injected, approval for unknown). Separately, once a run has read data
//! classified confidential or restricted, a call that sends anything to a destination outside
//! the allowlists is held (confidential) or denied (restricted).
//!
//! Matching is by the value's kind: e-mail addresses, URLs, domains, phone numbers and
//! account numbers are compared normalised, as the extractor finds them in the text; amounts
//! as numbers; anything else as a whole word, ignoring case.

use std::collections::BTreeSet;

use airlock_inspect::extract::{Candidate, extract};
use airlock_inspect::kind::Builtin;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::SensitiveArgument;

/// Where a text the run has seen came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The run's declared intent.
    Intent,
    /// Data the principal provided with the run.
    Inputs,
    /// Destinations the run declared.
    Destinations,
    /// The output of a tool declared a trusted source.
    TrustedOutput,
    /// The output of any other tool.
    UntrustedOutput,
}

/// A text the run has seen: the intent, or one string of a tool's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Where it came from.
    pub kind: SourceKind,
    /// For tool outputs: the action's position in the run (1 for the first) and its tool.
    pub action: Option<(u32, String)>,
    /// Where in the output (a JSON pointer); empty otherwise.
    pub pointer: String,
    /// The text.
    pub text: String,
    /// Whether the injection scanner flagged the text as instructions to the agent.
    pub flagged: bool,
}

/// An allowlist entry, as the tenant keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowlistEntry {
    /// `contacts`, `payees` or `domains`.
    pub list: String,
    /// The value, as entered.
    pub value: String,
    /// Who added it (a user id).
    pub owner: String,
    /// Whether the entry still stands: unexpired, and its owner still active.
    pub valid: bool,
}

/// What the flow rules do with a class of value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The call may go ahead.
    Allow,
    /// A human must approve the call.
    Approval,
    /// The call is refused.
    Deny,
}

/// How a value reached the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowClass {
    /// In a trusted source or an allowlist.
    Grounded,
    /// Only in untrusted tool output.
    Untrusted,
    /// Only in untrusted text flagged as an injection.
    Injected,
    /// Nowhere the run has seen.
    Unknown,
}

impl FlowClass {
    /// The class's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grounded => "grounded",
            Self::Untrusted => "untrusted",
            Self::Injected => "injected",
            Self::Unknown => "unknown",
        }
    }
}

/// The tenant's flow settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowSettings {
    /// Values found only in untrusted content.
    pub untrusted: Outcome,
    /// Values found only inside text flagged as an injection.
    pub injected: Outcome,
    /// Values found nowhere.
    pub unknown: Outcome,
    /// Sending outside the allowlists after the run read confidential data.
    pub egress_after_confidential: Outcome,
    /// Sending outside the allowlists after the run read restricted data.
    pub egress_after_restricted: Outcome,
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            untrusted: Outcome::Approval,
            injected: Outcome::Deny,
            unknown: Outcome::Approval,
            egress_after_confidential: Outcome::Approval,
            egress_after_restricted: Outcome::Deny,
        }
    }
}

/// One sensitive value of a call, classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The argument it is in (a JSON pointer).
    pub argument: String,
    /// Its sensitive kind (`recipient`, `account`, …; for values inside `content`, what was
    /// found: `email`, `url`, …).
    pub kind: String,
    /// The value, normalised.
    pub value: String,
    /// How it reached the run.
    pub class: FlowClass,
    /// A sentence a human can check in seconds.
    pub explanation: String,
}

/// What the flow rules found about a call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFacts {
    /// Whether the tool declares sensitive arguments, so the flow rules can judge its calls.
    pub guarded: bool,
    /// Every sensitive value, classified.
    pub findings: Vec<Finding>,
    /// The most sensitive classification of data the run has read: `confidential`,
    /// `restricted`, or empty.
    pub read_classification: String,
    /// The call's destinations outside the allowlists (recipients, invitees, shares, URLs).
    pub outside_allowlist: Vec<String>,
}

impl FlowFacts {
    /// Whether every sensitive value is grounded.
    #[must_use]
    pub fn all_grounded(&self) -> bool {
        self.findings.iter().all(|f| f.class == FlowClass::Grounded)
    }

    /// The classes present, sorted.
    #[must_use]
    pub fn classes(&self) -> BTreeSet<&'static str> {
        self.findings.iter().map(|f| f.class.as_str()).collect()
    }
}

/// The flow rules' verdict on a call, with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowVerdict {
    /// The strictest outcome any rule gave.
    pub outcome: Outcome,
    /// Why, for each rule that did not allow.
    pub reasons: Vec<String>,
}

/// What the call is, for the flow rules.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The tool's sensitive arguments.
    pub sensitive: &'a [SensitiveArgument],
    /// The arguments.
    pub arguments: &'a Value,
}

/// The kinds whose values are destinations: where the call sends something.
const DESTINATION_KINDS: &[&str] = &["recipient", "invitee", "file_share", "url", "destination"];

/// A value to classify, and how to look for it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Needle {
    /// Compared with the extractor's candidates of these kinds.
    Candidate(&'static [Builtin], String),
    /// Compared with the numbers in the text.
    Amount(String),
    /// A whole word, ignoring case.
    Word(String),
}

impl Needle {
    fn shown(&self) -> &str {
        match self {
            Self::Candidate(_, v) | Self::Amount(v) | Self::Word(v) => v,
        }
    }
}

const EMAIL: &[Builtin] = &[Builtin::Email];
const PHONE: &[Builtin] = &[Builtin::Phone];
const ACCOUNT: &[Builtin] = &[Builtin::Iban, Builtin::BankAccount];
const URL: &[Builtin] = &[Builtin::Url];
const DOMAIN: &[Builtin] = &[Builtin::Domain];

/// The needle for one argument value of sensitive kind `kind`.
fn needle(kind: &str, value: &Value) -> Option<Needle> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if text.is_empty() {
        return None;
    }
    if kind == "amount" {
        return parse_amount(&text).map(|a| Needle::Amount(format_amount(a)));
    }
    let found = extract(&text);
    let whole = |c: &Candidate| c.start == 0 && c.end == text.len();
    if let Some(c) = found.iter().find(|c| whole(c) && c.kind != Builtin::Domain) {
        return Some(match c.kind {
            Builtin::Email => Needle::Candidate(EMAIL, c.value.clone()),
            Builtin::Phone => Needle::Candidate(PHONE, phone_key(&c.value)),
            Builtin::Iban | Builtin::BankAccount => Needle::Candidate(ACCOUNT, c.value.clone()),
            Builtin::Url => Needle::Candidate(URL, c.value.clone()),
            _ => Needle::Word(text.to_lowercase()),
        });
    }
    if let Some(c) = found.iter().find(|c| whole(c)) {
        return Some(Needle::Candidate(DOMAIN, c.value.clone()));
    }
    if kind == "account" {
        let compact: String =
            text.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).collect();
        return Some(Needle::Candidate(ACCOUNT, compact));
    }
    Some(Needle::Word(text.to_lowercase()))
}

/// The needles inside free text that leaves (`content`): addresses, links, accounts, phones.
fn content_needles(text: &str) -> Vec<(String, Needle)> {
    let found = extract(text);
    // A domain inside an address or a link is checked with it; a bare one on its own.
    let within = |c: &Candidate| {
        found
            .iter()
            .any(|o| matches!(o.kind, Builtin::Email | Builtin::Url) && o.start <= c.start && c.end <= o.end)
    };
    found
        .iter()
        .filter_map(|c| {
            let needle = match c.kind {
                Builtin::Email => Needle::Candidate(EMAIL, c.value.clone()),
                Builtin::Url => Needle::Candidate(URL, c.value.clone()),
                Builtin::Domain if !within(c) => Needle::Candidate(DOMAIN, c.value.clone()),
                Builtin::Iban | Builtin::BankAccount => Needle::Candidate(ACCOUNT, c.value.clone()),
                Builtin::Phone => Needle::Candidate(PHONE, phone_key(&c.value)),
                _ => return None,
            };
            Some((c.kind.name().to_owned(), needle))
        })
        .collect()
}

/// Phone numbers compare on their last nine digits, so `+44 20 7123 4567` and
/// `020 7123 4567` are the same number.
fn phone_key(value: &str) -> String {
    let digits: Vec<char> = value.chars().filter(char::is_ascii_digit).collect();
    digits.iter().skip(digits.len().saturating_sub(9)).collect()
}

fn parse_amount(text: &str) -> Option<f64> {
    let cleaned: String =
        text.chars().filter(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | '-')).collect();
    let normalised = normalise_number(&cleaned)?;
    normalised.parse::<f64>().ok().filter(|a| a.is_finite())
}

/// A number as written (`1,840.00`, `1.840,00`, `1840`) in plain decimal form.
fn normalise_number(raw: &str) -> Option<String> {
    let raw = raw.trim_matches(|c| c == '.' || c == ',');
    if raw.is_empty() {
        return None;
    }
    let last_dot = raw.rfind('.');
    let last_comma = raw.rfind(',');
    let decimal = match (last_dot, last_comma) {
        (Some(d), Some(c)) => Some(if d > c { '.' } else { ',' }),
        // One kind of separator: a decimal mark when one to two digits follow it once.
        (Some(i), None) | (None, Some(i)) => {
            let sep = raw.as_bytes().get(i).map(|b| char::from(*b))?;
            let after = raw.len() - i - 1;
            (raw.matches(sep).count() == 1 && (1..=2).contains(&after)).then_some(sep)
        }
        (None, None) => None,
    };
    Some(
        raw.chars()
            .filter_map(|c| match c {
                '0'..='9' | '-' => Some(c),
                c if Some(c) == decimal => Some('.'),
                _ => None,
            })
            .collect(),
    )
}

fn format_amount(amount: f64) -> String {
    let cents = (amount * 100.0).round() / 100.0;
    if cents.fract() == 0.0 { format!("{cents:.0}") } else { format!("{cents:.2}") }
}

/// Every number written in `text`, as amounts. Apostrophes and no-break spaces inside a
/// number are thousands separators (`1'840`, `1 840`), and `10k` is 10000.
fn amounts_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().chain(std::iter::once(' ')).peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || ((c == '.' || c == ',') && !current.is_empty()) {
            current.push(c);
        } else if (c == '\'' || c == '\u{a0}') && !current.is_empty() {
            continue;
        } else if !current.is_empty() {
            // `10k` is ten thousand, when the `k` ends the word.
            let thousands = matches!(c, 'k' | 'K') && !chars.peek().is_some_and(|n| n.is_alphanumeric());
            if let Some(amount) = normalise_number(&current).and_then(|n| n.parse::<f64>().ok()) {
                out.push(format_amount(if thousands { amount * 1000.0 } else { amount }));
            }
            current.clear();
        }
    }
    out
}

/// The digits of each run of a phone number's characters (digits, spaces, `+-().`) in a
/// text: a number written without the context the extractor needs still counts where a
/// phone number is expected.
fn digit_runs(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_ascii_digit() || matches!(c, ' ' | '+' | '-' | '(' | ')' | '.')))
        .map(|run| run.chars().filter(char::is_ascii_digit).collect::<String>())
        .filter(|digits| !digits.is_empty())
}

/// A text's values, found once and compared with every needle.
struct Seen<'a> {
    source: &'a Source,
    candidates: Vec<Candidate>,
    amounts: Vec<String>,
    lowered: String,
}

impl<'a> Seen<'a> {
    fn new(source: &'a Source) -> Self {
        Self {
            source,
            candidates: extract(&source.text),
            amounts: amounts_in(&source.text),
            lowered: source.text.to_lowercase(),
        }
    }

    fn has(&self, needle: &Needle) -> bool {
        match needle {
            Needle::Candidate(kinds, value) if *kinds == PHONE => {
                self.candidates.iter().any(|c| c.kind == Builtin::Phone && phone_key(&c.value) == *value)
                    || digit_runs(&self.source.text).any(|run| run.len() >= 9 && phone_key(&run) == *value)
            }
            Needle::Candidate(kinds, value) => {
                self.candidates.iter().any(|c| kinds.contains(&c.kind) && c.value == *value)
            }
            Needle::Amount(value) => self.amounts.iter().any(|a| a == value),
            Needle::Word(word) => contains_word(&self.lowered, word),
        }
    }
}

fn contains_word(haystack: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@');
    haystack.match_indices(word).any(|(at, _)| {
        let before = haystack.get(..at).and_then(|h| h.chars().next_back());
        let after = haystack.get(at + word.len()..).and_then(|h| h.chars().next());
        !before.is_some_and(is_word) && !after.is_some_and(|c| is_word(c) && c != '.')
    })
}

/// The host of a URL needle, or the domain of an e-mail needle.
fn domain_of(needle: &Needle) -> Option<String> {
    match needle {
        Needle::Candidate(kinds, value) if *kinds == EMAIL => {
            value.rsplit_once('@').map(|(_, d)| d.to_owned())
        }
        Needle::Candidate(kinds, value) if *kinds == URL => {
            extract(value).into_iter().find(|c| c.kind == Builtin::Domain).map(|c| c.value)
        }
        Needle::Candidate(kinds, value) if *kinds == DOMAIN => Some(value.clone()),
        _ => None,
    }
}

/// The allowlist an explanation names for a kind.
fn list_for(kind: &str) -> &'static str {
    match kind {
        "account" | "iban" | "bank_account" => "payees list",
        "url" | "destination" | "domain" => "domains list",
        "amount" => "",
        _ => "contacts list",
    }
}

/// The allowlist entry that covers `needle`, if any.
fn allowed<'a>(needle: &Needle, allowlists: &'a [AllowlistEntry]) -> Option<&'a AllowlistEntry> {
    let domain = domain_of(needle);
    allowlists.iter().filter(|e| e.valid).find(|entry| {
        let Some(listed) = needle_for_entry(entry) else { return false };
        if listed == *needle {
            return true;
        }
        // A listed domain covers its addresses, URLs and subdomains.
        match (&listed, &domain) {
            (Needle::Candidate(kinds, listed), Some(domain)) if *kinds == DOMAIN => {
                domain == listed || domain.ends_with(&format!(".{listed}"))
            }
            _ => false,
        }
    })
}

fn needle_for_entry(entry: &AllowlistEntry) -> Option<Needle> {
    let value = Value::String(entry.value.clone());
    match entry.list.as_str() {
        "payees" => needle("account", &value),
        "domains" => {
            let text = entry.value.trim().trim_start_matches("*.").to_lowercase();
            Some(Needle::Candidate(DOMAIN, text))
        }
        _ => needle("recipient", &value),
    }
}

fn describe_source(source: &Source) -> String {
    match (&source.kind, &source.action) {
        (SourceKind::Intent, _) => "the intent".to_owned(),
        (SourceKind::Inputs, _) => "the inputs the principal provided".to_owned(),
        (SourceKind::Destinations, _) => "the run's declared destinations".to_owned(),
        (SourceKind::TrustedOutput, Some((n, tool))) => {
            format!("the output of action {n} (`{tool}`), a trusted source")
        }
        (SourceKind::UntrustedOutput, Some((n, tool))) => format!("the output of action {n} (`{tool}`)"),
        (_, None) => "a tool's output".to_owned(),
    }
}

/// Classifies one needle against what the run has seen.
fn classify(
    argument: &str,
    kind: &str,
    needle: &Needle,
    seen: &[Seen<'_>],
    allowlists: &[AllowlistEntry],
) -> Finding {
    let value = needle.shown().to_owned();
    let finding = |class, explanation| Finding {
        argument: argument.to_owned(),
        kind: kind.to_owned(),
        value: value.clone(),
        class,
        explanation,
    };
    let trusted = |s: &&Seen<'_>| !matches!(s.source.kind, SourceKind::UntrustedOutput);
    if let Some(seen) = seen.iter().filter(trusted).find(|s| s.has(needle)) {
        return finding(
            FlowClass::Grounded,
            format!("{kind} `{value}` is in {}", describe_source(seen.source)),
        );
    }
    if let Some(entry) = allowed(needle, allowlists) {
        let list = match entry.list.as_str() {
            "payees" => "payees list",
            "domains" => "domains list",
            _ => "contacts list",
        };
        return finding(
            FlowClass::Grounded,
            format!("{kind} `{value}` is on the {list} (entry `{}`, added by {})", entry.value, entry.owner),
        );
    }
    let sightings: Vec<&Source> = seen
        .iter()
        .filter(|s| s.source.kind == SourceKind::UntrustedOutput && s.has(needle))
        .map(|s| s.source)
        .collect();
    let list = list_for(kind);
    let not_in = if list.is_empty() {
        "it is not in the intent or the inputs".to_owned()
    } else {
        format!("it is not in the intent, the inputs or the {list}")
    };
    match sightings.first() {
        None => finding(
            FlowClass::Unknown,
            format!(
                "{kind} `{value}` appears nowhere the run has seen (the intent, the inputs, tool outputs{})",
                if list.is_empty() { String::new() } else { format!(", the {list}") }
            ),
        ),
        Some(first) => {
            let injected = sightings.iter().all(|s| s.flagged);
            let place =
                if first.pointer.is_empty() { String::new() } else { format!(" at `{}`", first.pointer) };
            if injected {
                finding(
                    FlowClass::Injected,
                    format!(
                        "{kind} `{value}` first appeared in {}{place}, in text flagged as an instruction; {not_in}",
                        describe_source(first)
                    ),
                )
            } else {
                finding(
                    FlowClass::Untrusted,
                    format!(
                        "{kind} `{value}` first appeared in {}{place}, which is untrusted content; {not_in}",
                        describe_source(first)
                    ),
                )
            }
        }
    }
}

/// The values at `pointer` in `arguments`: the value itself, or every item of an array.
fn values_at<'a>(arguments: &'a Value, pointer: &str) -> Vec<&'a Value> {
    match arguments.pointer(pointer) {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(value) => vec![value],
        None => Vec::new(),
    }
}

/// Classifies every sensitive value of a call against the run's sources and the allowlists,
/// and works out what the run has read and where the call sends.
#[must_use]
pub fn analyse(
    call: Call<'_>,
    sources: &[Source],
    allowlists: &[AllowlistEntry],
    read: &[String],
) -> FlowFacts {
    let seen: Vec<Seen<'_>> = sources.iter().map(Seen::new).collect();
    let mut findings = Vec::new();
    let mut outside = Vec::new();
    for sensitive in call.sensitive {
        for value in values_at(call.arguments, &sensitive.pointer) {
            let needles: Vec<(String, Needle)> = if sensitive.kind == "content" {
                value.as_str().map(content_needles).unwrap_or_default()
            } else {
                needle(&sensitive.kind, value).map(|n| (sensitive.kind.clone(), n)).into_iter().collect()
            };
            for (kind, needle) in needles {
                let destination =
                    DESTINATION_KINDS.contains(&kind.as_str()) || matches!(kind.as_str(), "email" | "url");
                if destination && allowed(&needle, allowlists).is_none() {
                    outside.push(needle.shown().to_owned());
                }
                let finding = classify(&sensitive.pointer, &kind, &needle, &seen, allowlists);
                if !findings.contains(&finding) {
                    findings.push(finding);
                }
            }
        }
    }
    let read_classification = if read.iter().any(|c| c == "restricted") {
        "restricted"
    } else if read.iter().any(|c| c == "confidential") {
        "confidential"
    } else {
        ""
    };
    outside.sort();
    outside.dedup();
    FlowFacts {
        guarded: !call.sensitive.is_empty(),
        findings,
        read_classification: read_classification.to_owned(),
        outside_allowlist: outside,
    }
}

/// The flow rules' verdict: the strictest outcome the settings give the call's values, and
/// the retrieval-then-egress rule.
#[must_use]
pub fn verdict(facts: &FlowFacts, settings: &FlowSettings) -> FlowVerdict {
    let mut outcome = Outcome::Allow;
    let mut reasons = Vec::new();
    for finding in &facts.findings {
        let given = match finding.class {
            FlowClass::Grounded => Outcome::Allow,
            FlowClass::Untrusted => settings.untrusted,
            FlowClass::Injected => settings.injected,
            FlowClass::Unknown => settings.unknown,
        };
        if given != Outcome::Allow {
            reasons.push(format!("{}.", capitalise(&finding.explanation)));
        }
        outcome = outcome.max(given);
    }
    if !facts.outside_allowlist.is_empty() {
        let given = match facts.read_classification.as_str() {
            "restricted" => settings.egress_after_restricted,
            "confidential" => settings.egress_after_confidential,
            _ => Outcome::Allow,
        };
        if given != Outcome::Allow {
            reasons.push(format!(
                "The run has read {} data, and this call sends to {} outside the allowlists.",
                facts.read_classification,
                facts.outside_allowlist.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        outcome = outcome.max(given);
    }
    FlowVerdict { outcome, reasons }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod tests;
