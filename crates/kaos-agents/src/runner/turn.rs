//! One turn from start to end: lock and load the session, open the turn, classify the
//! intent, hand the message to a pattern (respond, tool loop, plan) — or, for a resumed
//! run, to the resume continuation — and end the turn the way the pattern says.

use std::sync::Arc;

use kaos_llm::LlmError;
use serde_json::Value;

use super::RunOptions;
use super::prompts::{self, CLARIFY_NOTE, CLASSIFIER};
use super::run_state::{Approval, RunState};
use super::shared::Shared;
use super::state::{Failure, Outcome, Turn};
use super::{plan, resume, tool_loop};
use crate::agent::AgentPattern;
use crate::attrs;
use crate::events::{EventKind, Intent, TurnSummary};
use crate::message_parts;
use crate::scope::TurnScope;
use crate::session::{RunStatus, Session, SessionLease, StoreError, StoreErrorKind};

/// Most characters of recent conversation the intent classifier sees.
const CLASSIFIER_CONTEXT_CHARS: usize = 2_000;

/// Runs one turn to its end, emitting every event through `scope`. `None` when the turn
/// failed before it could start (its failed summary was still emitted).
///
/// The turn holds its session's lease from the load to the commit, so turns on one session
/// serialize across processes and replicas sharing the store; a session with a paused run
/// takes no new turn until the run is resumed or abandoned (`session_paused`).
pub(crate) async fn run_turn(
    shared: Arc<Shared>,
    scope: TurnScope,
    message: String,
    options: RunOptions,
) -> Option<TurnSummary> {
    let lock = shared.session_lock(scope.session_id());
    let _guard = lock.lock().await;
    let (session, lease, mut failure) = begin_session(&shared, &scope).await;
    if failure.is_none() {
        failure = paused_failure(&session);
    }
    let turn_number = session.turn_count + 1;
    let mut start = attrs! {"turn_number" => turn_number, "model" => shared.agent.model.as_str()};
    if let Some(tp) = options.traceparent {
        start.insert("traceparent".into(), Value::String(tp));
        if let Some(ts) = options.tracestate {
            start.insert("tracestate".into(), Value::String(ts));
        }
    }
    // The agent span's input, for a hook that records content (built only then).
    if scope.hooks().captures_content() {
        start.insert(
            message_parts::INPUT_MESSAGES.into(),
            message_parts::user_input(&message),
        );
    }
    let store = shared.runtime.store().clone();
    let mut turn = match Turn::start(
        shared,
        scope,
        session,
        turn_number,
        start,
        message.clone(),
        failure,
    ) {
        Ok(turn) => turn,
        Err(_) => {
            release(&store, lease).await;
            return None;
        }
    };
    if let Some(lease) = lease {
        turn.hold(lease);
    }
    let outcome = dispatch(&mut turn, &message).await;
    Some(turn.finish(outcome).await)
}

/// Continues the paused run `run_id` of the scope's session as a new run (its turn START
/// carries `resumed_from`). The run is claimed in the store — durably, before anything
/// runs — so it is resumed at most once; a claim that never finished is refused as in doubt
/// unless `force`. An agent whose tools or permissions differ from the paused one's is
/// refused, naming the difference.
pub(crate) async fn run_resumed(
    shared: Arc<Shared>,
    scope: TurnScope,
    run_id: String,
    approval: Approval,
    force: bool,
    options: RunOptions,
) -> Option<TurnSummary> {
    let lock = shared.session_lock(scope.session_id());
    let _guard = lock.lock().await;
    let (session, lease, mut failure) = begin_session(&shared, &scope).await;
    let store = shared.runtime.store().clone();
    let mut state = None;
    if failure.is_none() {
        match find_run(&shared, &session, &run_id, force).await {
            Ok(s) => state = Some(s),
            Err(f) => failure = Some(f),
        }
    }
    let turn_number = state
        .as_ref()
        .map_or(session.turn_count + 1, |s| s.turn_number);
    let mut start = attrs! {
        "turn_number" => turn_number,
        "model" => shared.agent.model.as_str(),
        "resumed_from" => run_id.as_str(),
    };
    // The paused turn's span, for the link (another process may have traced it).
    if let Some(tp) = state.as_ref().and_then(|s| s.traceparent.clone()) {
        start.insert("resumed_traceparent".into(), Value::String(tp));
    }
    if let Some(tp) = options.traceparent {
        start.insert("traceparent".into(), Value::String(tp));
        if let Some(ts) = options.tracestate {
            start.insert("tracestate".into(), Value::String(ts));
        }
    }
    if let (Some(_), None) = (&state, &failure) {
        // The claim is committed before the approved call runs: a second resume, here or
        // in another process, is refused from now on.
        if let Err(e) = store
            .claim_run(
                scope.session_id(),
                &run_id,
                &claimant(scope.run_id()),
                force,
            )
            .await
        {
            failure = Some(claim_failure(&e));
        }
    }
    let message = state
        .as_ref()
        .map(|s| s.original_message.clone())
        .unwrap_or_default();
    let mut turn = match Turn::start(shared, scope, session, turn_number, start, message, failure) {
        Ok(turn) => turn,
        Err(_) => {
            release(&store, lease).await;
            return None;
        }
    };
    if let Some(lease) = lease {
        turn.hold(lease);
    }
    turn.resuming(run_id);
    let state = state?;
    let outcome = resume::run(&mut turn, state, approval).await;
    Some(turn.finish(outcome).await)
}

/// Takes the scope's session (its lease, waiting up to the runtime's session wait): the
/// session as committed, the lease, and the failure when it could not be taken.
async fn begin_session(
    shared: &Shared,
    scope: &TurnScope,
) -> (Session, Option<SessionLease>, Option<Failure>) {
    let id = scope.session_id();
    match shared
        .runtime
        .store()
        .begin(id, shared.runtime.session_wait())
        .await
    {
        Ok((lease, session)) => (session, Some(lease), None),
        Err(e) if e.kind == StoreErrorKind::Busy => (
            Session::new(id.to_string()),
            None,
            Some(Failure::new(
                "session_busy",
                &e.message,
                "Another turn on this session is still running; retry when it ends, or raise the session wait (--session-wait).",
            )),
        ),
        Err(e) => (
            Session::new(id.to_string()),
            None,
            Some(Failure::store(&e.message)),
        ),
    }
}

async fn release(store: &Arc<dyn crate::session::SessionStore>, lease: Option<SessionLease>) {
    if let Some(lease) = lease {
        let _ = store.release(lease).await;
    }
}

/// `session_paused` when the session has a run waiting for approval or in doubt.
fn paused_failure(session: &Session) -> Option<Failure> {
    let id = &session.id;
    if let Some((run_id, state)) = session.pending_runs.iter().next() {
        let tool = state
            .pointer("/pending_call/name")
            .and_then(Value::as_str)
            .unwrap_or("a tool");
        return Some(Failure::new(
            "session_paused",
            &format!(
                "session {id:?} has paused run {run_id} waiting for approval of `{tool}`; a new turn would interleave with it"
            ),
            &format!(
                "Approve it with `kaos resume {run_id} --session {id}`, deny it with `kaos resume {run_id} --session {id} --deny REASON`, or drop it with `--abandon` (Runner::resume / Runner::abandon); then send the message again."
            ),
        ));
    }
    let run_id = session.runs_in_doubt.first()?;
    Some(Failure::new(
        "session_paused",
        &format!(
            "session {id:?} has run {run_id} claimed by a resume that never finished (in doubt: its tool call may have run)"
        ),
        &format!(
            "Run `kaos resume {run_id} --session {id} --force` to run the call again, or `kaos resume {run_id} --session {id} --abandon` to drop it."
        ),
    ))
}

/// The paused run `run_id` of `session`, checked against this runner's agent.
async fn find_run(
    shared: &Shared,
    session: &Session,
    run_id: &str,
    force: bool,
) -> Result<RunState, Failure> {
    let value = match session.pending_runs.get(run_id) {
        Some(v) => v.clone(),
        None => {
            // Not pending: report why (resumed, abandoned, in doubt) from the store.
            let runs = shared
                .runtime
                .store()
                .runs(&session.id)
                .await
                .map_err(|e| Failure::store(&e.message))?;
            match runs.into_iter().find(|r| r.run_id == run_id) {
                Some(r) if force && r.status == RunStatus::Claimed => r.state,
                Some(r) => return Err(claim_failure(&StoreError::not_claimable(&r))),
                None => {
                    return Err(claim_failure(&StoreError::run_not_found(
                        &session.id,
                        run_id,
                    )));
                }
            }
        }
    };
    let state: RunState = serde_json::from_value(value).map_err(|e| {
        Failure::new(
            "run_state_not_found",
            &format!("the paused run {run_id} has a corrupt state: {e}"),
            "Abandon it (`kaos resume RUN --session S --abandon`).",
        )
    })?;
    if let Some(difference) = agent_difference(shared, &state) {
        return Err(Failure::new(
            "agent_changed",
            &format!(
                "paused run {run_id} of session {:?} paused with a different agent: {difference}",
                session.id
            ),
            &format!(
                "Resume it with the agent (file) it paused with, or drop it with `kaos resume {run_id} --session {} --abandon`.",
                session.id
            ),
        ));
    }
    Ok(state)
}

/// How this runner's agent differs from the paused run's in what it may call: tool globs,
/// the tools it sees, permission rules. `None` when they agree.
fn agent_difference(shared: &Shared, state: &RunState) -> Option<String> {
    let mut out = Vec::new();
    let (then, now) = (&state.agent, &*shared.agent);
    if then.tools != now.tools {
        out.push(format!("tools {:?} then, {:?} now", then.tools, now.tools));
    }
    let tools_now: Vec<String> = shared.tool_defs.iter().map(|d| d.name.clone()).collect();
    if let Some(tools_then) = &state.tool_names
        && *tools_then != tools_now
    {
        out.push(format!("tool set {tools_then:?} then, {tools_now:?} now"));
    }
    if then.permissions != now.permissions {
        let show = |rules: &[crate::agent::RuleConfig]| {
            serde_json::to_string(rules).unwrap_or_else(|_| format!("{} rules", rules.len()))
        };
        out.push(format!(
            "permissions {} then, {} now",
            show(&then.permissions),
            show(&now.permissions)
        ));
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// The turn failure for a refused claim.
fn claim_failure(e: &StoreError) -> Failure {
    match e.kind {
        StoreErrorKind::AlreadyResumed => Failure::new(
            "run_already_resumed",
            &e.message,
            "Nothing to do: the run was resumed (or abandoned) once already.",
        ),
        StoreErrorKind::InProgress => Failure::new(
            "run_in_doubt",
            &e.message,
            "If no resume is running, choose: --force runs the call again, --abandon drops it.",
        ),
        StoreErrorKind::NotFound => Failure::new(
            "run_state_not_found",
            &e.message,
            "List the session's paused runs (Runner::pending_runs) and resume one of those.",
        ),
        _ => Failure::store(&e.message),
    }
}

/// Who claims a run: this host, process and run.
fn claimant(run_id: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("host {host} pid {} run {run_id}", std::process::id())
}

/// Classifies the message and runs the pattern its intent calls for.
async fn dispatch(turn: &mut Turn, message: &str) -> Outcome {
    // Intent depends on the recent exchange: the classifier sees a short window.
    let context = turn
        .session
        .render_history(CLASSIFIER_CONTEXT_CHARS.min(turn.shared.agent.history_budget_chars));
    turn.session.push_message("user", message);
    let intent = match classify(turn, message, &context).await {
        Ok(intent) => intent,
        Err(e) => return Outcome::Failed(Failure::llm(&e)),
    };
    turn.set_intent(Some(intent));
    if let Some(failure) = turn.halt() {
        return Outcome::Failed(failure);
    }
    match intent {
        Intent::Respond | Intent::Research => respond(turn, message, None).await,
        Intent::Clarify => respond(turn, message, Some(CLARIFY_NOTE)).await,
        Intent::ToolUse => tool_loop::run(turn, message).await,
        Intent::Plan if turn.shared.agent.pattern == AgentPattern::Plan => {
            plan::run(turn, message).await
        }
        Intent::Plan => {
            turn.scope.emit(EventKind::PatternMismatch {
                classified_intent: Intent::Plan,
                agent_pattern: AgentPattern::Chat.as_str().into(),
                recommended_pattern: AgentPattern::Plan.as_str().into(),
                fallback: "tool_loop".into(),
            });
            tool_loop::run(turn, message).await
        }
    }
}

/// The typed intent classification (the keyword heuristic when the output is unusable).
async fn classify(turn: &mut Turn, message: &str, context: &str) -> Result<Intent, LlmError> {
    let context = if context.is_empty() {
        "(no prior messages)"
    } else {
        context
    };
    let catalog = turn.shared.tool_catalog.clone();
    let inputs = [
        ("message", message),
        ("conversation_context", context),
        ("available_tools", catalog.as_str()),
    ];
    match turn
        .typed_call("intent_classification", &CLASSIFIER, &inputs)
        .await
    {
        Ok(out) => {
            let v = out.value;
            let confidence = v.confidence.clamp(0.0, 1.0);
            turn.scope.emit(EventKind::IntentClassified {
                intent: v.intent,
                confidence,
                reasoning: v.reasoning,
            });
            turn.emit_usage(
                &out.usage,
                out.cost_usd,
                &out.model,
                "intent_classification",
            );
            Ok(v.intent)
        }
        Err(LlmError::InvalidOutput { usage, .. }) => {
            let (intent, confidence, reasoning) = prompts::heuristic_intent(message, false);
            turn.scope.emit(EventKind::IntentClassified {
                intent,
                confidence,
                reasoning,
            });
            let model = turn.model();
            let cost = kaos_llm::pricing::cost_usd(&model, &usage);
            turn.emit_usage(&usage, cost, &model, "intent_classification");
            Ok(intent)
        }
        Err(e) => Err(e),
    }
}

/// The respond pattern: one typed call over the conversation history.
async fn respond(turn: &mut Turn, message: &str, note: Option<&str>) -> Outcome {
    let budget = turn.shared.agent.history_budget_chars;
    let mut history = String::with_capacity(budget.min(1 << 16) + 32);
    history.push_str("=== MESSAGES ===\n");
    turn.session.write_history(&mut history, budget);
    let message = match note {
        Some(note) => format!("{message}\n\n({note})"),
        None => message.to_string(),
    };
    let inputs = [
        ("message", message.as_str()),
        ("conversation_history", history.as_str()),
    ];
    let respond = turn.shared.respond.clone();
    let text = match turn
        .streamed_typed_call(
            "respond",
            &respond,
            &inputs,
            "response",
            |out| out.response.as_str(),
            true,
        )
        .await
    {
        Ok(out) => {
            turn.emit_usage(&out.usage, out.cost_usd, &out.model, "respond");
            out.value.response
        }
        Err(LlmError::InvalidOutput { raw, usage, .. }) => {
            // The model ignored the JSON format: its plain text is the answer.
            let model = turn.model();
            let cost = kaos_llm::pricing::cost_usd(&model, &usage);
            turn.emit_usage(&usage, cost, &model, "respond");
            raw.trim().to_string()
        }
        Err(e) => return Outcome::Failed(Failure::llm(&e)),
    };
    Outcome::Answer(text)
}
