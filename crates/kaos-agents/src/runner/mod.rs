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
//!
//! Inside, dependencies point one way: `turn` (load, classify, dispatch, end) → the
//! patterns (`tool_loop`, `plan`, `resume`, each returning an `Outcome`) → `tool_call` (one
//! guarded tool call) → `state` (the running turn's one data type and its model calls) →
//! `shared` / `run_state` (configuration and persisted pause data).

mod budget;
mod delegation;
mod plan;
mod prompts;
mod response;
mod resume;
mod run_state;
mod shared;
mod state;
mod tool_call;
mod tool_loop;
mod turn;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};

use crate::agent::Agent;
use crate::events::Event;
use crate::hooks::{Hook, HookSet};
use crate::permissions::PermissionPolicy;
use crate::runtime::KaosRuntime;
use crate::scope::{TurnScope, new_run_id};

use delegation::Kind;
pub use delegation::{AgentTool, agent_as_tool, delegation_depth, handoff_tool};
pub use prompts::heuristic_intent;
pub use response::{AgentResponse, IntentResult, PendingApproval, RunFailure, TurnError};
pub use run_state::{Approval, PlanProgress, PlanStepRecord, RunState, run_state_ref};
use shared::Shared;

/// Per-run options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// A W3C `traceparent` to continue (placed on the turn START as attribute `traceparent`).
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that came with it (attribute `tracestate`; used only with a
    /// valid `traceparent`).
    pub tracestate: Option<String>,
}

/// Drives an [`Agent`] against a [`KaosRuntime`]. Cheap to clone; clones share hooks.
#[derive(Clone)]
pub struct Runner {
    shared: Arc<Shared>,
    /// `shared` with the tools selected again after a tool source changed.
    refreshed: Arc<std::sync::Mutex<Option<Arc<Shared>>>>,
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
        Self {
            shared: Arc::new(Shared::new(agent, runtime)),
            refreshed: Arc::default(),
        }
    }

    /// The configuration for a new run: as built, or with the tools selected again when a
    /// tool source (e.g. an MCP server's `tools/list_changed`) changed since.
    fn current(&self) -> Arc<Shared> {
        let generation = self.shared.runtime.tools_generation();
        if generation == self.shared.tools_generation {
            return self.shared.clone();
        }
        let mut cache = self
            .refreshed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = cache.as_ref()
            && s.tools_generation == generation
        {
            return s.clone();
        }
        let fresh = Arc::new(self.shared.with_fresh_tools());
        *cache = Some(fresh.clone());
        fresh
    }

    /// Adds a hook (after those already added).
    pub fn with_hook(self, hook: impl Hook + 'static) -> Self {
        self.with_shared_hook(Arc::new(hook))
    }

    /// Adds a shared hook (keep a clone of the `Arc` to inspect it later).
    pub fn with_shared_hook(mut self, hook: Arc<dyn Hook>) -> Self {
        Arc::make_mut(&mut self.shared).hooks.push(hook);
        self.refreshed = Arc::default();
        self
    }

    /// Replaces the permission policy built from the agent's rules.
    pub fn with_policy(mut self, policy: PermissionPolicy) -> Self {
        Arc::make_mut(&mut self.shared).policy = policy;
        self.refreshed = Arc::default();
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
        let shared = self.current();
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
            #[cfg(feature = "otel")]
            parent: caller_context(&self.shared.hooks),
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
        let fut = turn::run_turn(self.current(), scope, message.into(), RunOptions::default());
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

impl Runner {
    /// Continues the paused run `run_id` of session `session_id` as a new run (its turn
    /// START carries `resumed_from` = the paused run's id). With [`Approval::Approve`] the
    /// pending call runs exactly once, bypassing the approval gate for that call id only;
    /// with [`Approval::Deny`] the model gets a denial as the call's result. The tool loop
    /// then continues where it stopped. The run is claimed in the store (durably) before
    /// anything runs, so it is resumed at most once, here or in any process sharing the
    /// store: a second resume ends with `run_already_resumed`, or `run_in_doubt` while the
    /// claim is unfinished. A runner whose agent's tools or permissions differ from the
    /// paused one's is refused (`agent_changed`, naming the difference).
    pub fn resume(
        &self,
        run_id: impl Into<String>,
        session_id: impl Into<String>,
        approval: Approval,
    ) -> EventStream {
        self.resume_with(run_id, session_id, approval, false)
    }

    /// [`resume`](Self::resume); with `force`, a run left claimed by a resume that never
    /// finished (in doubt: its call may already have run) is claimed again and its call runs.
    pub fn resume_with(
        &self,
        run_id: impl Into<String>,
        session_id: impl Into<String>,
        approval: Approval,
        force: bool,
    ) -> EventStream {
        self.resume_with_options(run_id, session_id, approval, force, RunOptions::default())
    }

    /// [`resume_with`](Self::resume_with) with run options: a `traceparent` (and its
    /// `tracestate`) makes the resumed turn a child of the caller's span; it links to the
    /// paused turn either way.
    pub fn resume_with_options(
        &self,
        run_id: impl Into<String>,
        session_id: impl Into<String>,
        approval: Approval,
        force: bool,
        options: RunOptions,
    ) -> EventStream {
        let shared = self.current();
        let run_id = run_id.into();
        self.stream(session_id.into(), move |scope| async move {
            turn::run_resumed(shared, scope, run_id, approval, force, options).await;
        })
    }

    /// Drops the paused (or in-doubt) run `run_id` without running its call: it becomes
    /// `abandoned`, and the session takes new turns again.
    pub async fn abandon(
        &self,
        run_id: &str,
        session_id: &str,
    ) -> Result<crate::session::PausedRun, crate::session::StoreError> {
        self.shared
            .runtime
            .store()
            .settle_run(session_id, run_id, crate::session::RunStatus::Abandoned)
            .await
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

    /// Runs `agent` on `task` as a sub-agent of this runner's agent, as a stream: a
    /// `Span(subagent)` run by this agent, with the sub-agent's turn nested inside it
    /// (session `{session_id}/subagent-{name}`, this runner's hooks and runtime).
    pub fn delegate(
        &self,
        agent: Agent,
        task: impl Into<String>,
        session_id: impl Into<String>,
    ) -> EventStream {
        let session_id: String = session_id.into();
        let child_session = format!("{session_id}/subagent-{}", agent.name);
        self.wrapped_stream(
            agent,
            Kind::Subagent,
            task.into(),
            session_id,
            child_session,
            String::new(),
        )
    }

    /// Hands `message` to `target`: a `Span(handoff)` (attributes `from_agent`, `to_agent`,
    /// `reason`) with the target's turn nested inside, on the same session.
    pub fn handoff(
        &self,
        target: Agent,
        message: impl Into<String>,
        session_id: impl Into<String>,
        reason: impl Into<String>,
    ) -> EventStream {
        let session_id: String = session_id.into();
        self.wrapped_stream(
            target,
            Kind::Handoff,
            message.into(),
            session_id.clone(),
            session_id,
            reason.into(),
        )
    }

    fn wrapped_stream(
        &self,
        agent: Agent,
        kind: Kind,
        message: String,
        session_id: String,
        child_session: String,
        reason: String,
    ) -> EventStream {
        let mut target = Shared::new(agent, self.shared.runtime.clone());
        // The nested scope dispatches to this runner's hooks; keep the target's hook list
        // consistent for anything it builds.
        target.hooks = self.shared.hooks.clone();
        let target = Arc::new(target);
        self.stream(session_id, move |s| async move {
            let name = target.agent.name.clone();
            delegation::run_wrapped(&s, &target, kind, &name, &message, &child_session, &reason)
                .await;
        })
    }
}

/// A turn as a stream of events. Dropping it before the end cancels the turn: every open
/// span ends as `cancelled` (the hooks see it) and the session is not changed.
pub struct EventStream {
    scope: TurnScope,
    fut: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The caller's OTel context where the run was made ([`crate::otel::ambient_context`]),
    /// current while the turn is polled until its first event is out: the turn's span is
    /// the child of the span that called `run`, even when the stream is polled elsewhere
    /// (an axum handler that returns `Sse::new(runner.run(..))` is polled by the server).
    #[cfg(feature = "otel")]
    parent: Option<opentelemetry::Context>,
}

/// The caller's OTel context, when there are hooks and it holds a span (else nothing to
/// keep, and nothing to attach on each poll).
#[cfg(feature = "otel")]
fn caller_context(hooks: &HookSet) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::TraceContextExt as _;
    if hooks.is_empty() {
        return None;
    }
    let cx = crate::otel::ambient_context();
    cx.span().span_context().is_valid().then_some(cx)
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

    /// Cancels the turn now: ends every open span as `cancelled` with `reason`, then drops
    /// the turn's work (its tool futures). Events not yet taken stay readable; the stream
    /// then ends.
    pub fn cancel(&mut self, reason: &str) {
        if let Some(fut) = self.fut.take() {
            self.scope.cancel_open(reason);
            drop(fut);
        }
    }

    /// Cuts the turn short with an error: [`EventStream::cancel`] with `message`, then a
    /// `RunError` (`error_type`, `message`, `recovery_hint`). Returns the events not yet
    /// taken from the stream, that error last.
    pub fn abort(mut self, error_type: &str, message: &str, recovery_hint: &str) -> Vec<Event> {
        self.cancel(message);
        self.scope.emit(crate::events::EventKind::RunError {
            error_type: error_type.to_string(),
            message: message.to_string(),
            recovery_hint: recovery_hint.to_string(),
        });
        std::iter::from_fn(|| self.scope.pop()).collect()
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        if let Some(event) = this.scope.pop() {
            #[cfg(feature = "otel")]
            {
                this.parent = None; // The turn's START is out: its span has its parent.
            }
            return Poll::Ready(Some(event));
        }
        #[cfg(feature = "otel")]
        let _caller = this.parent.as_ref().map(|p| p.clone().attach());
        if let Some(fut) = this.fut.as_mut()
            && fut.as_mut().poll(cx).is_ready()
        {
            this.fut = None;
            // Defensive: a turn must end its spans; if one is left, end it here.
            this.scope
                .cancel_open("the turn ended with this span still open");
        }
        match this.scope.pop() {
            Some(event) => {
                #[cfg(feature = "otel")]
                {
                    this.parent = None;
                }
                Poll::Ready(Some(event))
            }
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
