//! What a paused run leaves behind: the [`RunState`] persisted on its session
//! (`Session::pending_runs[run_id]`), the human's [`Approval`], and where a plan was
//! ([`PlanProgress`]). Plain data: the patterns produce a [`Pause`], the turn turns it into a
//! [`RunState`], the resume continuation reads it back.

use kaos_llm::{Message, ToolCall, Usage};
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::events::Intent;

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
    /// The names of the tools the agent saw when it paused (a resume with another tool set
    /// is refused). `None` in states written before this field existed.
    #[serde(default)]
    pub tool_names: Option<Vec<String>>,
    /// When it paused (seconds since the Unix epoch).
    pub created_at_unix_secs: u64,
    /// Set when the pause happened inside a PLAN step: where the plan is (`messages` and
    /// `remaining_calls` are then empty).
    #[serde(default)]
    pub plan: Option<PlanProgress>,
    /// The W3C `traceparent` of the paused turn's span, when an OTel hook traced it: the
    /// resumed turn links to it, whichever process resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Where a paused run's state is stored: `session:{session_id}#pending_runs/{run_id}`.
pub fn run_state_ref(session_id: &str, run_id: &str) -> String {
    format!("session:{session_id}#pending_runs/{run_id}")
}

/// Where a pattern stopped for an approval: the part of a [`RunState`] only the pattern
/// knows (the turn adds its message, number, intent and spending).
#[derive(Debug, Clone)]
pub(crate) struct Pause {
    /// The tool loop's conversation (empty for a plan).
    pub messages: Vec<Message>,
    /// The call waiting for approval.
    pub pending_call: ToolCall,
    /// The calls of the same round after it (empty for a plan).
    pub remaining_calls: Vec<ToolCall>,
    /// The tool-loop round (0 for a plan).
    pub round: u32,
    /// Where the plan is, when the pause happened inside a plan step.
    pub plan: Option<PlanProgress>,
}

/// A step of the current plan, as persisted in a paused run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStepRecord {
    /// `step-{n}-{6 hex}`.
    pub step_id: String,
    /// What the step does.
    pub description: String,
    /// The tool it calls (`None`: a reasoning step).
    pub tool_name: Option<String>,
    /// What a successful result looks like.
    pub expected_output: String,
}

/// Where a plan is, so a run paused inside a step can continue.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlanProgress {
    /// The user's goal.
    pub goal: String,
    /// The current plan (empty: a new plan is needed).
    pub steps: Vec<PlanStepRecord>,
    /// Index in `steps` of the next step to run.
    pub next_step: usize,
    /// `description: result` of each successful step.
    pub results: Vec<String>,
    /// `description: error` of each failed step (fed to replans).
    pub failures: Vec<String>,
    /// Steps executed so far (over all plans).
    pub executed: usize,
    /// Replans so far.
    pub replans: u32,
    /// Wall-clock seconds spent before the pause.
    pub elapsed_secs: f64,
}
