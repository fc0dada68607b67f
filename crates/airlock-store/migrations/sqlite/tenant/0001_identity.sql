-- Every tenant database records whose it is. Opening it for any other tenant fails, so a
-- misrouted or swapped file is refused instead of served.
CREATE TABLE tenant_identity (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    tenant_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TRIGGER tenant_identity_is_immutable
BEFORE UPDATE ON tenant_identity
BEGIN
    SELECT RAISE(ABORT, 'the tenant identity of a database cannot change');
END;

CREATE TRIGGER tenant_identity_cannot_be_deleted
BEFORE DELETE ON tenant_identity
BEGIN
    SELECT RAISE(ABORT, 'the tenant identity of a database cannot be deleted');
END;
