//! The guarded execution of one tool call: permission check, hook gate, a human's decision
//! when resuming, timeout, panic isolation and the `tool_call` span.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use kaos_llm::ToolCall;
use serde_json::{Map, Value};

use super::run_state::{Approval, run_state_ref};
use super::state::Turn;
use crate::attrs;
use crate::events::{EventKind, SpanError, SpanPhase, SpanSubject, ToolCallSummary};
use crate::hooks::HookAction;
use crate::permissions::PermissionDecision;
use crate::session::ToolAction;
use crate::tools::{NestedUsage, ToolContext, ToolOutput};

/// Most characters of a tool result kept in `result_summary`.
pub(crate) const RESULT_SUMMARY_CHARS: usize = 200;

/// How one tool call ended.
pub(crate) enum CallResult {
    /// The model gets this text; `is_error` says whether it failed.
    Done { text: String, is_error: bool },
    /// The call waits for approval; the turn pauses.
    Paused,
}

/// Caps a tool result bound for the prompt at `max` bytes (cut at a character boundary),
/// appending a marker that says how much was cut. Returns the original size when cut.
pub(crate) fn cap_result(text: &mut String, max: usize) -> Option<usize> {
    let original = text.len();
    if original <= max {
        return None;
    }
    let mut keep = max;
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    text.truncate(keep);
    text.push_str(&format!(
        "\n\n[kaos: tool result truncated: {original} bytes, the first {keep} kept, {} cut]",
        original - keep
    ));
    Some(original)
}

/// Cuts a string to at most `max` characters, adding "…" when cut.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into())
}

/// The most characters of a made-up tool name a span name shows.
const UNKNOWN_TOOL_NAME_CHARS: usize = 64;

/// A tool name the model made up (no such tool), as spans show it: redacted, then cut to
/// [`UNKNOWN_TOOL_NAME_CHARS`] characters (marked `…`).
fn unknown_tool_name(name: &str) -> String {
    let redacted = crate::redact::Redactor::default().redact_str(name);
    match redacted.char_indices().nth(UNKNOWN_TOOL_NAME_CHARS) {
        Some((cut, _)) => format!("{}…", &redacted[..cut]),
        None => redacted.into_owned(),
    }
}

/// One guarded tool call of `turn`. `decided` is a human's decision about this very call
/// (when resuming a paused run): `Approve` bypasses the approval gate, `Deny` answers the
/// model without running the tool.
pub(crate) async fn call_tool(
    turn: &mut Turn,
    call: &ToolCall,
    step_id: Option<&str>,
    decided: Option<Approval>,
) -> CallResult {
    let shared = turn.shared.clone();
    let tool = shared.tool(&call.name).cloned();
    let annotations = tool.as_ref().map(|t| t.annotations()).unwrap_or_default();
    let verdict = shared.policy.evaluate(&call.name, &annotations);
    // A registered tool's name is configuration; a name the model made up is model output:
    // redacted and cut before it names a span (in the trace, the tree and the audit trail).
    let shown = match &tool {
        Some(_) => std::borrow::Cow::Borrowed(call.name.as_str()),
        None => std::borrow::Cow::Owned(unknown_tool_name(&call.name)),
    };
    let mut start = attrs! {
        "tool_name" => shown.as_ref(),
        "call_id" => call.id.as_str(),
        "arguments" => call.arguments.clone(),
        "permission" => verdict.decision.as_str(),
    };
    if let Some(step) = step_id {
        start.insert("step_id".into(), step.into());
    }
    let (span, action) =
        turn.scope
            .start_span(SpanSubject::ToolCall, format!("tool.{shown}"), start);
    let started = std::time::Instant::now();
    let end = ToolEnd {
        call,
        name: &shown,
        span: &span,
        started,
        step_id,
        extra: Map::new(),
        tool_truncated: false,
    };

    let Some(tool) = tool else {
        let available: Vec<&str> = shared.tools.iter().map(|t| t.name()).collect();
        let text = format!(
            "There is no tool named {:?}. Available tools: {}.",
            call.name,
            available.join(", ")
        );
        return end.finish(turn, text, Some("unknown_tool"));
    };
    if verdict.decision == PermissionDecision::Deny {
        let text = format!(
            "Tool {:?} was denied by the permission policy and did not run ({}).",
            call.name, verdict.reason
        );
        return end.finish(turn, text, Some("permission_denied"));
    }
    if let Some(Approval::Deny { reason }) = &decided {
        let text = format!(
            "A human denied the call to tool {:?}; it did not run ({reason}). Do not retry it.",
            call.name
        );
        return end.finish(turn, text, Some("approval_denied"));
    }
    let approved = decided.is_some();
    if !approved
        && (verdict.decision == PermissionDecision::Ask || action == HookAction::RequireApproval)
    {
        let reason = if verdict.decision == PermissionDecision::Ask {
            verdict.reason
        } else {
            format!("a hook requires approval before {} runs", call.name)
        };
        turn.scope.emit(EventKind::ToolCallApprovalRequired {
            call_id: call.id.clone(),
            tool_name: call.name.clone(),
            arguments: call.arguments.clone(),
            reason: reason.clone(),
            run_state_ref: Some(run_state_ref(turn.scope.session_id(), turn.scope.run_id())),
        });
        turn.scope.end_span(
            &span,
            SpanPhase::Cancelled,
            attrs! {"tool_name" => call.name.as_str(), "call_id" => call.id.as_str(), "is_error" => false},
            Some(SpanError {
                error_type: "awaiting_approval".into(),
                message: reason,
            }),
        );
        return CallResult::Paused;
    }
    if action == HookAction::Skip {
        let text = format!(
            "Tool {:?} was skipped by a hook (for example an open circuit breaker) and did not run.",
            call.name
        );
        return end.finish(turn, text, Some("skipped_by_hook"));
    }

    let ctx = ToolContext {
        session_id: turn.scope.session_id().clone(),
        run_id: turn.scope.run_id().clone(),
        call_id: call.id.clone(),
        agent: turn.scope.agent().clone(),
        span_id: span.clone(),
        scope: Some(turn.scope.clone()),
        host: Some(shared.host.clone()),
        nested_usage: Some(Arc::new(std::sync::Mutex::new(NestedUsage {
            usage: kaos_llm::Usage::default(),
            cost_usd: Some(0.0),
        }))),
    };
    let timeout = shared.agent.tool_timeout();
    // The tool's own instrumentation nests under its `tool_call` span.
    let work = turn
        .scope
        .in_span(&span, tool.call(call.arguments.clone(), &ctx));
    let run = AssertUnwindSafe(work).catch_unwind();
    let (output, error_type) = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(output)) => {
            let kind = if output.is_error { "tool_error" } else { "" };
            (output, kind)
        }
        Ok(Err(payload)) => (
            ToolOutput::error(format!(
                "Tool {:?} crashed: {}",
                call.name,
                panic_message(&*payload)
            )),
            "tool_panic",
        ),
        Err(_) => (
            ToolOutput::error(format!(
                "Tool {:?} did not finish within {} ms and was stopped.",
                call.name,
                timeout.as_millis()
            )),
            "tool_timeout",
        ),
    };
    if let Some(sink) = &ctx.nested_usage {
        let nested = *sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if nested.usage.total_tokens > 0 || nested.cost_usd != Some(0.0) {
            turn.add_nested_usage(nested.usage, nested.cost_usd);
        }
    }
    let text = output.model_text();
    let error_type = (!error_type.is_empty()).then_some(error_type);
    let end = ToolEnd {
        extra: output.span_attributes,
        tool_truncated: output.truncated,
        ..end
    };
    end.finish(turn, text, error_type)
}

/// What ending a started tool_call span needs.
struct ToolEnd<'a> {
    call: &'a ToolCall,
    /// The tool's name as its span shows it (a made-up one redacted and cut).
    name: &'a str,
    span: &'a Arc<str>,
    started: std::time::Instant,
    step_id: Option<&'a str>,
    /// Protocol attributes the tool reported (`ToolOutput::span_attributes`).
    extra: Map<String, Value>,
    /// The tool cut its own output short (`ToolOutput::truncated`, e.g. a command's stdout
    /// past its capture cap).
    tool_truncated: bool,
}

impl ToolEnd<'_> {
    /// Ends the span with the result `text` (an error of kind `error_type`, if given) and
    /// records the call on the turn.
    fn finish(self, turn: &mut Turn, text: String, error_type: Option<&str>) -> CallResult {
        let call = self.call;
        let is_error = error_type.is_some();
        let mut text = text;
        let cut_from = cap_result(&mut text, turn.shared.agent.max_tool_result_bytes);
        let summary = truncate_chars(&text, RESULT_SUMMARY_CHARS);
        let mut end: Map<String, Value> = attrs! {
            "tool_name" => self.name,
            "call_id" => call.id.as_str(),
            "is_error" => is_error,
            "result_summary" => summary.clone(),
        };
        if let Some(step) = self.step_id {
            end.insert("step_id".into(), step.into());
        }
        for (k, v) in self.extra {
            end.entry(k).or_insert(v);
        }
        // Either cut makes the result incomplete: the tool's own (its output cap) or the
        // prompt's (`Agent::max_tool_result_bytes`, which also records the size it cut from).
        end.insert(
            "kaos.result_truncated".into(),
            (cut_from.is_some() || self.tool_truncated).into(),
        );
        if let Some(original) = cut_from {
            end.insert("kaos.result_original_bytes".into(), original.into());
        }
        let (phase, error) = match error_type {
            Some(kind) => (
                SpanPhase::Error,
                Some(SpanError {
                    error_type: kind.to_string(),
                    message: summary.clone(),
                }),
            ),
            None => (SpanPhase::Complete, None),
        };
        let duration_ms = turn
            .scope
            .end_span(self.span, phase, end, error)
            .unwrap_or_else(|| self.started.elapsed().as_secs_f64() * 1000.0);
        turn.record_tool_call(
            ToolCallSummary {
                tool_name: call.name.clone(),
                call_id: call.id.clone(),
                is_error,
                duration_ms,
                step_id: self.step_id.map(str::to_string),
            },
            ToolAction {
                tool_name: call.name.clone(),
                call_id: call.id.clone(),
                arguments: call.arguments.clone(),
                result_summary: summary,
                is_error,
            },
        );
        CallResult::Done { text, is_error }
    }
}
