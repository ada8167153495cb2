//! The [`SessionStore`] contract: what a store must make atomic, and the small types it
//! trades in.
//!
//! * A turn takes the session's **lease** ([`SessionStore::begin`]): one holder at a time,
//!   across processes and replicas. A caller that cannot get it within its wait gets
//!   [`StoreErrorKind::Busy`]; nobody overwrites anybody.
//! * The turn's changes (appended messages and actions, the turn counter, runs it paused,
//!   runs it finished) commit as **one transaction** that also releases the lease
//!   ([`SessionStore::commit`]). A commit cut short (future dropped, process killed) leaves
//!   the session as it was before the turn; a lease whose holder died expires.
//! * A paused run moves `pending → claimed → done | abandoned`. [`SessionStore::claim_run`]
//!   commits the claim before the caller runs anything, and only one caller wins it; a claim
//!   never settled is reported **in doubt** ([`StoreErrorKind::InProgress`]) until a caller
//!   forces it or abandons it.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Session, SessionMessage, ToolAction};

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// Another turn held the session for longer than the caller's wait.
    Busy,
    /// The lease expired (or the session was deleted) before the commit; nothing was saved.
    LeaseLost,
    /// No such paused run.
    NotFound,
    /// The paused run was already resumed (done) or abandoned.
    AlreadyResumed,
    /// The paused run is claimed by a resume that never finished: it may be running now, or
    /// its process died after the tool may have run (in doubt).
    InProgress,
    /// The backend failed (I/O, SQL, connection, corrupt data).
    Backend,
}

/// A session store failed; `message` says what and where.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// What kind of failure.
    pub kind: StoreErrorKind,
    /// What failed, with the session, run, path or URL involved.
    pub message: String,
}

impl StoreError {
    /// A backend failure.
    pub fn backend(message: impl Into<String>) -> Self {
        Self {
            kind: StoreErrorKind::Backend,
            message: message.into(),
        }
    }

    /// An error of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// `SessionBusy`: `session` stayed held by another turn for `waited`.
    pub fn busy(session: &str, waited: Duration) -> Self {
        Self::new(
            StoreErrorKind::Busy,
            format!(
                "session {session:?} is busy: another turn held it for the whole {:.1}s wait (retry, or raise the session wait)",
                waited.as_secs_f64()
            ),
        )
    }

    /// The lease on `session` was lost before the commit.
    pub fn lease_lost(session: &str) -> Self {
        Self::new(
            StoreErrorKind::LeaseLost,
            format!(
                "session {session:?}: this turn's lease expired or the session was deleted before the commit; its changes were not saved"
            ),
        )
    }

    /// No paused run `run_id` in `session`.
    pub fn run_not_found(session: &str, run_id: &str) -> Self {
        Self::new(
            StoreErrorKind::NotFound,
            format!("no paused run {run_id} in session {session:?}"),
        )
    }

    /// The error for claiming `run` in its current (non-pending) status.
    pub fn not_claimable(run: &PausedRun) -> Self {
        match run.status {
            RunStatus::Claimed => Self::new(
                StoreErrorKind::InProgress,
                format!(
                    "paused run {} of session {:?} was claimed by {} at {} (unix ms) and never finished: \
                     it may be running now, or its process stopped after the tool call may have run (in doubt). \
                     Run `kaos resume {} --session {} --force` to run the call again (it may run twice), \
                     or `kaos resume {} --session {} --abandon` to drop it",
                    run.run_id,
                    run.session_id,
                    run.claimed_by.as_deref().unwrap_or("an unknown process"),
                    run.claimed_at_ms.unwrap_or(0),
                    run.run_id,
                    run.session_id,
                    run.run_id,
                    run.session_id,
                ),
            ),
            status => Self::new(
                StoreErrorKind::AlreadyResumed,
                format!(
                    "paused run {} of session {:?} was already {} (a run is resumed at most once)",
                    run.run_id,
                    run.session_id,
                    match status {
                        RunStatus::Abandoned => "abandoned",
                        _ => "resumed",
                    }
                ),
            ),
        }
    }
}

/// Where a paused run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Waiting for a human's decision.
    Pending,
    /// A resume claimed it and has not finished (or died: in doubt).
    Claimed,
    /// Resumed to the end.
    Done,
    /// Dropped without running.
    Abandoned,
}

impl RunStatus {
    /// The status as stored (`pending`, `claimed`, `done`, `abandoned`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Claimed => "claimed",
            Self::Done => "done",
            Self::Abandoned => "abandoned",
        }
    }

    /// `Ok` for a status a run can settle as (`done`, `abandoned`): what every store's
    /// `settle_run` checks first.
    pub fn check_settles(self) -> Result<(), StoreError> {
        match self {
            Self::Done | Self::Abandoned => Ok(()),
            other => Err(StoreError::backend(format!(
                "a run settles as done or abandoned, not {}",
                other.as_str()
            ))),
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => Self::Pending,
            "claimed" => Self::Claimed,
            "done" => Self::Done,
            "abandoned" => Self::Abandoned,
            other => {
                return Err(StoreError::backend(format!(
                    "corrupt run status {other:?} in the store"
                )));
            }
        })
    }
}

/// A paused run as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct PausedRun {
    /// The run.
    pub run_id: String,
    /// Its session.
    pub session_id: String,
    /// The paused turn's number.
    pub turn_number: u64,
    /// Where it is.
    pub status: RunStatus,
    /// The runner's state (a JSON `RunState`).
    pub state: Value,
    /// Who claimed it (host, process, run), once claimed.
    pub claimed_by: Option<String>,
    /// When it was claimed (unix ms).
    pub claimed_at_ms: Option<u64>,
}

/// One line of [`SessionStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session.
    pub id: String,
    /// Completed turns.
    pub turn_count: u64,
    /// Messages kept.
    pub message_count: u64,
    /// Runs waiting for approval.
    pub pending_runs: u64,
}

/// What one turn changes, committed at once by [`SessionStore::commit`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnChanges {
    /// The session's new turn count (`None` = unchanged).
    pub turn_count: Option<u64>,
    /// Messages appended, oldest first.
    pub messages: Vec<SessionMessage>,
    /// Tool actions appended.
    pub actions: Vec<ToolAction>,
    /// Runs this turn paused: `(run_id, turn_number, state)`, stored `pending`.
    pub paused: Vec<(String, u64, Value)>,
    /// Claimed runs this turn finished (`claimed → done`).
    pub finished: Vec<String>,
}

impl TurnChanges {
    /// The changes that turn `before` into `after` (messages and actions appended since,
    /// the turn count, pending runs added; pending runs removed count as finished).
    pub fn between(before: &Session, after: &Session) -> Self {
        Self {
            turn_count: (after.turn_count != before.turn_count).then_some(after.turn_count),
            messages: after
                .messages
                .iter()
                .skip(before.messages.len())
                .cloned()
                .collect(),
            actions: after
                .actions
                .iter()
                .skip(before.actions.len())
                .cloned()
                .collect(),
            paused: after
                .pending_runs
                .iter()
                .filter(|(id, _)| !before.pending_runs.contains_key(*id))
                .map(|(id, v)| {
                    let turn = v
                        .get("turn_number")
                        .and_then(Value::as_u64)
                        .unwrap_or(after.turn_count + 1);
                    (id.clone(), turn, v.clone())
                })
                .collect(),
            finished: before
                .pending_runs
                .keys()
                .filter(|id| !after.pending_runs.contains_key(*id))
                .cloned()
                .collect(),
        }
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.turn_count.is_none()
            && self.messages.is_empty()
            && self.actions.is_empty()
            && self.paused.is_empty()
            && self.finished.is_empty()
    }
}

type ReleaseFn = Box<dyn FnOnce(&str, &str) + Send + Sync>;

/// The right to change one session until it is committed or dropped.
///
/// Dropping a lease (a turn cancelled, a commit future dropped) releases it through the
/// closure the store gave; a lease whose process died expires in the store.
pub struct SessionLease {
    session_id: String,
    token: String,
    release: Option<ReleaseFn>,
    keepalive: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for SessionLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLease")
            .field("session_id", &self.session_id)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl SessionLease {
    /// A lease on `session_id` identified by `token`; `release(session_id, token)` runs when
    /// it is dropped without [`disarm`](Self::disarm).
    pub fn new(
        session_id: impl Into<String>,
        token: impl Into<String>,
        release: impl FnOnce(&str, &str) + Send + Sync + 'static,
    ) -> Self {
        Self {
            session_id: session_id.into(),
            token: token.into(),
            release: Some(Box::new(release)),
            keepalive: None,
        }
    }

    /// Attaches the task that renews the lease; it is aborted when the lease goes.
    pub fn with_keepalive(mut self, task: tokio::task::AbortHandle) -> Self {
        self.keepalive = Some(task);
        self
    }

    /// The leased session.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The lease's token (unique per acquisition).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Marks the lease as settled by the store (the commit released it): dropping it then
    /// does nothing more than stop its keepalive.
    pub fn disarm(&mut self) {
        self.release = None;
    }
}

impl Drop for SessionLease {
    fn drop(&mut self) {
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
        if let Some(release) = self.release.take() {
            release(&self.session_id, &self.token);
        }
    }
}

/// Where sessions and paused runs live. Every implementation runs the same conformance
/// suite (kaos-store's tests): in memory, SQLite, PostgreSQL.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    /// The session as last committed (no lease taken), if it exists. `pending_runs` holds
    /// the runs waiting for approval, `runs_in_doubt` the claimed, unfinished ones.
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError>;

    /// Takes the lease on session `id` (creating the session when new), waiting up to
    /// `wait` for another holder to finish; returns it with the session as committed.
    /// Fails with [`StoreErrorKind::Busy`] when the wait runs out.
    async fn begin(&self, id: &str, wait: Duration) -> Result<(SessionLease, Session), StoreError>;

    /// Commits a turn's changes in one transaction and releases the lease. Fails with
    /// [`StoreErrorKind::LeaseLost`] (nothing saved) when the lease is no longer held.
    async fn commit(&self, lease: SessionLease, changes: TurnChanges) -> Result<(), StoreError>;

    /// Moves paused run `run_id` from `pending` to `claimed` by `claimant`, durably, and
    /// returns it; only one caller wins. With `force`, a `claimed` (in doubt) run is claimed
    /// again. Errors: `NotFound`, `AlreadyResumed` (done/abandoned), `InProgress` (claimed).
    async fn claim_run(
        &self,
        session_id: &str,
        run_id: &str,
        claimant: &str,
        force: bool,
    ) -> Result<PausedRun, StoreError>;

    /// Settles a pending or claimed run as `Done` or `Abandoned` outside a turn's commit.
    async fn settle_run(
        &self,
        session_id: &str,
        run_id: &str,
        status: RunStatus,
    ) -> Result<PausedRun, StoreError>;

    /// Every run the session ever paused, oldest first, in any status.
    async fn runs(&self, session_id: &str) -> Result<Vec<PausedRun>, StoreError>;

    /// Every session, by id.
    async fn list(&self) -> Result<Vec<SessionInfo>, StoreError>;

    /// Deletes a session with its messages, actions and runs; `false` when it did not exist.
    /// A turn holding its lease then fails its commit with `LeaseLost`.
    async fn delete(&self, id: &str) -> Result<bool, StoreError>;

    /// Releases a lease without changing anything.
    async fn release(&self, lease: SessionLease) -> Result<(), StoreError> {
        drop(lease);
        Ok(())
    }

    /// Saves `session` whole: takes its lease (waiting up to 30 s), appends what it has
    /// beyond the committed session, commits. For callers that hold no lease of their own
    /// (creating an empty session, say); a turn uses `begin`/`commit`.
    async fn save(&self, session: &Session) -> Result<(), StoreError> {
        let (lease, current) = self.begin(&session.id, Duration::from_secs(30)).await?;
        // Committed even when empty: a saved session exists from then on.
        self.commit(lease, TurnChanges::between(&current, session))
            .await
    }
}

/// Tries `attempt` until it yields a value or `wait` runs out (then `SessionBusy` for
/// `session`), sleeping a short, growing, jittered interval between tries. For stores whose
/// holders live in other processes, where there is nothing to wake a waiter.
pub async fn poll_lease<T, F, Fut>(
    session: &str,
    wait: Duration,
    mut attempt: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, StoreError>>,
{
    let started = Instant::now();
    let mut pause_us: u64 = 500;
    loop {
        if let Some(v) = attempt().await? {
            return Ok(v);
        }
        let waited = started.elapsed();
        if waited >= wait {
            return Err(StoreError::busy(session, wait));
        }
        let jitter = rand::random_range(0..=pause_us);
        let sleep = Duration::from_micros(pause_us / 2 + jitter).min(wait - waited);
        tokio::time::sleep(sleep).await;
        pause_us = (pause_us * 2).min(20_000);
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
