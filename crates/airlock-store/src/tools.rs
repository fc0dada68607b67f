//! The tenant's tools, the credentials their connectors use, and its policy text.
//!
//! The store keeps what it is given: schemas, connector settings and policies are validated
//! by the caller (`airlock-policy`) before they reach it. Credential secrets are sealed with
//! the tenant's DEK on the way in and never come back out through this module.

use airlock_types::{Timestamp, ToolName};
use airlock_vault::Context;
use secrecy::{ExposeSecret, SecretBox};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::Operation;
use crate::principal::TenantScope;
use crate::versioned::POLICIES;
use crate::{Store, StoreError};

/// A tool as registered.
#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    /// Its unique name.
    pub name: ToolName,
    /// What it does, for people and models.
    pub description: String,
    /// Its input JSON Schema, as validated.
    pub input_schema: Value,
    /// Its risk tier (`read`, `write`, `destructive`, `financial`, `egress`, `bulk`, `custom:<name>`).
    pub tier: String,
    /// Whether calling it changes anything.
    pub side_effects: bool,
    /// The classification of data it returns (`public`, `internal`, `confidential`, `restricted`).
    pub classification: String,
    /// Whether its output is a trusted source for the flow rules (a company directory, not a
    /// mailbox).
    pub trusted_source: bool,
    /// Estimated cost of one call, in cents.
    pub cost_cents: i64,
    /// The most its calls may cost across the tenant in any 24 hours, in cents.
    pub daily_cost_ceiling_cents: Option<i64>,
    /// How the executor calls it.
    pub connector: Value,
    /// The name of the credential its connector uses, if any.
    pub credential: Option<String>,
    /// Incremented on every update.
    pub version: i64,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// What a tool registration or update carries.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// What it does.
    pub description: String,
    /// Its validated input schema.
    pub input_schema: Value,
    /// Its risk tier.
    pub tier: String,
    /// Whether it has side effects.
    pub side_effects: bool,
    /// Its data classification.
    pub classification: String,
    /// Whether its output is a trusted source for the flow rules.
    pub trusted_source: bool,
    /// Estimated cost per call, in cents.
    pub cost_cents: i64,
    /// The most its calls may cost in any 24 hours, in cents.
    pub daily_cost_ceiling_cents: Option<i64>,
    /// Its validated connector settings.
    pub connector: Value,
    /// The credential (by name) its connector uses.
    pub credential: Option<ToolName>,
}

/// A credential's record. Its secret is never part of it.
#[derive(Debug, Clone, Serialize)]
pub struct Credential {
    /// Its id.
    pub id: String,
    /// Its unique name.
    pub name: ToolName,
    /// `bearer`, `basic`, `api_key_header` or `oauth_client_credentials`.
    pub kind: String,
    /// When it was first stored.
    pub created_at: Timestamp,
    /// When its secret last changed.
    pub updated_at: Timestamp,
}

/// A version of the tenant's Cedar policies.
pub type PolicyVersion = crate::versioned::Version;

const TOOL_COLUMNS: &str = "t.name, t.description, t.input_schema, t.tier, t.side_effects, t.classification, \
     t.trusted_source, t.cost_cents, t.daily_cost_ceiling_cents, t.connector, c.name AS credential, t.version, t.created_at, t.updated_at";

fn tool_from_row(row: &AnyRow) -> Result<Tool, StoreError> {
    let json = |column: &str| -> Result<Value, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text).map_err(|e| StoreError::corrupt("tools", e))
    };
    Ok(Tool {
        name: ToolName::parse(&row.try_get::<String, _>("name")?)
            .map_err(|e| StoreError::corrupt("tools", e))?,
        description: row.try_get("description")?,
        input_schema: json("input_schema")?,
        tier: row.try_get("tier")?,
        side_effects: row.try_get::<i64, _>("side_effects")? != 0,
        classification: row.try_get("classification")?,
        trusted_source: row.try_get::<i64, _>("trusted_source")? != 0,
        cost_cents: row.try_get("cost_cents")?,
        daily_cost_ceiling_cents: row.try_get("daily_cost_ceiling_cents")?,
        connector: json("connector")?,
        credential: row.try_get("credential")?,
        version: row.try_get("version")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
    })
}

fn credential_from_row(row: &AnyRow) -> Result<Credential, StoreError> {
    Ok(Credential {
        id: row.try_get("id")?,
        name: ToolName::parse(&row.try_get::<String, _>("name")?)
            .map_err(|e| StoreError::corrupt("credentials", e))?,
        kind: row.try_get("kind")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
    })
}

/// Where a credential's sealed secret lives.
fn credential_context(id: &str) -> Context<'_> {
    Context { table: "credentials", column: "sealed", row: id }
}

fn tool_metadata(spec: &ToolSpec) -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert("tier".into(), Value::from(spec.tier.as_str()));
    metadata.insert("side_effects".into(), Value::from(spec.side_effects));
    metadata.insert("classification".into(), Value::from(spec.classification.as_str()));
    metadata.insert(
        "credential".into(),
        spec.credential.as_ref().map_or(Value::Null, |c| Value::from(c.as_str())),
    );
    metadata
}

/// The id of the credential named `name`, looked up in the operation's transaction.
async fn credential_id(
    conn: &mut sqlx::AnyConnection,
    name: Option<&ToolName>,
) -> Result<Option<String>, StoreError> {
    let Some(name) = name else { return Ok(None) };
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM credentials WHERE name = $1")
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    id.map(Some).ok_or_else(|| StoreError::NotFound { what: format!("credential `{name}`") })
}

impl Store {
    /// Registers a tool. A tool of the same name conflicts.
    pub async fn create_tool(
        &self,
        scope: &TenantScope,
        name: &ToolName,
        spec: ToolSpec,
    ) -> Result<Tool, StoreError> {
        let metadata = tool_metadata(&spec);
        let tool = name.clone();
        let operation: Operation = Box::new(move |conn, _event| {
            Box::pin(async move {
                let credential = credential_id(conn, spec.credential.as_ref()).await?;
                let now = Timestamp::now().as_millis();
                sqlx::query(
                    "INSERT INTO tools (name, description, input_schema, tier, side_effects, classification, \
                     cost_cents, connector, credential_id, version, created_at, updated_at, daily_cost_ceiling_cents, \
                     trusted_source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10, $11, $12)",
                )
                .bind(tool.as_str())
                .bind(spec.description.as_str())
                .bind(spec.input_schema.to_string())
                .bind(spec.tier.as_str())
                .bind(i64::from(spec.side_effects))
                .bind(spec.classification.as_str())
                .bind(spec.cost_cents)
                .bind(spec.connector.to_string())
                .bind(credential)
                .bind(now)
                .bind(spec.daily_cost_ceiling_cents)
                .bind(i64::from(spec.trusted_source))
                .execute(&mut *conn)
                .await
                .map_err(|e| StoreError::conflict_on_unique(e, || format!("a tool named `{tool}`")))?;
                Ok(())
            })
        });
        self.record_with(scope, "tool.registered", &[("tool", name.as_str())], metadata, operation).await?;
        self.get_tool(scope, name).await
    }

    /// Replaces a tool's definition, incrementing its version.
    pub async fn update_tool(
        &self,
        scope: &TenantScope,
        name: &ToolName,
        spec: ToolSpec,
    ) -> Result<Tool, StoreError> {
        let metadata = tool_metadata(&spec);
        let tool = name.clone();
        let operation: Operation = Box::new(move |conn, _event| {
            Box::pin(async move {
                let credential = credential_id(conn, spec.credential.as_ref()).await?;
                let changed = sqlx::query(
                    "UPDATE tools SET description = $1, input_schema = $2, tier = $3, side_effects = $4, \
                     classification = $5, cost_cents = $6, connector = $7, credential_id = $8, \
                     version = version + 1, updated_at = $9, daily_cost_ceiling_cents = $11, trusted_source = $12 \
                     WHERE name = $10",
                )
                .bind(spec.description.as_str())
                .bind(spec.input_schema.to_string())
                .bind(spec.tier.as_str())
                .bind(i64::from(spec.side_effects))
                .bind(spec.classification.as_str())
                .bind(spec.cost_cents)
                .bind(spec.connector.to_string())
                .bind(credential)
                .bind(Timestamp::now().as_millis())
                .bind(tool.as_str())
                .bind(spec.daily_cost_ceiling_cents)
                .bind(i64::from(spec.trusted_source))
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if changed == 0 {
                    return Err(StoreError::NotFound { what: format!("tool `{tool}`") });
                }
                Ok(())
            })
        });
        self.record_with(scope, "tool.updated", &[("tool", name.as_str())], metadata, operation).await?;
        self.get_tool(scope, name).await
    }

    /// The tenant's tools, by name.
    pub async fn list_tools(&self, scope: &TenantScope) -> Result<Vec<Tool>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {TOOL_COLUMNS} FROM tools t LEFT JOIN credentials c ON c.id = t.credential_id ORDER BY t.name"
        ));
        let rows = sqlx::query(sql).fetch_all(db.database().pool()).await?;
        rows.iter().map(tool_from_row).collect()
    }

    /// One tool.
    pub async fn get_tool(&self, scope: &TenantScope, name: &ToolName) -> Result<Tool, StoreError> {
        let db = self.tenant_db(scope).await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {TOOL_COLUMNS} FROM tools t LEFT JOIN credentials c ON c.id = t.credential_id WHERE t.name = $1"
        ));
        let row = sqlx::query(sql)
            .bind(name.as_str())
            .fetch_optional(db.database().pool())
            .await?
            .ok_or_else(|| StoreError::NotFound { what: format!("tool `{name}`") })?;
        tool_from_row(&row)
    }

    /// Stores a credential's secret (`secret` is the connector's JSON material, such as
    /// `{"token": "…"}`), sealed with the tenant's DEK. Storing under an existing name
    /// replaces the secret (a rotation). The secret is never returned.
    pub async fn put_credential(
        &self,
        scope: &TenantScope,
        name: &ToolName,
        kind: &str,
        secret: &SecretBox<[u8]>,
    ) -> Result<Credential, StoreError> {
        let dek = self.dek(scope.tenant_id()).await?;
        let material = SecretBox::new(secret.expose_secret().to_vec().into_boxed_slice());
        let (credential, kind_text) = (name.clone(), kind.to_owned());
        let operation: Operation = Box::new(move |conn, event| {
            Box::pin(async move {
                let existing: Option<String> =
                    sqlx::query_scalar("SELECT id FROM credentials WHERE name = $1")
                        .bind(credential.as_str())
                        .fetch_optional(&mut *conn)
                        .await?;
                let now = Timestamp::now().as_millis();
                let id = match existing {
                    Some(id) => {
                        let sealed = dek.seal(credential_context(&id), material.expose_secret());
                        sqlx::query(
                            "UPDATE credentials SET kind = $1, sealed = $2, updated_at = $3 WHERE id = $4",
                        )
                        .bind(kind_text.as_str())
                        .bind(sealed)
                        .bind(now)
                        .bind(id.as_str())
                        .execute(&mut *conn)
                        .await?;
                        event.event_type = "credential.rotated".to_owned();
                        id
                    }
                    None => {
                        let id = format!("crd_{}", hex_id());
                        let sealed = dek.seal(credential_context(&id), material.expose_secret());
                        sqlx::query(
                            "INSERT INTO credentials (id, name, kind, sealed, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $5)",
                        )
                        .bind(id.as_str())
                        .bind(credential.as_str())
                        .bind(kind_text.as_str())
                        .bind(sealed)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        id
                    }
                };
                event.subject.insert("credential".to_owned(), id);
                Ok(())
            })
        });
        let mut metadata = Map::new();
        metadata.insert("kind".into(), Value::from(kind));
        metadata.insert("name".into(), Value::from(name.as_str()));
        self.record_with(scope, "credential.stored", &[], metadata, operation).await?;
        let db = self.tenant_db(scope).await?;
        let row =
            sqlx::query("SELECT id, name, kind, created_at, updated_at FROM credentials WHERE name = $1")
                .bind(name.as_str())
                .fetch_one(db.database().pool())
                .await?;
        credential_from_row(&row)
    }

    /// The tenant's credentials (names and kinds, never secrets).
    pub async fn list_credentials(&self, scope: &TenantScope) -> Result<Vec<Credential>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let rows =
            sqlx::query("SELECT id, name, kind, created_at, updated_at FROM credentials ORDER BY name")
                .fetch_all(db.database().pool())
                .await?;
        rows.iter().map(credential_from_row).collect()
    }

    /// Writes a new version of the tenant's policy text (validated by the caller).
    pub async fn put_policies(&self, scope: &TenantScope, text: &str) -> Result<PolicyVersion, StoreError> {
        self.put_version(scope, &POLICIES, text).await
    }

    /// The policy version in force, if the tenant has written one.
    pub async fn current_policies(&self, scope: &TenantScope) -> Result<Option<PolicyVersion>, StoreError> {
        self.latest_version(scope, &POLICIES).await
    }
}

fn hex_id() -> String {
    airlock_crypto::random_hex(16)
}
