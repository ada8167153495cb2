//! [`OTelHook`]: maps a turn's event stream onto OpenTelemetry spans (DESIGN §5).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use serde_json::Value;

use super::attributes::*;
use super::content::{CaptureContent, ContentPolicy, output_messages};
use super::{SpanNaming, parse_traceparent};
use crate::events::{Event, EventKind, SpanEvent, SpanPhase, SpanSubject, TurnOutcome};
use crate::hooks::{Hook, HookAction, HookError};
use crate::redact::Redactor;

/// `(run_id, span_id)`: our span ids scoped by run, so concurrent runs never collide.
type Key = (Arc<str>, Arc<str>);

/// The hook's maps: keyed by our own ids, a handful of entries per open turn, looked up
/// several times per event, so a word-at-a-time multiplicative hash (FxHash's) instead of
/// SipHash, which was a third of the hook's cost.
type Map<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// FxHash (rustc's): rotate, xor a word, multiply.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl IdHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Turn,
    Intent,
    Llm,
    Tool,
    Step,
    Subagent,
    Handoff,
}

impl From<SpanSubject> for Kind {
    fn from(s: SpanSubject) -> Self {
        match s {
            SpanSubject::Turn => Kind::Turn,
            SpanSubject::Step => Kind::Step,
            SpanSubject::ToolCall => Kind::Tool,
            SpanSubject::LlmCall => Kind::Llm,
            SpanSubject::Subagent => Kind::Subagent,
            SpanSubject::Handoff => Kind::Handoff,
        }
    }
}

/// One started OTel span that has not ended yet.
struct Open {
    cx: Context,
    kind: Kind,
    parent: Option<Key>,
    children: Vec<Key>,
    start_ns: u64,
    /// Logically ended at this time; waits for a late fact (`IntentClassified` for the
    /// intent span, `TurnSummary` for the turn) before it is ended with this timestamp.
    closing_at: Option<u64>,
    /// The status to end with when nothing more specific arrives.
    status: Status,
    /// A tool span's call id.
    call_id: Option<String>,
}

#[derive(Default)]
struct RunState {
    turn: Option<Key>,
    /// The intent span waiting for `IntentClassified`.
    pending_intent: Option<Key>,
    /// Classifier llm span id → its intent span key.
    intent_of_llm: Map<Arc<str>, Key>,
    tokens: u64,
    cost: Option<f64>,
    cost_unknown: bool,
    tool_calls: u64,
    open: usize,
}

#[derive(Default)]
struct State {
    spans: Map<Key, Open>,
    /// span id → run id, to find a parent that lives in another run (sub-agent, handoff).
    by_span: Map<Arc<str>, Arc<str>>,
    runs: Map<Arc<str>, RunState>,
    /// session id → parent context for that session's root turns.
    session_parents: Map<Arc<str>, Context>,
}

/// Maps kaos turn events onto OpenTelemetry spans.
///
/// * Span times are the events' own timestamps.
/// * Every span that starts ends exactly once; ending a span first ends its open
///   descendants (status UNSET, `kaos.cancelled=true`, `kaos.cancel_reason=parent_ended`).
/// * Cancelled spans (stream dropped, task aborted, pause for approval) keep status
///   **UNSET** (GenAI practice: a deferral is not an error) and get `kaos.cancelled=true`
///   and `kaos.cancel_reason`. Error phases and `RunError` set ERROR with a message;
///   successful ends set OK.
/// * State is keyed by `(run_id, span_id)` and dropped when a run has no open span, so
///   memory does not grow with finished turns ([`OTelHook::open_span_count`],
///   [`OTelHook::tracked_runs`]).
pub struct OTelHook {
    tracer: BoxedTracer,
    pub(super) naming: SpanNaming,
    pub(super) content: ContentPolicy,
    state: Mutex<State>,
    /// OTel span id → our `(run_id, span_id)`, recorded for replay.
    id_log: Option<Mutex<HashMap<SpanId, Key>>>,
}

impl std::fmt::Debug for OTelHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OTelHook")
            .field("naming", &self.naming)
            .field("capture", &self.content.mode)
            .finish_non_exhaustive()
    }
}

impl OTelHook {
    /// A hook over any tracer (`SdkTracer`, `BoxedTracer`, ...). Content capture comes from
    /// `KAOS_CAPTURE_CONTENT` (off when unset).
    pub fn new<T>(tracer: T) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        Self {
            tracer: BoxedTracer::new(Box::new(tracer)),
            naming: SpanNaming::default(),
            content: ContentPolicy::new(CaptureContent::from_env()),
            state: Mutex::new(State::default()),
            id_log: None,
        }
    }

    /// Records which OTel span id each of our spans got (for replay's id rewrite).
    pub(crate) fn recording_ids(mut self) -> Self {
        self.id_log = Some(Mutex::new(HashMap::new()));
        self
    }

    /// The recorded OTel span id → `(run_id, span_id)` table.
    pub(crate) fn take_id_log(&self) -> HashMap<SpanId, (Arc<str>, Arc<str>)> {
        self.id_log
            .as_ref()
            .map(|m| {
                std::mem::take(&mut *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            })
            .unwrap_or_default()
    }

    fn log_id(&self, cx: &Context, key: &Key) {
        if let Some(log) = &self.id_log {
            log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(cx.span().span_context().span_id(), key.clone());
        }
    }

    /// A hook over the global tracer provider's `kaos.agents` tracer.
    pub fn global() -> Self {
        Self::new(opentelemetry::global::tracer("kaos.agents"))
    }

    /// Chooses span names (seed names by default).
    pub fn with_naming(mut self, naming: SpanNaming) -> Self {
        self.naming = naming;
        self
    }

    /// Chooses whether content goes on spans.
    pub fn with_capture_content(mut self, mode: CaptureContent) -> Self {
        self.content.mode = mode;
        self
    }

    /// The per-attribute size cap of captured content, in bytes (default 16 KiB).
    pub fn with_content_cap(mut self, bytes: usize) -> Self {
        self.content.cap = bytes.max(64);
        self
    }

    /// The redactor (the audit trail's, by default [`Redactor::default`]). Content in
    /// [`CaptureContent::Redacted`] mode goes through it, and so do short texts that are
    /// always on spans (reasons, descriptions, error messages) in every mode.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.content.redactor = redactor;
        self
    }

    /// Makes root turns of `session_id` children of `parent` (a context holding a remote
    /// span, e.g. from [`parse_traceparent`]). A `traceparent` attribute on the turn START
    /// takes precedence.
    pub fn set_session_parent(&self, session_id: &str, parent: Context) {
        self.lock()
            .session_parents
            .insert(Arc::from(session_id), parent);
    }

    /// Forgets the parent set by [`OTelHook::set_session_parent`].
    pub fn clear_session_parent(&self, session_id: &str) {
        self.lock().session_parents.remove(session_id);
    }

    /// How many OTel spans are started and not yet ended.
    pub fn open_span_count(&self) -> usize {
        self.lock().spans.len()
    }

    /// How many runs have state (a run's state goes when its last span ends).
    pub fn tracked_runs(&self) -> usize {
        self.lock().runs.len()
    }

    /// The OTel context of one of our open spans (e.g. to parent provider HTTP spans).
    pub fn context_of(&self, run_id: &str, span_id: &str) -> Option<Context> {
        let state = self.lock();
        let key: Key = (Arc::from(run_id), Arc::from(span_id));
        state.spans.get(&key).map(|o| o.cx.clone())
    }

    /// Ends every open span now (status UNSET, `kaos.cancel_reason=reason`), children first.
    /// Returns how many ended. Called by [`Hook::shutdown`].
    pub fn close_all(&self, reason: &str) -> usize {
        self.close_all_at(reason, now_nanos())
    }

    /// [`OTelHook::close_all`] with an explicit end time (unix ns).
    pub(crate) fn close_all_at(&self, reason: &str, now: u64) -> usize {
        let mut state = self.lock();
        let roots: Vec<Key> = state
            .spans
            .iter()
            .filter(|(_, o)| {
                o.parent
                    .as_ref()
                    .is_none_or(|p| !state.spans.contains_key(p))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let before = state.spans.len();
        for key in roots {
            let at = state
                .spans
                .get(&key)
                .and_then(|o| o.closing_at)
                .unwrap_or(now);
            end_cancelled(&mut state, &key, at, reason);
        }
        state.runs.clear();
        before - state.spans.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn handle(&self, event: &Event) {
        let mut state = self.lock();
        let run = event.run_id.clone();
        // A turn or intent span waiting for a late fact ends when something else comes.
        settle_pending(&mut state, event);
        match &event.kind {
            EventKind::Span(span) if span.phase == SpanPhase::Start => {
                self.on_start(&mut state, event, span)
            }
            EventKind::Span(span) => self.on_end(&mut state, event, span),
            EventKind::IntentClassified {
                intent,
                confidence,
                reasoning,
            } => {
                let attrs = vec![
                    KeyValue::new(KAOS_INTENT, intent.as_str()),
                    KeyValue::new(KAOS_CONFIDENCE, *confidence),
                    KeyValue::new(KAOS_REASONING, self.content.short(reasoning)),
                ];
                let pending = state
                    .runs
                    .get_mut(&run)
                    .and_then(|r| r.pending_intent.take());
                match pending {
                    Some(key) => {
                        if let Some(open) = state.spans.get_mut(&key) {
                            open.cx.span().set_attributes(attrs);
                            open.status = Status::Ok;
                        }
                        let at = state
                            .spans
                            .get(&key)
                            .and_then(|o| o.closing_at)
                            .unwrap_or(event.timestamp);
                        end_span(&mut state, &key, at);
                    }
                    None => {
                        // No classifier call seen (heuristic): an instant span under the turn.
                        let parent = run_turn_cx(&state, &run);
                        let span = self
                            .tracer
                            .span_builder("agent.intent_classification")
                            .with_kind(SpanKind::Internal)
                            .with_start_time(system_time(event.timestamp))
                            .with_attributes(attrs)
                            .start_with_context(&self.tracer, &parent);
                        let cx = parent.with_span(span);
                        cx.span().set_status(Status::Ok);
                        cx.span().end_with_timestamp(system_time(event.timestamp));
                    }
                }
                if let Some(turn) = state.runs.get(&run).and_then(|r| r.turn.clone())
                    && let Some(open) = state.spans.get(&turn)
                {
                    open.cx
                        .span()
                        .set_attribute(KeyValue::new(KAOS_INTENT, intent.as_str()));
                }
            }
            EventKind::UsageObserved {
                total_tokens,
                cost_usd,
                ..
            } => {
                if let Some(r) = state.runs.get_mut(&run) {
                    r.tokens += total_tokens;
                    match cost_usd {
                        Some(c) => r.cost = Some(r.cost.unwrap_or(0.0) + c),
                        None => r.cost_unknown = true,
                    }
                }
            }
            EventKind::ToolCallApprovalRequired { call_id, .. } => {
                let waiting = state
                    .spans
                    .iter()
                    .find(|(k, o)| k.0 == run && o.call_id.as_deref() == Some(call_id.as_str()));
                if let Some((_, open)) = waiting {
                    open.cx
                        .span()
                        .set_attribute(KeyValue::new(KAOS_APPROVAL_REQUIRED, true));
                }
            }
            EventKind::BudgetExceeded { kind, reason, .. } => {
                if let Some(open) = run_turn(&state, &run) {
                    open.cx.span().add_event(
                        "kaos.budget_exceeded",
                        vec![
                            KeyValue::new("kaos.budget", kind.clone()),
                            KeyValue::new(KAOS_REASON, self.content.short(reason)),
                        ],
                    );
                }
            }
            EventKind::RunError {
                error_type,
                message,
                recovery_hint,
            } => {
                if let Some(turn) = state.runs.get(&run).and_then(|r| r.turn.clone())
                    && let Some(open) = state.spans.get_mut(&turn)
                {
                    let span = open.cx.span();
                    span.set_attributes([
                        KeyValue::new(KAOS_ERROR_TYPE, error_type.clone()),
                        KeyValue::new(ERROR_TYPE, error_type.clone()),
                        KeyValue::new(KAOS_RECOVERY_HINT, self.content.short(recovery_hint)),
                    ]);
                    open.status = Status::error(self.content.short(message));
                }
            }
            EventKind::TurnSummary(summary) => {
                let Some(turn) = state.runs.get(&run).and_then(|r| r.turn.clone()) else {
                    return;
                };
                if let Some(open) = state.spans.get_mut(&turn) {
                    let span = open.cx.span();
                    span.set_attributes([
                        KeyValue::new(KAOS_TOKENS_USED, int(summary.tokens_used)),
                        KeyValue::new(KAOS_INPUT_TOKENS, int(summary.input_tokens)),
                        KeyValue::new(KAOS_OUTPUT_TOKENS, int(summary.output_tokens)),
                        KeyValue::new(KAOS_TOOL_CALL_COUNT, int(summary.tool_calls.len() as u64)),
                    ]);
                    // `kaos.outcome` comes from the turn's terminal span and `kaos.intent` from
                    // `IntentClassified`; setting them again would export them twice.
                    if let Some(cost) = summary.cost_usd {
                        span.set_attribute(KeyValue::new(KAOS_COST_USD, cost));
                    }
                    // Only built when content is captured (it was most of a summary's cost).
                    if self.content.captures()
                        && !summary.text.is_empty()
                        && let Some(text) =
                            self.content.render(output_messages(&summary.text, "stop"))
                    {
                        span.set_attribute(KeyValue::new(GEN_AI_OUTPUT_MESSAGES, text));
                    }
                    match summary.outcome {
                        TurnOutcome::Failed => {
                            if !matches!(open.status, Status::Error { .. }) {
                                open.status = Status::error("turn failed");
                            }
                        }
                        TurnOutcome::Paused => open.status = Status::Unset,
                        TurnOutcome::Completed => {}
                    }
                }
                let at = state
                    .spans
                    .get(&turn)
                    .and_then(|o| o.closing_at)
                    .unwrap_or(event.timestamp);
                end_span(&mut state, &turn, at);
            }
            EventKind::PlanProposed { .. }
            | EventKind::TextDelta { .. }
            | EventKind::PatternMismatch { .. } => {}
        }
    }

    /// The context of a span with no open parent: a turn continues a `traceparent` or its
    /// session's parent; anything else starts from the current context.
    fn root_context(&self, state: &State, event: &Event, span: &SpanEvent) -> Context {
        if span.subject == SpanSubject::Turn {
            if let Some(cx) = span.attr_str("traceparent").and_then(parse_traceparent) {
                return cx;
            }
            if let Some(cx) = state.session_parents.get(&event.session_id) {
                return cx.clone();
            }
        }
        Context::current()
    }

    fn on_start(&self, state: &mut State, event: &Event, span: &SpanEvent) {
        let run = event.run_id.clone();
        let key: Key = (run.clone(), span.span_id.clone());
        if state.spans.contains_key(&key) {
            return; // A repeated START: keep the first.
        }
        // The named parent if it is open, else (below a turn) the run's open turn.
        let mut parent_key = span
            .parent_span_id
            .as_ref()
            .and_then(|p| resolve(state, &run, p))
            .or_else(|| match span.subject {
                SpanSubject::Turn => None,
                _ => state.runs.get(&run).and_then(|r| r.turn.clone()),
            });
        let mut parent_cx = match parent_key.as_ref().and_then(|k| state.spans.get(k)) {
            Some(open) => open.cx.clone(),
            None => self.root_context(state, event, span),
        };
        let a = &span.attributes;
        let t = system_time(event.timestamp);
        let kind = Kind::from(span.subject);

        // The classifier's call sits inside an `agent.intent_classification` span.
        let purpose = a.get("purpose").and_then(Value::as_str).unwrap_or("");
        if kind == Kind::Llm && purpose == "intent_classification" {
            let existing = state
                .runs
                .get_mut(&run)
                .and_then(|r| r.pending_intent.take());
            let intent_key = match existing {
                Some(k) if state.spans.contains_key(&k) => {
                    if let Some(o) = state.spans.get_mut(&k) {
                        o.closing_at = None;
                    }
                    k
                }
                _ => {
                    let ikey: Key = (
                        run.clone(),
                        Arc::from(super::mapping::concat(&[&span.span_id, "#intent"])),
                    );
                    let otel = self
                        .tracer
                        .span_builder("agent.intent_classification")
                        .with_kind(SpanKind::Internal)
                        .with_start_time(t)
                        .start_with_context(&self.tracer, &parent_cx);
                    let cx = parent_cx.with_span(otel);
                    self.log_id(&cx, &ikey);
                    insert(
                        state,
                        ikey.clone(),
                        cx,
                        Kind::Intent,
                        parent_key.clone(),
                        event.timestamp,
                    );
                    ikey
                }
            };
            state
                .runs
                .entry(run.clone())
                .or_default()
                .intent_of_llm
                .insert(span.span_id.clone(), intent_key.clone());
            if let Some(o) = state.spans.get(&intent_key) {
                parent_cx = o.cx.clone();
            }
            parent_key = Some(intent_key);
        }

        let (name, otel_kind, attrs) = self.start_shape(event, span);
        let otel = self
            .tracer
            .span_builder(name)
            .with_kind(otel_kind)
            .with_start_time(t)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent_cx);
        let cx = parent_cx.with_span(otel);
        self.log_id(&cx, &key);
        insert(state, key.clone(), cx, kind, parent_key, event.timestamp);
        match kind {
            Kind::Turn => {
                state.runs.entry(run).or_default().turn = Some(key);
            }
            Kind::Tool => {
                if let Some(open) = state.spans.get_mut(&key) {
                    open.call_id = a.get("call_id").and_then(Value::as_str).map(str::to_string);
                }
                if self.content.captures()
                    && let Some(args) = a.get("arguments")
                    && let Some(text) = self.content.render(args.clone())
                    && let Some(open) = state.spans.get(&key)
                {
                    open.cx
                        .span()
                        .set_attribute(KeyValue::new(GEN_AI_TOOL_CALL_ARGUMENTS, text));
                }
                state.runs.entry(run).or_default().tool_calls += 1;
            }
            _ => {}
        }
    }

    fn on_end(&self, state: &mut State, event: &Event, span: &SpanEvent) {
        let run = event.run_id.clone();
        let key: Key = (run.clone(), span.span_id.clone());
        let Some(open) = state.spans.get_mut(&key) else {
            return; // An end without a START (or a second end): nothing to close.
        };
        if open.closing_at.is_some() {
            return; // Already ended; waiting for its late fact.
        }
        let otel = open.cx.span();
        let a = &span.attributes;
        otel.set_attributes(self.end_attributes(open.kind, span));
        let duration_ms = span
            .duration_ms
            .unwrap_or_else(|| event.timestamp.saturating_sub(open.start_ns) as f64 / 1_000_000.0);
        if matches!(open.kind, Kind::Tool | Kind::Step) {
            otel.set_attribute(KeyValue::new(KAOS_DURATION_MS, duration_ms));
        }
        let error = span.error.as_ref();
        open.status = match span.phase {
            SpanPhase::Start | SpanPhase::Complete => {
                let is_error = a.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                let outcome = a.get("outcome").and_then(Value::as_str);
                if is_error {
                    Status::error(
                        self.content.short(
                            a.get("result_summary")
                                .and_then(Value::as_str)
                                .unwrap_or("tool error"),
                        ),
                    )
                } else if outcome == Some("failed") {
                    Status::error("turn failed")
                } else if outcome == Some("paused") {
                    Status::Unset // `kaos.outcome=paused` comes with the end attributes.
                } else if matches!(open.status, Status::Error { .. }) {
                    open.status.clone() // A RunError already said so.
                } else {
                    Status::Ok
                }
            }
            SpanPhase::Error => {
                // A `RunError` before the turn's error phase already set the error type.
                let already_set = matches!(open.status, Status::Error { .. });
                if let Some(e) = error
                    && !already_set
                {
                    otel.set_attributes([
                        KeyValue::new(ERROR_TYPE, e.error_type.clone()),
                        KeyValue::new(KAOS_ERROR_TYPE, e.error_type.clone()),
                    ]);
                }
                match (&open.status, error) {
                    (Status::Error { .. }, None) => open.status.clone(),
                    (_, e) => Status::error(
                        self.content
                            .short(e.map(|e| e.message.as_str()).unwrap_or("error")),
                    ),
                }
            }
            SpanPhase::Cancelled => {
                let reason = a
                    .get("cancel_reason")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| error.map(|e| e.error_type.clone()))
                    .unwrap_or_else(|| "cancelled".to_string());
                otel.set_attributes([
                    KeyValue::new(KAOS_CANCELLED, true),
                    KeyValue::new(KAOS_CANCEL_REASON, reason),
                ]);
                Status::Unset
            }
        };
        let kind = open.kind;
        if kind == Kind::Tool
            && self.content.captures()
            && let Some(result) = a.get("result_summary")
            && let Some(text) = self.content.render(result.clone())
        {
            otel.set_attribute(KeyValue::new(GEN_AI_TOOL_CALL_RESULT, text));
        }
        match kind {
            Kind::Llm => {
                let intent = state
                    .runs
                    .get_mut(&run)
                    .and_then(|r| r.intent_of_llm.remove(&span.span_id));
                end_span(state, &key, event.timestamp);
                if let Some(ikey) = intent
                    && let Some(o) = state.spans.get_mut(&ikey)
                {
                    // Waits for IntentClassified; ends at this call's end time.
                    o.closing_at = Some(event.timestamp);
                    o.status = match span.phase {
                        SpanPhase::Error => Status::error("intent classification failed"),
                        _ => Status::Unset,
                    };
                    if span.phase == SpanPhase::Cancelled {
                        end_cancelled(state, &ikey, event.timestamp, "cancelled");
                    } else if let Some(r) = state.runs.get_mut(&run) {
                        r.pending_intent = Some(ikey);
                    }
                }
            }
            Kind::Turn if span.phase != SpanPhase::Cancelled => {
                // Close what is still open inside, then wait for the TurnSummary.
                close_children(state, &key, event.timestamp, "parent_ended");
                if let Some(o) = state.spans.get_mut(&key) {
                    o.closing_at = Some(event.timestamp);
                }
            }
            _ => end_span(state, &key, event.timestamp),
        }
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Finds the open span `span_id`: in `run` first, then in any run (a cross-run parent).
fn resolve(state: &State, run: &Arc<str>, span_id: &Arc<str>) -> Option<Key> {
    let key: Key = (run.clone(), span_id.clone());
    if state.spans.contains_key(&key) {
        return Some(key);
    }
    let other = state.by_span.get(span_id)?;
    let key: Key = (other.clone(), span_id.clone());
    state.spans.contains_key(&key).then_some(key)
}

fn run_turn<'a>(state: &'a State, run: &Arc<str>) -> Option<&'a Open> {
    let turn = state.runs.get(run)?.turn.as_ref()?;
    state.spans.get(turn)
}

fn run_turn_cx(state: &State, run: &Arc<str>) -> Context {
    run_turn(state, run)
        .map(|o| o.cx.clone())
        .unwrap_or_else(Context::current)
}

fn insert(state: &mut State, key: Key, cx: Context, kind: Kind, parent: Option<Key>, start: u64) {
    if let Some(p) = parent.as_ref().and_then(|p| state.spans.get_mut(p)) {
        p.children.push(key.clone());
    }
    state.by_span.insert(key.1.clone(), key.0.clone());
    state.runs.entry(key.0.clone()).or_default().open += 1;
    state.spans.insert(
        key,
        Open {
            cx,
            kind,
            parent,
            children: Vec::new(),
            start_ns: start,
            closing_at: None,
            status: Status::Unset,
            call_id: None,
        },
    );
}

/// Ends `key`'s open descendants (children first) as cancelled, at `at`.
fn close_children(state: &mut State, key: &Key, at: u64, reason: &str) {
    let children = state
        .spans
        .get_mut(key)
        .map(|o| std::mem::take(&mut o.children))
        .unwrap_or_default();
    for child in children {
        if state.spans.contains_key(&child) {
            end_cancelled(state, &child, at, reason);
        }
    }
}

/// Ends `key` as cancelled (UNSET + `kaos.cancelled`), its descendants first. A span already
/// waiting for a late fact keeps its own end time and status.
fn end_cancelled(state: &mut State, key: &Key, at: u64, reason: &str) {
    if let Some(o) = state.spans.get_mut(key)
        && o.closing_at.is_none()
    {
        o.cx.span().set_attributes([
            KeyValue::new(KAOS_CANCELLED, true),
            KeyValue::new(KAOS_CANCEL_REASON, reason.to_string()),
        ]);
        o.status = Status::Unset;
    }
    let at = state
        .spans
        .get(key)
        .and_then(|o| o.closing_at)
        .unwrap_or(at);
    close_children(state, key, at, reason);
    end_span(state, key, at);
}

/// Ends the OTel span of `key` exactly once (descendants first) and forgets it.
fn end_span(state: &mut State, key: &Key, at: u64) {
    close_children(state, key, at, "parent_ended");
    let Some(open) = state.spans.remove(key) else {
        return;
    };
    if state.by_span.get(&key.1) == Some(&key.0) {
        state.by_span.remove(&key.1);
    }
    if let Some(p) = open.parent.as_ref().and_then(|p| state.spans.get_mut(p)) {
        p.children.retain(|c| c != key);
    }
    if let Some(r) = state.runs.get_mut(&key.0) {
        r.open = r.open.saturating_sub(1);
        if r.turn.as_ref() == Some(key) {
            r.turn = None;
        }
        if r.pending_intent.as_ref() == Some(key) {
            r.pending_intent = None;
        }
        if r.open == 0 {
            state.runs.remove(&key.0);
        }
    }
    let span = open.cx.span();
    span.set_status(open.status);
    span.end_with_timestamp(system_time(at.max(open.start_ns)));
}

/// Before handling `event`: a waiting intent span of its run ends unless `event` is the
/// fact it waits for (or usage, or another classifier attempt); a waiting turn of its run
/// ends unless `event` is its summary.
fn settle_pending(state: &mut State, event: &Event) {
    let run = &event.run_id;
    let Some(r) = state.runs.get(run) else {
        return;
    };
    let waits_intent = matches!(
        &event.kind,
        EventKind::IntentClassified { .. } | EventKind::UsageObserved { .. }
    ) || matches!(&event.kind, EventKind::Span(s) if s.subject == SpanSubject::LlmCall
            && s.phase == SpanPhase::Start
            && s.attr_str("purpose") == Some("intent_classification"));
    if !waits_intent && let Some(ikey) = r.pending_intent.clone() {
        let at = state
            .spans
            .get(&ikey)
            .and_then(|o| o.closing_at)
            .unwrap_or(event.timestamp);
        end_span(state, &ikey, at);
    }
    let Some(r) = state.runs.get(run) else {
        return;
    };
    let is_summary = matches!(
        &event.kind,
        EventKind::TurnSummary(_) | EventKind::UsageObserved { .. }
    );
    if !is_summary
        && let Some(turn) = r.turn.clone()
        && let Some(at) = state.spans.get(&turn).and_then(|o| o.closing_at)
    {
        finish_turn_without_summary(state, run);
        end_span(state, &turn, at);
    }
}

/// A turn that ends without a summary takes the usage seen so far.
fn finish_turn_without_summary(state: &mut State, run: &Arc<str>) {
    let Some(r) = state.runs.get(run) else {
        return;
    };
    let (tokens, cost, unknown, tools) = (r.tokens, r.cost, r.cost_unknown, r.tool_calls);
    if let Some(open) = run_turn(state, run) {
        let span = open.cx.span();
        if tokens > 0 || tools > 0 {
            span.set_attribute(KeyValue::new(KAOS_TOKENS_USED, int(tokens)));
            span.set_attribute(KeyValue::new(KAOS_TOOL_CALL_COUNT, int(tools)));
        }
        if let (Some(c), false) = (cost, unknown) {
            span.set_attribute(KeyValue::new(KAOS_COST_USD, c));
        }
    }
}

impl Hook for OTelHook {
    fn name(&self) -> &str {
        "otel"
    }

    fn on_event(&self, event: &Event) -> HookAction {
        self.handle(event);
        HookAction::Continue
    }

    fn flush(&self) -> Result<(), HookError> {
        Ok(())
    }

    fn shutdown(&self) -> Result<(), HookError> {
        self.close_all("shutdown");
        Ok(())
    }
}
