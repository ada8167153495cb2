//! [`Runner`]: the engine that drives an [`Agent`] through turns.
//!
//! [`Runner::run`] returns the turn as an [`EventStream`]; [`Runner::turn`] drains it into
//! an [`AgentResponse`]. One runner serves many sessions concurrently; two turns on the same
//! session are serialized. Dropping the stream mid-turn ends every open span as `cancelled`
//! (hooks see those events synchronously) and leaves the session as it was before the turn.
//!
//! Beyond single turns: [`Runner::delegate`] / [`agent_as_tool`] run a sub-agent nested in a
//! `subagent` span, [`Runner::handoff`] / [`handoff_tool`] hand a message to another agent
//! inside a `handoff` span, and [`Runner::resume`] continues a turn that paused for a tool
//! approval ([`RunState`] on the session). Agents with [`crate::AgentPattern::Plan`] run
//! `plan` intents as live plan-execute (see the `plan` module docs). A `TurnSummary`'s
//! tokens and cost include the turns of sub-agents it delegated to.

mod delegation;
mod plan;
mod prompts;
mod resume;
mod tool_loop;
mod turn;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use kaos_llm::ToolDefinition;
use kaos_llm::structured::Signature;
use serde_json::Value;

use crate::agent::Agent;
use crate::events::{Event, EventKind, Intent, ToolCallSummary, TurnOutcome};
use crate::hooks::{Hook, HookSet};
use crate::permissions::PermissionPolicy;
use crate::runtime::KaosRuntime;
use crate::scope::{TurnScope, new_run_id};
use crate::tools::Tool;

pub use delegation::{AgentTool, agent_as_tool, delegation_depth, handoff_tool};
pub use plan::{PlanProgress, PlanStepRecord};
pub use prompts::heuristic_intent;
pub use resume::{Approval, RunState, run_state_ref};

/// Per-run options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// A W3C `traceparent` to continue (placed on the turn START as attribute `traceparent`).
    pub traceparent: Option<String>,
}

#[derive(Clone)]
pub(crate) struct Shared {
    pub agent: Arc<Agent>,
    pub agent_name: Arc<str>,
    pub runtime: KaosRuntime,
    pub hooks: HookSet,
    pub policy: PermissionPolicy,
    pub config_error: Option<String>,
    pub tools: Vec<Arc<dyn Tool>>,
    pub tool_defs: Arc<[ToolDefinition]>,
    pub tool_catalog: String,
    pub respond: Signature<prompts::RespondOutput>,
}

impl Shared {
    pub(crate) fn tool(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// The lock that serializes turns on one session (shared by every runner on this
    /// runtime).
    fn session_lock(&self, session_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.runtime.session_lock(session_id)
    }
}

/// Drives an [`Agent`] against a [`KaosRuntime`]. Cheap to clone; clones share hooks.
#[derive(Clone)]
pub struct Runner {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("agent", &self.shared.agent.name)
            .field("hooks", &self.shared.hooks)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner for `agent` on `runtime`, with the agent's permission rules.
    pub fn new(agent: Agent, runtime: KaosRuntime) -> Self {
        let (policy, config_error) = match agent.permission_policy() {
            Ok(p) => (p, None),
            Err(e) => (PermissionPolicy::default(), Some(e.to_string())),
        };
        let tools = select_tools(&agent, &runtime);
        let tool_defs: Arc<[ToolDefinition]> = tools
            .iter()
            .map(|t| ToolDefinition {
                name: t.name().to_string(),
                description: t.description().to_string(),
                parameters: t.parameters().clone(),
            })
            .collect();
        let tool_catalog = tools
            .iter()
            .map(|t| format!("{}: {}", t.name(), t.description()))
            .collect::<Vec<_>>()
            .join("\n");
        let respond = prompts::respond_signature(&agent.instructions);
        Self {
            shared: Arc::new(Shared {
                agent_name: Arc::from(agent.name.as_str()),
                agent: Arc::new(agent),
                runtime,
                hooks: HookSet::default(),
                policy,
                config_error,
                tools,
                tool_defs,
                tool_catalog,
                respond,
            }),
        }
    }

    /// Adds a hook (after those already added).
    pub fn with_hook(self, hook: impl Hook + 'static) -> Self {
        self.with_shared_hook(Arc::new(hook))
    }

    /// Adds a shared hook (keep a clone of the `Arc` to inspect it later).
    pub fn with_shared_hook(mut self, hook: Arc<dyn Hook>) -> Self {
        Arc::make_mut(&mut self.shared).hooks.push(hook);
        self
    }

    /// Replaces the permission policy built from the agent's rules.
    pub fn with_policy(mut self, policy: PermissionPolicy) -> Self {
        Arc::make_mut(&mut self.shared).policy = policy;
        self
    }

    /// The agent.
    pub fn agent(&self) -> &Agent {
        &self.shared.agent
    }

    /// The runtime.
    pub fn runtime(&self) -> &KaosRuntime {
        &self.shared.runtime
    }

    /// The hooks.
    pub fn hooks(&self) -> &HookSet {
        &self.shared.hooks
    }

    /// Runs one turn and returns its event stream.
    pub fn run(&self, message: impl Into<String>, session_id: impl Into<String>) -> EventStream {
        self.run_with(message, session_id, RunOptions::default())
    }

    /// Runs one turn with options.
    pub fn run_with(
        &self,
        message: impl Into<String>,
        session_id: impl Into<String>,
        options: RunOptions,
    ) -> EventStream {
        let shared = self.shared.clone();
        let message = message.into();
        self.stream(session_id.into(), move |scope| async move {
            turn::run_turn(shared, scope, message, options).await;
        })
    }

    /// A new root run on `session_id` whose body is `body(scope)`, as an event stream.
    pub(crate) fn stream<F, Fut>(&self, session_id: String, body: F) -> EventStream
    where
        F: FnOnce(TurnScope) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let scope = TurnScope::new(
            Arc::from(session_id),
            new_run_id(),
            self.shared.agent_name.clone(),
            self.shared.hooks.clone(),
        );
        let fut = body(scope.clone());
        EventStream {
            scope,
            fut: Some(Box::pin(fut)),
        }
    }

    /// Runs one turn inside another run's scope (a sub-agent or handoff target): the events
    /// go through that run's hooks and stream, nested under `parent_span_id`. Dropping the
    /// future before it ends closes the nested run's open spans as `cancelled`.
    pub fn run_nested(
        &self,
        parent: &TurnScope,
        parent_span_id: Arc<str>,
        message: impl Into<String>,
        session_id: impl Into<String>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let scope = TurnScope::nested(
            parent,
            parent_span_id,
            Arc::from(session_id.into()),
            self.shared.agent_name.clone(),
        );
        let guard_scope = scope.clone();
        let fut = turn::run_turn(
            self.shared.clone(),
            scope,
            message.into(),
            RunOptions::default(),
        );
        async move {
            let mut guard = delegation::CancelOnDrop(Some(guard_scope));
            fut.await;
            guard.disarm();
        }
    }

    /// Runs one turn and collects it into an [`AgentResponse`]. A turn that failed (e.g.
    /// the provider rejected the key) is an `Err` carrying the error and the partial
    /// response; a paused turn is `Ok` with [`AgentResponse::pending_approval`] set.
    pub async fn turn(
        &self,
        message: impl Into<String>,
        session_id: impl Into<String>,
    ) -> Result<AgentResponse, TurnError> {
        let session_id = session_id.into();
        let events: Vec<Event> = self.run(message, session_id.clone()).collect().await;
        AgentResponse::from_events(&events, &session_id)
    }
}

fn select_tools(agent: &Agent, runtime: &KaosRuntime) -> Vec<Arc<dyn Tool>> {
    let all = runtime.tools().all();
    if agent.tools.is_empty() {
        return all.to_vec();
    }
    let mut builder = globset::GlobSetBuilder::new();
    for glob in &agent.tools {
        if let Ok(g) = globset::Glob::new(glob) {
            builder.add(g);
        }
    }
    match builder.build() {
        Ok(set) => all
            .iter()
            .filter(|t| set.is_match(t.name()))
            .cloned()
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A turn as a stream of events. Dropping it before the end cancels the turn: every open
/// span ends as `cancelled` (the hooks see it) and the session is not changed.
pub struct EventStream {
    scope: TurnScope,
    fut: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("scope", &self.scope)
            .field("running", &self.fut.is_some())
            .finish()
    }
}

impl EventStream {
    /// The run's id.
    pub fn run_id(&self) -> &Arc<str> {
        self.scope.run_id()
    }

    /// The run's scope.
    pub fn scope(&self) -> &TurnScope {
        &self.scope
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        if let Some(event) = this.scope.pop() {
            return Poll::Ready(Some(event));
        }
        if let Some(fut) = this.fut.as_mut()
            && fut.as_mut().poll(cx).is_ready()
        {
            this.fut = None;
            // Defensive: a turn must end its spans; if one is left, end it here.
            this.scope
                .cancel_open("the turn ended with this span still open");
        }
        match this.scope.pop() {
            Some(event) => Poll::Ready(Some(event)),
            None if this.fut.is_none() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            drop(fut);
            self.scope
                .cancel_open("the turn was cancelled (its event stream was dropped)");
        }
    }
}

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
                EventKind::TextDelta { content } => deltas.push_str(content),
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
