//! Approvals and kill switches over HTTP, against a recording upstream: an action held for
//! approval executes once, only after enough distinct approvers (never the requester, the
//! person the agent acts for, an agent, or someone without the approver role) approved
//! exactly what they saw; a decision is final, cannot be replayed and expires; kill switches
//! stop a run, an agent, the tenant or the platform from the next decision on; and every
//! decision and kill switch is on the audit record.

use std::ops::Deref;
use std::time::Duration;

use airlock_audit::{Entry, Receipt};
use airlock_server::Config;
use airlock_types::{Role, RunId};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::common::runs::{
    RunFixture, World, complete, digest_hex, merged, open_run, post, proposal, propose_raw, reasons, tool,
};
use crate::common::upstream::Behaviour;
use crate::common::{Reply, UserFixture};

/// The intent every agent run of these tests declares.
const INTENT: &str = "help a customer with their ticket";

// ---- helpers ------------------------------------------------------------------------------

/// A world with a financial tool `pay` (250 cents, to the upstream's `/pay`, which answers
/// `201 {"id": "pay-1"}`), a write tool `note` (to `/notes`), and two approvers, Ann and Bob.
struct Desk {
    world: World,
    ann: UserFixture,
    bob: UserFixture,
}

impl Deref for Desk {
    type Target = World;

    fn deref(&self) -> &World {
        &self.world
    }
}

/// An action held for approval, and its approval request as an approver lists it.
struct Held {
    action: Value,
    approval: Value,
}

impl Held {
    /// The approval request's id (`apr_…`).
    fn id(&self) -> &str {
        self.approval["id"].as_str().expect("an approval id")
    }

    /// The digest the request is bound to.
    fn digest(&self) -> &str {
        self.approval["digest"].as_str().expect("a digest")
    }

    /// The held action's id.
    fn action_id(&self) -> &str {
        self.action["id"].as_str().expect("an action id")
    }
}

/// The arguments of a payment.
fn payment(key: &str) -> Value {
    json!({"to": "acct-42", "subject": format!("invoice {key}"), "count": 100})
}

/// A decision's body.
fn decision(decision: &str, reason: &str, digest: Option<&str>) -> Value {
    match digest {
        Some(digest) => json!({"decision": decision, "reason": reason, "digest": digest}),
        None => json!({"decision": decision, "reason": reason}),
    }
}

/// A policy under which a payment needs two approvers.
const TWO_APPROVERS: &str = r#"@id("pay-two") @approval("2") @reason("payments need two people")
permit(principal, action, resource) when { resource.name == "pay" };
"#;

impl Desk {
    async fn new() -> Self {
        Self::spawn_with(|_| {}).await
    }

    async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let world = World::spawn_with(adjust).await;
        world.upstream.on("/pay", Behaviour::json(201, json!({"id": "pay-1"})));
        let pay = merged(tool("pay", "financial", post(&world.upstream, "/pay")), json!({"cost_cents": 250}));
        world.register(&pay).await;
        world.register(&tool("note", "write", post(&world.upstream, "/notes"))).await;
        let ann = world.app.user(&world.tenant.scope, "ann@acme.example", &[Role::Approver]).await;
        let bob = world.app.user(&world.tenant.scope, "bob@acme.example", &[Role::Approver]).await;
        Self { world, ann, bob }
    }

    /// A user of the tenant holding `roles`.
    async fn user(&self, email: &str, roles: &[Role]) -> UserFixture {
        self.app.user(&self.tenant.scope, email, roles).await
    }

    /// The agent proposes `pay` with `arguments` in `run`; the action is held, and its request
    /// is listed.
    async fn hold_with(&self, run: &RunFixture, key: &str, arguments: &Value) -> Held {
        let action = self.act(run, "pay", arguments, key).await;
        assert_eq!(action["status"], "pending_approval", "{action}");
        let approval = self.approval_of(&action).await;
        Held { action, approval }
    }

    /// The agent proposes a payment in `run`; it is held.
    async fn hold(&self, run: &RunFixture, key: &str) -> Held {
        self.hold_with(run, key, &payment(key)).await
    }

    /// The approval request of `action`, from the list as the administrator reads it.
    async fn approval_of(&self, action: &Value) -> Value {
        let listed = self.app.get_ok("/v1/approvals", self.admin()).await;
        let found = listed
            .as_array()
            .expect("a list of approvals")
            .iter()
            .find(|a| a["action"]["id"] == action["id"]);
        found.unwrap_or_else(|| panic!("no approval request for {action} in {listed}")).clone()
    }

    /// `GET /v1/approvals/{id}` as the administrator.
    async fn approval(&self, id: &str) -> Value {
        self.app.get_ok(&format!("/v1/approvals/{id}"), self.admin()).await
    }

    /// `GET /v1/actions/{id}` as the administrator.
    async fn action(&self, id: &str) -> Value {
        self.app.get_ok(&format!("/v1/actions/{id}"), self.admin()).await
    }

    /// `GET /v1/runs/{id}`'s status, as the administrator reads it.
    async fn run_status(&self, run: &RunFixture) -> Value {
        self.app.get_ok(&format!("/v1/runs/{}", run.id), self.admin()).await["status"].clone()
    }

    /// `POST /v1/approvals/{id}/decision` with `key`.
    async fn decide(&self, key: &str, id: &str, body: &Value) -> Reply {
        self.app.post(&format!("/v1/approvals/{id}/decision"), key, body).await
    }

    /// `key` approves `held` with its digest.
    async fn approve(&self, key: &str, held: &Held) -> Reply {
        self.decide(key, held.id(), &decision("approve", "checked against the invoice", Some(held.digest())))
            .await
    }

    /// `key` rejects `held` with `reason`.
    async fn reject(&self, key: &str, held: &Held, reason: &str) -> Reply {
        self.decide(key, held.id(), &decision("reject", reason, Some(held.digest()))).await
    }

    /// `POST /v1/kill` as the administrator, expecting 201.
    async fn kill(&self, body: &Value) -> Value {
        self.app.post("/v1/kill", self.admin(), body).await.expect_status(201)
    }

    /// How many payments reached the upstream.
    fn payments(&self) -> usize {
        self.upstream.requests_to("/pay").len()
    }

    /// Asserts that `held` is still pending, undecided and unexecuted.
    async fn assert_untouched(&self, held: &Held) {
        let approval = self.approval(held.id()).await;
        assert_eq!(approval["status"], "pending", "{approval}");
        assert_eq!((&approval["approvals"], &approval["decisions"]), (&json!(0), &json!([])), "{approval}");
        assert_eq!(self.action(held.action_id()).await["status"], "pending_approval");
        assert_eq!(self.payments(), 0, "the upstream was never called");
    }
}

/// The seconds from now until an RFC 3339 time.
fn seconds_until(rfc3339: &Value) -> i64 {
    let at = OffsetDateTime::parse(rfc3339.as_str().expect("a time"), &Rfc3339).expect("an RFC 3339 time");
    (at - OffsetDateTime::now_utc()).whole_seconds()
}

/// The audit entries' types.
fn types(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.event_type.as_str()).collect()
}

// ---- the happy path -------------------------------------------------------------------------

#[tokio::test]
async fn a_financial_action_waits_for_an_approver_and_executes_once_when_approved_with_its_digest() {
    let desk = Desk::new().await;
    let run = desk.open(&["pay"]).await;
    let arguments = json!({"to": "acct-42", "subject": "invoice 42", "count": 100});

    let action = desk.act(&run, "pay", &arguments, "pay-42").await;
    assert_eq!(action["status"], "pending_approval", "{action}");
    assert!(reasons(&action).contains("`financial` tools need one approval by default"), "{action}");
    assert_eq!((&action["result"], &action["receipt"]), (&Value::Null, &Value::Null));
    assert_eq!(desk.payments(), 0, "nothing is paid while it waits");
    assert_eq!(desk.get_run(&run).await["spent_cents"], 0, "nor charged");

    // The approver sees what would run, why it is held, and what it is bound to.
    let listed = desk.app.get_ok("/v1/approvals?status=pending", &desk.ann.key.secret).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let request = &listed[0];
    let id = request["id"].as_str().expect("an id");
    assert!(id.starts_with("apr_"), "{id}");
    assert_eq!(request["status"], "pending");
    assert_eq!(request["action"]["id"], action["id"]);
    assert_eq!(request["action"]["tool"], "pay");
    assert_eq!(request["action"]["status"], "pending_approval");
    assert_eq!(request["action"]["reasons"], action["reasons"]);
    assert_eq!(request["arguments"], arguments);
    assert_eq!(request["intent"], INTENT);
    let digest = digest_hex(&json!({"tool": "pay", "tool_version": 1, "arguments": arguments}));
    assert_eq!(request["digest"], digest.as_str(), "bound to the exact tool, its version and the arguments");
    assert_eq!((&request["required"], &request["approvals"]), (&json!(1), &json!(0)));
    assert_eq!(request["requester"], desk.agent.id.as_str());
    assert_eq!(request["decisions"], json!([]));
    let expires_in = seconds_until(&request["expires_at"]);
    assert!((86_300..=86_400).contains(&expires_in), "expires in a day by default: {expires_in} s");
    assert_eq!(&desk.app.get_ok(&format!("/v1/approvals/{id}"), &desk.ann.key.secret).await, request);

    // Approving exactly what was shown executes it, once.
    let reason = "matches invoice 42 from the supplier";
    let decided = desk
        .decide(&desk.ann.key.secret, id, &decision("approve", reason, Some(&digest)))
        .await
        .expect_status(200);
    assert_eq!(decided["status"], "approved", "{decided}");
    assert_eq!(decided["approvals"], 1);
    assert_eq!(decided["action"]["status"], "succeeded", "the response shows the outcome: {decided}");
    let decisions = decided["decisions"].as_array().expect("decisions");
    assert_eq!(decisions.len(), 1, "{decided}");
    assert_eq!(
        (&decisions[0]["approver"], &decisions[0]["decision"], &decisions[0]["reason"]),
        (&json!(desk.ann.id), &json!("approve"), &json!(reason))
    );
    let paid = desk.upstream.requests_to("/pay");
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].json(), arguments, "exactly the approved arguments were sent");

    // The agent sees a succeeded action with a receipt that verifies offline.
    let executed =
        desk.app.get_ok(&format!("/v1/actions/{}", action["id"].as_str().unwrap()), desk.agent_key()).await;
    assert_eq!(executed["status"], "succeeded", "{executed}");
    assert_eq!(executed["result"]["content"], json!({"id": "pay-1"}));
    let receipt: Receipt = serde_json::from_value(executed["receipt"].clone()).expect("a receipt");
    receipt.verify(&desk.verifiers().await).expect("the receipt verifies offline");
    assert_eq!(
        (receipt.action_id.as_str(), receipt.run_id.as_str(), receipt.tool.as_str(), receipt.status.as_str()),
        (action["id"].as_str().unwrap(), run.id.as_str(), "pay", "succeeded")
    );
    assert_eq!(receipt.arguments_digest, digest_hex(&arguments));
    assert_eq!(desk.get_run(&run).await["spent_cents"], 250, "charged once approved");

    // The request reads as approved, and left the pending list.
    assert_eq!(desk.approval(id).await["status"], "approved");
    assert_eq!(desk.app.get_ok("/v1/approvals?status=pending", desk.admin()).await, json!([]));
    let approved = desk.app.get_ok("/v1/approvals?status=approved", desk.admin()).await;
    assert_eq!(approved.as_array().map(Vec::len), Some(1), "{approved}");

    // On the record: the approver, the reason, and the action's execution.
    let entries = desk.entries_of("approval.approved").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!((entry.actor.kind.as_str(), entry.actor.id.as_str()), ("user", desk.ann.id.as_str()));
    assert_eq!(entry.subject["approval"], id);
    assert_eq!(entry.subject["approver"], desk.ann.id);
    assert_eq!(entry.subject["action"], action["id"].as_str().unwrap());
    assert_eq!(entry.subject["run"], run.id);
    assert_eq!(entry.metadata["reason"], reason);
    assert_eq!(entry.metadata["decision"], "approve");
    assert_eq!((&entry.metadata["approvals"], &entry.metadata["required"]), (&json!(1), &json!(1)));
    let succeeded = desk.entries_of("action.succeeded").await;
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0].index, receipt.log_index);
}

// ---- who may decide -------------------------------------------------------------------------

#[tokio::test]
async fn no_one_approves_their_own_request_nor_one_made_on_their_behalf() {
    let desk = Desk::new().await;

    // A user who opens a run themselves is its requester, approver role or not.
    let carol = desk.user("carol@acme.example", &[Role::Member, Role::Approver]).await;
    let body = json!({"intent": "pay my own invoice", "tools": ["pay"]});
    let own_run = open_run(&desk.app, &carol.key.secret, &body).await;
    let proposed = propose_raw(
        &desk.app,
        &carol.key.secret,
        &own_run.id,
        Some(&own_run.lease),
        &proposal("pay", &payment("carol"), "carol"),
    )
    .await
    .expect_status(201);
    assert_eq!(proposed["status"], "pending_approval", "{proposed}");
    let own = Held { approval: desk.approval_of(&proposed).await, action: proposed };
    assert_eq!(own.approval["requester"], carol.id.as_str());
    let refused = desk.approve(&carol.key.secret, &own).await.expect_problem(403, "forbidden");
    assert!(refused["detail"].as_str().unwrap().contains("own request"), "{refused}");
    desk.assert_untouched(&own).await;

    // The person an agent acts for, named by e-mail or by id, is the requester too.
    let dave = desk.user("dave@acme.example", &[Role::Approver]).await;
    let mut on_behalf = Vec::new();
    for (key, named) in [("by-email", "dave@acme.example"), ("by-id", dave.id.as_str())] {
        let run = desk.open_with(&["pay"], json!({"on_behalf_of": named})).await;
        let held = desk.hold(&run, key).await;
        assert_eq!(held.approval["on_behalf_of"], named);
        desk.approve(&dave.key.secret, &held).await.expect_problem(403, "forbidden");
        desk.assert_untouched(&held).await;
        on_behalf.push(held);
    }
    assert!(desk.entries_of("approval.").await.is_empty(), "a refused decision is no decision");

    // Anyone else with the role may.
    for held in [&own, &on_behalf[0], &on_behalf[1]] {
        let decided = desk.approve(&desk.ann.key.secret, held).await.expect_status(200);
        assert_eq!(decided["status"], "approved", "{decided}");
    }
    assert_eq!(desk.payments(), 3);
}

#[tokio::test]
async fn only_approvers_of_the_tenant_may_decide_and_other_tenants_see_nothing() {
    let desk = Desk::new().await;
    let run = desk.open(&["pay"]).await;
    let held = desk.hold(&run, "k").await;
    let viewer = desk.user("vera@acme.example", &[Role::Viewer]).await;
    let builder = desk.user("bill@acme.example", &[Role::Builder]).await;
    let member = desk.user("mo@acme.example", &[Role::Member]).await;
    let auditor = desk.user("aud@acme.example", &[Role::Auditor]).await;
    let operator = desk.app.operator("on-call").await;

    let approve = decision("approve", "looks fine", Some(held.digest()));
    for (who, key) in [
        ("the agent", desk.agent_key()),
        ("a viewer", viewer.key.secret.as_str()),
        ("a builder", builder.key.secret.as_str()),
        ("a member", member.key.secret.as_str()),
        ("an auditor", auditor.key.secret.as_str()),
        ("an administrator without the approver role", desk.admin()),
        ("a platform operator", operator.secret.as_str()),
    ] {
        for body in [&approve, &decision("reject", "no", Some(held.digest()))] {
            let reply = desk.decide(key, held.id(), body).await;
            assert_eq!(reply.status, 403, "{who} may not decide: {}", reply.text);
            reply.expect_problem(403, "forbidden");
        }
    }
    // The agent cannot even read the requests about its own actions.
    desk.app.get("/v1/approvals", desk.agent_key()).await.expect_problem(403, "forbidden");
    desk.app
        .get(&format!("/v1/approvals/{}", held.id()), desk.agent_key())
        .await
        .expect_problem(403, "forbidden");

    // Another tenant's approver: no such request.
    let globex = desk.app.tenant("globex").await;
    let theirs = desk.app.user(&globex.scope, "gina@globex.example", &[Role::Approver]).await;
    desk.app
        .get(&format!("/v1/approvals/{}", held.id()), &theirs.key.secret)
        .await
        .expect_problem(404, "not-found");
    desk.decide(&theirs.key.secret, held.id(), &approve).await.expect_problem(404, "not-found");
    assert_eq!(desk.app.get_ok("/v1/approvals", &theirs.key.secret).await, json!([]));

    desk.assert_untouched(&held).await;
    assert!(desk.entries_of("approval.").await.is_empty());
    assert_eq!(desk.approve(&desk.ann.key.secret, &held).await.expect_status(200)["status"], "approved");
}

// ---- what is decided ------------------------------------------------------------------------

#[tokio::test]
async fn a_decision_bound_to_another_digest_is_a_conflict_and_changes_nothing() {
    let desk = Desk::new().await;
    let run = desk.open(&["pay"]).await;
    let arguments = payment("42");
    let held = desk.hold_with(&run, "k", &arguments).await;

    let other_arguments = json!({"to": "acct-666", "subject": "invoice 42", "count": 100});
    for (what, digest) in [
        ("zeros", "0".repeat(64)),
        ("empty", String::new()),
        ("the arguments alone", digest_hex(&arguments)),
        ("other arguments", digest_hex(&json!({"tool": "pay", "arguments": other_arguments}))),
        ("another tool", digest_hex(&json!({"tool": "note", "arguments": arguments}))),
    ] {
        for verdict in ["approve", "reject"] {
            let reply =
                desk.decide(&desk.ann.key.secret, held.id(), &decision(verdict, "ok", Some(&digest))).await;
            let problem = reply.expect_problem(409, "conflict");
            assert!(problem["detail"].as_str().unwrap().contains("digest"), "{what}: {problem}");
        }
    }
    desk.assert_untouched(&held).await;
    assert_eq!(desk.get_run(&run).await["spent_cents"], 0);
    assert!(desk.entries_of("approval.").await.is_empty(), "nothing was decided");
    // The right digest still works.
    assert_eq!(desk.approve(&desk.ann.key.secret, &held).await.expect_status(200)["status"], "approved");
    assert_eq!(desk.payments(), 1);
}

#[tokio::test]
async fn malformed_decisions_and_filters_are_refused_and_change_nothing() {
    let desk = Desk::new().await;
    let run = desk.open(&["pay"]).await;
    let held = desk.hold(&run, "k").await;
    let ann = desk.ann.key.secret.as_str();
    for body in [
        json!({"decision": "maybe", "reason": "hmm"}),
        json!({"decision": "APPROVE", "reason": "shouting"}),
        json!({"decision": "approve", "reason": " "}),
        json!({"decision": "approve", "reason": "x".repeat(2001)}),
        json!({"decision": "approve"}),
        json!({"reason": "no decision"}),
        json!({"decision": "approve", "reason": "ok", "approvals": 5}),
    ] {
        desk.decide(ann, held.id(), &body).await.expect_problem(422, "invalid-body");
    }
    desk.decide(ann, "apr_00000000000000000000000000000000", &decision("approve", "ok", None))
        .await
        .expect_problem(404, "not-found");
    desk.app.get("/v1/approvals?status=bogus", ann).await.expect_problem(400, "invalid-parameter");
    desk.app.get("/v1/approvals?colour=blue", ann).await.expect_problem(400, "invalid-parameter");
    desk.assert_untouched(&held).await;
}

// ---- decided once -------------------------------------------------------------------------

#[tokio::test]
async fn an_approved_request_cannot_be_decided_again_and_executes_only_once() {
    let desk = Desk::new().await;
    let run = desk.open(&["pay"]).await;
    let held = desk.hold(&run, "k").await;
    assert_eq!(desk.approve(&desk.ann.key.secret, &held).await.expect_status(200)["status"], "approved");
    assert_eq!(desk.payments(), 1);

    for key in [&desk.ann.key.secret, &desk.bob.key.secret] {
        let replay = desk.approve(key, &held).await.expect_problem(409, "conflict");
        assert!(replay["detail"].as_str().unwrap().contains("approved"), "{replay}");
        desk.reject(key, &held, "changed my mind").await.expect_problem(409, "conflict");
        // Without the digest too.
        desk.decide(key, held.id(), &decision("approve", "again", None))
            .await
            .expect_problem(409, "conflict");
    }
    assert_eq!(desk.payments(), 1, "the upstream saw exactly one request");
    let approval = desk.approval(held.id()).await;
    assert_eq!((&approval["status"], &approval["approvals"]), (&json!("approved"), &json!(1)), "{approval}");
    assert_eq!(desk.action(held.action_id()).await["status"], "succeeded");
    // The agent retrying its proposal gets the outcome, not a second payment.
    let retried = desk.propose(&run, "pay", &payment("k"), "k").await.expect_status(200);
    assert_eq!(retried["status"], "succeeded");
    assert_eq!(desk.payments(), 1);
    assert_eq!(desk.get_run(&run).await["spent_cents"], 250, "charged once");
    assert_eq!(types(&desk.entries_of("approval.").await), ["approval.approved"]);
}

#[tokio::test]
async fn a_request_needing_two_approvers_counts_each_approver_once() {
    let desk = Desk::new().await;
    desk.policy(TWO_APPROVERS).await;
    let run = desk.open(&["pay"]).await;
    let held = desk.hold(&run, "k").await;
    assert_eq!(held.approval["required"], 2, "{}", held.approval);
    assert!(reasons(&held.action).contains("with 2 approvals"), "{}", held.action);

    let first = desk.approve(&desk.ann.key.secret, &held).await.expect_status(200);
    assert_eq!((&first["status"], &first["approvals"]), (&json!("pending"), &json!(1)), "{first}");
    assert_eq!(first["action"]["status"], "pending_approval");
    assert_eq!(desk.payments(), 0, "one approval of two executes nothing");

    // The same approver again, whichever way, is refused, and the request stays pending.
    let twice = desk.approve(&desk.ann.key.secret, &held).await.expect_problem(409, "conflict");
    assert!(twice["detail"].as_str().unwrap().contains("already decided"), "{twice}");
    desk.reject(&desk.ann.key.secret, &held, "on second thoughts").await.expect_problem(409, "conflict");
    let still = desk.approval(held.id()).await;
    assert_eq!((&still["status"], &still["approvals"]), (&json!("pending"), &json!(1)), "{still}");
    assert_eq!(still["decisions"].as_array().map(Vec::len), Some(1));
    assert_eq!(desk.action(held.action_id()).await["status"], "pending_approval");
    assert_eq!(desk.payments(), 0);

    // A second, distinct approver completes it: executed once.
    let second = desk.approve(&desk.bob.key.secret, &held).await.expect_status(200);
    assert_eq!((&second["status"], &second["approvals"]), (&json!("approved"), &json!(2)), "{second}");
    assert_eq!(second["action"]["status"], "succeeded");
    let approvers: Vec<&Value> =
        second["decisions"].as_array().unwrap().iter().map(|d| &d["approver"]).collect();
    assert_eq!(approvers, [&json!(desk.ann.id), &json!(desk.bob.id)]);
    let carol = desk.user("carol@acme.example", &[Role::Approver]).await;
    desk.approve(&carol.key.secret, &held).await.expect_problem(409, "conflict");
    assert_eq!(desk.payments(), 1);
    assert_eq!(types(&desk.entries_of("approval.").await), ["approval.decided", "approval.approved"]);
}

#[tokio::test]
async fn two_approvers_deciding_at_the_same_time_execute_the_action_once() {
    let desk = Desk::new().await;
    desk.upstream.on("/pay", Behaviour::json(201, json!({"id": "pay-1"})).after(Duration::from_millis(200)));
    let run = desk.open(&["pay"]).await;
    let held = desk.hold(&run, "k").await;
    let (a, b) =
        tokio::join!(desk.approve(&desk.ann.key.secret, &held), desk.approve(&desk.bob.key.secret, &held));
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "one decided, one refused: {} / {}", a.text, b.text);
    assert_eq!(desk.payments(), 1, "executed once");
    let approval = desk.approval(held.id()).await;
    assert_eq!(approval["decisions"].as_array().map(Vec::len), Some(1), "{approval}");
    assert_eq!(desk.get_run(&run).await["spent_cents"], 250);

    // An approval racing a rejection: exactly one of them settles the request.
    let other = desk.hold(&run, "k2").await;
    let (a, r) = tokio::join!(
        desk.approve(&desk.ann.key.secret, &other),
        desk.reject(&desk.bob.key.secret, &other, "no")
    );
    let mut statuses = [a.status, r.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} / {}", a.text, r.text);
    let settled = desk.approval(other.id()).await;
    let expected_payments = if a.status == 200 { 2 } else { 1 };
    assert_eq!(desk.payments(), expected_payments, "{settled}");
    assert_eq!(settled["decisions"].as_array().map(Vec::len), Some(1), "{settled}");
}

#[tokio::test]
async fn a_rejected_request_denies_its_action_with_the_approvers_reason_for_good() {
    let desk = Desk::new().await;
    let run = desk.open(&["pay"]).await;
    let held = desk.hold(&run, "k").await;
    let reason = "this supplier is under review";
    let rejected = desk.reject(&desk.ann.key.secret, &held, reason).await.expect_status(200);
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert_eq!(rejected["action"]["status"], "denied");

    let action = desk.app.get_ok(&format!("/v1/actions/{}", held.action_id()), desk.agent_key()).await;
    assert_eq!(action["status"], "denied", "{action}");
    assert!(reasons(&action).contains(&format!("rejected by an approver: {reason}")), "{action}");
    assert_eq!((&action["result"], &action["receipt"]), (&Value::Null, &Value::Null));

    for key in [&desk.bob.key.secret, &desk.ann.key.secret] {
        let late = desk.approve(key, &held).await.expect_problem(409, "conflict");
        assert!(late["detail"].as_str().unwrap().contains("rejected"), "{late}");
    }
    // Retrying the proposal answers the refusal; it does not ask again.
    assert_eq!(desk.propose(&run, "pay", &payment("k"), "k").await.expect_status(200)["status"], "denied");
    assert_eq!(desk.app.get_ok("/v1/approvals?status=pending", desk.admin()).await, json!([]));
    assert_eq!(desk.payments(), 0);
    assert_eq!(desk.get_run(&run).await["spent_cents"], 0);
    let entries = desk.entries_of("approval.").await;
    assert_eq!(types(&entries), ["approval.rejected"]);
    assert_eq!(entries[0].metadata["reason"], reason);
    assert_eq!(entries[0].actor.id, desk.ann.id);
}

#[tokio::test]
async fn an_approval_the_runs_budget_no_longer_covers_never_executes() {
    let desk = Desk::new().await;
    let run = desk.open_with(&["pay"], json!({"budget_cents": 400})).await;
    let first = desk.hold(&run, "one").await;
    let second = desk.hold(&run, "two").await;
    assert_eq!(desk.approve(&desk.ann.key.secret, &first).await.expect_status(200)["status"], "approved");
    let refused = desk.approve(&desk.ann.key.secret, &second).await;
    assert!(matches!(refused.status, 409 | 422), "{} {}", refused.status, refused.text);
    assert!(refused.json()["detail"].as_str().unwrap().contains("budget"), "{}", refused.text);
    assert_eq!(desk.payments(), 1, "only the covered payment executed");
    assert_eq!(desk.get_run(&run).await["spent_cents"], 250);
    assert_ne!(desk.action(second.action_id()).await["status"], "succeeded");
}

// ---- expiry -------------------------------------------------------------------------------

#[tokio::test]
async fn an_expired_request_cannot_be_approved_and_its_action_never_executes() {
    let desk = Desk::spawn_with(|config| config.approval_ttl = Duration::from_secs(1)).await;
    let run = desk.open(&["pay"]).await;
    let held = desk.hold(&run, "k").await;
    assert!(seconds_until(&held.approval["expires_at"]) <= 1, "{}", held.approval);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let listed = desk.app.get_ok("/v1/approvals", &desk.ann.key.secret).await;
    assert_eq!(listed[0]["status"], "expired", "{listed}");
    assert_eq!(desk.app.get_ok("/v1/approvals?status=pending", desk.admin()).await, json!([]));
    let expired = desk.app.get_ok("/v1/approvals?status=expired", desk.admin()).await;
    assert_eq!(expired.as_array().map(Vec::len), Some(1), "{expired}");
    for key in [&desk.ann.key.secret, &desk.bob.key.secret] {
        let late = desk.approve(key, &held).await.expect_problem(409, "conflict");
        assert!(late["detail"].as_str().unwrap().contains("expired"), "{late}");
    }
    assert_eq!(desk.approval(held.id()).await["status"], "expired");
    let action = desk.action(held.action_id()).await;
    assert!(!["executing", "succeeded"].contains(&action["status"].as_str().unwrap()), "{action}");
    assert_eq!(desk.payments(), 0, "the action never executed");
    assert!(desk.entries_of("approval.").await.is_empty());
}

// ---- kill switches --------------------------------------------------------------------------

#[tokio::test]
async fn killing_a_run_cancels_its_pending_approvals_and_denies_their_actions_with_the_reason() {
    let desk = Desk::new().await;
    let run = desk.open(&["pay", "note"]).await;
    let held = [desk.hold(&run, "one").await, desk.hold(&run, "two").await];
    let other_run = desk.open(&["pay", "note"]).await;
    let spared = desk.hold(&other_run, "three").await;

    let reason = "the agent is looping on payments";
    let kill = desk.kill(&json!({"scope": "run", "target": run.id, "reason": reason})).await;
    assert!(kill["id"].as_str().unwrap().starts_with("kil_"), "{kill}");
    assert_eq!(
        (&kill["scope"], &kill["target"], &kill["reason"]),
        (&json!("run"), &json!(run.id), &json!(reason))
    );
    assert_eq!(kill["created_by"], desk.tenant.admin.id.as_str());
    assert_eq!(kill["lifted_at"], Value::Null);

    assert_eq!(desk.run_status(&run).await, "killed");
    for held in &held {
        assert_eq!(desk.approval(held.id()).await["status"], "cancelled");
        let action = desk.action(held.action_id()).await;
        assert_eq!(action["status"], "denied", "{action}");
        assert!(reasons(&action).contains(reason), "the kill's reason is the action's: {action}");
        desk.approve(&desk.ann.key.secret, held).await.expect_problem(409, "conflict");
    }
    // The run takes no more actions.
    desk.propose(&run, "note", &json!({"to": "ann@acme.example"}), "after")
        .await
        .expect_problem(403, "forbidden");

    // The agent's other run is untouched.
    assert_eq!(desk.run_status(&other_run).await, "active");
    assert_eq!(desk.approval(spared.id()).await["status"], "pending");
    assert_eq!(
        desk.act(&other_run, "note", &json!({"to": "ann@acme.example"}), "n").await["status"],
        "succeeded"
    );
    assert_eq!(desk.approve(&desk.ann.key.secret, &spared).await.expect_status(200)["status"], "approved");
    assert_eq!(desk.payments(), 1, "only the spared payment");

    // Lifting the switch revives nothing.
    let lifted = desk.app.delete(&format!("/v1/kill/{}", kill["id"].as_str().unwrap()), desk.admin()).await;
    assert!(lifted.expect_status(200)["lifted_at"].is_string());
    assert_eq!(desk.run_status(&run).await, "killed");
    for held in &held {
        desk.approve(&desk.ann.key.secret, held).await.expect_problem(409, "conflict");
        assert_eq!(desk.approval(held.id()).await["status"], "cancelled");
    }
    desk.propose(&run, "note", &json!({"to": "ann@acme.example"}), "later")
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(desk.payments(), 1);
}

#[tokio::test]
async fn killing_an_agent_ends_its_runs_and_refuses_it_new_runs_and_actions_until_lifted() {
    let desk = Desk::new().await;
    let helper = desk.app.agent(&desk.tenant.scope, "helper").await;
    let first = desk.open(&["pay", "note"]).await;
    let held = desk.hold(&first, "k").await;
    let second = desk.open(&["note"]).await;
    let body = json!({"intent": INTENT, "tools": ["note"]});
    let helpers = open_run(&desk.app, &helper.key.secret, &body).await;

    let reason = "credentials leaked in a prompt";
    let kill = desk.kill(&json!({"scope": "agent", "target": desk.agent.id, "reason": reason})).await;
    assert_eq!((&kill["scope"], &kill["target"]), (&json!("agent"), &json!(desk.agent.id)));
    for run in [&first, &second] {
        assert_eq!(desk.run_status(run).await, "killed");
        desk.propose(run, "note", &json!({"to": "ann@acme.example"}), "x")
            .await
            .expect_problem(403, "forbidden");
    }
    assert_eq!(desk.approval(held.id()).await["status"], "cancelled");
    assert_eq!(desk.action(held.action_id()).await["status"], "denied");
    desk.approve(&desk.ann.key.secret, &held).await.expect_problem(409, "conflict");
    let refused = desk.app.post("/v1/runs", desk.agent_key(), &body).await.expect_problem(403, "forbidden");
    assert!(refused["detail"].as_str().unwrap().contains(reason), "{refused}");

    // Another agent of the tenant carries on.
    assert_eq!(desk.run_status(&helpers).await, "active");
    let note = proposal("note", &json!({"to": "ann@acme.example"}), "h");
    let done = propose_raw(&desk.app, &helper.key.secret, &helpers.id, Some(&helpers.lease), &note).await;
    assert_eq!(done.expect_status(201)["status"], "succeeded");
    open_run(&desk.app, &helper.key.secret, &body).await;

    // Lifted: a new run works; the killed ones stay killed.
    desk.app
        .delete(&format!("/v1/kill/{}", kill["id"].as_str().unwrap()), desk.admin())
        .await
        .expect_status(200);
    let fresh = desk.open(&["note"]).await;
    assert_eq!(
        desk.act(&fresh, "note", &json!({"to": "ann@acme.example"}), "y").await["status"],
        "succeeded"
    );
    for run in [&first, &second] {
        assert_eq!(desk.run_status(run).await, "killed");
        desk.propose(run, "note", &json!({"to": "ann@acme.example"}), "z")
            .await
            .expect_problem(403, "forbidden");
    }
    desk.approve(&desk.ann.key.secret, &held).await.expect_problem(409, "conflict");
    assert_eq!(desk.payments(), 0);
}

#[tokio::test]
async fn killing_the_tenant_stops_every_agent_and_user_until_lifted_and_spares_other_tenants() {
    let desk = Desk::new().await;
    let helper = desk.app.agent(&desk.tenant.scope, "helper").await;
    let member = desk.user("mo@acme.example", &[Role::Member]).await;
    let body = json!({"intent": INTENT, "tools": ["note", "pay"]});
    let runs = [
        (desk.agent_key().to_owned(), desk.open(&["note", "pay"]).await),
        (helper.key.secret.clone(), open_run(&desk.app, &helper.key.secret, &body).await),
        (member.key.secret.clone(), open_run(&desk.app, &member.key.secret, &body).await),
    ];
    let held = desk.hold(&runs[0].1, "k").await;
    // Another tenant, with its own agent and run.
    let globex = desk.app.tenant("globex").await;
    let their_agent = desk.app.agent(&globex.scope, "their-bot").await;
    let their_tool = tool("note", "write", post(&desk.upstream, "/theirs"));
    desk.app.post("/v1/tools", &globex.admin.key.secret, &their_tool).await.expect_status(201);
    let their_body = json!({"intent": "their business", "tools": ["note"]});
    let their_run = open_run(&desk.app, &their_agent.key.secret, &their_body).await;

    let reason = "incident 7: stop everything";
    let kill = desk.kill(&json!({"scope": "tenant", "reason": reason})).await;
    assert_eq!((&kill["scope"], &kill["target"]), (&json!("tenant"), &json!(desk.tenant.id)));
    let note = |key: &str| proposal("note", &json!({"to": "ann@acme.example"}), key);
    for (key, run) in &runs {
        assert_eq!(desk.run_status(run).await, "killed");
        propose_raw(&desk.app, key, &run.id, Some(&run.lease), &note("x"))
            .await
            .expect_problem(403, "forbidden");
        let refused = desk.app.post("/v1/runs", key, &body).await.expect_problem(403, "forbidden");
        assert!(refused["detail"].as_str().unwrap().contains(reason), "{refused}");
    }
    assert_eq!(desk.approval(held.id()).await["status"], "cancelled");
    desk.approve(&desk.ann.key.secret, &held).await.expect_problem(409, "conflict");

    // The other tenant is not stopped.
    let theirs =
        propose_raw(&desk.app, &their_agent.key.secret, &their_run.id, Some(&their_run.lease), &note("t"))
            .await
            .expect_status(201);
    assert_eq!(theirs["status"], "succeeded");
    open_run(&desk.app, &their_agent.key.secret, &their_body).await;

    // Lifted: new runs work again for everyone; the killed runs stay killed.
    desk.app
        .delete(&format!("/v1/kill/{}", kill["id"].as_str().unwrap()), desk.admin())
        .await
        .expect_status(200);
    for (key, run) in &runs {
        let fresh = open_run(&desk.app, key, &body).await;
        let done = propose_raw(&desk.app, key, &fresh.id, Some(&fresh.lease), &note("y")).await;
        assert_eq!(done.expect_status(201)["status"], "succeeded");
        assert_eq!(desk.run_status(run).await, "killed");
        propose_raw(&desk.app, key, &run.id, Some(&run.lease), &note("z"))
            .await
            .expect_problem(403, "forbidden");
    }
    assert_eq!(desk.payments(), 0);
}

#[tokio::test]
async fn kill_switches_are_listed_active_first_and_are_lifted_once() {
    let desk = Desk::new().await;
    let helper = desk.app.agent(&desk.tenant.scope, "helper").await;
    let run = desk.open(&["note"]).await;
    let on_run = desk.kill(&json!({"scope": "run", "target": run.id, "reason": "first"})).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let on_agent = desk.kill(&json!({"scope": "agent", "target": helper.id, "reason": "second"})).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let lift = |kill: &Value| format!("/v1/kill/{}", kill["id"].as_str().unwrap());
    desk.app.delete(&lift(&on_run), desk.admin()).await.expect_status(200);
    let on_tenant = desk.kill(&json!({"scope": "tenant", "reason": "third"})).await;

    let ids = |list: &Value| -> Vec<String> {
        list.as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap().to_owned()).collect()
    };
    let listed = desk.app.get_ok("/v1/kill", desk.admin()).await;
    assert_eq!(
        ids(&listed),
        [&on_tenant["id"], &on_agent["id"], &on_run["id"]].map(|v| v.as_str().unwrap().to_owned()),
        "{listed}"
    );
    assert!(listed[0]["lifted_at"].is_null() && listed[1]["lifted_at"].is_null(), "{listed}");
    assert!(listed[2]["lifted_at"].is_string(), "{listed}");
    assert_eq!(listed[2]["reason"], "first");

    // Approvers and auditors may read them; members and agents may not.
    let approver = desk.ann.key.secret.as_str();
    let auditor = desk.user("aud@acme.example", &[Role::Auditor]).await;
    assert_eq!(desk.app.get_ok("/v1/kill", approver).await, listed);
    assert_eq!(desk.app.get_ok("/v1/kill", &auditor.key.secret).await, listed);
    let member = desk.user("mo@acme.example", &[Role::Member]).await;
    desk.app.get("/v1/kill", &member.key.secret).await.expect_problem(403, "forbidden");
    desk.app.get("/v1/kill", desk.agent_key()).await.expect_problem(403, "forbidden");

    // A switch is lifted once; unknown ids are not found.
    desk.app.delete(&lift(&on_run), desk.admin()).await.expect_problem(404, "not-found");
    desk.app
        .delete("/v1/kill/kil_00000000000000000000000000000000", desk.admin())
        .await
        .expect_problem(404, "not-found");
    desk.app.delete("/v1/kill/not-a-kill", desk.admin()).await.expect_problem(404, "not-found");
    for kill in [&on_agent, &on_tenant] {
        desk.app.delete(&lift(kill), desk.admin()).await.expect_status(200);
    }
    let lifted = desk.app.get_ok("/v1/kill", desk.admin()).await;
    assert!(lifted.as_array().unwrap().iter().all(|k| k["lifted_at"].is_string()), "{lifted}");
}

#[tokio::test]
async fn only_administrators_set_or_lift_kill_switches() {
    let desk = Desk::new().await;
    let run = desk.open(&["note"]).await;
    let viewer = desk.user("vera@acme.example", &[Role::Viewer]).await;
    let builder = desk.user("bill@acme.example", &[Role::Builder]).await;
    let member = desk.user("mo@acme.example", &[Role::Member]).await;
    let auditor = desk.user("aud@acme.example", &[Role::Auditor]).await;
    let operator = desk.app.operator("on-call").await;
    let set = desk.kill(&json!({"scope": "agent", "target": desk.app.agent(&desk.tenant.scope, "spare").await.id, "reason": "set by the admin"})).await;
    let lift = format!("/v1/kill/{}", set["id"].as_str().unwrap());

    for (who, key) in [
        ("an approver", desk.ann.key.secret.as_str()),
        ("a viewer", viewer.key.secret.as_str()),
        ("a builder", builder.key.secret.as_str()),
        ("a member", member.key.secret.as_str()),
        ("an auditor", auditor.key.secret.as_str()),
        ("the agent", desk.agent_key()),
        ("a platform operator", operator.secret.as_str()),
    ] {
        for body in [
            json!({"scope": "tenant", "reason": "stop"}),
            json!({"scope": "run", "target": run.id, "reason": "stop"}),
            json!({"scope": "agent", "target": desk.agent.id, "reason": "stop"}),
        ] {
            let reply = desk.app.post("/v1/kill", key, &body).await;
            assert_eq!(reply.status, 403, "{who} may not set {body}: {}", reply.text);
            reply.expect_problem(403, "forbidden");
        }
        let reply = desk.app.delete(&lift, key).await;
        assert_eq!(reply.status, 403, "{who} may not lift: {}", reply.text);
    }
    let listed = desk.app.get_ok("/v1/kill", desk.admin()).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert!(listed[0]["lifted_at"].is_null(), "still active: {listed}");
    assert_eq!(desk.run_status(&run).await, "active");
    assert_eq!(desk.act(&run, "note", &json!({"to": "ann@acme.example"}), "k").await["status"], "succeeded");
    assert_eq!(types(&desk.entries_of("kill.").await), ["kill.set"]);
}

#[tokio::test]
async fn kill_switches_of_the_wrong_shape_or_for_another_tenants_target_are_refused() {
    let desk = Desk::new().await;
    let run = desk.open(&["note"]).await;
    let globex = desk.app.tenant("globex").await;
    let their_agent = desk.app.agent(&globex.scope, "their-bot").await;
    let their_tool = tool("note", "write", post(&desk.upstream, "/theirs"));
    desk.app.post("/v1/tools", &globex.admin.key.secret, &their_tool).await.expect_status(201);
    let their_body = json!({"intent": "their business", "tools": ["note"]});
    let their_run = open_run(&desk.app, &their_agent.key.secret, &their_body).await;
    let their_other_run = open_run(&desk.app, &their_agent.key.secret, &their_body).await;

    for body in [
        json!({"scope": "tenant", "target": desk.tenant.id, "reason": "no target for a tenant"}),
        json!({"scope": "tenant", "target": run.id, "reason": "no target for a tenant"}),
        json!({"scope": "run", "reason": "which run?"}),
        json!({"scope": "agent", "reason": "which agent?"}),
        json!({"scope": "platform", "reason": "not a tenant's to set"}),
        json!({"scope": "RUN", "target": run.id, "reason": "case matters"}),
        json!({"scope": "run", "target": "not-a-run", "reason": "bad id"}),
        json!({"scope": "run", "target": desk.agent.id, "reason": "an agent is not a run"}),
        json!({"scope": "agent", "target": run.id, "reason": "a run is not an agent"}),
        json!({"scope": "agent", "target": desk.ann.id, "reason": "a user is not an agent"}),
        json!({"scope": "run", "target": run.id, "reason": " "}),
        json!({"scope": "run", "target": run.id}),
        json!({"scope": "run", "target": run.id, "reason": "x", "until": "forever"}),
    ] {
        let reply = desk.app.post("/v1/kill", desk.admin(), &body).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
        reply.expect_problem(422, "invalid-body");
    }
    // Another tenant's run or agent, or one that does not exist: not found.
    for body in [
        json!({"scope": "run", "target": their_run.id, "reason": "not ours"}),
        json!({"scope": "agent", "target": their_agent.id, "reason": "not ours"}),
        json!({"scope": "run", "target": RunId::generate().to_string(), "reason": "nobody's"}),
    ] {
        desk.app.post("/v1/kill", desk.admin(), &body).await.expect_problem(404, "not-found");
    }
    // Nor can we lift their switch.
    let theirs = desk
        .app
        .post(
            "/v1/kill",
            &globex.admin.key.secret,
            &json!({"scope": "run", "target": their_run.id, "reason": "theirs"}),
        )
        .await
        .expect_status(201);
    desk.app
        .delete(&format!("/v1/kill/{}", theirs["id"].as_str().unwrap()), desk.admin())
        .await
        .expect_problem(404, "not-found");
    let their_list = desk.app.get_ok("/v1/kill", &globex.admin.key.secret).await;
    assert!(their_list[0]["lifted_at"].is_null(), "{their_list}");

    assert_eq!(desk.app.get_ok("/v1/kill", desk.admin()).await, json!([]), "nothing was set in our tenant");
    assert!(desk.entries_of("kill.").await.is_empty());
    assert_eq!(desk.run_status(&run).await, "active");
    let still = desk.app.get_ok(&format!("/v1/runs/{}", their_other_run.id), &their_agent.key.secret).await;
    assert_eq!(still["status"], "active", "their other run is untouched");
}

#[tokio::test]
async fn a_platform_kill_by_an_operator_stops_every_tenant_until_the_operator_lifts_it() {
    let desk = Desk::new().await;
    let operator = desk.app.operator("on-call").await;
    let run = desk.open(&["note", "pay"]).await;
    let held = desk.hold(&run, "k").await;
    let globex = desk.app.tenant("globex").await;
    let their_agent = desk.app.agent(&globex.scope, "their-bot").await;
    let their_tool = tool("note", "write", post(&desk.upstream, "/theirs"));
    desk.app.post("/v1/tools", &globex.admin.key.secret, &their_tool).await.expect_status(201);
    let their_body = json!({"intent": "their business", "tools": ["note"]});
    let their_run = open_run(&desk.app, &their_agent.key.secret, &their_body).await;
    let note = |key: &str| proposal("note", &json!({"to": "ann@acme.example"}), key);

    // Tenants cannot touch the platform switch.
    for key in
        [desk.admin(), globex.admin.key.secret.as_str(), desk.agent_key(), desk.ann.key.secret.as_str()]
    {
        desk.app
            .post("/admin/v1/kill", key, &json!({"reason": "not yours"}))
            .await
            .expect_problem(403, "forbidden");
        desk.app.delete("/admin/v1/kill", key).await.expect_problem(403, "forbidden");
    }
    desk.app
        .post("/admin/v1/kill", &operator.secret, &json!({"reason": " "}))
        .await
        .expect_problem(422, "invalid-body");
    assert_eq!(
        desk.act(&run, "note", &json!({"to": "ann@acme.example"}), "before").await["status"],
        "succeeded"
    );

    let reason = "a connector is wiring money twice";
    let stopped = desk
        .app
        .post("/admin/v1/kill", &operator.secret, &json!({"reason": reason}))
        .await
        .expect_status(201);
    assert!(stopped["id"].as_str().unwrap().starts_with("kil_"), "{stopped}");
    assert_eq!(stopped["reason"], reason);

    let refused = desk.propose(&run, "note", &json!({"to": "ann@acme.example"}), "during").await;
    let refused = refused.expect_problem(403, "forbidden");
    assert!(refused["detail"].as_str().unwrap().contains(reason), "{refused}");
    propose_raw(&desk.app, &their_agent.key.secret, &their_run.id, Some(&their_run.lease), &note("during"))
        .await
        .expect_problem(403, "forbidden");
    desk.app
        .post("/v1/runs", desk.agent_key(), &json!({"intent": INTENT, "tools": ["note"]}))
        .await
        .expect_problem(403, "forbidden");
    desk.app.post("/v1/runs", &their_agent.key.secret, &their_body).await.expect_problem(403, "forbidden");
    let blocked = desk.approve(&desk.ann.key.secret, &held).await.expect_problem(409, "conflict");
    assert!(
        blocked["detail"].as_str().unwrap().contains(reason),
        "no approval executes while stopped: {blocked}"
    );
    assert_eq!(desk.approval(held.id()).await["status"], "pending", "it waits for the platform to restart");
    // A tenant administrator cannot lift it either.
    desk.app.delete("/admin/v1/kill", desk.admin()).await.expect_problem(403, "forbidden");
    desk.propose(&run, "note", &json!({"to": "ann@acme.example"}), "still")
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(desk.upstream.requests().len(), 1, "only the action before the stop reached the upstream");

    // The operator lifts it: every tenant acts again.
    let lifted = desk.app.delete("/admin/v1/kill", &operator.secret).await.expect_status(200);
    assert_eq!(lifted["lifted"], 1, "{lifted}");
    assert_eq!(
        desk.act(&run, "note", &json!({"to": "ann@acme.example"}), "after").await["status"],
        "succeeded"
    );
    let theirs = propose_raw(
        &desk.app,
        &their_agent.key.secret,
        &their_run.id,
        Some(&their_run.lease),
        &note("after"),
    )
    .await
    .expect_status(201);
    assert_eq!(theirs["status"], "succeeded");
    assert_eq!(desk.approve(&desk.ann.key.secret, &held).await.expect_status(200)["status"], "approved");
    assert_eq!(desk.payments(), 1);
    assert_eq!(desk.app.delete("/admin/v1/kill", &operator.secret).await.expect_status(200)["lifted"], 0);
}

// ---- the audit trail ------------------------------------------------------------------------

#[tokio::test]
async fn every_decision_and_kill_switch_is_on_the_audit_record_with_its_actor_and_subjects() {
    let desk = Desk::new().await;
    desk.policy(TWO_APPROVERS).await;
    let run = desk.open(&["pay"]).await;
    let twice = desk.hold(&run, "twice").await;
    let refused = desk.hold(&run, "refused").await;
    let doomed_run = desk.open(&["pay"]).await;
    let doomed = desk.hold(&doomed_run, "doomed").await;

    desk.approve(&desk.ann.key.secret, &twice).await.expect_status(200);
    desk.approve(&desk.bob.key.secret, &twice).await.expect_status(200);
    desk.reject(&desk.bob.key.secret, &refused, "duplicate invoice").await.expect_status(200);
    // Refused decisions leave no entry.
    desk.approve(&desk.ann.key.secret, &twice).await.expect_problem(409, "conflict");
    desk.approve(&desk.ann.key.secret, &refused).await.expect_problem(409, "conflict");
    let kill = desk.kill(&json!({"scope": "run", "target": doomed_run.id, "reason": "runaway"})).await;
    let kill_id = kill["id"].as_str().unwrap();
    desk.app.delete(&format!("/v1/kill/{kill_id}"), desk.admin()).await.expect_status(200);

    let decisions = desk.entries_of("approval.").await;
    assert_eq!(types(&decisions), ["approval.decided", "approval.approved", "approval.rejected"]);
    let expected = [
        (&desk.ann, &twice, "approve", "checked against the invoice"),
        (&desk.bob, &twice, "approve", "checked against the invoice"),
        (&desk.bob, &refused, "reject", "duplicate invoice"),
    ];
    for (entry, (approver, held, verdict, reason)) in decisions.iter().zip(expected) {
        assert_eq!(
            (entry.actor.kind.as_str(), entry.actor.id.as_str()),
            ("user", approver.id.as_str()),
            "{entry:?}"
        );
        assert_eq!(entry.subject["approval"], held.id(), "{entry:?}");
        assert_eq!(entry.subject["approver"], approver.id, "{entry:?}");
        assert_eq!(entry.subject["action"], held.action_id(), "{entry:?}");
        assert_eq!(entry.subject["run"], run.id, "{entry:?}");
        assert_eq!(
            (&entry.metadata["decision"], &entry.metadata["reason"]),
            (&json!(verdict), &json!(reason))
        );
    }
    assert_eq!(
        (&decisions[0].metadata["approvals"], &decisions[0].metadata["required"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(
        (&decisions[1].metadata["approvals"], &decisions[1].metadata["required"]),
        (&json!(2), &json!(2))
    );

    let kills = desk.entries_of("kill.").await;
    assert_eq!(types(&kills), ["kill.set", "kill.lifted"]);
    let admin = desk.tenant.admin.id.as_str();
    for entry in &kills {
        assert_eq!((entry.actor.kind.as_str(), entry.actor.id.as_str()), ("user", admin), "{entry:?}");
        assert_eq!(entry.subject["kill_switch"], kill_id, "{entry:?}");
    }
    let set = &kills[0];
    assert_eq!(set.subject["target"], doomed_run.id);
    assert_eq!((&set.metadata["scope"], &set.metadata["reason"]), (&json!("run"), &json!("runaway")));
    assert_eq!((&set.metadata["runs_killed"], &set.metadata["approvals_cancelled"]), (&json!(1), &json!(1)));
    assert_eq!(desk.approval(doomed.id()).await["status"], "cancelled");
    // Who approved is on the record, the arguments are not.
    let export = desk.app.get("/v1/audit/export", desk.admin()).await.text;
    assert!(!export.contains("acct-42"), "argument values are not logged");
}

#[tokio::test]
async fn a_request_of_a_run_that_has_ended_cannot_be_approved() {
    let desk = Desk::new().await;
    for status in ["completed", "failed"] {
        let run = desk.open(&["pay"]).await;
        let held = desk.hold(&run, status).await;
        let ended = complete(&desk.app, desk.agent_key(), &run, status).await.expect_status(200);
        assert_eq!(ended["status"], status);
        // Ending the run cancelled its requests, so a late decision finds nothing to decide.
        let late = desk.approve(&desk.ann.key.secret, &held).await.expect_problem(409, "conflict");
        assert!(late["detail"].as_str().unwrap().contains("cancelled"), "{late}");
        assert_ne!(desk.action(held.action_id()).await["status"], "succeeded");
    }
    assert_eq!(desk.payments(), 0, "nothing executes for a run that is over");
    assert!(desk.entries_of("approval.").await.is_empty());
}

// ---- known bugs (ignored until fixed in src/) ------------------------------------------------

#[tokio::test]
async fn the_person_the_agent_acts_for_cannot_approve_under_another_spelling_of_their_e_mail() {
    let desk = Desk::new().await;
    let dave = desk.user("dave@acme.example", &[Role::Approver]).await;
    for (key, named) in [("upper", "Dave@ACME.example"), ("padded", " dave@acme.example ")] {
        let run = desk.open_with(&["pay"], json!({"on_behalf_of": named})).await;
        let held = desk.hold(&run, key).await;
        let reply = desk.approve(&dave.key.secret, &held).await;
        assert_eq!(reply.status, 403, "`{named}` is dave: {}", reply.text);
        desk.assert_untouched(&held).await;
    }
}

#[tokio::test]
async fn an_expired_request_reads_as_expired_by_id() {
    let desk = Desk::spawn_with(|config| config.approval_ttl = Duration::from_secs(1)).await;
    let run = desk.open(&["pay"]).await;
    let held = desk.hold(&run, "k").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Read by id before anything lists the requests.
    let one = desk.app.get_ok(&format!("/v1/approvals/{}", held.id()), &desk.ann.key.secret).await;
    assert_eq!(one["status"], "expired", "{one}");
}

#[tokio::test]
async fn an_expired_request_denies_its_action() {
    let desk = Desk::spawn_with(|config| config.approval_ttl = Duration::from_secs(1)).await;
    let run = desk.open(&["pay"]).await;
    let held = desk.hold(&run, "k").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let listed = desk.app.get_ok("/v1/approvals", desk.admin()).await;
    assert_eq!(listed[0]["status"], "expired", "{listed}");
    let action = desk.app.get_ok(&format!("/v1/actions/{}", held.action_id()), desk.agent_key()).await;
    assert_eq!(action["status"], "denied", "an action whose request expired will never run: {action}");
    assert!(reasons(&action).contains("expired"), "{action}");
}

#[tokio::test]
async fn ending_a_run_cancels_its_pending_requests() {
    let desk = Desk::new().await;
    let run = desk.open(&["pay"]).await;
    let held = desk.hold(&run, "k").await;
    complete(&desk.app, desk.agent_key(), &run, "failed").await.expect_status(200);
    assert_eq!(desk.app.get_ok("/v1/approvals?status=pending", desk.admin()).await, json!([]));
    assert_eq!(desk.approval(held.id()).await["status"], "cancelled");
    assert_eq!(desk.action(held.action_id()).await["status"], "denied");
}

#[tokio::test]
async fn a_tool_redefined_after_the_request_is_not_executed_under_the_old_approval() {
    let desk = Desk::new().await;
    let run = desk.open(&["pay"]).await;
    let held = desk.hold(&run, "k").await;
    let mut redefined =
        merged(tool("pay", "financial", post(&desk.upstream, "/elsewhere")), json!({"cost_cents": 250}));
    redefined.as_object_mut().unwrap().remove("name");
    desk.app.put("/v1/tools/pay", desk.admin(), &redefined).await.expect_status(200);
    let reply = desk.approve(&desk.ann.key.secret, &held).await;
    assert!(
        desk.upstream.requests_to("/elsewhere").is_empty(),
        "the approver approved a call to `/pay`, not to `/elsewhere`: {}",
        reply.text
    );
    reply.expect_problem(409, "conflict");
}

#[tokio::test]
async fn an_approval_cannot_execute_an_action_after_its_runs_lease_expired() {
    let desk = Desk::new().await;
    let run = desk.open_with(&["pay"], json!({"ttl_secs": 1})).await;
    let held = desk.hold(&run, "k").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reply = desk.approve(&desk.ann.key.secret, &held).await;
    assert_eq!(reply.status, 409, "the run is over: {}", reply.text);
    assert_eq!(desk.payments(), 0, "nothing executes for an expired run");
}

#[tokio::test]
async fn a_new_approval_request_is_announced_to_the_webhook_signed_and_timestamped() {
    use crate::common::upstream::Upstream;
    let receiver = Upstream::spawn().await;
    let secret = "a webhook secret of at least 32 bytes!!";
    let hook = receiver.url("/hook");
    let world = World::spawn_with(|config| {
        config.approval_webhook = Some((hook, secrecy::SecretString::from(secret.to_owned())));
    })
    .await;
    world.register(&tool("wire", "financial", post(&world.upstream, "/wire"))).await;
    let run = world.open(&["wire"]).await;
    let held = world.act(&run, "wire", &json!({"to": "acct-9"}), "w1").await;
    assert_eq!(held["status"], "pending_approval");

    let mut delivered = Vec::new();
    for _ in 0..50 {
        delivered = receiver.requests_to("/hook");
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered.len(), 1, "one notification per request");
    let notification = &delivered[0];
    let body = notification.json();
    assert_eq!(body["type"], "approval.requested");
    assert_eq!(body["approval_id"], held["approval"]["id"]);
    assert_eq!(body["action_id"], held["id"]);
    assert_eq!(body["tool"], "wire");
    let timestamp: i64 = notification.header("airlock-timestamp").unwrap().parse().unwrap();
    let now = airlock_types::Timestamp::now().as_millis() / 1000;
    assert!((now - timestamp).abs() < 60, "the timestamp is current");
    let expected = airlock_server::webhook::signature(
        &secrecy::SecretString::from(secret.to_owned()),
        timestamp,
        &notification.body,
    );
    assert_eq!(notification.header("airlock-signature"), Some(expected.as_str()));
    assert!(!String::from_utf8_lossy(&notification.body).contains(secret));
    assert!(world.upstream.requests_to("/wire").is_empty(), "nothing executed before approval");
}
