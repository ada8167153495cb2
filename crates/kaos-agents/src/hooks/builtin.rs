//! Built-in hooks: logging, cost tracking, recording.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Hook, HookAction};
use crate::events::{Event, EventKind, SpanPhase, TurnSummary};

/// Logs every event through `tracing`: DEBUG for each event, WARN for tool errors and run
/// errors.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoggingHook;

impl Hook for LoggingHook {
    fn name(&self) -> &str {
        "logging"
    }

    fn on_event(&self, event: &Event) -> HookAction {
        match &event.kind {
            EventKind::Span(span) if span.phase == SpanPhase::Error => {
                tracing::warn!(
                    session_id = %event.session_id, run_id = %event.run_id,
                    kaos_span_id = %span.span_id, span = %span.name, error = ?span.error, "span failed"
                );
            }
            EventKind::RunError {
                error_type,
                message,
                ..
            } => {
                tracing::warn!(session_id = %event.session_id, run_id = %event.run_id, %error_type, %message, "run error");
            }
            _ => {
                tracing::debug!(
                    session_id = %event.session_id, run_id = %event.run_id,
                    kaos_span_id = event.span().map(|s| &*s.span_id), seq = event.sequence,
                    event = %event.label(), "event"
                );
            }
        }
        HookAction::Continue
    }
}

/// Per-session totals kept by [`CostTrackingHook`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CostTotals {
    /// Tokens over every turn.
    pub tokens: u64,
    /// USD over every turn whose cost was known.
    pub cost_usd: f64,
    /// Turns counted.
    pub turns: u64,
    /// Turns whose cost was unknown (some model had no price).
    pub turns_with_unknown_cost: u64,
}

/// Accumulates tokens and cost per session from each `TurnSummary`.
#[derive(Debug, Default)]
pub struct CostTrackingHook {
    totals: Mutex<HashMap<String, CostTotals>>,
}

impl CostTrackingHook {
    /// A hook with no totals yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The totals of one session.
    pub fn totals(&self, session_id: &str) -> CostTotals {
        self.totals
            .lock()
            .ok()
            .and_then(|t| t.get(session_id).copied())
            .unwrap_or_default()
    }

    /// Totals over every session.
    pub fn grand_total(&self) -> CostTotals {
        let mut sum = CostTotals::default();
        if let Ok(t) = self.totals.lock() {
            for v in t.values() {
                sum.tokens += v.tokens;
                sum.cost_usd += v.cost_usd;
                sum.turns += v.turns;
                sum.turns_with_unknown_cost += v.turns_with_unknown_cost;
            }
        }
        sum
    }

    /// Forgets one session's totals, or all of them.
    pub fn reset(&self, session_id: Option<&str>) {
        if let Ok(mut t) = self.totals.lock() {
            match session_id {
                Some(id) => {
                    t.remove(id);
                }
                None => t.clear(),
            }
        }
    }
}

impl Hook for CostTrackingHook {
    fn name(&self) -> &str {
        "cost-tracking"
    }

    fn on_turn_summary(&self, event: &Event, summary: &TurnSummary) {
        if let Ok(mut t) = self.totals.lock() {
            let entry = t.entry(event.session_id.to_string()).or_default();
            entry.tokens += summary.tokens_used;
            entry.turns += 1;
            match summary.cost_usd {
                Some(c) => entry.cost_usd += c,
                None => entry.turns_with_unknown_cost += 1,
            }
        }
    }
}

/// Records every event it sees, for tests and debugging.
#[derive(Debug, Default)]
pub struct RecordingHook {
    events: Mutex<Vec<Event>>,
}

impl RecordingHook {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event seen so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The labels (`span(turn,start)`, `intent_classified`, ...) of every event seen.
    pub fn labels(&self) -> Vec<String> {
        self.events
            .lock()
            .map(|e| e.iter().map(Event::label).collect())
            .unwrap_or_default()
    }

    /// Forgets everything recorded.
    pub fn clear(&self) {
        if let Ok(mut e) = self.events.lock() {
            e.clear();
        }
    }
}

impl Hook for RecordingHook {
    fn name(&self) -> &str {
        "recording"
    }

    fn on_event(&self, event: &Event) -> HookAction {
        if let Ok(mut e) = self.events.lock() {
            e.push(event.clone());
        }
        HookAction::Continue
    }
}
