//! Human-chosen names: tenant slugs, agent names and e-mail addresses.

/// A name that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The tenant slug is not 2 to 63 lowercase letters, digits or hyphens.
    #[error(
        "`{0}` is not a valid tenant slug: use 2 to 63 lowercase letters, digits and hyphens, starting with a letter or digit"
    )]
    Slug(String),
    /// The agent name is not 1 to 64 letters, digits, `-`, `_` or `.`.
    #[error("`{0}` is not a valid agent name: use 1 to 64 letters, digits, `-`, `_` or `.`")]
    AgentName(String),
    /// The tool or credential name is not 1 to 64 of lowercase letters, digits, `_`, `.`, `-`.
    #[error(
        "`{0}` is not a valid name: use 1 to 64 lowercase letters, digits, `_`, `.` or `-`, starting with a letter"
    )]
    ToolName(String),
    /// The address is not of the form `local@domain`.
    #[error("`{0}` is not a valid e-mail address")]
    Email(String),
}

fn bounded(value: &str) -> String {
    value.chars().take(80).collect()
}

/// A tenant's short, URL-safe name, unique across the platform (`acme`, `acme-eu`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantSlug(String);
text_newtype!(TenantSlug, NameError);

impl TenantSlug {
    /// Parses a slug: 2 to 63 of `[a-z0-9-]`, not starting or ending with a hyphen.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let valid = (2..=63).contains(&value.len())
            && value.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
            && !value.starts_with('-')
            && !value.ends_with('-');
        if valid { Ok(Self(value.to_owned())) } else { Err(NameError::Slug(bounded(value))) }
    }
}

/// An agent's name, unique within its tenant (`invoice-bot`, `support.triage`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentName(String);
text_newtype!(AgentName, NameError);

impl AgentName {
    /// Parses an agent name: 1 to 64 of `[A-Za-z0-9._-]`.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let valid = (1..=64).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid { Ok(Self(value.to_owned())) } else { Err(NameError::AgentName(bounded(value))) }
    }
}

/// A tool's name, unique within its tenant (`send_email`, `crm.lookup`). Also used for
/// credential names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ToolName(String);
text_newtype!(ToolName, NameError);

impl ToolName {
    /// Parses a name: a lowercase letter, then up to 63 of `[a-z0-9_.-]`.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let valid = (1..=64).contains(&value.len())
            && value.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && value.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'));
        if valid { Ok(Self(value.to_owned())) } else { Err(NameError::ToolName(bounded(value))) }
    }
}

/// An e-mail address used as a user's login name, stored lowercased.
///
/// The check is deliberately structural (one `@`, a non-empty local part, a dotted or
/// `localhost` domain, no whitespace or control characters, at most 254 bytes): deliverability
/// is not Airlock's concern, but ambiguity in a login name is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);
text_newtype!(Email, NameError);

impl Email {
    /// Parses and lowercases an e-mail address.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let lowered = value.trim().to_lowercase();
        let valid = lowered.len() <= 254
            && !lowered.chars().any(|c| c.is_whitespace() || c.is_control())
            && match lowered.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && !domain.contains('@')
                        && (domain == "localhost"
                            || (domain.contains('.')
                                && !domain.starts_with('.')
                                && !domain.ends_with('.')
                                && !domain.contains("..")))
                }
                None => false,
            };
        if valid { Ok(Self(lowered)) } else { Err(NameError::Email(bounded(value))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(TenantSlug::parse("acme").is_ok());
        assert!(TenantSlug::parse("acme-eu-2").is_ok());
        for bad in ["a", "-acme", "acme-", "Acme", "ac me", "acme_eu", "", &"a".repeat(64)] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(Email::parse(" Ada@Example.COM ").map(|e| e.0), Ok("ada@example.com".into()));
        assert!(Email::parse("admin@localhost").is_ok());
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@@example.com",
            "a da@example.com",
            "ada@example",
            "ada@.com",
            "ada@x..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tool_names() {
        assert!(ToolName::parse("send_email").is_ok());
        assert!(ToolName::parse("crm.lookup-v2").is_ok());
        for bad in ["", "Send", "1tool", "a b", "x/../y", &"a".repeat(65)] {
            assert!(ToolName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn agent_names() {
        assert!(AgentName::parse("invoice-bot.v2_a").is_ok());
        assert!(AgentName::parse("").is_err());
        assert!(AgentName::parse("bot/../x").is_err());
    }
}
