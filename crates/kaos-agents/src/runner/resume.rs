//! The resume continuation: a turn that stopped for a human's approval persisted a
//! [`RunState`] on its session; resuming continues it in a new run — possibly in another
//! process with the same store — executing exactly the pending call, once, and then the rest
//! of the tool loop or plan.
//!
//! Token accounting is per run: the paused run's `TurnSummary` counts the model calls made
//! before the pause, the resumed run's counts those made after it (nothing is counted twice).

use kaos_llm::LlmRequest;

use super::run_state::{Approval, RunState};
use super::state::{Outcome, Turn};
use super::tool_loop::Interrupted;
use super::{plan, tool_loop};

/// Continues the paused run `state` with the human's `approval` of its pending call.
pub(crate) async fn run(turn: &mut Turn, state: RunState, approval: Approval) -> Outcome {
    turn.set_intent(state.intent);
    if let Some(progress) = state.plan {
        return plan::run_from(turn, progress, Some((state.pending_call, approval))).await;
    }
    let request = LlmRequest::new(state.messages).with_tools(turn.shared.tool_defs.to_vec());
    let mut calls = Vec::with_capacity(state.remaining_calls.len() + 1);
    calls.push(state.pending_call);
    calls.extend(state.remaining_calls);
    let interrupted = Interrupted {
        round: state.round,
        calls,
        decision: approval,
    };
    tool_loop::run_from(turn, request, state.round, Some(interrupted)).await
}
