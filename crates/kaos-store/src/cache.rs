//! What a process already read of each session, so loading a session reads only the
//! messages and actions appended since (they are append-only; a deleted and recreated
//! session has a new incarnation and is read whole).

use std::collections::HashMap;
use std::sync::Mutex;

use kaos_agents::Session;

/// Sessions cached beyond this many are dropped (all at once; they reload lazily).
const MAX_CACHED: usize = 4096;

/// The session header a store reads before its rows.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub incarnation: String,
    pub turn_count: u64,
    pub message_count: u64,
    pub action_count: u64,
}

/// Per-process cache of sessions' committed messages and actions.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    map: Mutex<HashMap<String, (String, Session)>>,
}

#[allow(dead_code)]
impl Cache {
    /// The cached part of session `id` valid for `header`: a session holding a prefix of
    /// the committed messages and actions (possibly empty), without runs.
    pub fn base(&self, id: &str, header: &Header) -> Session {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some((inc, s))
                if *inc == header.incarnation
                    && s.messages.len() as u64 <= header.message_count
                    && s.actions.len() as u64 <= header.action_count =>
            {
                let mut s = s.clone();
                s.pending_runs.clear();
                s.runs_in_doubt.clear();
                s
            }
            _ => Session::new(id),
        }
    }

    /// Remembers `session` (as committed) for `incarnation`.
    pub fn put(&self, incarnation: &str, session: &Session) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHED && !map.contains_key(&session.id) {
            map.clear();
        }
        let mut s = session.clone();
        s.pending_runs.clear();
        s.runs_in_doubt.clear();
        map.insert(session.id.clone(), (incarnation.to_string(), s));
    }

    /// Forgets every session.
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forgets session `id`.
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}
