//! The wire types of the HTTP API (request and response bodies), with their OpenAPI schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorDetail;

/// `POST /v1/sessions/{session_id}/messages`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// The user's message.
    pub message: String,
    /// The agent to use, by name (default: the server's first agent).
    #[serde(default)]
    pub agent: Option<String>,
    /// Another model among those the server's agents use.
    #[serde(default)]
    pub model: Option<String>,
    /// Instructions added after the agent's own (never replacing them).
    #[serde(default)]
    pub instructions: Option<String>,
    /// Globs over tool names: only the agent's tools matching one of them are offered.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// Globs over tool names whose calls must wait for approval (on top of the agent's rules).
    #[serde(default)]
    pub require_approval_for_tools: Option<Vec<String>>,
    /// The most USD this turn may spend (capped by the agent's own budget).
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
}

/// `POST /v1/runs/{run_id}/approve`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// Run the paused call (`true`) or tell the model it was denied (`false`).
    pub approved: bool,
    /// Why (given to the model on a denial).
    #[serde(default)]
    pub reason: Option<String>,
    /// The session of the paused run.
    pub session_id: String,
}

/// One tool call of a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolCallResult {
    /// The tool.
    pub tool_name: String,
    /// The result, truncated.
    pub result_summary: String,
    /// Whether it failed.
    pub is_error: bool,
}

/// A turn's result (`Accept: application/json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TurnResponse {
    /// The session.
    pub session_id: String,
    /// The run.
    pub run_id: String,
    /// The answer.
    pub text: String,
    /// The classified intent.
    pub intent: Option<String>,
    /// The turn's number in its session.
    pub turn_number: u64,
    /// Tokens over every model call.
    pub tokens_used: u64,
    /// USD over every model call (`null` when a price is unknown).
    pub cost_usd: Option<f64>,
    /// Every tool call.
    pub tool_calls: Vec<ToolCallResult>,
    /// Whether a budget ran out.
    pub budget_exceeded: bool,
    /// Whether the turn waits for a tool call's approval (`POST /v1/runs/{run_id}/approve`).
    pub paused_for_approval: bool,
    /// The tool waiting for approval.
    pub pending_tool_name: Option<String>,
    /// `completed`, `paused`, `failed`, `timeout` or `cancelled`.
    pub outcome: String,
    /// The error, when the turn failed or timed out.
    pub error: Option<ErrorDetail>,
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// The id to use (default: a new one). Letters, digits, `-`, `_`, `.`; at most 128.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// A paused run of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PendingRunInfo {
    /// The paused run.
    pub run_id: String,
    /// The tool waiting for approval.
    pub tool_name: String,
    /// When it paused (seconds since the Unix epoch).
    pub created_at_unix_secs: u64,
}

/// A session's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// The session id (as the client named it).
    pub session_id: String,
    /// Completed turns.
    pub turn_count: u64,
    /// Messages in its history.
    pub message_count: u64,
    /// Runs waiting for approval.
    pub pending_runs: Vec<PendingRunInfo>,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, `draining` or `store_unreachable`.
    pub status: String,
}
