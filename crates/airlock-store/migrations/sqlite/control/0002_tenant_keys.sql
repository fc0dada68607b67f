-- Each tenant's data-encryption key, wrapped by the key-encryption key. Deleting the row
-- destroys the tenant's key (crypto-shred).
CREATE TABLE tenant_keys (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants (id),
    wrapped_dek BLOB NOT NULL,
    created_at  BIGINT NOT NULL
);
