//! Sessions (a conversation's persisted state) and the stores that keep them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One remembered message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: Arc<str>,
}

/// One remembered tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolAction {
    /// The tool.
    pub tool_name: String,
    /// The call id.
    pub call_id: String,
    /// The arguments.
    pub arguments: Value,
    /// The result, truncated.
    pub result_summary: String,
    /// Whether it failed.
    pub is_error: bool,
}

/// A conversation's persisted state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Session {
    /// The session id.
    pub id: String,
    /// Completed turns.
    pub turn_count: u64,
    /// The conversation.
    pub messages: Vec<SessionMessage>,
    /// Tool calls made.
    pub actions: Vec<ToolAction>,
    /// Paused runs waiting for approval, by run id (JSON run states).
    pub pending_runs: HashMap<String, Value>,
}

impl Session {
    /// An empty session.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..Self::default()
        }
    }

    /// Appends a message.
    pub fn push_message(&mut self, role: &str, content: &str) {
        self.messages.push(SessionMessage {
            role: role.to_string(),
            content: Arc::from(content),
        });
    }

    /// The most recent messages that fit in `budget_chars`, rendered as `role: content`
    /// lines (oldest first).
    pub fn render_history(&self, budget_chars: usize) -> String {
        let mut used = 0;
        let mut start = self.messages.len();
        for (i, m) in self.messages.iter().enumerate().rev() {
            let cost = m.role.len() + 2 + m.content.len() + 1;
            if used + cost > budget_chars && start < self.messages.len() {
                break;
            }
            used += cost;
            start = i;
        }
        let mut out = String::with_capacity(used + 16);
        for m in &self.messages[start..] {
            out.push_str(&m.role);
            out.push_str(": ");
            out.push_str(&m.content);
            out.push('\n');
        }
        if out.ends_with('\n') {
            out.pop();
        }
        out
    }
}

/// A session store failed.
#[derive(Debug, thiserror::Error)]
#[error("session store: {message}")]
pub struct StoreError {
    /// What failed, with the path where there is one.
    pub message: String,
}

/// Where sessions live.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    /// The session, if it exists.
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// Saves the session whole (atomically: a reader sees the old or the new one).
    async fn save(&self, session: &Session) -> Result<(), StoreError>;
}

/// Sessions in memory; nothing touches disk.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many sessions are stored.
    pub fn len(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl SessionStore for InMemoryStore {
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let sessions = self.sessions.lock().map_err(|_| StoreError {
            message: "in-memory store lock poisoned".into(),
        })?;
        Ok(sessions.get(id).map(|s| (**s).clone()))
    }

    async fn save(&self, session: &Session) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().map_err(|_| StoreError {
            message: "in-memory store lock poisoned".into(),
        })?;
        sessions.insert(session.id.clone(), Arc::new(session.clone()));
        Ok(())
    }
}

/// Sessions as JSON files in a directory, one per session, written atomically (temporary
/// file + rename).
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file of one session.
    pub fn path_of(&self, id: &str) -> PathBuf {
        let safe: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // Different ids can map to the same safe name; a short hash keeps them apart.
        let hash = id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        self.dir.join(format!("{safe}-{:08x}.json", hash as u32))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait::async_trait]
impl SessionStore for DirStore {
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let path = self.path_of(id);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError {
                    message: format!("{}: corrupt session file: {e}", path.display()),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError {
                message: format!("{}: {e}", path.display()),
            }),
        }
    }

    async fn save(&self, session: &Session) -> Result<(), StoreError> {
        let path = self.path_of(&session.id);
        let bytes = serde_json::to_vec(session).map_err(|e| StoreError {
            message: format!("cannot serialize session {}: {e}", session.id),
        })?;
        let dir = self.dir.clone();
        let tmp = path.with_extension(format!("json.tmp-{}", uuid::Uuid::new_v4().simple()));
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_data()?;
            }
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(|e| StoreError {
            message: format!("session write task failed: {e}"),
        })?
        .map_err(|e| StoreError {
            message: format!("{}: {e}", self.dir.display()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_most_recent_messages_within_budget() {
        let mut s = Session::new("s");
        for i in 0..100 {
            s.push_message("user", &format!("message {i}"));
        }
        let h = s.render_history(60);
        assert!(h.ends_with("user: message 99"), "{h}");
        assert!(!h.contains("message 1\n"));
        assert!(h.len() <= 60);
    }

    #[tokio::test]
    async fn dir_store_round_trips_and_missing_is_none() {
        let dir =
            std::env::temp_dir().join(format!("kaos-store-{}", uuid::Uuid::new_v4().simple()));
        let store = DirStore::new(&dir);
        assert!(store.load("a/b").await.unwrap().is_none());
        let mut s = Session::new("a/b");
        s.push_message("user", "hi");
        store.save(&s).await.unwrap();
        assert_eq!(store.load("a/b").await.unwrap().unwrap(), s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
