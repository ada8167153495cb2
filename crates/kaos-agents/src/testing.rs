//! Test support (feature `test-support`): drive a [`TurnScope`] by hand, as the runner
//! would, to test hooks, exporters and readers without a model. Not for production code:
//! spans and events minted this way are indistinguishable from a real turn's.
//!
//! ```
//! use kaos_agents::testing::ScopeDriver;
//! use kaos_agents::{HookSet, SpanPhase, SpanSubject, TurnScope, attrs};
//!
//! let scope = TurnScope::new("s1".into(), "run_1".into(), "assistant".into(), HookSet::default());
//! let (turn, _) = scope.start_span(SpanSubject::Turn, "turn.1", attrs! {"turn_number" => 1});
//! scope.end_span(&turn, SpanPhase::Complete, attrs! {}, None);
//! assert_eq!(std::iter::from_fn(|| scope.pop()).count(), 2);
//! ```

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::events::{Event, EventKind, SpanError, SpanPhase, SpanSubject};
use crate::hooks::{HookAction, HookSet};
use crate::scope::TurnScope;

/// The emitting side of a [`TurnScope`], which the runner keeps to itself.
pub trait ScopeDriver: Sized {
    /// A root run.
    fn new(session_id: Arc<str>, run_id: Arc<str>, agent: Arc<str>, hooks: HookSet) -> Self;

    /// A run nested in `parent` under `parent_span_id` (its events go into `parent`'s stream).
    fn nested(
        parent: &TurnScope,
        parent_span_id: Arc<str>,
        session_id: Arc<str>,
        agent: Arc<str>,
    ) -> Self;

    /// Emits a value event; returns the hooks' combined action.
    fn emit(&self, kind: EventKind) -> HookAction;

    /// Starts a span under the innermost open one.
    fn start_span(
        &self,
        subject: SpanSubject,
        name: impl Into<String>,
        attributes: Map<String, Value>,
    ) -> (Arc<str>, HookAction);

    /// Ends span `id` (open descendants first, as `cancelled`); its duration.
    fn end_span(
        &self,
        id: &str,
        phase: SpanPhase,
        attributes: Map<String, Value>,
        error: Option<SpanError>,
    ) -> Option<f64>;

    /// Ends every open span as `cancelled`; how many.
    fn cancel_open(&self, reason: &str) -> usize;

    /// The next event for the stream's consumer.
    fn pop(&self) -> Option<Event>;
}

impl ScopeDriver for TurnScope {
    fn new(session_id: Arc<str>, run_id: Arc<str>, agent: Arc<str>, hooks: HookSet) -> Self {
        TurnScope::new(session_id, run_id, agent, hooks)
    }

    fn nested(
        parent: &TurnScope,
        parent_span_id: Arc<str>,
        session_id: Arc<str>,
        agent: Arc<str>,
    ) -> Self {
        TurnScope::nested(parent, parent_span_id, session_id, agent)
    }

    fn emit(&self, kind: EventKind) -> HookAction {
        TurnScope::emit(self, kind)
    }

    fn start_span(
        &self,
        subject: SpanSubject,
        name: impl Into<String>,
        attributes: Map<String, Value>,
    ) -> (Arc<str>, HookAction) {
        TurnScope::start_span(self, subject, name, attributes)
    }

    fn end_span(
        &self,
        id: &str,
        phase: SpanPhase,
        attributes: Map<String, Value>,
        error: Option<SpanError>,
    ) -> Option<f64> {
        TurnScope::end_span(self, id, phase, attributes, error)
    }

    fn cancel_open(&self, reason: &str) -> usize {
        TurnScope::cancel_open(self, reason)
    }

    fn pop(&self) -> Option<Event> {
        TurnScope::pop(self)
    }
}
