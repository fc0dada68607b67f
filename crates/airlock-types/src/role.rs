//! Roles a user holds within their tenant.

use std::fmt;

/// A role within a tenant. A user holds one or more; agents hold none (what an agent may do
/// is decided per run, by its lease and by policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages the tenant: users, keys, tools, policies and settings.
    Admin,
    /// Registers tools and writes policies.
    Builder,
    /// Decides approval requests.
    Approver,
    /// Uses Airlock through agents and the model gateway.
    Member,
    /// Reads runs, actions and approvals.
    Viewer,
    /// Reads and exports the audit log.
    Auditor,
}

/// A role name that is not one of Airlock's roles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a role (expected one of admin, builder, approver, member, viewer, auditor)")]
pub struct RoleError(String);

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 6] =
        [Role::Admin, Role::Builder, Role::Approver, Role::Member, Role::Viewer, Role::Auditor];

    /// The role's name as it appears in the API and the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Builder => "builder",
            Role::Approver => "approver",
            Role::Member => "member",
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    pub fn parse(value: &str) -> Result<Self, RoleError> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == value)
            .ok_or_else(|| RoleError(value.chars().take(40).collect()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A set of roles, kept sorted and free of duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RoleSet(std::collections::BTreeSet<Role>);

impl RoleSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set holds `role`.
    #[must_use]
    pub fn contains(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    /// Whether the set holds no role.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The roles in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }

    /// Adds a role.
    pub fn insert(&mut self, role: Role) {
        self.0.insert(role);
    }
}

impl FromIterator<Role> for RoleSet {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_round_trips() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("root").is_err());
        assert!(Role::parse("Admin").is_err());
    }
}
