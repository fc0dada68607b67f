//! The key hierarchy: key-encryption-key providers (local file, environment, KMS), per-tenant
//! data-encryption keys, envelope encryption bound to tenant, table, column and row, and
//! rotation.
//!
//! All primitives come from `airlock-crypto`. Its contents arrive with the key-lifecycle
//! capability; until then the configuration already names the key provider, and production
//! mode refuses to start without one.
