//! The platform's own audit log, in the control plane: what operators did to tenants and to
//! keys (tenant deletion, key rotation, a tenant's own KEK). It has the same form as a
//! tenant's log and verifies offline the same way, under the origin `airlock/platform`.

use std::collections::BTreeMap;

use airlock_audit::Event;
use airlock_types::Timestamp;
use serde_json::{Map, Value};

use crate::audit::{Appended, AuditWriter, Operation};
use crate::auditlog::{SigningKeyInfo, export_header, export_page, signing_keys};
use crate::keys::PLATFORM;
use crate::principal::Principal;
use crate::tenant::current_signer;
use crate::{Store, StoreError};

/// The platform log's origin, and its signing key's name.
pub const PLATFORM_ORIGIN: &str = "airlock/platform";

impl Store {
    async fn platform_log(&self) -> Result<&AuditWriter, StoreError> {
        self.inner
            .platform_log
            .get_or_try_init(|| async {
                let dek = self.inner.keys.dek_set(self.control(), PLATFORM).await?;
                let signer = current_signer(self.control(), PLATFORM_ORIGIN, &dek).await?;
                AuditWriter::start(
                    self.control().clone(),
                    PLATFORM_ORIGIN.to_owned(),
                    signer,
                    self.inner.audit,
                )
                .await
            })
            .await
    }

    /// Records an event in the platform log, acted by `by`, once it is durable.
    pub async fn record_platform(
        &self,
        by: &Principal,
        event_type: &str,
        subject: &[(&str, &str)],
        metadata: Map<String, Value>,
    ) -> Result<Appended, StoreError> {
        self.record_platform_with(by, event_type, subject, metadata, None).await
    }

    /// Runs `operation` on the control plane and records the event in the platform log, in
    /// one transaction.
    pub(crate) async fn record_platform_with(
        &self,
        by: &Principal,
        event_type: &str,
        subject: &[(&str, &str)],
        metadata: Map<String, Value>,
        operation: Option<Operation>,
    ) -> Result<Appended, StoreError> {
        let subject: BTreeMap<String, String> =
            subject.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let event = Event {
            time: Timestamp::now().to_rfc3339(),
            event_type: event_type.to_owned(),
            actor: by.actor(),
            subject,
            metadata,
        };
        self.platform_log().await?.append_with(event, operation, false).await
    }

    /// Starts an export of the platform log: records it, and returns the header line and
    /// the number of entries the export holds. Operators only.
    pub async fn platform_audit_export_begin(&self, by: &Principal) -> Result<(String, u64), StoreError> {
        crate::identity::require_operator(by)?;
        let mut metadata = Map::new();
        metadata.insert("format".into(), Value::from("jsonl"));
        self.record_platform(by, "audit.exported", &[], metadata).await?;
        let checkpoint = self.platform_log().await?.checkpoint().await?;
        export_header(PLATFORM_ORIGIN.to_owned(), checkpoint)
    }

    /// A page of the platform log's export (see [`Store::audit_export_page`]).
    pub async fn platform_audit_export_page(
        &self,
        by: &Principal,
        from: u64,
        size: u64,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        crate::identity::require_operator(by)?;
        export_page(self.control(), from, size, limit).await
    }

    /// The platform log's signing keys, newest first.
    pub async fn platform_audit_keys(&self) -> Result<Vec<SigningKeyInfo>, StoreError> {
        self.platform_log().await?;
        signing_keys(self.control()).await
    }
}
