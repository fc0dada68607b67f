//! Content inspection: PII and secret detectors, deterministic tenant-keyed tokenization and
//! restore (also streaming), injection markers, and value extraction for provenance.
//!
//! Pure logic with no I/O, so the model gateway, the action path and the flow rules can all run
//! it on every byte. Detection is one linear pass over the text for all detectors
//! ([`detect`]); [`Profile`] decides what happens to each finding and mints tokens with a
//! tenant's [`Tokenizer`]; [`restore`](token::restore) and [`StreamRestorer`] put values back;
//! [`injection::Scanner`] scores untrusted content; [`extract`](extract::extract) lists the
//! values a text mentions.

pub mod detect;
pub mod extract;
pub mod injection;
pub mod kind;
pub mod profile;
pub mod token;
pub mod validate;

pub use detect::{Detector, Finding};
pub use kind::{Builtin, CustomName, Kind};
pub use profile::{Action, Mode, Profile, ProfileSpec, Redacted, Redaction, TokenEntry};
pub use token::{RestoreMode, StreamRestorer, TokenLookup, Tokenizer, find_tokens, restore};

/// A content-inspection failure: only ever a configuration the tenant wrote.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// A profile, pattern, dictionary or kind name is not valid.
    #[error("invalid inspection profile: {0}")]
    Config(String),
}
