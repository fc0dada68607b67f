//! The API's resource representations. Store records are converted here, so what the API
//! shows is decided in one place (secrets are never part of a view).

use airlock_store::{Agent, ApiKey, KeyOwner, Principal, PrincipalKind, Tenant, User};
use serde::Serialize;
use utoipa::ToSchema;

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    /// Its id (`ten_…`).
    pub id: String,
    /// Its unique short name.
    pub slug: String,
    /// Its display name.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id.to_string(),
            slug: t.slug.to_string(),
            name: t.name,
            created_at: t.created_at.to_rfc3339(),
        }
    }
}

/// A user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// Their id (`usr_…`).
    pub id: String,
    /// Their login name.
    pub email: String,
    /// Their display name.
    pub name: String,
    /// Their roles in the tenant.
    pub roles: Vec<String>,
    /// When they were created.
    pub created_at: String,
    /// When they were disabled, if they were.
    pub disabled_at: Option<String>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.to_string(),
            name: u.name,
            roles: u.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            created_at: u.created_at.to_rfc3339(),
            disabled_at: u.disabled_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// An agent identity.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    /// Its id (`agt_…`).
    pub id: String,
    /// Its unique name in the tenant.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// When it was created.
    pub created_at: String,
}

impl From<Agent> for AgentView {
    fn from(a: Agent) -> Self {
        Self {
            id: a.id.to_string(),
            name: a.name.to_string(),
            description: a.description,
            created_at: a.created_at.to_rfc3339(),
        }
    }
}

/// Whom a key authenticates.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyOwnerView {
    /// `user`, `agent` or `operator`.
    pub kind: String,
    /// The owner's id.
    pub id: String,
}

/// An API key. The key itself is shown only once, when it is created.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// Its public id (`key_…`), also embedded in the key.
    pub id: String,
    /// A label chosen at creation.
    pub name: String,
    /// Whom it authenticates.
    pub owner: KeyOwnerView,
    /// When it was created.
    pub created_at: String,
    /// When it stops working, if ever.
    pub expires_at: Option<String>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
    /// When it last authenticated a request.
    pub last_used_at: Option<String>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        let (kind, id) = match k.owner {
            KeyOwner::User(id) => ("user", id.to_string()),
            KeyOwner::Agent(id) => ("agent", id.to_string()),
            KeyOwner::Operator(id) => ("operator", id.to_string()),
        };
        Self {
            id: k.id.to_string(),
            name: k.name,
            owner: KeyOwnerView { kind: kind.to_owned(), id },
            created_at: k.created_at.to_rfc3339(),
            expires_at: k.expires_at.map(|t| t.to_rfc3339()),
            revoked_at: k.revoked_at.map(|t| t.to_rfc3339()),
            last_used_at: k.last_used_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// `user`, `agent` or `operator`.
    pub kind: String,
    /// The principal's id.
    pub id: String,
    /// The user's e-mail, the agent's name, or the operator's name.
    pub name: String,
    /// The principal's tenant; absent for operators.
    pub tenant: Option<WhoAmITenant>,
    /// Roles in the tenant (empty for agents and operators).
    pub roles: Vec<String>,
    /// How the caller authenticated: `api_key` or `session`.
    pub authenticated_by: String,
    /// The API key or session id used.
    pub credential_id: Option<String>,
}

/// The tenant part of [`WhoAmI`].
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmITenant {
    /// The tenant's id.
    pub id: String,
    /// The tenant's slug.
    pub slug: String,
}

impl From<&Principal> for WhoAmI {
    fn from(p: &Principal) -> Self {
        let (kind, name) = match p.kind() {
            PrincipalKind::User { email, .. } => ("user", email.to_string()),
            PrincipalKind::Agent { name, .. } => ("agent", name.to_string()),
            PrincipalKind::Operator { name, .. } => ("operator", name.clone()),
        };
        let (authenticated_by, credential_id) = match p.credential() {
            airlock_store::Credential::ApiKey(id) => ("api_key", Some(id.to_string())),
            airlock_store::Credential::Session(id) => ("session", Some(id.to_string())),
            airlock_store::Credential::LocalDataDir => ("data_dir", None),
        };
        Self {
            kind: kind.to_owned(),
            id: p.id_str().to_owned(),
            name,
            tenant: p
                .tenant_id()
                .zip(p.tenant_slug())
                .map(|(id, slug)| WhoAmITenant { id: id.to_string(), slug: slug.to_string() }),
            roles: p.roles().iter().map(|r| r.as_str().to_owned()).collect(),
            authenticated_by: authenticated_by.to_owned(),
            credential_id,
        }
    }
}
