//! Pause and resume: a turn that stops for a human's approval persists a [`RunState`] on its
//! session (`Session::pending_runs[run_id]`); [`Runner::resume`] continues it in a new run —
//! possibly in another process with the same store — executing exactly the pending call,
//! once, and then the rest of the tool loop.
//!
//! Token accounting is per run: the paused run's `TurnSummary` counts the model calls made
//! before the pause, the resumed run's counts those made after it (nothing is counted twice).

use std::sync::Arc;

use kaos_llm::{LlmRequest, Message, ToolCall, Usage};
use serde::{Deserialize, Serialize};

use super::plan::PlanProgress;
use super::turn::{Dispatch, Turn};
use super::{EventStream, Runner};
use crate::agent::Agent;
use crate::attrs;
use crate::events::{Intent, TurnSummary};
use crate::scope::TurnScope;
use crate::session::Session;

/// A human's decision about a paused tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Approval {
    /// Run the call (this call id only; later calls are checked as usual).
    Approve,
    /// Do not run it; the model gets an error result carrying `reason` and goes on.
    Deny {
        /// Why, for the model and the trace.
        reason: String,
    },
}

/// Everything needed to continue a paused run, possibly in another process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The paused run.
    pub run_id: String,
    /// Its session.
    pub session_id: String,
    /// The user's message of the paused turn.
    pub original_message: String,
    /// The tool loop's conversation so far (system prompt, history, the assistant message
    /// with the tool calls, the results of calls already made).
    pub messages: Vec<Message>,
    /// The call waiting for approval.
    pub pending_call: ToolCall,
    /// The calls of the same model round after the pending one, not yet run.
    pub remaining_calls: Vec<ToolCall>,
    /// The tool-loop round (0-based) the pause happened in.
    pub round: u32,
    /// The turn's number in its session.
    pub turn_number: u64,
    /// The classified intent.
    pub intent: Option<Intent>,
    /// Tokens spent by the paused run before the pause.
    pub usage: Usage,
    /// USD spent by the paused run before the pause (`None` = unknown price).
    pub cost_usd: Option<f64>,
    /// The agent's configuration when it paused.
    pub agent: Agent,
    /// When it paused (seconds since the Unix epoch).
    pub created_at_unix_secs: u64,
    /// Set when the pause happened inside a PLAN step: where the plan is (`messages` and
    /// `remaining_calls` are then empty).
    #[serde(default)]
    pub plan: Option<PlanProgress>,
}

impl Turn {
    /// The state of this turn paused on `pending_call`.
    pub(crate) fn run_state(
        &self,
        messages: Vec<Message>,
        pending_call: ToolCall,
        remaining_calls: Vec<ToolCall>,
        round: u32,
        plan: Option<PlanProgress>,
    ) -> RunState {
        RunState {
            run_id: self.scope.run_id().to_string(),
            session_id: self.scope.session_id().to_string(),
            original_message: self.message.clone(),
            messages,
            pending_call,
            remaining_calls,
            round,
            turn_number: self.turn_number,
            intent: self.intent,
            usage: self.usage,
            cost_usd: self.cost,
            agent: (*self.shared.agent).clone(),
            created_at_unix_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            plan,
        }
    }
}

/// Where a paused run's state is stored: `session:{session_id}#pending_runs/{run_id}`.
pub fn run_state_ref(session_id: &str, run_id: &str) -> String {
    format!("session:{session_id}#pending_runs/{run_id}")
}

impl Runner {
    /// Continues the paused run `run_id` of session `session_id` as a new run (its turn
    /// START carries `resumed_from` = the paused run's id). With [`Approval::Approve`] the
    /// pending call runs exactly once, bypassing the approval gate for that call id only;
    /// with [`Approval::Deny`] the model gets a denial as the call's result. The tool loop
    /// then continues where it stopped. The stored state is removed before anything runs,
    /// so a run is resumed at most once.
    pub fn resume(
        &self,
        run_id: impl Into<String>,
        session_id: impl Into<String>,
        approval: Approval,
    ) -> EventStream {
        let shared = self.shared.clone();
        let run_id = run_id.into();
        self.stream(session_id.into(), move |scope| async move {
            run_resume(shared, scope, run_id, approval).await;
        })
    }

    /// The paused runs of a session, oldest first.
    pub async fn pending_runs(&self, session_id: &str) -> Vec<RunState> {
        let Ok(Some(session)) = self.shared.runtime.store().load(session_id).await else {
            return Vec::new();
        };
        let mut runs: Vec<RunState> = session
            .pending_runs
            .values()
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect();
        runs.sort_by_key(|r| r.created_at_unix_secs);
        runs
    }
}

async fn run_resume(
    shared: Arc<super::Shared>,
    scope: TurnScope,
    run_id: String,
    approval: Approval,
) -> Option<TurnSummary> {
    let lock = shared.session_lock(scope.session_id());
    let _guard = lock.lock().await;
    let loaded = shared.runtime.store().load(scope.session_id()).await;
    let (mut session, mut error) = match loaded {
        Ok(Some(s)) => (s, None),
        Ok(None) => (Session::new(scope.session_id().to_string()), None),
        Err(e) => (
            Session::new(scope.session_id().to_string()),
            Some(e.message),
        ),
    };
    let state = match session.pending_runs.remove(&run_id) {
        Some(v) => match serde_json::from_value::<RunState>(v) {
            Ok(s) => Some(s),
            Err(e) => {
                error.get_or_insert(format!("the paused run {run_id} has a corrupt state: {e}"));
                None
            }
        },
        None => {
            error.get_or_insert(format!(
                "no paused run {run_id} in session {} (already resumed, or never paused)",
                scope.session_id()
            ));
            None
        }
    };
    let turn_number = state
        .as_ref()
        .map_or(session.turn_count + 1, |s| s.turn_number);
    let start = attrs! {
        "turn_number" => turn_number,
        "model" => shared.agent.model.as_str(),
        "resumed_from" => run_id.as_str(),
    };
    let store = shared.runtime.store().clone();
    let (state, error) = match (state, error) {
        (Some(state), None) => {
            // Remove the state before running anything: a second resume finds nothing.
            match store.save(&session).await {
                Ok(()) => (Some(state), None),
                Err(e) => (None, Some(e.message)),
            }
        }
        (_, error) => (None, error),
    };
    let mut turn = Turn::start(shared, scope, session, turn_number, start, None)?;
    let Some(state) = state else {
        turn.fail(
            "run_state_not_found",
            error.as_deref().unwrap_or("no paused run state"),
            "List the session's paused runs (Runner::pending_runs) and resume one of those.",
        );
        return turn.result;
    };
    turn.message = state.original_message.clone();
    turn.intent = state.intent;
    turn.approval = Some((state.pending_call.id.clone(), approval));
    if let Some(plan) = state.plan {
        let dispatch = turn.plan_from(plan, Some(state.pending_call)).await;
        return turn.finish(dispatch).await;
    }
    let request = LlmRequest::new(state.messages).with_tools(turn.shared.tool_defs.to_vec());
    let mut pending = Vec::with_capacity(state.remaining_calls.len() + 1);
    pending.push(state.pending_call);
    pending.extend(state.remaining_calls);
    let dispatch: Dispatch = turn.tool_loop_from(request, state.round, pending).await;
    turn.finish(dispatch).await
}
