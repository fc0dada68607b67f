//! Airlock's shared vocabulary.
//!
//! Every identifier, name and role that crosses a crate boundary is a newtype here with a
//! fallible `parse`, so a value that reached a repository or a policy decision has already
//! been validated once, at the edge. This crate does no I/O.

/// Implements `as_str`, `Display`, `Serialize`, `Deserialize` (validating) and `FromStr`
/// for a newtype over `String` whose `parse` returns `Result<Self, $error>`.
macro_rules! text_newtype {
    ($name:ident, $error:ty) => {
        impl $name {
            /// The value as text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

mod id;
mod name;
mod role;
mod timestamp;

pub use id::{ActionId, AgentId, ApiKeyId, IdError, OperatorId, RunId, SessionId, TenantId, UserId};
pub use name::{AgentName, Email, NameError, TenantSlug, ToolName};
pub use role::{Role, RoleError, RoleSet};
pub use timestamp::Timestamp;
