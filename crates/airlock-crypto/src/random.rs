//! Randomness from the operating system.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `N` bytes from the operating system's CSPRNG.
#[must_use]
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fill(&mut bytes);
    bytes
}

/// `len` random bytes in lowercase hex, for identifiers that are unique but not secret.
#[must_use]
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    fill(&mut bytes);
    crate::digest::to_hex(&bytes)
}

/// `len` random bytes, encoded as unpadded base64url.
#[must_use]
pub fn random_base64url(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[expect(
    clippy::panic,
    reason = "without the OS random source Airlock cannot mint a secret that is not guessable; stopping is the only safe answer"
)]
fn fill(bytes: &mut [u8]) {
    if let Err(error) = getrandom::fill(bytes) {
        panic!("the operating system's random source failed: {error}");
    }
}
