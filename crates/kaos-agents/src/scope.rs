//! [`TurnScope`]: the one place that mints a run's span ids and sequence numbers, tracks its
//! open spans, dispatches each event to the hooks and buffers it for the stream's consumer.
//!
//! Every span that starts ends exactly once: ending a span first ends its open descendants
//! (children first, as `cancelled`), and [`TurnScope::cancel_open`] ends whatever is left when
//! a turn is dropped, aborted or paused.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::events::{Event, EventKind, SpanError, SpanEvent, SpanPhase, SpanSubject};
use crate::hooks::{HookAction, HookSet};

struct OpenSpan {
    id: Arc<str>,
    parent: Option<Arc<str>>,
    subject: SpanSubject,
    name: String,
    started: Instant,
}

#[derive(Default)]
struct ScopeState {
    sequence: u64,
    open: Vec<OpenSpan>,
    buffer: VecDeque<Event>,
    halted: Option<String>,
}

struct ScopeInner {
    session_id: Arc<str>,
    run_id: Arc<str>,
    agent: Arc<str>,
    hooks: HookSet,
    root_parent: Option<Arc<str>>,
    forward_to: Option<TurnScope>,
    state: Mutex<ScopeState>,
}

/// A live run's emitter. Cheap to clone; clones share the run.
#[derive(Clone)]
pub struct TurnScope {
    inner: Arc<ScopeInner>,
}

impl std::fmt::Debug for TurnScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnScope")
            .field("session_id", &self.inner.session_id)
            .field("run_id", &self.inner.run_id)
            .field("agent", &self.inner.agent)
            .finish_non_exhaustive()
    }
}

/// A fresh 16-hex-character id (64 random bits, the size of an OpenTelemetry span id).
pub fn new_span_id() -> Arc<str> {
    let mut n: u64 = rand::random();
    if n == 0 {
        n = 1;
    }
    let mut buf = [0u8; 16];
    write_hex(&mut buf, u128::from(n));
    arc_from_ascii(&buf)
}

/// A fresh run id: `run_` and 32 hex characters (128 random bits, usable as a trace id).
pub fn new_run_id() -> Arc<str> {
    let mut buf = *b"run_00000000000000000000000000000000";
    write_hex(&mut buf[4..], uuid::Uuid::new_v4().as_u128());
    arc_from_ascii(&buf)
}

/// Writes the low `4 * out.len()` bits of `n` as lowercase hex, most significant first
/// (the same text as `format!("{n:0width$x}")`, without the formatting machinery and the
/// intermediate `String`: ids are minted several times per turn).
fn write_hex(out: &mut [u8], mut n: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

fn arc_from_ascii(bytes: &[u8]) -> Arc<str> {
    // Only ASCII hex digits and `run_` are ever written, so this never falls back.
    Arc::from(std::str::from_utf8(bytes).unwrap_or_default())
}

fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl TurnScope {
    /// A root run.
    pub fn new(session_id: Arc<str>, run_id: Arc<str>, agent: Arc<str>, hooks: HookSet) -> Self {
        Self::build(session_id, run_id, agent, hooks, None, None)
    }

    /// A run nested in another (a sub-agent or handoff target): its spans' root parent is
    /// `parent_span_id`, its events go through `hooks` and then into `parent`'s stream.
    pub fn nested(
        parent: &TurnScope,
        parent_span_id: Arc<str>,
        session_id: Arc<str>,
        agent: Arc<str>,
    ) -> Self {
        Self::build(
            session_id,
            new_run_id(),
            agent,
            parent.inner.hooks.clone(),
            Some(parent_span_id),
            Some(parent.clone()),
        )
    }

    fn build(
        session_id: Arc<str>,
        run_id: Arc<str>,
        agent: Arc<str>,
        hooks: HookSet,
        root_parent: Option<Arc<str>>,
        forward_to: Option<TurnScope>,
    ) -> Self {
        Self {
            inner: Arc::new(ScopeInner {
                session_id,
                run_id,
                agent,
                hooks,
                root_parent,
                forward_to,
                state: Mutex::new(ScopeState::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, ScopeState> {
        // A poisoned lock only means a panic elsewhere while holding it; the state is still
        // consistent enough to keep ending spans.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session.
    pub fn session_id(&self) -> &Arc<str> {
        &self.inner.session_id
    }

    /// The run.
    pub fn run_id(&self) -> &Arc<str> {
        &self.inner.run_id
    }

    /// The agent's name.
    pub fn agent(&self) -> &Arc<str> {
        &self.inner.agent
    }

    /// The hooks events go through.
    pub fn hooks(&self) -> &HookSet {
        &self.inner.hooks
    }

    /// The innermost open span (the parent of the next START).
    pub fn current_span(&self) -> Option<Arc<str>> {
        let state = self.state();
        state
            .open
            .last()
            .map(|s| s.id.clone())
            .or_else(|| self.inner.root_parent.clone())
    }

    /// Why a hook asked the run to stop, if one did.
    pub fn halted(&self) -> Option<String> {
        self.state().halted.clone()
    }

    /// Emits a value event (or a hand-built span) and returns the hooks' combined action.
    pub fn emit(&self, kind: EventKind) -> HookAction {
        let mut state = self.state();
        self.emit_locked(&mut state, kind)
    }

    fn emit_locked(&self, state: &mut ScopeState, kind: EventKind) -> HookAction {
        let event = Event {
            timestamp: now_unix_nanos(),
            sequence: state.sequence,
            session_id: self.inner.session_id.clone(),
            run_id: self.inner.run_id.clone(),
            agent: self.inner.agent.clone(),
            kind,
        };
        state.sequence += 1;
        let hooks = &self.inner.hooks;
        let action = if hooks.is_empty() {
            HookAction::Continue
        } else {
            let action = hooks.dispatch(&event);
            if state.halted.is_none() {
                state.halted = hooks.halt_reason();
            }
            action
        };
        match &self.inner.forward_to {
            Some(parent) => parent.push_forwarded(event),
            None => state.buffer.push_back(event),
        }
        action
    }

    fn push_forwarded(&self, event: Event) {
        match &self.inner.forward_to {
            Some(parent) => parent.push_forwarded(event),
            None => self.state().buffer.push_back(event),
        }
    }

    /// Starts a span under the innermost open one; returns its id and the hooks' action
    /// (meaningful for `tool_call`).
    pub fn start_span(
        &self,
        subject: SpanSubject,
        name: impl Into<String>,
        attributes: Map<String, Value>,
    ) -> (Arc<str>, HookAction) {
        let mut state = self.state();
        let parent = state
            .open
            .last()
            .map(|s| s.id.clone())
            .or_else(|| self.inner.root_parent.clone());
        let id = new_span_id();
        let name = name.into();
        state.open.push(OpenSpan {
            id: id.clone(),
            parent: parent.clone(),
            subject,
            name: name.clone(),
            started: Instant::now(),
        });
        let action = self.emit_locked(
            &mut state,
            EventKind::Span(SpanEvent {
                subject,
                phase: SpanPhase::Start,
                span_id: id.clone(),
                parent_span_id: parent,
                name,
                duration_ms: None,
                attributes,
                error: None,
            }),
        );
        (id, action)
    }

    /// Ends the span `id` with `phase`; open descendants are first ended as `cancelled`.
    /// Returns the measured duration, or `None` if the span was not open.
    pub fn end_span(
        &self,
        id: &str,
        phase: SpanPhase,
        attributes: Map<String, Value>,
        error: Option<SpanError>,
    ) -> Option<f64> {
        let mut state = self.state();
        let pos = state.open.iter().rposition(|s| &*s.id == id)?;
        while state.open.len() > pos + 1 {
            self.close_top(
                &mut state,
                SpanPhase::Cancelled,
                Map::new(),
                Some(SpanError {
                    error_type: "parent_ended".into(),
                    message: "the enclosing span ended first".into(),
                }),
            );
        }
        self.close_top(&mut state, phase, attributes, error)
    }

    fn close_top(
        &self,
        state: &mut ScopeState,
        phase: SpanPhase,
        attributes: Map<String, Value>,
        error: Option<SpanError>,
    ) -> Option<f64> {
        let span = state.open.pop()?;
        let duration_ms = span.started.elapsed().as_secs_f64() * 1000.0;
        self.emit_locked(
            state,
            EventKind::Span(SpanEvent {
                subject: span.subject,
                phase: if phase.is_terminal() {
                    phase
                } else {
                    SpanPhase::Complete
                },
                span_id: span.id,
                parent_span_id: span.parent,
                name: span.name,
                duration_ms: Some(duration_ms),
                attributes,
                error,
            }),
        );
        Some(duration_ms)
    }

    /// Ends every open span, innermost first, as `cancelled` with `reason`. Returns how many.
    pub fn cancel_open(&self, reason: &str) -> usize {
        let mut state = self.state();
        let mut n = 0;
        while !state.open.is_empty() {
            let mut attributes = Map::new();
            attributes.insert("cancel_reason".into(), Value::String(reason.to_string()));
            self.close_top(
                &mut state,
                SpanPhase::Cancelled,
                attributes,
                Some(SpanError {
                    error_type: "cancelled".into(),
                    message: reason.to_string(),
                }),
            );
            n += 1;
        }
        n
    }

    /// How many spans are open.
    pub fn open_span_count(&self) -> usize {
        self.state().open.len()
    }

    /// Takes the next buffered event for the consumer.
    pub fn pop(&self) -> Option<Event> {
        self.state().buffer.pop_front()
    }
}

/// Builds an attribute map from key/value pairs.
#[macro_export]
macro_rules! attrs {
    () => { ::serde_json::Map::new() };
    ($($key:expr => $value:expr),+ $(,)?) => {{
        let mut map = ::serde_json::Map::new();
        $( map.insert(($key).to_string(), ::serde_json::Value::from($value)); )+
        map
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape() {
        let span = new_span_id();
        assert_eq!(span.len(), 16);
        assert!(
            span.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(&*span, "0000000000000000");
        let run = new_run_id();
        assert_eq!(run.len(), 36);
        assert!(run.starts_with("run_"));
        assert!(
            run[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn hex_matches_format() {
        for n in [
            0u128,
            1,
            0xdead_beef,
            u128::from(u64::MAX),
            u128::MAX,
            0x0123_4567_89ab_cdef,
        ] {
            let mut short = [0u8; 16];
            write_hex(&mut short, n & u128::from(u64::MAX));
            assert_eq!(
                std::str::from_utf8(&short).unwrap(),
                format!("{:016x}", n & u128::from(u64::MAX))
            );
            let mut long = [0u8; 32];
            write_hex(&mut long, n);
            assert_eq!(std::str::from_utf8(&long).unwrap(), format!("{n:032x}"));
        }
        let id = uuid::Uuid::new_v4();
        let mut buf = [0u8; 32];
        write_hex(&mut buf, id.as_u128());
        assert_eq!(std::str::from_utf8(&buf).unwrap(), id.simple().to_string());
    }
}
