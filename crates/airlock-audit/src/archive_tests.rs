use std::collections::BTreeMap;
use std::io::Cursor;

use airlock_crypto::SigningKey;
use serde_json::{Map, Value, json};
use zip::write::SimpleFileOptions;

use super::*;
use crate::checkpoint::Checkpoint;
use crate::entry::{Actor, ChainHead, Event};
use crate::export::{CheckpointLine, ExportHeader};
use crate::merkle::Frontier;

const TENANT: &str = "ten_0123456789abcdef";
const ORIGIN: &str = "airlock/ten_0123456789abcdef";

fn signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, SigningKey::from_seed(&secrecy::SecretBox::new(Box::new([9u8; 32])))).unwrap()
}

fn info() -> ArchiveInfo {
    ArchiveInfo {
        tenant: TENANT.into(),
        origin: ORIGIN.into(),
        created_at_ms: 1_795_341_600_000, // 2026-11-22T10:00:00Z
        airlock_version: "0.1.0".into(),
    }
}

/// A real signed audit export of `n` entries of `origin`, with a checkpoint every 4 entries.
fn audit_export(n: u64, origin: &str) -> Vec<String> {
    let signer = signer();
    let mut head = ChainHead::EMPTY;
    let mut frontier = Frontier::new();
    let mut lines = Vec::new();
    for i in 0..n {
        let mut metadata = Map::new();
        metadata.insert("n".into(), Value::from(i));
        let sealed = head
            .seal(Event {
                time: format!("2026-11-22T10:00:{:02}.000Z", i % 60),
                event_type: "key.created".into(),
                actor: Actor { kind: "user".into(), id: format!("usr_{i:032x}") },
                subject: BTreeMap::from([("key".to_owned(), format!("key_{i}"))]),
                metadata,
            })
            .unwrap();
        frontier.push(sealed.leaf_hash);
        lines.push(sealed.canonical);
        if (i + 1) % 4 == 0 {
            let note = Checkpoint { origin: origin.into(), size: i + 1, root: frontier.root() }
                .sign(&signer)
                .unwrap();
            lines.push(serde_json::to_string(&CheckpointLine { checkpoint: note }).unwrap());
        }
    }
    let last = Checkpoint { origin: origin.into(), size: n, root: frontier.root() }.sign(&signer).unwrap();
    let header = ExportHeader { airlock_audit_export: 1, origin: origin.into(), checkpoint: last };
    lines.insert(0, serde_json::to_string(&header).unwrap());
    lines
}

fn users() -> Vec<Value> {
    (0..3)
        .map(|i| json!({"id": format!("usr_{i}"), "email": format!("u{i}@example.com"), "note": "a\nb"}))
        .collect()
}

/// Writes the standard test archive into `out`: two tables (one empty), the audit log and
/// its keys file, with `audit` as the audit log's lines.
fn write_archive<W: Write>(out: W, audit: &[String]) -> W {
    let mut archive = ArchiveWriter::new(out, info()).unwrap();
    archive.start_table("users").unwrap();
    for row in users() {
        archive.write_row(&row).unwrap();
    }
    archive.start_table("runs").unwrap();
    archive.start_file(AUDIT_LOG).unwrap();
    for line in audit {
        archive.write_line(line).unwrap();
    }
    archive.add_file("audit/keys.json", signer().verifier().to_string().as_bytes()).unwrap();
    archive.finish(&signer()).unwrap()
}

fn archive() -> Vec<u8> {
    write_archive(Vec::new(), &audit_export(10, ORIGIN))
}

fn verify(bytes: &[u8]) -> Result<ArchiveSummary, ArchiveError> {
    verify_archive(Cursor::new(bytes), &[signer().verifier()])
}

fn entry(bytes: &[u8], name: &str) -> Vec<u8> {
    let mut zip = ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut contents = Vec::new();
    zip.by_name(name).unwrap().read_to_end(&mut contents).unwrap();
    contents
}

/// Copies an archive entry by entry (stored, so tests stay fast), letting `edit` replace or
/// drop each entry's contents, then appends `extra`.
fn rebuild(
    bytes: &[u8],
    mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>,
    extra: &[(&str, Vec<u8>)],
) -> Vec<u8> {
    let mut zip = ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut out = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).unwrap();
        let name = file.name().unwrap().into_owned();
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).unwrap();
        if let Some(contents) = edit(&name, contents) {
            out.start_file(name, options).unwrap();
            out.write_all(&contents).unwrap();
        }
    }
    for (name, contents) in extra {
        out.start_file(*name, options).unwrap();
        out.write_all(contents).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// Replaces the manifest with `manifest`, signed properly by the tenant's key: what an
/// insider holding the key could do, to reach the checks behind the signature.
fn resign(bytes: &[u8], manifest: &[u8]) -> Vec<u8> {
    let note = signer().sign(&note_text(TENANT, &airlock_crypto::sha256(manifest).to_hex())).unwrap();
    rebuild(
        bytes,
        |name, contents| match name {
            MANIFEST => Some(manifest.to_vec()),
            SIGNATURE => Some(note.clone().into_bytes()),
            _ => Some(contents),
        },
        &[],
    )
}

fn manifest_of(bytes: &[u8]) -> Manifest {
    serde_json::from_slice(&entry(bytes, MANIFEST)).unwrap()
}

#[test]
fn an_archive_round_trips_in_memory() {
    let bytes = archive();
    let summary = verify(&bytes).unwrap();
    let names: Vec<&str> = summary.manifest.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["tables/users.jsonl", "tables/runs.jsonl", AUDIT_LOG, "audit/keys.json"]);
    let users_entry = &summary.manifest.entries[0];
    assert_eq!(users_entry.rows, 3);
    assert_eq!(summary.manifest.entries[1].rows, 0);
    assert_eq!(summary.manifest.entries[2].rows, 1 + 10 + 2, "header, entries, checkpoints");
    assert_eq!(summary.manifest.tenant, TENANT);
    assert_eq!(summary.manifest.origin, ORIGIN);
    assert_eq!(summary.manifest.airlock_version, "0.1.0");
    assert_eq!(summary.signed_by, ORIGIN);
    let audit = summary.audit.clone().unwrap();
    assert_eq!((audit.entries, audit.checkpoints), (10, 3));
    assert!(summary.to_string().starts_with(&format!("ok: tenant `{TENANT}`, 4 entries")), "{summary}");

    // The rows are one compact JSON object per line, newlines in strings escaped.
    let users_jsonl = entry(&bytes, "tables/users.jsonl");
    let lines: Vec<Value> = users_jsonl
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines, users());
    assert_eq!(users_entry.bytes, users_jsonl.len() as u64);
    assert_eq!(users_entry.sha256, airlock_crypto::sha256(&users_jsonl).to_hex());
    // The audit log's lines are kept byte for byte.
    let expected: String = audit_export(10, ORIGIN).iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(entry(&bytes, AUDIT_LOG), expected.as_bytes());

    // Entries carry the export's time; the archive starts with a plain local header.
    let mut zip = ZipArchive::new(Cursor::new(&bytes)).unwrap();
    let time = zip.by_name("tables/users.jsonl").unwrap().last_modified().unwrap();
    assert_eq!((time.year(), time.month(), time.day(), time.hour(), time.minute()), (2026, 11, 22, 10, 0));
    assert_eq!(&bytes[..4], b"PK\x03\x04");
}

#[test]
fn an_archive_round_trips_through_a_file() {
    let file = write_archive(tempfile::tempfile().unwrap(), &audit_export(5, ORIGIN));
    let mut file = file;
    file.seek(io::SeekFrom::Start(0)).unwrap();
    let summary = verify_archive(&mut file, &[signer().verifier()]).unwrap();
    assert_eq!(summary.audit.unwrap().entries, 5);
    file.seek(io::SeekFrom::Start(0)).unwrap();
    let unverified = read_manifest(file).unwrap();
    assert_eq!(unverified.manifest, summary.manifest);
}

#[test]
fn an_archive_without_an_audit_log_verifies() {
    let mut archive = ArchiveWriter::new(Vec::new(), info()).unwrap();
    archive.start_table("settings").unwrap();
    archive.write_row(&json!({"k": "v"})).unwrap();
    let summary = verify(&archive.finish(&signer()).unwrap()).unwrap();
    assert_eq!(summary.audit, None);
    assert!(summary.to_string().ends_with("; no audit log"));
    let empty = ArchiveWriter::new(Vec::new(), info()).unwrap().finish(&signer()).unwrap();
    assert!(verify(&empty).unwrap().manifest.entries.is_empty());
}

#[test]
fn read_manifest_names_the_signing_key_without_verifying() {
    let unverified = read_manifest(Cursor::new(archive())).unwrap();
    let verifier = signer().verifier();
    assert_eq!(unverified.signed_by, [KeyHint { name: ORIGIN.into(), key_id: verifier.key_id_hex() }]);
    assert_eq!(unverified.signed_by[0].to_string(), format!("`{ORIGIN}` (key id {})", verifier.key_id_hex()));
    assert_eq!(unverified.manifest.entries.len(), 4);
}

#[test]
fn streamed_bytes_can_be_drained_after_every_row_and_stay_small() {
    const ROWS: u64 = 50_000;
    let output = SharedBuffer::default();
    let mut archive = ArchiveWriter::new(output.clone(), info()).unwrap();
    let mut all = output.take();
    let mut largest = 0;
    archive.start_table("events").unwrap();
    assert_eq!(archive.current_entry(), Some("tables/events.jsonl"));
    for i in 0..ROWS {
        // Varied enough that the output is not one long back-reference.
        let kind = ["a", "b", "c"][(i % 3) as usize];
        archive
            .write_row(&json!({"id": i, "kind": kind, "h": i.wrapping_mul(2_654_435_761) % 1_000_003}))
            .unwrap();
        let chunk = output.take();
        largest = largest.max(chunk.len());
        all.extend_from_slice(&chunk);
    }
    assert_eq!(archive.rows_written(), ROWS);
    let uncompressed = archive.bytes_written();
    archive.finish(&signer()).unwrap();
    all.extend_from_slice(&output.take());
    assert!(output.is_empty());
    // Bounded by the compressor's 32 KiB output buffer, not by what was written.
    assert!(largest <= 64 * 1024, "a drain held {largest} bytes");
    assert!(all.len() > 4 * largest, "{} bytes in all, {largest} at most per row", all.len());
    let summary = verify(&all).unwrap();
    assert_eq!(summary.manifest.entries[0].rows, ROWS);
    assert_eq!(summary.manifest.entries[0].bytes, uncompressed);
}

#[test]
fn the_writer_is_send_so_it_can_live_across_awaits() {
    fn assert_send<T: Send>() {}
    assert_send::<ArchiveWriter<SharedBuffer>>();
}

#[test]
fn a_changed_byte_in_a_table_is_reported_at_that_entry() {
    let tampered = rebuild(
        &archive(),
        |name, mut contents| {
            if name == "tables/users.jsonl" {
                contents[10] ^= 1;
            }
            Some(contents)
        },
        &[],
    );
    assert!(
        matches!(verify(&tampered), Err(ArchiveError::EntryDigest(name)) if name == "tables/users.jsonl")
    );
}

#[test]
fn a_corrupted_compressed_stream_is_reported_at_that_entry() {
    let mut bytes = archive();
    // The first entry's data follows its 30-byte local header, name and extra field.
    let name_len = usize::from(u16::from_le_bytes([bytes[26], bytes[27]]));
    let extra_len = usize::from(u16::from_le_bytes([bytes[28], bytes[29]]));
    bytes[30 + name_len + extra_len + 8] ^= 0x55;
    let err = verify(&bytes).unwrap_err();
    let named = match &err {
        ArchiveError::Read { name, .. }
        | ArchiveError::EntryDigest(name)
        | ArchiveError::EntryRows { name, .. }
        | ArchiveError::EntrySize { name, .. }
        | ArchiveError::EntryTooLarge { name, .. } => name.as_str(),
        _ => "",
    };
    assert_eq!(named, "tables/users.jsonl", "{err}");
}

#[test]
fn a_dropped_row_is_reported_with_the_counts() {
    let tampered = rebuild(
        &archive(),
        |name, contents| {
            if name != "tables/users.jsonl" {
                return Some(contents);
            }
            let first_newline = contents.iter().position(|&b| b == b'\n').unwrap();
            Some(contents[first_newline + 1..].to_vec())
        },
        &[],
    );
    let err = verify(&tampered).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::EntryRows { name, found: 2, listed: 3 } if name == "tables/users.jsonl"),
        "{err}"
    );
    assert_eq!(err.to_string(), "entry `tables/users.jsonl` holds 2 lines, the manifest lists 3");
}

#[test]
fn an_unlisted_or_missing_entry_is_refused() {
    let added = rebuild(&archive(), |_, c| Some(c), &[("tables/secrets.jsonl", b"{}\n".to_vec())]);
    assert!(
        matches!(verify(&added), Err(ArchiveError::UnlistedEntry(name)) if name == "tables/secrets.jsonl")
    );
    let removed = rebuild(&archive(), |name, c| (name != "tables/runs.jsonl").then_some(c), &[]);
    assert!(matches!(verify(&removed), Err(ArchiveError::MissingEntry(name)) if name == "tables/runs.jsonl"));
    let unsigned = rebuild(&archive(), |name, c| (name != SIGNATURE).then_some(c), &[]);
    assert!(matches!(verify(&unsigned), Err(ArchiveError::MissingControlEntry(SIGNATURE))));
}

#[test]
fn a_swapped_manifest_is_refused() {
    // Another genuine manifest of the same tenant under this archive's signature.
    let other = write_archive(Vec::new(), &audit_export(3, ORIGIN));
    let other_manifest = entry(&other, MANIFEST);
    let swapped =
        rebuild(&archive(), |name, c| Some(if name == MANIFEST { other_manifest.clone() } else { c }), &[]);
    assert!(matches!(verify(&swapped), Err(ArchiveError::ManifestNotSigned(_))));
    // The other archive's manifest with its own signature: signed, but not of these entries.
    let other_signature = entry(&other, SIGNATURE);
    let both = rebuild(
        &archive(),
        |name, c| match name {
            MANIFEST => Some(other_manifest.clone()),
            SIGNATURE => Some(other_signature.clone()),
            _ => Some(c),
        },
        &[],
    );
    let err = verify(&both).unwrap_err();
    // The other archive's log is shorter: this one's is refused unread past its listed length.
    assert!(matches!(&err, ArchiveError::EntryTooLarge { name, .. } if name == AUDIT_LOG), "{err}");
}

#[test]
fn the_wrong_key_is_refused() {
    let stranger = NoteSigner::new(ORIGIN, SigningKey::generate()).unwrap();
    let err = verify_archive(Cursor::new(archive()), &[stranger.verifier()]).unwrap_err();
    assert!(matches!(err, ArchiveError::Signature(NoteError::NoKnownSignature)), "{err}");
    assert!(matches!(verify_archive(Cursor::new(archive()), &[]), Err(ArchiveError::Signature(_))));
}

/// Replaces the name `from` with `to` (of the same length) in the first `count` places it
/// occurs: local header first, central directory after.
fn rename_raw(bytes: &[u8], from: &str, to: &str, count: usize) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut done = 0;
    let mut at = 0;
    while done < count {
        let found = out[at..].windows(from.len()).position(|w| w == from.as_bytes()).unwrap() + at;
        out[found..found + to.len()].copy_from_slice(to.as_bytes());
        at = found + to.len();
        done += 1;
    }
    out
}

#[test]
fn an_entry_name_stored_twice_is_refused() {
    // Readers disagree on which copy of a duplicated name they show, so none is accepted.
    let duplicated = rename_raw(&archive(), "audit/keys.json", "audit/log.jsonl", 2);
    let err = verify(&duplicated).unwrap_err();
    assert!(matches!(err, ArchiveError::NotAZip(_)) && err.to_string().contains("appears twice"), "{err}");
}

#[test]
fn a_local_header_that_disagrees_with_the_directory_is_refused() {
    // A reader that walks local headers (a streaming unzip) would see another name here.
    let renamed = rename_raw(&archive(), "tables/users.jsonl", "tables/usurp.jsonl", 1);
    let err = verify(&renamed).unwrap_err();
    assert!(matches!(&err, ArchiveError::Read { name, .. } if name == "tables/users.jsonl"), "{err}");
}

#[test]
fn a_truncated_archive_is_refused() {
    let bytes = archive();
    for keep in [0, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = verify(&bytes[..keep]).unwrap_err();
        assert!(matches!(err, ArchiveError::NotAZip(_)), "{keep}: {err}");
    }
    let mut prefixed = b"junk".to_vec();
    prefixed.extend_from_slice(&bytes);
    assert!(matches!(verify(&prefixed), Err(ArchiveError::NotAZip(_))));
}

#[test]
fn an_entry_larger_than_listed_is_refused_before_reading_it() {
    let grown = rebuild(
        &archive(),
        |name, c| Some(if name == "tables/runs.jsonl" { vec![b'x'; 1 << 20] } else { c }),
        &[],
    );
    let err = verify(&grown).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::EntryTooLarge { name, listed: 0 } if name == "tables/runs.jsonl"),
        "{err}"
    );

    // Whatever the central directory claims, the reader stops at the listed length.
    let mut measured = Measured::new(&[b'\n'; 100][..], 10);
    assert!(io::copy(&mut measured, &mut io::sink()).is_err());
    assert!(measured.over);
    assert!(measured.bytes <= 10);
}

#[test]
fn oversized_or_overfull_archives_are_refused() {
    let big = rebuild(
        &archive(),
        |name, c| Some(if name == MANIFEST { vec![b' '; 16 * 1024 * 1024 + 1] } else { c }),
        &[],
    );
    let err = read_manifest(Cursor::new(big)).unwrap_err();
    assert!(matches!(err, ArchiveError::ControlEntryTooLarge { name: MANIFEST, .. }), "{err}");

    let extra: Vec<(String, Vec<u8>)> = (0..MAX_ENTRIES).map(|i| (format!("x/{i}"), Vec::new())).collect();
    let extra: Vec<(&str, Vec<u8>)> = extra.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let crowded = rebuild(&archive(), |_, c| Some(c), &extra);
    assert!(matches!(verify(&crowded), Err(ArchiveError::TooManyEntries)));

    let mut archive = ArchiveWriter::new(io::sink(), info()).unwrap();
    let mut refused = None;
    for i in 0..MAX_ENTRIES {
        if let Err(e) = archive.add_file(&format!("f/{i}"), b"") {
            refused = Some((i, e));
            break;
        }
    }
    let (at, err) = refused.unwrap();
    assert_eq!(at, MAX_ENTRIES - 2, "room is left for the manifest and its signature");
    assert!(matches!(err, ArchiveError::TooManyEntries));
}

#[test]
fn checks_behind_the_signature_hold_even_for_a_key_holder() {
    // An altered audit log under a freshly signed manifest: the log's own signed checkpoints
    // still catch it, at the entry.
    let mut audit = audit_export(10, ORIGIN);
    audit[3] = audit[3].replacen("key_2", "key_X", 1);
    let err = verify(&write_archive(Vec::new(), &audit)).unwrap_err();
    assert!(matches!(&err, ArchiveError::AuditLog(e) if e.index == Some(2)), "{err}");

    // An audit log of another tenant's log.
    let err = verify(&write_archive(Vec::new(), &audit_export(4, "airlock/ten_other"))).unwrap_err();
    assert!(matches!(&err, ArchiveError::AuditOrigin { found, .. } if found == "airlock/ten_other"), "{err}");

    let bytes = archive();
    let mut manifest = manifest_of(&bytes);
    manifest.airlock_tenant_export = 2;
    let err = verify(&resign(&bytes, &serde_json::to_vec(&manifest).unwrap())).unwrap_err();
    assert!(matches!(err, ArchiveError::UnsupportedVersion(2)));

    let mut manifest = manifest_of(&bytes);
    manifest.entries[1].name = "../../etc/passwd".into();
    let err = verify(&resign(&bytes, &serde_json::to_vec(&manifest).unwrap())).unwrap_err();
    assert!(matches!(err, ArchiveError::ManifestMalformed(_)), "{err}");

    let mut manifest = manifest_of(&bytes);
    manifest.entries.push(manifest.entries[0].clone());
    let err = verify(&resign(&bytes, &serde_json::to_vec(&manifest).unwrap())).unwrap_err();
    assert!(matches!(err, ArchiveError::ManifestMalformed(_)), "{err}");

    let mut manifest = manifest_of(&bytes);
    manifest.tenant = "ten_other".into();
    let err = verify(&resign(&bytes, &serde_json::to_vec(&manifest).unwrap())).unwrap_err();
    assert!(matches!(err, ArchiveError::ManifestNotSigned(_)), "{err}");
}

#[test]
fn names_and_info_are_validated() {
    let mut archive = ArchiveWriter::new(Vec::new(), info()).unwrap();
    assert!(matches!(archive.write_row(&json!({})), Err(ArchiveError::NoEntryOpen)));
    for bad in ["", "Users", "a-b", "a/b", "../x", "a.b", "é", &"x".repeat(129)] {
        assert!(matches!(archive.start_table(bad), Err(ArchiveError::InvalidName { .. })), "{bad:?}");
    }
    for bad in ["", "/abs", "a//b", "../x", "a/./b", "a/", "A.txt", "a b", MANIFEST, SIGNATURE, "a\\b"] {
        assert!(matches!(archive.start_file(bad), Err(ArchiveError::InvalidName { .. })), "{bad:?}");
        assert!(matches!(archive.add_file(bad, b""), Err(ArchiveError::InvalidName { .. })), "{bad:?}");
    }
    archive.start_table("users_2").unwrap();
    assert!(matches!(archive.write_line("a\nb"), Err(ArchiveError::LineWithNewline(_))));
    assert!(matches!(archive.start_table("users_2"), Err(ArchiveError::DuplicateEntry(_))));
    assert!(matches!(archive.start_file("tables/users_2.jsonl"), Err(ArchiveError::DuplicateEntry(_))));
    archive.start_file("notes/read-me.v1.txt").unwrap();
    assert!(verify(&archive.finish(&signer()).unwrap()).is_ok());

    for (tenant, origin) in [("", ORIGIN), ("ten\nx", ORIGIN), (TENANT, ""), (TENANT, "a\u{7}")] {
        let info = ArchiveInfo { tenant: tenant.into(), origin: origin.into(), ..info() };
        assert!(matches!(ArchiveWriter::new(Vec::new(), info), Err(ArchiveError::InvalidInfo(_))));
    }
}

#[test]
fn dates_convert_to_zip_times() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(20_779), (2026, 11, 22));
    let t = zip_time(1_795_341_600_000 + 3_723_000);
    assert_eq!((t.year(), t.month(), t.day(), t.hour(), t.minute(), t.second()), (2026, 11, 22, 11, 2, 2));
    // Outside what ZIP can record: the ZIP epoch.
    assert_eq!(zip_time(0), zip::DateTime::default());
    assert_eq!(zip_time(i64::MIN), zip::DateTime::default());
    assert_eq!(zip_time(i64::MAX), zip::DateTime::default());
}
