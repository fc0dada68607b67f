//! The tamper-evident audit log: entries, the hash chain, the RFC 6962 Merkle tree, signed
//! checkpoints (C2SP signed notes), receipts, proofs and offline verification.
//!
//! Pure logic: no I/O beyond reading an exported log from a file. Storage of entries lives in
//! `airlock-store`; this crate decides what an entry, a proof and a valid log are. Its contents
//! arrive with the audit-log capability; the crate exists from the start so that the
//! dependency graph keeps it free of the web layer and the database.
