//! Detection measured against Presidio's recognizer test tables: the valid values must be
//! found and the lookalikes (bad checksums, wrong lengths) must not. Each case is scored only
//! for its own label, as the data set's notes require; a prediction matches a labelled span
//! when they overlap.

use std::collections::{BTreeMap, HashSet};

use airlock_inspect::{Builtin, Detector};
use serde_json::Value;

const DATA: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata/pii/pii_presidio_recognizer_tests.jsonl");

/// Presidio's label → the kinds that count as finding it.
fn kinds_for(label: &str) -> Option<&'static [Builtin]> {
    Some(match label {
        "CREDIT_CARD" => &[Builtin::PaymentCard],
        "CRYPTO" => &[Builtin::CryptoWallet],
        "EMAIL_ADDRESS" => &[Builtin::Email],
        "IBAN_CODE" => &[Builtin::Iban],
        "IP_ADDRESS" => &[Builtin::IpAddress],
        "MAC_ADDRESS" => &[Builtin::MacAddress],
        "PHONE_NUMBER" => &[Builtin::Phone],
        "URL" => &[Builtin::Url, Builtin::Domain],
        "US_SSN" => &[Builtin::UsSsn],
        "US_ITIN" => &[Builtin::UsItin],
        "UK_NHS" => &[Builtin::UkNhs],
        "UK_NINO" => &[Builtin::UkNino],
        "IN_AADHAAR" => &[Builtin::InAadhaar],
        "IN_PAN" => &[Builtin::InPan],
        "US_PASSPORT" | "UK_PASSPORT" | "IN_PASSPORT" => &[Builtin::Passport],
        "ABA_ROUTING_NUMBER" => &[Builtin::AbaRouting],
        "US_BANK_NUMBER" => &[Builtin::BankAccount],
        "UK_POSTCODE" => &[Builtin::PostalAddress],
        _ => return None,
    })
}

#[derive(Default)]
struct Score {
    tp: u32,
    fp: u32,
    fn_: u32,
    negatives: u32,
    negatives_clean: u32,
}

impl Score {
    fn precision(&self) -> f64 {
        f64::from(self.tp) / f64::from((self.tp + self.fp).max(1))
    }
    fn recall(&self) -> f64 {
        f64::from(self.tp) / f64::from((self.tp + self.fn_).max(1))
    }
}

/// Python code-point offsets → byte offsets.
fn byte_offset(text: &str, chars: u64) -> usize {
    text.char_indices().nth(chars as usize).map_or(text.len(), |(i, _)| i)
}

#[test]
fn presidio_recognizer_tables() {
    let all: HashSet<Builtin> = Builtin::ALL.iter().copied().collect();
    let detector = Detector::new(&all, &[], &[], &[]).unwrap();
    let data = std::fs::read_to_string(DATA).unwrap();
    let mut scores: BTreeMap<String, Score> = BTreeMap::new();
    let mut uncovered: BTreeMap<String, u32> = BTreeMap::new();
    // `AIRLOCK_EVAL_VERBOSE=1` lists every miss and every spurious finding.
    let verbose = std::env::var_os("AIRLOCK_EVAL_VERBOSE").is_some();
    for line in data.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let label = case["eval_label"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let Some(kinds) = kinds_for(label) else {
            *uncovered.entry(label.to_owned()).or_default() += 1;
            continue;
        };
        let gold: Vec<(usize, usize)> = case["spans"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["label"] == label)
            .map(|s| {
                (
                    byte_offset(text, s["start"].as_u64().unwrap()),
                    byte_offset(text, s["end"].as_u64().unwrap()),
                )
            })
            .collect();
        let predicted: Vec<(usize, usize)> = detector
            .detect(text)
            .into_iter()
            .filter(|f| matches!(f.kind, airlock_inspect::Kind::Builtin(b) if kinds.contains(&b)))
            .map(|f| (f.start, f.end))
            .collect();
        let overlaps = |a: &(usize, usize), b: &(usize, usize)| a.0 < b.1 && b.0 < a.1;
        if verbose {
            for g in gold.iter().filter(|g| !predicted.iter().any(|p| overlaps(p, g))) {
                println!("missed {label}: {:?} in {text:?}", &text[g.0..g.1]);
            }
            for p in predicted.iter().filter(|p| !gold.iter().any(|g| overlaps(p, g))) {
                println!("spurious {label}: {:?} in {text:?}", &text[p.0..p.1]);
            }
        }
        let score = scores.entry(label.to_owned()).or_default();
        score.tp += gold.iter().filter(|g| predicted.iter().any(|p| overlaps(p, g))).count() as u32;
        score.fn_ += gold.iter().filter(|g| !predicted.iter().any(|p| overlaps(p, g))).count() as u32;
        score.fp += predicted.iter().filter(|p| !gold.iter().any(|g| overlaps(p, g))).count() as u32;
        if gold.is_empty() {
            score.negatives += 1;
            score.negatives_clean += u32::from(predicted.is_empty());
        }
    }

    let mut total = Score::default();
    println!(
        "{:<22} {:>4} {:>4} {:>4} {:>9} {:>7} {:>10}",
        "label", "tp", "fp", "fn", "precision", "recall", "negatives"
    );
    for (label, s) in &scores {
        println!(
            "{label:<22} {:>4} {:>4} {:>4} {:>9.3} {:>7.3} {:>5}/{:<4}",
            s.tp,
            s.fp,
            s.fn_,
            s.precision(),
            s.recall(),
            s.negatives_clean,
            s.negatives
        );
        total.tp += s.tp;
        total.fp += s.fp;
        total.fn_ += s.fn_;
        total.negatives += s.negatives;
        total.negatives_clean += s.negatives_clean;
    }
    println!(
        "{:<22} {:>4} {:>4} {:>4} {:>9.3} {:>7.3} {:>5}/{:<4}",
        "all covered",
        total.tp,
        total.fp,
        total.fn_,
        total.precision(),
        total.recall(),
        total.negatives_clean,
        total.negatives
    );
    println!("not covered: {uncovered:?}");

    // Floors a little under what the detectors achieve, so a regression fails loudly.
    assert!(total.precision() >= 0.97, "precision {:.3}", total.precision());
    assert!(total.recall() >= 0.85, "recall {:.3}", total.recall());
    // Checksummed kinds never report a lookalike.
    for label in ["CREDIT_CARD", "IBAN_CODE", "CRYPTO", "UK_NHS", "UK_NINO", "US_SSN", "US_ITIN"] {
        let s = &scores[label];
        assert_eq!((s.fp, s.negatives_clean), (0, s.negatives), "{label}");
    }
}
