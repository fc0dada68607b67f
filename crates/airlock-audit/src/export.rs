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

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::entry::Entry;
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
    // Lines are read as bytes so that a line which is not UTF-8 is reported at its entry.
    let mut lines = reader.split(b'\n');
    let mut line_no: u64 = 1;
    let header_text = match lines.next() {
        Some(Ok(bytes)) => String::from_utf8(bytes).map_err(|_| VerifyError {
            line: 1,
            index: None,
            problem: "the header is not UTF-8".into(),
        })?,
        Some(Err(e)) => return fail(1, None, format!("cannot read: {e}")),
        None => return fail(1, None, "the export is empty"),
    };
    let header: ExportHeader = serde_json::from_str(&header_text).map_err(|e| VerifyError {
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
    let mut checkpoints = 1u64;
    let mut leaves: Vec<Hash> = Vec::new();
    let keep_leaves = expected.is_some();
    for bytes in lines {
        line_no += 1;
        let bytes = bytes.map_err(|e| VerifyError {
            line: line_no,
            index: None,
            problem: format!("cannot read: {e}"),
        })?;
        let next = frontier.size();
        if bytes.is_empty() {
            return fail(line_no, Some(next), "an empty line");
        }
        let Ok(text) = String::from_utf8(bytes) else {
            return fail(line_no, Some(next), "the line is not UTF-8");
        };
        if text.starts_with("{\"checkpoint\":") {
            let line: CheckpointLine = serde_json::from_str(&text).map_err(|e| VerifyError {
                line: line_no,
                index: None,
                problem: format!("malformed checkpoint line: {e}"),
            })?;
            let checkpoint = Checkpoint::verify(&line.checkpoint, verifiers).map_err(|e| VerifyError {
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
        let entry: Entry = match serde_json::from_str(&text) {
            Ok(entry) => entry,
            Err(e) => return fail(line_no, Some(next), format!("not a valid entry: {e}")),
        };
        if entry.index != next {
            return fail(line_no, Some(next), format!("expected entry {next}, found entry {}", entry.index));
        }
        if Hash::from_hex(&entry.prev) != Some(prev) {
            return fail(line_no, Some(next), "`prev` does not match the previous entry's chain hash");
        }
        let (computed, _, leaf) = entry.hashes().map_err(|e| VerifyError {
            line: line_no,
            index: Some(next),
            problem: e.to_string(),
        })?;
        if Hash::from_hex(&entry.chain_hash) != Some(computed) {
            return fail(line_no, Some(next), "the chain hash does not match the entry's contents");
        }
        frontier.push(leaf);
        if keep_leaves {
            leaves.push(leaf);
        }
        prev = computed;
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
