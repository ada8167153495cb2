//! One turn from start to end: lock and load the session, open the turn, classify the
//! intent, hand the message to a pattern (respond, tool loop, plan) — or, for a resumed
//! run, to the resume continuation — and end the turn the way the pattern says.

use std::sync::Arc;

use kaos_llm::LlmError;
use serde_json::Value;

use super::prompts::{self, CLARIFY_NOTE, CLASSIFIER};
use super::run_state::{Approval, RunState};
use super::shared::Shared;
use super::state::{Failure, Outcome, Turn};
use super::{plan, resume, tool_loop};
use crate::agent::AgentPattern;
use crate::attrs;
use crate::events::{EventKind, Intent, TurnSummary};
use crate::scope::TurnScope;
use crate::session::Session;

/// Most characters of recent conversation the intent classifier sees.
const CLASSIFIER_CONTEXT_CHARS: usize = 2_000;

/// Runs one turn to its end, emitting every event through `scope`. `None` when the turn
/// failed before it could start (its failed summary was still emitted).
pub(crate) async fn run_turn(
    shared: Arc<Shared>,
    scope: TurnScope,
    message: String,
    traceparent: Option<String>,
) -> Option<TurnSummary> {
    let lock = shared.session_lock(scope.session_id());
    let _guard = lock.lock().await;
    let (session, load_error) = load_session(&shared, &scope).await;
    let turn_number = session.turn_count + 1;
    let mut start = attrs! {"turn_number" => turn_number, "model" => shared.agent.model.as_str()};
    if let Some(tp) = traceparent {
        start.insert("traceparent".into(), Value::String(tp));
    }
    let mut turn = Turn::start(
        shared,
        scope,
        session,
        turn_number,
        start,
        message.clone(),
        load_error,
    )
    .ok()?;
    let outcome = dispatch(&mut turn, &message).await;
    Some(turn.finish(outcome).await)
}

/// Continues the paused run `run_id` of the scope's session as a new run (its turn START
/// carries `resumed_from`). The stored state is removed before anything runs, so a run is
/// resumed at most once.
pub(crate) async fn run_resumed(
    shared: Arc<Shared>,
    scope: TurnScope,
    run_id: String,
    approval: Approval,
) -> Option<TurnSummary> {
    let lock = shared.session_lock(scope.session_id());
    let _guard = lock.lock().await;
    let (mut session, mut error) = load_session(&shared, &scope).await;
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
    let message = state
        .as_ref()
        .map(|s| s.original_message.clone())
        .unwrap_or_default();
    let mut turn = Turn::start(shared, scope, session, turn_number, start, message, None).ok()?;
    let Some(state) = state else {
        return Some(turn.fail(Failure::new(
            "run_state_not_found",
            error.as_deref().unwrap_or("no paused run state"),
            "List the session's paused runs (Runner::pending_runs) and resume one of those.",
        )));
    };
    let outcome = resume::run(&mut turn, state, approval).await;
    Some(turn.finish(outcome).await)
}

/// The scope's session from the store (a new one when there is none), and the load error.
async fn load_session(shared: &Shared, scope: &TurnScope) -> (Session, Option<String>) {
    match shared.runtime.store().load(scope.session_id()).await {
        Ok(Some(s)) => (s, None),
        Ok(None) => (Session::new(scope.session_id().to_string()), None),
        Err(e) => (
            Session::new(scope.session_id().to_string()),
            Some(e.message),
        ),
    }
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
