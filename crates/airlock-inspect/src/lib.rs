//! Content inspection: PII and secret detectors, deterministic tenant-keyed tokenization and
//! restore (also streaming), injection markers, and value extraction for provenance.
//!
//! Pure logic with no I/O, so the model gateway, the action path and the flow rules can all run
//! it on every byte. Its contents arrive with the content-inspection capability.
