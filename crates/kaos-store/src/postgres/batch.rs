//! Group commit for the PostgreSQL store: the leases (`begin`) and the plain commits of
//! many sessions that arrive together run as **one statement** each, one round trip and one
//! WAL flush for the lot, instead of several round trips and a flush per session.
//!
//! * One worker task per kind (leases, commits) takes every request queued, runs them as one
//!   set-based statement (arrays through `unnest`), and answers each request only after the
//!   statement has committed. Lease statements run one at a time; up to
//!   [`COMMITS_IN_FLIGHT`] commit statements run at once (their sessions are distinct).
//! * Each session's part is atomic on its own: its lease check and its rows sit in the same
//!   statement, and a session whose lease is gone is simply left out (`LeaseLost` for it, the
//!   others commit).
//! * A batch that fails as a whole (a deadlock with another process, a lost connection, a
//!   constraint) is retried one request at a time, so one session's error is its own.
//! * A request whose caller went away (its future dropped) before its batch ran is skipped:
//!   a commit is then not made (its lease is released), a lease not taken.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::Pool;
use kaos_agents::{SessionLease, StoreError, StoreErrorKind, TurnChanges};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::NOW_MS;
use crate::cache::Header;

/// The most requests one statement carries.
const MAX_BATCH: usize = 512;

/// Commit statements in flight at once (each on its own connection).
const COMMITS_IN_FLIGHT: usize = 4;

/// A lease taken by a batch: its token, the session's header, whether it has open runs.
#[derive(Debug)]
pub(super) struct Taken {
    pub token: String,
    pub header: Header,
    pub open_runs: bool,
}

/// What a committed turn left: the header before it and the turn count after it.
#[derive(Debug)]
pub(super) struct Committed {
    pub before: Header,
    pub turn_count: u64,
    /// The changes, handed back for the cache.
    pub changes: TurnChanges,
}

struct BeginReq {
    id: String,
    reply: oneshot::Sender<Result<Option<Taken>, StoreError>>,
}

/// A commit waiting for its batch; the lease rides along so that a request dropped unrun
/// releases it.
struct CommitReq {
    lease: SessionLease,
    changes: TurnChanges,
    reply: oneshot::Sender<Result<Committed, StoreError>>,
}

/// The two queues; the workers stop when this is dropped.
pub(super) struct Batcher {
    begins: mpsc::UnboundedSender<BeginReq>,
    commits: mpsc::UnboundedSender<CommitReq>,
}

/// What the workers need to run statements.
#[derive(Clone)]
struct Ctx {
    pool: Pool,
    shown: String,
    ttl_ms: i64,
}

impl Ctx {
    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::backend(format!("PostgreSQL store {}: {e}", self.shown))
    }

    /// A pooled connection, or an error saying why there is none.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| {
            self.err(format!(
                "cannot get a connection: {e} (is the server running?)"
            ))
        })
    }
}

impl Batcher {
    /// Starts the workers on the current runtime.
    pub fn start(pool: Pool, shown: String, ttl_ms: i64) -> Self {
        let ctx = Ctx {
            pool,
            shown,
            ttl_ms,
        };
        let (begins, begin_rx) = mpsc::unbounded_channel();
        let (commits, commit_rx) = mpsc::unbounded_channel();
        tokio::spawn(begin_worker(ctx.clone(), begin_rx));
        tokio::spawn(commit_worker(ctx, commit_rx));
        Self { begins, commits }
    }

    /// Tries to take the lease on `id` (creating the session when new): `None` when another
    /// holder has it.
    pub async fn begin(&self, id: &str) -> Result<Option<Taken>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.begins
            .send(BeginReq {
                id: id.to_string(),
                reply,
            })
            .map_err(|_| StoreError::backend("the PostgreSQL store's lease worker stopped"))?;
        rx.await.map_err(|_| {
            StoreError::backend(format!(
                "session {id:?}: the PostgreSQL store's lease worker stopped"
            ))
        })?
    }

    /// Commits `changes` (no runs paused or finished) under `lease`.
    pub async fn commit(
        &self,
        lease: SessionLease,
        changes: TurnChanges,
    ) -> Result<Committed, StoreError> {
        let id = lease.session_id().to_string();
        let (reply, rx) = oneshot::channel();
        self.commits
            .send(CommitReq {
                lease,
                changes,
                reply,
            })
            .map_err(|_| {
                StoreError::backend(format!(
                    "session {id:?}: the PostgreSQL store's commit worker stopped; nothing was saved"
                ))
            })?;
        rx.await.map_err(|_| {
            StoreError::backend(format!(
                "session {id:?}: the PostgreSQL store's commit worker stopped during the commit (it may or may not have been saved)"
            ))
        })?
    }
}

async fn begin_worker(ctx: Ctx, mut rx: mpsc::UnboundedReceiver<BeginReq>) {
    let mut queue = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut queue, MAX_BATCH).await > 0 {
        // One request per session in a statement: only one of them could take the lease,
        // so the others are told at once that it is held (they poll again).
        let mut seen = HashSet::new();
        let mut batch = Vec::with_capacity(queue.len());
        for r in queue.drain(..) {
            if r.reply.is_closed() {
                continue;
            }
            if seen.insert(r.id.clone()) {
                batch.push(r);
            } else {
                let _ = r.reply.send(Ok(None));
            }
        }
        if batch.is_empty() {
            continue;
        }
        let rows: Vec<(String, String, String)> = batch
            .iter()
            .map(|r| (r.id.clone(), new_id(), new_id()))
            .collect();
        match lease_rows(&ctx, &rows).await {
            Ok(mut got) => {
                for (r, (_, token, _)) in batch.into_iter().zip(rows.iter()) {
                    let taken = got.remove(&r.id).filter(|t| &t.token == token);
                    answer_begin(&ctx, r, Ok(taken));
                }
            }
            Err(_) => {
                // Alone, each request meets only its own error.
                for (r, row) in batch.into_iter().zip(rows.iter()) {
                    let one = lease_rows(&ctx, std::slice::from_ref(row))
                        .await
                        .map(|mut got| got.remove(&row.0).filter(|t| t.token == row.1));
                    answer_begin(&ctx, r, one);
                }
            }
        }
    }
}

/// Sends a lease to its caller; one nobody waits for any more is released at once.
fn answer_begin(ctx: &Ctx, r: BeginReq, result: Result<Option<Taken>, StoreError>) {
    if let Err(Ok(Some(taken))) = r.reply.send(result) {
        spawn_release(ctx, r.id, taken.token);
    }
}

/// Frees a lease taken for a caller that went away.
fn spawn_release(ctx: &Ctx, id: String, token: String) {
    let pool = ctx.pool.clone();
    tokio::spawn(async move {
        if let Ok(c) = pool.get().await {
            // Best effort: an unreleased lease expires after its TTL.
            let _ = c
                .execute(
                    "UPDATE kaos_sessions SET lease_token = NULL, lease_until = NULL \
                     WHERE id = $1 AND lease_token = $2",
                    &[&id, &token],
                )
                .await;
        }
    });
}

/// A fresh token or incarnation.
fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Takes the leases of `rows` (`(session, token, incarnation for a new session)`) in one
/// statement; returns the sessions whose lease it took, by id. A new session is inserted
/// with its lease; an existing one is leased when free or expired. A row whose lease is
/// held is not waited for (its snapshot shows it held), so the statement blocks only on
/// another statement taking the same free lease at the same instant.
///
/// The statement's transaction does not wait for its WAL flush (`synchronous_commit = off`
/// for it alone): a lease lost to a server crash is harmless, since every commit checks its
/// lease in its own, durable, transaction (and fails with `LeaseLost` if it is gone).
async fn lease_rows(
    ctx: &Ctx,
    rows: &[(String, String, String)],
) -> Result<HashMap<String, Taken>, StoreError> {
    let mut sorted: Vec<&(String, String, String)> = rows.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let ids: Vec<&str> = sorted.iter().map(|r| r.0.as_str()).collect();
    let tokens: Vec<&str> = sorted.iter().map(|r| r.1.as_str()).collect();
    let incarnations: Vec<&str> = sorted.iter().map(|r| r.2.as_str()).collect();
    let c = ctx.client().await?;
    let st = c
        .prepare_cached(&format!(
            "WITH req AS ( \
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS r(id, token, incarnation) \
             ), ins AS ( \
               INSERT INTO kaos_sessions AS s \
                 (id, incarnation, created_ms, updated_ms, lease_token, lease_until) \
               SELECT id, incarnation, {NOW_MS}, {NOW_MS}, token, {NOW_MS} + $4 FROM req ORDER BY id \
               ON CONFLICT (id) DO NOTHING \
               RETURNING s.id, s.lease_token, s.incarnation, s.turn_count, s.message_count, s.action_count \
             ), upd AS ( \
               UPDATE kaos_sessions AS s SET lease_token = req.token, lease_until = {NOW_MS} + $4 \
               FROM req WHERE s.id = req.id AND (s.lease_token IS NULL OR s.lease_until < {NOW_MS}) \
               RETURNING s.id, s.lease_token, s.incarnation, s.turn_count, s.message_count, s.action_count \
             ), got AS (SELECT * FROM ins UNION ALL SELECT * FROM upd), \
             lazy AS (SELECT set_config('synchronous_commit', 'off', true)) \
             SELECT got.*, EXISTS (SELECT 1 FROM kaos_runs r WHERE r.session_id = got.id \
               AND r.status IN ('pending', 'claimed')) FROM got, lazy"
        ))
        .await
        .map_err(|e| ctx.err(e))?;
    let params: [&(dyn ToSql + Sync); 4] = [&ids, &tokens, &incarnations, &ctx.ttl_ms];
    let mut out = HashMap::with_capacity(rows.len());
    for r in c.query(&st, &params).await.map_err(|e| ctx.err(e))? {
        let id: String = r.get(0);
        let token: Option<String> = r.get(1);
        let Some(token) = token else { continue };
        out.insert(
            id,
            Taken {
                token,
                header: Header {
                    incarnation: r.get(2),
                    turn_count: r.get::<_, i64>(3) as u64,
                    message_count: r.get::<_, i64>(4) as u64,
                    action_count: r.get::<_, i64>(5) as u64,
                },
                open_runs: r.get(6),
            },
        );
    }
    Ok(out)
}

async fn commit_worker(ctx: Ctx, mut rx: mpsc::UnboundedReceiver<CommitReq>) {
    // Batches of distinct sessions touch distinct rows: several may be in flight, and the
    // server flushes their commits together.
    let slots = Arc::new(Semaphore::new(COMMITS_IN_FLIGHT));
    let mut queue = Vec::with_capacity(MAX_BATCH);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if rx.recv_many(&mut queue, MAX_BATCH).await == 0 {
            return;
        }
        let mut rows = Vec::with_capacity(queue.len());
        let mut ready = Vec::with_capacity(queue.len());
        for r in queue.drain(..) {
            // A caller that went away: its commit is not made and its lease is released.
            if r.reply.is_closed() {
                continue;
            }
            match CommitRow::of(&ctx, &r) {
                Ok(row) => {
                    rows.push(row);
                    ready.push(r);
                }
                Err(e) => {
                    let _ = r.reply.send(Err(e));
                }
            }
        }
        if ready.is_empty() {
            continue;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            commit_batch(&ctx, ready, rows).await;
            drop(slot);
        });
    }
}

async fn commit_batch(ctx: &Ctx, ready: Vec<CommitReq>, rows: Vec<CommitRow>) {
    match commit_rows(ctx, &rows).await {
        Ok(mut done) => {
            for r in ready {
                let result = take_committed(&mut done, &r.lease);
                answer_commit(r, result);
            }
        }
        Err(_) => {
            // Alone, each commit meets only its own error.
            for (r, row) in ready.into_iter().zip(rows.iter()) {
                let result = commit_rows(ctx, std::slice::from_ref(row))
                    .await
                    .and_then(|mut done| take_committed(&mut done, &r.lease));
                answer_commit(r, result);
            }
        }
    }
}

/// This lease's commit out of a batch's results (`LeaseLost` when the statement left it out).
fn take_committed(
    done: &mut HashMap<String, (String, Committed)>,
    lease: &SessionLease,
) -> Result<Committed, StoreError> {
    match done.remove(lease.session_id()) {
        Some((token, c)) if token == lease.token() => Ok(c),
        _ => Err(StoreError::lease_lost(lease.session_id())),
    }
}

/// Answers a commit request. A commit that ran (or found its lease gone) settles the lease;
/// a failed one drops it, which releases it.
fn answer_commit(mut r: CommitReq, result: Result<Committed, StoreError>) {
    let result = match result {
        Ok(mut c) => {
            r.lease.disarm();
            c.changes = std::mem::take(&mut r.changes);
            Ok(c)
        }
        Err(e) => {
            if e.kind == StoreErrorKind::LeaseLost {
                r.lease.disarm(); // nothing left to release
            }
            Err(e)
        }
    };
    let _ = r.reply.send(result);
}

/// One commit's values for the batch statement.
struct CommitRow {
    id: String,
    token: String,
    turn_count: Option<i64>,
    roles: Vec<String>,
    contents: Vec<std::sync::Arc<str>>,
    actions: Vec<String>,
}

impl CommitRow {
    fn of(ctx: &Ctx, r: &CommitReq) -> Result<Self, StoreError> {
        let mut actions = Vec::with_capacity(r.changes.actions.len());
        for a in &r.changes.actions {
            actions.push(
                serde_json::to_string(a)
                    .map_err(|x| ctx.err(format!("cannot serialize a tool action: {x}")))?,
            );
        }
        Ok(Self {
            id: r.lease.session_id().to_string(),
            token: r.lease.token().to_string(),
            turn_count: r.changes.turn_count.map(|n| n as i64),
            roles: r
                .changes
                .messages
                .iter()
                .map(|m| m.role.to_string())
                .collect(),
            contents: r
                .changes
                .messages
                .iter()
                .map(|m| m.content.clone())
                .collect(),
            actions,
        })
    }
}

/// Commits `rows` in one statement: each session whose lease its row holds gets its turn
/// count, its messages and actions appended after the ones it has, and its lease released;
/// a session whose lease is gone is left out. Returns the committed ones by id, with the
/// token that committed them.
async fn commit_rows(
    ctx: &Ctx,
    rows: &[CommitRow],
) -> Result<HashMap<String, (String, Committed)>, StoreError> {
    let mut order: Vec<&CommitRow> = rows.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<&str> = order.iter().map(|r| r.id.as_str()).collect();
    let tokens: Vec<&str> = order.iter().map(|r| r.token.as_str()).collect();
    let turns: Vec<Option<i64>> = order.iter().map(|r| r.turn_count).collect();
    let nmsg: Vec<i64> = order.iter().map(|r| r.roles.len() as i64).collect();
    let nact: Vec<i64> = order.iter().map(|r| r.actions.len() as i64).collect();
    let (mut msg_ids, mut msg_offs, mut roles, mut contents) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut act_ids, mut act_offs, mut actions) = (Vec::new(), Vec::new(), Vec::new());
    for r in &order {
        for (i, (role, content)) in r.roles.iter().zip(&r.contents).enumerate() {
            msg_ids.push(r.id.as_str());
            msg_offs.push(i as i64);
            roles.push(role.as_str());
            contents.push(&**content);
        }
        for (i, action) in r.actions.iter().enumerate() {
            act_ids.push(r.id.as_str());
            act_offs.push(i as i64);
            actions.push(action.as_str());
        }
    }
    let c = ctx.client().await?;
    let st = c
        .prepare_cached(&format!(
            "WITH req AS ( \
               SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) \
                 AS r(id, token, turns, nmsg, nact) \
             ), ok AS ( \
               UPDATE kaos_sessions AS s SET turn_count = COALESCE(req.turns, s.turn_count), \
                 message_count = s.message_count + req.nmsg, action_count = s.action_count + req.nact, \
                 lease_token = NULL, lease_until = NULL, updated_ms = {NOW_MS}, committed = 1 \
               FROM req WHERE s.id = req.id AND s.lease_token = req.token \
               RETURNING s.id, req.token, s.incarnation, s.message_count - req.nmsg AS msg0, \
                 s.action_count - req.nact AS act0, COALESCE(req.turns, s.turn_count + 1) AS turn, \
                 s.turn_count \
             ), m AS ( \
               INSERT INTO kaos_messages (session_id, seq, turn_number, role, content) \
               SELECT ok.id, ok.msg0 + x.off, ok.turn, x.role, x.content \
               FROM unnest($6::text[], $7::bigint[], $8::text[], $9::text[]) AS x(id, off, role, content) \
               JOIN ok ON ok.id = x.id \
             ), a AS ( \
               INSERT INTO kaos_actions (session_id, seq, turn_number, action) \
               SELECT ok.id, ok.act0 + x.off, ok.turn, x.action \
               FROM unnest($10::text[], $11::bigint[], $12::text[]) AS x(id, off, action) \
               JOIN ok ON ok.id = x.id \
             ) \
             SELECT id, token, incarnation, msg0, act0, turn_count FROM ok"
        ))
        .await
        .map_err(|e| ctx.err(e))?;
    let params: [&(dyn ToSql + Sync); 12] = [
        &ids, &tokens, &turns, &nmsg, &nact, &msg_ids, &msg_offs, &roles, &contents, &act_ids,
        &act_offs, &actions,
    ];
    let mut out = HashMap::with_capacity(rows.len());
    for r in c.query(&st, &params).await.map_err(|e| ctx.err(e))? {
        let turn_count = r.get::<_, i64>(5) as u64;
        let committed = Committed {
            before: Header {
                incarnation: r.get(2),
                turn_count: 0,
                message_count: r.get::<_, i64>(3) as u64,
                action_count: r.get::<_, i64>(4) as u64,
            },
            turn_count,
            changes: TurnChanges::default(),
        };
        out.insert(r.get::<_, String>(0), (r.get::<_, String>(1), committed));
    }
    Ok(out)
}
