//! [`TurnScope`]: the one place that mints a run's span ids and sequence numbers, tracks its
//! open spans, dispatches each event to the hooks and buffers it for the stream's consumer.
//!
//! Every span that starts ends exactly once: ending a span first ends its open descendants
//! (children first, as `cancelled`), and `cancel_open` ends whatever is left when a turn is
//! dropped, aborted or paused.
//!
//! Hooks are called **outside** the scope's lock: an emit records its events (sequence
//! numbers, the open-span stack) under the lock, releases it, then delivers them to the hooks
//! in sequence order, and only then buffers them for the stream's consumer. While one thread
//! delivers, another thread's emit on the same scope waits for it (so the hooks see one
//! scope's events in sequence order). A hook may call back into the scope: reads
//! ([`TurnScope::current_span`], [`TurnScope::halted`], …) see the bookkeeping already done,
//! and an event recorded from inside a hook is delivered right after the current one (its
//! hook action is `Continue`).
//!
//! Emitting is crate-private, so only the runner mints spans; the `test-support` feature
//! exposes it to tests through [`crate::testing::ScopeDriver`].

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
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
    /// Recorded, not yet delivered to the hooks.
    pending: VecDeque<Event>,
    /// Delivered, waiting for the stream's consumer.
    buffer: VecDeque<Event>,
    halted: Option<String>,
    /// The thread delivering this scope's events to the hooks right now.
    deliverer: Option<ThreadId>,
    /// Threads waiting in [`TurnScope::commit`] for that delivery to end. The end of a
    /// delivery wakes them only when there are some: `Condvar::notify_all` is a system call
    /// even with nobody waiting, and a turn ends many deliveries.
    waiting: usize,
}

struct ScopeInner {
    session_id: Arc<str>,
    run_id: Arc<str>,
    agent: Arc<str>,
    hooks: HookSet,
    root_parent: Option<Arc<str>>,
    forward_to: Option<TurnScope>,
    state: Mutex<ScopeState>,
    /// Signalled when a delivery ends (another thread may be waiting to deliver).
    delivered: Condvar,
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

pub(crate) fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl TurnScope {
    /// A root run.
    pub(crate) fn new(
        session_id: Arc<str>,
        run_id: Arc<str>,
        agent: Arc<str>,
        hooks: HookSet,
    ) -> Self {
        Self::build(session_id, run_id, agent, hooks, None, None)
    }

    /// A run nested in another (a sub-agent or handoff target): its spans' root parent is
    /// `parent_span_id`, its events go through `hooks` and then into `parent`'s stream.
    pub(crate) fn nested(
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
                delivered: Condvar::new(),
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

    /// `fut` with span `id`'s OpenTelemetry context current while it runs (each poll), when a
    /// hook has one ([`HookSet::otel_context`], feature `otel`): what the tool or model call
    /// does inside (its own spans, an instrumented HTTP client, `tracing` spans bridged by
    /// `tracing-opentelemetry`) nests under the span. Without such a hook, `fut` as it is.
    pub(crate) fn in_span<F: Future>(
        &self,
        id: &str,
        fut: F,
    ) -> impl Future<Output = F::Output> + use<F> {
        #[cfg(feature = "otel")]
        {
            use opentelemetry::context::FutureExt as _;
            match self.inner.hooks.otel_context(&self.inner.run_id, id) {
                Some(cx) => futures::future::Either::Left(fut.with_context(cx)),
                None => futures::future::Either::Right(fut),
            }
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = id;
            fut
        }
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
    pub(crate) fn emit(&self, kind: EventKind) -> HookAction {
        self.commit(|scope, state| scope.record(state, kind)).1
    }

    /// Records an event under the lock: its sequence number, then into `pending`.
    fn record(&self, state: &mut ScopeState, kind: EventKind) {
        let event = Event {
            timestamp: now_unix_nanos(),
            sequence: state.sequence,
            session_id: self.inner.session_id.clone(),
            run_id: self.inner.run_id.clone(),
            agent: self.inner.agent.clone(),
            kind,
        };
        state.sequence += 1;
        state.pending.push_back(event);
    }

    /// Runs `record` under the lock (span bookkeeping; it records events into `pending`),
    /// then delivers the pending events to the hooks with the lock released, in sequence
    /// order, then hands them to the stream. Returns `record`'s value and the hooks' combined
    /// action over the events `record` recorded.
    fn commit<R>(&self, record: impl FnOnce(&Self, &mut ScopeState) -> R) -> (R, HookAction) {
        let hooks = &self.inner.hooks;
        let mut state = self.state();
        if hooks.is_empty() {
            let value = record(self, &mut state);
            while let Some(event) = state.pending.pop_front() {
                self.to_stream(&mut state, event);
            }
            return (value, HookAction::Continue);
        }
        let me = std::thread::current().id();
        // Another thread is delivering: wait for it, so hooks see events in sequence order.
        while state.deliverer.is_some_and(|t| t != me) {
            state.waiting += 1;
            state = self
                .inner
                .delivered
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.waiting -= 1;
        }
        let first = state.sequence;
        let value = record(self, &mut state);
        let end = state.sequence;
        if state.deliverer == Some(me) {
            // A hook re-entered the scope: the delivery running below us on this thread
            // delivers these right after the current event.
            return (value, HookAction::Continue);
        }
        state.deliverer = Some(me);
        // Frees the scope for the next deliverer if a hook call unwinds past us.
        let delivering = Delivering(self);
        let mut action = HookAction::Continue;
        while let Some(event) = state.pending.pop_front() {
            let check_halt = state.halted.is_none();
            drop(state);
            let a = hooks.dispatch(&event);
            if (first..end).contains(&event.sequence) {
                action = action.max(a);
            }
            let halt = if check_halt {
                hooks.halt_reason()
            } else {
                None
            };
            state = self.state();
            if state.halted.is_none() {
                state.halted = halt;
            }
            self.to_stream(&mut state, event);
        }
        // The delivery ends under the lock already held (no second locking for the guard).
        std::mem::forget(delivering);
        state.deliverer = None;
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.inner.delivered.notify_all();
        }
        (value, action)
    }

    /// Hands a delivered event to the stream: into the root run's buffer.
    fn to_stream(&self, state: &mut ScopeState, event: Event) {
        match &self.inner.forward_to {
            Some(parent) => parent.push_forwarded(event),
            None => state.buffer.push_back(event),
        }
    }

    fn push_forwarded(&self, event: Event) {
        match &self.inner.forward_to {
            Some(parent) => parent.push_forwarded(event),
            None => self.state().buffer.push_back(event),
        }
    }

    /// Starts a span under the innermost open one; returns its id and the hooks' action
    /// (meaningful for `tool_call`).
    pub(crate) fn start_span(
        &self,
        subject: SpanSubject,
        name: impl Into<String>,
        attributes: Map<String, Value>,
    ) -> (Arc<str>, HookAction) {
        let name = name.into();
        self.commit(|scope, state| scope.record_start(state, subject, name, attributes))
    }

    fn record_start(
        &self,
        state: &mut ScopeState,
        subject: SpanSubject,
        name: String,
        attributes: Map<String, Value>,
    ) -> Arc<str> {
        let parent = state
            .open
            .last()
            .map(|s| s.id.clone())
            .or_else(|| self.inner.root_parent.clone());
        let id = new_span_id();
        state.open.push(OpenSpan {
            id: id.clone(),
            parent: parent.clone(),
            subject,
            name: name.clone(),
            started: Instant::now(),
        });
        self.record(
            state,
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
        id
    }

    /// Ends the span `id` with `phase`; open descendants are first ended as `cancelled`.
    /// Returns the measured duration, or `None` if the span was not open.
    pub(crate) fn end_span(
        &self,
        id: &str,
        phase: SpanPhase,
        attributes: Map<String, Value>,
        error: Option<SpanError>,
    ) -> Option<f64> {
        self.commit(|scope, state| scope.record_end(state, id, phase, attributes, error))
            .0
    }

    fn record_end(
        &self,
        state: &mut ScopeState,
        id: &str,
        phase: SpanPhase,
        attributes: Map<String, Value>,
        error: Option<SpanError>,
    ) -> Option<f64> {
        let pos = state.open.iter().rposition(|s| &*s.id == id)?;
        while state.open.len() > pos + 1 {
            self.close_top(
                state,
                SpanPhase::Cancelled,
                Map::new(),
                Some(SpanError {
                    error_type: "parent_ended".into(),
                    message: "the enclosing span ended first".into(),
                }),
            );
        }
        self.close_top(state, phase, attributes, error)
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
        self.record(
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
    pub(crate) fn cancel_open(&self, reason: &str) -> usize {
        self.commit(|scope, state| scope.record_cancel_open(state, reason))
            .0
    }

    fn record_cancel_open(&self, state: &mut ScopeState, reason: &str) -> usize {
        let mut n = 0;
        while !state.open.is_empty() {
            let mut attributes = Map::new();
            attributes.insert("cancel_reason".into(), Value::String(reason.to_string()));
            self.close_top(
                state,
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
    pub(crate) fn pop(&self) -> Option<Event> {
        self.state().buffer.pop_front()
    }
}

/// Ends a delivery: frees the scope for the next deliverer (also if a hook call unwound).
struct Delivering<'a>(&'a TurnScope);

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.deliverer = None;
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.0.inner.delivered.notify_all();
        }
    }
}

/// Builds an attribute map from key/value pairs (exported only with `test-support`).
#[cfg_attr(feature = "test-support", macro_export)]
macro_rules! attrs {
    () => { ::serde_json::Map::new() };
    ($($key:expr => $value:expr),+ $(,)?) => {{
        let mut map = ::serde_json::Map::new();
        $( map.insert(($key).to_string(), ::serde_json::Value::from($value)); )+
        map
    }};
}
#[cfg(not(feature = "test-support"))]
pub(crate) use attrs;

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
