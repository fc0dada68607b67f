//! Deterministic, tenant-keyed tokens and their restoration.
//!
//! A token looks like `[EMAIL_3f9a0c41d2b7]`: the kind's label and the first 48 bits of an
//! HMAC-SHA-256 of the kind and the value under the tenant's tokenization key. The same value
//! gives the same token within a tenant, other tenants get other tokens, and without the key a
//! token says nothing about its value beyond its kind. Plain ASCII in square brackets is what
//! models copy most faithfully (no characters a tokenizer splits oddly, nothing a JSON encoder
//! escapes), and restoration also accepts a token whose brackets the model dropped.
//!
//! Restoration replaces tokens by their values through a [`TokenLookup`]; tokens it does not
//! know are left as they are. [`StreamRestorer`] does the same over a stream of chunks, holding
//! back only a tail that could still be the start of a token, so its output equals restoring
//! the whole text at once for any chunking. In [`RestoreMode::JsonString`] values are escaped
//! for the inside of a JSON string, so restoring within tool-call arguments keeps them JSON.

use std::borrow::Cow;
use std::collections::HashMap;

use airlock_crypto::KeyedHasher;
use secrecy::SecretSlice;

use crate::kind::Kind;

/// Hex digits of HMAC in a token: 48 bits. Within one tenant and one kind, two values share a
/// token with probability about n²/2⁴⁹ for n values; the vault refuses to map a token to a
/// second value, so a collision can never restore the wrong value.
pub const TOKEN_HEX: usize = 12;

/// The longest label: a custom kind name of 24 characters.
const MAX_LABEL: usize = 24;

/// The longest token core (`LABEL_hex`), without brackets.
pub const MAX_CORE: usize = MAX_LABEL + 1 + TOKEN_HEX;

/// Mints tokens under one tenant's key.
pub struct Tokenizer {
    hasher: KeyedHasher,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokenizer(..)")
    }
}

impl Tokenizer {
    /// A tokenizer keyed by the tenant's tokenization key (32 random bytes, kept sealed).
    pub fn new(key: SecretSlice<u8>) -> Self {
        Tokenizer { hasher: KeyedHasher::new(key) }
    }

    /// The token core (`EMAIL_3f9a0c41d2b7`, no brackets) for `value` of `kind`.
    pub fn core(&self, kind: &Kind, value: &str) -> String {
        let label = kind.label();
        let mut input = Vec::with_capacity(label.len() + 1 + value.len());
        input.extend_from_slice(label.as_bytes());
        input.push(0);
        input.extend_from_slice(value.as_bytes());
        let digest = self.hasher.hash("airlock/v1/inspect-token", &input);
        let hex = digest.to_hex();
        format!("{label}_{}", hex.get(..TOKEN_HEX).unwrap_or(&hex))
    }

    /// The token as written into text: the core in square brackets.
    pub fn token(&self, kind: &Kind, value: &str) -> String {
        format!("[{}]", self.core(kind, value))
    }
}

/// Where tokens' values come from when restoring.
pub trait TokenLookup {
    /// The value of the token with this core (`EMAIL_3f9a0c41d2b7`), if known.
    fn value(&self, core: &str) -> Option<Cow<'_, str>>;
}

impl<S: std::hash::BuildHasher> TokenLookup for HashMap<String, String, S> {
    fn value(&self, core: &str) -> Option<Cow<'_, str>> {
        self.get(core).map(|v| Cow::Borrowed(v.as_str()))
    }
}

/// How restored values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreMode {
    /// As they are.
    #[default]
    Text,
    /// Escaped for the inside of a JSON string (tool-call arguments).
    JsonString,
}

/// Replaces every known token in `text` by its value; returns the text and how many tokens
/// were restored.
pub fn restore(text: &str, lookup: &dyn TokenLookup, mode: RestoreMode) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let count = restore_into(text, false, lookup, mode, &mut out);
    (out, count)
}

/// The distinct token cores written in `text` (with or without brackets), in order of first
/// appearance: what to look up before restoring from a store.
pub fn find_tokens(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found: Vec<String> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or_default();
        let may_start = b == b'['
            || (b.is_ascii_uppercase() && !(i > 0 && bytes.get(i - 1).is_some_and(|p| is_word(*p))));
        if may_start && let Some((start, end, next)) = parse_token(bytes, i) {
            if let Some(core) = text.get(start..end)
                && !found.iter().any(|f| f == core)
            {
                found.push(core.to_owned());
            }
            i = next;
            continue;
        }
        i += 1;
    }
    found
}

/// Restores `text` into `out`. `after_word` says whether the text that preceded `text` ended
/// in a word character, which decides whether a bare token may start at offset 0.
fn restore_into(
    text: &str,
    after_word: bool,
    lookup: &dyn TokenLookup,
    mode: RestoreMode,
    out: &mut String,
) -> usize {
    let bytes = text.as_bytes();
    let mut count = 0;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let Some(&b) = bytes.get(i) else { break };
        let starts_here = if b == b'[' {
            true
        } else if b.is_ascii_uppercase() {
            let before = if i == 0 { after_word } else { bytes.get(i - 1).is_some_and(|p| is_word(*p)) };
            !before
        } else {
            false
        };
        if starts_here
            && let Some((core_start, core_end, end)) = parse_token(bytes, i)
            && let Some(core) = text.get(core_start..core_end)
            && let Some(value) = lookup.value(core)
        {
            out.push_str(text.get(copied..i).unwrap_or_default());
            push_value(out, &value, mode);
            count += 1;
            copied = end;
            i = end;
            continue;
        }
        i += 1;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    count
}

/// Parses a token starting at `i` (a `[` or the label's first letter). Returns the core's
/// span and the end of the whole token (after `]` when there is one).
fn parse_token(bytes: &[u8], i: usize) -> Option<(usize, usize, usize)> {
    let bracket = bytes.get(i) == Some(&b'[');
    let core_start = if bracket { i + 1 } else { i };
    if !bytes.get(core_start)?.is_ascii_uppercase() {
        return None;
    }
    // The label is upper-case letters, digits and `_`; the core ends with `_` and exactly
    // TOKEN_HEX lower-case hex digits, followed by no further word character.
    let mut j = core_start;
    while j < bytes.len() && j - core_start <= MAX_CORE && bytes.get(j).is_some_and(|b| is_word(*b)) {
        j += 1;
    }
    let core_end = j;
    if core_end - core_start > MAX_CORE || core_end - core_start < TOKEN_HEX + 2 {
        return None;
    }
    let hex_start = core_end - TOKEN_HEX;
    let hex = bytes.get(hex_start..core_end)?;
    if bytes.get(hex_start - 1) != Some(&b'_') || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let label = bytes.get(core_start..hex_start - 1)?;
    if !label.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_') {
        return None;
    }
    let end = if bytes.get(core_end) == Some(&b']') { core_end + 1 } else { core_end };
    Some((core_start, core_end, end))
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn push_value(out: &mut String, value: &str, mode: RestoreMode) {
    match mode {
        RestoreMode::Text => out.push_str(value),
        RestoreMode::JsonString => {
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
        }
    }
}

/// Restores tokens in a stream of text chunks (a streamed completion, or the fragments of a
/// streamed tool call's arguments).
#[derive(Debug, Default)]
pub struct StreamRestorer {
    mode: RestoreMode,
    pending: String,
    after_word: bool,
    restored: usize,
}

impl StreamRestorer {
    /// A restorer writing values in `mode`.
    pub fn new(mode: RestoreMode) -> Self {
        StreamRestorer { mode, ..Self::default() }
    }

    /// Takes the next chunk; returns the text that can be released now.
    pub fn push(&mut self, chunk: &str, lookup: &dyn TokenLookup) -> String {
        self.pending.push_str(chunk);
        let hold = held_tail(&self.pending);
        let release = self.pending.len() - hold;
        let mut out = String::with_capacity(release);
        let ready = self.pending.get(..release).unwrap_or_default();
        self.restored += restore_into(ready, self.after_word, lookup, self.mode, &mut out);
        if let Some(last) = ready.bytes().last() {
            self.after_word = is_word(last);
        }
        self.pending.drain(..release);
        out
    }

    /// Ends the stream; returns what was held back, restored.
    pub fn finish(&mut self, lookup: &dyn TokenLookup) -> String {
        let mut out = String::with_capacity(self.pending.len());
        self.restored += restore_into(&self.pending, self.after_word, lookup, self.mode, &mut out);
        self.pending.clear();
        out
    }

    /// How many tokens have been restored so far.
    pub fn restored(&self) -> usize {
        self.restored
    }
}

/// The length of the tail of `text` that could still grow into a token (or gain a token's
/// closing bracket): a run of word characters no longer than a token core, with the `[`
/// before it, or a lone `[` at the end.
fn held_tail(text: &str) -> usize {
    let bytes = text.as_bytes();
    let run = bytes.iter().rev().take_while(|b| is_word(**b)).count();
    if run > MAX_CORE {
        // A token cannot start inside a longer run of word characters.
        return 0;
    }
    let run_start = bytes.len() - run;
    let bracket = run_start > 0 && bytes.get(run_start - 1) == Some(&b'[');
    if run == 0 {
        return usize::from(bracket);
    }
    // The run could be a token missing only its `]`, or the start of one.
    run + usize::from(bracket)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::kind::Builtin;
    use proptest::prelude::*;

    fn tokenizer(seed: u8) -> Tokenizer {
        Tokenizer::new(SecretSlice::from(vec![seed; 32]))
    }

    #[test]
    fn tokens_are_deterministic_per_tenant_and_kind() {
        let email = Kind::Builtin(Builtin::Email);
        let a = tokenizer(1);
        let b = tokenizer(2);
        assert_eq!(a.token(&email, "ana@example.com"), a.token(&email, "ana@example.com"));
        assert_ne!(a.token(&email, "ana@example.com"), b.token(&email, "ana@example.com"));
        assert_ne!(
            a.token(&email, "ana@example.com"),
            a.token(&Kind::Builtin(Builtin::Url), "ana@example.com")
        );
        let token = a.token(&email, "ana@example.com");
        assert!(token.starts_with("[EMAIL_") && token.ends_with(']') && token.len() == 2 + 6 + TOKEN_HEX);
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn restores_known_tokens_with_or_without_brackets() {
        let m = map(&[("EMAIL_0123456789ab", "ana@example.com")]);
        let (out, n) = restore("Mail [EMAIL_0123456789ab] or EMAIL_0123456789ab.", &m, RestoreMode::Text);
        assert_eq!(out, "Mail ana@example.com or ana@example.com.");
        assert_eq!(n, 2);
    }

    #[test]
    fn leaves_unknown_and_malformed_tokens() {
        let m = map(&[("EMAIL_0123456789ab", "x")]);
        for text in [
            "[EMAIL_0123456789ac]",
            "[EMAIL_0123456789abc]",
            "xEMAIL_0123456789ab",
            "[EMAIL_0123456789AB]",
            "[email_0123456789ab]",
        ] {
            assert_eq!(restore(text, &m, RestoreMode::Text), (text.to_owned(), 0), "{text}");
        }
    }

    #[test]
    fn finds_token_cores_once_each() {
        let text =
            "[EMAIL_0123456789ab] and EMAIL_0123456789ab, [CARD_aaaaaaaaaaaa] but not xCARD_bbbbbbbbbbbb";
        assert_eq!(find_tokens(text), vec!["EMAIL_0123456789ab".to_owned(), "CARD_aaaaaaaaaaaa".to_owned()]);
    }

    #[test]
    fn json_mode_escapes_values() {
        let m = map(&[("NAME_0123456789ab", "Ana \"Q\" \\ O'Neil\n")]);
        let args = r#"{"to":"[NAME_0123456789ab]"}"#;
        let (out, _) = restore(args, &m, RestoreMode::JsonString);
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["to"], "Ana \"Q\" \\ O'Neil\n");
    }

    #[test]
    fn streaming_handles_a_token_split_anywhere() {
        let m = map(&[("EMAIL_0123456789ab", "ana@example.com")]);
        let text = "Write to [EMAIL_0123456789ab] today";
        for cut in 0..=text.len() {
            let mut s = StreamRestorer::new(RestoreMode::Text);
            let mut out = s.push(&text[..cut], &m);
            out += &s.push(&text[cut..], &m);
            out += &s.finish(&m);
            assert_eq!(out, "Write to ana@example.com today", "cut at {cut}");
        }
    }

    fn lookup() -> HashMap<String, String> {
        map(&[("EMAIL_0123456789ab", "ana@example.com"), ("CARD_aaaaaaaaaaaa", "4111 1111 1111 1111")])
    }

    proptest! {
        #[test]
        fn streaming_equals_whole_for_any_chunking(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("[EMAIL_0123456789ab]".to_owned()),
                    Just("EMAIL_0123456789ab".to_owned()),
                    Just("CARD_aaaaaaaaaaaa]".to_owned()),
                    Just("[".to_owned()),
                    Just("_".to_owned()),
                    "[a-zA-Z0-9_ \\[\\]é]{0,12}",
                ],
                0..12,
            ),
            cuts in proptest::collection::vec(0usize..200, 0..8),
            json in any::<bool>(),
        ) {
            let text: String = parts.concat();
            let mode = if json { RestoreMode::JsonString } else { RestoreMode::Text };
            let m = lookup();
            let whole = restore(&text, &m, mode).0;
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).filter(|c| text.is_char_boundary(*c)).collect();
            bounds.sort_unstable();
            let mut s = StreamRestorer::new(mode);
            let mut out = String::new();
            let mut last = 0;
            for b in bounds {
                out += &s.push(&text[last..b], &m);
                last = b;
            }
            out += &s.push(&text[last..], &m);
            out += &s.finish(&m);
            prop_assert_eq!(out, whole);
        }
    }
}
