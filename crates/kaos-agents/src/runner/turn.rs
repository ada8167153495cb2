//! One CHAT-pattern turn: load the session, classify the intent, dispatch, persist, summarize.

use std::sync::Arc;

use kaos_llm::structured::{Signature, StructuredOutput, TypedOutcome};
use kaos_llm::{LlmClient, LlmError, LlmRequest, ProviderResponse, RequestOptions, Usage};
use serde_json::{Map, Value};

use super::prompts::{self, CLARIFY_NOTE, CLASSIFIER};
use super::{RunOptions, Shared};
use crate::agent::AgentPattern;
use crate::attrs;
use crate::events::{
    EventKind, Intent, SpanError, SpanPhase, SpanSubject, ToolCallSummary, TurnOutcome, TurnSummary,
};
use crate::scope::TurnScope;
use crate::session::Session;

/// Most characters of recent conversation the intent classifier sees.
const CLASSIFIER_CONTEXT_CHARS: usize = 2_000;

/// How a dispatch ended.
pub(crate) enum Dispatch {
    /// The answer text.
    Answer(String),
    /// A tool call waits for approval.
    Paused,
    /// The turn failed; the RunError was emitted.
    Failed,
}

/// The state of one running turn.
pub(crate) struct Turn {
    pub shared: Arc<Shared>,
    pub scope: TurnScope,
    pub session: Session,
    pub turn_span: Arc<str>,
    pub turn_number: u64,
    pub usage: Usage,
    pub cost: Option<f64>,
    pub tool_calls: Vec<ToolCallSummary>,
    pub intent: Option<Intent>,
    pub client: Option<Arc<dyn LlmClient>>,
    /// The user's message of this turn (kept for a paused run's state).
    pub message: String,
    /// A human's decision about one call id (set when resuming a paused run).
    pub approval: Option<(String, super::resume::Approval)>,
    /// The state to persist when the turn pauses (set by the tool loop).
    pub pending: Option<super::resume::RunState>,
    /// The turn's summary once emitted (read by nested callers).
    pub result: Option<TurnSummary>,
}

/// Runs one turn to its end, emitting every event through `scope`.
pub(crate) async fn run_turn(
    shared: Arc<Shared>,
    scope: TurnScope,
    message: String,
    options: RunOptions,
) -> Option<TurnSummary> {
    let lock = shared.session_lock(scope.session_id());
    let _guard = lock.lock().await;
    let loaded = shared.runtime.store().load(scope.session_id()).await;
    let (session, load_error) = match loaded {
        Ok(Some(s)) => (s, None),
        Ok(None) => (Session::new(scope.session_id().to_string()), None),
        Err(e) => (
            Session::new(scope.session_id().to_string()),
            Some(e.message),
        ),
    };
    let turn_number = session.turn_count + 1;
    let mut start = attrs! {"turn_number" => turn_number, "model" => shared.agent.model.as_str()};
    if let Some(tp) = options.traceparent {
        start.insert("traceparent".into(), Value::String(tp));
    }
    let mut turn = Turn::start(shared, scope, session, turn_number, start, load_error)?;
    turn.message = message.clone();
    turn.run(message).await
}

impl Turn {
    /// Opens the turn span and checks what every turn needs (store, config, model client).
    /// Returns `None` when the turn already failed (its summary was emitted).
    pub(crate) fn start(
        shared: Arc<Shared>,
        scope: TurnScope,
        session: Session,
        turn_number: u64,
        start: Map<String, Value>,
        load_error: Option<String>,
    ) -> Option<Turn> {
        let (turn_span, _) =
            scope.start_span(SpanSubject::Turn, format!("turn.{turn_number}"), start);
        let mut turn = Turn {
            shared,
            scope,
            session,
            turn_span,
            turn_number,
            usage: Usage::default(),
            cost: Some(0.0),
            tool_calls: Vec::new(),
            intent: None,
            client: None,
            message: String::new(),
            approval: None,
            pending: None,
            result: None,
        };
        if let Some(message) = load_error {
            turn.fail(
                "session_store_error",
                &message,
                "Check the session store (state directory permissions and disk).",
            );
            return None;
        }
        if let Some(message) = turn.shared.config_error.clone() {
            turn.fail("config_error", &message, "Fix the agent's configuration.");
            return None;
        }
        match turn.shared.runtime.client(&turn.shared.agent.model) {
            Ok(c) => turn.client = Some(c),
            Err(e) => {
                turn.fail_llm(&e);
                return None;
            }
        }
        Some(turn)
    }

    /// Ends the turn according to how its dispatch ended; returns the summary.
    pub(crate) async fn finish(mut self, dispatch: Dispatch) -> Option<TurnSummary> {
        match dispatch {
            Dispatch::Answer(text) => self.complete(text).await,
            Dispatch::Paused => self.pause().await,
            Dispatch::Failed => {}
        }
        self.result
    }

    fn client(&self) -> Result<Arc<dyn LlmClient>, LlmError> {
        self.client
            .clone()
            .ok_or_else(|| LlmError::Config("no model client".into()))
    }

    async fn run(mut self, message: String) -> Option<TurnSummary> {
        // Intent depends on the recent exchange: the classifier sees a short window.
        let context = self
            .session
            .render_history(CLASSIFIER_CONTEXT_CHARS.min(self.shared.agent.history_budget_chars));
        self.session.push_message("user", &message);
        let intent = match self.classify(&message, &context).await {
            Ok(intent) => intent,
            Err(e) => {
                self.fail_llm(&e);
                return self.result;
            }
        };
        self.intent = Some(intent);
        if self.halted() {
            return self.result;
        }
        let dispatch = match intent {
            Intent::Respond | Intent::Research => self.respond(&message, None).await,
            Intent::Clarify => self.respond(&message, Some(CLARIFY_NOTE)).await,
            Intent::ToolUse => self.tool_loop(&message).await,
            Intent::Plan if self.shared.agent.pattern == AgentPattern::Plan => {
                self.plan(&message).await
            }
            Intent::Plan => {
                self.scope.emit(EventKind::PatternMismatch {
                    classified_intent: Intent::Plan,
                    agent_pattern: AgentPattern::Chat.as_str().into(),
                    recommended_pattern: AgentPattern::Plan.as_str().into(),
                    fallback: "tool_loop".into(),
                });
                self.tool_loop(&message).await
            }
        };
        self.finish(dispatch).await
    }

    /// Whether a hook asked the run to stop; if so the turn is failed here.
    pub(crate) fn halted(&mut self) -> bool {
        match self.scope.halted() {
            Some(reason) => {
                self.fail("hook_halt", &reason, "A fail-closed hook (e.g. the audit trail) could not do its job; fix it and retry.");
                true
            }
            None => false,
        }
    }

    async fn classify(&mut self, message: &str, context: &str) -> Result<Intent, LlmError> {
        let context = if context.is_empty() {
            "(no prior messages)"
        } else {
            context
        };
        let catalog = self.shared.tool_catalog.clone();
        let inputs = [
            ("message", message),
            ("conversation_context", context),
            ("available_tools", catalog.as_str()),
        ];
        match self
            .typed_call("intent_classification", &CLASSIFIER, &inputs)
            .await
        {
            Ok(out) => {
                let v = out.value;
                let confidence = v.confidence.clamp(0.0, 1.0);
                self.scope.emit(EventKind::IntentClassified {
                    intent: v.intent,
                    confidence,
                    reasoning: v.reasoning,
                });
                self.emit_usage(
                    &out.usage,
                    out.cost_usd,
                    &out.model,
                    "intent_classification",
                );
                Ok(v.intent)
            }
            Err(LlmError::InvalidOutput { usage, .. }) => {
                let (intent, confidence, reasoning) = prompts::heuristic_intent(message, false);
                self.scope.emit(EventKind::IntentClassified {
                    intent,
                    confidence,
                    reasoning,
                });
                let model = self.client()?.model().to_string();
                let cost = kaos_llm::pricing::cost_usd(&model, &usage);
                self.emit_usage(&usage, cost, &model, "intent_classification");
                Ok(intent)
            }
            Err(e) => Err(e),
        }
    }

    async fn respond(&mut self, message: &str, note: Option<&str>) -> Dispatch {
        let budget = self.shared.agent.history_budget_chars;
        let mut history = String::with_capacity(budget.min(1 << 16) + 32);
        history.push_str("=== MESSAGES ===\n");
        self.session.write_history(&mut history, budget);
        let message = match note {
            Some(note) => format!("{message}\n\n({note})"),
            None => message.to_string(),
        };
        let inputs = [
            ("message", message.as_str()),
            ("conversation_history", history.as_str()),
        ];
        let respond = self.shared.respond.clone();
        let text = match self.typed_call("respond", &respond, &inputs).await {
            Ok(out) => {
                self.emit_usage(&out.usage, out.cost_usd, &out.model, "respond");
                out.value.response
            }
            Err(LlmError::InvalidOutput { raw, usage, .. }) => {
                // The model ignored the JSON format: its plain text is the answer.
                let model = self
                    .client
                    .as_ref()
                    .map(|c| c.model().to_string())
                    .unwrap_or_default();
                let cost = kaos_llm::pricing::cost_usd(&model, &usage);
                self.emit_usage(&usage, cost, &model, "respond");
                raw.trim().to_string()
            }
            Err(e) => {
                self.fail_llm(&e);
                return Dispatch::Failed;
            }
        };
        Dispatch::Answer(text)
    }

    /// A typed call inside an `llm_call` span.
    pub(crate) async fn typed_call<O: StructuredOutput>(
        &mut self,
        purpose: &str,
        signature: &Signature<O>,
        inputs: &[(&str, &str)],
    ) -> Result<TypedOutcome<O>, LlmError> {
        let client = self.client()?;
        let (span, _) = self.scope.start_span(
            SpanSubject::LlmCall,
            format!("llm_call.{purpose}"),
            attrs! {"purpose" => purpose, "provider" => client.provider(), "model" => client.model()},
        );
        let result = signature
            .call(client.as_ref(), inputs, &RequestOptions::default())
            .await;
        match &result {
            Ok(out) => {
                let mut a = usage_attrs(&out.usage, out.cost_usd);
                a.insert("attempts".into(), out.attempts.into());
                a.insert("response_model".into(), out.model.clone().into());
                if let Some(id) = &out.response_id {
                    a.insert("response_id".into(), id.clone().into());
                }
                self.scope.end_span(&span, SpanPhase::Complete, a, None);
            }
            Err(e) => {
                let mut a = Map::new();
                if let LlmError::InvalidOutput {
                    usage, attempts, ..
                } = e
                {
                    a = usage_attrs(usage, kaos_llm::pricing::cost_usd(client.model(), usage));
                    a.insert("attempts".into(), (*attempts).into());
                }
                self.scope
                    .end_span(&span, SpanPhase::Error, a, Some(llm_span_error(e)));
            }
        }
        result
    }

    /// A plain model call (tool loop) inside an `llm_call` span; emits its usage.
    pub(crate) async fn chat_call(
        &mut self,
        purpose: &str,
        request: &LlmRequest,
    ) -> Result<ProviderResponse, LlmError> {
        let client = self.client()?;
        let (span, _) = self.scope.start_span(
            SpanSubject::LlmCall,
            format!("llm_call.{purpose}"),
            attrs! {"purpose" => purpose, "provider" => client.provider(), "model" => client.model()},
        );
        match client.complete(request).await {
            Ok(response) => {
                let cost = response.cost_usd();
                let mut a = usage_attrs(&response.usage, cost);
                a.insert("attempts".into(), 1.into());
                a.insert("response_model".into(), response.model.clone().into());
                if let Some(id) = &response.response_id {
                    a.insert("response_id".into(), id.clone().into());
                }
                if let Some(reason) = &response.stop_reason {
                    a.insert(
                        "stop_reason".into(),
                        serde_json::to_value(reason).unwrap_or(Value::Null),
                    );
                }
                self.scope.end_span(&span, SpanPhase::Complete, a, None);
                let model = if response.model.is_empty() {
                    client.model().to_string()
                } else {
                    response.model.clone()
                };
                self.emit_usage(&response.usage, cost, &model, purpose);
                Ok(response)
            }
            Err(e) => {
                self.scope.end_span(
                    &span,
                    SpanPhase::Error,
                    Map::new(),
                    Some(llm_span_error(&e)),
                );
                Err(e)
            }
        }
    }

    pub(crate) fn emit_usage(
        &mut self,
        usage: &Usage,
        cost: Option<f64>,
        model: &str,
        source: &str,
    ) {
        self.usage += *usage;
        self.cost = match (self.cost, cost) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.scope.emit(EventKind::UsageObserved {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            total_tokens: usage.total_tokens,
            cost_usd: cost,
            model: model.to_string(),
            source: source.to_string(),
        });
    }

    fn summary(&self, text: String, outcome: TurnOutcome) -> TurnSummary {
        TurnSummary {
            text,
            intent: self.intent,
            tool_calls: self.tool_calls.clone(),
            tokens_used: self.usage.total_tokens,
            input_tokens: self.usage.input_tokens,
            output_tokens: self.usage.output_tokens,
            cost_usd: self.cost,
            outcome,
        }
    }

    async fn complete(&mut self, text: String) {
        self.scope.emit(EventKind::TextDelta {
            content: text.clone(),
        });
        self.session.push_message("assistant", &text);
        self.session.turn_count = self.turn_number;
        if !self.persist().await {
            return;
        }
        self.scope.end_span(
            &self.turn_span,
            SpanPhase::Complete,
            attrs! {"turn_number" => self.turn_number, "outcome" => "completed"},
            None,
        );
        let summary = self.summary(text, TurnOutcome::Completed);
        self.emit_summary(summary);
    }

    /// Saves the session; on failure the turn fails and this returns false.
    async fn persist(&mut self) -> bool {
        let store = self.shared.runtime.store().clone();
        match store.save(&self.session).await {
            Ok(()) => true,
            Err(e) => {
                self.fail(
                    "session_store_error",
                    &e.message,
                    "Check the session store (state directory permissions and disk).",
                );
                false
            }
        }
    }

    fn emit_summary(&mut self, summary: TurnSummary) {
        self.result = Some(summary.clone());
        self.scope.emit(EventKind::TurnSummary(summary));
    }

    /// Pauses: persists the run state (when the tool loop left one) with the user's message,
    /// then ends the turn with outcome `paused`.
    async fn pause(&mut self) {
        if let Some(state) = self.pending.take() {
            match serde_json::to_value(&state) {
                Ok(v) => {
                    self.session.pending_runs.insert(state.run_id.clone(), v);
                }
                Err(e) => {
                    return self.fail(
                        "run_state_error",
                        &format!("cannot serialize the paused run's state: {e}"),
                        "Report this as a bug.",
                    );
                }
            }
            if !self.persist().await {
                return;
            }
        }
        self.scope.end_span(
            &self.turn_span,
            SpanPhase::Complete,
            attrs! {"turn_number" => self.turn_number, "outcome" => "paused"},
            None,
        );
        let summary = self.summary(String::new(), TurnOutcome::Paused);
        self.emit_summary(summary);
    }

    /// Emits `RunError`, ends the turn with an error and a failed summary.
    pub(crate) fn fail(&mut self, error_type: &str, message: &str, hint: &str) {
        self.scope.emit(EventKind::RunError {
            error_type: error_type.to_string(),
            message: message.to_string(),
            recovery_hint: hint.to_string(),
        });
        self.scope.end_span(
            &self.turn_span,
            SpanPhase::Error,
            attrs! {"turn_number" => self.turn_number, "outcome" => "failed"},
            Some(SpanError {
                error_type: error_type.to_string(),
                message: message.to_string(),
            }),
        );
        let summary = self.summary(String::new(), TurnOutcome::Failed);
        self.emit_summary(summary);
    }

    pub(crate) fn fail_llm(&mut self, e: &LlmError) {
        self.fail(e.kind(), &e.to_string(), e.recovery_hint());
    }
}

fn usage_attrs(usage: &Usage, cost: Option<f64>) -> Map<String, Value> {
    let mut a = attrs! {
        "input_tokens" => usage.input_tokens,
        "output_tokens" => usage.output_tokens,
        "total_tokens" => usage.total_tokens,
        "cache_read_tokens" => usage.cache_read_tokens,
    };
    if let Some(c) = cost {
        a.insert("cost_usd".into(), c.into());
    }
    a
}

fn llm_span_error(e: &LlmError) -> SpanError {
    SpanError {
        error_type: e.kind().to_string(),
        message: e.to_string(),
    }
}
