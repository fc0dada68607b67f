-- Versioned data-encryption keys, a tenant's own key-encryption key, tenant deletion, and
-- the platform's own audit log.

-- Every owner's data-encryption keys, each wrapped by the key-encryption key `kek_id` names.
-- An owner is a tenant id or `platform`. Several versions coexist while a rotation
-- re-encrypts rows, and the older ones are deleted when it ends; deleting an owner's rows
-- destroys its keys (crypto-shred). Keys wrapped before versions existed are not carried
-- over: their data directories predate this release and are created afresh.
CREATE TABLE data_keys (
    owner      TEXT NOT NULL,
    version    INTEGER NOT NULL CHECK (version > 0),
    kek_id     TEXT NOT NULL,
    wrapped    BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (owner, version)
);
DROP TABLE tenant_keys;

-- A tenant that brings its own key-encryption key (BYOK): the provider, as JSON. Revoking
-- that key makes the tenant's data unreadable to Airlock.
CREATE TABLE tenant_keks (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants (id),
    spec       TEXT NOT NULL,
    set_by     TEXT NOT NULL,
    set_at     BIGINT NOT NULL
);

-- A deleted tenant's row stays as its tombstone: who deleted it, who approved.
ALTER TABLE tenants ADD COLUMN deleted_by TEXT;
ALTER TABLE tenants ADD COLUMN deletion_approved_by TEXT;

-- Deletions waiting for a second operator.
CREATE TABLE tenant_deletion_requests (
    tenant_id    TEXT PRIMARY KEY REFERENCES tenants (id),
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

-- The platform's audit log: what operators did to tenants and keys. Same shape and the same
-- append-only guarantees as a tenant's log.
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

-- The platform log's signing keys; the seed is sealed with the platform's data key, and may
-- be re-sealed by a key rotation, but the key itself never changes.
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
  OR NEW.created_at IS NOT OLD.created_at
  OR (OLD.retired_at IS NOT NULL AND NEW.retired_at IS NOT OLD.retired_at)
BEGIN
    SELECT RAISE(ABORT, 'a signing key can only be retired or re-sealed');
END;
CREATE TRIGGER signing_keys_no_delete BEFORE DELETE ON signing_keys
BEGIN
    SELECT RAISE(ABORT, 'signing keys are kept so old signatures keep verifying');
END;
