//! Content-inspection throughput: detection and redaction with the standard profile on
//! realistic text and on inputs built to be slow, the time for one 2 KB chat message,
//! restoring a response, and the injection scanner.
//!
//! `cargo bench -p airlock-inspect --bench inspect`. Throughput is reported per core (each
//! benchmark runs on one thread).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::sync::LazyLock;

use airlock_inspect::injection::Scanner;
use airlock_inspect::{Mode, Profile, ProfileSpec, RestoreMode, Tokenizer, restore};
use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use secrecy::SecretSlice;

fn main() {
    divan::main();
}

const BIPIA: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata/injection/bipia_train.jsonl");

/// Realistic prompt text: the e-mails, tables and code answers of the BIPIA contexts (about
/// 800 KB of business text with a little personal data in it).
static PROSE: LazyLock<String> = LazyLock::new(|| {
    let data = std::fs::read_to_string(BIPIA).unwrap();
    let mut out = String::new();
    for line in data.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        out.push_str(v["text"].as_str().unwrap());
        out.push('\n');
    }
    out
});

/// A 2 KB chat message with a few identifiers in it.
static MESSAGE: LazyLock<String> = LazyLock::new(|| {
    let mut m = String::from(
        "Hi, I'm following up on the invoice we discussed. Please send the updated copy to \
         ana.lopez@example.com and cc finance at +44 20 7123 4567. The payment should go to \
         IBAN GB82 WEST 1234 5698 7654 32 by Friday; the card on file 4111 1111 1111 1111 \
         was declined twice. ",
    );
    while m.len() < 2048 {
        m.push_str(
            "Could you also summarise the three open action items from Tuesday's meeting, note \
             who owns each one, and draft a short reply that thanks the team for the quick \
             turnaround on the quarterly report? ",
        );
    }
    m.truncate(2048);
    m
});

fn worst_cases() -> Vec<(&'static str, String)> {
    const SIZE: usize = 1 << 20;
    let fill = |unit: &str| unit.repeat(SIZE / unit.len());
    vec![
        ("digits", fill("1234567890")),
        ("digit_groups", fill("4111 1111 1111 1112 ")),
        ("emails_broken", fill("a.b@c.")),
        ("hex_colons", fill("ab:cd:")),
        ("dotted_words", fill("www.a.")),
        ("credential_words", fill("password=x ")),
        ("capitalised_words", fill("Mr Ab Cd ")),
        ("non_ascii", fill("é中ü ")),
    ]
}

static TOKENIZER: LazyLock<Tokenizer> = LazyLock::new(|| Tokenizer::new(SecretSlice::from(vec![7u8; 32])));
static STANDARD: LazyLock<Profile> =
    LazyLock::new(|| Profile::compile(ProfileSpec::of(Mode::Standard)).unwrap());
static SCANNER: LazyLock<Scanner> = LazyLock::new(Scanner::new);
static AGGRESSIVE: LazyLock<Profile> =
    LazyLock::new(|| Profile::compile(ProfileSpec::of(Mode::Aggressive)).unwrap());

#[divan::bench]
fn detect_standard_prose(b: Bencher) {
    let text = &*PROSE;
    b.counter(BytesCount::of_str(text)).bench(|| STANDARD.detect(black_box(text)));
}

#[divan::bench]
fn detect_aggressive_prose(b: Bencher) {
    let text = &*PROSE;
    b.counter(BytesCount::of_str(text)).bench(|| AGGRESSIVE.detect(black_box(text)));
}

#[divan::bench]
fn redact_standard_prose(b: Bencher) {
    let text = &*PROSE;
    b.counter(BytesCount::of_str(text)).bench(|| STANDARD.redact(black_box(text), &TOKENIZER));
}

#[divan::bench(args = ["digits", "digit_groups", "emails_broken", "hex_colons", "dotted_words", "credential_words", "capitalised_words", "non_ascii"])]
fn detect_standard_worst(b: Bencher, case: &str) {
    let text = worst_cases().into_iter().find(|(n, _)| *n == case).unwrap().1;
    b.counter(BytesCount::of_str(&text)).bench(|| STANDARD.detect(black_box(&text)));
}

#[divan::bench]
fn redact_message_2kb(b: Bencher) {
    let text = &*MESSAGE;
    b.counter(BytesCount::of_str(text)).bench(|| STANDARD.redact(black_box(text), &TOKENIZER));
}

#[divan::bench]
fn restore_message_2kb(b: Bencher) {
    let redaction = STANDARD.redact(&MESSAGE, &TOKENIZER);
    let lookup = redaction.lookup();
    let text = redaction.text;
    b.counter(BytesCount::of_str(&text)).bench(|| restore(black_box(&text), &lookup, RestoreMode::Text));
}

#[divan::bench]
fn scan_injection_prose(b: Bencher) {
    let text = &*PROSE;
    b.counter(BytesCount::of_str(text)).bench(|| SCANNER.scan(black_box(text)));
}

#[divan::bench]
fn scan_injection_message_2kb(b: Bencher) {
    let text = &*MESSAGE;
    b.counter(BytesCount::of_str(text)).bench(|| SCANNER.scan(black_box(text)));
}
