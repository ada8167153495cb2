//! The audit side's redaction fast path: proves that [`Redactor::redact_event_counted`]
//! would return an event unchanged, so the event is serialized as it is, without the
//! redactor's deep copy.
//!
//! The proof visits exactly the content the redactor rewrites (every field is named in the
//! destructuring patterns below, so a field added to an event kind does not compile until
//! it is classified here) and asks the redactor itself about each string: a string is clean
//! when [`Redactor::redact_str_counted`] borrows it back and counts nothing. An object entry
//! whose key the redactor calls sensitive (and whose value is not `null`) is never proven
//! clean. Anything not proven clean goes through the redactor as before, so the file's
//! bytes are the same either way.
//!
//! Redaction is a pure function of the string for a given [`Redactor`] (its configuration
//! cannot change once built), so short clean strings and the sensitivity of short object
//! keys are remembered, in small tables that are emptied when full. Only strings the
//! redactor found nothing in are remembered.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde_json::{Map, Value};

use super::lock;
use crate::events::{
    Event, EventKind, PlanStepSummary, SpanError, SpanEvent, ToolCallSummary, TurnSummary,
};
use crate::redact::{RedactionStats, Redactor};

/// Strings and keys longer than this (bytes) are checked every time, never remembered.
const MEMO_MAX_LEN: usize = 64;

/// Entries per table; a full table is emptied.
const MEMO_CAPACITY: usize = 4096;

/// Remembered answers of one redactor.
#[derive(Debug, Default)]
pub(super) struct CleanMemo {
    strings: Mutex<HashSet<Box<str>>>,
    keys: Mutex<HashMap<Box<str>, bool>>,
}

impl CleanMemo {
    /// Forgets everything (the redactor changed).
    pub(super) fn clear(&self) {
        lock(&self.strings).clear();
        lock(&self.keys).clear();
    }

    /// Whether `redactor.redact_event_counted(event, _)` would return `event` unchanged and
    /// count nothing. `false` means "not proven", not "dirty".
    pub(super) fn event_is_clean(&self, redactor: &Redactor, event: &Event) -> bool {
        let c = Check {
            memo: self,
            redactor,
        };
        match &event.kind {
            EventKind::Span(SpanEvent {
                subject: _,
                phase: _,
                span_id: _,
                parent_span_id: _,
                name: _,
                duration_ms: _,
                attributes,
                error,
            }) => {
                error.as_ref().is_none_or(
                    |SpanError {
                         error_type: _,
                         message,
                     }| c.str(message),
                ) && c.map(attributes)
            }
            EventKind::IntentClassified {
                intent: _,
                confidence: _,
                reasoning,
            } => c.str(reasoning),
            EventKind::PlanProposed { steps, strategy: _ } => steps.iter().all(
                |PlanStepSummary {
                     step_id: _,
                     description,
                     tool_name: _,
                 }| c.str(description),
            ),
            EventKind::UsageObserved {
                input_tokens: _,
                output_tokens: _,
                total_tokens: _,
                cost_usd: _,
                model: _,
                source: _,
            }
            | EventKind::PatternMismatch {
                classified_intent: _,
                agent_pattern: _,
                recommended_pattern: _,
                fallback: _,
            } => true,
            EventKind::TextDelta {
                content,
                span_id: _,
            } => c.str(content),
            EventKind::ThinkingDelta {
                content,
                span_id: _,
            } => c.str(content),
            EventKind::TextRetracted {
                span_id: _,
                reason,
                retry_attempt: _,
            } => c.str(reason),
            EventKind::ToolCallApprovalRequired {
                call_id: _,
                tool_name: _,
                arguments,
                reason,
                run_state_ref: _,
            } => c.str(reason) && c.value(arguments),
            EventKind::BudgetExceeded {
                kind: _,
                limit: _,
                actual: _,
                reason,
            } => c.str(reason),
            EventKind::RunError {
                error_type: _,
                message,
                recovery_hint,
            } => c.str(message) && c.str(recovery_hint),
            EventKind::TurnSummary(TurnSummary {
                text,
                intent: _,
                tool_calls,
                tokens_used: _,
                input_tokens: _,
                output_tokens: _,
                cost_usd: _,
                outcome: _,
            }) => {
                // Tool call summaries are not redacted; named so a new field is noticed.
                tool_calls.iter().for_each(
                    |ToolCallSummary {
                         tool_name: _,
                         call_id: _,
                         is_error: _,
                         duration_ms: _,
                         step_id: _,
                     }| {},
                );
                c.str(text)
            }
        }
    }
}

struct Check<'a> {
    memo: &'a CleanMemo,
    redactor: &'a Redactor,
}

impl Check<'_> {
    fn str(&self, text: &str) -> bool {
        let memo = text.len() <= MEMO_MAX_LEN;
        if memo && lock(&self.memo.strings).contains(text) {
            return true;
        }
        let mut counts = RedactionStats::default();
        let clean = matches!(
            self.redactor.redact_str_counted(text, &mut counts),
            Cow::Borrowed(_)
        ) && counts.is_empty();
        if clean && memo {
            let mut strings = lock(&self.memo.strings);
            if strings.len() >= MEMO_CAPACITY {
                strings.clear();
            }
            strings.insert(Box::from(text));
        }
        clean
    }

    fn sensitive_key(&self, key: &str) -> bool {
        if key.len() > MEMO_MAX_LEN {
            return self.redactor.is_sensitive_key(key);
        }
        if let Some(known) = lock(&self.memo.keys).get(key) {
            return *known;
        }
        let sensitive = self.redactor.is_sensitive_key(key);
        let mut keys = lock(&self.memo.keys);
        if keys.len() >= MEMO_CAPACITY {
            keys.clear();
        }
        keys.insert(Box::from(key), sensitive);
        sensitive
    }

    fn map(&self, map: &Map<String, Value>) -> bool {
        map.iter()
            .all(|(key, item)| (item.is_null() || !self.sensitive_key(key)) && self.value(item))
    }

    fn value(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => self.str(s),
            Value::Array(items) => items.iter().all(|item| self.value(item)),
            Value::Object(map) => self.map(map),
            Value::Null | Value::Bool(_) | Value::Number(_) => true,
        }
    }
}
