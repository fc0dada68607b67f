-- Content inspection: the tenant's redaction profile (versioned), its tokenization key
-- (sealed with the DEK), and the vault of token values kept for restoring (sealed, expiring).
CREATE TABLE inspection_profiles (
    version     BIGINT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);

CREATE TABLE tokenization_keys (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    sealed      BLOB NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE token_vault (
    token       TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX token_vault_expiry ON token_vault (expires_at);
