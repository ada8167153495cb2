//! [`OTelHook`]: maps a turn's event stream onto OpenTelemetry spans (DESIGN §5).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use opentelemetry::trace::{
    Link, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, Tracer,
};
use opentelemetry::{Context, KeyValue};
use serde_json::Value;

use super::attributes::*;
use super::content::{CaptureContent, ContentPolicy, output_messages};
use super::mapping::{end_attributes, start_shape};
use super::shards::Shards;
pub(super) use super::state::Kind;
use super::state::{
    Key, Map, PAUSED_TURNS_KEPT, State, close_children, end_cancelled, end_span, insert, now_nanos,
    resolve, run_turn, run_turn_cx, settle_pending,
};
use super::tracer::HookTracer;
use super::{SpanNaming, parse_traceparent};
use crate::events::{Event, EventKind, SpanEvent, SpanPhase, SpanSubject, TurnOutcome, attr};
use crate::hooks::{Hook, HookAction, HookError};
use crate::naming::{INTENT_CLASSIFICATION_SPAN, wrapper_id, wrapper_name};
use crate::redact::Redactor;

/// OTel span id → our `(run_id, span_id)`, for replay.
pub(crate) type IdLog = HashMap<SpanId, (Arc<str>, Arc<str>)>;

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
/// * Runs are sharded by run id, each shard behind its own lock: concurrent runs do not
///   queue behind one mutex.
/// * [`Hook::otel_context`] answers with an open span's context, which the runner makes
///   current while that span's tool or model call runs: instrumentation inside (an HTTP
///   client, a tool's own spans) nests under `agent.tool_call.*` or `chat …`.
pub struct OTelHook {
    tracer: HookTracer,
    pub(super) naming: SpanNaming,
    pub(super) content: ContentPolicy,
    shards: Shards,
    /// session id → parent context for that session's root turns.
    session_parents: RwLock<Map<Arc<str>, Context>>,
    /// Whether `session_parents` may hold anything (skips its lock when never used).
    has_session_parents: AtomicBool,
    /// OTel span id → our `(run_id, span_id)`, recorded for replay.
    id_log: Option<Mutex<IdLog>>,
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
    /// `KAOS_CAPTURE_CONTENT`, else `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`
    /// (off when neither is set; see [`CaptureContent::from_vars`]).
    pub fn new<T>(tracer: T) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        Self {
            tracer: HookTracer::new(tracer),
            naming: SpanNaming::default(),
            content: ContentPolicy::new(CaptureContent::from_env()),
            shards: Shards::default(),
            session_parents: RwLock::new(Map::default()),
            has_session_parents: AtomicBool::new(false),
            id_log: None,
        }
    }

    /// Records which OTel span id each of our spans got (for replay's id rewrite).
    pub(crate) fn recording_ids(mut self) -> Self {
        self.id_log = Some(Mutex::new(HashMap::new()));
        self
    }

    /// The recorded OTel span id → `(run_id, span_id)` table.
    pub(crate) fn take_id_log(&self) -> IdLog {
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
                .insert(
                    cx.span().span_context().span_id(),
                    (key.0.clone(), key.1.clone()),
                );
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
        let mut parents = self
            .session_parents
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        parents.insert(Arc::from(session_id), parent);
        self.has_session_parents.store(true, Ordering::Release);
    }

    /// Forgets the parent set by [`OTelHook::set_session_parent`].
    pub fn clear_session_parent(&self, session_id: &str) {
        let mut parents = self
            .session_parents
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        parents.remove(session_id);
        self.has_session_parents
            .store(!parents.is_empty(), Ordering::Release);
    }

    fn session_parent(&self, session_id: &str) -> Option<Context> {
        if !self.has_session_parents.load(Ordering::Acquire) {
            return None;
        }
        self.session_parents
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(session_id)
            .cloned()
    }

    /// How many OTel spans are started and not yet ended.
    pub fn open_span_count(&self) -> usize {
        self.shards.sum(|s| s.spans.len())
    }

    /// How many runs have state (a run's state goes when its last span ends).
    pub fn tracked_runs(&self) -> usize {
        self.shards.sum(|s| s.runs.len())
    }

    /// The OTel context of one of our open spans (e.g. to parent provider HTTP spans).
    pub fn context_of(&self, run_id: &str, span_id: &str) -> Option<Context> {
        let state = self.shards.lock(run_id);
        // The map's own ids make the key: no allocation on this path (the runner asks for
        // every tool and model call).
        let key: Key = match state.by_span.get_key_value(span_id) {
            Some((span, run)) if &**run == run_id => Key::new(run.clone(), span.clone()),
            _ => Key::new(Arc::from(run_id), Arc::from(span_id)),
        };
        state.spans.get(&key).map(|o| o.cx.clone())
    }

    /// Ends every open span now (status UNSET, `kaos.cancel_reason=reason`), children first.
    /// Returns how many ended. Called by [`Hook::shutdown`].
    pub fn close_all(&self, reason: &str) -> usize {
        self.close_all_at(reason, now_nanos())
    }

    /// [`OTelHook::close_all`] with an explicit end time (unix ns).
    pub(crate) fn close_all_at(&self, reason: &str, now: u64) -> usize {
        let mut ended = 0;
        for i in 0..super::shards::SHARDS {
            let mut state = self.shards.lock_at(i);
            ended += Self::close_shard(&mut state, reason, now);
            let foreign = std::mem::take(&mut state.foreign);
            drop(state);
            ended += self.shards.cascade(foreign);
        }
        ended
    }

    /// Ends every open span of one shard (those whose parent is not in it first).
    fn close_shard(state: &mut State, reason: &str, now: u64) -> usize {
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
            end_cancelled(state, &key, at, reason);
        }
        state.runs.clear();
        before - state.spans.len()
    }

    /// Handles one event under its run's shard lock (and no other).
    fn handle(&self, event: &Event) {
        let run = &event.run_id;
        let home = Shards::index(run);
        let start = match &event.kind {
            EventKind::Span(span) if span.phase == SpanPhase::Start => Some(span),
            _ => None,
        };
        // A resumed turn's link: the paused turn's context, kept in the paused run's shard.
        let link = start
            .filter(|s| s.subject == SpanSubject::Turn)
            .and_then(|s| s.attr_str("resumed_from"))
            .and_then(|paused| self.shards.lock(paused).paused_turns.remove(paused));
        let mut state = self.shards.lock_at(home);
        // A turn or intent span waiting for a late fact ends when something else comes.
        settle_pending(&mut state, event);
        match start {
            Some(span) => {
                let mut foreign = None;
                // The first span of a nested run: its parent may live in another shard.
                if let Some(parent) = &span.parent_span_id
                    && state.runs.get(run).is_none_or(|r| r.turn.is_none())
                    && resolve(&state, run, parent).is_none()
                {
                    let pending = std::mem::take(&mut state.foreign);
                    drop(state);
                    self.shards.cascade(pending);
                    let child = Key::new(run.clone(), span.span_id.clone());
                    foreign = self.shards.find_foreign_parent(parent, home, &child);
                    state = self.shards.lock_at(home);
                }
                self.on_start(&mut state, event, span, foreign, link);
            }
            None => self.apply(&mut state, event),
        }
        let pending = std::mem::take(&mut state.foreign);
        drop(state);
        if !pending.is_empty() {
            self.shards.cascade(pending);
        }
    }

    /// Everything but a START, under the run's shard lock.
    fn apply(&self, state: &mut State, event: &Event) {
        let run = &event.run_id;
        match &event.kind {
            EventKind::Span(span) if span.phase == SpanPhase::Start => {}
            EventKind::Span(span) => self.on_end(state, event, span),
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
                    .get_mut(run)
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
                        end_span(state, &key, at);
                    }
                    None => {
                        // No classifier call seen (heuristic): an instant span under the turn.
                        let parent = run_turn_cx(state, run);
                        let cx = self.tracer.start(
                            SpanBuilder::from_name(INTENT_CLASSIFICATION_SPAN)
                                .with_kind(SpanKind::Internal)
                                .with_start_time(system_time(event.timestamp))
                                .with_attributes(attrs),
                            &parent,
                        );
                        cx.span().set_status(Status::Ok);
                        cx.span().end_with_timestamp(system_time(event.timestamp));
                    }
                }
                if let Some(turn) = state.runs.get(run).and_then(|r| r.turn.clone())
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
                if let Some(r) = state.runs.get_mut(run) {
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
                    .find(|(k, o)| k.0 == *run && o.call_id.as_deref() == Some(call_id.as_str()));
                if let Some((_, open)) = waiting {
                    open.cx
                        .span()
                        .set_attribute(KeyValue::new(KAOS_APPROVAL_REQUIRED, true));
                }
            }
            EventKind::BudgetExceeded { kind, reason, .. } => {
                if let Some(open) = run_turn(state, run) {
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
                if let Some(turn) = state.runs.get(run).and_then(|r| r.turn.clone())
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
                let Some(turn) = state.runs.get(run).and_then(|r| r.turn.clone()) else {
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
                        && let Some(text) = self
                            .content
                            .render_messages(&output_messages(&summary.text, "stop"))
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
                end_span(state, &turn, at);
            }
            EventKind::PlanProposed { .. }
            | EventKind::TextDelta { .. }
            | EventKind::ThinkingDelta { .. }
            | EventKind::TextRetracted { .. }
            | EventKind::PatternMismatch { .. } => {}
        }
    }

    /// The context of a span with no open parent: a turn continues a `traceparent` or its
    /// session's parent; anything else starts from the caller's current context
    /// ([`ambient_context`]).
    fn root_context(&self, event: &Event, span: &SpanEvent) -> Context {
        if span.subject == SpanSubject::Turn {
            if let Some(cx) = span.attr_str("traceparent").and_then(parse_traceparent) {
                return cx;
            }
            if let Some(cx) = self.session_parent(&event.session_id) {
                return cx;
            }
        }
        ambient_context()
    }

    /// A START. `foreign` is its parent found in another shard (a nested run's first span),
    /// `link` the paused turn a resumed turn continues.
    fn on_start(
        &self,
        state: &mut State,
        event: &Event,
        span: &SpanEvent,
        foreign: Option<(Key, Context)>,
        link: Option<SpanContext>,
    ) {
        let run = &event.run_id;
        let key = Key::new(run.clone(), span.span_id.clone());
        if state.spans.contains_key(&key) {
            return; // A repeated START: keep the first.
        }
        // The named parent if it is open, else (below a turn) the run's open turn.
        let mut parent_key = span
            .parent_span_id
            .as_ref()
            .and_then(|p| resolve(state, run, p))
            .or_else(|| match span.subject {
                SpanSubject::Turn => None,
                _ => state.runs.get(run).and_then(|r| r.turn.clone()),
            });
        let mut parent_cx = match parent_key.as_ref().and_then(|k| state.spans.get(k)) {
            Some(open) => open.cx.clone(),
            None => match foreign {
                Some((key, cx)) => {
                    parent_key = Some(key);
                    cx
                }
                None => self.root_context(event, span),
            },
        };
        let a = &span.attributes;
        let t = system_time(event.timestamp);
        let kind = Kind::from(span.subject);

        // The classifier's call sits inside an `agent.intent_classification` span.
        if let Some(wrapper) = wrapper_name(span.subject, a) {
            let existing = state
                .runs
                .get_mut(run)
                .and_then(|r| r.pending_intent.take());
            let intent_key = match existing {
                Some(k) if state.spans.contains_key(&k) => {
                    if let Some(o) = state.spans.get_mut(&k) {
                        o.closing_at = None;
                    }
                    k
                }
                _ => {
                    let ikey = Key::new(run.clone(), Arc::from(wrapper_id(&span.span_id)));
                    let cx = self.tracer.start(
                        SpanBuilder::from_name(wrapper)
                            .with_kind(SpanKind::Internal)
                            .with_start_time(t),
                        &parent_cx,
                    );
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
                .push((span.span_id.clone(), intent_key.clone()));
            if let Some(o) = state.spans.get(&intent_key) {
                parent_cx = o.cx.clone();
            }
            parent_key = Some(intent_key);
        }

        let (name, otel_kind, attrs) = start_shape(self.naming, &self.content, event, span);
        let mut builder = SpanBuilder::from_name(name)
            .with_kind(otel_kind)
            .with_start_time(t)
            .with_attributes(attrs);
        // A resumed turn links to the paused turn it continues (when this hook saw it).
        if kind == Kind::Turn
            && let Some(sc) = link
        {
            builder = builder.with_links(vec![Link::with_context(sc)]);
        }
        let cx = self.tracer.start(builder, &parent_cx);
        self.log_id(&cx, &key);
        insert(state, key.clone(), cx, kind, parent_key, event.timestamp);
        match kind {
            Kind::Turn => {
                // `insert` above made the run's state.
                if let Some(r) = state.runs.get_mut(run) {
                    r.turn = Some(key);
                }
            }
            Kind::Tool => {
                if let Some(open) = state.spans.get_mut(&key) {
                    open.call_id = attr(a, "call_id")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                if self.content.captures()
                    && let Some(args) = attr(a, "arguments")
                    && let Some(text) = self.content.render(args.clone())
                    && let Some(open) = state.spans.get(&key)
                {
                    open.cx
                        .span()
                        .set_attribute(KeyValue::new(GEN_AI_TOOL_CALL_ARGUMENTS, text));
                }
                if let Some(r) = state.runs.get_mut(run) {
                    r.tool_calls += 1;
                }
            }
            _ => {}
        }
    }

    fn on_end(&self, state: &mut State, event: &Event, span: &SpanEvent) {
        let run = &event.run_id;
        let key = Key::new(run.clone(), span.span_id.clone());
        let Some(open) = state.spans.get_mut(&key) else {
            return; // An end without a START (or a second end): nothing to close.
        };
        if open.closing_at.is_some() {
            return; // Already ended; waiting for its late fact.
        }
        let otel = open.cx.span();
        let a = &span.attributes;
        let mut ends = std::mem::take(&mut state.end_attrs);
        end_attributes(&self.content, open.kind, span, &mut ends);
        otel.set_attributes(ends.drain(..));
        state.end_attrs = ends;
        if open.kind == Kind::Llm
            && let Some(at) = attr(a, "first_chunk_unix_nano").and_then(Value::as_u64)
        {
            // The first chunk's moment, recorded when the span ends (the event stream says
            // when it was; the exported span is the same as if it had been added live).
            let ttfc = attr(a, "time_to_first_chunk_ms").and_then(Value::as_f64);
            otel.add_event_with_timestamp(
                EVENT_FIRST_CHUNK,
                system_time(at),
                ttfc.map(|ms| KeyValue::new(GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ms / 1000.0))
                    .into_iter()
                    .collect(),
            );
        }
        let duration_ms = span
            .duration_ms
            .unwrap_or_else(|| event.timestamp.saturating_sub(open.start_ns) as f64 / 1_000_000.0);
        if matches!(open.kind, Kind::Tool | Kind::Step) {
            otel.set_attribute(KeyValue::new(KAOS_DURATION_MS, duration_ms));
        }
        let error = span.error.as_ref();
        let mut paused_turn = None;
        open.status = match span.phase {
            SpanPhase::Start | SpanPhase::Complete => {
                let is_error = attr(a, "is_error")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let outcome = attr(a, "outcome").and_then(Value::as_str);
                if is_error {
                    Status::error(
                        self.content.short(
                            attr(a, "result_summary")
                                .and_then(Value::as_str)
                                .unwrap_or("tool error"),
                        ),
                    )
                } else if outcome == Some("failed") {
                    Status::error("turn failed")
                } else if outcome == Some("paused") {
                    if open.kind == Kind::Turn {
                        paused_turn = Some(open.cx.span().span_context().clone());
                    }
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
                let reason = attr(a, "cancel_reason")
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
        if let Some(sc) = paused_turn {
            if state.paused_turns.len() >= PAUSED_TURNS_KEPT {
                state.paused_turns.clear();
            }
            state.paused_turns.insert(run.clone(), sc);
        }
        if kind == Kind::Tool
            && self.content.captures()
            && let Some(result) = attr(a, "result_summary")
            && let Some(text) = self.content.render(result.clone())
        {
            otel.set_attribute(KeyValue::new(GEN_AI_TOOL_CALL_RESULT, text));
        }
        match kind {
            Kind::Llm => {
                let intent = state.runs.get_mut(run).and_then(|r| {
                    let i = r
                        .intent_of_llm
                        .iter()
                        .position(|(llm, _)| *llm == span.span_id)?;
                    Some(r.intent_of_llm.swap_remove(i).1)
                });
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
                    } else if let Some(r) = state.runs.get_mut(run) {
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

impl Hook for OTelHook {
    fn name(&self) -> &str {
        "otel"
    }

    fn on_event(&self, event: &Event) -> HookAction {
        self.handle(event);
        HookAction::Continue
    }

    fn captures_content(&self) -> bool {
        self.content.captures()
    }
    fn otel_context(&self, run_id: &str, span_id: &str) -> Option<Context> {
        self.context_of(run_id, span_id)
    }

    fn flush(&self) -> Result<(), HookError> {
        Ok(())
    }

    fn shutdown(&self) -> Result<(), HookError> {
        self.close_all("shutdown");
        Ok(())
    }
}

/// The caller's current OTel context: the attached [`Context::current`] when it holds a span,
/// else (feature `tracing`) the OTel context of the current `tracing` span, as bridged by
/// `tracing-opentelemetry`.
pub fn ambient_context() -> Context {
    let cx = Context::current();
    #[cfg(feature = "tracing")]
    if !cx.span().span_context().is_valid() {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let from_tracing = tracing::Span::current().context();
        if from_tracing.span().span_context().is_valid() {
            return from_tracing;
        }
    }
    cx
}
