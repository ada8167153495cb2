//! The tool loop (ReAct with native tool calls) and the guarded execution of one tool call.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use kaos_llm::{LlmRequest, Message, ToolCall};
use serde_json::{Map, Value};

use super::prompts::REACT_NOTE;
use super::turn::{Dispatch, Turn};
use crate::attrs;
use crate::events::{EventKind, SpanError, SpanPhase, SpanSubject, ToolCallSummary};
use crate::hooks::HookAction;
use crate::permissions::PermissionDecision;
use crate::session::ToolAction;
use crate::tools::{ToolContext, ToolOutput};

/// Most characters of a tool result kept in `result_summary`.
pub(crate) const RESULT_SUMMARY_CHARS: usize = 200;

/// How one tool call ended.
pub(crate) enum CallResult {
    /// The model gets this text; `is_error` says whether it failed.
    Done { text: String, is_error: bool },
    /// The call waits for approval; the turn pauses.
    Paused,
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

impl Turn {
    /// The tool loop: the model calls tools until it answers in text, or the iteration or
    /// cost limit is reached.
    pub(crate) async fn tool_loop(&mut self, message: &str) -> Dispatch {
        if self.shared.tool_defs.is_empty() {
            return self.respond_plain(message).await;
        }
        let agent = self.shared.agent.clone();
        let mut messages = Vec::with_capacity(self.session.messages.len().min(32) + 2);
        messages.push(Message::system(format!(
            "{}\n\n{}",
            agent.instructions, REACT_NOTE
        )));
        let history_budget = agent.history_budget_chars;
        let mut used = 0;
        let mut start = self.session.messages.len();
        for (i, m) in self.session.messages.iter().enumerate().rev() {
            used += m.content.len();
            if used > history_budget && start < self.session.messages.len() {
                break;
            }
            start = i;
        }
        for m in &self.session.messages[start..] {
            messages.push(if m.role == "assistant" {
                Message::assistant(&*m.content)
            } else {
                Message::user(&*m.content)
            });
        }
        let mut request = LlmRequest::new(messages).with_tools(self.shared.tool_defs.to_vec());
        for _ in 0..agent.max_react_iterations {
            let response = match self.chat_call("react", &request).await {
                Ok(r) => r,
                Err(e) => {
                    self.fail_llm(&e);
                    return Dispatch::Failed;
                }
            };
            let calls: Vec<ToolCall> = response.tool_calls().into_iter().cloned().collect();
            if calls.is_empty() {
                return Dispatch::Answer(response.text());
            }
            request.messages.push(Message::assistant_with_tools(
                response.text(),
                calls.clone(),
            ));
            for call in &calls {
                match self.call_tool(call, None).await {
                    CallResult::Done { text, is_error } => {
                        request
                            .messages
                            .push(Message::tool_result(&call.id, text, is_error));
                    }
                    CallResult::Paused => return Dispatch::Paused,
                }
                if self.halted() {
                    return Dispatch::Failed;
                }
            }
            if let Some(limit) = agent.budget.chat_max_cost_usd {
                let spent = self.cost.unwrap_or(0.0);
                if spent >= limit {
                    self.scope.emit(EventKind::BudgetExceeded {
                        kind: "chat_cost".into(),
                        limit,
                        actual: spent,
                        reason: format!(
                            "the turn spent ${spent:.4}, at or over its ${limit:.4} cap"
                        ),
                    });
                    return Dispatch::Answer(format!(
                        "I stopped before finishing: this turn reached its cost cap (${limit:.4})."
                    ));
                }
            }
        }
        Dispatch::Answer(format!(
            "I stopped after {} tool rounds without reaching a final answer.",
            agent.max_react_iterations
        ))
    }

    /// No tools are available: answer directly.
    async fn respond_plain(&mut self, message: &str) -> Dispatch {
        let request = LlmRequest::new(vec![
            Message::system(self.shared.agent.instructions.clone()),
            Message::user(message),
        ]);
        match self.chat_call("respond", &request).await {
            Ok(r) => Dispatch::Answer(r.text()),
            Err(e) => {
                self.fail_llm(&e);
                Dispatch::Failed
            }
        }
    }

    /// One guarded tool call: permission check, hook gate, timeout, panic isolation, span.
    pub(crate) async fn call_tool(&mut self, call: &ToolCall, step_id: Option<&str>) -> CallResult {
        let shared = self.shared.clone();
        let tool = shared.tool(&call.name).cloned();
        let annotations = tool.as_ref().map(|t| t.annotations()).unwrap_or_default();
        let verdict = shared.policy.evaluate(&call.name, &annotations);
        let mut start = attrs! {
            "tool_name" => call.name.as_str(),
            "call_id" => call.id.as_str(),
            "arguments" => call.arguments.clone(),
            "permission" => verdict.decision.as_str(),
        };
        if let Some(step) = step_id {
            start.insert("step_id".into(), step.into());
        }
        let (span, action) =
            self.scope
                .start_span(SpanSubject::ToolCall, format!("tool.{}", call.name), start);
        let started = std::time::Instant::now();

        let Some(tool) = tool else {
            let available: Vec<&str> = shared.tools.iter().map(|t| t.name()).collect();
            let text = format!(
                "There is no tool named {:?}. Available tools: {}.",
                call.name,
                available.join(", ")
            );
            return self.finish_tool(call, &span, started, step_id, text, Some("unknown_tool"));
        };
        if verdict.decision == PermissionDecision::Deny {
            let text = format!(
                "Tool {:?} was denied by the permission policy and did not run ({}).",
                call.name, verdict.reason
            );
            return self.finish_tool(
                call,
                &span,
                started,
                step_id,
                text,
                Some("permission_denied"),
            );
        }
        if verdict.decision == PermissionDecision::Ask || action == HookAction::RequireApproval {
            let reason = if verdict.decision == PermissionDecision::Ask {
                verdict.reason
            } else {
                format!("a hook requires approval before {} runs", call.name)
            };
            self.scope.emit(EventKind::ToolCallApprovalRequired {
                call_id: call.id.clone(),
                tool_name: call.name.clone(),
                arguments: call.arguments.clone(),
                reason: reason.clone(),
                run_state_ref: None,
            });
            self.scope.end_span(
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
            return self.finish_tool(call, &span, started, step_id, text, Some("skipped_by_hook"));
        }

        let ctx = ToolContext {
            session_id: self.scope.session_id().clone(),
            run_id: self.scope.run_id().clone(),
            call_id: call.id.clone(),
            agent: self.scope.agent().clone(),
            span_id: span.clone(),
            scope: Some(self.scope.clone()),
        };
        let timeout = shared.agent.tool_timeout();
        let run = AssertUnwindSafe(tool.call(call.arguments.clone(), &ctx)).catch_unwind();
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
        let text = output.model_text();
        if error_type.is_empty() {
            self.finish_tool(call, &span, started, step_id, text, None)
        } else {
            self.finish_tool(call, &span, started, step_id, text, Some(error_type))
        }
    }

    fn finish_tool(
        &mut self,
        call: &ToolCall,
        span: &Arc<str>,
        started: std::time::Instant,
        step_id: Option<&str>,
        text: String,
        error_type: Option<&str>,
    ) -> CallResult {
        let is_error = error_type.is_some();
        let summary = truncate_chars(&text, RESULT_SUMMARY_CHARS);
        let mut end: Map<String, Value> = attrs! {
            "tool_name" => call.name.as_str(),
            "call_id" => call.id.as_str(),
            "is_error" => is_error,
            "result_summary" => summary.clone(),
        };
        if let Some(step) = step_id {
            end.insert("step_id".into(), step.into());
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
        let duration_ms = self
            .scope
            .end_span(span, phase, end, error)
            .unwrap_or_else(|| started.elapsed().as_secs_f64() * 1000.0);
        self.tool_calls.push(ToolCallSummary {
            tool_name: call.name.clone(),
            call_id: call.id.clone(),
            is_error,
            duration_ms,
            step_id: step_id.map(str::to_string),
        });
        self.session.actions.push(ToolAction {
            tool_name: call.name.clone(),
            call_id: call.id.clone(),
            arguments: call.arguments.clone(),
            result_summary: summary,
            is_error,
        });
        CallResult::Done { text, is_error }
    }
}
