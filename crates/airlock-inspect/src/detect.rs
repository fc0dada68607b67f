//! The detector: every enabled rule compiled into one multi-pattern regex (a lazy DFA, so one
//! linear pass over the text), tenant dictionaries in one Aho-Corasick automaton, and a
//! validator per rule (checksums, issuer ranges, context words) that turns a candidate into a
//! finding.
//!
//! Guarantees: time linear in the input for any input, tenant patterns included (the regex
//! engine has no backtracking; every rule that could restart inside its own failed candidate
//! is bounded in length); spans always fall on character boundaries; findings never overlap.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind as AcMatchKind};
use base64::Engine as _;
use regex_automata::meta::{self, Regex};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind, PatternID, PatternSet};

use crate::InspectError;
use crate::kind::{Builtin, CustomName, Kind};
use crate::validate;

/// One thing found in a text: its kind and its byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was found.
    pub kind: Kind,
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

impl Finding {
    /// The text the finding covers.
    pub fn value<'t>(&self, text: &'t str) -> &'t str {
        text.get(self.start..self.end).unwrap_or_default()
    }
}

/// A tenant-defined pattern rule.
#[derive(Debug, Clone)]
pub struct CustomPattern {
    /// The kind its findings get.
    pub name: CustomName,
    /// The regular expression (Rust `regex` syntax: no look-around, no back-references).
    pub pattern: String,
    /// When not empty, one of these words (case-insensitive) must appear shortly before a
    /// match for it to count.
    pub context: Vec<String>,
}

/// A tenant-defined dictionary: whole-word terms (case-insensitive).
#[derive(Debug, Clone)]
pub struct CustomDictionary {
    /// The kind its findings get.
    pub name: CustomName,
    /// The terms.
    pub terms: Vec<String>,
}

/// Limits on what tenants may compile into their detector, so one tenant's configuration
/// cannot make detection slow or large for everybody.
pub mod limits {
    /// Longest tenant pattern, in bytes.
    pub const PATTERN_LEN: usize = 512;
    /// Most tenant patterns.
    pub const PATTERNS: usize = 64;
    /// Most dictionary terms across all dictionaries, and allowlist terms.
    pub const TERMS: usize = 100_000;
    /// Longest dictionary or allowlist term, in bytes.
    pub const TERM_LEN: usize = 256;
    /// Compiled size of one tenant pattern (the regex crate's size limit), in bytes.
    pub const COMPILED_PATTERN: usize = 256 * 1024;
}

/// The rules compiled twice: leftmost-first to find the next candidate, and all-matches to
/// learn in one pass which other rules also match where a candidate's check failed.
struct Patterns {
    first: Regex,
    all: Regex,
}

/// How a candidate becomes a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Accept,
    Email,
    Phone,
    PhoneInContext,
    PaymentCard,
    Iban,
    BankAccount,
    AbaRouting,
    UsSsn,
    UsEin,
    UsItin,
    UkNino,
    UkNhs,
    Aadhaar,
    InPan,
    Passport,
    DateOfBirth,
    Ipv4,
    Ipv6,
    Mac,
    Url,
    Domain,
    Bitcoin,
    Ethereum,
    PrivateKeyBlock,
    Jwt,
    ConnectionPassword,
    PasswordValue,
    TokenValue,
    Custom,
}

struct Rule {
    kind: Kind,
    check: Check,
    /// Words of which one must appear shortly before a match.
    context: Option<AhoCorasick>,
}

/// An automaton for a list of context words (ASCII case-insensitive).
fn context_automaton<S: AsRef<[u8]>>(words: &[S]) -> Result<Option<AhoCorasick>, InspectError> {
    if words.is_empty() {
        return Ok(None);
    }
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .build(words)
        .map(Some)
        .map_err(|e| InspectError::Config(format!("context words do not compile: {e}")))
}

/// The context words a built-in check needs.
fn builtin_context(check: Check) -> &'static [&'static str] {
    match check {
        Check::PhoneInContext => PHONE_CONTEXT,
        Check::BankAccount => ACCOUNT_CONTEXT,
        Check::AbaRouting => ROUTING_CONTEXT,
        Check::UsEin => EIN_CONTEXT,
        Check::Passport => PASSPORT_CONTEXT,
        Check::DateOfBirth => BIRTH_CONTEXT,
        _ => &[],
    }
}

// The built-in rules, in priority order: where two rules match at the same position, the
// earlier one wins, and when its check fails, the later ones are tried at that position.
// Patterns use ASCII classes and ASCII word boundaries so that the lazy DFA never has to fall
// back to a slower engine on non-ASCII text.
const BUILTIN_RULES: &[(Builtin, Check, &str)] = &[
    // Secrets, by their own formats first.
    (
        Builtin::PrivateKey,
        Check::PrivateKeyBlock,
        r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----",
    ),
    (Builtin::Jwt, Check::Jwt, r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    (Builtin::ApiKey, Check::Accept, API_KEY_PATTERN),
    (
        Builtin::ConnectionPassword,
        Check::ConnectionPassword,
        r"\b[A-Za-z][A-Za-z0-9+.-]{1,24}://[\x21-\x7E&&[^:/@?#]]{1,128}:[\x21-\x7E&&[^@/?#]]{1,256}@",
    ),
    (Builtin::Credential, Check::TokenValue, r#"(?i:\bbearer|\bbasic)\s+[A-Za-z0-9._~+/-]{12,512}=*"#),
    (
        Builtin::Credential,
        Check::PasswordValue,
        r#"(?:\b|[_-])(?i:pass(?:word|wd|phrase)?|pwd)["']?[ \t]{0,4}[:=][ \t]{0,4}["']?[\x21-\x7E&&[^"'`,;]]{4,256}"#,
    ),
    (
        Builtin::Credential,
        Check::TokenValue,
        r#"(?:\b|[_-])(?i:secret|token|api[_-]?key|access[_-]?key|client[_-]?secret|private[_-]?key|auth)["']?[ \t]{0,4}[:=][ \t]{0,4}["']?[A-Za-z0-9_\-+/=.~]{16,512}"#,
    ),
    // Personal data with a distinctive shape.
    (
        Builtin::Email,
        Check::Email,
        r"\b[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9-]{1,59})\b",
    ),
    (Builtin::Url, Check::Url, r#"\b(?:https?|ftp|wss?)://[^\s<>"'`{}|\\^]+"#),
    (
        Builtin::Url,
        Check::Url,
        r#"\bwww\.[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}(?:[/?#][^\s<>"'`{}|\\^]*)?"#,
    ),
    (Builtin::Iban, Check::Iban, r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b"),
    (
        Builtin::CryptoWallet,
        Check::Bitcoin,
        r"\b(?:[13][1-9A-HJ-NP-Za-km-z]{25,34}|(?i:bc1)[02-9ac-hj-np-zAC-HJ-NP-Z]{6,87})\b",
    ),
    (Builtin::CryptoWallet, Check::Ethereum, r"\b0x[0-9a-fA-F]{40}\b"),
    (Builtin::InPan, Check::InPan, r"\b[A-Z]{5}[0-9]{4}[A-Z]\b"),
    (Builtin::UkNino, Check::UkNino, r"(?i)\b[A-Z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b"),
    (
        Builtin::MacAddress,
        Check::Mac,
        r"\b[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}\b|\b[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\b",
    ),
    (Builtin::IpAddress, Check::Ipv4, r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?:/[0-9]{1,2})?\b"),
    (
        Builtin::IpAddress,
        Check::Ipv6,
        r"(?:\b[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:|::)[0-9A-Fa-f:.]{0,40}(?:/[0-9]{1,3})?",
    ),
    (Builtin::DateOfBirth, Check::DateOfBirth, DATE_PATTERN),
    // Numbers: context rules first (a number called a passport number is one, whatever its
    // checksum says), then the most specific shapes.
    (Builtin::Passport, Check::Passport, r"\b[A-Z]{0,2}[0-9]{6,9}\b"),
    (Builtin::AbaRouting, Check::AbaRouting, r"\b[0-9]{9}\b|\b[0-9]{4}-[0-9]{4}-[0-9]\b"),
    (
        Builtin::PaymentCard,
        Check::PaymentCard,
        r"\b[0-9]{4}(?:[ -]?[0-9]{4}){2}[ -]?[0-9]{1,7}\b|\b[0-9]{4}[ -]?[0-9]{6}[ -]?[0-9]{4,5}\b|\b[0-9]{12,19}\b",
    ),
    (Builtin::InAadhaar, Check::Aadhaar, r"\b[2-9][0-9]{3}[ -]?[0-9]{4}[ -]?[0-9]{4}\b"),
    (Builtin::UsSsn, Check::UsSsn, r"\b[0-9]{3}([ .-]?)[0-9]{2}[ .-]?[0-9]{4}\b"),
    (Builtin::UsItin, Check::UsItin, r"\b9[0-9]{2}[ -]?[0-9]{2}[ -]?[0-9]{4}\b"),
    (Builtin::UsEin, Check::UsEin, r"\b[0-9]{2}-[0-9]{7}\b"),
    (Builtin::UkNhs, Check::UkNhs, r"\b[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4}\b"),
    (Builtin::Phone, Check::Phone, r"(?:\+|\b00)[1-9](?:[ .-]?(?:\([0-9]{1,4}\)|[0-9])){6,16}\b"),
    (
        Builtin::Phone,
        Check::Phone,
        r"\([0-9]{2,4}\) ?[0-9]{3,4}[ .-]?[0-9]{3,4}\b|\b[0-9]{2,4}[.-][0-9]{3,4}[.-][0-9]{3,4}\b|\b[0-9]{3} [0-9]{3} [0-9]{4}\b|\b0[0-9]{1,4}[ .-][0-9]{6,8}\b",
    ),
    (Builtin::Phone, Check::PhoneInContext, r"\b[0-9][0-9 .-]{5,16}[0-9]\b"),
    (Builtin::BankAccount, Check::BankAccount, r"\b[0-9]{6,17}\b"),
    // Context rules with limited recall.
    (Builtin::PostalAddress, Check::Accept, ADDRESS_PATTERN),
    (Builtin::PersonName, Check::Accept, NAME_PATTERN),
    (
        Builtin::Domain,
        Check::Domain,
        r"\b(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9-]{1,59})\b",
    ),
];

/// Provider API keys and access tokens, by prefix and shape.
const API_KEY_PATTERN: &str = concat!(
    r"\b(?:",
    r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z2-7]{16}", // AWS
    r"|gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82}",                      // GitHub
    r"|glpat-[A-Za-z0-9_-]{20}|gl(?:dt|rt|ptt|ft|cbt)-[A-Za-z0-9_-]{20,64}",        // GitLab
    r"|xox[abposr]-[A-Za-z0-9-]{10,250}|xapp-[0-9]-[A-Za-z0-9-]{20,250}",           // Slack
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}|whsec_[A-Za-z0-9+/=]{32,64}",    // Stripe
    r"|sk-ant-(?:api|admin|oat)[0-9]{2}-[A-Za-z0-9_-]{80,128}",                     // Anthropic
    r"|sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,200}",                   // OpenAI
    r"|AIza[0-9A-Za-z_-]{35}|GOCSPX-[A-Za-z0-9_-]{28}|ya29\.[0-9A-Za-z_-]{20,512}", // Google
    r"|hf_[A-Za-z0-9]{34,40}",                                                      // Hugging Face
    r"|gsk_[A-Za-z0-9]{52}|xai-[A-Za-z0-9]{60,100}|pplx-[A-Za-z0-9]{48}|r8_[A-Za-z0-9]{37}", // model providers
    r"|npm_[A-Za-z0-9]{36}|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,512}", // package registries
    r"|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}|SK[0-9a-f]{32}|key-[0-9a-f]{32}", // SendGrid, Twilio, Mailgun
    r"|sq0(?:atp|csp)-[A-Za-z0-9_-]{22,43}|shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}", // Square, Shopify
    r"|dop_v1_[a-f0-9]{64}|ATATT3[A-Za-z0-9_=-]{150,250}|lin_api_[A-Za-z0-9]{40}", // DigitalOcean, Atlassian, Linear
    r"|AccountKey=[A-Za-z0-9+/]{86}==|SharedAccessSignature=[A-Za-z0-9%&=.:_-]{20,512}", // Azure
    r"|al[ksr]_[a-z]{3}_[0-9a-z]{26}_[A-Za-z0-9_-]{20,64}",                        // Airlock's own keys
    r")\b",
);

const DATE_PATTERN: &str = concat!(
    r"\b(?:[0-9]{1,2}[/.-][0-9]{1,2}[/.-](?:19|20)[0-9]{2}|(?:19|20)[0-9]{2}[/.-][0-9]{1,2}[/.-][0-9]{1,2}",
    r"|[0-9]{1,2}(?:st|nd|rd|th)? (?:of )?(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?,? (?:19|20)[0-9]{2}",
    r"|(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.? [0-9]{1,2}(?:st|nd|rd|th)?,? (?:19|20)[0-9]{2})\b",
);

const ADDRESS_PATTERN: &str = concat!(
    // A US/UK-style street line: number, one to four capitalised words, a street suffix,
    // then optionally a unit, a city and a state with ZIP code.
    r"\b[0-9]{1,6}[A-Za-z]? (?:[A-Z][a-z]{1,20} ){1,4}",
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Close|Crescent|Highway|Hwy|Parkway|Pkwy|Square|Sq|Circle|Cir|Trail|Row|Mews|Gardens)\b\.?",
    r"(?:,? (?:Apt|Apartment|Suite|Ste|Unit|Flat|#) ?[0-9A-Za-z-]{1,8})?",
    r"(?:,? [A-Z][a-z]{1,20}(?: [A-Z][a-z]{1,20}){0,2})?",
    r"(?:,? [A-Z]{2} [0-9]{5}(?:-[0-9]{4})?)?",
    // A UK postcode.
    r"|\b(?:[A-PR-UWYZ][A-HK-Y]?[0-9][A-HJKMNPR-Y0-9]? ?[0-9][ABD-HJLNP-UW-Z]{2}|GIR ?0AA)\b",
);

// Person names: a title followed by one or two capitalised words, or a common given name
// followed by a capitalised surname. Recall is limited to these shapes and the given names
// below; names written in lower case, names in other scripts, and single given names are
// not found.
const NAME_PATTERN: &str = concat!(
    r"\b(?:(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Rev)\.? [A-Z][a-z]{1,20}(?:[- ][A-Z][a-z]{1,20})?",
    r"|(?:",
    include_str!("given_names.txt"),
    r") (?:[A-Z]\. )?(?:Mc|Mac|O')?[A-Z][a-z]{1,20}(?:-[A-Z][a-z]{1,20})?)\b",
);

/// The compiled detector for one set of enabled kinds and one tenant's customisation.
pub struct Detector {
    regex: Option<Patterns>,
    rules: Vec<Rule>,
    dictionary: Option<(AhoCorasick, Vec<CustomName>)>,
    allow: HashSet<String>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("rules", &self.rules.len()).finish_non_exhaustive()
    }
}

impl Detector {
    /// Compiles the built-in rules for `kinds`, then the tenant's patterns and dictionaries,
    /// with `allow` as terms never reported. Tenant input is checked against [`limits`].
    pub fn new(
        kinds: &HashSet<Builtin>,
        patterns: &[CustomPattern],
        dictionaries: &[CustomDictionary],
        allow: &[String],
    ) -> Result<Detector, InspectError> {
        let mut sources: Vec<String> = Vec::new();
        let mut rules = Vec::new();
        for (kind, check, pattern) in BUILTIN_RULES {
            if kinds.contains(kind) {
                // ASCII word boundaries: a Unicode `\b` would make the lazy DFA give up on
                // the first non-ASCII byte.
                sources.push(pattern.replace(r"\b", r"(?-u:\b)"));
                let context = context_automaton(builtin_context(*check))?;
                rules.push(Rule { kind: Kind::Builtin(*kind), check: *check, context });
            }
        }
        if patterns.len() > limits::PATTERNS {
            return Err(InspectError::Config(format!("at most {} patterns", limits::PATTERNS)));
        }
        for custom in patterns {
            check_custom_pattern(custom)?;
            sources.push(format!("(?:{})", custom.pattern));
            let context = context_automaton(&custom.context)?;
            rules.push(Rule { kind: Kind::Custom(custom.name.clone()), check: Check::Custom, context });
        }
        let regex = if sources.is_empty() {
            None
        } else {
            let build = |kind| {
                Regex::builder()
                    .syntax(syntax::Config::new().utf8(true))
                    .configure(
                        meta::Config::new()
                            .match_kind(kind)
                            .hybrid_cache_capacity(64 * 1024 * 1024)
                            .nfa_size_limit(Some(64 * 1024 * 1024)),
                    )
                    .build_many(&sources)
                    .map_err(|e| InspectError::Config(format!("patterns do not compile: {e}")))
            };
            Some(Patterns { first: build(MatchKind::LeftmostFirst)?, all: build(MatchKind::All)? })
        };

        let terms: usize = dictionaries.iter().map(|d| d.terms.len()).sum::<usize>() + allow.len();
        if terms > limits::TERMS {
            return Err(InspectError::Config(format!(
                "at most {} dictionary and allowlist terms",
                limits::TERMS
            )));
        }
        let mut words = Vec::new();
        let mut owners = Vec::new();
        for dictionary in dictionaries {
            for term in &dictionary.terms {
                let term = term.trim();
                if term.is_empty() || term.len() > limits::TERM_LEN {
                    return Err(InspectError::Config(format!(
                        "dictionary `{}` has an empty term or one longer than {} bytes",
                        dictionary.name.as_str(),
                        limits::TERM_LEN
                    )));
                }
                words.push(term.to_owned());
                owners.push(dictionary.name.clone());
            }
        }
        let dictionary = if words.is_empty() {
            None
        } else {
            let automaton = AhoCorasickBuilder::new()
                .match_kind(AcMatchKind::LeftmostLongest)
                .ascii_case_insensitive(true)
                .build(&words)
                .map_err(|e| InspectError::Config(format!("dictionaries do not compile: {e}")))?;
            Some((automaton, owners))
        };
        let mut allowed = HashSet::new();
        for term in allow {
            if term.len() > limits::TERM_LEN {
                return Err(InspectError::Config(format!(
                    "allowlist terms are at most {} bytes",
                    limits::TERM_LEN
                )));
            }
            allowed.insert(term.trim().to_lowercase());
        }
        Ok(Detector { regex, rules, dictionary, allow: allowed })
    }

    /// Finds everything in `text`, in order, without overlaps.
    pub fn detect(&self, text: &str) -> Vec<Finding> {
        let mut found = self.detect_patterns(text);
        if let Some((automaton, owners)) = &self.dictionary {
            let mut words = Vec::new();
            for m in automaton.find_iter(text) {
                if !is_word_bounded(text, m.start(), m.end()) {
                    continue;
                }
                if let Some(owner) = owners.get(m.pattern().as_usize()) {
                    words.push(Finding { kind: Kind::Custom(owner.clone()), start: m.start(), end: m.end() });
                }
            }
            if !words.is_empty() {
                found = merge(found, words);
            }
        }
        if !self.allow.is_empty() {
            found.retain(|f| !self.allow.contains(&f.value(text).to_lowercase()));
        }
        found
    }

    fn detect_patterns(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        let Some(patterns) = &self.regex else { return found };
        let mut others = PatternSet::new(self.rules.len());
        let mut at = 0;
        while at <= text.len() {
            let Some(m) = patterns.first.search(&Input::new(text).range(at..)) else { break };
            let mut accepted = self.accept(m.pattern(), text, m.start(), m.end());
            if accepted.is_none() {
                // The preferred rule's check failed: a later rule may still match here.
                others.clear();
                let here = Input::new(text).range(m.start()..).anchored(Anchored::Yes);
                patterns.all.which_overlapping_matches(&here, &mut others);
                for pid in others.iter().filter(|pid| *pid > m.pattern()) {
                    // Context is cheaper to check than the rule's own match.
                    if !self.rules.get(pid.as_usize()).is_some_and(|rule| has_context(rule, text, m.start()))
                    {
                        continue;
                    }
                    let input = Input::new(text).range(m.start()..).anchored(Anchored::Pattern(pid));
                    if let Some(other) = patterns.first.search(&input) {
                        accepted = self.accept(pid, text, other.start(), other.end());
                        if accepted.is_some() {
                            break;
                        }
                    }
                }
            }
            match accepted {
                Some(finding) => {
                    at = finding.end.max(m.start() + 1);
                    found.push(finding);
                }
                None => at = next_char(text, m.start()),
            }
            at = ceil_char_boundary(text, at);
        }
        found
    }

    fn accept(&self, pid: PatternID, text: &str, start: usize, end: usize) -> Option<Finding> {
        let rule = self.rules.get(pid.as_usize())?;
        let candidate = text.get(start..end)?;
        let (start, end) = match check(rule, text, candidate, start, end)? {
            Span::Whole => (start, end),
            Span::Part(s, e) => (start + s, start + e),
            Span::Extended(e) => (start, e),
        };
        if start >= end || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
            return None;
        }
        Some(Finding { kind: rule.kind.clone(), start, end })
    }
}

/// Which part of a candidate a check accepted.
enum Span {
    Whole,
    /// A sub-span, relative to the candidate.
    Part(usize, usize),
    /// From the candidate's start to this absolute offset.
    Extended(usize),
}

fn check(rule: &Rule, text: &str, c: &str, start: usize, end: usize) -> Option<Span> {
    let ok = |b: bool| b.then_some(Span::Whole);
    match rule.check {
        Check::Accept => Some(Span::Whole),
        Check::Custom => ok(has_context(rule, text, start)),
        Check::Email => ok(email(c)),
        Check::Phone => ok(phone(c)),
        Check::PhoneInContext => ok(has_context(rule, text, start) && phone(c)),
        Check::PaymentCard => ok(validate::payment_card(c)),
        Check::Iban => iban(c),
        Check::BankAccount => ok(has_context(rule, text, start)),
        Check::AbaRouting => ok(has_context(rule, text, start) && validate::aba_routing(c)),
        Check::UsSsn => ok(validate::us_ssn(c)),
        Check::UsEin => ok(has_context(rule, text, start) && validate::us_ein(c)),
        Check::UsItin => ok(validate::us_itin(c)),
        Check::UkNino => ok(validate::uk_nino(c)),
        Check::UkNhs => ok(validate::uk_nhs(c)),
        Check::Aadhaar => ok(validate::aadhaar(c)),
        Check::InPan => ok(validate::in_pan(c)),
        Check::Passport => ok(has_context(rule, text, start)),
        Check::DateOfBirth => ok(has_context(rule, text, start)),
        Check::Ipv4 => ok(validate::ipv4(c)),
        Check::Ipv6 => ipv6(text, c, start, end),
        // The broadcast address names no device.
        Check::Mac => {
            ok(validate::mac_address(c) && !c.chars().all(|ch| matches!(ch, 'f' | 'F' | ':' | '-' | '.')))
        }
        Check::Url => url(c),
        Check::Domain => ok(domain(c)),
        Check::Bitcoin => ok(validate::bitcoin_address(c)),
        Check::Ethereum => ok(validate::ethereum_address(c)),
        Check::PrivateKeyBlock => private_key_end(text, end).map(Span::Extended),
        Check::Jwt => ok(jwt(c)),
        Check::ConnectionPassword => connection_password(c),
        Check::PasswordValue => credential_value(c, false),
        Check::TokenValue => credential_value(c, true),
    }
}

/// Whether the words a rule needs shortly before `start` are there: one of them, not preceded
/// by a letter or digit (so "tin" does not count in "routing", but "tel:" does). True for
/// rules that need none.
fn has_context(rule: &Rule, text: &str, start: usize) -> bool {
    let Some(words) = &rule.context else { return true };
    let from = floor_char_boundary(text, start.saturating_sub(CONTEXT_WINDOW));
    let Some(window) = text.get(from..start) else { return false };
    let bytes = window.as_bytes();
    words
        .find_overlapping_iter(window)
        .any(|m| !(m.start() > 0 && bytes.get(m.start() - 1).is_some_and(u8::is_ascii_alphanumeric)))
}

const PHONE_CONTEXT: &[&str] =
    &["phone", "tel", "mobile", "cell", "fax", "whatsapp", "call", "sms", "contact"];
const ACCOUNT_CONTEXT: &[&str] = &["account", "acct", "a/c", "bank"];
const ROUTING_CONTEXT: &[&str] = &["routing", "aba", "rtn", "transit"];
const EIN_CONTEXT: &[&str] = &["ein", "employer", "tax", "tin", "fein", "irs"];
const PASSPORT_CONTEXT: &[&str] = &["passport", "travel document"];
const BIRTH_CONTEXT: &[&str] = &["born", "birth", "dob", "d.o.b", "birthday", "b-day"];

/// How far before a candidate context words are looked for, in bytes.
const CONTEXT_WINDOW: usize = 48;

fn email(c: &str) -> bool {
    let Some((local, domain)) = c.rsplit_once('@') else { return false };
    !local.starts_with('.') && !local.ends_with('.') && !local.contains("..") && domain_labels_ok(domain)
}

fn domain_labels_ok(domain: &str) -> bool {
    domain.len() <= 253
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'))
}

fn phone(c: &str) -> bool {
    let digits = c.bytes().filter(u8::is_ascii_digit).count();
    let international = c.starts_with('+') || c.starts_with("00");
    let min = if international { 8 } else { 9 };
    (min..=15).contains(&digits) && !validate::digits(c).windows(2).all(|w| w.first() == w.get(1))
}

/// An IBAN, trimming trailing groups the greedy pattern took from the following text.
fn iban(c: &str) -> Option<Span> {
    let mut end = c.len();
    loop {
        let s = c.get(..end)?;
        if validate::iban(s) {
            return Some(Span::Part(0, end));
        }
        end = s.rfind(' ')?;
    }
}

fn ipv6(text: &str, c: &str, start: usize, end: usize) -> Option<Span> {
    // An address is not part of a longer run of hex digits, colons or letters ("std::cout",
    // "2001::db8::1" are not addresses, nor is the tail of one).
    let before = text.get(..start).and_then(|s| s.chars().next_back());
    let after = text.get(end..).and_then(|s| s.chars().next());
    if c.matches(':').count() < 2
        || before.is_some_and(|ch| ch.is_alphanumeric() || ch == ':')
        || after.is_some_and(|ch| ch.is_alphanumeric() || ch == '_')
    {
        return None;
    }
    // The pattern is generous at the end ("fe80::1." ends a sentence), so try the candidate
    // and then with trailing dots and colons removed.
    if validate::ipv6(c) {
        return Some(Span::Whole);
    }
    let trimmed = c.trim_end_matches(['.', ':']);
    (trimmed.len() < c.len() && validate::ipv6(trimmed)).then_some(Span::Part(0, trimmed.len()))
}

fn url(c: &str) -> Option<Span> {
    // Trailing punctuation belongs to the sentence, and a closing bracket to the prose
    // unless the URL opened one.
    let mut end = c.len();
    loop {
        let s = c.get(..end)?;
        let last = s.chars().next_back()?;
        let unbalanced =
            |open: char, close: char| last == close && s.matches(open).count() < s.matches(close).count();
        if matches!(last, '.' | ',' | ';' | ':' | '!' | '?' | '*')
            || unbalanced('(', ')')
            || unbalanced('[', ']')
        {
            end -= last.len_utf8();
        } else {
            break;
        }
    }
    let s = c.get(..end)?;
    let after_scheme = s.split_once("://").map_or(s, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(':').next().unwrap_or_default();
    let valid = domain(host) || validate::ipv4(host) || host.eq_ignore_ascii_case("localhost");
    valid.then_some(Span::Part(0, end))
}

/// Whether `c` is a domain name under a top-level domain people actually use. Top-level
/// domains that are also common file extensions (`.py`, `.rs`, `.sh`, `.md`, `.pl`) count
/// only with three or more labels, so `main.rs` is not a domain but `www.example.rs` is.
fn domain(c: &str) -> bool {
    if !domain_labels_ok(c) {
        return false;
    }
    let labels: Vec<&str> = c.split('.').collect();
    let Some(tld) = labels.last().map(|t| t.to_ascii_lowercase()) else { return false };
    if tld.starts_with("xn--") {
        return true;
    }
    if FILE_LIKE_TLDS.contains(&tld.as_str()) {
        return labels.len() >= 3;
    }
    if tld.len() == 2 {
        return tld.bytes().all(|b| b.is_ascii_lowercase()) && !NOT_COUNTRY_CODES.contains(&tld.as_str());
    }
    GENERIC_TLDS.binary_search(&tld.as_str()).is_ok()
}

const FILE_LIKE_TLDS: &[&str] =
    &["py", "rs", "sh", "md", "pl", "ps", "so", "mk", "cc", "js", "ts", "rb", "cs", "ml", "pm"];

// Two-letter strings that are not assigned country-code top-level domains.
const NOT_COUNTRY_CODES: &[&str] = &[
    "aa", "bb", "cc", "dd", "ee", "ff", "hh", "jj", "kk", "ll", "nn", "oo", "pp", "qq", "rr", "ss", "tt",
    "uu", "vv", "ww", "xx", "yy", "zz", "eg", "ie", "ex", "ok", "re",
];

// Generic top-level domains in common use, sorted for binary search; with `example` and
// `test`, reserved for documentation and testing (RFC 2606, RFC 6761), whose names fill real
// examples and test data.
const GENERIC_TLDS: &[&str] = &[
    "academy",
    "agency",
    "ai",
    "app",
    "art",
    "asia",
    "bank",
    "bar",
    "bio",
    "biz",
    "blog",
    "build",
    "business",
    "cafe",
    "capital",
    "care",
    "careers",
    "cat",
    "center",
    "chat",
    "city",
    "cloud",
    "club",
    "codes",
    "com",
    "company",
    "consulting",
    "coop",
    "design",
    "dev",
    "digital",
    "directory",
    "email",
    "energy",
    "engineering",
    "estate",
    "events",
    "example",
    "expert",
    "finance",
    "financial",
    "fund",
    "games",
    "global",
    "gmbh",
    "gov",
    "group",
    "health",
    "host",
    "inc",
    "info",
    "int",
    "io",
    "jobs",
    "law",
    "legal",
    "life",
    "live",
    "llc",
    "ltd",
    "management",
    "marketing",
    "media",
    "mil",
    "mobi",
    "money",
    "name",
    "net",
    "network",
    "news",
    "ngo",
    "online",
    "org",
    "page",
    "partners",
    "photo",
    "place",
    "plus",
    "pro",
    "services",
    "shop",
    "site",
    "social",
    "software",
    "solutions",
    "space",
    "store",
    "studio",
    "systems",
    "team",
    "tech",
    "technology",
    "tel",
    "test",
    "today",
    "tools",
    "travel",
    "tv",
    "vlaanderen",
    "webcam",
    "website",
    "wiki",
    "work",
    "works",
    "world",
    "xyz",
    "zone",
];

fn jwt(c: &str) -> bool {
    let Some(header) = c.split('.').next() else { return false };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| String::from_utf8(h).ok())
        .is_some_and(|h| h.trim_start().starts_with('{') && (h.contains("\"alg\"") || h.contains("\"typ\"")))
}

/// The end of a PEM private key block that begins before `header_end`: after its END line,
/// or, when that is missing (a truncated paste), after the base64 body.
fn private_key_end(text: &str, header_end: usize) -> Option<usize> {
    const MAX_BODY: usize = 16 * 1024;
    let limit = ceil_char_boundary(text, (header_end + MAX_BODY).min(text.len()));
    let body = text.get(header_end..limit)?;
    if let Some(i) = body.find("-----END ") {
        let after = body.get(i + 9..)?;
        if let Some(j) = after.find("-----") {
            return Some(header_end + i + 9 + j + 5);
        }
    }
    let len = body
        .bytes()
        .take_while(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r' | b' ' | b'\t' | b':' | b'-' | b',')
        })
        .count();
    Some(header_end + len)
}

/// The password of `scheme://user:password@`.
fn connection_password(c: &str) -> Option<Span> {
    let (_, rest) = c.split_once("://")?;
    let offset = c.len() - rest.len();
    let colon = rest.find(':')?;
    let at = rest.rfind('@')?;
    let password = rest.get(colon + 1..at)?;
    if password.is_empty() || is_placeholder(password) {
        return None;
    }
    Some(Span::Part(offset + colon + 1, offset + at))
}

/// The value after a credential keyword (`password=…`, `"api_key": "…"`, `Bearer …`).
/// Passwords count at any strength; tokens only when they look random.
fn credential_value(c: &str, must_look_random: bool) -> Option<Span> {
    let keyword_end = c.find(|ch: char| ch == ':' || ch == '=' || ch.is_whitespace()).unwrap_or(0);
    let rest = c.get(keyword_end..)?;
    let value_start =
        keyword_end + rest.find(|ch: char| !matches!(ch, ':' | '=' | '"' | '\'' | ' ' | '\t'))?;
    let value = c.get(value_start..)?.trim_end_matches(['"', '\'', '.', ')', ']', '}']);
    if value.len() < 4 || is_placeholder(value) {
        return None;
    }
    // A JWT after `Bearer` is reported as a JWT, found when the search moves on.
    if must_look_random && (!validate::looks_random(value) || jwt(value)) {
        return None;
    }
    Some(Span::Part(value_start, value_start + value.len()))
}

fn is_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    value.starts_with(['<', '$', '{', '%', '*'])
        || value.chars().all(|c| c == 'x' || c == 'X' || c == '*' || c == '.')
        || ["null", "none", "true", "false", "password", "changeme", "redacted", "required", "undefined"]
            .contains(&lower.as_str())
        || lower.starts_with("[redacted")
}

fn is_word_bounded(text: &str, start: usize, end: usize) -> bool {
    let before = text.get(..start).and_then(|s| s.chars().next_back());
    let after = text.get(end..).and_then(|s| s.chars().next());
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

/// Merges two sorted, non-overlapping finding lists; on overlap the one starting first (then
/// the longer) wins.
fn merge(a: Vec<Finding>, b: Vec<Finding>) -> Vec<Finding> {
    let mut all: Vec<Finding> = a.into_iter().chain(b).collect();
    all.sort_by(|x, y| x.start.cmp(&y.start).then(y.end.cmp(&x.end)));
    let mut out: Vec<Finding> = Vec::with_capacity(all.len());
    for f in all {
        if out.last().is_none_or(|last| f.start >= last.end) {
            out.push(f);
        }
    }
    out
}

fn check_custom_pattern(custom: &CustomPattern) -> Result<(), InspectError> {
    let name = custom.name.as_str();
    if custom.pattern.is_empty() || custom.pattern.len() > limits::PATTERN_LEN {
        return Err(InspectError::Config(format!(
            "pattern `{name}` must be 1 to {} bytes",
            limits::PATTERN_LEN
        )));
    }
    // Compiled alone first: this rejects syntax the engine does not have (look-around,
    // back-references), patterns that could match inside a character, patterns that match
    // the empty string, and patterns too large to run cheaply.
    let alone = regex::RegexBuilder::new(&custom.pattern)
        .size_limit(limits::COMPILED_PATTERN)
        .build()
        .map_err(|e| InspectError::Config(format!("pattern `{name}` is not valid: {e}")))?;
    if alone.is_match("") {
        return Err(InspectError::Config(format!("pattern `{name}` matches empty text")));
    }
    Ok(())
}

fn next_char(text: &str, at: usize) -> usize {
    text.get(at..).and_then(|s| s.chars().next()).map_or(at + 1, |c| at + c.len_utf8())
}

fn ceil_char_boundary(text: &str, mut at: usize) -> usize {
    while at < text.len() && !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
