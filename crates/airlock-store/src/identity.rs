//! Identities in the control plane: tenants, users, agents, operators, API keys and
//! console sessions, and authentication of each.
//!
//! Secrets are never stored: API keys and session tokens as keyed hashes, passwords as
//! Argon2id hashes.
//!
//! Every change is recorded in the tenant's audit log while its control-plane transaction is
//! still open, and committed only once the entry is durable: a change can never stand
//! without its entry. (A failure of the final commit leaves an entry for a change that did
//! not happen, the side an auditor prefers to err on.) Every lookup that a guessed credential can reach runs in time that does
//! not depend on whether the credential exists.

use airlock_crypto::{Digest, PasswordHash, SecretToken, TokenKind, hash_password, verify_password};
use airlock_types::{
    AgentId, AgentName, ApiKeyId, Email, OperatorId, Role, RoleSet, SessionId, TenantId, TenantSlug,
    Timestamp, UserId,
};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::principal::{Credential, Principal, PrincipalKind, TenantScope};
use crate::{AuthError, Store, StoreError};

/// A tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Its unique, URL-safe short name.
    pub slug: TenantSlug,
    /// Its display name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A user of one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Their id.
    pub id: UserId,
    /// Their login name.
    pub email: Email,
    /// Their display name.
    pub name: String,
    /// Their roles in the tenant.
    pub roles: RoleSet,
    /// When they were created.
    pub created_at: Timestamp,
    /// When they were disabled, if they were.
    pub disabled_at: Option<Timestamp>,
}

/// What a new user is made of.
#[derive(Debug)]
pub struct NewUser {
    /// Their login name.
    pub email: Email,
    /// Their display name.
    pub name: String,
    /// Their roles (at least one).
    pub roles: RoleSet,
    /// Their password; `None` for a user who cannot log in to the console.
    pub password: Option<SecretString>,
}

/// An agent identity of one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    /// Its id.
    pub id: AgentId,
    /// Its unique name in the tenant.
    pub name: AgentName,
    /// What it is for.
    pub description: String,
    /// When it was created.
    pub created_at: Timestamp,
}

/// Whom an API key authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum KeyOwner {
    /// A user, with that user's roles.
    User(UserId),
    /// An agent.
    Agent(AgentId),
    /// A platform operator.
    Operator(OperatorId),
}

/// An API key's record. The key itself is never stored.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    /// Its public id (also embedded in the key).
    pub id: ApiKeyId,
    /// Whom it authenticates.
    pub owner: KeyOwner,
    /// A label chosen at creation.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// When it last authenticated a request.
    pub last_used_at: Option<Timestamp>,
}

/// A key as created: its record and the secret, which is shown this once.
#[derive(Debug)]
pub struct CreatedApiKey {
    /// The record.
    pub key: ApiKey,
    /// The key to hand to its owner.
    pub secret: SecretToken,
}

/// A console session's record.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// Its user.
    pub user_id: UserId,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it ends regardless of use.
    pub expires_at: Timestamp,
}

/// A session as created at login.
#[derive(Debug)]
pub struct CreatedSession {
    /// The record.
    pub session: Session,
    /// The token to set as the session cookie.
    pub secret: SecretToken,
    /// The user, as authenticated.
    pub principal: Principal,
}

fn ts(row: &AnyRow, column: &str) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_millis(row.try_get::<i64, _>(column)?))
}

fn opt_ts(row: &AnyRow, column: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(Timestamp::from_millis))
}

fn parse<T, E: std::fmt::Display>(
    table: &'static str,
    value: String,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    parse(&value).map_err(|e| StoreError::corrupt(table, e))
}

fn tenant_from_row(row: &AnyRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: parse("tenants", row.try_get("id")?, TenantId::parse)?,
        slug: parse("tenants", row.try_get("slug")?, TenantSlug::parse)?,
        name: row.try_get("name")?,
        created_at: ts(row, "created_at")?,
    })
}

fn agent_from_row(row: &AnyRow) -> Result<Agent, StoreError> {
    Ok(Agent {
        id: parse("agents", row.try_get("id")?, AgentId::parse)?,
        name: parse("agents", row.try_get("name")?, AgentName::parse)?,
        description: row.try_get("description")?,
        created_at: ts(row, "created_at")?,
    })
}

fn key_from_row(row: &AnyRow) -> Result<ApiKey, StoreError> {
    let owner_id: String = row.try_get("owner_id")?;
    let owner = match row.try_get::<String, _>("owner_kind")?.as_str() {
        "user" => KeyOwner::User(parse("api_keys", owner_id, UserId::parse)?),
        "agent" => KeyOwner::Agent(parse("api_keys", owner_id, AgentId::parse)?),
        "operator" => KeyOwner::Operator(parse("api_keys", owner_id, OperatorId::parse)?),
        other => return Err(StoreError::corrupt("api_keys", format!("owner kind `{other}`"))),
    };
    Ok(ApiKey {
        id: parse("api_keys", row.try_get("id")?, ApiKeyId::parse)?,
        owner,
        name: row.try_get("name")?,
        created_at: ts(row, "created_at")?,
        expires_at: opt_ts(row, "expires_at")?,
        revoked_at: opt_ts(row, "revoked_at")?,
        last_used_at: opt_ts(row, "last_used_at")?,
    })
}

/// How precisely a key's last use is recorded, in milliseconds.
const LAST_USE_RESOLUTION_MS: i64 = 60_000;

const KEY_COLUMNS: &str = "id, owner_kind, owner_id, name, created_at, expires_at, revoked_at, last_used_at";

/// Longest label accepted for names and descriptions.
const MAX_LABEL: usize = 200;

fn check_label(what: &str, value: &str) -> Result<(), StoreError> {
    if value.chars().count() > MAX_LABEL || value.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "the {what} must be at most {MAX_LABEL} characters without control characters"
        )));
    }
    Ok(())
}

impl Store {
    // ---- tenants -------------------------------------------------------------------

    /// Creates a tenant and its database. Operators only.
    pub async fn create_tenant(
        &self,
        by: &Principal,
        slug: &TenantSlug,
        name: &str,
    ) -> Result<Tenant, StoreError> {
        require_operator(by)?;
        check_label("tenant name", name)?;
        let tenant = Tenant {
            id: TenantId::generate(),
            slug: slug.clone(),
            name: if name.is_empty() { slug.to_string() } else { name.to_owned() },
            created_at: Timestamp::now(),
        };
        let mut tx = self.control().pool().begin().await?;
        sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.id.as_str())
            .bind(tenant.slug.as_str())
            .bind(tenant.name.as_str())
            .bind(tenant.created_at.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::conflict_on_unique(e, || format!("a tenant with slug `{slug}`")))?;
        self.inner.keys.create_for_tenant(&mut tx, &tenant.id).await?;
        // The tenant's database exists before the tenant is visible: a tenant row always has
        // a database behind it.
        self.inner.tenants.create(&tenant.id).await?;
        let scope = TenantScope::for_operator(tenant.id.clone(), tenant.slug.clone(), by);
        let mut metadata = Map::new();
        metadata.insert("slug".into(), Value::from(tenant.slug.as_str()));
        let recorded =
            self.record(&scope, "tenant.created", &[("tenant", tenant.id.as_str())], metadata).await;
        if let Err(error) = recorded {
            self.inner.keys.forget(tenant.id.as_str());
            return Err(error);
        }
        tx.commit().await?;
        Ok(tenant)
    }

    /// Every live tenant, oldest first. Operators only.
    pub async fn list_tenants(&self, by: &Principal) -> Result<Vec<Tenant>, StoreError> {
        require_operator(by)?;
        let rows = sqlx::query(
            "SELECT id, slug, name, created_at FROM tenants WHERE deleted_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(self.control().pool())
        .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// A live tenant by slug, as a scope an operator may act in. Operators only.
    pub async fn operator_scope(&self, by: &Principal, slug: &TenantSlug) -> Result<TenantScope, StoreError> {
        require_operator(by)?;
        let tenant = self
            .tenant_by_slug(slug)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: format!("tenant `{slug}`") })?;
        Ok(TenantScope::for_operator(tenant.id, tenant.slug, by))
    }

    /// A live tenant by id, as a scope an operator may act in. Operators only.
    pub async fn operator_scope_by_id(
        &self,
        by: &Principal,
        id: &TenantId,
    ) -> Result<TenantScope, StoreError> {
        require_operator(by)?;
        let row = sqlx::query(
            "SELECT id, slug, name, created_at FROM tenants WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id.as_str())
        .fetch_optional(self.control().pool())
        .await?
        .ok_or_else(|| StoreError::NotFound { what: format!("tenant `{id}`") })?;
        let tenant = tenant_from_row(&row)?;
        Ok(TenantScope::for_operator(tenant.id, tenant.slug, by))
    }

    /// The tenant a scope names.
    pub async fn tenant(&self, scope: &TenantScope) -> Result<Tenant, StoreError> {
        let row = sqlx::query("SELECT id, slug, name, created_at FROM tenants WHERE id = $1")
            .bind(scope.tenant_id().as_str())
            .fetch_one(self.control().pool())
            .await?;
        tenant_from_row(&row)
    }

    async fn tenant_by_slug(&self, slug: &TenantSlug) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(
            "SELECT id, slug, name, created_at FROM tenants WHERE slug = $1 AND deleted_at IS NULL",
        )
        .bind(slug.as_str())
        .fetch_optional(self.control().pool())
        .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    /// How many live tenants exist (for first-start bootstrap).
    pub async fn count_tenants(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE deleted_at IS NULL")
            .fetch_one(self.control().pool())
            .await?)
    }

    // ---- operators -----------------------------------------------------------------

    /// Creates a named platform operator and an API key for it. Only the local operator
    /// (the holder of the data directory) may create operators.
    pub async fn create_operator_key(
        &self,
        by: &Principal,
        name: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<CreatedApiKey, StoreError> {
        if by.credential() != &Credential::LocalDataDir {
            return Err(StoreError::Forbidden(
                "operators are created on the server's machine, with the CLI".into(),
            ));
        }
        check_label("operator name", name)?;
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("the operator name must not be empty".into()));
        }
        let existing: Option<String> = sqlx::query_scalar("SELECT id FROM operators WHERE name = $1")
            .bind(name)
            .fetch_optional(self.control().pool())
            .await?;
        let id = match existing {
            Some(id) => parse("operators", id, OperatorId::parse)?,
            None => {
                let id = OperatorId::generate();
                sqlx::query("INSERT INTO operators (id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(id.as_str())
                    .bind(name)
                    .bind(Timestamp::now().as_millis())
                    .execute(self.control().pool())
                    .await?;
                id
            }
        };
        let mut tx = self.control().pool().begin().await?;
        let created = self
            .insert_key(&mut tx, None, KeyOwner::Operator(id), &format!("operator {name}"), expires_at)
            .await?;
        tx.commit().await?;
        Ok(created)
    }

    // ---- users ---------------------------------------------------------------------

    /// Creates a user in the scope's tenant.
    pub async fn create_user(&self, scope: &TenantScope, new: NewUser) -> Result<User, StoreError> {
        check_label("user name", &new.name)?;
        if new.roles.is_empty() {
            return Err(StoreError::Invalid("a user needs at least one role".into()));
        }
        // Hash before opening the transaction: Argon2 is deliberately slow.
        let password_hash = match &new.password {
            Some(password) => Some(hash_password(password).map_err(|e| StoreError::Invalid(e.to_string()))?),
            None => None,
        };
        self.tenant_db(scope).await?;
        let user = User {
            id: UserId::generate(),
            email: new.email,
            name: new.name,
            roles: new.roles,
            created_at: Timestamp::now(),
            disabled_at: None,
        };
        let mut tx = self.control().pool().begin().await?;
        sqlx::query(
            "INSERT INTO users (id, tenant_id, email, name, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.as_str())
        .bind(scope.tenant_id().as_str())
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(password_hash.as_ref().map(|h| h.as_str().to_owned()))
        .bind(user.created_at.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::conflict_on_unique(e, || format!("a user with e-mail `{}`", user.email)))?;
        for role in user.roles.iter() {
            sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                .bind(user.id.as_str())
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let mut metadata = Map::new();
        metadata.insert("roles".into(), roles_value(&user.roles));
        metadata.insert("console_login".into(), Value::from(password_hash.is_some()));
        self.record(scope, "user.created", &[("user", user.id.as_str())], metadata).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// The users of the scope's tenant, oldest first.
    pub async fn list_users(&self, scope: &TenantScope) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, email, name, created_at, disabled_at FROM users \
             WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(scope.tenant_id().as_str())
        .fetch_all(self.control().pool())
        .await?;
        let mut users = Vec::with_capacity(rows.len());
        for row in &rows {
            users.push(self.user_from_row(row).await?);
        }
        Ok(users)
    }

    /// One user of the scope's tenant. A user of another tenant is not found.
    pub async fn get_user(&self, scope: &TenantScope, id: &UserId) -> Result<User, StoreError> {
        let row = sqlx::query(
            "SELECT id, email, name, created_at, disabled_at FROM users WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id.as_str())
        .bind(scope.tenant_id().as_str())
        .fetch_optional(self.control().pool())
        .await?
        .ok_or_else(|| StoreError::NotFound { what: format!("user `{id}`") })?;
        self.user_from_row(&row).await
    }

    /// A user of the scope's tenant by e-mail.
    pub async fn get_user_by_email(&self, scope: &TenantScope, email: &Email) -> Result<User, StoreError> {
        let row = sqlx::query(
            "SELECT id, email, name, created_at, disabled_at FROM users WHERE email = $1 AND tenant_id = $2",
        )
        .bind(email.as_str())
        .bind(scope.tenant_id().as_str())
        .fetch_optional(self.control().pool())
        .await?
        .ok_or_else(|| StoreError::NotFound { what: format!("user `{email}`") })?;
        self.user_from_row(&row).await
    }

    /// Replaces a user's roles.
    pub async fn set_user_roles(
        &self,
        scope: &TenantScope,
        id: &UserId,
        roles: &RoleSet,
    ) -> Result<User, StoreError> {
        if roles.is_empty() {
            return Err(StoreError::Invalid("a user needs at least one role".into()));
        }
        self.tenant_db(scope).await?;
        let mut tx = self.control().pool().begin().await?;
        let found: Option<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND tenant_id = $2")
                .bind(id.as_str())
                .bind(scope.tenant_id().as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            return Err(StoreError::NotFound { what: format!("user `{id}`") });
        }
        sqlx::query("DELETE FROM user_roles WHERE user_id = $1").bind(id.as_str()).execute(&mut *tx).await?;
        for role in roles.iter() {
            sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                .bind(id.as_str())
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let mut metadata = Map::new();
        metadata.insert("roles".into(), roles_value(roles));
        self.record(scope, "user.roles_changed", &[("user", id.as_str())], metadata).await?;
        tx.commit().await?;
        self.get_user(scope, id).await
    }

    async fn roles_of(&self, user: &UserId) -> Result<RoleSet, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT role FROM user_roles WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_all(self.control().pool())
            .await?;
        rows.iter().map(|r| Role::parse(r).map_err(|e| StoreError::corrupt("user_roles", e))).collect()
    }

    async fn user_from_row(&self, row: &AnyRow) -> Result<User, StoreError> {
        let id = parse("users", row.try_get("id")?, UserId::parse)?;
        let roles = self.roles_of(&id).await?;
        Ok(User {
            id,
            email: parse("users", row.try_get("email")?, Email::parse)?,
            name: row.try_get("name")?,
            roles,
            created_at: ts(row, "created_at")?,
            disabled_at: opt_ts(row, "disabled_at")?,
        })
    }

    // ---- agents --------------------------------------------------------------------

    /// Creates an agent identity in the scope's tenant.
    pub async fn create_agent(
        &self,
        scope: &TenantScope,
        name: &AgentName,
        description: &str,
    ) -> Result<Agent, StoreError> {
        check_label("agent description", description)?;
        let agent = Agent {
            id: AgentId::generate(),
            name: name.clone(),
            description: description.to_owned(),
            created_at: Timestamp::now(),
        };
        self.tenant_db(scope).await?;
        let mut tx = self.control().pool().begin().await?;
        sqlx::query(
            "INSERT INTO agents (id, tenant_id, name, description, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(agent.id.as_str())
        .bind(scope.tenant_id().as_str())
        .bind(agent.name.as_str())
        .bind(agent.description.as_str())
        .bind(agent.created_at.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::conflict_on_unique(e, || format!("an agent named `{name}`")))?;
        let mut metadata = Map::new();
        metadata.insert("name".into(), Value::from(agent.name.as_str()));
        self.record(scope, "agent.created", &[("agent", agent.id.as_str())], metadata).await?;
        tx.commit().await?;
        Ok(agent)
    }

    /// The agents of the scope's tenant, oldest first.
    pub async fn list_agents(&self, scope: &TenantScope) -> Result<Vec<Agent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, description, created_at FROM agents \
             WHERE tenant_id = $1 AND disabled_at IS NULL ORDER BY created_at, id",
        )
        .bind(scope.tenant_id().as_str())
        .fetch_all(self.control().pool())
        .await?;
        rows.iter().map(agent_from_row).collect()
    }

    /// An agent of the scope's tenant by id.
    pub async fn get_agent(&self, scope: &TenantScope, id: &AgentId) -> Result<Agent, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, description, created_at FROM agents \
             WHERE id = $1 AND tenant_id = $2 AND disabled_at IS NULL",
        )
        .bind(id.as_str())
        .bind(scope.tenant_id().as_str())
        .fetch_optional(self.control().pool())
        .await?
        .ok_or_else(|| StoreError::NotFound { what: format!("agent `{id}`") })?;
        agent_from_row(&row)
    }

    /// An agent of the scope's tenant by name.
    pub async fn get_agent_by_name(
        &self,
        scope: &TenantScope,
        name: &AgentName,
    ) -> Result<Agent, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, description, created_at FROM agents \
             WHERE name = $1 AND tenant_id = $2 AND disabled_at IS NULL",
        )
        .bind(name.as_str())
        .bind(scope.tenant_id().as_str())
        .fetch_optional(self.control().pool())
        .await?
        .ok_or_else(|| StoreError::NotFound { what: format!("agent `{name}`") })?;
        agent_from_row(&row)
    }

    // ---- API keys ------------------------------------------------------------------

    /// Creates an API key for a user or agent of the scope's tenant. The owner must belong
    /// to the tenant; an owner of another tenant is not found.
    pub async fn create_api_key(
        &self,
        scope: &TenantScope,
        owner: KeyOwner,
        name: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<CreatedApiKey, StoreError> {
        check_label("key name", name)?;
        match &owner {
            KeyOwner::User(id) => {
                let user = self.get_user(scope, id).await?;
                if user.disabled_at.is_some() {
                    return Err(StoreError::Invalid(format!("user `{id}` is disabled")));
                }
            }
            KeyOwner::Agent(id) => {
                self.get_agent(scope, id).await?;
            }
            KeyOwner::Operator(_) => {
                return Err(StoreError::Forbidden("operator keys belong to no tenant".into()));
            }
        }
        self.tenant_db(scope).await?;
        let mut tx = self.control().pool().begin().await?;
        let created = self.insert_key(&mut tx, Some(scope.tenant_id()), owner, name, expires_at).await?;
        let (owner_kind, owner_id) = owner_parts(&created.key.owner);
        let mut metadata = Map::new();
        metadata.insert("owner_kind".into(), Value::from(owner_kind));
        metadata.insert(
            "expires_at".into(),
            created.key.expires_at.map_or(Value::Null, |t| Value::from(t.to_rfc3339())),
        );
        self.record(scope, "key.created", &[("key", created.key.id.as_str()), ("owner", owner_id)], metadata)
            .await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn insert_key(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        tenant: Option<&TenantId>,
        owner: KeyOwner,
        name: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<CreatedApiKey, StoreError> {
        let now = Timestamp::now();
        if expires_at.is_some_and(|at| at <= now) {
            return Err(StoreError::Invalid("the expiry must be in the future".into()));
        }
        let id = ApiKeyId::generate();
        let secret = SecretToken::generate(TokenKind::ApiKey, id.as_str());
        let (owner_kind, owner_id) = match &owner {
            KeyOwner::User(id) => ("user", id.as_str()),
            KeyOwner::Agent(id) => ("agent", id.as_str()),
            KeyOwner::Operator(id) => ("operator", id.as_str()),
        };
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, owner_kind, owner_id, name, secret_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id.as_str())
        .bind(tenant.map(|t| t.as_str().to_owned()))
        .bind(owner_kind)
        .bind(owner_id)
        .bind(name)
        .bind(secret.hash(self.hasher()).as_bytes().to_vec())
        .bind(now.as_millis())
        .bind(expires_at.map(Timestamp::as_millis))
        .execute(&mut **tx)
        .await?;
        let key = ApiKey {
            id,
            owner,
            name: name.to_owned(),
            created_at: now,
            expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        Ok(CreatedApiKey { key, secret })
    }

    /// The API keys of the scope's tenant (revoked ones included), newest first.
    pub async fn list_api_keys(&self, scope: &TenantScope) -> Result<Vec<ApiKey>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id"
        ));
        let rows = sqlx::query(sql).bind(scope.tenant_id().as_str()).fetch_all(self.control().pool()).await?;
        rows.iter().map(key_from_row).collect()
    }

    /// One API key of the scope's tenant. A key of another tenant is not found.
    pub async fn get_api_key(&self, scope: &TenantScope, id: &ApiKeyId) -> Result<ApiKey, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND tenant_id = $2"
        ));
        let row = sqlx::query(sql)
            .bind(id.as_str())
            .bind(scope.tenant_id().as_str())
            .fetch_optional(self.control().pool())
            .await?
            .ok_or_else(|| StoreError::NotFound { what: format!("API key `{id}`") })?;
        key_from_row(&row)
    }

    /// Revokes an API key of the scope's tenant. Revoking a revoked key changes nothing and
    /// returns the key as it is.
    pub async fn revoke_api_key(&self, scope: &TenantScope, id: &ApiKeyId) -> Result<ApiKey, StoreError> {
        let key = self.get_api_key(scope, id).await?;
        self.tenant_db(scope).await?;
        let mut tx = self.control().pool().begin().await?;
        let changed = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(Timestamp::now().as_millis())
        .bind(id.as_str())
        .bind(scope.tenant_id().as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            let (_, owner_id) = owner_parts(&key.owner);
            self.record(scope, "key.revoked", &[("key", id.as_str()), ("owner", owner_id)], Map::new())
                .await?;
        }
        tx.commit().await?;
        self.get_api_key(scope, id).await
    }

    /// Authenticates a presented API key.
    ///
    /// The key is parsed before any lookup; the stored hash is compared in constant time;
    /// an unknown id still computes a hash, so timing does not reveal which ids exist.
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<Principal, AuthError> {
        let token = SecretToken::parse(TokenKind::ApiKey, presented, |id| ApiKeyId::parse(id).is_ok())
            .map_err(|_| AuthError::Malformed)?;
        let presented_hash = token.hash(self.hasher());
        let row = sqlx::query(
            "SELECT k.id, k.tenant_id, k.owner_kind, k.owner_id, k.secret_hash, k.expires_at, k.revoked_at, \
                    k.last_used_at, t.slug AS tenant_slug, t.deleted_at AS tenant_deleted_at \
             FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id WHERE k.id = $1",
        )
        .bind(token.id())
        .fetch_optional(self.control().pool())
        .await
        .map_err(|e| internal_auth(&e))?;
        let Some(row) = row else {
            return Err(AuthError::Unknown);
        };
        let stored: Vec<u8> = row.try_get("secret_hash").map_err(|e| internal_auth(&e))?;
        let matches = Digest::from_slice(&stored).is_some_and(|d| d.ct_eq(&presented_hash));
        let get_opt = |col: &str| row.try_get::<Option<i64>, _>(col).map_err(|e| internal_auth(&e));
        let now = Timestamp::now();
        let refusal = if !matches {
            Some(AuthError::Unknown)
        } else if get_opt("revoked_at")?.is_some() {
            Some(AuthError::Revoked)
        } else if get_opt("expires_at")?.is_some_and(|at| Timestamp::from_millis(at) <= now) {
            Some(AuthError::Expired)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            // The key id names a real key, so its tenant learns of the attempt.
            self.record_refusal(&row, "auth.key_rejected", &[("key", token.id())], refusal).await;
            return Err(refusal);
        }
        if get_opt("tenant_deleted_at")?.is_some() {
            return Err(AuthError::OwnerDisabled);
        }
        let key = parse("api_keys", token.id().to_owned(), ApiKeyId::parse).map_err(|e| internal_auth(&e))?;
        let principal = self.principal_for_key(&row, key.clone()).await?;
        // Last use is kept to the minute: writing it on every request would put a durable
        // commit on every request's path. Best effort: a failure must not fail the request.
        let recent = get_opt("last_used_at")?.is_some_and(|at| now.as_millis() - at < LAST_USE_RESOLUTION_MS);
        if !recent {
            let _ = sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now.as_millis())
                .bind(key.as_str())
                .execute(self.control().pool())
                .await;
        }
        Ok(principal)
    }

    async fn principal_for_key(&self, row: &AnyRow, key: ApiKeyId) -> Result<Principal, AuthError> {
        let field = |col: &str| row.try_get::<Option<String>, _>(col).map_err(|e| internal_auth(&e));
        let owner_kind = field("owner_kind")?.unwrap_or_default();
        let owner_id = field("owner_id")?.unwrap_or_default();
        let tenant = match (field("tenant_id")?, field("tenant_slug")?) {
            (Some(id), Some(slug)) => Some((
                TenantId::parse(&id).map_err(|e| internal_auth(&e))?,
                TenantSlug::parse(&slug).map_err(|e| internal_auth(&e))?,
            )),
            _ => None,
        };
        let credential = Credential::ApiKey(key);
        match (owner_kind.as_str(), tenant) {
            ("user", Some(tenant)) => {
                let id = UserId::parse(&owner_id).map_err(|e| internal_auth(&e))?;
                let row =
                    sqlx::query("SELECT email, disabled_at FROM users WHERE id = $1 AND tenant_id = $2")
                        .bind(id.as_str())
                        .bind(tenant.0.as_str())
                        .fetch_optional(self.control().pool())
                        .await
                        .map_err(|e| internal_auth(&e))?
                        .ok_or(AuthError::OwnerDisabled)?;
                if row.try_get::<Option<i64>, _>("disabled_at").map_err(|e| internal_auth(&e))?.is_some() {
                    return Err(AuthError::OwnerDisabled);
                }
                let email: String = row.try_get("email").map_err(|e| internal_auth(&e))?;
                let email = Email::parse(&email).map_err(|e| internal_auth(&e))?;
                let roles = self.roles_of(&id).await.map_err(|e| internal_auth(&e))?;
                Ok(Principal::new(PrincipalKind::User { id, email }, Some(tenant), roles, credential))
            }
            ("agent", Some(tenant)) => {
                let id = AgentId::parse(&owner_id).map_err(|e| internal_auth(&e))?;
                let name: Option<String> = sqlx::query_scalar(
                    "SELECT name FROM agents WHERE id = $1 AND tenant_id = $2 AND disabled_at IS NULL",
                )
                .bind(id.as_str())
                .bind(tenant.0.as_str())
                .fetch_optional(self.control().pool())
                .await
                .map_err(|e| internal_auth(&e))?;
                let name = AgentName::parse(&name.ok_or(AuthError::OwnerDisabled)?)
                    .map_err(|e| internal_auth(&e))?;
                Ok(Principal::new(
                    PrincipalKind::Agent { id, name },
                    Some(tenant),
                    RoleSet::new(),
                    credential,
                ))
            }
            ("operator", None) => {
                let id = OperatorId::parse(&owner_id).map_err(|e| internal_auth(&e))?;
                let name: Option<String> = sqlx::query_scalar("SELECT name FROM operators WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(self.control().pool())
                    .await
                    .map_err(|e| internal_auth(&e))?;
                let name = name.ok_or(AuthError::OwnerDisabled)?;
                Ok(Principal::new(
                    PrincipalKind::Operator { id: Some(id), name },
                    None,
                    RoleSet::new(),
                    credential,
                ))
            }
            _ => Err(AuthError::OwnerDisabled),
        }
    }

    // ---- sessions ------------------------------------------------------------------

    /// Logs a user in with e-mail and password, creating a console session.
    ///
    /// An unknown tenant or user, a user without a password, and a disabled user all cost
    /// one Argon2 verification and fail the same way.
    pub async fn login(
        &self,
        tenant: &TenantSlug,
        email: &Email,
        password: &SecretString,
    ) -> Result<CreatedSession, AuthError> {
        let row = sqlx::query(
            "SELECT u.id, u.password_hash, u.disabled_at, t.id AS tenant_id \
             FROM users u JOIN tenants t ON t.id = u.tenant_id \
             WHERE t.slug = $1 AND t.deleted_at IS NULL AND u.email = $2",
        )
        .bind(tenant.as_str())
        .bind(email.as_str())
        .fetch_optional(self.control().pool())
        .await
        .map_err(|e| internal_auth(&e))?;
        let stored = row
            .as_ref()
            .and_then(|r| r.try_get::<Option<String>, _>("password_hash").ok().flatten())
            .map(PasswordHash::from_stored);
        let verified = verify_password(password, stored.as_ref());
        let Some(row) = row else {
            return Err(AuthError::InvalidLogin);
        };
        let disabled = row.try_get::<Option<i64>, _>("disabled_at").map_err(|e| internal_auth(&e))?.is_some();
        if !verified || disabled {
            let user: String = row.try_get("id").map_err(|e| internal_auth(&e))?;
            let reason = if disabled { "user_disabled" } else { "wrong_password" };
            let mut metadata = Map::new();
            metadata.insert("reason".into(), Value::from(reason));
            self.record_as_system(&row, tenant, "auth.login_failed", &[("user", user.as_str())], metadata)
                .await;
            return Err(AuthError::InvalidLogin);
        }
        let user_id: String = row.try_get("id").map_err(|e| internal_auth(&e))?;
        let tenant_id: String = row.try_get("tenant_id").map_err(|e| internal_auth(&e))?;
        let user_id = UserId::parse(&user_id).map_err(|e| internal_auth(&e))?;
        let tenant_id = TenantId::parse(&tenant_id).map_err(|e| internal_auth(&e))?;
        let roles = self.roles_of(&user_id).await.map_err(|e| internal_auth(&e))?;

        let now = Timestamp::now();
        let session = Session {
            id: SessionId::generate(),
            user_id: user_id.clone(),
            created_at: now,
            expires_at: now.plus(self.inner.sessions.lifetime),
        };
        let secret = SecretToken::generate(TokenKind::Session, session.id.as_str());
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, user_id, secret_hash, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(session.id.as_str())
        .bind(tenant_id.as_str())
        .bind(user_id.as_str())
        .bind(secret.hash(self.hasher()).as_bytes().to_vec())
        .bind(now.as_millis())
        .bind(now.as_millis())
        .bind(session.expires_at.as_millis())
        .execute(self.control().pool())
        .await
        .map_err(|e| internal_auth(&e))?;
        let principal = Principal::new(
            PrincipalKind::User { id: user_id, email: email.clone() },
            Some((tenant_id, tenant.clone())),
            roles,
            Credential::Session(session.id.clone()),
        );
        if let Some(scope) = principal.tenant_scope() {
            self.record(&scope, "auth.login", &[("session", session.id.as_str())], Map::new())
                .await
                .map_err(|e| internal_auth(&e))?;
        }
        Ok(CreatedSession { session, secret, principal })
    }

    /// Authenticates a presented session token, extending its idle window.
    pub async fn authenticate_session(&self, presented: &str) -> Result<Principal, AuthError> {
        let token = SecretToken::parse(TokenKind::Session, presented, |id| SessionId::parse(id).is_ok())
            .map_err(|_| AuthError::Malformed)?;
        let presented_hash = token.hash(self.hasher());
        let row = sqlx::query(
            "SELECT s.secret_hash, s.expires_at, s.last_seen_at, s.revoked_at, s.user_id, \
                    u.email, u.disabled_at, t.id AS tenant_id, t.slug, t.deleted_at \
             FROM sessions s JOIN users u ON u.id = s.user_id JOIN tenants t ON t.id = s.tenant_id \
             WHERE s.id = $1",
        )
        .bind(token.id())
        .fetch_optional(self.control().pool())
        .await
        .map_err(|e| internal_auth(&e))?
        .ok_or(AuthError::Unknown)?;
        let stored: Vec<u8> = row.try_get("secret_hash").map_err(|e| internal_auth(&e))?;
        if !Digest::from_slice(&stored).is_some_and(|d| d.ct_eq(&presented_hash)) {
            return Err(AuthError::Unknown);
        }
        let get = |col: &str| row.try_get::<Option<i64>, _>(col).map_err(|e| internal_auth(&e));
        let now = Timestamp::now();
        if get("revoked_at")?.is_some() {
            return Err(AuthError::Revoked);
        }
        let expired = get("expires_at")?.is_none_or(|at| Timestamp::from_millis(at) <= now)
            || get("last_seen_at")?
                .is_none_or(|at| Timestamp::from_millis(at).plus(self.inner.sessions.idle_timeout) <= now);
        if expired {
            return Err(AuthError::Expired);
        }
        if get("disabled_at")?.is_some() || get("deleted_at")?.is_some() {
            return Err(AuthError::OwnerDisabled);
        }
        let text = |col: &str| row.try_get::<String, _>(col).map_err(|e| internal_auth(&e));
        let user_id = UserId::parse(&text("user_id")?).map_err(|e| internal_auth(&e))?;
        let email = Email::parse(&text("email")?).map_err(|e| internal_auth(&e))?;
        let tenant_id = TenantId::parse(&text("tenant_id")?).map_err(|e| internal_auth(&e))?;
        let slug = TenantSlug::parse(&text("slug")?).map_err(|e| internal_auth(&e))?;
        let roles = self.roles_of(&user_id).await.map_err(|e| internal_auth(&e))?;
        let session = SessionId::parse(token.id()).map_err(|e| internal_auth(&e))?;
        let _ = sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
            .bind(now.as_millis())
            .bind(session.as_str())
            .execute(self.control().pool())
            .await;
        Ok(Principal::new(
            PrincipalKind::User { id: user_id, email },
            Some((tenant_id, slug)),
            roles,
            Credential::Session(session),
        ))
    }

    /// Ends the caller's own session (logout).
    pub async fn revoke_session(&self, scope: &TenantScope, id: &SessionId) -> Result<(), StoreError> {
        let changed = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(Timestamp::now().as_millis())
        .bind(id.as_str())
        .bind(scope.tenant_id().as_str())
        .execute(self.control().pool())
        .await?
        .rows_affected();
        if changed > 0 {
            self.record(scope, "auth.logout", &[("session", id.as_str())], Map::new()).await?;
        }
        Ok(())
    }

    /// Records a refused credential in the log of the tenant it belongs to. Failures to
    /// record are logged: the refusal stands either way.
    async fn record_refusal(
        &self,
        row: &AnyRow,
        event_type: &str,
        subject: &[(&str, &str)],
        refusal: AuthError,
    ) {
        let Ok(Some(slug)) = row.try_get::<Option<String>, _>("tenant_slug") else { return };
        let Ok(slug) = TenantSlug::parse(&slug) else { return };
        let mut metadata = Map::new();
        metadata.insert("reason".into(), Value::from(refusal.to_string()));
        self.record_as_system(row, &slug, event_type, subject, metadata).await;
    }

    async fn record_as_system(
        &self,
        row: &AnyRow,
        slug: &TenantSlug,
        event_type: &str,
        subject: &[(&str, &str)],
        metadata: Map<String, Value>,
    ) {
        let Ok(Some(tenant)) = row.try_get::<Option<String>, _>("tenant_id") else { return };
        let Ok(tenant) = TenantId::parse(&tenant) else { return };
        let actor = airlock_audit::Actor { kind: "anonymous".into(), id: "unauthenticated".into() };
        let scope = TenantScope::system(tenant, slug.clone(), actor);
        if let Err(error) = self.record(&scope, event_type, subject, metadata).await {
            tracing::error!(%error, event_type, "cannot record a refused credential in the audit log");
        }
    }

    /// Keyed hash for values bound to a session (the CSRF token), under its own domain.
    #[must_use]
    pub fn session_binding(&self, domain: &str, session: &SessionId) -> Digest {
        self.hasher().hash(domain, session.as_str().as_bytes())
    }
}

fn roles_value(roles: &RoleSet) -> Value {
    Value::Array(roles.iter().map(|r| Value::from(r.as_str())).collect())
}

fn owner_parts(owner: &KeyOwner) -> (&'static str, &str) {
    match owner {
        KeyOwner::User(id) => ("user", id.as_str()),
        KeyOwner::Agent(id) => ("agent", id.as_str()),
        KeyOwner::Operator(id) => ("operator", id.as_str()),
    }
}

pub(crate) fn require_operator(by: &Principal) -> Result<(), StoreError> {
    if by.is_operator() {
        Ok(())
    } else {
        Err(StoreError::Forbidden("only a platform operator may manage tenants".into()))
    }
}

/// A failure inside authentication that is not the caller's fault: logged, and answered as an
/// unknown credential so the caller learns nothing (fail closed).
fn internal_auth(error: &dyn std::fmt::Display) -> AuthError {
    tracing::error!(%error, "credential check failed internally; refusing the credential");
    AuthError::Unknown
}
