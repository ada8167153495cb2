//! Group commit for the SQLite store. SQLite lets one transaction write at a time, and in
//! WAL mode with `synchronous = FULL` every transaction ends in an fsync; a turn took two
//! (its lease, its commit). Here one writer thread takes every write queued (leases and
//! commits of many sessions), runs them in **one** transaction, each inside its own
//! savepoint, and answers them only after that transaction committed (one fsync for all).
//!
//! * Each request is atomic on its own: a request that fails rolls back to its savepoint, and
//!   only it gets the error; the others commit.
//! * Nothing is acknowledged before it is durable: a batch whose `COMMIT` fails answers every
//!   request with that error, and the process's session cache is dropped (a lease's read may
//!   have cached rows that never committed).
//! * Other processes still serialize through SQLite's write lock and busy timeout.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use kaos_agents::StoreError;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::cache::Cache;

/// The most requests one transaction carries.
const MAX_BATCH: usize = 512;

/// One queued write: run inside the batch's transaction, answered after its commit.
trait Work: Send {
    /// Runs the request; `false` when it failed (its savepoint is rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: its own result if the batch committed, else `failed`.
    fn finish(self: Box<Self>, failed: Option<StoreError>);
}

struct Typed<T, F> {
    f: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Work for Typed<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        if self.reply.is_closed() {
            // Its caller went away (a cancelled turn): nothing is written for it.
            return false;
        }
        let result = f(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, failed: Option<StoreError>) {
        let result = match (failed, self.result) {
            // A request that failed by itself keeps its own error.
            (_, Some(Err(e))) => Err(e),
            (Some(e), _) => Err(e),
            (None, Some(r)) => r,
            (None, None) => Err(StoreError::backend("a batched write never ran")),
        };
        let _ = self.reply.send(result);
    }
}

/// The queue to the writer thread; the thread ends when this is dropped.
pub(super) struct Writer {
    queue: Mutex<mpsc::Sender<Box<dyn Work>>>,
}

impl Writer {
    /// Starts the writer thread on `conn` (shared with the store's other, unbatched calls,
    /// which lock it between batches); errors name the database file `path`.
    pub fn start(
        conn: Arc<Mutex<Connection>>,
        cache: Arc<Cache>,
        path: String,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Box<dyn Work>>();
        std::thread::Builder::new()
            .name("kaos-sqlite-writer".into())
            .spawn(move || writer(rx, &conn, &cache, &path))
            .map_err(|e| StoreError::backend(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self {
            queue: Mutex::new(tx),
        })
    }

    /// Runs `f` in the next batch's transaction; its result once that batch committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let work: Box<dyn Work> = Box::new(Typed {
            f: Some(f),
            result: None,
            reply,
        });
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(work)
            .map_err(|_| StoreError::backend("the SQLite writer thread stopped"))?;
        rx.await
            .map_err(|_| StoreError::backend("the SQLite writer thread stopped mid-write"))?
    }
}

fn writer(rx: mpsc::Receiver<Box<dyn Work>>, conn: &Mutex<Connection>, cache: &Cache, path: &str) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        let failed = run_batch(&conn, &mut batch)
            .err()
            .map(|e| StoreError::backend(format!("{path}: {e}")));
        if failed.is_some() {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            cache.clear();
        }
        drop(conn);
        for w in batch {
            w.finish(failed.clone());
        }
    }
}

/// Runs `batch` in one `BEGIN IMMEDIATE … COMMIT`, each request in a savepoint.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn Work>]) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for w in batch.iter_mut() {
        conn.execute_batch("SAVEPOINT kaos_request")?;
        if w.run(conn) {
            conn.execute_batch("RELEASE kaos_request")?;
        } else {
            conn.execute_batch("ROLLBACK TO kaos_request; RELEASE kaos_request")?;
        }
    }
    conn.execute_batch("COMMIT")
}
