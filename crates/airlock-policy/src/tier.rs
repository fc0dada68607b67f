//! Risk tiers: how much harm a tool can do, and so whether a call needs approval by default.
//!
//! A tier is written as a lowercase word (`read`, `financial`, …) or `custom:<name>` for a
//! tenant-defined tier; [`RiskTier::parse`] and [`RiskTier::as_str`] round-trip, and serde uses
//! the same text.

use std::fmt;

/// A tier name that is neither built in nor a well-formed `custom:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a risk tier (expected read, write, destructive, financial, egress, bulk, or custom:<name> with a lowercase name of at most 32 letters, digits, `_` or `-`)"
)]
pub struct TierError(String);

/// How much harm a tool can do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RiskTier {
    /// Reads data; changes nothing.
    Read,
    /// Creates or changes data in a way that can be undone.
    Write,
    /// Deletes or overwrites data in a way that cannot be undone.
    Destructive,
    /// Moves money or commits the organisation to spend it.
    Financial,
    /// Sends data outside the organisation (e-mail, webhooks, uploads, shares).
    Egress,
    /// Acts on many records or recipients at once.
    Bulk,
    /// A tenant-defined tier. The string is the tier's full text, `custom:<name>`, as produced by
    /// [`RiskTier::parse`], so that [`RiskTier::as_str`] round-trips.
    Custom(String),
}

const CUSTOM_PREFIX: &str = "custom:";
const MAX_CUSTOM_NAME: usize = 32;

impl RiskTier {
    /// The built-in tiers, in a stable order.
    pub const BUILT_IN: [RiskTier; 6] = [
        RiskTier::Read,
        RiskTier::Write,
        RiskTier::Destructive,
        RiskTier::Financial,
        RiskTier::Egress,
        RiskTier::Bulk,
    ];

    /// Parses a tier: a built-in name, or `custom:<name>` where the name is 1 to 32 lowercase
    /// letters, digits, `_` or `-`, starting with a letter.
    pub fn parse(s: &str) -> Result<Self, TierError> {
        if let Some(tier) = Self::BUILT_IN.into_iter().find(|tier| tier.as_str() == s) {
            return Ok(tier);
        }
        let well_formed_custom = s.strip_prefix(CUSTOM_PREFIX).is_some_and(|name| {
            (1..=MAX_CUSTOM_NAME).contains(&name.len())
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
        });
        if well_formed_custom {
            Ok(Self::Custom(s.to_owned()))
        } else {
            Err(TierError(s.chars().take(80).collect()))
        }
    }

    /// The tier as text: `read`, `write`, …, or `custom:<name>`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Destructive => "destructive",
            Self::Financial => "financial",
            Self::Egress => "egress",
            Self::Bulk => "bulk",
            Self::Custom(text) => text,
        }
    }

    /// Financial, destructive, bulk and egress need approval unless a tenant policy says otherwise.
    ///
    /// Read, write and custom tiers do not: a tenant that wants approval for them says so in a
    /// policy (`@approval("1") permit (…) when { resource.tier == "custom:…" };`).
    #[must_use]
    pub fn needs_approval_by_default(&self) -> bool {
        matches!(self, Self::Financial | Self::Destructive | Self::Bulk | Self::Egress)
    }
}

impl fmt::Display for RiskTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for RiskTier {
    type Err = TierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for RiskTier {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for RiskTier {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[path = "tier_tests.rs"]
mod tests;
