//! The tool loop (ReAct with native tool calls) and the guarded execution of one tool call.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use kaos_llm::{LlmRequest, Message, ToolCall};
use serde_json::{Map, Value};

use super::prompts::REACT_NOTE;
use super::resume::{Approval, run_state_ref};
use super::turn::{Dispatch, Turn};
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
        let recent = self
            .session
            .recent_messages(history_budget, |m| m.content.len());
        for m in recent {
            messages.push(if m.role == "assistant" {
                Message::assistant(&*m.content)
            } else {
                Message::user(&*m.content)
            });
        }
        let request = LlmRequest::new(messages).with_tools(self.shared.tool_defs.to_vec());
        self.tool_loop_from(request, 0, Vec::new()).await
    }

    /// The tool loop from model round `first_round`, after first running `pending` (the
    /// remaining calls of an interrupted round, when resuming a paused run).
    pub(crate) async fn tool_loop_from(
        &mut self,
        mut request: LlmRequest,
        first_round: u32,
        pending: Vec<ToolCall>,
    ) -> Dispatch {
        let agent = self.shared.agent.clone();
        if !pending.is_empty() {
            if let Some(d) = self.run_calls(&mut request, &pending, first_round).await {
                return d;
            }
            if let Some(d) = self.check_chat_cost() {
                return d;
            }
        }
        let start = if pending.is_empty() {
            first_round
        } else {
            first_round + 1
        };
        for round in start..agent.max_react_iterations {
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
            if let Some(d) = self.run_calls(&mut request, &calls, round).await {
                return d;
            }
            if let Some(d) = self.check_chat_cost() {
                return d;
            }
        }
        Dispatch::Answer(format!(
            "I stopped after {} tool rounds without reaching a final answer.",
            agent.max_react_iterations
        ))
    }

    /// Runs one round's calls in order, appending their results. On a pause, leaves the run
    /// state in `self.pending` and returns `Paused`.
    async fn run_calls(
        &mut self,
        request: &mut LlmRequest,
        calls: &[ToolCall],
        round: u32,
    ) -> Option<Dispatch> {
        {
            for (i, call) in calls.iter().enumerate() {
                match self.call_tool(call, None).await {
                    CallResult::Done { text, is_error } => {
                        request
                            .messages
                            .push(Message::tool_result(&call.id, text, is_error));
                    }
                    CallResult::Paused => {
                        self.pending = Some(self.run_state(
                            request.messages.clone(),
                            call.clone(),
                            calls[i + 1..].to_vec(),
                            round,
                            None,
                        ));
                        return Some(Dispatch::Paused);
                    }
                }
                if self.halted() {
                    return Some(Dispatch::Failed);
                }
            }
            None
        }
    }

    /// The chat cost cap, checked between model calls.
    fn check_chat_cost(&mut self) -> Option<Dispatch> {
        let limit = self.shared.agent.budget.chat_max_cost_usd?;
        let spent = self.cost.unwrap_or(0.0);
        if spent < limit {
            return None;
        }
        self.scope.emit(EventKind::BudgetExceeded {
            kind: "chat_cost".into(),
            limit,
            actual: spent,
            reason: format!("the turn spent ${spent:.4}, at or over its ${limit:.4} cap"),
        });
        Some(Dispatch::Answer(format!(
            "I stopped before finishing: this turn reached its cost cap (${limit:.4})."
        )))
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
        let decided = match &self.approval {
            Some((id, _)) if *id == call.id => self.approval.take().map(|(_, a)| a),
            _ => None,
        };
        if let Some(Approval::Deny { reason }) = decided {
            let text = format!(
                "A human denied the call to tool {:?}; it did not run ({reason}). Do not retry it.",
                call.name
            );
            return self.finish_tool(call, &span, started, step_id, text, Some("approval_denied"));
        }
        let approved = decided.is_some();
        if !approved
            && (verdict.decision == PermissionDecision::Ask
                || action == HookAction::RequireApproval)
        {
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
                run_state_ref: Some(run_state_ref(self.scope.session_id(), self.scope.run_id())),
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
            runtime: Some(shared.runtime.clone()),
            nested_usage: Some(Arc::new(std::sync::Mutex::new(NestedUsage {
                usage: kaos_llm::Usage::default(),
                cost_usd: Some(0.0),
            }))),
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
        if let Some(sink) = &ctx.nested_usage {
            let nested = *sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if nested.usage.total_tokens > 0 || nested.cost_usd != Some(0.0) {
                self.usage += nested.usage;
                self.cost = match (self.cost, nested.cost_usd) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
            }
        }
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
        self.session.actions.push_back(ToolAction {
            tool_name: call.name.clone(),
            call_id: call.id.clone(),
            arguments: call.arguments.clone(),
            result_summary: summary,
            is_error,
        });
        CallResult::Done { text, is_error }
    }
}
