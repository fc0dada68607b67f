//! A pool of upstream sessions: one per (partition, server), kept open between calls so a stdio
//! server is not started for every call, and replaced when it dies.
//!
//! The partition is the caller's isolation boundary (Airlock passes the tenant id): two tenants
//! with the same server definition never share a process or a session. A session whose server
//! crashed, timed out or closed the connection is dropped (which kills a stdio server) and the
//! next call starts a fresh one; a session unused for the idle period is closed the same way.
//! A different credential for the same server also gets a fresh session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{
    Home, McpClientError, ToolOutput, UpstreamSpec, connect, output, redact, service_error, tool_params,
};

/// How long an unused session stays open by default.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);

/// Open upstream sessions, shared by clones.
#[derive(Clone)]
pub struct ClientPool {
    sessions: Arc<Mutex<HashMap<PoolKey, Entry>>>,
    idle: Duration,
}

impl std::fmt::Debug for ClientPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPool").field("open", &self.open_sessions()).finish_non_exhaustive()
    }
}

impl Default for ClientPool {
    fn default() -> Self {
        Self::new(DEFAULT_IDLE)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    partition: String,
    /// The spec as canonical JSON.
    spec: String,
}

struct Entry {
    session: Arc<Session>,
    credential: Option<SecretString>,
    last_used: Instant,
}

struct Session {
    service: RunningService<RoleClient, ()>,
    /// Removed when the session (and its server) goes.
    _home: Home,
}

impl ClientPool {
    /// A pool closing sessions unused for `idle`.
    #[must_use]
    pub fn new(idle: Duration) -> Self {
        Self { sessions: Arc::default(), idle }
    }

    /// How many sessions are open.
    #[must_use]
    pub fn open_sessions(&self) -> usize {
        self.lock().len()
    }

    /// Calls one upstream tool through the partition's session with the server, starting it
    /// when there is none (or the last one died). Bounded by the spec's timeout, start-up
    /// included; a server that does not answer in time is stopped.
    pub async fn call_tool(
        &self,
        partition: &str,
        spec: &UpstreamSpec,
        credential: Option<&SecretString>,
        name: &str,
        arguments: Value,
    ) -> Result<ToolOutput, McpClientError> {
        spec.check()?;
        let params = tool_params(name, arguments)?;
        let key = PoolKey {
            partition: partition.to_owned(),
            spec: serde_json::to_string(spec).map_err(|e| McpClientError::InvalidSpec(e.to_string()))?,
        };
        let timeout = spec.timeout_ms();
        let mut used = None;
        let run = async {
            let session = self.session(&key, spec, credential).await?;
            used = Some(Arc::clone(&session));
            call(&session, params).await
        };
        let result = match tokio::time::timeout(Duration::from_millis(timeout), run).await {
            Ok(result) => result,
            Err(_elapsed) => Err(McpClientError::Timeout(timeout)),
        };
        if let (Err(McpClientError::Closed | McpClientError::Timeout(_)), Some(session)) = (&result, &used) {
            self.evict(&key, session);
        }
        result.map_err(|e| redact(e, credential))
    }

    /// The live session for `key`, or a new one.
    async fn session(
        &self,
        key: &PoolKey,
        spec: &UpstreamSpec,
        credential: Option<&SecretString>,
    ) -> Result<Arc<Session>, McpClientError> {
        let now = Instant::now();
        let stale = {
            let mut sessions = self.lock();
            let idle = self.idle;
            // Dropped after the lock is released: dropping a session stops its server.
            let mut stale: Vec<Entry> = Vec::new();
            let expired: Vec<PoolKey> = sessions
                .iter()
                .filter(|(_, e)| now.duration_since(e.last_used) > idle || e.session.service.is_closed())
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                stale.extend(sessions.remove(&k));
            }
            if let Some(entry) = sessions.get_mut(key) {
                if same_secret(entry.credential.as_ref(), credential) {
                    entry.last_used = now;
                    return Ok(Arc::clone(&entry.session));
                }
                stale.extend(sessions.remove(key));
            }
            stale
        };
        drop(stale);
        let (service, home) = connect(spec, credential).await?;
        let session = Arc::new(Session { service, _home: home });
        let entry = Entry { session: Arc::clone(&session), credential: credential.cloned(), last_used: now };
        // A concurrent first call may have connected too: the later one wins, the other's
        // session goes when its call ends.
        let replaced = self.lock().insert(key.clone(), entry);
        drop(replaced);
        Ok(session)
    }

    fn evict(&self, key: &PoolKey, session: &Arc<Session>) {
        let removed = {
            let mut sessions = self.lock();
            match sessions.get(key) {
                Some(entry) if Arc::ptr_eq(&entry.session, session) => sessions.remove(key),
                _ => None,
            }
        };
        drop(removed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Entry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn call(session: &Session, params: CallToolRequestParams) -> Result<ToolOutput, McpClientError> {
    let result = session.service.peer().call_tool(params).await.map_err(service_error)?;
    Ok(output(result))
}

fn same_secret(a: Option<&SecretString>, b: Option<&SecretString>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        _ => false,
    }
}
