//! Hooks observe a turn's event stream.
//!
//! A [`Hook`] sees every event of every run, synchronously, in registration order and in
//! each run's sequence order, before the event is yielded to the stream's consumer. Hooks
//! are called with no lock of the run held, so a hook may call back into the run's
//! [`crate::TurnScope`] (or anything else) without deadlocking. All methods have defaults: override
//! [`Hook::on_event`] to see everything, or the typed conveniences for what you need. On a
//! `tool_call` START a hook may answer [`HookAction::Skip`] or
//! [`HookAction::RequireApproval`]; the runner applies the most restrictive answer of all
//! hooks **before** the tool runs.
//!
//! A hook that panics is caught, counted ([`HookSet::panic_count`]) and skipped for that
//! event; the turn and the other hooks go on. The same holds for `flush` and `shutdown`
//! ([`HookSet::flush`], [`HookSet::shutdown`]): a panic there is an error in the result.

mod builtin;
mod circuit;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use builtin::{CostTotals, CostTrackingHook, LoggingHook, RecordingHook};
pub use circuit::{CircuitBreaker, CircuitState, Clock, ManualClock, SystemClock};

use crate::events::{Event, EventKind, SpanEvent, SpanPhase, SpanSubject};

/// A hook's answer to a `tool_call` START. Precedence: `RequireApproval` > `Skip` > `Continue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum HookAction {
    /// Run the tool.
    #[default]
    Continue,
    /// Do not run the tool; the model sees that it was skipped.
    Skip,
    /// Pause the turn until a human approves the call.
    RequireApproval,
}

/// A hook's lifecycle error (flush/shutdown).
#[derive(Debug, thiserror::Error)]
#[error("hook {hook}: {message}")]
pub struct HookError {
    /// The hook's name.
    pub hook: String,
    /// What failed.
    pub message: String,
}

/// Observes events. Every method has a default; implement only what you need.
///
/// Methods are called from the task that drives the turn: they must not block for long.
pub trait Hook: Send + Sync {
    /// A name for logs and counters.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// Every event, first. Return an action only for `tool_call` STARTs (ignored otherwise).
    fn on_event(&self, _event: &Event) -> HookAction {
        HookAction::Continue
    }

    /// `Span(turn, start)`.
    fn on_turn_start(&self, _event: &Event, _span: &SpanEvent) {}

    /// `Span(turn, complete | error | cancelled)`.
    fn on_turn_end(&self, _event: &Event, _span: &SpanEvent) {}

    /// `Span(tool_call, start)`: the tool has not run yet.
    fn on_tool_call_start(&self, _event: &Event, _span: &SpanEvent) -> HookAction {
        HookAction::Continue
    }

    /// `Span(tool_call, complete | error | cancelled)`.
    fn on_tool_call_end(&self, _event: &Event, _span: &SpanEvent) {}

    /// `Span(llm_call, start)`.
    fn on_llm_call_start(&self, _event: &Event, _span: &SpanEvent) {}

    /// `Span(llm_call, complete | error | cancelled)`.
    fn on_llm_call_end(&self, _event: &Event, _span: &SpanEvent) {}

    /// `Span(step, start)`.
    fn on_step_start(&self, _event: &Event, _span: &SpanEvent) {}

    /// `Span(step, complete | error | cancelled)`.
    fn on_step_end(&self, _event: &Event, _span: &SpanEvent) {}

    /// `IntentClassified`.
    fn on_intent_classified(&self, _event: &Event) {}

    /// `TextDelta`.
    fn on_text_delta(&self, _event: &Event, _content: &str) {}

    /// `RunError`.
    fn on_run_error(&self, _event: &Event) {}

    /// `TurnSummary`.
    fn on_turn_summary(&self, _event: &Event, _summary: &crate::events::TurnSummary) {}

    /// Whether this hook records message content. When any hook of a run says yes, the
    /// runner puts each model call's request and answer on its `llm_call` span events in the
    /// GenAI message-parts shape (see [`crate::message_parts`]); when none does, that content
    /// is never built. Asked once per model call.
    fn captures_content(&self) -> bool {
        false
    }

    /// If the hook can no longer do its job and the turn must stop (a fail-closed audit
    /// trail that cannot write), the reason. Checked after every event.
    fn halt_reason(&self) -> Option<String> {
        None
    }

    /// The OpenTelemetry context of span `span_id` of run `run_id`, if this hook made an OTel
    /// span of it (the [`crate::otel::OTelHook`] does). While a tool or model call runs, the
    /// runner makes its span's context current ([`HookSet::otel_context`]), so spans and
    /// HTTP calls made inside nest under `agent.tool_call.*` or `chat …`.
    #[cfg(feature = "otel")]
    fn otel_context(&self, _run_id: &str, _span_id: &str) -> Option<opentelemetry::Context> {
        None
    }

    /// Writes out anything buffered. Bounded in time.
    fn flush(&self) -> Result<(), HookError> {
        Ok(())
    }

    /// Flushes and releases resources. Bounded in time.
    fn shutdown(&self) -> Result<(), HookError> {
        self.flush()
    }
}

impl<H: Hook + ?Sized> Hook for Arc<H> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn on_event(&self, event: &Event) -> HookAction {
        dispatch_one(&**self, event)
    }
    fn halt_reason(&self) -> Option<String> {
        (**self).halt_reason()
    }
    fn captures_content(&self) -> bool {
        (**self).captures_content()
    }
    #[cfg(feature = "otel")]
    fn otel_context(&self, run_id: &str, span_id: &str) -> Option<opentelemetry::Context> {
        (**self).otel_context(run_id, span_id)
    }
    fn flush(&self) -> Result<(), HookError> {
        (**self).flush()
    }
    fn shutdown(&self) -> Result<(), HookError> {
        (**self).shutdown()
    }
}

/// A hook made of a closure over every event.
///
/// ```
/// use kaos_agents::hooks::{FnHook, HookAction};
/// let hook = FnHook::new(|event: &kaos_agents::Event| println!("{}", event.label()));
/// # let _ = hook;
/// ```
pub struct FnHook<F> {
    f: F,
}

impl<F> FnHook<F>
where
    F: Fn(&Event) + Send + Sync,
{
    /// A hook that calls `f` for every event.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> Hook for FnHook<F>
where
    F: Fn(&Event) + Send + Sync,
{
    fn name(&self) -> &str {
        "fn-hook"
    }
    fn on_event(&self, event: &Event) -> HookAction {
        (self.f)(event);
        HookAction::Continue
    }
}

/// A hook made of a closure that gates tool calls: it sees each `tool_call` START and answers.
pub struct FnGate<F> {
    f: F,
}

impl<F> FnGate<F>
where
    F: Fn(&SpanEvent) -> HookAction + Send + Sync,
{
    /// A hook that answers every `tool_call` START with `f(span)`.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> Hook for FnGate<F>
where
    F: Fn(&SpanEvent) -> HookAction + Send + Sync,
{
    fn name(&self) -> &str {
        "fn-gate"
    }
    fn on_tool_call_start(&self, _event: &Event, span: &SpanEvent) -> HookAction {
        (self.f)(span)
    }
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into())
}

/// Calls one hook's catch-all and typed methods for an event; returns its action.
fn dispatch_one<H: Hook + ?Sized>(hook: &H, event: &Event) -> HookAction {
    let mut action = hook.on_event(event);
    match &event.kind {
        EventKind::Span(span) => {
            let start = span.phase == SpanPhase::Start;
            match (span.subject, start) {
                (SpanSubject::Turn, true) => hook.on_turn_start(event, span),
                (SpanSubject::Turn, false) => hook.on_turn_end(event, span),
                (SpanSubject::ToolCall, true) => {
                    action = action.max(hook.on_tool_call_start(event, span));
                }
                (SpanSubject::ToolCall, false) => hook.on_tool_call_end(event, span),
                (SpanSubject::LlmCall, true) => hook.on_llm_call_start(event, span),
                (SpanSubject::LlmCall, false) => hook.on_llm_call_end(event, span),
                (SpanSubject::Step, true) => hook.on_step_start(event, span),
                (SpanSubject::Step, false) => hook.on_step_end(event, span),
                _ => {}
            }
            if !(span.subject == SpanSubject::ToolCall && start) {
                action = HookAction::Continue;
            }
        }
        EventKind::IntentClassified { .. } => hook.on_intent_classified(event),
        EventKind::TextDelta { content, .. } => hook.on_text_delta(event, content),
        EventKind::RunError { .. } => hook.on_run_error(event),
        EventKind::TurnSummary(summary) => hook.on_turn_summary(event, summary),
        _ => {}
    }
    action
}

/// The hooks of a runner, in registration order, with panic isolation.
#[derive(Clone, Default)]
pub struct HookSet {
    hooks: Vec<Arc<dyn Hook>>,
    panics: Arc<AtomicU64>,
}

impl std::fmt::Debug for HookSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.hooks.iter().map(|h| h.name().to_string()))
            .finish()
    }
}

impl HookSet {
    /// Adds a hook at the end.
    pub fn push(&mut self, hook: Arc<dyn Hook>) {
        self.hooks.push(hook);
    }

    /// How many hooks there are.
    pub fn len(&self) -> usize {
        self.hooks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// How many hook calls panicked so far (each was skipped).
    pub fn panic_count(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Calls every hook for `event`; returns the most restrictive action. A panicking hook
    /// is counted and skipped.
    pub fn dispatch(&self, event: &Event) -> HookAction {
        let mut action = HookAction::Continue;
        for hook in &self.hooks {
            match catch_unwind(AssertUnwindSafe(|| dispatch_one(&**hook, event))) {
                Ok(a) => action = action.max(a),
                Err(_) => {
                    self.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        hook = hook.name(), run_id = %event.run_id,
                        kaos_span_id = event.span().map(|s| &*s.span_id), event = %event.label(),
                        "hook panicked; skipped"
                    );
                }
            }
        }
        action
    }

    /// Whether any hook records message content ([`Hook::captures_content`]).
    pub fn captures_content(&self) -> bool {
        self.hooks.iter().any(|h| h.captures_content())
    }

    /// The OTel context of span `span_id` of run `run_id` from the first hook that has one
    /// ([`Hook::otel_context`]); `None` at once when there are no hooks. A panicking hook is
    /// counted and skipped.
    #[cfg(feature = "otel")]
    pub fn otel_context(&self, run_id: &str, span_id: &str) -> Option<opentelemetry::Context> {
        self.hooks.iter().find_map(|hook| {
            match catch_unwind(AssertUnwindSafe(|| hook.otel_context(run_id, span_id))) {
                Ok(cx) => cx,
                Err(_) => {
                    self.panics.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        })
    }

    /// The first halt reason any hook gives.
    pub fn halt_reason(&self) -> Option<String> {
        self.hooks.iter().find_map(|h| {
            catch_unwind(AssertUnwindSafe(|| h.halt_reason()))
                .ok()
                .flatten()
                .map(|reason| format!("{}: {reason}", h.name()))
        })
    }

    /// Flushes every hook; returns every error. A hook whose `flush` panics is counted and
    /// reported as an error; the others are still flushed.
    pub fn flush(&self) -> Vec<HookError> {
        self.each_lifecycle("flush", |h| h.flush())
    }

    /// Shuts every hook down; returns every error. A hook whose `shutdown` panics is counted
    /// and reported as an error; the others are still shut down.
    pub fn shutdown(&self) -> Vec<HookError> {
        self.each_lifecycle("shutdown", |h| h.shutdown())
    }

    fn each_lifecycle(
        &self,
        what: &str,
        call: impl Fn(&dyn Hook) -> Result<(), HookError>,
    ) -> Vec<HookError> {
        let mut errors = Vec::new();
        for hook in &self.hooks {
            match catch_unwind(AssertUnwindSafe(|| call(&**hook))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(payload) => {
                    self.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(hook = hook.name(), "hook {what} panicked");
                    errors.push(HookError {
                        hook: hook.name().to_string(),
                        message: format!("{what} panicked: {}", panic_text(&*payload)),
                    });
                }
            }
        }
        errors
    }
}
