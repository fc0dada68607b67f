//! The model gateway's tenant state: each model alias's chain of provider routes (provider
//! keys sealed with the DEK and never returned), prices, the gateway settings (versioned,
//! validated by the caller), and the usage ledger budgets are checked against.
//!
//! Budgets hold under concurrency because a call is *reserved* before it is sent, inside a
//! write transaction that first sums everything already reserved or spent: two parallel calls
//! cannot both see the room that only one of them fits in. After the call the reservation is
//! *settled* with the upstream's usage, or *released* when nothing was spent.

use airlock_types::Timestamp;
use airlock_vault::Context;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::Operation;
use crate::principal::TenantScope;
use crate::versioned::MODEL_SETTINGS;
use crate::{Store, StoreError};

/// One provider route of a model alias, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRoute {
    /// Its id (`rte_…`).
    pub id: String,
    /// Its place in the alias's fallback chain, from 0.
    pub position: i64,
    /// `openai`, `azure_openai` or `anthropic`.
    pub provider: String,
    /// The provider's base URL.
    pub base_url: String,
    /// The model (or Azure deployment) name at the provider.
    pub upstream_model: String,
    /// The Azure API version.
    pub api_version: Option<String>,
    /// Whether a provider key is stored (the key itself never leaves the store this way).
    pub has_key: bool,
}

/// A new route for [`Store::put_model_routes`].
#[derive(Debug)]
pub struct NewModelRoute {
    /// `openai`, `azure_openai` or `anthropic` (validated by the caller).
    pub provider: String,
    /// The provider's base URL (validated by the caller).
    pub base_url: String,
    /// The model name at the provider.
    pub upstream_model: String,
    /// The Azure API version.
    pub api_version: Option<String>,
    /// The provider key: `Some` to store it, `None` to keep the key of the route now at the
    /// same position with the same provider and base URL (or have none).
    pub api_key: Option<SecretString>,
}

/// A model alias: its routes and price.
#[derive(Debug, Clone, Serialize)]
pub struct ModelAlias {
    /// The name clients ask for.
    pub alias: String,
    /// Its fallback chain, in order.
    pub routes: Vec<ModelRoute>,
    /// Cents per million input tokens.
    pub input_cents_per_mtok: i64,
    /// Cents per million output tokens.
    pub output_cents_per_mtok: i64,
}

/// A route with its provider key opened, for the gateway to call.
pub struct OpenedRoute {
    /// The route.
    pub route: ModelRoute,
    /// Its provider key.
    pub api_key: Option<SecretString>,
}

impl std::fmt::Debug for OpenedRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedRoute").field("route", &self.route).finish_non_exhaustive()
    }
}

/// A version of the gateway settings (its text is the settings as JSON).
pub type ModelSettings = crate::versioned::Version;

/// The limits a reservation is checked against; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default)]
pub struct BudgetLimits {
    /// Tokens the principal may use per UTC day.
    pub principal_daily_tokens: Option<i64>,
    /// Micro-cents the tenant may spend per UTC month.
    pub tenant_monthly_ucents: Option<i64>,
    /// Micro-cents the principal may spend in any 60 seconds before its breaker trips.
    pub principal_ucents_per_minute: Option<i64>,
    /// Micro-cents the tenant may spend in any 60 seconds before its breaker trips.
    pub tenant_ucents_per_minute: Option<i64>,
    /// How long a tripped breaker stays open, in milliseconds.
    pub breaker_cooldown_ms: i64,
}

/// A call to reserve room for.
#[derive(Debug, Clone)]
pub struct Reserve {
    /// Who calls (`usr_…`, `agt_…`).
    pub principal: String,
    /// The model alias.
    pub alias: String,
    /// The most tokens the call may use (input estimate plus the output cap).
    pub tokens: i64,
    /// The most it may cost, in micro-cents.
    pub ucents: i64,
}

/// Usage settled against a reservation.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Settle {
    /// Input tokens the upstream reported.
    pub input_tokens: i64,
    /// Output tokens the upstream reported.
    pub output_tokens: i64,
    /// Their cost, in micro-cents.
    pub cost_ucents: i64,
}

/// A stored route's sealed key, kept when its route is rewritten without one.
struct KeptKey {
    id: String,
    provider: String,
    base_url: String,
    sealed: Vec<u8>,
}

/// The key's place.
fn route_key_context(id: &str) -> Context<'_> {
    Context { table: "model_routes", column: "key_sealed", row: id }
}

fn route_from_row(row: &AnyRow) -> Result<ModelRoute, StoreError> {
    let key: Option<Vec<u8>> = row.try_get("key_sealed")?;
    Ok(ModelRoute {
        id: row.try_get("id")?,
        position: row.try_get("position")?,
        provider: row.try_get("provider")?,
        base_url: row.try_get("base_url")?,
        upstream_model: row.try_get("upstream_model")?,
        api_version: row.try_get("api_version")?,
        has_key: key.is_some(),
    })
}

const ROUTE_COLUMNS: &str = "id, position, provider, base_url, upstream_model, api_version, key_sealed";

impl Store {
    /// Replaces an alias's fallback chain and price, on the record. Keys given are sealed;
    /// a route without a key keeps the key of the route it replaces (same position, provider
    /// and base URL).
    pub async fn put_model_routes(
        &self,
        scope: &TenantScope,
        alias: &str,
        routes: Vec<NewModelRoute>,
        input_cents_per_mtok: i64,
        output_cents_per_mtok: i64,
    ) -> Result<ModelAlias, StoreError> {
        let dek = self.dek(scope.tenant_id()).await?;
        let name = alias.to_owned();
        let count = routes.len();
        let operation: Operation = Box::new(move |conn, _event| {
            Box::pin(async move {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {ROUTE_COLUMNS} FROM model_routes WHERE alias = $1 ORDER BY position"
                ));
                let old = sqlx::query(sql).bind(name.as_str()).fetch_all(&mut *conn).await?;
                let mut kept: Vec<Option<KeptKey>> = Vec::new();
                for row in &old {
                    let sealed: Option<Vec<u8>> = row.try_get("key_sealed")?;
                    kept.push(match sealed {
                        Some(sealed) => Some(KeptKey {
                            id: row.try_get("id")?,
                            provider: row.try_get("provider")?,
                            base_url: row.try_get("base_url")?,
                            sealed,
                        }),
                        None => None,
                    });
                }
                sqlx::query("DELETE FROM model_routes WHERE alias = $1")
                    .bind(name.as_str())
                    .execute(&mut *conn)
                    .await?;
                let now = Timestamp::now().as_millis();
                for (position, route) in routes.into_iter().enumerate() {
                    let id = format!("rte_{}", airlock_crypto::random_hex(16));
                    let sealed = match &route.api_key {
                        Some(key) => Some(dek.seal(route_key_context(&id), key.expose_secret().as_bytes())),
                        None => match kept.get(position).and_then(Option::as_ref) {
                            Some(old) if old.provider == route.provider && old.base_url == route.base_url => {
                                // Re-sealed for the new row: the old ciphertext is bound to
                                // the old row's id.
                                let key = dek.open(route_key_context(&old.id), &old.sealed)?;
                                Some(dek.seal(route_key_context(&id), key.expose_secret()))
                            }
                            _ => None,
                        },
                    };
                    sqlx::query(
                        "INSERT INTO model_routes (id, alias, position, provider, base_url, upstream_model, \
                         api_version, key_sealed, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(id.as_str())
                    .bind(name.as_str())
                    .bind(i64::try_from(position).unwrap_or(i64::MAX))
                    .bind(route.provider.as_str())
                    .bind(route.base_url.as_str())
                    .bind(route.upstream_model.as_str())
                    .bind(route.api_version.as_deref())
                    .bind(sealed)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO model_prices (alias, input_cents_per_mtok, output_cents_per_mtok) VALUES ($1, $2, $3) \
                     ON CONFLICT (alias) DO UPDATE SET input_cents_per_mtok = $2, output_cents_per_mtok = $3",
                )
                .bind(name.as_str())
                .bind(input_cents_per_mtok)
                .bind(output_cents_per_mtok)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        });
        let mut metadata = Map::new();
        metadata.insert("alias".into(), Value::from(alias));
        metadata.insert("routes".into(), Value::from(count));
        metadata.insert("input_cents_per_mtok".into(), Value::from(input_cents_per_mtok));
        metadata.insert("output_cents_per_mtok".into(), Value::from(output_cents_per_mtok));
        self.record_with(scope, "model.routes_updated", &[], metadata, operation).await?;
        self.model_alias(scope, alias)
            .await?
            .ok_or_else(|| StoreError::Audit("the routes written are not readable".into()))
    }

    /// Removes an alias and its routes, on the record.
    pub async fn delete_model_alias(&self, scope: &TenantScope, alias: &str) -> Result<(), StoreError> {
        if self.model_alias(scope, alias).await?.is_none() {
            return Err(StoreError::NotFound { what: format!("model `{alias}`") });
        }
        let name = alias.to_owned();
        let operation: Operation = Box::new(move |conn, _event| {
            Box::pin(async move {
                sqlx::query("DELETE FROM model_routes WHERE alias = $1")
                    .bind(name.as_str())
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("DELETE FROM model_prices WHERE alias = $1")
                    .bind(name.as_str())
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        });
        let mut metadata = Map::new();
        metadata.insert("alias".into(), Value::from(alias));
        self.record_with(scope, "model.routes_deleted", &[], metadata, operation).await?;
        Ok(())
    }

    /// One alias, if it has routes.
    pub async fn model_alias(
        &self,
        scope: &TenantScope,
        alias: &str,
    ) -> Result<Option<ModelAlias>, StoreError> {
        Ok(self.aliases_named(scope, Some(alias)).await?.pop())
    }

    /// Every alias with routes, by name.
    pub async fn model_aliases(&self, scope: &TenantScope) -> Result<Vec<ModelAlias>, StoreError> {
        self.aliases_named(scope, None).await
    }

    /// The aliases with routes: all of them, or the one named (the gateway asks for one on
    /// every call, so it is read alone rather than found among all).
    async fn aliases_named(
        &self,
        scope: &TenantScope,
        only: Option<&str>,
    ) -> Result<Vec<ModelAlias>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT r.alias AS alias, {ROUTE_COLUMNS}, COALESCE(p.input_cents_per_mtok, 0) AS input_price, \
             COALESCE(p.output_cents_per_mtok, 0) AS output_price \
             FROM model_routes r LEFT JOIN model_prices p ON p.alias = r.alias \
             WHERE $1 IS NULL OR r.alias = $1 ORDER BY r.alias, r.position"
        ));
        let rows = sqlx::query(sql).bind(only).fetch_all(db.database().pool()).await?;
        let mut aliases: Vec<ModelAlias> = Vec::new();
        for row in &rows {
            let alias: String = row.try_get("alias")?;
            let route = route_from_row(row)?;
            match aliases.last_mut() {
                Some(last) if last.alias == alias => last.routes.push(route),
                _ => aliases.push(ModelAlias {
                    alias,
                    routes: vec![route],
                    input_cents_per_mtok: row.try_get("input_price")?,
                    output_cents_per_mtok: row.try_get("output_price")?,
                }),
            }
        }
        Ok(aliases)
    }

    /// An alias's routes with their provider keys opened, for the gateway to call.
    pub async fn open_model_routes(
        &self,
        scope: &TenantScope,
        alias: &str,
    ) -> Result<Vec<OpenedRoute>, StoreError> {
        let dek = self.dek(scope.tenant_id()).await?;
        let db = self.tenant_db(scope).await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ROUTE_COLUMNS} FROM model_routes WHERE alias = $1 ORDER BY position"
        ));
        let rows = sqlx::query(sql).bind(alias).fetch_all(db.database().pool()).await?;
        let mut opened = Vec::with_capacity(rows.len());
        for row in &rows {
            let route = route_from_row(row)?;
            let sealed: Option<Vec<u8>> = row.try_get("key_sealed")?;
            let api_key = match sealed {
                Some(sealed) => {
                    let key = dek.open(route_key_context(&route.id), &sealed)?;
                    let text =
                        String::from_utf8(key.expose_secret().to_vec()).map_err(|_| StoreError::Corrupt {
                            table: "model_routes",
                            detail: "provider key is not UTF-8".into(),
                        })?;
                    Some(SecretString::from(text))
                }
                None => None,
            };
            opened.push(OpenedRoute { route, api_key });
        }
        Ok(opened)
    }

    /// The gateway settings in force, if the tenant has written any.
    pub async fn model_settings(&self, scope: &TenantScope) -> Result<Option<ModelSettings>, StoreError> {
        self.latest_version(scope, &MODEL_SETTINGS).await
    }

    /// Writes a new version of the gateway settings (validated by the caller), on the record.
    pub async fn put_model_settings(
        &self,
        scope: &TenantScope,
        settings: &str,
    ) -> Result<ModelSettings, StoreError> {
        self.put_version(scope, &MODEL_SETTINGS, settings).await
    }

    /// Reserves room for a call, or refuses it naming the limit it would break. Nothing is
    /// reserved when refused.
    pub async fn reserve_model_call(
        &self,
        scope: &TenantScope,
        call: &Reserve,
        limits: &BudgetLimits,
    ) -> Result<String, StoreError> {
        let db = self.tenant_db(scope).await?;
        let now = Timestamp::now();
        let stamp = now.to_rfc3339();
        let (day, month) = (stamp.get(..10).unwrap_or_default(), stamp.get(..7).unwrap_or_default());
        let (mut tx, _gate) = db.database().begin_write().await?;
        let tenant_subject = "tenant";
        for subject in [call.principal.as_str(), tenant_subject] {
            let until: Option<i64> =
                sqlx::query_scalar("SELECT tripped_until FROM model_breakers WHERE subject = $1")
                    .bind(subject)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(until) = until
                && until > now.as_millis()
            {
                let who = if subject == tenant_subject { "the tenant's" } else { "this caller's" };
                return Err(StoreError::Refused(format!(
                    "{who} spend-rate breaker is open until {}",
                    Timestamp::from_millis(until).to_rfc3339()
                )));
            }
        }
        if let Some(limit) = limits.principal_daily_tokens {
            let used: i64 = sqlx::query_scalar(
                "SELECT COALESCE(SUM(CASE WHEN state = 'settled' THEN input_tokens + output_tokens \
                 WHEN state = 'reserved' THEN reserved_tokens ELSE 0 END), 0) \
                 FROM model_usage WHERE principal = $1 AND day = $2",
            )
            .bind(call.principal.as_str())
            .bind(day)
            .fetch_one(&mut *tx)
            .await?;
            if used.saturating_add(call.tokens) > limit {
                return Err(StoreError::Refused(format!(
                    "the daily token budget of {limit} tokens per caller would be exceeded ({used} used or reserved today, \
                     this call may use {})",
                    call.tokens
                )));
            }
        }
        if let Some(limit) = limits.tenant_monthly_ucents {
            let spent: i64 = sqlx::query_scalar(
                "SELECT COALESCE(SUM(CASE WHEN state = 'settled' THEN cost_ucents \
                 WHEN state = 'reserved' THEN reserved_ucents ELSE 0 END), 0) FROM model_usage WHERE month = $1",
            )
            .bind(month)
            .fetch_one(&mut *tx)
            .await?;
            if spent.saturating_add(call.ucents) > limit {
                return Err(StoreError::Refused(format!(
                    "the tenant's monthly model spend cap of {} cents would be exceeded",
                    limit / 1_000_000
                )));
            }
        }
        let window_start = now.as_millis() - 60_000;
        let rates = [
            (limits.principal_ucents_per_minute, Some(call.principal.as_str()), call.principal.as_str()),
            (limits.tenant_ucents_per_minute, None, tenant_subject),
        ];
        for (limit, principal, subject) in rates {
            let Some(limit) = limit else { continue };
            let spent: i64 = sqlx::query_scalar(
                "SELECT COALESCE(SUM(CASE WHEN state = 'settled' THEN cost_ucents \
                 WHEN state = 'reserved' THEN reserved_ucents ELSE 0 END), 0) FROM model_usage \
                 WHERE created_at > $1 AND ($2 IS NULL OR principal = $2)",
            )
            .bind(window_start)
            .bind(principal)
            .fetch_one(&mut *tx)
            .await?;
            if spent.saturating_add(call.ucents) > limit {
                let until = now.as_millis().saturating_add(limits.breaker_cooldown_ms);
                sqlx::query(
                    "INSERT INTO model_breakers (subject, tripped_until) VALUES ($1, $2) \
                     ON CONFLICT (subject) DO UPDATE SET tripped_until = $2",
                )
                .bind(subject)
                .bind(until)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                let who = if principal.is_none() { "the tenant's" } else { "this caller's" };
                return Err(StoreError::Refused(format!(
                    "{who} model spend rate exceeded {} cents per minute; its breaker is open until {}",
                    limit / 1_000_000,
                    Timestamp::from_millis(until).to_rfc3339()
                )));
            }
        }
        let id = format!("use_{}", airlock_crypto::random_hex(16));
        sqlx::query(
            "INSERT INTO model_usage (id, principal, alias, day, month, state, reserved_tokens, reserved_ucents, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'reserved', $6, $7, $8)",
        )
        .bind(id.as_str())
        .bind(call.principal.as_str())
        .bind(call.alias.as_str())
        .bind(day)
        .bind(month)
        .bind(call.tokens)
        .bind(call.ucents)
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Ends a call: settles its reservation with what it used (or releases it when `usage` is
    /// `None`) and records the call's audit entry, in one transaction.
    pub async fn finish_model_call(
        &self,
        scope: &TenantScope,
        reservation: Option<&str>,
        usage: Option<Settle>,
        subject: &[(&str, &str)],
        metadata: Map<String, Value>,
    ) -> Result<(), StoreError> {
        let id = reservation.map(str::to_owned);
        let operation: Operation = Box::new(move |conn, _event| {
            Box::pin(async move {
                let Some(id) = id else { return Ok(()) };
                let now = Timestamp::now().as_millis();
                match usage {
                    Some(usage) => {
                        sqlx::query(
                            "UPDATE model_usage SET state = 'settled', input_tokens = $1, output_tokens = $2, \
                             cost_ucents = $3, settled_at = $4 WHERE id = $5",
                        )
                        .bind(usage.input_tokens)
                        .bind(usage.output_tokens)
                        .bind(usage.cost_ucents)
                        .bind(now)
                        .bind(id.as_str())
                        .execute(&mut *conn)
                        .await?
                    }
                    None => {
                        sqlx::query(
                            "UPDATE model_usage SET state = 'released', settled_at = $1 WHERE id = $2 AND state = 'reserved'",
                        )
                        .bind(now)
                        .bind(id.as_str())
                        .execute(&mut *conn)
                        .await?
                    }
                };
                Ok(())
            })
        });
        self.record_with(scope, "model.call", subject, metadata, operation).await?;
        Ok(())
    }

    /// Spend settled this UTC month, in micro-cents, and tokens settled today by `principal`.
    pub async fn model_spend(&self, scope: &TenantScope, principal: &str) -> Result<(i64, i64), StoreError> {
        let db = self.tenant_db(scope).await?;
        let stamp = Timestamp::now().to_rfc3339();
        let (day, month) = (stamp.get(..10).unwrap_or_default(), stamp.get(..7).unwrap_or_default());
        let spent: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(cost_ucents), 0) FROM model_usage WHERE month = $1 AND state = 'settled'",
        )
        .bind(month)
        .fetch_one(db.database().pool())
        .await?;
        let tokens: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(input_tokens + output_tokens), 0) FROM model_usage \
             WHERE principal = $1 AND day = $2 AND state = 'settled'",
        )
        .bind(principal)
        .bind(day)
        .fetch_one(db.database().pool())
        .await?;
        Ok((spent, tokens))
    }
}
