//! [`AgentResponse`]: a turn's events folded into one value, and [`TurnError`] for a turn
//! that did not complete.

use serde_json::Value;

use crate::events::{Event, EventKind, Intent, ToolCallSummary, TurnOutcome};

/// The classified intent of a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentResult {
    /// The intent.
    pub intent: Intent,
    /// Confidence in `[0, 1]`.
    pub confidence: f64,
    /// Why.
    pub reasoning: String,
}

/// A tool call waiting for approval.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingApproval {
    /// The call id.
    pub call_id: String,
    /// The tool.
    pub tool_name: String,
    /// The arguments.
    pub arguments: Value,
    /// Why approval is needed.
    pub reason: String,
    /// Where the paused run's state is stored, if it was.
    pub run_state_ref: Option<String>,
}

/// A turn's error.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFailure {
    /// A short, stable kind.
    pub error_type: String,
    /// What went wrong.
    pub message: String,
    /// How to recover.
    pub recovery_hint: String,
}

/// What a turn produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentResponse {
    /// The answer.
    pub text: String,
    /// The classified intent.
    pub intent: Option<IntentResult>,
    /// Every tool call.
    pub tool_calls: Vec<ToolCallSummary>,
    /// The turn's number in its session (1-based).
    pub turn_number: u64,
    /// Tokens over every model call.
    pub tokens_used: u64,
    /// Input tokens over every model call.
    pub input_tokens: u64,
    /// Output tokens over every model call.
    pub output_tokens: u64,
    /// USD over every model call; `None` when a model's price is unknown.
    pub cost_usd: Option<f64>,
    /// The session.
    pub session_id: String,
    /// The run.
    pub run_id: String,
    /// How the turn ended.
    pub outcome: TurnOutcome,
    /// The call waiting for approval, when paused.
    pub pending_approval: Option<PendingApproval>,
    /// The error, when failed.
    pub error: Option<RunFailure>,
}

/// A turn that did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TurnError {
    /// The turn failed; the response holds what it did before.
    #[error("turn failed ({}): {}", .failure.error_type, .failure.message)]
    Failed {
        /// The error.
        failure: RunFailure,
        /// What the turn did before failing.
        response: Box<AgentResponse>,
    },
    /// The stream ended without a summary (the turn was cancelled).
    #[error("the turn ended without a summary (cancelled)")]
    Incomplete,
}

impl AgentResponse {
    /// Folds a turn's events into a response (for a `delegate`/`handoff` stream: the nested
    /// turn's).
    pub fn from_events(events: &[Event], session_id: &str) -> Result<AgentResponse, TurnError> {
        let mut response = AgentResponse {
            session_id: session_id.to_string(),
            ..AgentResponse::default()
        };
        let mut deltas = String::new();
        let mut summary_seen = false;
        // The first turn's run: the stream's own run, or for a `delegate`/`handoff` stream
        // (whose own run only holds the wrapping span) the nested turn's run.
        let root_run = events
            .iter()
            .find(|e| {
                e.is_span(
                    crate::events::SpanSubject::Turn,
                    crate::events::SpanPhase::Start,
                )
            })
            .or(events.first())
            .map(|e| e.run_id.clone());
        for event in events {
            if Some(&event.run_id) != root_run.as_ref() {
                continue; // a nested run's events
            }
            response.run_id = event.run_id.to_string();
            match &event.kind {
                EventKind::Span(span) if span.subject == crate::events::SpanSubject::Turn => {
                    if let Some(n) = span.attributes.get("turn_number").and_then(Value::as_u64) {
                        response.turn_number = n;
                    }
                }
                EventKind::IntentClassified {
                    intent,
                    confidence,
                    reasoning,
                } => {
                    response.intent = Some(IntentResult {
                        intent: *intent,
                        confidence: *confidence,
                        reasoning: reasoning.clone(),
                    });
                }
                EventKind::TextDelta { content, .. } => deltas.push_str(content),
                EventKind::ToolCallApprovalRequired {
                    call_id,
                    tool_name,
                    arguments,
                    reason,
                    run_state_ref,
                } => {
                    response.pending_approval = Some(PendingApproval {
                        call_id: call_id.clone(),
                        tool_name: tool_name.clone(),
                        arguments: arguments.clone(),
                        reason: reason.clone(),
                        run_state_ref: run_state_ref.clone(),
                    });
                }
                EventKind::RunError {
                    error_type,
                    message,
                    recovery_hint,
                } => {
                    response.error = Some(RunFailure {
                        error_type: error_type.clone(),
                        message: message.clone(),
                        recovery_hint: recovery_hint.clone(),
                    });
                }
                EventKind::TurnSummary(summary) => {
                    summary_seen = true;
                    response.text = if summary.text.is_empty() {
                        deltas.clone()
                    } else {
                        summary.text.clone()
                    };
                    response.tool_calls = summary.tool_calls.clone();
                    response.tokens_used = summary.tokens_used;
                    response.input_tokens = summary.input_tokens;
                    response.output_tokens = summary.output_tokens;
                    response.cost_usd = summary.cost_usd;
                    response.outcome = summary.outcome;
                }
                _ => {}
            }
        }
        if !summary_seen {
            return Err(TurnError::Incomplete);
        }
        match (response.outcome, response.error.clone()) {
            (TurnOutcome::Failed, Some(failure)) => Err(TurnError::Failed {
                failure,
                response: Box::new(response),
            }),
            (TurnOutcome::Failed, None) => Err(TurnError::Failed {
                failure: RunFailure {
                    error_type: "unknown".into(),
                    message: "the turn failed".into(),
                    recovery_hint: String::new(),
                },
                response: Box::new(response),
            }),
            _ => Ok(response),
        }
    }
}
