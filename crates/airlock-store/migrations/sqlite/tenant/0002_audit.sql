-- The tenant's audit log. Rows are appended and never changed: the database itself refuses
-- updates and deletes.
CREATE TABLE audit_entries (
    idx        BIGINT PRIMARY KEY,
    time_ms    BIGINT NOT NULL,
    type       TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    canonical  TEXT NOT NULL,
    chain_hash BLOB NOT NULL,
    leaf_hash  BLOB NOT NULL
);
CREATE INDEX audit_entries_by_time ON audit_entries (time_ms, idx);
CREATE INDEX audit_entries_by_type ON audit_entries (type, idx);
CREATE INDEX audit_entries_by_actor ON audit_entries (actor_id, idx);

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

-- Signed checkpoints (C2SP tlog-checkpoint notes), one per tree size issued.
CREATE TABLE audit_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       BLOB NOT NULL,
    note       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints are append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints are append-only');
END;

-- The tenant's Ed25519 signing keys. The seed is sealed with the tenant's DEK; retired keys
-- stay, so checkpoints and receipts they signed keep verifying.
CREATE TABLE signing_keys (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    public_key  BLOB NOT NULL,
    sealed_seed BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);
CREATE TRIGGER signing_keys_only_retire BEFORE UPDATE ON signing_keys
WHEN NEW.version IS NOT OLD.version OR NEW.name IS NOT OLD.name OR NEW.public_key IS NOT OLD.public_key
  OR NEW.sealed_seed IS NOT OLD.sealed_seed OR NEW.created_at IS NOT OLD.created_at
  OR OLD.retired_at IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'a signing key can only be retired');
END;
CREATE TRIGGER signing_keys_no_delete BEFORE DELETE ON signing_keys
BEGIN
    SELECT RAISE(ABORT, 'signing keys are kept so old signatures keep verifying');
END;
