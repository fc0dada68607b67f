//! Runs, their leases, and the actions proposed in them.
//!
//! A run is an agent's declared piece of work: an intent, the tools it may need, a budget
//! and a lifetime. Its lease is a bearer token bound to that run (only a keyed hash is
//! kept). Actions are recorded before anything is executed: an action is written as
//! `executing` in the same transaction as its audit entry, and only then does the executor
//! act, so an idempotency key executes at most once, across retries and crashes.

use std::time::Duration;

use airlock_audit::{NoteSigner, Receipt};
use airlock_crypto::{Digest, SecretToken, TokenKind};
use airlock_types::{ActionId, RunId, Timestamp, ToolName};
use airlock_vault::Context;
use secrecy::SecretBox;
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{Appended, Operation};
use crate::principal::TenantScope;
use crate::{Store, StoreError};

/// A run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Its id.
    pub id: RunId,
    /// `agent` or `user`: who opened it.
    pub principal_kind: String,
    /// The id of who opened it.
    pub principal_id: String,
    /// What the run is for, in the requester's words.
    pub intent: String,
    /// The tools its lease allows.
    pub tools: Vec<String>,
    /// Destinations the intent names (domains, addresses), for the flow rules.
    pub destinations: Vec<String>,
    /// Data the principal provided with the request (a JSON object), trusted by the flow
    /// rules like the intent.
    pub inputs: Value,
    /// On whose behalf the agent acts.
    pub on_behalf_of: Option<String>,
    /// The run's budget, in cents.
    pub budget_cents: i64,
    /// What its executed actions cost so far, in cents.
    pub spent_cents: i64,
    /// When the lease expires.
    pub lease_expires_at: Timestamp,
    /// `active`, `completed`, `failed`, `killed` or `expired`.
    pub status: String,
    /// When it was opened.
    pub created_at: Timestamp,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
}

/// What a new run declares.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The intent.
    pub intent: String,
    /// The tools it may need.
    pub tools: Vec<ToolName>,
    /// Destinations the intent names.
    pub destinations: Vec<String>,
    /// Data the principal provides with the request (a JSON object).
    pub inputs: Value,
    /// On whose behalf.
    pub on_behalf_of: Option<String>,
    /// Budget in cents.
    pub budget_cents: i64,
    /// How long the lease lives.
    pub ttl: Duration,
}

/// A run as opened, with its lease (shown once).
#[derive(Debug)]
pub struct OpenedRun {
    /// The run.
    pub run: Run,
    /// The lease token (`alr_…`).
    pub lease: SecretToken,
}

/// Why a lease was refused. Answered alike to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// No such run for this principal, or a lease that does not match it.
    #[error("no valid lease for this run")]
    Invalid,
    /// The lease's lifetime is over.
    #[error("the run's lease has expired")]
    Expired,
    /// The run has ended.
    #[error("the run has ended")]
    Ended,
}

/// An action.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// Its id.
    pub id: ActionId,
    /// Its run.
    pub run_id: RunId,
    /// The tool.
    pub tool: String,
    /// The arguments as proposed.
    pub arguments: Value,
    /// SHA-256 of the canonical arguments, hex.
    pub arguments_digest: String,
    /// The caller's idempotency key.
    pub idempotency_key: String,
    /// `denied`, `pending_approval`, `executing`, `succeeded`, `unverified` or `failed`.
    pub status: String,
    /// The decision with its reasons.
    pub decision: Value,
    /// The outcome, once executed.
    pub outcome: Option<Value>,
    /// The signed receipt, once executed.
    pub receipt: Option<Value>,
    /// When it was proposed.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A new action to record.
#[derive(Debug, Clone)]
pub struct NewAction {
    /// The tool.
    pub tool: ToolName,
    /// The arguments.
    pub arguments: Value,
    /// Their digest.
    pub arguments_digest: String,
    /// The idempotency key.
    pub idempotency_key: String,
    /// Its first status (`denied`, `pending_approval` or `executing`).
    pub status: &'static str,
    /// The decision.
    pub decision: Value,
    /// Cost to charge the run when it executes, in cents.
    pub cost_cents: i64,
    /// For a `pending_approval` action: the approval request to open with it.
    pub approval: Option<crate::approvals::ApprovalRequest>,
}

const RUN_COLUMNS: &str = "id, principal_kind, principal_id, intent, tools, destinations, inputs, on_behalf_of, \
     budget_cents, spent_cents, lease_expires_at, status, created_at, ended_at";
const ACTION_COLUMNS: &str = "id, run_id, tool, arguments, arguments_digest, idempotency_key, status, decision, \
     outcome, receipt, created_at, updated_at";

fn json_column(row: &AnyRow, column: &str, table: &'static str) -> Result<Value, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::corrupt(table, e))
}

fn strings(value: Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn run_from_row(row: &AnyRow) -> Result<Run, StoreError> {
    Ok(Run {
        id: RunId::parse(&row.try_get::<String, _>("id")?).map_err(|e| StoreError::corrupt("runs", e))?,
        principal_kind: row.try_get("principal_kind")?,
        principal_id: row.try_get("principal_id")?,
        intent: row.try_get("intent")?,
        tools: strings(json_column(row, "tools", "runs")?),
        destinations: strings(json_column(row, "destinations", "runs")?),
        inputs: json_column(row, "inputs", "runs")?,
        on_behalf_of: row.try_get("on_behalf_of")?,
        budget_cents: row.try_get("budget_cents")?,
        spent_cents: row.try_get("spent_cents")?,
        lease_expires_at: Timestamp::from_millis(row.try_get("lease_expires_at")?),
        status: row.try_get("status")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        ended_at: row.try_get::<Option<i64>, _>("ended_at")?.map(Timestamp::from_millis),
    })
}

fn action_from_row(row: &AnyRow) -> Result<Action, StoreError> {
    let optional = |column: &str| -> Result<Option<Value>, StoreError> {
        row.try_get::<Option<String>, _>(column)?
            .map(|text| serde_json::from_str(&text).map_err(|e| StoreError::corrupt("actions", e)))
            .transpose()
    };
    Ok(Action {
        id: ActionId::parse(&row.try_get::<String, _>("id")?)
            .map_err(|e| StoreError::corrupt("actions", e))?,
        run_id: RunId::parse(&row.try_get::<String, _>("run_id")?)
            .map_err(|e| StoreError::corrupt("actions", e))?,
        tool: row.try_get("tool")?,
        arguments: json_column(row, "arguments", "actions")?,
        arguments_digest: row.try_get("arguments_digest")?,
        idempotency_key: row.try_get("idempotency_key")?,
        status: row.try_get("status")?,
        decision: json_column(row, "decision", "actions")?,
        outcome: optional("outcome")?,
        receipt: optional("receipt")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
    })
}

impl Store {
    /// Opens a run for the scope's principal and mints its lease.
    pub async fn open_run(&self, scope: &TenantScope, new: NewRun) -> Result<OpenedRun, StoreError> {
        let actor = scope.actor().clone();
        if actor.kind != "agent" && actor.kind != "user" {
            return Err(StoreError::Forbidden("only agents and users open runs".into()));
        }
        let now = Timestamp::now();
        let id = RunId::generate();
        let lease = SecretToken::generate(TokenKind::Lease, id.as_str());
        let run = Run {
            id: id.clone(),
            principal_kind: actor.kind.clone(),
            principal_id: actor.id.clone(),
            intent: new.intent,
            tools: new.tools.iter().map(ToString::to_string).collect(),
            destinations: new.destinations,
            inputs: new.inputs,
            on_behalf_of: new.on_behalf_of,
            budget_cents: new.budget_cents,
            spent_cents: 0,
            lease_expires_at: now.plus(new.ttl),
            status: "active".into(),
            created_at: now,
            ended_at: None,
        };
        let row = run.clone();
        let lease_hash = lease.hash(self.hasher()).as_bytes().to_vec();
        let operation: Operation = Box::new(move |conn, _event| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO runs (id, principal_kind, principal_id, intent, tools, destinations, on_behalf_of, \
                     budget_cents, spent_cents, lease_hash, lease_expires_at, status, created_at, inputs) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, 'active', $11, $12)",
                )
                .bind(row.id.as_str())
                .bind(row.principal_kind.as_str())
                .bind(row.principal_id.as_str())
                .bind(row.intent.as_str())
                .bind(Value::from(row.tools.clone()).to_string())
                .bind(Value::from(row.destinations.clone()).to_string())
                .bind(row.on_behalf_of.clone())
                .bind(row.budget_cents)
                .bind(lease_hash)
                .bind(row.lease_expires_at.as_millis())
                .bind(row.created_at.as_millis())
                .bind(row.inputs.to_string())
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        });
        let mut metadata = Map::new();
        metadata.insert("tools".into(), Value::from(run.tools.clone()));
        metadata.insert("budget_cents".into(), Value::from(run.budget_cents));
        metadata.insert("lease_expires_at".into(), Value::from(run.lease_expires_at.to_rfc3339()));
        // The intent is the requester's own words: its length is recorded, not its text.
        metadata.insert("intent_chars".into(), Value::from(run.intent.chars().count()));
        self.record_with(scope, "run.opened", &[("run", run.id.as_str())], metadata, operation).await?;
        Ok(OpenedRun { run, lease })
    }

    /// The run, for its own principal presenting its lease. Expired leases end the run.
    pub async fn run_for_lease(
        &self,
        scope: &TenantScope,
        run: &RunId,
        presented: &str,
    ) -> Result<Run, LeaseError> {
        let token = SecretToken::parse(TokenKind::Lease, presented, |id| id == run.as_str())
            .map_err(|_| LeaseError::Invalid)?;
        let db = self.tenant_db(scope).await.map_err(|_| LeaseError::Invalid)?;
        let sql = sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS}, lease_hash FROM runs WHERE id = $1"));
        let row = sqlx::query(sql)
            .bind(run.as_str())
            .fetch_optional(db.database().pool())
            .await
            .map_err(|_| LeaseError::Invalid)?
            .ok_or(LeaseError::Invalid)?;
        let stored: Vec<u8> = row.try_get("lease_hash").map_err(|_| LeaseError::Invalid)?;
        let presented_hash = token.hash(self.hasher());
        if !Digest::from_slice(&stored).is_some_and(|d| d.ct_eq(&presented_hash)) {
            return Err(LeaseError::Invalid);
        }
        let found = run_from_row(&row).map_err(|_| LeaseError::Invalid)?;
        if found.principal_id != scope.actor().id {
            return Err(LeaseError::Invalid);
        }
        if found.status != "active" {
            return Err(LeaseError::Ended);
        }
        if found.lease_expires_at <= Timestamp::now() {
            let _ = self.end_run(scope, run, "expired").await;
            return Err(LeaseError::Expired);
        }
        Ok(found)
    }

    /// One run of the tenant.
    pub async fn get_run(&self, scope: &TenantScope, run: &RunId) -> Result<Run, StoreError> {
        let db = self.tenant_db(scope).await?;
        let sql = sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"));
        let row = sqlx::query(sql)
            .bind(run.as_str())
            .fetch_optional(db.database().pool())
            .await?
            .ok_or_else(|| StoreError::NotFound { what: format!("run `{run}`") })?;
        run_from_row(&row)
    }

    /// Ends an active run as `completed`, `failed`, `killed` or `expired`. A run cannot
    /// complete while any of its actions is unverified or still executing.
    pub async fn end_run(
        &self,
        scope: &TenantScope,
        run: &RunId,
        status: &'static str,
    ) -> Result<Run, StoreError> {
        let id = run.clone();
        let operation: Operation = Box::new(move |conn, _event| {
            Box::pin(async move {
                if status == "completed" {
                    let open: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM actions WHERE run_id = $1 AND status IN ('unverified', 'executing')",
                    )
                    .bind(id.as_str())
                    .fetch_one(&mut *conn)
                    .await?;
                    if open > 0 {
                        return Err(StoreError::Invalid(format!(
                            "the run cannot complete: {open} of its actions are unverified or still executing"
                        )));
                    }
                }
                let changed = sqlx::query(
                    "UPDATE runs SET status = $1, ended_at = $2 WHERE id = $3 AND status = 'active'",
                )
                .bind(status)
                .bind(Timestamp::now().as_millis())
                .bind(id.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if changed == 0 {
                    return Err(StoreError::Invalid(format!("run `{id}` is not active")));
                }
                crate::approvals::cancel_pending(
                    conn,
                    "id = $2",
                    id.as_str(),
                    &format!("the run ended ({status})"),
                )
                .await?;
                Ok(())
            })
        });
        let event = format!("run.{status}");
        self.record_with(scope, &event, &[("run", run.as_str())], Map::new(), operation).await?;
        self.get_run(scope, run).await
    }

    /// The action recorded under `idempotency_key` in `run`, if any.
    pub async fn action_by_key(
        &self,
        scope: &TenantScope,
        run: &RunId,
        key: &str,
    ) -> Result<Option<Action>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE run_id = $1 AND idempotency_key = $2"
        ));
        let row = sqlx::query(sql).bind(run.as_str()).bind(key).fetch_optional(db.database().pool()).await?;
        row.as_ref().map(action_from_row).transpose()
    }

    /// One action of the tenant.
    pub async fn get_action(&self, scope: &TenantScope, id: &ActionId) -> Result<Action, StoreError> {
        let db = self.tenant_db(scope).await?;
        let sql = sqlx::AssertSqlSafe(format!("SELECT {ACTION_COLUMNS} FROM actions WHERE id = $1"));
        let row = sqlx::query(sql)
            .bind(id.as_str())
            .fetch_optional(db.database().pool())
            .await?
            .ok_or_else(|| StoreError::NotFound { what: format!("action `{id}`") })?;
        action_from_row(&row)
    }

    /// Records a proposed action with its decision. An `executing` action is charged to its
    /// run in the same transaction, refused when that would exceed the run's budget, and
    /// refused when its idempotency key is already taken (the caller then reads the first).
    pub async fn record_action(
        &self,
        scope: &TenantScope,
        run: &RunId,
        new: NewAction,
    ) -> Result<Action, StoreError> {
        let id = ActionId::generate();
        let now = Timestamp::now().as_millis();
        let (action_id, run_id, draft) = (id.clone(), run.clone(), new.clone());
        let operation: Operation = Box::new(move |conn, event| {
            Box::pin(async move {
                if draft.status == "executing" && draft.cost_cents > 0 {
                    let ceiling: Option<i64> =
                        sqlx::query_scalar("SELECT daily_cost_ceiling_cents FROM tools WHERE name = $1")
                            .bind(draft.tool.as_str())
                            .fetch_optional(&mut *conn)
                            .await?
                            .flatten();
                    if let Some(ceiling) = ceiling {
                        let calls: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM actions WHERE tool = $1 AND created_at > $2 \
                             AND status IN ('executing', 'succeeded', 'unverified', 'failed')",
                        )
                        .bind(draft.tool.as_str())
                        .bind(now - 86_400_000)
                        .fetch_one(&mut *conn)
                        .await?;
                        if (calls + 1).saturating_mul(draft.cost_cents) > ceiling {
                            return Err(StoreError::Invalid(format!(
                                "the tool's cost ceiling of {ceiling} cents per 24 hours would be exceeded"
                            )));
                        }
                    }
                    let charged = sqlx::query(
                        "UPDATE runs SET spent_cents = spent_cents + $1 WHERE id = $2 AND spent_cents + $1 <= budget_cents",
                    )
                    .bind(draft.cost_cents)
                    .bind(run_id.as_str())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if charged == 0 {
                        return Err(StoreError::Invalid(
                            "the run's budget does not cover this action".into(),
                        ));
                    }
                }
                sqlx::query(
                    "INSERT INTO actions (id, run_id, tool, arguments, arguments_digest, idempotency_key, status, \
                     decision, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                )
                .bind(action_id.as_str())
                .bind(run_id.as_str())
                .bind(draft.tool.as_str())
                .bind(draft.arguments.to_string())
                .bind(draft.arguments_digest.as_str())
                .bind(draft.idempotency_key.as_str())
                .bind(draft.status)
                .bind(draft.decision.to_string())
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(|e| StoreError::conflict_on_unique(e, || "an action with this idempotency key".to_owned()))?;
                if let Some(request) = &draft.approval {
                    let approval = crate::approvals::insert_approval(conn, &action_id, request).await?;
                    event.subject.insert("approval".into(), approval);
                }
                Ok(())
            })
        });
        let mut metadata = Map::new();
        metadata.insert("status".into(), Value::from(new.status));
        metadata.insert("arguments_digest".into(), Value::from(new.arguments_digest.as_str()));
        metadata.insert("decision".into(), new.decision.clone());
        let event = format!("action.{}", if new.status == "executing" { "permitted" } else { new.status });
        self.record_with(
            scope,
            &event,
            &[("action", id.as_str()), ("run", run.as_str()), ("tool", new.tool.as_str())],
            metadata,
            operation,
        )
        .await?;
        self.get_action(scope, &id).await
    }

    /// Records an executed action's outcome; returns where its entry landed with a checkpoint
    /// covering it (signed in the same commit), for the receipt.
    pub async fn complete_action(
        &self,
        scope: &TenantScope,
        action: &Action,
        status: &'static str,
        outcome: Value,
        metadata: Map<String, Value>,
    ) -> Result<Appended, StoreError> {
        let id = action.id.clone();
        let operation: Operation = Box::new(move |conn, _event| {
            Box::pin(async move {
                sqlx::query("UPDATE actions SET status = $1, outcome = $2, updated_at = $3 WHERE id = $4 AND status = 'executing'")
                    .bind(status)
                    .bind(outcome.to_string())
                    .bind(Timestamp::now().as_millis())
                    .bind(id.as_str())
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        });
        self.record_with_checkpoint(
            scope,
            &format!("action.{status}"),
            &[
                ("action", action.id.as_str()),
                ("run", action.run_id.as_str()),
                ("tool", action.tool.as_str()),
            ],
            metadata,
            operation,
        )
        .await
    }

    /// Signs a receipt with the tenant's current key and stores it with its action.
    pub async fn sign_receipt(
        &self,
        scope: &TenantScope,
        action: &ActionId,
        receipt: Receipt,
    ) -> Result<Receipt, StoreError> {
        let db = self.tenant_db(scope).await?;
        let dek = self.dek(scope.tenant_id()).await?;
        let signer: NoteSigner =
            crate::tenant::current_signer(db.database(), &crate::tenant::origin(scope.tenant_id()), &dek)
                .await?;
        let signed = receipt.sign(&signer).map_err(|e| StoreError::Audit(e.to_string()))?;
        let text = serde_json::to_string(&signed).map_err(|e| StoreError::Audit(e.to_string()))?;
        sqlx::query("UPDATE actions SET receipt = $1 WHERE id = $2")
            .bind(text)
            .bind(action.as_str())
            .execute(db.database().pool())
            .await?;
        Ok(signed)
    }

    /// The receipt of an action, if it has one.
    pub async fn receipt(&self, scope: &TenantScope, action: &ActionId) -> Result<Receipt, StoreError> {
        let action = self.get_action(scope, action).await?;
        let value = action
            .receipt
            .ok_or_else(|| StoreError::NotFound { what: format!("a receipt for action `{}`", action.id) })?;
        serde_json::from_value(value).map_err(|e| StoreError::corrupt("actions", e))
    }

    /// Opens a tool's credential for the executor, which is its only reader: the secret goes
    /// from here straight into the connector call and is never returned, logged or recorded.
    pub async fn open_credential_for_executor(
        &self,
        scope: &TenantScope,
        tool: &ToolName,
    ) -> Result<Option<(String, SecretBox<[u8]>)>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let row = sqlx::query(
            "SELECT c.id, c.kind, c.sealed FROM tools t JOIN credentials c ON c.id = t.credential_id WHERE t.name = $1",
        )
        .bind(tool.as_str())
        .fetch_optional(db.database().pool())
        .await?;
        self.open_credential_row(scope, row).await
    }

    /// Opens the sealed material of a `credentials` row (`id`, `kind`, `sealed`).
    async fn open_credential_row(
        &self,
        scope: &TenantScope,
        row: Option<AnyRow>,
    ) -> Result<Option<(String, SecretBox<[u8]>)>, StoreError> {
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get("id")?;
        let sealed: Vec<u8> = row.try_get("sealed")?;
        let dek = self.dek(scope.tenant_id()).await?;
        let material = dek.open(Context { table: "credentials", column: "sealed", row: &id }, &sealed)?;
        Ok(Some((row.try_get("kind")?, material)))
    }

    /// Opens a credential by name for the executor, to list an upstream MCP server's tools
    /// while importing them; like [`Self::open_credential_for_executor`], the secret goes
    /// straight to the executor and is never returned, logged or recorded.
    pub async fn open_credential_by_name_for_executor(
        &self,
        scope: &TenantScope,
        name: &ToolName,
    ) -> Result<Option<(String, SecretBox<[u8]>)>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let row = sqlx::query("SELECT id, kind, sealed FROM credentials WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(db.database().pool())
            .await?;
        self.open_credential_row(scope, row).await
    }
}
