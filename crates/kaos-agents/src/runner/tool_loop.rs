//! The CHAT pattern's tool loop (ReAct with native tool calls): the model calls tools until
//! it answers in text, or the iteration or cost limit is reached.

use kaos_llm::{LlmRequest, Message, ToolCall};

use super::budget;
use super::prompts::REACT_NOTE;
use super::run_state::{Approval, Pause};
use super::state::{Failure, Outcome, Turn};
use super::tool_call::{CallResult, call_tool};
use crate::events::EventKind;

/// A round interrupted by a pause, to finish first: its remaining calls (the first one is
/// the paused call, carrying the human's decision).
pub(crate) struct Interrupted {
    /// The model round (0-based) the calls belong to.
    pub round: u32,
    /// The paused call, then the calls after it in that round.
    pub calls: Vec<ToolCall>,
    /// The human's decision about the first call.
    pub decision: Approval,
}

/// Runs the tool loop for `message`, with the session's recent history.
pub(crate) async fn run(turn: &mut Turn, message: &str) -> Outcome {
    if turn.shared.tool_defs.is_empty() {
        return respond_plain(turn, message).await;
    }
    let agent = turn.shared.agent.clone();
    let mut messages = Vec::with_capacity(turn.session.messages.len().min(32) + 2);
    messages.push(Message::system(format!(
        "{}\n\n{}",
        agent.instructions, REACT_NOTE
    )));
    let history_budget = agent.history_budget_chars;
    let recent = turn
        .session
        .recent_messages(history_budget, |m| m.content.len());
    for m in recent {
        messages.push(if m.role == "assistant" {
            Message::assistant(&*m.content)
        } else {
            Message::user(&*m.content)
        });
    }
    let request = LlmRequest::new(messages).with_tools(turn.shared.tool_defs.to_vec());
    run_from(turn, request, 0, None).await
}

/// The tool loop from model round `first_round`, or — with `interrupted` — after first
/// finishing an interrupted round (when resuming a paused run).
pub(crate) async fn run_from(
    turn: &mut Turn,
    mut request: LlmRequest,
    first_round: u32,
    interrupted: Option<Interrupted>,
) -> Outcome {
    let agent = turn.shared.agent.clone();
    let mut start = first_round;
    if let Some(Interrupted {
        round,
        calls,
        decision,
    }) = interrupted
    {
        if let Some(end) = run_calls(turn, &mut request, &calls, round, Some(decision)).await {
            return end;
        }
        if let Some(end) = check_chat_cost(turn) {
            return end;
        }
        start = round + 1;
    }
    for round in start..agent.max_react_iterations {
        let response = match turn.chat_call("react", &request).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(Failure::llm(&e)),
        };
        let calls: Vec<ToolCall> = response.tool_calls().into_iter().cloned().collect();
        if calls.is_empty() {
            return Outcome::Answer(response.text());
        }
        request.messages.push(Message::assistant_with_tools(
            response.text(),
            calls.clone(),
        ));
        if let Some(end) = run_calls(turn, &mut request, &calls, round, None).await {
            return end;
        }
        if let Some(end) = check_chat_cost(turn) {
            return end;
        }
    }
    Outcome::Answer(format!(
        "I stopped after {} tool rounds without reaching a final answer.",
        agent.max_react_iterations
    ))
}

/// Runs one round's calls in order, appending their results; `decision` is about the first
/// call. Returns how the turn ends when a call pauses it or a hook halts it.
async fn run_calls(
    turn: &mut Turn,
    request: &mut LlmRequest,
    calls: &[ToolCall],
    round: u32,
    mut decision: Option<Approval>,
) -> Option<Outcome> {
    for (i, call) in calls.iter().enumerate() {
        match call_tool(turn, call, None, decision.take()).await {
            CallResult::Done { text, is_error } => {
                request
                    .messages
                    .push(Message::tool_result(&call.id, text, is_error));
            }
            CallResult::Paused => {
                return Some(Outcome::Paused(Pause {
                    messages: request.messages.clone(),
                    pending_call: call.clone(),
                    remaining_calls: calls[i + 1..].to_vec(),
                    round,
                    plan: None,
                }));
            }
        }
        if let Some(failure) = turn.halt() {
            return Some(Outcome::Failed(failure));
        }
    }
    None
}

/// The chat cost cap, checked between model calls. When the turn's cost is unknown, the
/// token cap stands in for it, or the turn stops (see the `budget` module).
fn check_chat_cost(turn: &mut Turn) -> Option<Outcome> {
    let limit = turn.shared.agent.budget.chat_max_cost_usd?;
    let (kind, cap, actual, reason, answer) = match turn.cost() {
        Some(spent) if spent < limit => return None,
        Some(spent) => (
            "chat_cost",
            limit,
            spent,
            format!("the turn spent ${spent:.4}, at or over its ${limit:.4} cap"),
            format!("I stopped before finishing: this turn reached its cost cap (${limit:.4})."),
        ),
        None => match turn.shared.agent.budget.max_tokens {
            Some(max) if turn.usage().total_tokens < max => return None,
            Some(max) => {
                let used = turn.usage().total_tokens;
                (
                    "chat_tokens",
                    max as f64,
                    used as f64,
                    format!(
                        "the turn used {used} tokens, at or over its {max}-token cap (standing \
                         in for the ${limit:.4} cost cap: a model's price is unknown)"
                    ),
                    format!(
                        "I stopped before finishing: this turn reached its token cap ({max} tokens)."
                    ),
                )
            }
            None => (
                "cost_unknown",
                limit,
                0.0,
                budget::unknown_cost_reason(limit),
                format!(
                    "I stopped before finishing: this turn's cost cannot be checked against its cap (${limit:.4}) because a model's price is unknown."
                ),
            ),
        },
    };
    turn.scope.emit(EventKind::BudgetExceeded {
        kind: kind.into(),
        limit: cap,
        actual,
        reason,
    });
    Some(Outcome::Answer(answer))
}

/// No tools are available: answer directly.
async fn respond_plain(turn: &mut Turn, message: &str) -> Outcome {
    let request = LlmRequest::new(vec![
        Message::system(turn.shared.agent.instructions.clone()),
        Message::user(message),
    ]);
    match turn.chat_call("respond", &request).await {
        Ok(r) => Outcome::Answer(r.text()),
        Err(e) => Outcome::Failed(Failure::llm(&e)),
    }
}
