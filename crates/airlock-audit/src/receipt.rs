//! Receipts: a signed statement that an action was executed, with what outcome, and where
//! it stands in the audit log.
//!
//! The signature is Ed25519 over the RFC 8785 canonical JSON of the receipt without its
//! `signature` member, under the tenant's key; an auditor verifies one offline with the
//! tenant's verifier key alone.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::note::{NoteSigner, NoteVerifier};

/// The checkpoint a receipt's log entry is included in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptCheckpoint {
    /// The log's origin.
    pub origin: String,
    /// The checkpoint's tree size (greater than the receipt's log index).
    pub size: u64,
    /// The checkpoint's root, base64.
    pub root: String,
}

/// A signed receipt for an executed action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Receipt format version (1).
    pub version: u32,
    /// The action.
    pub action_id: String,
    /// The run the action belongs to.
    pub run_id: String,
    /// The tool executed.
    pub tool: String,
    /// SHA-256 of the canonical arguments, hex.
    pub arguments_digest: String,
    /// SHA-256 of the canonical outcome, hex.
    pub outcome_digest: String,
    /// `succeeded`, `unverified` or `failed`.
    pub status: String,
    /// When the action completed.
    pub time: String,
    /// The index of the action's audit entry.
    pub log_index: u64,
    /// The checkpoint that includes that entry.
    pub checkpoint: ReceiptCheckpoint,
    /// The signing key, as `<name>+<hex key id>`.
    pub key: String,
    /// base64 Ed25519 signature; absent while unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// A receipt that cannot be signed or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The receipt has no canonical form.
    #[error("the receipt cannot be canonicalised: {0}")]
    Canonical(String),
    /// No signature.
    #[error("the receipt is not signed")]
    Unsigned,
    /// The receipt names a key the verifier does not hold.
    #[error("the receipt was signed by `{0}`, which is not a given key")]
    UnknownKey(String),
    /// The signature does not match the receipt.
    #[error("the receipt's signature does not verify: it was altered or forged")]
    BadSignature,
    /// The receipt contradicts itself.
    #[error("inconsistent receipt: {0}")]
    Inconsistent(&'static str),
}

impl Receipt {
    fn signed_bytes(&self) -> Result<String, ReceiptError> {
        let mut unsigned = self.clone();
        unsigned.signature = None;
        let value = serde_json::to_value(&unsigned).map_err(|e| ReceiptError::Canonical(e.to_string()))?;
        canonical::to_canonical(&value).map_err(|e| ReceiptError::Canonical(e.to_string()))
    }

    /// Signs the receipt (setting `key` and `signature`).
    pub fn sign(mut self, signer: &NoteSigner) -> Result<Self, ReceiptError> {
        let verifier = signer.verifier();
        self.key = format!("{}+{}", verifier.name(), verifier.key_id_hex());
        self.signature = None;
        let bytes = self.signed_bytes()?;
        self.signature = Some(STANDARD.encode(signer.sign_raw(bytes.as_bytes())));
        Ok(self)
    }

    /// Verifies the signature with one of `verifiers`, and that the receipt is coherent.
    pub fn verify(&self, verifiers: &[NoteVerifier]) -> Result<(), ReceiptError> {
        let signature = self.signature.as_deref().ok_or(ReceiptError::Unsigned)?;
        let signature = STANDARD.decode(signature).map_err(|_| ReceiptError::BadSignature)?;
        let verifier = verifiers
            .iter()
            .find(|v| format!("{}+{}", v.name(), v.key_id_hex()) == self.key)
            .ok_or_else(|| ReceiptError::UnknownKey(self.key.clone()))?;
        if !verifier.key().verify(self.signed_bytes()?.as_bytes(), &signature) {
            return Err(ReceiptError::BadSignature);
        }
        if self.log_index >= self.checkpoint.size {
            return Err(ReceiptError::Inconsistent("the log index is not covered by the checkpoint"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use airlock_crypto::SigningKey;

    use super::*;

    fn receipt() -> Receipt {
        Receipt {
            version: 1,
            action_id: "act_1".into(),
            run_id: "run_1".into(),
            tool: "send_email".into(),
            arguments_digest: "aa".repeat(32),
            outcome_digest: "bb".repeat(32),
            status: "succeeded".into(),
            time: "2026-11-22T10:00:00.000Z".into(),
            log_index: 41,
            checkpoint: ReceiptCheckpoint { origin: "airlock/ten_x".into(), size: 42, root: "r".into() },
            key: String::new(),
            signature: None,
        }
    }

    #[test]
    fn a_signed_receipt_verifies_and_any_change_breaks_it() {
        let signer = NoteSigner::new("airlock/ten_x", SigningKey::generate()).unwrap();
        let signed = receipt().sign(&signer).unwrap();
        let verifiers = [signer.verifier()];
        signed.verify(&verifiers).unwrap();
        let json = serde_json::to_string(&signed).unwrap();
        let back: Receipt = serde_json::from_str(&json).unwrap();
        back.verify(&verifiers).unwrap();

        let mut changed = signed.clone();
        changed.status = "failed".into();
        assert_eq!(changed.verify(&verifiers), Err(ReceiptError::BadSignature));
        let mut changed = signed.clone();
        changed.checkpoint.size = 43;
        assert_eq!(changed.verify(&verifiers), Err(ReceiptError::BadSignature));
        let mut changed = signed.clone();
        changed.signature = None;
        assert_eq!(changed.verify(&verifiers), Err(ReceiptError::Unsigned));

        let other = NoteSigner::new("airlock/ten_x", SigningKey::generate()).unwrap();
        assert!(matches!(signed.verify(&[other.verifier()]), Err(ReceiptError::UnknownKey(_))));
        let forged = receipt().sign(&other).unwrap();
        assert!(forged.verify(&verifiers).is_err());
    }
}
