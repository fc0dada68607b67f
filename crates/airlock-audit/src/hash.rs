//! The 32-byte SHA-256 hashes the log is built from, and their text forms.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Lowercase hex digit values; 0x80 marks every other byte.
#[expect(clippy::indexing_slicing, reason = "constant evaluation checks these indices at compile time")]
static NIBBLE: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// A SHA-256 hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero hash: `prev` of the first entry.
    pub const ZERO: Hash = Hash([0; 32]);

    /// SHA-256 of the concatenation of `parts`.
    #[must_use]
    pub fn of(parts: &[&[u8]]) -> Self {
        Hash(airlock_crypto::sha256_parts(parts).0)
    }

    /// Lowercase hex.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 lowercase hex digits. Uppercase is refused: the canonical spelling is the
    /// only one, so an entry cannot be altered by changing a hash's case.
    #[must_use]
    #[expect(clippy::indexing_slicing, reason = "a u8 always indexes a 256-entry table")]
    pub fn from_hex(text: &str) -> Option<Self> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        let mut invalid = 0u8;
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let [high, low] = pair else { return None };
            let (h, l) = (NIBBLE[usize::from(*high)], NIBBLE[usize::from(*low)]);
            invalid |= (h | l) & 0x80;
            *byte = (h << 4) | (l & 0x0f);
        }
        (invalid == 0).then_some(Hash(bytes))
    }

    /// Standard base64 (as checkpoints and the RFC 6962 vectors write hashes).
    #[must_use]
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parses standard base64 of exactly 32 bytes.
    #[must_use]
    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes = STANDARD.decode(text).ok()?;
        <[u8; 32]>::try_from(bytes).ok().map(Hash)
    }

    /// Rebuilds a hash from stored bytes.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Hash)
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_hex_parses() {
        let hash = Hash::of(&[b"x"]);
        assert_eq!(Hash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(Hash::from_hex(&hash.to_hex().to_uppercase()), None);
        assert_eq!(Hash::from_hex("00"), None);
    }
}
