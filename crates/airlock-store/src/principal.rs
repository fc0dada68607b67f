//! Who is acting: the authenticated principal, and the tenant scope it grants.
//!
//! A [`Principal`] is produced only by this crate's authentication functions (API key,
//! session, or the local operator who holds the data directory). A [`TenantScope`] is
//! produced only from a principal, so every tenant-scoped query is tied to an authenticated
//! identity by construction.

use airlock_audit::Actor;
use airlock_types::{
    AgentId, AgentName, ApiKeyId, Email, OperatorId, Role, RoleSet, SessionId, TenantId, TenantSlug, UserId,
};

/// What kind of identity a principal is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A human user of one tenant.
    User {
        /// The user.
        id: UserId,
        /// Their login name.
        email: Email,
    },
    /// An agent of one tenant.
    Agent {
        /// The agent.
        id: AgentId,
        /// Its name.
        name: AgentName,
    },
    /// A platform operator: manages tenants, and nothing inside them.
    Operator {
        /// The operator; `None` for whoever holds the data directory on the local machine.
        id: Option<OperatorId>,
        /// The operator's name.
        name: String,
    },
}

/// How the principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key.
    ApiKey(ApiKeyId),
    /// A console session.
    Session(SessionId),
    /// Direct access to the data directory (the CLI on the server's machine).
    LocalDataDir,
}

/// An authenticated identity.
#[derive(Debug, Clone)]
pub struct Principal {
    kind: PrincipalKind,
    tenant: Option<(TenantId, TenantSlug)>,
    roles: RoleSet,
    credential: Credential,
}

impl Principal {
    pub(crate) fn new(
        kind: PrincipalKind,
        tenant: Option<(TenantId, TenantSlug)>,
        roles: RoleSet,
        credential: Credential,
    ) -> Self {
        Self { kind, tenant, roles, credential }
    }

    /// The operator acting on the local data directory: whoever can read the directory
    /// already holds every secret in it, so the CLI acts with the operator's authority.
    #[must_use]
    pub fn local_operator() -> Self {
        Self::new(
            PrincipalKind::Operator { id: None, name: "local".to_owned() },
            None,
            RoleSet::new(),
            Credential::LocalDataDir,
        )
    }

    /// What kind of identity this is.
    #[must_use]
    pub fn kind(&self) -> &PrincipalKind {
        &self.kind
    }

    /// The principal's tenant; `None` for operators.
    #[must_use]
    pub fn tenant_id(&self) -> Option<&TenantId> {
        self.tenant.as_ref().map(|(id, _)| id)
    }

    /// The principal's tenant slug; `None` for operators.
    #[must_use]
    pub fn tenant_slug(&self) -> Option<&TenantSlug> {
        self.tenant.as_ref().map(|(_, slug)| slug)
    }

    /// The principal's roles in its tenant (always empty for agents and operators).
    #[must_use]
    pub fn roles(&self) -> &RoleSet {
        &self.roles
    }

    /// Whether the principal holds `role`.
    #[must_use]
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(role)
    }

    /// Whether this is a platform operator.
    #[must_use]
    pub fn is_operator(&self) -> bool {
        matches!(self.kind, PrincipalKind::Operator { .. })
    }

    /// How the principal authenticated.
    #[must_use]
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// A stable identifier for logs and rate limits (`usr_…`, `agt_…`, `opr_…`, `local`).
    #[must_use]
    pub fn id_str(&self) -> &str {
        match &self.kind {
            PrincipalKind::User { id, .. } => id.as_str(),
            PrincipalKind::Agent { id, .. } => id.as_str(),
            PrincipalKind::Operator { id: Some(id), .. } => id.as_str(),
            PrincipalKind::Operator { id: None, .. } => "local",
        }
    }

    /// The scope of the principal's own tenant; `None` for operators, who have none.
    #[must_use]
    pub fn tenant_scope(&self) -> Option<TenantScope> {
        self.tenant.as_ref().map(|(id, slug)| TenantScope {
            tenant: id.clone(),
            slug: slug.clone(),
            actor: self.actor(),
        })
    }

    /// The principal as the actor of audit entries.
    #[must_use]
    pub fn actor(&self) -> Actor {
        let kind = match &self.kind {
            PrincipalKind::User { .. } => "user",
            PrincipalKind::Agent { .. } => "agent",
            PrincipalKind::Operator { .. } => "operator",
        };
        Actor { kind: kind.to_owned(), id: self.id_str().to_owned() }
    }
}

/// Permission to touch one tenant's data, derived from an authenticated principal, who is
/// the actor of everything done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    tenant: TenantId,
    slug: TenantSlug,
    actor: Actor,
}

impl TenantScope {
    pub(crate) fn for_operator(tenant: TenantId, slug: TenantSlug, operator: &Principal) -> Self {
        Self { tenant, slug, actor: operator.actor() }
    }

    /// The same tenant, acted on by the system itself (for events no principal caused, such
    /// as a refused credential).
    pub(crate) fn system(tenant: TenantId, slug: TenantSlug, actor: Actor) -> Self {
        Self { tenant, slug, actor }
    }

    /// Who acts with this scope.
    #[must_use]
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The tenant this scope grants.
    #[must_use]
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }

    /// The tenant's slug.
    #[must_use]
    pub fn slug(&self) -> &TenantSlug {
        &self.slug
    }
}
