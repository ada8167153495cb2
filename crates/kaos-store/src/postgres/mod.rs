//! [`PostgresStore`]: the session store in PostgreSQL, for many processes or replicas. A
//! lease is a row update on the session; a commit checks the lease and appends in one
//! statement (turns that pause or finish runs: one transaction with the session row locked,
//! `SELECT … FOR UPDATE`); a claim is a conditional row update on the run. Leases and plain
//! commits of sessions that arrive together share one statement (`batch`): a turn costs two
//! round trips, and concurrent turns share them.

mod batch;
mod connect;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use kaos_agents::session::store::poll_lease;
use kaos_agents::session::{SessionInfo, SessionMessage, ToolAction};
use kaos_agents::{
    PausedRun, RunStatus, Session, SessionLease, SessionStore, StoreError, TurnChanges,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::StoreOptions;
use crate::cache::{Cache, Header};
use crate::renew::{Renewal, keep_alive};

/// The database's clock in unix ms (leases compare against one clock for all replicas).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

const RUN_COLUMNS: &str = "run_id, session_id, turn_number, status, state, claimed_by, claimed_ms";

/// Sessions in PostgreSQL.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    shown: String,
    options: StoreOptions,
    cache: Cache,
    batch: batch::Batcher,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.inner.shown)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (see [`crate::open`] for the URL and the `PG*` variables), creates
    /// `options.schema` when set, and applies the migrations.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let settings = connect::settings(url, &|k| std::env::var(k).ok())?;
        let shown = settings.shown.clone();
        let pool = connect::pool(settings, &options).await?;
        let batch = batch::Batcher::start(
            pool.clone(),
            shown.clone(),
            options.lease_ttl.as_millis() as i64,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                shown,
                options,
                cache: Cache::default(),
                batch,
            }),
        })
    }

    /// Drops `schema` and everything in it (test clean-up).
    pub async fn drop_schema(&self, schema: &str) -> Result<(), StoreError> {
        let client = self.inner.client().await?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .map_err(|e| self.inner.err(e))
    }

    fn lease(&self, id: &str, token: String) -> SessionLease {
        let weak = Arc::downgrade(&self.inner);
        let release = move |session: &str, token: &str| {
            let (session, token) = (session.to_string(), token.to_string());
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                return; // no runtime left: the lease expires after its TTL
            };
            handle.spawn(async move {
                if let Some(inner) = weak.upgrade()
                    && let Ok(c) = inner.pool.get().await
                {
                    let _ = c
                        .execute(
                            "UPDATE kaos_sessions SET lease_token = NULL, lease_until = NULL \
                             WHERE id = $1 AND lease_token = $2",
                            &[&session, &token],
                        )
                        .await;
                }
            });
        };
        let lease = SessionLease::new(id, token.clone(), release);
        let ttl = self.inner.options.lease_ttl;
        let id = id.to_string();
        keep_alive(lease, ttl, Arc::downgrade(&self.inner), move |inner| {
            let (id, token) = (id.clone(), token.clone());
            async move {
                let Ok(c) = inner.pool.get().await else {
                    return Renewal::Unreachable;
                };
                let renewed = c
                    .execute(
                        &format!(
                            "UPDATE kaos_sessions SET lease_until = {NOW_MS} + $3 \
                             WHERE id = $1 AND lease_token = $2"
                        ),
                        &[&id, &token, &(ttl.as_millis() as i64)],
                    )
                    .await;
                if matches!(renewed, Ok(1)) {
                    Renewal::Held
                } else {
                    Renewal::Lost
                }
            }
        })
    }

    /// A commit that pauses or finishes runs: one transaction on one connection, the
    /// session row locked (`SELECT … FOR UPDATE`), each run's move checked.
    async fn commit_with_runs(
        &self,
        mut lease: SessionLease,
        changes: TurnChanges,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let id = lease.session_id().to_string();
        let e = |e: tokio_postgres::Error| inner.err(e);
        let mut c = inner.client().await?;
        let tx = c.transaction().await.map_err(e)?;
        let row = tx
            .query_opt(
                "SELECT incarnation, turn_count, message_count, action_count, lease_token \
                 FROM kaos_sessions WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(e)?;
        let Some(row) = row else {
            return Err(StoreError::lease_lost(&id));
        };
        let header = header_of(&row);
        let holder: Option<&str> = row.get(4);
        if holder != Some(lease.token()) {
            return Err(StoreError::lease_lost(&id));
        }
        let turn = changes.turn_count.unwrap_or(header.turn_count + 1) as i64;
        if !changes.messages.is_empty() {
            let roles: Vec<&str> = changes.messages.iter().map(|m| m.role.as_str()).collect();
            let contents: Vec<&str> = changes.messages.iter().map(|m| &*m.content).collect();
            let first = header.message_count as i64;
            let st = tx
                .prepare_cached(
                    "INSERT INTO kaos_messages (session_id, seq, turn_number, role, content) \
                     SELECT $1, $2 + m.i - 1, $3, m.role, m.content \
                     FROM unnest($4::text[], $5::text[]) WITH ORDINALITY AS m(role, content, i)",
                )
                .await
                .map_err(e)?;
            let params: [&(dyn ToSql + Sync); 5] = [&id, &first, &turn, &roles, &contents];
            tx.execute(&st, &params).await.map_err(e)?;
        }
        if !changes.actions.is_empty() {
            let mut json = Vec::with_capacity(changes.actions.len());
            for a in &changes.actions {
                json.push(
                    serde_json::to_string(a)
                        .map_err(|x| inner.err(format!("cannot serialize a tool action: {x}")))?,
                );
            }
            let first = header.action_count as i64;
            let st = tx
                .prepare_cached(
                    "INSERT INTO kaos_actions (session_id, seq, turn_number, action) \
                     SELECT $1, $2 + a.i - 1, $3, a.action \
                     FROM unnest($4::text[]) WITH ORDINALITY AS a(action, i)",
                )
                .await
                .map_err(e)?;
            tx.execute(&st, &[&id, &first, &turn, &json])
                .await
                .map_err(e)?;
        }
        for run_id in &changes.finished {
            let n = tx
                .execute(
                    &format!(
                        "UPDATE kaos_runs SET status = 'done', updated_ms = {NOW_MS} \
                         WHERE run_id = $1 AND session_id = $2 AND status IN ('pending', 'claimed')"
                    ),
                    &[run_id, &id],
                )
                .await
                .map_err(e)?;
            if n == 0 {
                return Err(match inner.run(&tx, &id, run_id).await {
                    Ok(run) => StoreError::not_claimable(&run),
                    Err(x) => x,
                });
            }
        }
        for (run_id, turn_number, state) in &changes.paused {
            tx.execute(
                &format!(
                    "INSERT INTO kaos_runs \
                       (run_id, session_id, turn_number, status, state, created_ms, updated_ms) \
                     VALUES ($1, $2, $3, 'pending', $4, {NOW_MS}, {NOW_MS})"
                ),
                &[run_id, &id, &(*turn_number as i64), &state.to_string()],
            )
            .await
            .map_err(e)?;
        }
        let turns = changes.turn_count.unwrap_or(header.turn_count);
        let messages = header.message_count + changes.messages.len() as u64;
        let actions = header.action_count + changes.actions.len() as u64;
        let st = tx
            .prepare_cached(&format!(
                "UPDATE kaos_sessions SET turn_count = $2, message_count = $3, action_count = $4, \
                 lease_token = NULL, lease_until = NULL, updated_ms = {NOW_MS}, committed = 1 WHERE id = $1"
            ))
            .await
            .map_err(e)?;
        tx.execute(
            &st,
            &[&id, &(turns as i64), &(messages as i64), &(actions as i64)],
        )
        .await
        .map_err(e)?;
        tx.commit().await.map_err(e)?;
        lease.disarm();
        inner.remember(&id, &header, turns, changes);
        Ok(())
    }
}

impl Inner {
    /// Extends the cached session by a commit's messages and actions (`before` = the
    /// header the commit started from), or forgets it when the cache did not hold the rest.
    fn remember(&self, id: &str, before: &Header, turn_count: u64, changes: TurnChanges) {
        let mut s = self.cache.base(id, before);
        if s.messages.len() as u64 == before.message_count
            && s.actions.len() as u64 == before.action_count
        {
            s.turn_count = turn_count;
            s.messages.extend(changes.messages);
            s.actions.extend(changes.actions);
            self.cache.put(&before.incarnation, &s);
        } else {
            self.cache.remove(id);
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::backend(format!("PostgreSQL store {}: {e}", self.shown))
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| {
            self.err(format!(
                "cannot get a connection: {e} (is the server running?)"
            ))
        })
    }

    /// The committed session under `header`: the cached prefix plus the rows after it.
    async fn read(
        &self,
        c: &impl deadpool_postgres::GenericClient,
        id: &str,
        header: &Header,
        with_runs: bool,
    ) -> Result<Session, StoreError> {
        let mut s = self.cache.base(id, header);
        s.turn_count = header.turn_count;
        let from = s.messages.len() as i64;
        let to = header.message_count as i64;
        if from < to {
            let st = c
                .prepare_cached(
                    "SELECT role, content FROM kaos_messages \
                     WHERE session_id = $1 AND seq >= $2 AND seq < $3 ORDER BY seq",
                )
                .await
                .map_err(|e| self.err(e))?;
            for r in c
                .query(&st, &[&id, &from, &to])
                .await
                .map_err(|e| self.err(e))?
            {
                let role: &str = r.get(0);
                let content: &str = r.get(1);
                s.messages.push_back(SessionMessage {
                    role: role.into(),
                    content: content.into(),
                });
            }
        }
        let from = s.actions.len() as i64;
        let to = header.action_count as i64;
        if from < to {
            let st = c
                .prepare_cached(
                    "SELECT action FROM kaos_actions \
                     WHERE session_id = $1 AND seq >= $2 AND seq < $3 ORDER BY seq",
                )
                .await
                .map_err(|e| self.err(e))?;
            for r in c
                .query(&st, &[&id, &from, &to])
                .await
                .map_err(|e| self.err(e))?
            {
                let json: &str = r.get(0);
                let action: ToolAction = serde_json::from_str(json)
                    .map_err(|e| self.err(format!("session {id:?}: corrupt tool action: {e}")))?;
                s.actions.push_back(action);
            }
        }
        self.cache.put(&header.incarnation, &s);
        if !with_runs {
            return Ok(s);
        }
        for run in self.runs(c, id, true).await? {
            match run.status {
                RunStatus::Pending => {
                    s.pending_runs.insert(run.run_id, run.state);
                }
                _ => s.runs_in_doubt.push(run.run_id),
            }
        }
        Ok(s)
    }

    async fn runs(
        &self,
        c: &impl deadpool_postgres::GenericClient,
        id: &str,
        open_only: bool,
    ) -> Result<Vec<PausedRun>, StoreError> {
        let filter = if open_only {
            "AND status IN ('pending', 'claimed')"
        } else {
            ""
        };
        let st = c
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM kaos_runs WHERE session_id = $1 {filter} \
                 ORDER BY created_ms, run_id"
            ))
            .await
            .map_err(|e| self.err(e))?;
        c.query(&st, &[&id])
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| self.run_of(r))
            .collect()
    }

    async fn run(
        &self,
        c: &impl deadpool_postgres::GenericClient,
        session: &str,
        run_id: &str,
    ) -> Result<PausedRun, StoreError> {
        let row = c
            .query_opt(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM kaos_runs WHERE run_id = $1 AND session_id = $2"
                ),
                &[&run_id, &session],
            )
            .await
            .map_err(|e| self.err(e))?;
        match row {
            Some(r) => self.run_of(&r),
            None => Err(StoreError::run_not_found(session, run_id)),
        }
    }

    fn run_of(&self, r: &Row) -> Result<PausedRun, StoreError> {
        let run_id: String = r.get(0);
        let state: &str = r.get(4);
        Ok(PausedRun {
            session_id: r.get(1),
            turn_number: r.get::<_, i64>(2) as u64,
            status: RunStatus::parse(r.get(3))?,
            state: serde_json::from_str(state)
                .map_err(|e| self.err(format!("paused run {run_id}: corrupt state: {e}")))?,
            claimed_by: r.get(5),
            claimed_at_ms: r.get::<_, Option<i64>>(6).map(|v| v as u64),
            run_id,
        })
    }
}

fn header_of(r: &Row) -> Header {
    Header {
        incarnation: r.get(0),
        turn_count: r.get::<_, i64>(1) as u64,
        message_count: r.get::<_, i64>(2) as u64,
        action_count: r.get::<_, i64>(3) as u64,
    }
}

#[async_trait::async_trait]
impl SessionStore for PostgresStore {
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let inner = &self.inner;
        let c = inner.client().await?;
        let row = c
            .query_opt(
                "SELECT incarnation, turn_count, message_count, action_count \
                 FROM kaos_sessions WHERE id = $1 AND committed = 1",
                &[&id],
            )
            .await
            .map_err(|e| inner.err(e))?;
        match row {
            Some(r) => Ok(Some(inner.read(&c, id, &header_of(&r), true).await?)),
            None => Ok(None),
        }
    }

    async fn begin(&self, id: &str, wait: Duration) -> Result<(SessionLease, Session), StoreError> {
        let inner = &self.inner;
        // Leases of sessions that start together are taken in one statement (see `batch`).
        let taken = poll_lease(id, wait, || inner.batch.begin(id)).await?;
        let lease = self.lease(id, taken.token);
        let header = taken.header;
        let mut session = inner.cache.base(id, &header);
        session.turn_count = header.turn_count;
        let cached = session.messages.len() as u64 == header.message_count
            && session.actions.len() as u64 == header.action_count;
        if !cached || taken.open_runs {
            // Dropping the lease on an error here releases it.
            let c = inner.client().await?;
            session = inner.read(&c, id, &header, taken.open_runs).await?;
        }
        Ok((lease, session))
    }

    async fn commit(&self, lease: SessionLease, changes: TurnChanges) -> Result<(), StoreError> {
        let inner = &self.inner;
        if !changes.paused.is_empty() || !changes.finished.is_empty() {
            return self.commit_with_runs(lease, changes).await;
        }
        // Commits that arrive together run as one statement (see `batch`).
        let id = lease.session_id().to_string();
        let done = inner.batch.commit(lease, changes).await?;
        inner.remember(&id, &done.before, done.turn_count, done.changes);
        Ok(())
    }

    async fn release(&self, mut lease: SessionLease) -> Result<(), StoreError> {
        lease.disarm();
        let c = self.inner.client().await?;
        c.execute(
            "UPDATE kaos_sessions SET lease_token = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_token = $2",
            &[&lease.session_id(), &lease.token()],
        )
        .await
        .map_err(|e| self.inner.err(e))?;
        Ok(())
    }

    async fn claim_run(
        &self,
        session_id: &str,
        run_id: &str,
        claimant: &str,
        force: bool,
    ) -> Result<PausedRun, StoreError> {
        let inner = &self.inner;
        let c = inner.client().await?;
        let row = c
            .query_opt(
                &format!(
                    "UPDATE kaos_runs SET status = 'claimed', claimed_by = $3, \
                       claimed_ms = {NOW_MS}, updated_ms = {NOW_MS} \
                     WHERE run_id = $1 AND session_id = $2 \
                       AND (status = 'pending' OR ($4 AND status = 'claimed')) \
                     RETURNING {RUN_COLUMNS}"
                ),
                &[&run_id, &session_id, &claimant, &force],
            )
            .await
            .map_err(|e| inner.err(e))?;
        match row {
            Some(r) => inner.run_of(&r),
            None => Err(StoreError::not_claimable(
                &inner.run(&c, session_id, run_id).await?,
            )),
        }
    }

    async fn settle_run(
        &self,
        session_id: &str,
        run_id: &str,
        status: RunStatus,
    ) -> Result<PausedRun, StoreError> {
        status.check_settles()?;
        let inner = &self.inner;
        let c = inner.client().await?;
        let row = c
            .query_opt(
                &format!(
                    "UPDATE kaos_runs SET status = $3, updated_ms = {NOW_MS} \
                     WHERE run_id = $1 AND session_id = $2 AND status IN ('pending', 'claimed') \
                     RETURNING {RUN_COLUMNS}"
                ),
                &[&run_id, &session_id, &status.as_str()],
            )
            .await
            .map_err(|e| inner.err(e))?;
        match row {
            Some(r) => inner.run_of(&r),
            None => Err(StoreError::not_claimable(
                &inner.run(&c, session_id, run_id).await?,
            )),
        }
    }

    async fn runs(&self, session_id: &str) -> Result<Vec<PausedRun>, StoreError> {
        let c = self.inner.client().await?;
        self.inner.runs(&c, session_id, false).await
    }

    async fn list(&self) -> Result<Vec<SessionInfo>, StoreError> {
        let inner = &self.inner;
        let c = inner.client().await?;
        let rows = c
            .query(
                "SELECT s.id, s.turn_count, s.message_count, \
                   (SELECT COUNT(*) FROM kaos_runs r WHERE r.session_id = s.id AND r.status = 'pending') \
                 FROM kaos_sessions s WHERE s.committed = 1 ORDER BY s.id",
                &[],
            )
            .await
            .map_err(|e| inner.err(e))?;
        Ok(rows
            .iter()
            .map(|r| SessionInfo {
                id: r.get(0),
                turn_count: r.get::<_, i64>(1) as u64,
                message_count: r.get::<_, i64>(2) as u64,
                pending_runs: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let e = |e: tokio_postgres::Error| inner.err(e);
        let mut c = inner.client().await?;
        let tx = c.transaction().await.map_err(e)?;
        let n = tx
            .execute(
                "DELETE FROM kaos_sessions WHERE id = $1 AND committed = 1",
                &[&id],
            )
            .await
            .map_err(e)?;
        tx.execute("DELETE FROM kaos_sessions WHERE id = $1", &[&id])
            .await
            .map_err(e)?;
        for table in ["kaos_messages", "kaos_actions", "kaos_runs"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE session_id = $1"),
                &[&id],
            )
            .await
            .map_err(e)?;
        }
        tx.commit().await.map_err(e)?;
        inner.cache.remove(id);
        Ok(n > 0)
    }
}
