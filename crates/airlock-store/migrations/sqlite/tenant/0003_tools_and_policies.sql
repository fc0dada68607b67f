-- Tools the tenant's agents may call, the credentials their connectors use, and the
-- tenant's Cedar policies.

-- A credential's secret material is sealed with the tenant's DEK, bound to this table,
-- column and row; only the executor opens it.
CREATE TABLE credentials (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('bearer', 'basic', 'api_key_header', 'oauth_client_credentials')),
    sealed     BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE tools (
    name           TEXT PRIMARY KEY,
    description    TEXT NOT NULL,
    input_schema   TEXT NOT NULL,
    tier           TEXT NOT NULL,
    side_effects   INTEGER NOT NULL CHECK (side_effects IN (0, 1)),
    classification TEXT NOT NULL,
    cost_cents     BIGINT NOT NULL,
    connector      TEXT NOT NULL,
    credential_id  TEXT REFERENCES credentials (id),
    version        BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- Every version of the tenant's policy text is kept; the highest is in force.
CREATE TABLE policies (
    version    INTEGER PRIMARY KEY,
    text       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TRIGGER policies_are_immutable BEFORE UPDATE ON policies
BEGIN
    SELECT RAISE(ABORT, 'policy versions are immutable; write a new version');
END;
