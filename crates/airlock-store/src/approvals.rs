//! Approval requests and kill switches.
//!
//! An approval is created with its action, bound to the digest of the exact tool and
//! arguments, needs a number of distinct approvers (never the requester or the person the
//! agent acts for), expires, and is decided once: a decision on anything but a pending
//! request is refused, so a decision cannot be replayed. Each decision, and each kill switch,
//! changes state in the same transaction as its audit entry.
//!
//! A kill switch stops a run, an agent or the whole tenant (operators also have a
//! platform-wide one): it is checked on every decision, ends the runs it covers, and cancels
//! their pending approvals.

use std::time::Duration;

use airlock_types::{ActionId, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::Operation;
use crate::principal::{Principal, TenantScope};
use crate::runs::Run;
use crate::{Store, StoreError};

/// An approval request.
#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    /// Its id (`apr_…`).
    pub id: String,
    /// The action it is for.
    pub action_id: ActionId,
    /// SHA-256 over the canonical `{tool, arguments}` it approves, hex.
    pub digest: String,
    /// How many distinct approvers it needs.
    pub required: i64,
    /// `pending`, `approved`, `rejected`, `expired` or `cancelled`.
    pub status: String,
    /// Who proposed the action.
    pub requester: String,
    /// On whose behalf, if anyone's.
    pub on_behalf_of: Option<String>,
    /// When it expires.
    pub expires_at: Timestamp,
    /// When it was requested.
    pub created_at: Timestamp,
    /// When it was settled.
    pub decided_at: Option<Timestamp>,
    /// The decisions so far.
    pub decisions: Vec<ApprovalDecision>,
}

/// One approver's decision.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalDecision {
    /// The approver's user id.
    pub approver: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// Their reason.
    pub reason: String,
    /// When.
    pub created_at: Timestamp,
}

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// More approvals are needed.
    Pending,
    /// Enough approvals: the action may execute.
    Approved,
    /// Rejected: the action is denied.
    Rejected,
}

/// A kill switch.
#[derive(Debug, Clone, Serialize)]
pub struct KillSwitch {
    /// Its id (`kil_…`).
    pub id: String,
    /// `run`, `agent`, `tenant` (or `platform`).
    pub scope: String,
    /// The run or agent id, or the tenant id.
    pub target: String,
    /// Why.
    pub reason: String,
    /// Who set it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
    /// When it was lifted, if it was.
    pub lifted_at: Option<Timestamp>,
}

/// What a new approval request needs, given with its action.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    /// The digest of `{tool, arguments}`.
    pub digest: String,
    /// Distinct approvers needed.
    pub required: u32,
    /// How long it may wait.
    pub ttl: Duration,
    /// Who proposed it.
    pub requester: String,
    /// On whose behalf.
    pub on_behalf_of: Option<String>,
}

fn random_id(prefix: &str) -> String {
    let hex = airlock_crypto::random_hex(16);
    format!("{prefix}_{hex}")
}

const APPROVAL_COLUMNS: &str =
    "id, action_id, digest, required, status, requester, on_behalf_of, expires_at, created_at, decided_at";

fn approval_from_row(row: &AnyRow, decisions: Vec<ApprovalDecision>) -> Result<Approval, StoreError> {
    Ok(Approval {
        id: row.try_get("id")?,
        action_id: ActionId::parse(&row.try_get::<String, _>("action_id")?)
            .map_err(|e| StoreError::corrupt("approvals", e))?,
        digest: row.try_get("digest")?,
        required: row.try_get("required")?,
        status: row.try_get("status")?,
        requester: row.try_get("requester")?,
        on_behalf_of: row.try_get("on_behalf_of")?,
        expires_at: Timestamp::from_millis(row.try_get("expires_at")?),
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        decided_at: row.try_get::<Option<i64>, _>("decided_at")?.map(Timestamp::from_millis),
        decisions,
    })
}

fn kill_from_row(row: &AnyRow) -> Result<KillSwitch, StoreError> {
    Ok(KillSwitch {
        id: row.try_get("id")?,
        scope: row.try_get("scope")?,
        target: row.try_get("target")?,
        reason: row.try_get("reason")?,
        created_by: row.try_get("created_by")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        lifted_at: row.try_get::<Option<i64>, _>("lifted_at")?.map(Timestamp::from_millis),
    })
}

/// Inserts the approval request for `action`, inside the action's own transaction.
pub(crate) async fn insert_approval(
    conn: &mut sqlx::AnyConnection,
    action: &ActionId,
    request: &ApprovalRequest,
) -> Result<String, StoreError> {
    let id = random_id("apr");
    let now = Timestamp::now();
    sqlx::query(
        "INSERT INTO approvals (id, action_id, digest, required, status, requester, on_behalf_of, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8)",
    )
    .bind(id.as_str())
    .bind(action.as_str())
    .bind(request.digest.as_str())
    .bind(i64::from(request.required))
    .bind(request.requester.as_str())
    .bind(request.on_behalf_of.clone())
    .bind(now.plus(request.ttl).as_millis())
    .bind(now.as_millis())
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Cancels the pending approvals of actions in the runs `run_filter` selects, denying their
/// actions, inside the transaction of a kill switch or of a run's end.
pub(crate) async fn cancel_pending(
    conn: &mut sqlx::AnyConnection,
    run_filter: &str,
    target: &str,
    reason: &str,
) -> Result<u64, StoreError> {
    let now = Timestamp::now().as_millis();
    let decision =
        serde_json::json!({"verdict": "deny", "step": "cancelled", "reasons": [reason]}).to_string();
    // `run_filter` is one of three fixed clauses chosen by the caller, never input; the
    // approvals are cancelled first, while their actions are still pending.
    let approvals = format!(
        "UPDATE approvals SET status = 'cancelled', decided_at = $1 WHERE status = 'pending' AND action_id IN \
         (SELECT id FROM actions WHERE run_id IN (SELECT id FROM runs WHERE {run_filter}))"
    );
    let cancelled = sqlx::query(sqlx::AssertSqlSafe(approvals))
        .bind(now)
        .bind(target)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let actions = format!(
        "UPDATE actions SET status = 'denied', updated_at = $1, decision = $3 \
         WHERE status = 'pending_approval' AND run_id IN (SELECT id FROM runs WHERE {run_filter})"
    );
    sqlx::query(sqlx::AssertSqlSafe(actions))
        .bind(now)
        .bind(target)
        .bind(decision)
        .execute(&mut *conn)
        .await?;
    Ok(cancelled)
}

impl Store {
    /// Settles pending requests past their expiry: the request becomes `expired` and its
    /// action `denied`, recorded as one entry.
    async fn expire_due(&self, scope: &TenantScope) -> Result<(), StoreError> {
        let db = self.tenant_db(scope).await?;
        let due: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND expires_at <= $1",
        )
        .bind(Timestamp::now().as_millis())
        .fetch_one(db.database().pool())
        .await?;
        if due == 0 {
            return Ok(());
        }
        let operation: Operation = Box::new(move |conn, event| {
            Box::pin(async move {
                let now = Timestamp::now().as_millis();
                let decision =
                    serde_json::json!({"verdict": "deny", "step": "approval", "reasons": ["the approval request expired"]})
                        .to_string();
                sqlx::query(
                    "UPDATE actions SET status = 'denied', updated_at = $1, decision = $2 WHERE status = 'pending_approval' \
                     AND id IN (SELECT action_id FROM approvals WHERE status = 'pending' AND expires_at <= $1)",
                )
                .bind(now)
                .bind(decision)
                .execute(&mut *conn)
                .await?;
                let expired = sqlx::query(
                    "UPDATE approvals SET status = 'expired', decided_at = $1 WHERE status = 'pending' AND expires_at <= $1",
                )
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                event.metadata.insert("expired".into(), Value::from(expired));
                Ok(())
            })
        });
        self.record_with(scope, "approvals.expired", &[], Map::new(), operation).await?;
        Ok(())
    }

    /// Approval requests of the tenant, newest first, optionally only those with `status`.
    /// Pending requests past their expiry are settled as expired first.
    pub async fn list_approvals(
        &self,
        scope: &TenantScope,
        status: Option<&str>,
    ) -> Result<Vec<Approval>, StoreError> {
        self.expire_due(scope).await?;
        let db = self.tenant_db(scope).await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE ($1 IS NULL OR status = $1) ORDER BY created_at DESC LIMIT 500"
        ));
        let rows = sqlx::query(sql).bind(status.map(str::to_owned)).fetch_all(db.database().pool()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            out.push(approval_from_row(row, self.decisions(scope, &id).await?)?);
        }
        Ok(out)
    }

    /// One approval request (settling it as expired first, when it is due).
    pub async fn get_approval(&self, scope: &TenantScope, id: &str) -> Result<Approval, StoreError> {
        self.expire_due(scope).await?;
        let db = self.tenant_db(scope).await?;
        let sql = sqlx::AssertSqlSafe(format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(db.database().pool())
            .await?
            .ok_or_else(|| StoreError::NotFound { what: format!("approval `{id}`") })?;
        approval_from_row(&row, self.decisions(scope, id).await?)
    }

    /// The approval request of an action, if it has one.
    pub async fn approval_for_action(
        &self,
        scope: &TenantScope,
        action: &ActionId,
    ) -> Result<Option<Approval>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM approvals WHERE action_id = $1")
            .bind(action.as_str())
            .fetch_optional(db.database().pool())
            .await?;
        match id {
            Some(id) => Ok(Some(self.get_approval(scope, &id).await?)),
            None => Ok(None),
        }
    }

    async fn decisions(
        &self,
        scope: &TenantScope,
        approval: &str,
    ) -> Result<Vec<ApprovalDecision>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let rows = sqlx::query(
            "SELECT approver, decision, reason, created_at FROM approval_decisions WHERE approval_id = $1 ORDER BY created_at",
        )
        .bind(approval)
        .fetch_all(db.database().pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ApprovalDecision {
                    approver: row.try_get("approver")?,
                    decision: row.try_get("decision")?,
                    reason: row.try_get("reason")?,
                    created_at: Timestamp::from_millis(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    /// Records an approver's decision. Refused (changing nothing) when the request is not
    /// pending (decided, expired, cancelled: a replay), when `digest` is given and differs from
    /// what the request approves, when the approver is the requester or the person the agent
    /// acts for, or when they already decided. Enough approvals settle it `approved` and move
    /// the action to `executing`, charged to its run's budget; a rejection denies the action.
    pub async fn decide_approval(
        &self,
        scope: &TenantScope,
        id: &str,
        approve: bool,
        reason: &str,
        digest: Option<&str>,
    ) -> Result<(Approval, Settlement), StoreError> {
        let approval = self.get_approval(scope, id).await?;
        let approver = scope.actor().id.clone();
        if approval.status == "expired" {
            return Err(StoreError::Refused(format!("approval `{id}` has expired")));
        }
        let (approval_id, presented, reason_text) =
            (id.to_owned(), digest.map(str::to_owned), reason.to_owned());
        let approver_for_op = approver.clone();
        let settlement = std::sync::Arc::new(std::sync::Mutex::new(Settlement::Pending));
        let settled = settlement.clone();
        let operation: Operation = Box::new(move |conn, event| {
            Box::pin(async move {
                let row = sqlx::query(
                    "SELECT p.status, p.digest, p.required, p.requester, p.on_behalf_of, p.expires_at, p.action_id, \
                            a.run_id, r.status AS run_status, r.lease_expires_at \
                     FROM approvals p JOIN actions a ON a.id = p.action_id JOIN runs r ON r.id = a.run_id WHERE p.id = $1",
                )
                .bind(approval_id.as_str())
                .fetch_one(&mut *conn)
                .await?;
                let status: String = row.try_get("status")?;
                if status != "pending" {
                    return Err(StoreError::Refused(format!(
                        "approval `{approval_id}` is {status}; it cannot be decided again"
                    )));
                }
                let expected: String = row.try_get("digest")?;
                if presented.as_deref().is_some_and(|d| d != expected) {
                    return Err(StoreError::Refused(
                        "the digest does not match: the request is for other arguments than the ones shown"
                            .into(),
                    ));
                }
                let requester: String = row.try_get("requester")?;
                let on_behalf_of: Option<String> = row.try_get("on_behalf_of")?;
                if approver_for_op == requester || on_behalf_of.as_deref() == Some(approver_for_op.as_str()) {
                    return Err(StoreError::Forbidden("no one may approve their own request".into()));
                }
                if row.try_get::<String, _>("run_status")? != "active" {
                    return Err(StoreError::Refused(
                        "the run has ended; its requests cannot be decided".into(),
                    ));
                }
                if row.try_get::<i64, _>("lease_expires_at")? <= Timestamp::now().as_millis() {
                    return Err(StoreError::Refused(
                        "the run's lease has expired; its requests cannot be decided".into(),
                    ));
                }
                let now = Timestamp::now().as_millis();
                sqlx::query(
                    "INSERT INTO approval_decisions (approval_id, approver, decision, reason, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(approval_id.as_str())
                .bind(approver_for_op.as_str())
                .bind(if approve { "approve" } else { "reject" })
                .bind(reason_text.as_str())
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    if e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
                        StoreError::Refused("you have already decided this request".into())
                    } else {
                        StoreError::Database(e)
                    }
                })?;
                let action_id: String = row.try_get("action_id")?;
                let run_id: String = row.try_get("run_id")?;
                event.subject.insert("action".into(), action_id.clone());
                event.subject.insert("run".into(), run_id.clone());
                if !approve {
                    sqlx::query("UPDATE approvals SET status = 'rejected', decided_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(approval_id.as_str())
                        .execute(&mut *conn)
                        .await?;
                    let decision = serde_json::json!({
                        "verdict": "deny", "step": "approval", "reasons": [format!("rejected by an approver: {reason_text}")],
                    });
                    sqlx::query(
                        "UPDATE actions SET status = 'denied', updated_at = $1, decision = $2 WHERE id = $3",
                    )
                    .bind(now)
                    .bind(decision.to_string())
                    .bind(action_id.as_str())
                    .execute(&mut *conn)
                    .await?;
                    event.event_type = "approval.rejected".into();
                    *settled.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Settlement::Rejected;
                    return Ok(());
                }
                let approvals: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM approval_decisions WHERE approval_id = $1 AND decision = 'approve'",
                )
                .bind(approval_id.as_str())
                .fetch_one(&mut *conn)
                .await?;
                let required: i64 = row.try_get("required")?;
                event.metadata.insert("approvals".into(), Value::from(approvals));
                event.metadata.insert("required".into(), Value::from(required));
                if approvals < required {
                    return Ok(());
                }
                let cost: i64 = sqlx::query_scalar(
                    "SELECT COALESCE((SELECT t.cost_cents FROM tools t JOIN actions a ON a.tool = t.name WHERE a.id = $1), 0)",
                )
                .bind(action_id.as_str())
                .fetch_one(&mut *conn)
                .await?;
                let charged = sqlx::query(
                    "UPDATE runs SET spent_cents = spent_cents + $1 WHERE id = $2 AND spent_cents + $1 <= budget_cents",
                )
                .bind(cost)
                .bind(run_id.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if charged == 0 {
                    return Err(StoreError::Invalid("the run's budget no longer covers this action".into()));
                }
                sqlx::query("UPDATE approvals SET status = 'approved', decided_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(approval_id.as_str())
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("UPDATE actions SET status = 'executing', updated_at = $1 WHERE id = $2 AND status = 'pending_approval'")
                    .bind(now)
                    .bind(action_id.as_str())
                    .execute(&mut *conn)
                    .await?;
                event.event_type = "approval.approved".into();
                *settled.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Settlement::Approved;
                Ok(())
            })
        });
        let mut metadata = Map::new();
        metadata.insert("decision".into(), Value::from(if approve { "approve" } else { "reject" }));
        metadata.insert("reason".into(), Value::from(reason));
        self.record_with(
            scope,
            "approval.decided",
            &[("approval", id), ("approver", approver.as_str())],
            metadata,
            operation,
        )
        .await?;
        let outcome = *settlement.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok((self.get_approval(scope, id).await?, outcome))
    }

    /// Sets a kill switch on a run, an agent, or the whole tenant (`target` is then the tenant
    /// id): the runs it covers end as `killed` and their pending approvals are cancelled.
    pub async fn kill(
        &self,
        scope: &TenantScope,
        kind: &'static str,
        target: &str,
        reason: &str,
    ) -> Result<KillSwitch, StoreError> {
        let id = random_id("kil");
        let (kill_id, target_owned, reason_owned, by) =
            (id.clone(), target.to_owned(), reason.to_owned(), scope.actor().id.clone());
        let operation: Operation = Box::new(move |conn, event| {
            Box::pin(async move {
                let now = Timestamp::now().as_millis();
                sqlx::query(
                    "INSERT INTO kill_switches (id, scope, target, reason, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(kill_id.as_str())
                .bind(kind)
                .bind(target_owned.as_str())
                .bind(reason_owned.as_str())
                .bind(by.as_str())
                .bind(now)
                .execute(&mut *conn)
                .await?;
                // Each clause is fixed; only the bound target varies.
                let runs = match kind {
                    "run" => "id = $2",
                    "agent" => "principal_id = $2",
                    _ => "$2 IS NOT NULL",
                };
                let cancelled = cancel_pending(
                    conn,
                    runs,
                    &target_owned,
                    &format!("stopped by a kill switch: {reason_owned}"),
                )
                .await?;
                let ended = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE runs SET status = 'killed', ended_at = $1 WHERE status = 'active' AND {runs}"
                )))
                .bind(now)
                .bind(target_owned.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected();
                event.metadata.insert("runs_killed".into(), Value::from(ended));
                event.metadata.insert("approvals_cancelled".into(), Value::from(cancelled));
                Ok(())
            })
        });
        let mut metadata = Map::new();
        metadata.insert("scope".into(), Value::from(kind));
        metadata.insert("reason".into(), Value::from(reason));
        self.record_with(
            scope,
            "kill.set",
            &[("kill_switch", id.as_str()), ("target", target)],
            metadata,
            operation,
        )
        .await?;
        self.get_kill(scope, &id).await
    }

    /// Lifts a kill switch. Runs it ended stay ended.
    pub async fn lift_kill(&self, scope: &TenantScope, id: &str) -> Result<KillSwitch, StoreError> {
        let (kill_id, by) = (id.to_owned(), scope.actor().id.clone());
        let operation: Operation = Box::new(move |conn, _event| {
            Box::pin(async move {
                let changed = sqlx::query("UPDATE kill_switches SET lifted_at = $1, lifted_by = $2 WHERE id = $3 AND lifted_at IS NULL")
                    .bind(Timestamp::now().as_millis())
                    .bind(by.as_str())
                    .bind(kill_id.as_str())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if changed == 0 {
                    return Err(StoreError::NotFound { what: format!("active kill switch `{kill_id}`") });
                }
                Ok(())
            })
        });
        self.record_with(scope, "kill.lifted", &[("kill_switch", id)], Map::new(), operation).await?;
        self.get_kill(scope, id).await
    }

    async fn get_kill(&self, scope: &TenantScope, id: &str) -> Result<KillSwitch, StoreError> {
        let db = self.tenant_db(scope).await?;
        let row = sqlx::query("SELECT id, scope, target, reason, created_by, created_at, lifted_at FROM kill_switches WHERE id = $1")
            .bind(id)
            .fetch_optional(db.database().pool())
            .await?
            .ok_or_else(|| StoreError::NotFound { what: format!("kill switch `{id}`") })?;
        kill_from_row(&row)
    }

    /// The tenant's kill switches, active ones first.
    pub async fn list_kills(&self, scope: &TenantScope) -> Result<Vec<KillSwitch>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let rows = sqlx::query(
            "SELECT id, scope, target, reason, created_by, created_at, lifted_at FROM kill_switches \
             ORDER BY lifted_at IS NOT NULL, created_at DESC LIMIT 500",
        )
        .fetch_all(db.database().pool())
        .await?;
        rows.iter().map(kill_from_row).collect()
    }

    /// Why `run` (or its agent, its tenant, or the platform) is stopped, if it is.
    pub async fn stopped(
        &self,
        scope: &TenantScope,
        run: Option<&Run>,
        principal: &str,
    ) -> Result<Option<String>, StoreError> {
        if let Some(reason) = self.platform_stopped().await? {
            return Ok(Some(format!("the platform is stopped: {reason}")));
        }
        let db = self.tenant_db(scope).await?;
        let reason: Option<String> = sqlx::query_scalar(
            "SELECT scope || ' stopped: ' || reason FROM kill_switches WHERE lifted_at IS NULL AND \
             ((scope = 'tenant') OR (scope = 'agent' AND target = $1) OR (scope = 'run' AND target = $2)) LIMIT 1",
        )
        .bind(principal)
        .bind(run.map(|r| r.id.to_string()).unwrap_or_default())
        .fetch_optional(db.database().pool())
        .await?;
        Ok(reason)
    }

    /// Sets the platform-wide kill switch. Operators only.
    pub async fn platform_kill(&self, by: &Principal, reason: &str) -> Result<String, StoreError> {
        if !by.is_operator() {
            return Err(StoreError::Forbidden("only platform operators stop the platform".into()));
        }
        let id = random_id("kil");
        sqlx::query(
            "INSERT INTO platform_kill_switches (id, reason, created_by, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.as_str())
        .bind(reason)
        .bind(by.id_str())
        .bind(Timestamp::now().as_millis())
        .execute(self.control().pool())
        .await?;
        tracing::warn!(kill_switch = %id, "platform-wide kill switch set");
        Ok(id)
    }

    /// Lifts the platform-wide kill switch(es). Operators only.
    pub async fn platform_lift(&self, by: &Principal) -> Result<u64, StoreError> {
        if !by.is_operator() {
            return Err(StoreError::Forbidden("only platform operators restart the platform".into()));
        }
        let lifted = sqlx::query(
            "UPDATE platform_kill_switches SET lifted_at = $1, lifted_by = $2 WHERE lifted_at IS NULL",
        )
        .bind(Timestamp::now().as_millis())
        .bind(by.id_str())
        .execute(self.control().pool())
        .await?
        .rows_affected();
        tracing::warn!(lifted, "platform-wide kill switch lifted");
        Ok(lifted)
    }

    /// The reason of the active platform-wide kill switch, if one is set.
    pub async fn platform_stopped(&self) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT reason FROM platform_kill_switches WHERE lifted_at IS NULL LIMIT 1")
            .fetch_optional(self.control().pool())
            .await?)
    }
}
