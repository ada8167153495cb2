//! Sessions (a conversation's persisted state) and the [`SessionStore`] contract that keeps
//! them: [`store`] says what is atomic, [`memory`] is the in-memory implementation; SQLite
//! and PostgreSQL live in the `kaos-store` crate.

pub mod memory;
pub mod store;

pub use memory::InMemoryStore;
pub use store::{
    PausedRun, RunStatus, SessionInfo, SessionLease, SessionStore, StoreError, StoreErrorKind,
    TurnChanges,
};

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One remembered message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMessage {
    /// `user` or `assistant`.
    pub role: SessionRole,
    /// The text.
    pub content: Arc<str>,
}

/// A session message's role (`user`, `assistant`, ...), compared and shown as a string.
///
/// Sessions are cloned on every load and save, so cloning a role must not allocate: the
/// standard roles are `&'static str`, any other is a shared `Arc<str>`. It serializes as a
/// plain JSON string, like the `String` it replaces.
#[derive(Clone)]
pub struct SessionRole(RoleRepr);

#[derive(Clone)]
enum RoleRepr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl SessionRole {
    /// The role named `role`.
    pub fn new(role: &str) -> Self {
        match role {
            "user" => Self(RoleRepr::Static("user")),
            "assistant" => Self(RoleRepr::Static("assistant")),
            "system" => Self(RoleRepr::Static("system")),
            "tool" => Self(RoleRepr::Static("tool")),
            other => Self(RoleRepr::Shared(Arc::from(other))),
        }
    }

    /// The role as a string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            RoleRepr::Static(s) => s,
            RoleRepr::Shared(s) => s,
        }
    }
}

impl std::ops::Deref for SessionRole {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SessionRole {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for SessionRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for SessionRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for SessionRole {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SessionRole {}

impl std::hash::Hash for SessionRole {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for SessionRole {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SessionRole {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for SessionRole {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl From<&str> for SessionRole {
    fn from(role: &str) -> Self {
        Self::new(role)
    }
}

impl From<String> for SessionRole {
    fn from(role: String) -> Self {
        Self::new(&role)
    }
}

impl Serialize for SessionRole {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SessionRole {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let role = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::new(&role))
    }
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
    /// The conversation. A persistent vector: cloning a session (store load/save) is O(1)
    /// however long the conversation grows.
    pub messages: imbl::Vector<SessionMessage>,
    /// Tool calls made (persistent, like `messages`).
    pub actions: imbl::Vector<ToolAction>,
    /// Paused runs waiting for approval, by run id (JSON run states).
    pub pending_runs: HashMap<String, Value>,
    /// Runs claimed by a resume that never finished (in doubt), by run id.
    pub runs_in_doubt: Vec<String>,
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
        self.messages.push_back(SessionMessage {
            role: SessionRole::new(role),
            content: Arc::from(content),
        });
    }

    /// The most recent messages that fit in `budget_chars`, rendered as `role: content`
    /// lines (oldest first).
    pub fn render_history(&self, budget_chars: usize) -> String {
        let mut out = String::new();
        self.write_history(&mut out, budget_chars);
        out
    }

    /// Appends [`render_history`](Session::render_history)'s text to `out` (no copy).
    pub fn write_history(&self, out: &mut String, budget_chars: usize) {
        let recent = self.recent_messages(budget_chars, |m| m.role.len() + 2 + m.content.len() + 1);
        out.reserve(
            recent
                .iter()
                .map(|m| m.role.len() + 3 + m.content.len())
                .sum(),
        );
        for (i, m) in recent.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&m.role);
            out.push_str(": ");
            out.push_str(&m.content);
        }
    }

    /// The most recent messages whose summed `cost` fits in `budget` (at least the last
    /// one), oldest first. Visits only those messages, however long the session is.
    pub fn recent_messages(
        &self,
        budget: usize,
        cost: impl Fn(&SessionMessage) -> usize,
    ) -> Vec<&SessionMessage> {
        let mut used = 0;
        let mut picked = Vec::new();
        for m in self.messages.iter().rev() {
            let c = cost(m);
            if used + c > budget && !picked.is_empty() {
                break;
            }
            used += c;
            picked.push(m);
        }
        picked.reverse();
        picked
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

    #[test]
    fn roles_compare_as_strings_and_serialize_as_plain_strings() {
        let mut s = Session::new("s");
        s.push_message("user", "hi");
        s.push_message("narrator", "once upon a time");
        assert!(s.messages[0].role == "user");
        assert_eq!(
            s.messages[1].role,
            SessionRole::from("narrator".to_string())
        );
        assert_eq!(&*s.messages[1].role, "narrator");
        let json = serde_json::to_string(&s.messages).unwrap();
        assert_eq!(
            json,
            r#"[{"role":"user","content":"hi"},{"role":"narrator","content":"once upon a time"}]"#
        );
        let back: imbl::Vector<SessionMessage> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s.messages);
        let escaped: SessionMessage =
            serde_json::from_str(r#"{"role":"us\u0065r","content":"x"}"#).unwrap();
        assert_eq!(escaped.role, "user");
    }
}
