//! The tenant's audit log in storage: a single writer per tenant that appends entries with
//! durable group commit and issues signed checkpoints.
//!
//! Callers send events and wait; the writer takes every event waiting (up to a batch limit),
//! seals them onto the hash chain, inserts them in one transaction, and commits once:
//! SQLite in WAL mode with `synchronous = FULL` makes that one fsync for the whole batch.
//! Only then does any caller get its answer, so nothing is acknowledged before its entry is
//! durable. A checkpoint is signed every `checkpoint_every` entries, every
//! `checkpoint_interval` when the log has grown, and on request.

use std::time::Duration;

use airlock_audit::merkle::Frontier;
use airlock_audit::{ChainHead, Checkpoint, Event, Hash, NoteSigner, SealedEntry};
use airlock_types::Timestamp;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::{Database, StoreError};

/// When checkpoints are issued.
#[derive(Debug, Clone, Copy)]
pub struct AuditOptions {
    /// Sign a checkpoint after this many new entries.
    pub checkpoint_every: u64,
    /// Sign a checkpoint this often when the log has grown.
    pub checkpoint_interval: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self { checkpoint_every: 1000, checkpoint_interval: Duration::from_secs(10) }
    }
}

/// Where an appended entry landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Its index.
    pub index: u64,
    /// Its chain hash.
    pub chain_hash: Hash,
    /// A checkpoint covering it, when one was asked for with the append (signed in the same
    /// commit, so a receipt costs no extra fsync).
    pub checkpoint: Option<SignedCheckpoint>,
}

/// A signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The tree size it covers.
    pub size: u64,
    /// The root at that size.
    pub root: Hash,
    /// The signed note.
    pub note: String,
}

/// A change to the tenant's database made in the same transaction as its audit entry. It
/// runs under a savepoint just before the entry is sealed, and may complete the event (say,
/// with an id it looked up). If it fails, it is rolled back and its event is not recorded.
pub(crate) type Operation = Box<
    dyn for<'c> FnOnce(
            &'c mut sqlx::AnyConnection,
            &'c mut Event,
        ) -> futures_util::future::BoxFuture<'c, Result<(), StoreError>>
        + Send,
>;

/// An append: the event, its operation, whether a covering checkpoint is wanted, and the reply.
type AppendCommand = (Event, Option<Operation>, bool, Reply);

enum Command {
    Append(Event, Option<Operation>, bool, oneshot::Sender<Result<Appended, StoreError>>),
    Checkpoint(oneshot::Sender<Result<SignedCheckpoint, StoreError>>),
    SetSigner(NoteSigner, oneshot::Sender<()>),
}

/// The handle callers use to append to one tenant's log.
#[derive(Debug, Clone)]
pub(crate) struct AuditWriter {
    sender: mpsc::Sender<Command>,
}

/// Most entries committed in one transaction.
const MAX_BATCH: usize = 4096;
/// Rows per INSERT statement (8 parameters each, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 64;
/// Commands queued before senders wait: backpressure under load.
const QUEUE: usize = 16 * 1024;

impl AuditWriter {
    /// Loads the log's head, checks it against the last signed checkpoint, and starts the
    /// writer task.
    pub(crate) async fn start(
        db: Database,
        origin: String,
        signer: NoteSigner,
        options: AuditOptions,
    ) -> Result<Self, StoreError> {
        let state = State::load(db, origin, signer, options).await?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(state.run(receiver));
        Ok(Self { sender })
    }

    /// Runs `operation` and appends `event` in one transaction, returning once both are
    /// durable; if the operation fails, neither happens. With `checkpoint`, a checkpoint
    /// covering the entry is signed in the same commit and returned with it.
    pub(crate) async fn append_with(
        &self,
        event: Event,
        operation: Option<Operation>,
        checkpoint: bool,
    ) -> Result<Appended, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.sender.send(Command::Append(event, operation, checkpoint, tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// A checkpoint covering every entry appended so far (signing one if needed).
    pub(crate) async fn checkpoint(&self) -> Result<SignedCheckpoint, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.sender.send(Command::Checkpoint(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Switches to a new signing key.
    pub(crate) async fn set_signer(&self, signer: NoteSigner) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.sender.send(Command::SetSigner(signer, tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }
}

fn stopped() -> StoreError {
    StoreError::Audit("the audit writer has stopped".to_owned())
}

struct State {
    db: Database,
    origin: String,
    signer: NoteSigner,
    options: AuditOptions,
    head: ChainHead,
    frontier: Frontier,
    last_checkpoint: Option<SignedCheckpoint>,
}

fn hash_column(row: &sqlx::any::AnyRow, column: &str) -> Result<Hash, StoreError> {
    let bytes: Vec<u8> = row.try_get(column)?;
    Hash::from_slice(&bytes)
        .ok_or_else(|| StoreError::corrupt("audit_entries", format!("`{column}` is not 32 bytes")))
}

impl State {
    async fn load(
        db: Database,
        origin: String,
        signer: NoteSigner,
        options: AuditOptions,
    ) -> Result<Self, StoreError> {
        let mut frontier = Frontier::new();
        let mut head = ChainHead::EMPTY;
        let checkpoint_row =
            sqlx::query("SELECT size, root, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(db.pool())
                .await?;
        let last_checkpoint = match checkpoint_row {
            Some(row) => {
                let size: i64 = row.try_get("size")?;
                Some(SignedCheckpoint {
                    size: u64::try_from(size).map_err(|e| StoreError::corrupt("audit_checkpoints", e))?,
                    root: hash_column(&row, "root")?,
                    note: row.try_get("note")?,
                })
            }
            None => None,
        };
        // Rebuild the right edge of the tree, checking each index and, on the way, the last
        // signed checkpoint: a log altered underneath Airlock is refused, not extended.
        let mut after: i64 = -1;
        loop {
            let rows = sqlx::query("SELECT idx, chain_hash, leaf_hash FROM audit_entries WHERE idx > $1 ORDER BY idx LIMIT 10000")
                .bind(after)
                .fetch_all(db.pool())
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("idx")?;
            for row in &rows {
                let idx: i64 = row.try_get("idx")?;
                if u64::try_from(idx).ok() != Some(head.next_index) {
                    return Err(StoreError::corrupt(
                        "audit_entries",
                        format!("entry {} is missing", head.next_index),
                    ));
                }
                frontier.push(hash_column(row, "leaf_hash")?);
                head = ChainHead {
                    next_index: head.next_index + 1,
                    last_chain_hash: hash_column(row, "chain_hash")?,
                };
                if let Some(checkpoint) = &last_checkpoint
                    && checkpoint.size == frontier.size()
                    && checkpoint.root != frontier.root()
                {
                    return Err(StoreError::corrupt(
                        "audit_entries",
                        format!("the entries do not match the signed checkpoint at size {}", checkpoint.size),
                    ));
                }
            }
        }
        if last_checkpoint.as_ref().is_some_and(|c| c.size > frontier.size()) {
            return Err(StoreError::corrupt(
                "audit_entries",
                "entries covered by a signed checkpoint are missing",
            ));
        }
        Ok(Self { db, origin, signer, options, head, frontier, last_checkpoint })
    }

    async fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(self.options.checkpoint_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = receiver.recv() => {
                    let Some(first) = command else { break };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    self.process(batch).await;
                }
                _ = tick.tick() => {
                    if self.needs_checkpoint(1) {
                        self.process(Vec::new()).await;
                    }
                }
            }
        }
    }

    fn needs_checkpoint(&self, threshold: u64) -> bool {
        let covered = self.last_checkpoint.as_ref().map_or(0, |c| c.size);
        self.frontier.size() >= covered + threshold
            && (self.frontier.size() > covered || self.last_checkpoint.is_none())
    }

    async fn process(&mut self, batch: Vec<Command>) {
        let mut appends = Vec::new();
        let mut checkpoint_replies = Vec::new();
        for command in batch {
            match command {
                Command::Append(event, operation, checkpoint, reply) => {
                    appends.push((event, operation, checkpoint, reply))
                }
                Command::Checkpoint(reply) => checkpoint_replies.push(reply),
                Command::SetSigner(signer, reply) => {
                    self.signer = signer;
                    let _ = reply.send(());
                }
            }
        }
        let force = !checkpoint_replies.is_empty() || appends.iter().any(|(_, _, wants, _)| *wants);
        match self.commit(appends, force).await {
            Ok(replies) => {
                for (reply, mut appended, wants) in replies {
                    if wants {
                        appended.checkpoint.clone_from(&self.last_checkpoint);
                    }
                    let _ = reply.send(Ok(appended));
                }
                for reply in checkpoint_replies {
                    let _ = reply.send(
                        self.last_checkpoint.clone().ok_or_else(|| StoreError::Audit("no checkpoint".into())),
                    );
                }
            }
            Err((error, replies)) => {
                tracing::error!(%error, "audit append failed; the batch was rolled back");
                let message = error.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Audit(message.clone())));
                }
                for reply in checkpoint_replies {
                    let _ = reply.send(Err(StoreError::Audit(message.clone())));
                }
            }
        }
    }

    /// Brings the head, frontier and last checkpoint up to what is committed: another
    /// process on the same data directory (the command line beside the server) may have
    /// appended since. Runs inside the write transaction, so nothing can append meanwhile.
    async fn catch_up(&mut self, tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<(), StoreError> {
        let checkpoint_row =
            sqlx::query("SELECT size, root, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(&mut **tx)
                .await?;
        let latest = match checkpoint_row {
            Some(row) => Some(SignedCheckpoint {
                size: u64::try_from(row.try_get::<i64, _>("size")?)
                    .map_err(|e| StoreError::corrupt("audit_checkpoints", e))?,
                root: hash_column(&row, "root")?,
                note: row.try_get("note")?,
            }),
            None => None,
        };
        let next = i64::try_from(self.head.next_index).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let rows =
            sqlx::query("SELECT idx, chain_hash, leaf_hash FROM audit_entries WHERE idx >= $1 ORDER BY idx")
                .bind(next)
                .fetch_all(&mut **tx)
                .await?;
        for row in &rows {
            let idx: i64 = row.try_get("idx")?;
            if u64::try_from(idx).ok() != Some(self.head.next_index) {
                return Err(StoreError::corrupt(
                    "audit_entries",
                    format!("entry {} is missing", self.head.next_index),
                ));
            }
            self.frontier.push(hash_column(row, "leaf_hash")?);
            self.head = ChainHead {
                next_index: self.head.next_index + 1,
                last_chain_hash: hash_column(row, "chain_hash")?,
            };
            if let Some(checkpoint) = &latest
                && checkpoint.size == self.frontier.size()
                && checkpoint.root != self.frontier.root()
            {
                return Err(StoreError::corrupt(
                    "audit_entries",
                    "the entries do not match the latest signed checkpoint",
                ));
            }
        }
        if let Some(latest) = latest
            && self.last_checkpoint.as_ref().is_none_or(|c| c.size < latest.size)
        {
            self.last_checkpoint = Some(latest);
        }
        Ok(())
    }

    /// Runs each append's operation and seals its event, inserts the entries, signs a
    /// checkpoint if one is due (or `force`d and the log has grown or has none yet), and
    /// commits, all in one transaction. Returns the replies to send once committed; an append
    /// whose operation failed is answered at once and leaves no trace.
    async fn commit(
        &mut self,
        appends: Vec<AppendCommand>,
        force_checkpoint: bool,
    ) -> Result<Vec<(Reply, Appended, bool)>, (StoreError, Vec<Reply>)> {
        if appends.is_empty() && !force_checkpoint && !self.needs_checkpoint(1) {
            return Ok(Vec::new());
        }
        let (mut tx, _gate) = match self.db.begin_write().await {
            Ok(write) => write,
            Err(error) => return Err((error, appends.into_iter().map(|(_, _, _, reply)| reply).collect())),
        };
        if let Err(error) = self.catch_up(&mut tx).await {
            return Err((error, appends.into_iter().map(|(_, _, _, reply)| reply).collect()));
        }
        let mut head = self.head;
        let mut frontier = self.frontier.clone();
        let mut sealed: Vec<SealedEntry> = Vec::with_capacity(appends.len());
        let mut pending: Vec<(Reply, bool)> = Vec::with_capacity(appends.len());
        let mut iter = appends.into_iter();
        while let Some((mut event, operation, wants, reply)) = iter.next() {
            if let Some(operation) = operation {
                let outcome = run_operation(&mut tx, operation, &mut event).await;
                match outcome {
                    Ok(()) => {}
                    Err(OperationFailure::Operation(error)) => {
                        let _ = reply.send(Err(error));
                        continue;
                    }
                    Err(OperationFailure::Transaction(error)) => {
                        let mut replies: Vec<Reply> = pending.into_iter().map(|(reply, _)| reply).collect();
                        replies.push(reply);
                        replies.extend(iter.map(|(_, _, _, reply)| reply));
                        return Err((error, replies));
                    }
                }
            }
            match head.seal(event) {
                Ok(entry) => {
                    frontier.push(entry.leaf_hash);
                    sealed.push(entry);
                    pending.push((reply, wants));
                }
                Err(e) => {
                    // A malformed event fails alone; its operation must not stand without it,
                    // but it already ran in this transaction, so the whole batch is refused.
                    let mut replies: Vec<Reply> = pending.into_iter().map(|(reply, _)| reply).collect();
                    replies.push(reply);
                    replies.extend(iter.map(|(_, _, _, reply)| reply));
                    return Err((StoreError::Invalid(format!("audit event: {e}")), replies));
                }
            }
        }
        match self.finish(tx, head, frontier, &sealed, force_checkpoint).await {
            Ok(()) => Ok(pending
                .into_iter()
                .zip(sealed.iter())
                .map(|((reply, wants), s)| {
                    (
                        reply,
                        Appended { index: s.entry.index, chain_hash: s.chain_hash, checkpoint: None },
                        wants,
                    )
                })
                .collect()),
            Err(error) => Err((error, pending.into_iter().map(|(reply, _)| reply).collect())),
        }
    }

    /// Inserts the sealed entries and any due checkpoint, and commits.
    async fn finish(
        &mut self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        head: ChainHead,
        frontier: Frontier,
        sealed: &[SealedEntry],
        force_checkpoint: bool,
    ) -> Result<(), StoreError> {
        let covered = self.last_checkpoint.as_ref().map_or(0, |c| c.size);
        let grown = frontier.size() > covered || self.last_checkpoint.is_none();
        let due = frontier.size() >= covered + self.options.checkpoint_every
            || ((force_checkpoint || sealed.is_empty()) && grown);
        if sealed.is_empty() && !due {
            tx.rollback().await?;
            return Ok(());
        }
        let checkpoint = if due {
            let cp = Checkpoint { origin: self.origin.clone(), size: frontier.size(), root: frontier.root() };
            let note = cp.sign(&self.signer).map_err(|e| StoreError::Audit(e.to_string()))?;
            Some(SignedCheckpoint { size: cp.size, root: cp.root, note })
        } else {
            None
        };

        for chunk in sealed.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO audit_entries (idx, time_ms, type, actor_kind, actor_id, canonical, chain_hash, leaf_hash) VALUES ",
            );
            for i in 0..chunk.len() {
                let p = i * 8;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${},${},${},${},${},${},${},${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7,
                    p + 8
                ));
            }
            // Only placeholders are generated; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for entry in chunk {
                let time = time_millis(&entry.entry.time);
                query = query
                    .bind(i64::try_from(entry.entry.index).map_err(|e| StoreError::Invalid(e.to_string()))?)
                    .bind(time)
                    .bind(entry.entry.event_type.clone())
                    .bind(entry.entry.actor.kind.clone())
                    .bind(entry.entry.actor.id.clone())
                    .bind(entry.canonical.clone())
                    .bind(entry.chain_hash.0.to_vec())
                    .bind(entry.leaf_hash.0.to_vec());
            }
            query.execute(&mut *tx).await?;
        }
        if let Some(checkpoint) = &checkpoint {
            sqlx::query(
                "INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(i64::try_from(checkpoint.size).map_err(|e| StoreError::Invalid(e.to_string()))?)
            .bind(checkpoint.root.0.to_vec())
            .bind(checkpoint.note.clone())
            .bind(Timestamp::now().as_millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;

        self.head = head;
        self.frontier = frontier;
        if checkpoint.is_some() {
            self.last_checkpoint = checkpoint;
        }
        Ok(())
    }
}

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

enum OperationFailure {
    /// The operation refused (bad input, conflict, not found): only its caller hears of it.
    Operation(StoreError),
    /// The savepoint itself failed: the transaction cannot be trusted.
    Transaction(StoreError),
}

/// Runs an operation under a savepoint, rolling back to it when the operation fails.
async fn run_operation(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    operation: Operation,
    event: &mut Event,
) -> Result<(), OperationFailure> {
    use sqlx::Connection as _;
    let mut savepoint = tx.begin().await.map_err(|e| OperationFailure::Transaction(e.into()))?;
    match operation(&mut savepoint, event).await {
        Ok(()) => savepoint.commit().await.map_err(|e| OperationFailure::Transaction(e.into())),
        Err(error) => {
            savepoint.rollback().await.map_err(|e| OperationFailure::Transaction(e.into()))?;
            Err(OperationFailure::Operation(error))
        }
    }
}

/// Milliseconds since the epoch of an entry's RFC 3339 time, for time-range queries.
fn time_millis(text: &str) -> i64 {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
