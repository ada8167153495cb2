//! [`Turn`]: the one data type of a running turn — its scope, session, accounting and model
//! client — with the model calls every pattern makes (each inside an `llm_call` span), and
//! [`Outcome`], what a pattern reports back.
//!
//! A turn begins with [`Turn::start`] and ends exactly once, by [`Turn::finish`] or
//! [`Turn::fail`], both of which consume it and return its summary. The patterns only get
//! `&mut Turn`: they cannot end the turn, they say how their part ended.

use std::sync::Arc;

use kaos_llm::structured::{Signature, StructuredOutput, TypedOutcome};
use kaos_llm::{
    LlmClient, LlmError, LlmRequest, ProviderResponse, RequestOptions, StopReason, Usage,
};
use serde_json::{Map, Value};

use super::budget;
use super::run_state::{Pause, RunState};
use super::shared::Shared;
use crate::attrs;
use crate::events::{
    EventKind, Intent, SpanError, SpanPhase, SpanSubject, ToolCallSummary, TurnOutcome, TurnSummary,
};
use crate::message_parts;
use crate::model_stream;
use crate::scope::TurnScope;
use crate::session::{RunStatus, Session, SessionLease, ToolAction, TurnChanges};

/// How a pattern (respond, tool loop, plan, resume continuation) ended.
pub(crate) enum Outcome {
    /// The answer text.
    Answer(String),
    /// A tool call waits for a human's approval.
    Paused(Pause),
    /// The turn must fail with this error.
    Failed(Failure),
}

/// Why a turn failed: the `RunError` it emits.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub error_type: String,
    pub message: String,
    pub hint: String,
}

impl Failure {
    /// A failure of kind `error_type`.
    pub(crate) fn new(error_type: &str, message: &str, hint: &str) -> Self {
        Self {
            error_type: error_type.to_string(),
            message: message.to_string(),
            hint: hint.to_string(),
        }
    }

    /// A model call's error.
    pub(crate) fn llm(e: &LlmError) -> Self {
        Self::new(e.kind(), &e.to_string(), e.recovery_hint())
    }

    /// The session store could not load or save.
    pub(crate) fn store(message: &str) -> Self {
        Self::new(
            "session_store_error",
            message,
            "Check the session store (state directory permissions and disk).",
        )
    }
}

/// The state of one running turn.
pub(crate) struct Turn {
    pub shared: Arc<Shared>,
    pub scope: TurnScope,
    pub session: Session,
    turn_span: Arc<str>,
    turn_number: u64,
    /// The user's message of this turn (kept for a paused run's state).
    message: String,
    intent: Option<Intent>,
    usage: Usage,
    cost: Option<f64>,
    tool_calls: Vec<ToolCallSummary>,
    client: Option<Arc<dyn LlmClient>>,
    /// The text the last streamed model call delivered as `TextDelta`s (the answer, unless
    /// the runner wrote one itself).
    streamed: Option<String>,
    /// The session's lease, held from the load to the commit.
    lease: Option<SessionLease>,
    /// The session as committed when the turn took it (the commit appends the difference).
    base: Session,
    /// The paused run this turn resumes (claimed; finished by this turn's commit).
    resumed_run: Option<String>,
}

impl Turn {
    /// Opens the turn span and checks what every turn needs (store, config, model client).
    /// `Err` carries the summary of a turn that already failed.
    pub(crate) fn start(
        shared: Arc<Shared>,
        scope: TurnScope,
        session: Session,
        turn_number: u64,
        start: Map<String, Value>,
        message: String,
        load_error: Option<Failure>,
    ) -> Result<Turn, TurnSummary> {
        // The client first, so the turn's START names its provider (the conventions require
        // `gen_ai.provider.name` on an agent span); a client that cannot be made fails the
        // turn below, after its START, as before.
        let client = shared.runtime.client(&shared.agent.model);
        let mut start = start;
        match &client {
            // The model by the name its provider knows (as on the turn's chat spans), not the
            // spec: an `openai-compatible:m@http://user:pass@host` spec holds a URL.
            Ok(c) => {
                start.insert("provider".into(), c.provider().into());
                start.insert("model".into(), c.model().into());
            }
            Err(_) => {
                start.remove("model");
            }
        }
        let (turn_span, _) =
            scope.start_span(SpanSubject::Turn, format!("turn.{turn_number}"), start);
        let mut turn = Turn {
            shared,
            scope,
            base: session.clone(),
            session,
            turn_span,
            turn_number,
            message,
            intent: None,
            usage: Usage::default(),
            cost: Some(0.0),
            tool_calls: Vec::new(),
            client: None,
            streamed: None,
            lease: None,
            resumed_run: None,
        };
        if let Some(failure) = load_error {
            return Err(turn.fail(failure));
        }
        if let Some(message) = turn.shared.config_error.clone() {
            return Err(turn.fail(Failure::new(
                "config_error",
                &message,
                "Fix the agent's configuration.",
            )));
        }
        match client {
            Ok(c) => turn.client = Some(c),
            Err(e) => return Err(turn.fail(Failure::llm(&e))),
        }
        if let Some(message) = budget::unenforceable(&turn.shared.agent.budget, &turn.model()) {
            return Err(turn.fail(Failure::new(
                "budget_unenforceable",
                &message,
                budget::UNENFORCEABLE_HINT,
            )));
        }
        Ok(turn)
    }

    /// Hands the turn the session's lease (committed or released when the turn ends).
    pub(crate) fn hold(&mut self, lease: SessionLease) {
        self.lease = Some(lease);
    }

    /// Marks this turn as the continuation of the claimed run `run_id`.
    pub(crate) fn resuming(&mut self, run_id: String) {
        self.resumed_run = Some(run_id);
    }

    /// Records the classified intent.
    pub(crate) fn set_intent(&mut self, intent: Option<Intent>) {
        self.intent = intent;
    }

    /// Tokens spent so far.
    pub(crate) fn usage(&self) -> &Usage {
        &self.usage
    }

    /// USD spent so far (`None`: some model's price is unknown).
    pub(crate) fn cost(&self) -> Option<f64> {
        self.cost
    }

    /// Why a hook asked the run to stop, as the failure to end the turn with.
    pub(crate) fn halt(&self) -> Option<Failure> {
        self.scope.halted().map(|reason| {
            Failure::new(
                "hook_halt",
                &reason,
                "A fail-closed hook (e.g. the audit trail) could not do its job; fix it and retry.",
            )
        })
    }

    /// Records a finished tool call (its summary and the session's action log).
    pub(crate) fn record_tool_call(&mut self, summary: ToolCallSummary, action: ToolAction) {
        self.tool_calls.push(summary);
        self.session.actions.push_back(action);
    }

    /// Adds tokens and cost spent outside this turn's own model calls (a sub-agent's turn).
    pub(crate) fn add_nested_usage(&mut self, usage: Usage, cost: Option<f64>) {
        self.usage += usage;
        self.cost = match (self.cost, cost) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }

    fn client(&self) -> Result<Arc<dyn LlmClient>, LlmError> {
        self.client
            .clone()
            .ok_or_else(|| LlmError::Config("no model client".into()))
    }

    /// The model's name (empty when there is no client).
    pub(crate) fn model(&self) -> String {
        self.client
            .as_ref()
            .map(|c| c.model().to_string())
            .unwrap_or_default()
    }

    /// A typed call inside an `llm_call` span.
    pub(crate) async fn typed_call<O: StructuredOutput>(
        &mut self,
        purpose: &str,
        signature: &Signature<O>,
        inputs: &[(&str, &str)],
    ) -> Result<TypedOutcome<O>, LlmError> {
        let client = self.client()?;
        let content = self.scope.hooks().captures_content();
        let mut start = call_attributes(purpose, client.as_ref(), false);
        if content {
            message_parts::request_attributes(&signature.messages(inputs), &mut start);
        }
        let (span, _) =
            self.scope
                .start_span(SpanSubject::LlmCall, format!("llm_call.{purpose}"), start);
        let options = RequestOptions::default();
        let call = signature.call(client.as_ref(), inputs, &options);
        let result = self.scope.in_span(&span, call).await;
        match &result {
            Ok(out) => {
                let a = typed_completion(signature, inputs, out, content);
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

    /// A typed call whose string field `field` is the text the user reads, streamed: the
    /// field's characters become `TextDelta`s under the `llm_call` span as they arrive, a
    /// corrective retry is announced (`TextRetracted`), and the validated `text_of(value)`
    /// is settled against what streamed. With `prose_fallback`, an answer that is not JSON
    /// at all is the text (the caller uses `raw`), streamed whole at the end.
    pub(crate) async fn streamed_typed_call<O: StructuredOutput>(
        &mut self,
        purpose: &str,
        signature: &Signature<O>,
        inputs: &[(&str, &str)],
        field: &str,
        text_of: fn(&O) -> &str,
        prose_fallback: bool,
    ) -> Result<TypedOutcome<O>, LlmError> {
        let client = self.client()?;
        let content = self.scope.hooks().captures_content();
        let mut start = call_attributes(purpose, client.as_ref(), true);
        if content {
            message_parts::request_attributes(&signature.messages(inputs), &mut start);
        }
        let (span, _) =
            self.scope
                .start_span(SpanSubject::LlmCall, format!("llm_call.{purpose}"), start);
        let call = model_stream::stream_typed(
            &self.scope,
            &span,
            client.as_ref(),
            signature,
            inputs,
            field,
        );
        let (result, stats, streamed) = self.scope.in_span(&span, call).await;
        let mut a = Map::new();
        match &result {
            Ok(out) => {
                let text = text_of(&out.value);
                model_stream::settle_text(
                    &self.scope,
                    &span,
                    &streamed,
                    text,
                    "the validated answer differs from the streamed text",
                );
                self.streamed = Some(text.to_string());
                a = typed_completion(signature, inputs, out, content);
                stats.write(&mut a);
                self.scope.end_span(&span, SpanPhase::Complete, a, None);
            }
            Err(e) => {
                if let LlmError::InvalidOutput {
                    raw,
                    message,
                    usage,
                    attempts,
                } = e
                {
                    if prose_fallback {
                        let text = raw.trim();
                        model_stream::settle_text(
                            &self.scope,
                            &span,
                            &streamed,
                            text,
                            &format!(
                                "the answer could not be parsed ({message}); its raw text is the answer"
                            ),
                        );
                        self.streamed = Some(text.to_string());
                    }
                    a = usage_attrs(usage, kaos_llm::pricing::cost_usd(client.model(), usage));
                    a.insert("attempts".into(), (*attempts).into());
                }
                // What arrived before a break is counted on the error span.
                stats.write(&mut a);
                self.scope
                    .end_span(&span, SpanPhase::Error, a, Some(llm_span_error(e)));
            }
        }
        result
    }

    /// A plain model call (tool loop) inside an `llm_call` span, streamed: text chunks
    /// become `TextDelta`s under the span as they arrive; emits its usage.
    pub(crate) async fn chat_call(
        &mut self,
        purpose: &str,
        request: &LlmRequest,
    ) -> Result<ProviderResponse, LlmError> {
        let client = self.client()?;
        let content = self.scope.hooks().captures_content();
        let mut start = call_attributes(purpose, client.as_ref(), true);
        if content {
            message_parts::request_attributes(&request.messages, &mut start);
        }
        let (span, _) =
            self.scope
                .start_span(SpanSubject::LlmCall, format!("llm_call.{purpose}"), start);
        let call = model_stream::stream_chat(&self.scope, &span, client.as_ref(), request);
        let (result, stats) = self.scope.in_span(&span, call).await;
        match result {
            Ok(response) => {
                self.streamed = Some(response.text());
                let cost = response.cost_usd();
                let mut a = usage_attrs(&response.usage, cost);
                stats.write(&mut a);
                response_facts(
                    &mut a,
                    1,
                    &response.model,
                    response.response_id.as_deref(),
                    response.stop_reason.as_ref(),
                );
                if content {
                    a.insert(
                        message_parts::OUTPUT_MESSAGES.into(),
                        message_parts::output_messages(
                            &response.parts,
                            response.stop_reason.as_ref(),
                        ),
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
                // What arrived before the break is counted on the error span.
                let mut a = Map::new();
                stats.write(&mut a);
                self.scope
                    .end_span(&span, SpanPhase::Error, a, Some(llm_span_error(&e)));
                Err(e)
            }
        }
    }

    /// Adds a model call's usage to the turn and emits `UsageObserved`.
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

    /// Ends the turn according to how its pattern ended; returns the summary.
    pub(crate) async fn finish(mut self, outcome: Outcome) -> TurnSummary {
        match outcome {
            Outcome::Answer(text) => self.complete(text).await,
            Outcome::Paused(pause) => self.pause(pause).await,
            Outcome::Failed(failure) => {
                self.let_go().await;
                self.fail(failure)
            }
        }
    }

    /// A failed turn saves nothing: it releases the session, and a resumed run it claimed
    /// is settled as done (its approved call ran; the turn after it failed), so the session
    /// takes new turns.
    async fn let_go(&mut self) {
        let store = self.shared.runtime.store().clone();
        if let Some(run_id) = self.resumed_run.take() {
            let _ = store
                .settle_run(self.scope.session_id(), &run_id, RunStatus::Done)
                .await;
        }
        if let Some(lease) = self.lease.take() {
            // Best effort: an unreleased lease expires.
            let _ = store.release(lease).await;
        }
    }

    async fn complete(mut self, text: String) -> TurnSummary {
        // A streamed answer is in the stream already; text the runner wrote itself (a budget
        // notice, a stop message) is emitted here, outside any model call.
        if self.streamed.as_deref() != Some(text.as_str()) {
            self.scope.emit(EventKind::TextDelta {
                content: text.clone(),
                span_id: None,
            });
        }
        self.session.push_message("assistant", &text);
        self.session.turn_count = self.turn_number;
        if let Err(failure) = self.persist().await {
            return self.fail(failure);
        }
        self.scope.end_span(
            &self.turn_span,
            SpanPhase::Complete,
            attrs! {"turn_number" => self.turn_number, "outcome" => "completed"},
            None,
        );
        let summary = self.summary(text, TurnOutcome::Completed);
        self.emit_summary(summary)
    }

    /// Commits what the turn added to the session (and finishes the run it resumed) in one
    /// transaction that releases the session's lease.
    async fn persist(&mut self) -> Result<(), Failure> {
        let store = self.shared.runtime.store().clone();
        let mut changes = TurnChanges::between(&self.base, &self.session);
        changes.finished.extend(self.resumed_run.take());
        let result = match self.lease.take() {
            Some(lease) => store.commit(lease, changes).await,
            None => store.save(&self.session).await,
        };
        result.map_err(|e| Failure::store(&e.message))
    }

    fn emit_summary(&self, summary: TurnSummary) -> TurnSummary {
        self.scope.emit(EventKind::TurnSummary(summary.clone()));
        summary
    }

    /// The state of this turn paused as `pause` says.
    fn run_state(&self, pause: Pause) -> RunState {
        RunState {
            run_id: self.scope.run_id().to_string(),
            session_id: self.scope.session_id().to_string(),
            original_message: self.message.clone(),
            messages: pause.messages,
            pending_call: pause.pending_call,
            remaining_calls: pause.remaining_calls,
            round: pause.round,
            turn_number: self.turn_number,
            intent: self.intent,
            usage: self.usage,
            cost_usd: self.cost,
            agent: (*self.shared.agent).clone(),
            tool_names: Some(
                self.shared
                    .tool_defs
                    .iter()
                    .map(|d| d.name.clone())
                    .collect(),
            ),
            created_at_unix_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            plan: pause.plan,
            traceparent: self.turn_traceparent(),
        }
    }

    /// The W3C `traceparent` of this turn's OTel span, when a hook traced it.
    fn turn_traceparent(&self) -> Option<String> {
        #[cfg(feature = "otel")]
        {
            let cx = self
                .scope
                .hooks()
                .otel_context(self.scope.run_id(), &self.turn_span)?;
            crate::otel::format_traceparent(&cx)
        }
        #[cfg(not(feature = "otel"))]
        None
    }

    /// Pauses: persists the run state with the user's message, then ends the turn with
    /// outcome `paused`.
    async fn pause(mut self, pause: Pause) -> TurnSummary {
        let state = self.run_state(pause);
        match serde_json::to_value(&state) {
            Ok(v) => {
                self.session.pending_runs.insert(state.run_id.clone(), v);
            }
            Err(e) => {
                return self.fail(Failure::new(
                    "run_state_error",
                    &format!("cannot serialize the paused run's state: {e}"),
                    "Report this as a bug.",
                ));
            }
        }
        if let Err(failure) = self.persist().await {
            return self.fail(failure);
        }
        self.scope.end_span(
            &self.turn_span,
            SpanPhase::Complete,
            attrs! {"turn_number" => self.turn_number, "outcome" => "paused"},
            None,
        );
        let summary = self.summary(String::new(), TurnOutcome::Paused);
        self.emit_summary(summary)
    }

    /// Emits `RunError`, ends the turn span with an error and emits a failed summary.
    pub(crate) fn fail(self, failure: Failure) -> TurnSummary {
        self.scope.emit(EventKind::RunError {
            error_type: failure.error_type.clone(),
            message: failure.message.clone(),
            recovery_hint: failure.hint,
        });
        self.scope.end_span(
            &self.turn_span,
            SpanPhase::Error,
            attrs! {"turn_number" => self.turn_number, "outcome" => "failed"},
            Some(SpanError {
                error_type: failure.error_type,
                message: failure.message,
            }),
        );
        let summary = self.summary(String::new(), TurnOutcome::Failed);
        self.emit_summary(summary)
    }
}

/// The completion attributes of a typed call's `llm_call` span: usage and cost over all
/// attempts, the last response's model, id and stop reason, and with `content` its answer and
/// (after a corrective retry) the request it answered.
fn typed_completion<O: StructuredOutput>(
    signature: &Signature<O>,
    inputs: &[(&str, &str)],
    out: &TypedOutcome<O>,
    content: bool,
) -> Map<String, Value> {
    let mut a = usage_attrs(&out.usage, out.cost_usd);
    response_facts(
        &mut a,
        out.attempts,
        &out.model,
        out.response_id.as_deref(),
        out.stop_reason.as_ref(),
    );
    if content {
        a.insert(
            message_parts::OUTPUT_MESSAGES.into(),
            message_parts::output_text(&out.raw_text, out.stop_reason.as_ref()),
        );
        message_parts::retried_request(signature, inputs, out, &mut a);
    }
    a
}

/// The last response's facts on an `llm_call` completion: how many attempts the call took,
/// and the model, id and stop reason the provider answered with.
fn response_facts(
    a: &mut Map<String, Value>,
    attempts: u32,
    model: &str,
    response_id: Option<&str>,
    stop_reason: Option<&StopReason>,
) {
    a.insert("attempts".into(), attempts.into());
    a.insert("response_model".into(), model.into());
    if let Some(id) = response_id {
        a.insert("response_id".into(), id.into());
    }
    if let Some(reason) = stop_reason {
        a.insert("stop_reason".into(), reason.as_str().into());
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

/// A model call's START attributes: its purpose, whether it streams, and the client's
/// provider, model and server (host and port, when it has one).
fn call_attributes(purpose: &str, client: &dyn LlmClient, stream: bool) -> Map<String, Value> {
    let mut start =
        attrs! {"purpose" => purpose, "provider" => client.provider(), "model" => client.model()};
    if stream {
        start.insert("stream".into(), Value::Bool(true));
    }
    if let Some(server) = client.server_address() {
        start.insert("server_address".into(), Value::String(server.host));
        start.insert("server_port".into(), Value::from(server.port));
    }
    start
}
