//! Signed notes (c2sp.org/signed-note) with Ed25519 signatures.
//!
//! A note is text ending in a newline, a blank line, and signature lines
//! `— <key name> base64(key id ‖ signature)`. The key id is
//! `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]`; a verifier key is written
//! `<name>+<hex key id>+base64(0x01 ‖ public key)`.

use airlock_crypto::{SigningKey, VerifyingKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::Hash;

const ED25519: u8 = 0x01;
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Most signature lines read from one note.
const MAX_SIGNATURES: usize = 64;

/// A note or verifier key that is malformed or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note is not of the signed-note form.
    #[error("malformed signed note: {0}")]
    Malformed(&'static str),
    /// A verifier key string is malformed.
    #[error("malformed verifier key: {0}")]
    MalformedKey(&'static str),
    /// No signature from a known key is present.
    #[error("the note has no signature from a known key")]
    NoKnownSignature,
    /// A signature from a known key failed to verify.
    #[error("the signature of `{0}` does not verify")]
    BadSignature(String),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let hash = Hash::of(&[name.as_bytes(), b"\n", &[ED25519], &public.to_bytes()]);
    let mut id = [0u8; 4];
    id.copy_from_slice(hash.0.get(..4).unwrap_or(&[0; 4]));
    id
}

/// A named Ed25519 key that signs notes.
#[derive(Debug)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

impl NoteSigner {
    /// A signer named `name` (no spaces or `+`).
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::MalformedKey("a key name must be non-empty, without spaces or `+`"));
        }
        let id = key_id(name, &key.verifying_key());
        Ok(Self { name: name.to_owned(), key, id })
    }

    /// The matching verifier.
    #[must_use]
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), id: self.id, key: self.key.verifying_key() }
    }

    /// A raw Ed25519 signature over `message` (for receipts, which are JSON, not notes).
    #[must_use]
    pub fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message)
    }

    /// Signs `text`, which must end in a newline and contain no control characters but
    /// newlines, and returns the signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let mut signature = self.id.to_vec();
        signature.extend_from_slice(&self.key.sign(text.as_bytes()));
        Ok(format!("{text}\n{SIGNATURE_PREFIX}{} {}\n", self.name, STANDARD.encode(signature)))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("the note text must end with a newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && u32::from(c) < 0x20) {
        return Err(NoteError::Malformed("the note contains a control character"));
    }
    Ok(())
}

/// A public key that verifies notes, with its name and key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key `<name>+<hex id>+<base64(0x01 ‖ key)>`, checking that the id
    /// matches the name and key.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey("expected `name+keyid+key`"));
        };
        if !valid_name(name) {
            return Err(NoteError::MalformedKey("bad key name"));
        }
        let mut id = [0u8; 4];
        hex::decode_to_slice(id_hex, &mut id)
            .map_err(|_| NoteError::MalformedKey("the key id is not 8 hex digits"))?;
        let bytes = STANDARD.decode(key_b64).map_err(|_| NoteError::MalformedKey("the key is not base64"))?;
        let (kind, public) = bytes.split_first().ok_or(NoteError::MalformedKey("empty key"))?;
        if *kind != ED25519 {
            return Err(NoteError::MalformedKey("not an Ed25519 key"));
        }
        let key = VerifyingKey::from_bytes(public)
            .ok_or(NoteError::MalformedKey("not a valid Ed25519 public key"))?;
        if key_id(name, &key) != id {
            return Err(NoteError::MalformedKey("the key id does not match the name and key"));
        }
        Ok(Self { name: name.to_owned(), id, key })
    }

    /// The key's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key.
    #[must_use]
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The key id as 8 hex digits.
    #[must_use]
    pub fn key_id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut material = vec![ED25519];
        material.extend_from_slice(&self.key.to_bytes());
        write!(f, "{}+{}+{}", self.name, hex::encode(self.id), STANDARD.encode(material))
    }
}

/// Verifies a signed note against `verifiers`, returning its text.
///
/// As c2sp.org/signed-note requires: signatures from unknown keys are ignored, a failing
/// signature from a known key rejects the note, and at least one known key must sign.
pub fn verify<'a>(note: &'a str, verifiers: &[NoteVerifier]) -> Result<&'a str, NoteError> {
    let split = note.rfind("\n\n").ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let text = note.get(..=split).ok_or(NoteError::Malformed("bad split"))?;
    let signatures = note.get(split + 2..).ok_or(NoteError::Malformed("bad split"))?;
    check_text(text)?;
    if !signatures.ends_with('\n') || signatures.len() <= 1 {
        return Err(NoteError::Malformed("the signature block must be non-empty and end with a newline"));
    }
    let mut verified = false;
    for (count, line) in signatures.lines().enumerate() {
        if count >= MAX_SIGNATURES {
            return Err(NoteError::Malformed("too many signatures"));
        }
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(NoteError::Malformed("a signature line must start with `— `"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(NoteError::Malformed("a signature line needs a name and a signature"))?;
        let bytes = STANDARD.decode(b64).map_err(|_| NoteError::Malformed("a signature is not base64"))?;
        if bytes.len() < 5 {
            return Err(NoteError::Malformed("a signature is too short"));
        }
        let (id, signature) = bytes.split_at(4);
        for verifier in verifiers.iter().filter(|v| v.name == name && v.id == id) {
            if !verifier.key.verify(text.as_bytes(), signature) {
                return Err(NoteError::BadSignature(name.to_owned()));
            }
            verified = true;
        }
    }
    if verified { Ok(text) } else { Err(NoteError::NoKnownSignature) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from c2sp.org/signed-note (§ Ed25519 signatures, "Example"), read from the
    /// specification in the shared test data.
    fn spec_example() -> (String, String) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testdata/merkle/c2sp/signed-note.md");
        let spec = std::fs::read_to_string(path).unwrap();
        let vkey = spec.lines().find(|l| l.trim().starts_with("example.com/foo+")).unwrap().trim().to_owned();
        let start = spec.find("This is an example message.").unwrap();
        let end = start + spec[start..].find("\n```").unwrap();
        (vkey, format!("{}\n", &spec[start..end]))
    }

    #[test]
    fn verifies_the_specifications_example() {
        let (vkey, note) = spec_example();
        let verifier = NoteVerifier::parse(&vkey).unwrap();
        assert_eq!(verifier.to_string(), vkey, "the verifier key round-trips");
        assert_eq!(verify(&note, std::slice::from_ref(&verifier)).unwrap(), "This is an example message.\n");
        let tampered = note.replacen("example message", "example massage", 1);
        assert_eq!(verify(&tampered, &[verifier]), Err(NoteError::BadSignature("example.com/foo".into())));
    }

    #[test]
    fn sign_then_verify_and_reject_the_unknown() {
        let signer = NoteSigner::new("airlock.test/log", SigningKey::generate()).unwrap();
        let note = signer.sign("hello\n").unwrap();
        assert_eq!(verify(&note, &[signer.verifier()]).unwrap(), "hello\n");
        let stranger = NoteSigner::new("airlock.test/log", SigningKey::generate()).unwrap();
        assert_eq!(verify(&note, &[stranger.verifier()]), Err(NoteError::NoKnownSignature));
        assert!(NoteVerifier::parse(&signer.verifier().to_string()).is_ok());
        // A verifier key whose id does not match its name is refused.
        let vkey = signer.verifier().to_string().replacen("airlock.test/log", "airlock.test/other", 1);
        assert!(NoteVerifier::parse(&vkey).is_err());
    }

    #[test]
    fn malformed_notes_are_refused() {
        let signer = NoteSigner::new("k", SigningKey::generate()).unwrap();
        assert!(signer.sign("no newline").is_err());
        assert!(signer.sign("bell \u{7}\n").is_err());
        let verifiers = [signer.verifier()];
        for bad in [
            "",
            "text\n",
            "text\n\n",
            "text\n\nnot a signature\n",
            "text\n\n\u{2014} k !!!\n",
            "text\n\n\u{2014} k AAAA\n",
        ] {
            assert!(verify(bad, &verifiers).is_err(), "{bad:?}");
        }
    }
}
