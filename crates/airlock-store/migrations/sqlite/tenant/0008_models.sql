-- The model gateway: each model alias's ordered chain of provider routes (provider keys sealed
-- with the DEK), its price, the tenant's gateway settings (versioned), the usage ledger that
-- budgets are checked against (a call is reserved before it is sent and settled after), and
-- spend-rate breakers that have tripped.
CREATE TABLE model_routes (
    id              TEXT PRIMARY KEY,
    alias           TEXT NOT NULL,
    position        INTEGER NOT NULL,
    provider        TEXT NOT NULL,
    base_url        TEXT NOT NULL,
    upstream_model  TEXT NOT NULL,
    api_version     TEXT,
    key_sealed      BLOB,
    created_at      BIGINT NOT NULL,
    UNIQUE (alias, position)
);

CREATE TABLE model_prices (
    alias                   TEXT PRIMARY KEY,
    input_cents_per_mtok    BIGINT NOT NULL,
    output_cents_per_mtok   BIGINT NOT NULL
);

CREATE TABLE model_settings (
    version     BIGINT PRIMARY KEY,
    settings    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);

CREATE TABLE model_usage (
    id              TEXT PRIMARY KEY,
    principal       TEXT NOT NULL,
    alias           TEXT NOT NULL,
    day             TEXT NOT NULL,
    month           TEXT NOT NULL,
    state           TEXT NOT NULL,
    reserved_tokens BIGINT NOT NULL,
    reserved_ucents BIGINT NOT NULL,
    input_tokens    BIGINT NOT NULL DEFAULT 0,
    output_tokens   BIGINT NOT NULL DEFAULT 0,
    cost_ucents     BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    settled_at      BIGINT
);
CREATE INDEX model_usage_principal_day ON model_usage (principal, day);
CREATE INDEX model_usage_month ON model_usage (month);
CREATE INDEX model_usage_created ON model_usage (created_at);

CREATE TABLE model_breakers (
    subject         TEXT PRIMARY KEY,
    tripped_until   BIGINT NOT NULL
);
