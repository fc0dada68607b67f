-- Runs (an agent's declared piece of work, with its lease) and the actions proposed in them.

CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    principal_kind  TEXT NOT NULL CHECK (principal_kind IN ('user', 'agent')),
    principal_id    TEXT NOT NULL,
    intent          TEXT NOT NULL,
    tools           TEXT NOT NULL,
    destinations    TEXT NOT NULL,
    on_behalf_of    TEXT,
    budget_cents    BIGINT NOT NULL,
    spent_cents     BIGINT NOT NULL,
    lease_hash      BLOB NOT NULL,
    lease_expires_at BIGINT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('active', 'completed', 'failed', 'killed', 'expired')),
    created_at      BIGINT NOT NULL,
    ended_at        BIGINT
);
CREATE INDEX runs_by_principal ON runs (principal_id, created_at);

-- An idempotency key is unique within its run: it executes at most once, and a repeat with
-- the same arguments returns the first outcome.
CREATE TABLE actions (
    id               TEXT PRIMARY KEY,
    run_id           TEXT NOT NULL REFERENCES runs (id),
    tool             TEXT NOT NULL,
    arguments        TEXT NOT NULL,
    arguments_digest TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('denied', 'pending_approval', 'executing', 'succeeded', 'unverified', 'failed')),
    decision         TEXT NOT NULL,
    outcome          TEXT,
    receipt          TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (run_id, idempotency_key)
);
CREATE INDEX actions_by_run ON actions (run_id, created_at);
