//! Prefixed identifiers: `ten_0192…`, `usr_0192…`.
//!
//! An identifier is a type prefix and 32 lowercase hex digits of a UUIDv7, so identifiers
//! sort by creation time, say what they name when they appear in a log line, and can never be
//! confused with one another: a `UserId` does not parse as a `TenantId`.

/// An identifier that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The value does not start with the prefix of its type.
    #[error("`{value}` is not a valid {kind} id (expected `{prefix}_` followed by 32 hex digits)")]
    Malformed {
        /// What kind of identifier was expected.
        kind: &'static str,
        /// The prefix that kind carries.
        prefix: &'static str,
        /// The rejected value, truncated to keep error messages bounded.
        value: String,
    },
}

const HEX_LEN: usize = 32;

fn parse_prefixed(value: &str, prefix: &'static str, kind: &'static str) -> Result<String, IdError> {
    let well_formed = value.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('_')).is_some_and(|hex| {
        hex.len() == HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if well_formed {
        Ok(value.to_owned())
    } else {
        Err(IdError::Malformed { kind, prefix, value: value.chars().take(80).collect() })
    }
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix every identifier of this type starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new, unique identifier.
            #[must_use]
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Parses an identifier, refusing anything but this type's prefix and 32 hex digits.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                parse_prefixed(value, $prefix, $kind).map(Self)
            }
        }

        text_newtype!($name, IdError);
    };
}

prefixed_id!(
    /// A tenant: the unit of isolation, with its own database and keys.
    TenantId, "ten", "tenant"
);
prefixed_id!(
    /// A human user, who belongs to exactly one tenant.
    UserId, "usr", "user"
);
prefixed_id!(
    /// An agent identity: software that acts through Airlock with API keys.
    AgentId, "agt", "agent"
);
prefixed_id!(
    /// A platform operator, who manages tenants and nothing inside them.
    OperatorId, "opr", "operator"
);
prefixed_id!(
    /// An API key. The id is public: it is embedded in the key and names it in listings.
    ApiKeyId, "key", "API key"
);
prefixed_id!(
    /// A console session.
    SessionId, "ses", "session"
);
prefixed_id!(
    /// A run: an agent's declared piece of work, with its lease.
    RunId, "run", "run"
);
prefixed_id!(
    /// An action proposed within a run.
    ActionId, "act", "action"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip() {
        let id = TenantId::generate();
        assert_eq!(TenantId::parse(id.as_str()), Ok(id.clone()));
        assert!(id.as_str().starts_with("ten_"));
    }

    #[test]
    fn an_id_of_one_type_does_not_parse_as_another() {
        let user = UserId::generate();
        assert!(TenantId::parse(user.as_str()).is_err());
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "ten_",
            "ten_0192",
            "TEN_0192f3a4b5c6d7e8f90a1b2c3d4e5f60",
            "ten_0192F3A4B5C6D7E8F90A1B2C3D4E5F60",
            "ten_0192f3a4b5c6d7e8f90a1b2c3d4e5f6g",
            "ten_0192f3a4b5c6d7e8f90a1b2c3d4e5f601",
            "ten_../../../etc/passwd000000000000",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn deserialising_validates() {
        let ok: Result<TenantId, _> = serde_json::from_str("\"ten_0192f3a4b5c6d7e8f90a1b2c3d4e5f60\"");
        assert!(ok.is_ok());
        let bad: Result<TenantId, _> = serde_json::from_str("\"ten_nope\"");
        assert!(bad.is_err());
    }
}
