-- Platform-wide kill switches, set by operators: while one is active, no action anywhere is
-- decided or executed.
CREATE TABLE platform_kill_switches (
    id         TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    lifted_by  TEXT,
    lifted_at  BIGINT
);
