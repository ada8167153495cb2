//! Delegation and handoff.
//!
//! * [`agent_as_tool`] turns an agent into a tool (`{task}`): called inside a turn it opens
//!   `Span(subagent)` under the calling tool_call span and runs the sub-agent's whole turn
//!   nested inside it (child session `{parent}/subagent-{name}`, the parent's hooks, events
//!   forwarded into the parent's stream). The sub-agent's tokens and cost are reported
//!   through [`ToolContext::report_nested_usage`] and the calling turn adds them to its
//!   `TurnSummary` (its `UsageObserved` events stay in the sub-agent's run, so per-call
//!   accounting never double counts).
//! * [`Runner::delegate`](crate::Runner::delegate) runs a sub-agent directly as a stream (subagent span around a
//!   nested turn); [`Runner::handoff`](crate::Runner::handoff) hands a message to another agent (handoff span around
//!   the target's nested turn, same session); [`handoff_tool`] is the tool form
//!   (`handoff_to_{name}`, child session `{parent}/handoff-{name}` because the parent turn
//!   holds its own session).
//!
//! Nesting depth is counted per task; past the limit (default 3,
//! [`Agent::max_delegation_depth`]) the tool answers with an error result instead of running.

use std::sync::Arc;

use serde_json::{Value, json};

use super::shared::Shared;
use super::tool_call::{RESULT_SUMMARY_CHARS, truncate_chars};
use super::turn;
use crate::agent::Agent;
use crate::attrs;
use crate::events::{SpanError, SpanPhase, SpanSubject, TurnOutcome, TurnSummary};
use crate::runtime::KaosRuntime;
use crate::scope::{TurnScope, new_run_id};
use crate::tools::{Tool, ToolContext, ToolOutput};

tokio::task_local! {
    static DEPTH: u32;
}

/// How many delegations/handoffs enclose the current task (0 at top level).
pub fn delegation_depth() -> u32 {
    DEPTH.try_with(|d| *d).unwrap_or(0)
}

/// Whether a delegation is a sub-agent call or a handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Subagent,
    Handoff,
}

/// Ends a nested run's open spans (as `cancelled`) if the future driving it is dropped
/// before the run ends: a tool timeout, or the parent's stream being dropped.
pub(crate) struct CancelOnDrop(pub(crate) Option<TurnScope>);

impl CancelOnDrop {
    /// The nested run ended normally: nothing to cancel.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(scope) = self.0.take() {
            scope.cancel_open("the enclosing call was cancelled before the nested turn ended");
        }
    }
}

/// Runs `target`'s turn nested in `scope` inside a subagent/handoff span (child of the
/// scope's innermost open span). Returns the nested turn's summary.
pub(crate) async fn run_wrapped(
    scope: &TurnScope,
    target: &Arc<Shared>,
    kind: Kind,
    name: &str,
    message: &str,
    session_id: &str,
    reason: &str,
) -> Option<TurnSummary> {
    let (subject, attrs) = match kind {
        Kind::Subagent => (
            SpanSubject::Subagent,
            attrs! {"subagent_name" => name, "task" => message},
        ),
        Kind::Handoff => (
            SpanSubject::Handoff,
            attrs! {"from_agent" => scope.agent().as_ref(), "to_agent" => name, "reason" => reason},
        ),
    };
    let label = match kind {
        Kind::Subagent => format!("subagent.{name}"),
        Kind::Handoff => format!("handoff.{name}"),
    };
    let (span, _) = scope.start_span(subject, label, attrs);
    let nested = TurnScope::nested(
        scope,
        span.clone(),
        Arc::from(session_id),
        target.agent_name.clone(),
    );
    let depth = delegation_depth() + 1;
    let mut guard = CancelOnDrop(Some(nested.clone()));
    let fut = turn::run_turn(
        target.clone(),
        nested,
        message.to_string(),
        super::RunOptions::default(),
    );
    let summary = DEPTH.scope(depth, fut).await;
    guard.disarm();
    let (tokens, text, outcome) = summary
        .as_ref()
        .map_or((0, String::new(), TurnOutcome::Failed), |s| {
            (s.tokens_used, s.text.clone(), s.outcome)
        });
    let mut end = match kind {
        Kind::Subagent => attrs! {"subagent_name" => name},
        Kind::Handoff => attrs! {"from_agent" => scope.agent().as_ref(), "to_agent" => name},
    };
    end.insert(
        "result_summary".into(),
        truncate_chars(&text, RESULT_SUMMARY_CHARS).into(),
    );
    end.insert("tokens_used".into(), tokens.into());
    let error = match outcome {
        TurnOutcome::Completed => None,
        TurnOutcome::Paused => Some(SpanError {
            error_type: "nested_paused".into(),
            message: format!("{name} paused for a tool approval; nested approval is not supported"),
        }),
        TurnOutcome::Failed => Some(SpanError {
            error_type: "nested_failed".into(),
            message: format!("the turn of {name} failed"),
        }),
    };
    let phase = if error.is_some() {
        SpanPhase::Error
    } else {
        SpanPhase::Complete
    };
    scope.end_span(&span, phase, end, error);
    summary
}

/// An agent callable as a tool (arguments `{task}`), built by [`agent_as_tool`].
pub struct AgentTool {
    agent: Agent,
    runtime: Option<KaosRuntime>,
    name: String,
    description: String,
    parameters: Value,
    kind: Kind,
    max_depth: u32,
}

impl std::fmt::Debug for AgentTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTool")
            .field("name", &self.name)
            .field("agent", &self.agent.name)
            .field("max_depth", &self.max_depth)
            .finish_non_exhaustive()
    }
}

/// Makes `agent` a tool named `name` that runs the agent's whole turn on `{task}` as a
/// nested sub-agent run. `runtime` is the sub-agent's runtime (tools, models); `None` uses
/// the calling turn's runtime. The depth limit is `agent.max_delegation_depth` (change it
/// with [`AgentTool::with_max_depth`]).
pub fn agent_as_tool(
    agent: Agent,
    runtime: Option<KaosRuntime>,
    name: impl Into<String>,
    description: impl Into<String>,
) -> AgentTool {
    AgentTool::build(
        agent,
        runtime,
        name.into(),
        description.into(),
        Kind::Subagent,
    )
}

/// A tool `handoff_to_{agent.name}` that hands the conversation's task to `agent`: a
/// handoff span with the target's turn nested inside (session `{parent}/handoff-{name}`).
pub fn handoff_tool(
    agent: Agent,
    runtime: Option<KaosRuntime>,
    description: impl Into<String>,
) -> AgentTool {
    let name = format!("handoff_to_{}", agent.name.replace(['-', ' '], "_"));
    AgentTool::build(agent, runtime, name, description.into(), Kind::Handoff)
}

impl AgentTool {
    fn build(
        agent: Agent,
        runtime: Option<KaosRuntime>,
        name: String,
        description: String,
        kind: Kind,
    ) -> Self {
        Self {
            max_depth: agent.max_delegation_depth,
            agent,
            runtime,
            name,
            description,
            parameters: json!({
                "type": "object",
                "properties": {"task": {"type": "string", "description": "What the agent should do, self-contained."}},
                "required": ["task"]
            }),
            kind,
        }
    }

    /// Sets the most nested delegations allowed when this tool is called.
    pub fn with_max_depth(mut self, depth: u32) -> Self {
        self.max_depth = depth;
        self
    }
}

#[async_trait::async_trait]
impl Tool for AgentTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn parameters(&self) -> &Value {
        &self.parameters
    }
    async fn call(&self, arguments: Value, ctx: &ToolContext) -> ToolOutput {
        let Some(task) = arguments.get("task").and_then(Value::as_str) else {
            return ToolOutput::error(format!(
                "invalid arguments for tool {}: expected {{\"task\": string}}",
                self.name
            ));
        };
        let depth = delegation_depth();
        if depth >= self.max_depth {
            return ToolOutput::error(format!(
                "Delegation depth limit reached ({} nested delegations allowed); {} was not called. Do the task yourself or answer with what you have.",
                self.max_depth, self.agent.name
            ));
        }
        let calling = ctx
            .host()
            .and_then(|host| (host as &dyn std::any::Any).downcast_ref::<KaosRuntime>());
        let Some(runtime) = self.runtime.clone().or_else(|| calling.cloned()) else {
            return ToolOutput::error(format!(
                "{} has no runtime: pass one to agent_as_tool or call it inside a turn",
                self.name
            ));
        };
        let target = Arc::new(Shared::new(self.agent.clone(), runtime));
        let suffix = match self.kind {
            Kind::Subagent => "subagent",
            Kind::Handoff => "handoff",
        };
        let session = if ctx.session_id.is_empty() {
            format!("{suffix}-{}", self.agent.name)
        } else {
            format!("{}/{suffix}-{}", ctx.session_id, self.agent.name)
        };
        let detached;
        let scope = match ctx.scope() {
            Some(s) => s,
            None => {
                detached = TurnScope::new(
                    Arc::from(session.as_str()),
                    new_run_id(),
                    Arc::from(self.name.as_str()),
                    target.hooks.clone(),
                );
                &detached
            }
        };
        let summary = run_wrapped(
            scope,
            &target,
            self.kind,
            &self.agent.name,
            task,
            &session,
            "handoff tool",
        )
        .await;
        match summary {
            Some(s) => {
                ctx.report_nested_usage(
                    kaos_llm::Usage {
                        input_tokens: s.input_tokens,
                        output_tokens: s.output_tokens,
                        total_tokens: s.tokens_used,
                        ..Default::default()
                    },
                    s.cost_usd,
                );
                match s.outcome {
                    TurnOutcome::Completed => ToolOutput::text(s.text),
                    TurnOutcome::Paused => ToolOutput::error(format!(
                        "{} paused waiting for a tool approval; nested approval is not supported.",
                        self.agent.name
                    )),
                    TurnOutcome::Failed => {
                        ToolOutput::error(format!("The turn of {} failed.", self.agent.name))
                    }
                }
            }
            None => ToolOutput::error(format!("The turn of {} failed to start.", self.agent.name)),
        }
    }
}
