//! The tamper-evident audit log: entries and their hash chain, the RFC 6962 Merkle tree,
//! signed checkpoints (C2SP signed notes), receipts, proofs and offline verification.
//!
//! Pure logic with no I/O beyond reading an exported log, small enough to review in an
//! afternoon. Anyone holding a tenant's public key can verify, offline and without trusting
//! Airlock, a whole exported log, one entry with its inclusion proof, two checkpoints with a
//! consistency proof, or one receipt.

pub mod canonical;
mod hash;
pub mod merkle;

pub use hash::Hash;
