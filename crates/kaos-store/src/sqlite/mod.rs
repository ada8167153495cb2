//! [`SqliteStore`]: the session store in one SQLite file (WAL mode, a busy timeout), shared
//! safely by every process that opens it. A turn appends its rows; nothing is rewritten.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kaos_agents::session::SessionInfo;
use kaos_agents::session::store::{now_ms, poll_lease};
use kaos_agents::session::{SessionMessage, ToolAction};
use kaos_agents::{
    PausedRun, RunStatus, Session, SessionLease, SessionStore, StoreError, TurnChanges,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::StoreOptions;
use crate::cache::{Cache, Header};
use crate::migrate::SQLITE;
use crate::renew::{Renewal, keep_alive};

mod group;

/// Sessions in a SQLite database file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    options: StoreOptions,
    cache: Arc<Cache>,
    /// Leases and commits, group-committed (see `group`).
    writer: group::Writer,
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `path`: missing directories are made
    /// 0700, the file 0600; WAL mode, the busy timeout, migrations applied.
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let inner = tokio::task::spawn_blocking(move || open_sync(path, options))
            .await
            .map_err(|e| StoreError::backend(format!("sqlite open task failed: {e}")))??;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&inner, &mut conn)
        })
        .await
        .map_err(|e| StoreError::backend(format!("sqlite task failed: {e}")))?
    }

    fn lease(&self, id: &str, token: String) -> SessionLease {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let release = move |session: &str, token: &str| {
            let (session, token) = (session.to_string(), token.to_string());
            let run = move || {
                if let Some(inner) = weak.upgrade() {
                    let conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner());
                    // Best effort: an unreleased lease expires after its TTL.
                    let _ = conn.execute(
                        "UPDATE kaos_sessions SET lease_token = NULL, lease_until = NULL \
                         WHERE id = ?1 AND lease_token = ?2",
                        params![session, token],
                    );
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(run);
                }
                Err(_) => run(),
            }
        };
        let lease = SessionLease::new(id, token.clone(), release);
        let ttl = self.inner.options.lease_ttl;
        let id = id.to_string();
        keep_alive(lease, ttl, Arc::downgrade(&self.inner), move |inner| {
            let (id, token) = (id.clone(), token.clone());
            async move {
                let renewed = tokio::task::spawn_blocking(move || {
                    let conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner());
                    conn.execute(
                        "UPDATE kaos_sessions SET lease_until = ?3 \
                         WHERE id = ?1 AND lease_token = ?2",
                        params![id, token, until(ttl)],
                    )
                })
                .await;
                if matches!(renewed, Ok(Ok(1))) {
                    Renewal::Held
                } else {
                    Renewal::Lost
                }
            }
        })
    }
}

/// This host's name (for lease tokens).
fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().replace(':', "_"))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
}

/// A new lease token: `host:pid:random`, so a process on the same host can tell that the
/// holder died.
fn lease_token() -> String {
    format!(
        "{}:{}:{}",
        host(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Whether `token` was issued by a process of this host that no longer runs (Linux: no
/// `/proc/PID`). Elsewhere a dead holder's lease frees itself after its TTL.
fn holder_is_dead(token: &str) -> bool {
    let mut parts = token.splitn(3, ':');
    let (Some(h), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    cfg!(target_os = "linux")
        && h == host()
        && pid != std::process::id()
        && !Path::new(&format!("/proc/{pid}")).exists()
}

fn until(ttl: Duration) -> i64 {
    (now_ms() + ttl.as_millis() as u64) as i64
}

fn open_sync(path: PathBuf, options: StoreOptions) -> Result<Inner, StoreError> {
    let at = |e: &dyn std::fmt::Display| StoreError::backend(format!("{}: {e}", path.display()));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::private_dir(parent, false)?;
    }
    {
        let mut open = std::fs::OpenOptions::new();
        open.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            open.mode(0o600);
        }
        open.open(&path).map_err(|e| at(&e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| at(&e))?;
        }
    }
    let mut conn = Connection::open(&path).map_err(|e| at(&e))?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| at(&e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| at(&e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(at(&format!("cannot switch to WAL mode (got {mode})")));
    }
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .map_err(|e| at(&e))?;
    migrate(&mut conn).map_err(|e| at(&e))?;
    let conn = Arc::new(Mutex::new(conn));
    let cache = Arc::new(Cache::default());
    let writer = group::Writer::start(conn.clone(), cache.clone(), path.display().to_string())?;
    Ok(Inner {
        conn,
        path,
        options,
        cache,
        writer,
    })
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS kaos_schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
    )?;
    let have: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM kaos_schema_migrations",
        [],
        |r| r.get(0),
    )?;
    for m in SQLITE.iter().filter(|m| m.version > have) {
        tx.execute_batch(m.sql)?;
        tx.execute(
            "INSERT INTO kaos_schema_migrations (version, name, applied_ms) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, now_ms() as i64],
        )?;
    }
    tx.commit()
}

impl Inner {
    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::backend(format!("{}: {e}", self.path.display()))
    }

    fn header(
        &self,
        conn: &Connection,
        id: &str,
    ) -> Result<Option<(Header, Option<String>, bool)>, StoreError> {
        conn.prepare_cached(
            "SELECT incarnation, turn_count, message_count, action_count, lease_token, committed \
             FROM kaos_sessions WHERE id = ?1",
        )
        .and_then(|mut st| {
            st.query_row(params![id], |r| {
                Ok((
                    Header {
                        incarnation: r.get(0)?,
                        turn_count: r.get::<_, i64>(1)? as u64,
                        message_count: r.get::<_, i64>(2)? as u64,
                        action_count: r.get::<_, i64>(3)? as u64,
                    },
                    r.get(4)?,
                    r.get::<_, i64>(5)? != 0,
                ))
            })
            .optional()
        })
        .map_err(|e| self.err(e))
    }

    /// The committed session under `header`: the cached prefix plus the rows after it.
    fn read(&self, conn: &Connection, id: &str, header: &Header) -> Result<Session, StoreError> {
        let mut s = self.cache.base(id, header);
        s.turn_count = header.turn_count;
        let e = |e| self.err(e);
        let mut st = conn
            .prepare_cached(
                "SELECT role, content FROM kaos_messages WHERE session_id = ?1 AND seq >= ?2 ORDER BY seq",
            )
            .map_err(e)?;
        let mut rows = st.query(params![id, s.messages.len() as i64]).map_err(e)?;
        while let Some(r) = rows.next().map_err(e)? {
            let role: String = r.get(0).map_err(e)?;
            let content: String = r.get(1).map_err(e)?;
            s.messages.push_back(SessionMessage {
                role: role.as_str().into(),
                content: content.into(),
            });
        }
        drop(rows);
        let mut st = conn
            .prepare_cached(
                "SELECT action FROM kaos_actions WHERE session_id = ?1 AND seq >= ?2 ORDER BY seq",
            )
            .map_err(e)?;
        let mut rows = st.query(params![id, s.actions.len() as i64]).map_err(e)?;
        while let Some(r) = rows.next().map_err(e)? {
            let json: String = r.get(0).map_err(e)?;
            let action: ToolAction = serde_json::from_str(&json)
                .map_err(|x| self.err(format!("session {id:?}: corrupt tool action: {x}")))?;
            s.actions.push_back(action);
        }
        drop(rows);
        self.cache.put(&header.incarnation, &s);
        for run in self.runs(conn, id, true)? {
            match run.status {
                RunStatus::Pending => {
                    s.pending_runs.insert(run.run_id, run.state);
                }
                _ => s.runs_in_doubt.push(run.run_id),
            }
        }
        Ok(s)
    }

    fn runs(
        &self,
        conn: &Connection,
        id: &str,
        open_only: bool,
    ) -> Result<Vec<PausedRun>, StoreError> {
        let sql = if open_only {
            "SELECT run_id, session_id, turn_number, status, state, claimed_by, claimed_ms \
             FROM kaos_runs WHERE session_id = ?1 AND status IN ('pending', 'claimed') \
             ORDER BY created_ms, rowid"
        } else {
            "SELECT run_id, session_id, turn_number, status, state, claimed_by, claimed_ms \
             FROM kaos_runs WHERE session_id = ?1 ORDER BY created_ms, rowid"
        };
        let e = |e| self.err(e);
        let mut st = conn.prepare_cached(sql).map_err(e)?;
        let rows = st.query_map(params![id], run_row).map_err(e)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(parse_run(r.map_err(e)?).map_err(|x| self.err(x))?);
        }
        Ok(out)
    }

    fn run(&self, conn: &Connection, session: &str, run_id: &str) -> Result<PausedRun, StoreError> {
        let row = conn
            .prepare_cached(
                "SELECT run_id, session_id, turn_number, status, state, claimed_by, claimed_ms \
                 FROM kaos_runs WHERE run_id = ?1 AND session_id = ?2",
            )
            .and_then(|mut st| st.query_row(params![run_id, session], run_row).optional())
            .map_err(|e| self.err(e))?;
        match row {
            Some(r) => parse_run(r).map_err(|x| self.err(x)),
            None => Err(StoreError::run_not_found(session, run_id)),
        }
    }
}

type RunRow = (
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    Option<i64>,
);

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn parse_run(r: RunRow) -> Result<PausedRun, String> {
    let (run_id, session_id, turn, status, state, claimed_by, claimed_ms) = r;
    Ok(PausedRun {
        status: RunStatus::parse(&status).map_err(|e| e.message)?,
        state: serde_json::from_str(&state)
            .map_err(|e| format!("paused run {run_id}: corrupt state: {e}"))?,
        run_id,
        session_id,
        turn_number: turn as u64,
        claimed_by,
        claimed_at_ms: claimed_ms.map(|v| v as u64),
    })
}

/// The commit gate (a test seam, see [`crate::COMMIT_GATE_ENV`]): writes `in-commit` to the
/// FIFO (blocking until a reader opens it), then opens it for reading, which blocks until
/// someone opens it for writing. A test reads the line and kills the process, which is then
/// inside its transaction (or writes to the FIFO to let the commit go on).
fn pass_gate(options: &StoreOptions) {
    if let Some(gate) = &options.commit_gate {
        let _ = std::fs::write(gate, b"in-commit\n");
        let _ = std::fs::File::open(gate);
    }
}

#[async_trait::async_trait]
impl SessionStore for SqliteStore {
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let id = id.to_string();
        self.with(move |inner, conn| {
            let tx = conn.transaction().map_err(|e| inner.err(e))?;
            let Some((header, _, true)) = inner.header(&tx, &id)? else {
                return Ok(None);
            };
            let s = inner.read(&tx, &id, &header)?;
            tx.finish().map_err(|e| inner.err(e))?;
            Ok(Some(s))
        })
        .await
    }

    async fn begin(&self, id: &str, wait: Duration) -> Result<(SessionLease, Session), StoreError> {
        let ttl = self.inner.options.lease_ttl;
        let (token, session) = poll_lease(id, wait, || {
            let id = id.to_string();
            let inner = self.inner.clone();
            // Runs inside a batch's transaction, in its own savepoint (see `group`).
            self.inner.writer.write(move |conn| {
                let e = |e| inner.err(e);
                let now = now_ms() as i64;
                conn.prepare_cached(
                    "INSERT INTO kaos_sessions (id, incarnation, created_ms, updated_ms) \
                     VALUES (?1, ?2, ?3, ?3) ON CONFLICT (id) DO NOTHING",
                )
                .and_then(|mut st| {
                    st.execute(params![id, uuid::Uuid::new_v4().simple().to_string(), now])
                })
                .map_err(e)?;
                let token = lease_token();
                let mut took = conn
                    .prepare_cached(
                        "UPDATE kaos_sessions SET lease_token = ?2, lease_until = ?3 \
                         WHERE id = ?1 AND (lease_token IS NULL OR lease_until < ?4)",
                    )
                    .and_then(|mut st| st.execute(params![id, token, until(ttl), now]))
                    .map_err(e)?;
                if took == 0
                    && let Some((_, Some(holder), _)) = inner.header(conn, &id)?
                    && holder_is_dead(&holder)
                {
                    // Its process is gone (killed mid-turn): the lease is free now, not
                    // after its TTL.
                    took = conn
                        .execute(
                            "UPDATE kaos_sessions SET lease_token = ?2, lease_until = ?3 \
                             WHERE id = ?1 AND lease_token = ?4",
                            params![id, token, until(ttl), holder],
                        )
                        .map_err(e)?;
                }
                if took == 0 {
                    return Ok(None);
                }
                let Some((header, _, _)) = inner.header(conn, &id)? else {
                    return Err(inner.err(format!("session {id:?} vanished while leased")));
                };
                let session = inner.read(conn, &id, &header)?;
                Ok(Some((token, session)))
            })
        })
        .await?;
        Ok((self.lease(id, token), session))
    }

    async fn commit(
        &self,
        mut lease: SessionLease,
        changes: TurnChanges,
    ) -> Result<(), StoreError> {
        let id = lease.session_id().to_string();
        let token = lease.token().to_string();
        let inner = self.inner.clone();
        let session = id.clone();
        // Runs inside a batch's transaction, in its own savepoint (see `group`): acknowledged
        // once that transaction committed.
        let (header, turns, changes) = self.inner.writer.write(move |tx| {
            let id = session;
            let e = |e| inner.err(e);
            let Some((header, holder, _)) = inner.header(tx, &id)? else {
                return Err(StoreError::lease_lost(&id));
            };
            if holder.as_deref() != Some(token.as_str()) {
                return Err(StoreError::lease_lost(&id));
            }
            let turn = changes.turn_count.unwrap_or(header.turn_count + 1) as i64;
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO kaos_messages (session_id, seq, turn_number, role, content) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(e)?;
                for (i, m) in changes.messages.iter().enumerate() {
                    let seq = (header.message_count + i as u64) as i64;
                    st.execute(params![id, seq, turn, m.role.as_str(), &*m.content])
                        .map_err(e)?;
                }
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO kaos_actions (session_id, seq, turn_number, action) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(e)?;
                for (i, a) in changes.actions.iter().enumerate() {
                    let seq = (header.action_count + i as u64) as i64;
                    let json = serde_json::to_string(a)
                        .map_err(|x| inner.err(format!("cannot serialize a tool action: {x}")))?;
                    st.execute(params![id, seq, turn, json]).map_err(e)?;
                }
            }
            let now = now_ms() as i64;
            for run_id in &changes.finished {
                let n = tx
                    .execute(
                        "UPDATE kaos_runs SET status = 'done', updated_ms = ?3 \
                         WHERE run_id = ?1 AND session_id = ?2 AND status IN ('pending', 'claimed')",
                        params![run_id, id, now],
                    )
                    .map_err(e)?;
                if n == 0 {
                    return Err(match inner.run(tx, &id, run_id) {
                        Ok(run) => StoreError::not_claimable(&run),
                        Err(x) => x,
                    });
                }
            }
            for (run_id, turn_number, state) in &changes.paused {
                tx.execute(
                    "INSERT INTO kaos_runs (run_id, session_id, turn_number, status, state, created_ms, updated_ms) \
                     VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?5)",
                    params![run_id, id, *turn_number as i64, state.to_string(), now],
                )
                .map_err(e)?;
            }
            pass_gate(&inner.options);
            let messages = header.message_count + changes.messages.len() as u64;
            let actions = header.action_count + changes.actions.len() as u64;
            let turns = changes.turn_count.unwrap_or(header.turn_count);
            tx.prepare_cached(
                "UPDATE kaos_sessions SET turn_count = ?2, message_count = ?3, action_count = ?4, \
                 lease_token = NULL, lease_until = NULL, updated_ms = ?5, committed = 1 WHERE id = ?1",
            )
            .and_then(|mut st| {
                st.execute(params![id, turns as i64, messages as i64, actions as i64, now])
            })
            .map_err(e)?;
            Ok((header, turns, changes))
        })
        .await?;
        lease.disarm();
        // The cache holds the whole committed session after `begin`; extend it.
        let inner = &self.inner;
        let mut s = inner.cache.base(&id, &header);
        if s.messages.len() as u64 == header.message_count
            && s.actions.len() as u64 == header.action_count
        {
            s.turn_count = turns;
            s.messages.extend(changes.messages);
            s.actions.extend(changes.actions);
            inner.cache.put(&header.incarnation, &s);
        } else {
            inner.cache.remove(&id);
        }
        Ok(())
    }

    async fn release(&self, mut lease: SessionLease) -> Result<(), StoreError> {
        let (id, token) = (lease.session_id().to_string(), lease.token().to_string());
        lease.disarm();
        self.with(move |inner, conn| {
            conn.execute(
                "UPDATE kaos_sessions SET lease_token = NULL, lease_until = NULL \
                 WHERE id = ?1 AND lease_token = ?2",
                params![id, token],
            )
            .map_err(|e| inner.err(e))?;
            Ok(())
        })
        .await
    }

    async fn claim_run(
        &self,
        session_id: &str,
        run_id: &str,
        claimant: &str,
        force: bool,
    ) -> Result<PausedRun, StoreError> {
        let (session, run_id, claimant) = (
            session_id.to_string(),
            run_id.to_string(),
            claimant.to_string(),
        );
        self.with(move |inner, conn| {
            let e = |e| inner.err(e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(e)?;
            let mut run = inner.run(&tx, &session, &run_id)?;
            match run.status {
                RunStatus::Pending => {}
                RunStatus::Claimed if force => {}
                _ => return Err(StoreError::not_claimable(&run)),
            }
            let now = now_ms();
            tx.execute(
                "UPDATE kaos_runs SET status = 'claimed', claimed_by = ?2, claimed_ms = ?3, updated_ms = ?3 \
                 WHERE run_id = ?1",
                params![run_id, claimant, now as i64],
            )
            .map_err(e)?;
            tx.commit().map_err(e)?;
            run.status = RunStatus::Claimed;
            run.claimed_by = Some(claimant);
            run.claimed_at_ms = Some(now);
            Ok(run)
        })
        .await
    }

    async fn settle_run(
        &self,
        session_id: &str,
        run_id: &str,
        status: RunStatus,
    ) -> Result<PausedRun, StoreError> {
        status.check_settles()?;
        let (session, run_id) = (session_id.to_string(), run_id.to_string());
        self.with(move |inner, conn| {
            let e = |e| inner.err(e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(e)?;
            let mut run = inner.run(&tx, &session, &run_id)?;
            if !matches!(run.status, RunStatus::Pending | RunStatus::Claimed) {
                return Err(StoreError::not_claimable(&run));
            }
            tx.execute(
                "UPDATE kaos_runs SET status = ?2, updated_ms = ?3 WHERE run_id = ?1",
                params![run_id, status.as_str(), now_ms() as i64],
            )
            .map_err(e)?;
            tx.commit().map_err(e)?;
            run.status = status;
            Ok(run)
        })
        .await
    }

    async fn runs(&self, session_id: &str) -> Result<Vec<PausedRun>, StoreError> {
        let id = session_id.to_string();
        self.with(move |inner, conn| inner.runs(conn, &id, false))
            .await
    }

    async fn list(&self) -> Result<Vec<SessionInfo>, StoreError> {
        self.with(|inner, conn| {
            let e = |e| inner.err(e);
            let mut st = conn
                .prepare(
                    "SELECT s.id, s.turn_count, s.message_count, \
                     (SELECT COUNT(*) FROM kaos_runs r WHERE r.session_id = s.id AND r.status = 'pending') \
                     FROM kaos_sessions s WHERE s.committed = 1 ORDER BY s.id",
                )
                .map_err(e)?;
            let rows = st
                .query_map([], |r| {
                    Ok(SessionInfo {
                        id: r.get(0)?,
                        turn_count: r.get::<_, i64>(1)? as u64,
                        message_count: r.get::<_, i64>(2)? as u64,
                        pending_runs: r.get::<_, i64>(3)? as u64,
                    })
                })
                .map_err(e)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(e)
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.with(move |inner, conn| {
            let e = |e| inner.err(e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(e)?;
            let n = tx
                .execute(
                    "DELETE FROM kaos_sessions WHERE id = ?1 AND committed = 1",
                    params![id],
                )
                .map_err(e)?;
            tx.execute("DELETE FROM kaos_sessions WHERE id = ?1", params![id])
                .map_err(e)?;
            for table in ["kaos_messages", "kaos_actions", "kaos_runs"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE session_id = ?1"),
                    params![id],
                )
                .map_err(e)?;
            }
            tx.commit().map_err(e)?;
            inner.cache.remove(&id);
            Ok(n > 0)
        })
        .await
    }
}
