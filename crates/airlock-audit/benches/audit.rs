//! Verification and proof speed of the audit log (report, do not assert).
//!
//! `cargo bench -p airlock-audit --bench audit`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs,
    reason = "benchmark"
)]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use airlock_audit::archive::{ArchiveInfo, ArchiveWriter};
use airlock_audit::export::{CheckpointLine, ExportHeader};
use airlock_audit::merkle::{self, Frontier};
use airlock_audit::{Actor, ChainHead, Checkpoint, Event, Hash, NoteSigner, NoteVerifier, verify_export};
use airlock_crypto::SigningKey;
use divan::counter::{BytesCount, ItemsCount};
use serde_json::{Map, Value, json};

fn main() {
    divan::main();
}

const ENTRIES: u64 = 100_000;

/// A realistic entry: a key created by a user, with a few metadata fields.
fn event(i: u64) -> Event {
    let mut metadata = Map::new();
    metadata.insert("owner_kind".into(), Value::from("agent"));
    metadata.insert("expires_at".into(), Value::Null);
    Event {
        time: "2026-11-22T10:00:00.000Z".into(),
        event_type: "key.created".into(),
        actor: Actor { kind: "user".into(), id: format!("usr_{i:032x}") },
        subject: BTreeMap::from([
            ("key".to_owned(), format!("key_{i:032x}")),
            ("owner".to_owned(), format!("agt_{i:032x}")),
        ]),
        metadata,
    }
}

struct Fixture {
    export: String,
    verifiers: Vec<NoteVerifier>,
    leaves: Vec<Hash>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let signer = NoteSigner::new("airlock/bench", SigningKey::generate()).unwrap();
    let mut head = ChainHead::EMPTY;
    let mut frontier = Frontier::new();
    let mut body = String::new();
    let mut leaves = Vec::new();
    for i in 0..ENTRIES {
        let sealed = head.seal(event(i)).unwrap();
        frontier.push(sealed.leaf_hash);
        leaves.push(sealed.leaf_hash);
        body.push_str(&sealed.canonical);
        body.push('\n');
        if (i + 1) % 1000 == 0 {
            let note = Checkpoint { origin: "airlock/bench".into(), size: i + 1, root: frontier.root() }
                .sign(&signer)
                .unwrap();
            body.push_str(&serde_json::to_string(&CheckpointLine { checkpoint: note }).unwrap());
            body.push('\n');
        }
    }
    let last = Checkpoint { origin: "airlock/bench".into(), size: ENTRIES, root: frontier.root() }
        .sign(&signer)
        .unwrap();
    let header = ExportHeader { airlock_audit_export: 1, origin: "airlock/bench".into(), checkpoint: last };
    let export = format!("{}\n{body}", serde_json::to_string(&header).unwrap());
    Fixture { export, verifiers: vec![signer.verifier()], leaves }
});

/// Offline verification of a 100,000-entry export (chain, leaves, 101 checkpoints).
#[divan::bench(sample_count = 10)]
fn verify_export_100k(bencher: divan::Bencher) {
    let fixture = &*FIXTURE;
    bencher
        .counter(ItemsCount::new(ENTRIES))
        .counter(BytesCount::new(fixture.export.len()))
        .bench(|| verify_export(fixture.export.as_bytes(), &fixture.verifiers, None).unwrap());
}

/// Sealing one entry onto the chain (canonical form, chain hash, leaf hash).
#[divan::bench]
fn seal_entry(bencher: divan::Bencher) {
    let mut head = ChainHead::EMPTY;
    bencher.counter(ItemsCount::new(1u64)).bench_local(|| head.seal(event(7)).unwrap());
}

/// Generating an inclusion proof from the 100,000 leaf hashes.
#[divan::bench(sample_count = 20)]
fn inclusion_proof_generate_100k(bencher: divan::Bencher) {
    let leaves = &FIXTURE.leaves;
    bencher.bench(|| merkle::inclusion_proof(leaves, 61_234).unwrap());
}

/// Verifying an inclusion proof in a tree of 100,000 entries.
#[divan::bench]
fn inclusion_proof_verify_100k(bencher: divan::Bencher) {
    let leaves = &FIXTURE.leaves;
    let root = merkle::root(leaves);
    let proof = merkle::inclusion_proof(leaves, 61_234).unwrap();
    bencher.bench(|| merkle::verify_inclusion(&leaves[61_234], 61_234, ENTRIES, &proof, &root).unwrap());
}

/// Verifying a consistency proof between trees of 60,000 and 100,000 entries.
#[divan::bench]
fn consistency_proof_verify_100k(bencher: divan::Bencher) {
    let leaves = &FIXTURE.leaves;
    let (old, new) = (merkle::root(&leaves[..60_000]), merkle::root(leaves));
    let proof = merkle::consistency_proof(leaves, 60_000).unwrap();
    bencher.bench(|| merkle::verify_consistency(60_000, ENTRIES, &old, &new, &proof).unwrap());
}

const EXPORT_ROWS: u64 = 20_000;

/// A table row of about 300 bytes as JSON: a run record with ids, status, counts and times.
fn run_row(i: u64) -> Value {
    let tool = ["github.create_issue", "slack.post_message", "jira.search", "fs.read_file"][(i % 4) as usize];
    json!({
        "id": format!("run_{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "agent_id": format!("agt_{:032x}", i % 37),
        "tool": tool,
        "status": if i.is_multiple_of(11) { "denied" } else { "succeeded" },
        "decision_reason": format!("policy pol_{:08x} matched", i % 13),
        "input_tokens": (i * 7919) % 4096,
        "output_tokens": (i * 104_729) % 2048,
        "duration_ms": (i * 31) % 5000,
        "created_at": format!("2026-11-22T10:{:02}:{:02}.{:03}Z", (i / 60) % 60, i % 60, (i * 7) % 1000),
    })
}

/// Writing a tenant export archive: 20,000 rows of about 300 bytes each, serialised, hashed
/// and deflated, then the signed manifest (bytes counted: the JSON Lines written).
#[divan::bench(sample_count = 10)]
fn export(bencher: divan::Bencher) {
    let rows: Vec<Value> = (0..EXPORT_ROWS).map(run_row).collect();
    let bytes: usize = rows.iter().map(|r| serde_json::to_vec(r).unwrap().len() + 1).sum();
    let signer = NoteSigner::new("airlock/bench", SigningKey::generate()).unwrap();
    let info = ArchiveInfo {
        tenant: "ten_bench".into(),
        origin: "airlock/bench".into(),
        created_at_ms: 1_795_341_600_000,
        airlock_version: "bench".into(),
    };
    bencher.counter(BytesCount::new(bytes)).counter(ItemsCount::new(EXPORT_ROWS)).bench(|| {
        let mut archive = ArchiveWriter::new(std::io::sink(), info.clone()).unwrap();
        archive.start_table("runs").unwrap();
        for row in &rows {
            archive.write_row(row).unwrap();
        }
        archive.finish(&signer).unwrap()
    });
}
