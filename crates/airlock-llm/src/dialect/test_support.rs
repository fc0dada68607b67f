//! Shared fixtures for the dialect tests: a standard profile, a fixed-key tokenizer, and
//! helpers that feed streams in pieces and read SSE output back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::sync::LazyLock;

use airlock_inspect::injection::Scanner;
use airlock_inspect::{Builtin, Kind, Profile, ProfileSpec, Tokenizer};
use secrecy::SecretSlice;
use serde_json::Value;

use super::{Dialect, InjectionPolicy, RequestInspection, StreamRestorer, inspect_request};
use crate::sse::{SseEvent, SseParser};

pub(super) static PROFILE: LazyLock<Profile> =
    LazyLock::new(|| Profile::compile(ProfileSpec::default()).unwrap());
pub(super) static SCANNER: LazyLock<Scanner> = LazyLock::new(Scanner::new);

pub(super) const EMAIL: &str = "ana.lopez@example.com";
pub(super) const PHONE: &str = "+44 20 7123 4567";
pub(super) const CARD: &str = "4111 1111 1111 1111";
pub(super) const IBAN: &str = "GB82 WEST 1234 5698 7654 32";

pub(super) fn tokenizer() -> Tokenizer {
    Tokenizer::new(SecretSlice::from(vec![7u8; 32]))
}

/// The token core the fixed-key tokenizer mints for a value.
pub(super) fn core(kind: Builtin, value: &str) -> String {
    tokenizer().core(&Kind::Builtin(kind), value)
}

/// The token as written into text.
pub(super) fn token(kind: Builtin, value: &str) -> String {
    format!("[{}]", core(kind, value))
}

pub(super) fn inspect(dialect: Dialect, body: &mut Value, policy: InjectionPolicy) -> RequestInspection {
    inspect_request(dialect, body, &PROFILE, &tokenizer(), &SCANNER, policy)
}

/// Feeds `wire` cut at `cuts` (sorted byte offsets), then finishes.
pub(super) fn feed(restorer: &mut StreamRestorer, wire: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut last = 0;
    for &cut in cuts {
        out.extend(restorer.push(&wire[last..cut]));
        last = cut;
    }
    out.extend(restorer.push(&wire[last..]));
    out.extend(restorer.finish());
    out
}

/// Parses SSE output completely (a trailing partial event would be a bug in the writer).
pub(super) fn events(out: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let events = parser.push(out).unwrap();
    assert_eq!(parser.finish().unwrap(), None, "output ends inside an event");
    events
}

pub(super) fn lookup(pairs: &[(String, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.clone(), (*v).to_owned())).collect()
}
