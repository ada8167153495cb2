//! [`InMemoryStore`]: the [`SessionStore`] contract in one process's memory (tests, the
//! `--ephemeral` CLI, `KaosRuntime::test_mode`). Nothing touches disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::Session;
use super::store::{
    PausedRun, RunStatus, SessionInfo, SessionLease, SessionStore, StoreError, TurnChanges, now_ms,
};

/// Sessions in memory; nothing touches disk.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    released: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<String, Entry>,
    next_lease: u64,
}

#[derive(Debug, Default)]
struct Entry {
    /// The committed session, without its runs (those are in `runs`).
    session: Arc<Session>,
    /// Every run the session paused, oldest first.
    runs: Vec<PausedRun>,
    /// The lease holder's token.
    lease: Option<String>,
    /// Whether a turn ever committed (a session exists from its first commit on).
    committed: bool,
}

impl Entry {
    fn view(&self) -> Session {
        let mut s = (*self.session).clone();
        for r in &self.runs {
            match r.status {
                RunStatus::Pending => {
                    s.pending_runs.insert(r.run_id.clone(), r.state.clone());
                }
                RunStatus::Claimed => s.runs_in_doubt.push(r.run_id.clone()),
                _ => {}
            }
        }
        s
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many sessions are stored.
    pub fn len(&self) -> usize {
        self.shared.lock().sessions.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn release_fn(&self) -> impl FnOnce(&str, &str) + Send + Sync + 'static {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        move |session: &str, token: &str| {
            if let Some(shared) = weak.upgrade() {
                let mut state = shared.lock();
                if let Some(e) = state.sessions.get_mut(session)
                    && e.lease.as_deref() == Some(token)
                {
                    e.lease = None;
                }
                drop(state);
                shared.released.notify_waiters();
            }
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for InMemoryStore {
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(self
            .shared
            .lock()
            .sessions
            .get(id)
            .filter(|e| e.committed)
            .map(Entry::view))
    }

    async fn begin(&self, id: &str, wait: Duration) -> Result<(SessionLease, Session), StoreError> {
        let started = Instant::now();
        loop {
            let released = self.shared.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut state = self.shared.lock();
                state.next_lease += 1;
                let token = state.next_lease.to_string();
                let entry = state
                    .sessions
                    .entry(id.to_string())
                    .or_insert_with(|| Entry {
                        session: Arc::new(Session::new(id)),
                        ..Entry::default()
                    });
                if entry.lease.is_none() {
                    entry.lease = Some(token.clone());
                    let session = entry.view();
                    drop(state);
                    return Ok((SessionLease::new(id, token, self.release_fn()), session));
                }
            }
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() || tokio::time::timeout(left, released).await.is_err() {
                return Err(StoreError::busy(id, wait));
            }
        }
    }

    async fn commit(
        &self,
        mut lease: SessionLease,
        changes: TurnChanges,
    ) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        let Some(entry) = state.sessions.get_mut(lease.session_id()) else {
            return Err(StoreError::lease_lost(lease.session_id()));
        };
        if entry.lease.as_deref() != Some(lease.token()) {
            return Err(StoreError::lease_lost(lease.session_id()));
        }
        for run_id in &changes.finished {
            match entry.runs.iter_mut().find(|r| &r.run_id == run_id) {
                Some(r) if matches!(r.status, RunStatus::Claimed | RunStatus::Pending) => {}
                Some(r) => return Err(StoreError::not_claimable(r)),
                None => return Err(StoreError::run_not_found(lease.session_id(), run_id)),
            }
        }
        let session = Arc::make_mut(&mut entry.session);
        if let Some(n) = changes.turn_count {
            session.turn_count = n;
        }
        session.messages.extend(changes.messages);
        session.actions.extend(changes.actions);
        for run_id in &changes.finished {
            if let Some(r) = entry.runs.iter_mut().find(|r| &r.run_id == run_id) {
                r.status = RunStatus::Done;
            }
        }
        for (run_id, turn_number, state) in changes.paused {
            entry.runs.push(PausedRun {
                run_id,
                session_id: lease.session_id().to_string(),
                turn_number,
                status: RunStatus::Pending,
                state,
                claimed_by: None,
                claimed_at_ms: None,
            });
        }
        entry.lease = None;
        entry.committed = true;
        lease.disarm();
        drop(state);
        self.shared.released.notify_waiters();
        Ok(())
    }

    async fn claim_run(
        &self,
        session_id: &str,
        run_id: &str,
        claimant: &str,
        force: bool,
    ) -> Result<PausedRun, StoreError> {
        let mut state = self.shared.lock();
        let run = state
            .sessions
            .get_mut(session_id)
            .and_then(|e| e.runs.iter_mut().find(|r| r.run_id == run_id))
            .ok_or_else(|| StoreError::run_not_found(session_id, run_id))?;
        match run.status {
            RunStatus::Pending => {}
            RunStatus::Claimed if force => {}
            _ => return Err(StoreError::not_claimable(run)),
        }
        run.status = RunStatus::Claimed;
        run.claimed_by = Some(claimant.to_string());
        run.claimed_at_ms = Some(now_ms());
        Ok(run.clone())
    }

    async fn settle_run(
        &self,
        session_id: &str,
        run_id: &str,
        status: RunStatus,
    ) -> Result<PausedRun, StoreError> {
        status.check_settles()?;
        let mut state = self.shared.lock();
        let run = state
            .sessions
            .get_mut(session_id)
            .and_then(|e| e.runs.iter_mut().find(|r| r.run_id == run_id))
            .ok_or_else(|| StoreError::run_not_found(session_id, run_id))?;
        if !matches!(run.status, RunStatus::Pending | RunStatus::Claimed) {
            return Err(StoreError::not_claimable(run));
        }
        run.status = status;
        Ok(run.clone())
    }

    async fn runs(&self, session_id: &str) -> Result<Vec<PausedRun>, StoreError> {
        Ok(self
            .shared
            .lock()
            .sessions
            .get(session_id)
            .map(|e| e.runs.clone())
            .unwrap_or_default())
    }

    async fn list(&self) -> Result<Vec<SessionInfo>, StoreError> {
        let state = self.shared.lock();
        let mut out: Vec<SessionInfo> = state
            .sessions
            .iter()
            .filter(|(_, e)| e.committed)
            .map(|(id, e)| SessionInfo {
                id: id.clone(),
                turn_count: e.session.turn_count,
                message_count: e.session.messages.len() as u64,
                pending_runs: e
                    .runs
                    .iter()
                    .filter(|r| r.status == RunStatus::Pending)
                    .count() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let removed = self
            .shared
            .lock()
            .sessions
            .remove(id)
            .is_some_and(|e| e.committed);
        self.shared.released.notify_waiters();
        Ok(removed)
    }
}
