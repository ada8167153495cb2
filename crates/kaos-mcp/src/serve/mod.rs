//! Agents served as MCP tools: [`AgentServer`] (an rmcp `ServerHandler`), over stdio
//! ([`serve_stdio`]) or streamable HTTP behind bearer tokens ([`http_router`],
//! [`serve_http`]).
//!
//! Each agent is a tool taking `{message, session_id?}`. The result's text is the answer;
//! its structured content holds `run_id`, `session_id`, `turn_number`, `intent`,
//! `tool_calls` and `usage`. A `_meta.traceparent` on the request makes the agent's
//! `agent.turn` a child of the caller's span. A turn that pauses for approval returns a
//! result saying how to approve it.

mod auth;
mod http;

use std::sync::Arc;

use futures::StreamExt;
use kaos_agents::{AgentResponse, Event, RunOptions, Runner, TurnError, TurnOutcome};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ErrorData, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};

pub use auth::{Tenant, TokenError, TokenSet, tenant_of_header, tokens_from_env};
pub use http::{HttpServeError, UNAUTHORIZED_CODE, http_router, serve_http};

/// Builds the "how to approve" sentence for a paused run: `(run_id, session_id)` → text.
pub type ApprovalHint = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// One agent offered as an MCP tool.
#[derive(Clone)]
pub struct ServedAgent {
    tool: Tool,
    runner: Runner,
    approval_hint: ApprovalHint,
}

impl std::fmt::Debug for ServedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedAgent")
            .field("tool", &self.tool.name)
            .finish_non_exhaustive()
    }
}

/// The input schema of an agent tool.
fn agent_input_schema() -> Map<String, Value> {
    let schema = json!({
        "type": "object",
        "properties": {
            "message": {"type": "string", "description": "The message for the agent."},
            "session_id": {
                "type": "string",
                "description": "Continue this conversation; omit to start a new one (the result names it)."
            }
        },
        "required": ["message"]
    });
    match schema {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl ServedAgent {
    /// The agent of `runner`, as a tool named after the agent.
    pub fn new(runner: Runner) -> Self {
        let agent = runner.agent();
        let description = format!(
            "Ask the kaos agent {:?}. {}",
            agent.name,
            first_line(&agent.instructions)
        );
        let tool = Tool::new(
            agent.name.clone(),
            description,
            Arc::new(agent_input_schema()),
        );
        Self {
            tool,
            runner,
            approval_hint: Arc::new(|run_id, session_id| {
                format!(
                    "Approve or deny it through the runtime that owns the session \
                     (Runner::resume with run id {run_id} on session {session_id})."
                )
            }),
        }
    }

    /// Sets the sentence that tells a caller how to approve a paused run.
    pub fn with_approval_hint(mut self, hint: ApprovalHint) -> Self {
        self.approval_hint = hint;
        self
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.tool.name
    }

    /// Runs a turn on store session `store_session` (the caller's `session_id`, scoped to
    /// its tenant when there is one).
    async fn answer(
        &self,
        message: String,
        store_session: String,
        session_id: String,
        trace: (Option<String>, Option<String>),
    ) -> CallToolResult {
        let (traceparent, tracestate) = trace;
        let options = RunOptions {
            traceparent,
            tracestate,
        };
        let events: Vec<Event> = self
            .runner
            .run_with(message, store_session.clone(), options)
            .collect()
            .await;
        match AgentResponse::from_events(&events, &store_session) {
            Ok(r) => self.result_of(&r, &session_id, None),
            Err(TurnError::Failed { failure, response }) => {
                let text = format!(
                    "The agent's turn failed ({}): {}. {}",
                    failure.error_type, failure.message, failure.recovery_hint
                );
                self.result_of(&response, &session_id, Some(text))
            }
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
        }
    }

    fn result_of(
        &self,
        r: &AgentResponse,
        session_id: &str,
        failed: Option<String>,
    ) -> CallToolResult {
        let mut structured = json!({
            "run_id": r.run_id,
            "session_id": session_id,
            "turn_number": r.turn_number,
            "outcome": r.outcome,
            "intent": r.intent.as_ref().map(|i| i.intent.as_str()),
            "tool_calls": r.tool_calls.iter().map(|c| json!({
                "tool_name": c.tool_name,
                "call_id": c.call_id,
                "is_error": c.is_error,
                "duration_ms": c.duration_ms,
            })).collect::<Vec<_>>(),
            "usage": {
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "total_tokens": r.tokens_used,
                "cost_usd": r.cost_usd,
            },
        });
        let (text, is_error) = match (&r.pending_approval, failed) {
            (_, Some(text)) => (text, true),
            (Some(p), None) if r.outcome == TurnOutcome::Paused => {
                structured["pending_approval"] = json!({
                    "tool_name": p.tool_name,
                    "call_id": p.call_id,
                    "arguments": p.arguments,
                    "reason": p.reason,
                });
                let text = format!(
                    "The run {} paused before calling {} ({}). {}",
                    r.run_id,
                    p.tool_name,
                    p.reason,
                    (self.approval_hint)(&r.run_id, &r.session_id)
                );
                (text, false)
            }
            _ => (r.text.clone(), false),
        };
        let mut result = if is_error {
            CallToolResult::error(vec![ContentBlock::text(text)])
        } else {
            CallToolResult::success(vec![ContentBlock::text(text)])
        };
        result.structured_content = Some(structured);
        result
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

/// Agents as an MCP server. Cheap to clone (one per HTTP session).
#[derive(Clone, Debug)]
pub struct AgentServer {
    agents: Arc<[ServedAgent]>,
}

impl AgentServer {
    /// A server offering these agents (tool names must be unique; the first wins).
    pub fn new(agents: Vec<ServedAgent>) -> Self {
        let mut unique: Vec<ServedAgent> = Vec::with_capacity(agents.len());
        for a in agents {
            if unique.iter().all(|u| u.name() != a.name()) {
                unique.push(a);
            }
        }
        Self {
            agents: unique.into(),
        }
    }

    /// The agent tools' names.
    pub fn tool_names(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.name().to_string()).collect()
    }
}

impl ServerHandler for AgentServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("kaos", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "kaos agents as tools: {}. Each takes {{message, session_id?}}.",
                self.tool_names().join(", ")
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.agents.iter().map(|a| a.tool.clone()).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.agents
            .iter()
            .find(|a| a.name() == name)
            .map(|a| a.tool.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let Some(agent) = self.agents.iter().find(|a| a.name() == request.name) else {
            return Err(ErrorData::invalid_params(
                format!(
                    "no agent tool named {:?}; available: {}",
                    request.name,
                    self.tool_names().join(", ")
                ),
                None,
            ));
        };
        let args = request.arguments.clone().unwrap_or_default();
        let Some(message) = args.get("message").and_then(Value::as_str) else {
            return Err(ErrorData::invalid_params(
                "the argument `message` (a string) is required",
                None,
            ));
        };
        let session_id = match args.get("session_id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            None | Some(Value::Null) => format!("mcp-{}", uuid::Uuid::new_v4().simple()),
            Some(other) => {
                return Err(ErrorData::invalid_params(
                    format!("`session_id` must be a non-empty string, got {other}"),
                    None,
                ));
            }
        };
        // Over HTTP with tokens, a tenant's sessions are its own (as with `kaos serve`).
        let tenant = context
            .extensions
            .get::<::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Tenant>());
        let store_session = match tenant {
            Some(t) => t.scoped(&session_id),
            None => session_id.clone(),
        };
        // The caller's trace context: `traceparent` and `tracestate` from the same `_meta`.
        let meta = request
            .meta
            .as_ref()
            .filter(|m| m.get_traceparent().is_some())
            .unwrap_or(&context.meta);
        let trace = (
            meta.get_traceparent().map(str::to_string),
            meta.get_tracestate().map(str::to_string),
        );
        let turn = agent.answer(message.to_string(), store_session, session_id, trace);
        let result = tokio::select! {
            r = turn => r,
            _ = context.ct.cancelled() => CallToolResult::error(vec![ContentBlock::text(
                "the request was cancelled; the turn was stopped",
            )]),
        };
        Ok(result.into())
    }
}

/// Serves `server` over this process's stdin/stdout until the client disconnects.
pub async fn serve_stdio(server: AgentServer) -> Result<(), std::io::Error> {
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| std::io::Error::other(format!("MCP initialize over stdio failed: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| std::io::Error::other(format!("the MCP stdio service stopped: {e}")))?;
    Ok(())
}
