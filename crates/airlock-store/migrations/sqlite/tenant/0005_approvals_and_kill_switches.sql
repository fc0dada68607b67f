-- Approval requests, the approvers' decisions, and kill switches.

-- An approval is bound to the digest of the exact tool and arguments of its action.
CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    action_id    TEXT NOT NULL UNIQUE REFERENCES actions (id),
    digest       TEXT NOT NULL,
    required     INTEGER NOT NULL CHECK (required >= 1),
    status       TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled')),
    requester    TEXT NOT NULL,
    on_behalf_of TEXT,
    expires_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    decided_at   BIGINT
);
CREATE INDEX approvals_by_status ON approvals (status, created_at);

-- One decision per approver per request; a decision is never changed.
CREATE TABLE approval_decisions (
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    approver    TEXT NOT NULL,
    decision    TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (approval_id, approver)
);
CREATE TRIGGER approval_decisions_are_final BEFORE UPDATE ON approval_decisions
BEGIN
    SELECT RAISE(ABORT, 'an approval decision cannot be changed');
END;

-- A kill switch stops a run, an agent, or the whole tenant until it is lifted.
CREATE TABLE kill_switches (
    id         TEXT PRIMARY KEY,
    scope      TEXT NOT NULL CHECK (scope IN ('run', 'agent', 'tenant')),
    target     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    lifted_by  TEXT,
    lifted_at  BIGINT
);
CREATE INDEX kill_switches_active ON kill_switches (scope, target) WHERE lifted_at IS NULL;
