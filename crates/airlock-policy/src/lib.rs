//! Deciding: JSON Schema validation, Cedar authorization, risk tiers, approval requirements,
//! flow rules and budget arithmetic.
//!
//! Input is a fully materialised context, output a decision with its reasons; no I/O, so every
//! rule can be tested exhaustively. Its contents arrive with the governed-actions capability.
