//! The verifiable export of a tenant's log, and its offline verification.
//!
//! An export is JSON Lines:
//! 1. a header `{"airlock_audit_export":1,"origin":…,"checkpoint":<signed note>}` whose
//!    checkpoint, signed when the export was made, covers every entry that follows;
//! 2. every entry in order, each in its canonical form;
//! 3. interleaved, the checkpoints the log issued, each as `{"checkpoint":<signed note>}`
//!    right after the last entry it covers.
//!
//! [`verify_export`] checks the chain, every Merkle root against its signed checkpoint, and
//! that the entries are exactly those the header's checkpoint covers, so an edit, deletion,
//! insertion, reordering or truncation anywhere is detected; it names the first bad entry.
//! What offline verification cannot detect on its own is a whole export rolled back to an
//! older, genuinely signed state; pin the expected size with a checkpoint obtained
//! separately (`expected`).
//!
//! Speed: each entry line is hashed as it stands, not re-serialised. The leaf is
//! `SHA-256(0x00 ‖ line)` and the chain input is the line without its `chain_hash` member.
//! For a canonical line that is exactly the definition; and a line that is not canonical can
//! never pass, because every entry is covered by the header's signed checkpoint, so any
//! accepted line is byte for byte a leaf Airlock signed. Only the fields that are checked
//! (`index`, `prev`, `chain_hash`) are decoded, borrowed from the line.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::merkle::{self, Frontier};
use crate::note::NoteVerifier;
use crate::{Hash, merkle::verify_consistency};

/// The export's first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    /// Format version: 1.
    pub airlock_audit_export: u32,
    /// The log's origin.
    pub origin: String,
    /// A signed checkpoint covering every entry of the export.
    pub checkpoint: String,
}

/// A checkpoint line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointLine {
    /// A signed checkpoint.
    pub checkpoint: String,
}

/// The fields of an entry line that verification reads; the others must be present and are
/// bound by the leaf hash.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryLine<'a> {
    index: u64,
    prev: &'a str,
    chain_hash: &'a str,
    #[serde(rename = "actor")]
    _actor: serde::de::IgnoredAny,
    #[serde(rename = "metadata")]
    _metadata: serde::de::IgnoredAny,
    #[serde(rename = "subject")]
    _subject: serde::de::IgnoredAny,
    #[serde(rename = "time")]
    _time: serde::de::IgnoredAny,
    #[serde(rename = "type")]
    _type: serde::de::IgnoredAny,
}

/// The `chain_hash` member as it stands in a canonical line: right after `actor`, whose
/// strings cannot hold an unescaped quote, so its first occurrence is the member itself.
const CHAIN_MEMBER: &[u8] = b",\"chain_hash\":\"";

/// The byte range of the `,"chain_hash":"<64 hex>"` member in `line`.
fn chain_member(line: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = line
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b',')
        .map(|(i, _)| i)
        .find(|&i| line.get(i..).is_some_and(|rest| rest.starts_with(CHAIN_MEMBER)))?;
    let end = start + CHAIN_MEMBER.len() + 64 + 1;
    (line.get(end - 1) == Some(&b'"')).then_some(start..end)
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The log's origin.
    pub origin: String,
    /// Entries verified.
    pub entries: u64,
    /// Checkpoints verified (the header's included).
    pub checkpoints: u64,
    /// The root over all entries.
    pub root: Hash,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok: {} entries, {} signed checkpoints, root {} ({})",
            self.entries,
            self.checkpoints,
            self.root.to_base64(),
            self.origin
        )
    }
}

/// Where and why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}line {line}: {problem}", .index.map(|i| format!("entry {i}, ")).unwrap_or_default())]
pub struct VerifyError {
    /// 1-based line number in the export.
    pub line: u64,
    /// The entry index concerned, when there is one.
    pub index: Option<u64>,
    /// What is wrong.
    pub problem: String,
}

fn fail<T>(line: u64, index: Option<u64>, problem: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError { line, index, problem: problem.into() })
}

/// Verifies an export read from `reader` with the tenant's verifier keys. If `expected` is
/// given (a checkpoint obtained independently), the export must be consistent with it and
/// at least as large.
pub fn verify_export(
    reader: impl BufRead,
    verifiers: &[NoteVerifier],
    expected: Option<&Checkpoint>,
) -> Result<Summary, VerifyError> {
    // Lines are read as bytes into one reused buffer, so a line that is not UTF-8 is
    // reported at its entry and no line costs an allocation.
    let mut reader = reader;
    let mut buffer = Vec::with_capacity(1024);
    let mut line_no: u64 = 1;
    let read = |reader: &mut dyn BufRead, buffer: &mut Vec<u8>, line_no: u64| -> Result<bool, VerifyError> {
        buffer.clear();
        let n = reader.read_until(b'\n', buffer).map_err(|e| VerifyError {
            line: line_no,
            index: None,
            problem: format!("cannot read: {e}"),
        })?;
        if buffer.last() == Some(&b'\n') {
            buffer.pop();
        }
        Ok(n > 0)
    };
    if !read(&mut reader, &mut buffer, 1)? {
        return fail(1, None, "the export is empty");
    }
    let header: ExportHeader = serde_json::from_slice(&buffer).map_err(|e| VerifyError {
        line: 1,
        index: None,
        problem: format!("not an audit export header: {e}"),
    })?;
    if header.airlock_audit_export != 1 {
        return fail(1, None, format!("unsupported export version {}", header.airlock_audit_export));
    }
    let last = Checkpoint::verify(&header.checkpoint, verifiers).map_err(|e| VerifyError {
        line: 1,
        index: None,
        problem: format!("header checkpoint: {e}"),
    })?;
    if last.origin != header.origin {
        return fail(1, None, "the header checkpoint is for another log");
    }

    let mut frontier = Frontier::new();
    let mut prev = Hash::ZERO;
    // The previous entry's chain hash as it was written (checked lowercase hex): `prev` must
    // repeat it exactly, which a byte comparison settles without decoding.
    let mut prev_text = Hash::ZERO.to_hex().into_bytes();
    let mut checkpoints = 1u64;
    let mut leaves: Vec<Hash> = Vec::new();
    let keep_leaves = expected.is_some();
    loop {
        line_no += 1;
        if !read(&mut reader, &mut buffer, line_no)? {
            break;
        }
        let line = buffer.as_slice();
        let next = frontier.size();
        if line.is_empty() {
            return fail(line_no, Some(next), "an empty line");
        }
        if line.starts_with(b"{\"checkpoint\":") {
            let parsed: CheckpointLine = serde_json::from_slice(line).map_err(|e| VerifyError {
                line: line_no,
                index: None,
                problem: format!("malformed checkpoint line: {e}"),
            })?;
            let checkpoint = Checkpoint::verify(&parsed.checkpoint, verifiers).map_err(|e| VerifyError {
                line: line_no,
                index: None,
                problem: format!("checkpoint: {e}"),
            })?;
            if checkpoint.origin != header.origin {
                return fail(line_no, None, "a checkpoint of another log");
            }
            if checkpoint.size != next {
                return fail(
                    line_no,
                    next.checked_sub(1),
                    format!("a checkpoint for size {} stands after {next} entries", checkpoint.size),
                );
            }
            if checkpoint.root != frontier.root() {
                return fail(
                    line_no,
                    next.checked_sub(1),
                    format!(
                        "the entries before this line do not match the signed checkpoint at size {next}: an entry up to index {} was altered",
                        next.saturating_sub(1)
                    ),
                );
            }
            checkpoints += 1;
            continue;
        }
        let entry: EntryLine<'_> = match serde_json::from_slice(line) {
            Ok(entry) => entry,
            Err(e) => return fail(line_no, Some(next), format!("not a valid entry: {e}")),
        };
        if entry.index != next {
            return fail(line_no, Some(next), format!("expected entry {next}, found entry {}", entry.index));
        }
        if entry.prev.as_bytes() != prev_text.as_slice() {
            return fail(line_no, Some(next), "`prev` does not match the previous entry's chain hash");
        }
        let stated = Hash::from_hex(entry.chain_hash);
        let Some(member) = chain_member(line).filter(|_| stated.is_some()) else {
            return fail(line_no, Some(next), "the entry is not in canonical form");
        };
        let computed = Hash::of(&[
            line.get(..member.start).unwrap_or_default(),
            line.get(member.end..).unwrap_or_default(),
            &prev.0,
        ]);
        if stated != Some(computed) {
            return fail(line_no, Some(next), "the chain hash does not match the entry's contents");
        }
        let leaf = merkle::leaf_hash(line);
        frontier.push(leaf);
        if keep_leaves {
            leaves.push(leaf);
        }
        prev = computed;
        prev_text.clear();
        prev_text.extend_from_slice(entry.chain_hash.as_bytes());
    }

    let size = frontier.size();
    if size != last.size {
        return fail(
            line_no,
            size.checked_sub(1),
            format!(
                "the export holds {size} entries but its signed checkpoint covers {}: entries were removed or added",
                last.size
            ),
        );
    }
    let root = frontier.root();
    if root != last.root {
        return fail(line_no, None, "the entries do not match the header's signed checkpoint");
    }
    if let Some(expected) = expected {
        if expected.origin != header.origin {
            return fail(1, None, "the expected checkpoint is for another log");
        }
        let Some(prefix) = usize::try_from(expected.size).ok().and_then(|n| leaves.get(..n)) else {
            return fail(
                line_no,
                None,
                format!(
                    "the export ({size} entries) is older than the expected checkpoint ({} entries)",
                    expected.size
                ),
            );
        };
        if merkle::root(prefix) != expected.root {
            return fail(line_no, None, "the export is not consistent with the expected checkpoint");
        }
        if expected.size > 0 {
            let proof = merkle::consistency_proof(&leaves, prefix.len()).map_err(|e| VerifyError {
                line: line_no,
                index: None,
                problem: e.to_string(),
            })?;
            verify_consistency(expected.size, size, &expected.root, &root, &proof).map_err(|e| {
                VerifyError {
                    line: line_no,
                    index: None,
                    problem: format!("not consistent with the expected checkpoint: {e}"),
                }
            })?;
        }
    }
    Ok(Summary { origin: header.origin, entries: size, checkpoints, root })
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
