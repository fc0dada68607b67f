//! Audit entries and the hash chain.
//!
//! An entry is `{index, time, type, actor, subject, metadata, prev, chain_hash}`. Its
//! canonical form is RFC 8785 JSON. `chain_hash = SHA-256(canonical entry without
//! chain_hash ‖ prev)`, where `prev` is the previous entry's chain hash (32 zero bytes for
//! the first). The Merkle leaf is `SHA-256(0x00 ‖ canonical entry with chain_hash)`: the
//! exact bytes stored and exported.
//!
//! Metadata holds counts, identifiers and decisions, never secrets or prompt and document
//! content; callers build it from typed events, and floating-point values are refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{self, CanonicalError};
use crate::{Hash, merkle};

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// `user`, `agent`, `operator`, `system` or `anonymous`.
    pub kind: String,
    /// The actor's id (`usr_…`, `agt_…`), or a description for `system` and `anonymous`.
    pub id: String,
}

/// An event to be appended, before it has a place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// What happened, dotted: `user.created`, `auth.login_failed`, `key.revoked`.
    pub event_type: String,
    /// Who did it.
    pub actor: Actor,
    /// The ids it concerns, by role: `{"user": "usr_…", "key": "key_…"}`.
    pub subject: BTreeMap<String, String>,
    /// Counts, decisions and reasons; never secrets or content.
    pub metadata: Map<String, Value>,
}

/// An entry as it stands in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the log, from 0.
    pub index: u64,
    /// When it happened.
    pub time: String,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Who did it.
    pub actor: Actor,
    /// The ids it concerns.
    pub subject: BTreeMap<String, String>,
    /// Counts, decisions and reasons.
    pub metadata: Map<String, Value>,
    /// The previous entry's chain hash, hex.
    pub prev: String,
    /// This entry's chain hash, hex.
    pub chain_hash: String,
}

/// An entry with its canonical text and hashes, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEntry {
    /// The entry.
    pub entry: Entry,
    /// Its canonical JSON (the stored and exported form).
    pub canonical: String,
    /// Its chain hash.
    pub chain_hash: Hash,
    /// Its Merkle leaf hash.
    pub leaf_hash: Hash,
}

/// A field that cannot be put in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A value has no canonical form.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// `prev` or `chain_hash` is not 64 hex digits.
    #[error("`{0}` is not a hex SHA-256 hash")]
    BadHash(&'static str),
}

impl Entry {
    /// The canonical JSON with the `chain_hash` member, and the byte range of that member
    /// (with its leading comma) within it. Members are written in RFC 8785 order (`actor`,
    /// `chain_hash`, `index`, `metadata`, `prev`, `subject`, `time`, `type`) straight from
    /// the struct, in one pass, which keeps verification fast.
    fn canonical_with_span(&self) -> Result<(String, std::ops::Range<usize>), EntryError> {
        let mut out = String::with_capacity(320);
        out.push_str("{\"actor\":{\"id\":");
        canonical::write_string(&mut out, &self.actor.id);
        out.push_str(",\"kind\":");
        canonical::write_string(&mut out, &self.actor.kind);
        out.push('}');
        let span_start = out.len();
        out.push_str(",\"chain_hash\":");
        canonical::write_string(&mut out, &self.chain_hash);
        let span = span_start..out.len();
        out.push_str(",\"index\":");
        out.push_str(&self.index.to_string());
        out.push_str(",\"metadata\":");
        canonical::write_object(&mut out, self.metadata.iter())?;
        out.push_str(",\"prev\":");
        canonical::write_string(&mut out, &self.prev);
        out.push_str(",\"subject\":{");
        let mut subject: Vec<(&String, &String)> = self.subject.iter().collect();
        canonical::sort_members(&mut subject);
        for (i, (name, value)) in subject.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            canonical::write_string(&mut out, name);
            out.push(':');
            canonical::write_string(&mut out, value);
        }
        out.push_str("},\"time\":");
        canonical::write_string(&mut out, &self.time);
        out.push_str(",\"type\":");
        canonical::write_string(&mut out, &self.event_type);
        out.push('}');
        Ok((out, span))
    }

    /// The canonical JSON, with or without the `chain_hash` member.
    pub fn canonical(&self, with_chain_hash: bool) -> Result<String, EntryError> {
        let (mut text, span) = self.canonical_with_span()?;
        if !with_chain_hash {
            text.replace_range(span, "");
        }
        Ok(text)
    }

    /// The chain hash this entry's contents and `prev` imply.
    pub fn compute_chain_hash(&self) -> Result<Hash, EntryError> {
        Ok(self.hashes()?.0)
    }

    /// In one pass: the chain hash the contents and `prev` imply, the canonical text as the
    /// entry stands (with its stated chain hash), and that text's Merkle leaf hash.
    pub fn hashes(&self) -> Result<(Hash, String, Hash), EntryError> {
        let prev = Hash::from_hex(&self.prev).ok_or(EntryError::BadHash("prev"))?;
        let (text, span) = self.canonical_with_span()?;
        let bytes = text.as_bytes();
        let before = bytes.get(..span.start).unwrap_or_default();
        let after = bytes.get(span.end..).unwrap_or_default();
        let chain = Hash::of(&[before, after, &prev.0]);
        let leaf = merkle::leaf_hash(bytes);
        Ok((chain, text, leaf))
    }
}

/// Where the chain stands: the next index and the last chain hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// The index the next entry gets.
    pub next_index: u64,
    /// The last entry's chain hash ([`Hash::ZERO`] for an empty log).
    pub last_chain_hash: Hash,
}

impl ChainHead {
    /// The head of an empty log.
    pub const EMPTY: ChainHead = ChainHead { next_index: 0, last_chain_hash: Hash::ZERO };

    /// Places `event` at the head of the chain and advances the head.
    pub fn seal(&mut self, event: Event) -> Result<SealedEntry, EntryError> {
        let mut entry = Entry {
            index: self.next_index,
            time: event.time,
            event_type: event.event_type,
            actor: event.actor,
            subject: event.subject,
            metadata: event.metadata,
            prev: self.last_chain_hash.to_hex(),
            chain_hash: String::new(),
        };
        let (mut canonical, span) = entry.canonical_with_span()?;
        let bytes = canonical.as_bytes();
        let chain_hash = Hash::of(&[
            bytes.get(..span.start).unwrap_or_default(),
            bytes.get(span.end..).unwrap_or_default(),
            &self.last_chain_hash.0,
        ]);
        entry.chain_hash = chain_hash.to_hex();
        canonical.replace_range(span, &format!(",\"chain_hash\":\"{}\"", entry.chain_hash));
        let leaf_hash = merkle::leaf_hash(canonical.as_bytes());
        self.next_index += 1;
        self.last_chain_hash = chain_hash;
        Ok(SealedEntry { entry, canonical, chain_hash, leaf_hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event(n: u64) -> Event {
        let mut metadata = Map::new();
        metadata.insert("count".into(), Value::from(n));
        Event {
            time: "2026-11-22T10:00:00.000Z".into(),
            event_type: "key.created".into(),
            actor: Actor { kind: "user".into(), id: "usr_1".into() },
            subject: BTreeMap::from([("key".to_owned(), format!("key_{n}"))]),
            metadata,
        }
    }

    #[test]
    fn the_canonical_form_is_rfc8785() {
        let mut head = ChainHead::EMPTY;
        let sealed = head.seal(event(7)).unwrap();
        let value: Value = serde_json::from_str(&sealed.canonical).unwrap();
        assert_eq!(canonical::to_canonical(&value).unwrap(), sealed.canonical);
        assert!(
            sealed.canonical.starts_with("{\"actor\":{\"id\":\"usr_1\",\"kind\":\"user\"},\"chain_hash\":")
        );
        let parsed: Entry = serde_json::from_str(&sealed.canonical).unwrap();
        assert_eq!(parsed, sealed.entry);
        assert_eq!(parsed.compute_chain_hash().unwrap(), sealed.chain_hash);
    }

    #[test]
    fn each_entry_links_to_the_previous() {
        let mut head = ChainHead::EMPTY;
        let first = head.seal(event(1)).unwrap();
        let second = head.seal(event(2)).unwrap();
        assert_eq!(first.entry.prev, Hash::ZERO.to_hex());
        assert_eq!(second.entry.prev, first.entry.chain_hash);
        assert_eq!(second.entry.index, 1);
        assert_eq!(head.next_index, 2);
    }

    #[test]
    fn floats_in_metadata_have_a_canonical_form() {
        let mut e = event(1);
        e.metadata.insert("cost".into(), serde_json::json!(0.5));
        let mut head = ChainHead::EMPTY;
        let sealed = head.seal(e).unwrap();
        assert!(sealed.canonical.contains("\"cost\":0.5"));
        let parsed: Entry = serde_json::from_str(&sealed.canonical).unwrap();
        assert_eq!(parsed.compute_chain_hash().unwrap(), sealed.chain_hash);
    }
}
