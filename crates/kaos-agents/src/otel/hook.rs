//! [`OTelHook`]: maps a turn's event stream onto OpenTelemetry spans (DESIGN §5).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use opentelemetry::trace::{
    Link, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, Tracer,
};
use opentelemetry::{Context, KeyValue};
use serde_json::Value;

use super::attributes::*;
use super::content::{CaptureContent, ContentPolicy, output_messages};
use super::mapping::{
    end_attributes, request_content, start_content, start_shape, turn_finish_reason,
};
use super::replay::IdLog;
use super::shards::Shards;
pub(super) use super::state::Kind;
use super::state::{
    Key, Map, Open, PAUSED_TURNS_KEPT, Parent, RunState, Search, Shared, State, close_children,
    end_cancelled, end_span, hash_id, insert, now_nanos, passes_by, same, settle_pending,
};
use super::tracer::{HookTracer, ambient_context, builder};
use super::{SpanNaming, parse_trace_context};
use crate::events::{Event, EventKind, SpanEvent, SpanPhase, SpanSubject, TurnOutcome, attr};
use crate::hooks::{Hook, HookAction, HookError};
use crate::naming::{INTENT_CLASSIFICATION_SPAN, wrapper_id, wrapper_name};
use crate::redact::Redactor;

/// Maps kaos turn events onto OpenTelemetry spans.
///
/// * Span times are the events' own timestamps.
/// * Every span that starts ends exactly once; ending a span first ends its open
///   descendants (status UNSET, `kaos.cancelled=true`, `kaos.cancel_reason=parent_ended`).
/// * Cancelled spans (stream dropped, task aborted, pause for approval) keep status
///   **UNSET** (GenAI practice: a deferral is not an error) and get `kaos.cancelled=true`
///   and `kaos.cancel_reason`. Error phases and `RunError` set ERROR with a message;
///   successful ends set OK.
/// * State is kept per run (its open spans in a short vector) and dropped when the run has
///   no open span, so memory does not grow with finished turns
///   ([`OTelHook::open_span_count`], [`OTelHook::tracked_runs`]).
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
    pub(super) id_log: Option<Mutex<IdLog>>,
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
            naming: SpanNaming::from_env(),
            content: ContentPolicy::new(CaptureContent::from_env()),
            shards: Shards::default(),
            session_parents: RwLock::new(Map::default()),
            has_session_parents: AtomicBool::new(false),
            id_log: None,
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
    /// span, e.g. from [`super::parse_traceparent`]). A `traceparent` attribute on the turn START
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
        self.shards.sum(State::open_spans)
    }

    /// How many runs have state (a run's state goes when its last span ends).
    pub fn tracked_runs(&self) -> usize {
        self.shards.sum(|s| s.runs.len())
    }

    /// The OTel context of one of our open spans (e.g. to parent provider HTTP spans).
    pub fn context_of(&self, run_id: &str, span_id: &str) -> Option<Context> {
        // No allocation on this path (the runner asks for every tool and model call).
        let hash = hash_id(run_id);
        let state = self.shards.lock_at(Shards::index_of(hash));
        let run = state.runs.get(run_id, hash)?;
        run.spans
            .iter()
            .find(|o| &*o.id == span_id)
            .map(|o| o.cx.clone())
    }

    /// The OTel context of run `run_id`'s open turn span: for what belongs to the turn as a
    /// whole (its usage, its summary, a run error), e.g. a log line's trace and span ids.
    pub fn turn_context_of(&self, run_id: &str) -> Option<Context> {
        let hash = hash_id(run_id);
        let state = self.shards.lock_at(Shards::index_of(hash));
        state.runs.get(run_id, hash)?.turn().map(|o| o.cx.clone())
    }

    /// Ends every open span now (status UNSET, `kaos.cancel_reason=reason`), children first.
    /// Returns how many ended. Called by [`Hook::shutdown`].
    pub fn close_all(&self, reason: &str) -> usize {
        self.close_all_at(reason, now_nanos())
    }

    /// [`OTelHook::close_all`] with an explicit end time (unix ns).
    pub(crate) fn close_all_at(&self, reason: &str, now: u64) -> usize {
        let mut ended = 0;
        // First every span but nested runs' first spans, which their parents end (with the
        // parent's time); then whatever is left (a nested run whose parent was not seen).
        for skip_nested in [true, false] {
            for i in 0..super::shards::SHARDS {
                let mut state = self.shards.lock_at(i);
                ended += state.close(reason, now, skip_nested);
                let foreign = std::mem::take(&mut state.shared.foreign);
                drop(state);
                ended += self.shards.cascade(foreign);
            }
        }
        ended
    }

    /// Handles one event under its run's shard lock (and no other).
    fn handle(&self, event: &Event) {
        // Streamed text and the like put nothing on a span: no lock, no lookup (a streamed
        // answer is hundreds of deltas). What waits for a late fact is settled by the next
        // event that does count, with the same recorded end time.
        if passes_by(&event.kind) {
            return;
        }
        let run = &event.run_id;
        let hash = hash_id(run);
        let home = Shards::index_of(hash);
        let start = match &event.kind {
            EventKind::Span(span) if span.phase == SpanPhase::Start => Some(span),
            _ => None,
        };
        // A resumed turn's link: the paused turn's context, kept in the paused run's shard.
        // (Or, from another process, the paused turn's traceparent the run state kept.)
        let turn_start = start.filter(|s| s.subject == SpanSubject::Turn);
        let link = turn_start
            .and_then(|s| s.attr_str("resumed_from"))
            .and_then(|paused| self.shards.lock(paused).shared.paused_turns.remove(paused))
            .or_else(|| {
                let tp = turn_start?.attr_str("resumed_traceparent")?;
                Some(parse_trace_context(tp, None)?.span().span_context().clone())
            });
        let mut state = self.shards.lock_at(home);
        match start {
            Some(span) => {
                let parent = match &span.parent_span_id {
                    Some(parent) => {
                        let (found, searched) =
                            Self::find_parent(&mut state, event, hash, span, parent);
                        match found {
                            Some(found) => Some(found),
                            // The first span of a nested run: its parent may be in another shard.
                            None if searched => {
                                let pending = std::mem::take(&mut state.shared.foreign);
                                drop(state);
                                self.shards.cascade(pending);
                                let child = Key {
                                    run: run.clone(),
                                    span: span.span_id.clone(),
                                };
                                let found = self
                                    .shards
                                    .find_foreign_parent(parent, home, &child)
                                    .map(Parent::Nested);
                                state = self.shards.lock_at(home);
                                found
                            }
                            None => None,
                        }
                    }
                    None => None,
                };
                let (rs, shared) = state.run_entry(run, hash);
                settle_pending(rs, shared, event);
                self.on_start(rs, shared, event, span, parent, link);
            }
            None => {
                let State { runs, shared } = &mut *state;
                let done = match runs.get_mut(run, hash) {
                    Some(rs) => {
                        settle_pending(rs, shared, event);
                        self.apply(Some(&mut *rs), shared, event);
                        rs.spans.is_empty()
                    }
                    None => {
                        self.apply(None, shared, event);
                        false
                    }
                };
                // The run's last span ended: its state goes (a START always leaves one open).
                if done {
                    state.retire(run, hash);
                }
            }
        }
        let pending = std::mem::take(&mut state.shared.foreign);
        drop(state);
        if !pending.is_empty() {
            self.shards.cascade(pending);
        }
    }

    /// The parent of a START that names one: open in its own run, or (a nested run's span)
    /// in another run of this shard. The second value says whether the other shards are
    /// worth searching: the parent was not found and this is the run's first span.
    fn find_parent(
        state: &mut State,
        event: &Event,
        hash: u64,
        span: &SpanEvent,
        parent: &Arc<str>,
    ) -> (Option<Parent>, bool) {
        let run = state.runs.get(&event.run_id, hash);
        if run.is_some_and(|r| r.find(parent).is_some()) {
            return (Some(Parent::Local(parent.clone())), false);
        }
        let first = run.is_none_or(|r| r.turn().is_none());
        let child = Key {
            run: event.run_id.clone(),
            span: span.span_id.clone(),
        };
        let found = state
            .find_nest_parent(parent, &child, Search::Index)
            // A later span of a nested run looks no further than its own shard.
            .or_else(|| (!first).then(|| state.find_nest_parent(parent, &child, Search::Scan))?);
        match found {
            Some(cx) => (Some(Parent::Nested(cx)), false),
            None => (None, first),
        }
    }

    /// Everything but a START, under the run's shard lock. `run` is the event's run state
    /// (none when no span of the run is open).
    fn apply(&self, mut run: Option<&mut RunState>, shared: &mut Shared, event: &Event) {
        match &event.kind {
            EventKind::Span(span) if span.phase == SpanPhase::Start => {}
            EventKind::Span(span) => {
                if let Some(run) = run {
                    self.on_end(run, shared, event, span);
                }
            }
            EventKind::IntentClassified {
                intent,
                confidence,
                reasoning,
            } => {
                let attrs = [
                    KeyValue::new(KAOS_INTENT, intent.as_str()),
                    KeyValue::new(KAOS_CONFIDENCE, *confidence),
                    KeyValue::new(KAOS_REASONING, self.content.short(reasoning)),
                ];
                let pending = run.as_deref_mut().and_then(|r| r.pending_intent.take());
                match (pending, run.as_deref_mut()) {
                    (Some(id), Some(rs)) => {
                        let mut at = event.timestamp;
                        if let Some(open) = rs.get_mut(&id) {
                            open.cx.span().set_attributes(attrs);
                            open.status = Status::Ok;
                            at = open.closing_at.unwrap_or(at);
                        }
                        end_span(rs, shared, &id, at);
                    }
                    _ => {
                        // No classifier call seen (heuristic): an instant span under the turn.
                        let parent = RunState::turn_cx(run.as_deref());
                        let cx = self.tracer.start(
                            SpanBuilder::from_name(INTENT_CLASSIFICATION_SPAN)
                                .with_kind(SpanKind::Internal)
                                .with_start_time(system_time(event.timestamp))
                                .with_attributes(attrs.to_vec()),
                            &parent,
                        );
                        cx.span().set_status(Status::Ok);
                        cx.span().end_with_timestamp(system_time(event.timestamp));
                    }
                }
                if let Some(open) = run.as_deref().and_then(RunState::turn) {
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
                if let Some(r) = run {
                    r.tokens += total_tokens;
                    match cost_usd {
                        Some(c) => r.cost = Some(r.cost.unwrap_or(0.0) + c),
                        None => r.cost_unknown = true,
                    }
                }
            }
            EventKind::ToolCallApprovalRequired { call_id, .. } => {
                let waiting = run.as_deref().and_then(|r| {
                    r.spans
                        .iter()
                        .find(|o| o.call_id.as_deref() == Some(call_id.as_str()))
                });
                if let Some(open) = waiting {
                    open.cx
                        .span()
                        .set_attribute(KeyValue::new(KAOS_APPROVAL_REQUIRED, true));
                }
            }
            EventKind::BudgetExceeded { kind, reason, .. } => {
                if let Some(open) = run.as_deref().and_then(RunState::turn) {
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
                if let Some(open) = run.and_then(RunState::turn_mut) {
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
                let Some(run) = run else {
                    return;
                };
                let Some(open) = run.turn_mut() else {
                    return;
                };
                let turn = open.id.clone();
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
                    && let Some(text) = self.content.render_messages(&output_messages(
                        &summary.text,
                        turn_finish_reason(summary.outcome),
                    ))
                {
                    span.set_attribute(KeyValue::new(GEN_AI_OUTPUT_MESSAGES, text));
                    if let Some(text) = self.content.render_text(&summary.text) {
                        span.set_attribute(KeyValue::new(OUTPUT_VALUE, text));
                    }
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
                let at = open.closing_at.unwrap_or(event.timestamp);
                end_span(run, shared, &turn, at);
            }
            // Not handed over by `handle` ([`passes_by`]).
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
            if let Some(cx) = span
                .attr_str("traceparent")
                .and_then(|tp| parse_trace_context(tp, span.attr_str("tracestate")))
            {
                return cx;
            }
            if let Some(cx) = self.session_parent(&event.session_id) {
                return cx;
            }
        }
        if self.id_log.is_some() {
            return Context::new(); // A replay: whoever calls it is not the turn's parent.
        }
        ambient_context()
    }

    /// A START. `parent` is its open parent span (in its run, or the span of another run a
    /// nested run's first span starts under), `link` the paused turn a resumed turn continues.
    fn on_start(
        &self,
        run: &mut RunState,
        shared: &mut Shared,
        event: &Event,
        span: &SpanEvent,
        parent: Option<Parent>,
        link: Option<SpanContext>,
    ) {
        if run.find(&span.span_id).is_some() {
            return; // A repeated START: keep the first.
        }
        // The named parent if it is open, else (below a turn) the run's open turn.
        let parent = parent.or_else(|| match span.subject {
            SpanSubject::Turn => None,
            _ => run.turn().map(|t| Parent::Local(t.id.clone())),
        });
        let (mut parent_id, nested, mut parent_cx) = match parent {
            Some(Parent::Local(id)) => match run.get(&id) {
                Some(open) => {
                    let cx = open.cx.clone();
                    (Some(id), false, cx)
                }
                None => (None, false, self.root_context(event, span)),
            },
            Some(Parent::Nested(cx)) => (None, true, cx),
            None => (None, false, self.root_context(event, span)),
        };
        let a = &span.attributes;
        let t = system_time(event.timestamp);
        let kind = Kind::from(span.subject);

        // The classifier's call sits inside an `agent.intent_classification` span.
        if let Some(wrapper) = wrapper_name(span.subject, a) {
            let waiting = run.pending_intent.take();
            let intent_id = match waiting.and_then(|id| run.get_mut(&id)) {
                Some(open) => {
                    open.closing_at = None;
                    open.id.clone()
                }
                None => {
                    let id: Arc<str> = Arc::from(wrapper_id(&span.span_id));
                    let cx = self
                        .tracer
                        .start(builder(wrapper, SpanKind::Internal, t), &parent_cx);
                    self.log_id(&cx, &run.id, &id);
                    let mut open = Open::new(id.clone(), cx, Kind::Intent, event.timestamp);
                    open.parent = parent_id.take();
                    open.nested_in_other_run = nested;
                    insert(run, shared, open);
                    id
                }
            };
            if let Some(open) = run.get(&intent_id) {
                parent_cx = open.cx.clone();
            }
            run.intent_of_llm
                .push((span.span_id.clone(), intent_id.clone()));
            parent_id = Some(intent_id);
        }

        let (name, otel_kind, attrs) =
            start_shape(self.naming, &self.content, event, span, &mut shared.strings);
        let mut b = builder(name, otel_kind, t);
        b.attributes = Some(attrs);
        // A resumed turn links to the paused turn it continues (when this hook saw it).
        if kind == Kind::Turn
            && let Some(sc) = link
        {
            b.links = Some(vec![Link::with_context(sc)]);
        }
        let cx = self.tracer.start(b, &parent_cx);
        self.log_id(&cx, &run.id, &span.span_id);
        // A model call's request goes on when its span ends (a corrective retry may
        // replace it).
        if kind == Kind::Llm && self.content.captures() {
            request_content(
                &self.content,
                a,
                shared.deferred_mut(&run.id, &span.span_id),
            );
        }
        let mut open = Open::new(span.span_id.clone(), cx, kind, event.timestamp);
        open.nested_in_other_run = nested && parent_id.is_none();
        open.parent = parent_id;
        if self.content.captures() {
            let mut content = Vec::new();
            start_content(&self.content, kind, a, &mut content);
            if !content.is_empty() {
                open.cx.span().set_attributes(content);
            }
        }
        if kind == Kind::Tool {
            open.call_id = attr(a, "call_id")
                .and_then(Value::as_str)
                .map(str::to_string);
            run.tool_calls += 1;
        }
        insert(run, shared, open);
    }

    fn on_end(&self, run: &mut RunState, shared: &mut Shared, event: &Event, span: &SpanEvent) {
        let Some(open) = run.get_mut(&span.span_id) else {
            return; // An end without a START (or a second end): nothing to close.
        };
        if open.closing_at.is_some() {
            return; // Already ended; waiting for its late fact.
        }
        let id = open.id.clone();
        let otel = open.cx.span();
        let mut ends = std::mem::take(&mut shared.end_attrs);
        let facts = end_attributes(
            &self.content,
            open.kind,
            span,
            &mut ends,
            &mut shared.strings,
        );
        otel.set_attributes(ends.drain(..));
        shared.end_attrs = ends;
        if open.kind == Kind::Llm
            && let Some(at) = facts.first_chunk_unix_nano
        {
            // The first chunk's moment, recorded when the span ends (the event stream says
            // when it was; the exported span is the same as if it had been added live).
            otel.add_event_with_timestamp(
                EVENT_FIRST_CHUNK,
                system_time(at),
                facts
                    .time_to_first_chunk_ms
                    .map(|ms| KeyValue::new(GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ms / 1000.0))
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
                let outcome = facts.outcome;
                if facts.is_error == Some(true) {
                    Status::error(
                        self.content.short(
                            facts
                                .result_summary
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
                let reason = facts
                    .cancel_reason
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
        if open.kind == Kind::Tool
            && self.content.captures()
            && let Some(result) = facts.result_summary
            && let Some(text) = self.content.render_result(result)
        {
            otel.set_attribute(KeyValue::new(GEN_AI_TOOL_CALL_RESULT, text));
        }
        let kind = open.kind;
        // After a corrective retry the completion carries the request its last attempt
        // answered: it replaces the START's.
        if kind == Kind::Llm && self.content.captures() {
            request_content(
                &self.content,
                &span.attributes,
                shared.deferred_mut(&run.id, &id),
            );
        }
        if let Some(sc) = paused_turn {
            if shared.paused_turns.len() >= PAUSED_TURNS_KEPT {
                shared.paused_turns.clear();
            }
            shared.paused_turns.insert(run.id.clone(), sc);
        }
        match kind {
            Kind::Llm => {
                let intent = run
                    .intent_of_llm
                    .iter()
                    .position(|(llm, _)| same(llm, &id))
                    .map(|i| run.intent_of_llm.swap_remove(i).1);
                end_span(run, shared, &id, event.timestamp);
                if let Some(intent) = intent {
                    if span.phase == SpanPhase::Cancelled {
                        // Cut short with its call, and marked so (the same reason).
                        let reason = facts.cancel_reason.unwrap_or("cancelled");
                        end_cancelled(run, shared, &intent, event.timestamp, reason);
                    } else if let Some(o) = run.get_mut(&intent) {
                        // Waits for IntentClassified; ends at this call's end time.
                        o.closing_at = Some(event.timestamp);
                        o.status = match span.phase {
                            SpanPhase::Error => Status::error("intent classification failed"),
                            _ => Status::Unset,
                        };
                        run.pending_intent = Some(intent);
                    }
                }
            }
            Kind::Turn if span.phase != SpanPhase::Cancelled => {
                // Close what is still open inside, then wait for the TurnSummary.
                close_children(run, shared, &id, event.timestamp, "parent_ended");
                if let Some(o) = run.get_mut(&id) {
                    o.closing_at = Some(event.timestamp);
                }
            }
            _ => end_span(run, shared, &id, event.timestamp),
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
