//! Checkpoints (c2sp.org/tlog-checkpoint): a log's origin, size and root hash, as a signed
//! note.

use crate::Hash;
use crate::note::{NoteError, NoteSigner, NoteVerifier};

/// A log's state at one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, such as `airlock/ten_…`.
    pub origin: String,
    /// How many entries the log holds.
    pub size: u64,
    /// The RFC 6962 root over those entries.
    pub root: Hash,
}

/// A checkpoint that is malformed or not validly signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The signed note is malformed or does not verify.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The note text is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, each on its own line.
    #[must_use]
    pub fn to_text(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, self.root.to_base64())
    }

    /// Parses a checkpoint's note text (extension lines are accepted and ignored).
    pub fn parse_text(text: &str) -> Result<Self, CheckpointError> {
        let mut lines =
            text.strip_suffix('\n').ok_or(CheckpointError::Malformed("no final newline"))?.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or(CheckpointError::Malformed("no origin"))?;
        let size_text = lines.next().ok_or(CheckpointError::Malformed("no size"))?;
        let size_ok = size_text == "0"
            || (!size_text.starts_with('0') && size_text.bytes().all(|b| b.is_ascii_digit()));
        let size = size_text
            .parse::<u64>()
            .ok()
            .filter(|_| size_ok)
            .ok_or(CheckpointError::Malformed("bad size"))?;
        let root = lines
            .next()
            .and_then(Hash::from_base64)
            .ok_or(CheckpointError::Malformed("the root is not base64 of 32 bytes"))?;
        if lines.any(str::is_empty) {
            return Err(CheckpointError::Malformed("empty extension line"));
        }
        Ok(Self { origin: origin.to_owned(), size, root })
    }

    /// Signs the checkpoint.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        Ok(signer.sign(&self.to_text())?)
    }

    /// Verifies a signed checkpoint and parses it.
    pub fn verify(note: &str, verifiers: &[NoteVerifier]) -> Result<Self, CheckpointError> {
        let text = crate::note::verify(note, verifiers)?;
        Self::parse_text(text)
    }
}

#[cfg(test)]
mod tests {
    use airlock_crypto::SigningKey;

    use super::*;

    #[test]
    fn round_trips_through_a_signed_note() {
        let signer = NoteSigner::new("airlock/ten_x", SigningKey::generate()).unwrap();
        let checkpoint = Checkpoint { origin: "airlock/ten_x".into(), size: 42, root: Hash::of(&[b"r"]) };
        let note = checkpoint.sign(&signer).unwrap();
        assert!(note.starts_with("airlock/ten_x\n42\n"));
        assert_eq!(Checkpoint::verify(&note, &[signer.verifier()]).unwrap(), checkpoint);
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert!(Checkpoint::verify(&forged, &[signer.verifier()]).is_err());
    }

    #[test]
    fn malformed_texts_are_refused() {
        let root = Hash::ZERO.to_base64();
        for bad in [
            String::new(),
            "o\n1\n".into(),
            format!("o\n01\n{root}\n"),
            format!("\n1\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            "o\n1\nAAAA\n".into(),
            format!("o\n1\n{root}\n\n"),
        ] {
            assert!(Checkpoint::parse_text(&bad).is_err(), "{bad:?}");
        }
        assert!(Checkpoint::parse_text(&format!("o\n0\n{root}\next\n")).is_ok());
    }
}
