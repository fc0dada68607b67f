//! Migrations, embedded in the binary, one folder per backend and database kind.
//!
//! Each file is `NNNN_description.sql`; its version is its number. Applied migrations are
//! recorded with a checksum, so an edited migration is refused rather than silently skipped.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType};
use sqlx::{AssertSqlSafe, SqlSafeStr};

use crate::Backend;

/// Which database a migration set is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Set {
    /// The control-plane database.
    Control,
    /// A tenant's database.
    Tenant,
}

const SQLITE_CONTROL: &[(i64, &str, &str)] = &[
    (1, "identity", include_str!("../migrations/sqlite/control/0001_identity.sql")),
    (2, "tenant keys", include_str!("../migrations/sqlite/control/0002_tenant_keys.sql")),
    (3, "platform kill switches", include_str!("../migrations/sqlite/control/0003_platform_kill.sql")),
    (4, "key hierarchy", include_str!("../migrations/sqlite/control/0004_key_hierarchy.sql")),
];

const SQLITE_TENANT: &[(i64, &str, &str)] = &[
    (1, "identity", include_str!("../migrations/sqlite/tenant/0001_identity.sql")),
    (2, "audit", include_str!("../migrations/sqlite/tenant/0002_audit.sql")),
    (3, "tools and policies", include_str!("../migrations/sqlite/tenant/0003_tools_and_policies.sql")),
    (4, "runs and actions", include_str!("../migrations/sqlite/tenant/0004_runs_and_actions.sql")),
    (
        5,
        "approvals and kill switches",
        include_str!("../migrations/sqlite/tenant/0005_approvals_and_kill_switches.sql"),
    ),
    (6, "tool cost ceiling", include_str!("../migrations/sqlite/tenant/0006_tool_cost_ceiling.sql")),
    (7, "inspection", include_str!("../migrations/sqlite/tenant/0007_inspection.sql")),
    (8, "models", include_str!("../migrations/sqlite/tenant/0008_models.sql")),
    (
        9,
        "resealable signing keys",
        include_str!("../migrations/sqlite/tenant/0009_resealable_signing_keys.sql"),
    ),
    (10, "flow", include_str!("../migrations/sqlite/tenant/0010_flow.sql")),
];

impl Set {
    pub(crate) fn migrations(self, backend: Backend) -> Vec<Migration> {
        let files = match (self, backend) {
            (Set::Control, Backend::Sqlite) => SQLITE_CONTROL,
            (Set::Tenant, Backend::Sqlite) => SQLITE_TENANT,
        };
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    AssertSqlSafe(sql).into_sql_str(),
                    false,
                )
            })
            .collect()
    }
}
