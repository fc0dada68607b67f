//! First start: when the data directory holds no tenant, create one and its first admin.

use airlock_store::{NewUser, Principal, Store, StoreError};
use airlock_types::{Email, Role, TenantSlug};
use secrecy::{ExposeSecret, SecretString};

/// What the first start created, to show the person who started Airlock, once.
pub struct FirstStart {
    /// The tenant's slug.
    pub tenant: TenantSlug,
    /// The admin's e-mail address.
    pub admin_email: Email,
    /// The admin's generated password.
    pub admin_password: SecretString,
}

impl std::fmt::Debug for FirstStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstStart")
            .field("tenant", &self.tenant)
            .field("admin_email", &self.admin_email)
            .finish_non_exhaustive()
    }
}

impl FirstStart {
    /// The generated password, for display.
    #[must_use]
    pub fn password(&self) -> &str {
        self.admin_password.expose_secret()
    }
}

/// Creates tenant `default` and user `admin@localhost` (role admin, random password) when no
/// tenant exists yet; does nothing otherwise.
pub async fn ensure_first_tenant(store: &Store) -> Result<Option<FirstStart>, StoreError> {
    if store.count_tenants().await? > 0 {
        return Ok(None);
    }
    let operator = Principal::local_operator();
    let slug = TenantSlug::parse("default").map_err(|e| StoreError::Invalid(e.to_string()))?;
    let tenant = store.create_tenant(&operator, &slug, "Default").await?;
    let scope = store.operator_scope(&operator, &tenant.slug).await?;
    let email = Email::parse("admin@localhost").map_err(|e| StoreError::Invalid(e.to_string()))?;
    let password = SecretString::from(airlock_crypto::random_base64url(18));
    store
        .create_user(
            &scope,
            NewUser {
                email: email.clone(),
                name: "Administrator".to_owned(),
                roles: [Role::Admin].into_iter().collect(),
                password: Some(password.clone()),
            },
        )
        .await?;
    Ok(Some(FirstStart { tenant: slug, admin_email: email, admin_password: password }))
}
