//! The tamper-evident audit log: entries and their hash chain, the RFC 6962 Merkle tree,
//! signed checkpoints (C2SP signed notes), receipts, proofs and offline verification.
//!
//! Pure logic with no I/O beyond reading an exported log, small enough to review in an
//! afternoon. Anyone holding a tenant's public key can verify, offline and without trusting
//! Airlock, a whole exported log, one entry with its inclusion proof, two checkpoints with a
//! consistency proof, or one receipt.

pub mod archive;
pub mod canonical;
pub mod checkpoint;
pub mod entry;
pub mod export;
mod hash;
pub mod merkle;
pub mod note;
pub mod receipt;

pub use archive::{
    ArchiveError, ArchiveInfo, ArchiveSummary, ArchiveWriter, Manifest, SharedBuffer, read_manifest,
    verify_archive,
};
pub use checkpoint::{Checkpoint, CheckpointError};
pub use entry::{Actor, ChainHead, Entry, Event, SealedEntry};
pub use export::{Summary, VerifyError, verify_export};
pub use hash::Hash;
pub use note::{NoteError, NoteSigner, NoteVerifier};
pub use receipt::{Receipt, ReceiptCheckpoint, ReceiptError};
