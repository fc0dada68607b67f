-- The flow guard: tools declared trusted sources, the data a principal provides with a run,
-- and the tenant's allowlists of known contacts, payees and domains.
ALTER TABLE tools ADD COLUMN trusted_source INTEGER NOT NULL DEFAULT 0 CHECK (trusted_source IN (0, 1));
ALTER TABLE runs ADD COLUMN inputs TEXT NOT NULL DEFAULT '{}';

-- Each entry has an owner (the user who added it) and may expire; an entry grounds values
-- only while it is unexpired and its owner is still an active user.
CREATE TABLE allowlist_entries (
    id         TEXT PRIMARY KEY,
    list       TEXT NOT NULL CHECK (list IN ('contacts', 'payees', 'domains')),
    value      TEXT NOT NULL,
    note       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    UNIQUE (list, value)
);

-- The tenant's flow settings (what each class of value gets, the judge), versioned.
CREATE TABLE flow_settings (
    version     BIGINT PRIMARY KEY,
    settings    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);
