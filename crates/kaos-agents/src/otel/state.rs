//! The OTel hook's bookkeeping: open spans keyed by `(run_id, span_id)`, per-run state,
//! and the operations that end spans (children first) and settle late facts. One [`State`]
//! holds the runs of one shard ([`super::shards`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Status, TraceContextExt};

use super::attributes::*;
use super::shards::{Foreign, Shards};
use crate::events::{Event, EventKind, SpanPhase, SpanSubject};

/// `(run_id, span_id)`: our span ids scoped by run, so concurrent runs never collide. The
/// hash of the two ids is computed once, when the key is made: a key is looked up in several
/// maps several times per event, and rehashing ~50 bytes each time was a tenth of the hook.
#[derive(Clone, Debug)]
pub(super) struct Key(pub(super) Arc<str>, pub(super) Arc<str>, u64);

impl Key {
    /// The key of span `span` of run `run`.
    pub(super) fn new(run: Arc<str>, span: Arc<str>) -> Self {
        let mut h = IdHasher::default();
        run.hash(&mut h);
        span.hash(&mut h);
        let hash = h.finish();
        Self(run, span, hash)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        // The hash first: different keys almost never share it.
        // Then the ids' pointers: the hook's keys mostly share the scope's own `Arc`s, so
        // the string comparison runs only for keys built from other copies of the ids.
        self.2 == other.2
            && (Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0)
            && (Arc::ptr_eq(&self.1, &other.1) || self.1 == other.1)
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.2);
    }
}

/// The hook's maps: keyed by our own ids, a handful of entries per open turn, looked up
/// several times per event, so a word-at-a-time multiplicative hash (FxHash's) instead of
/// SipHash, which was a third of the hook's cost.
pub(super) type Map<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// FxHash (rustc's): rotate, xor a word, multiply.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

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
    fn write_u64(&mut self, n: u64) {
        self.add(n);
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
pub(super) struct Open {
    pub(super) cx: Context,
    pub(super) kind: Kind,
    pub(super) parent: Option<Key>,
    pub(super) children: Vec<Key>,
    pub(super) start_ns: u64,
    /// Logically ended at this time; waits for a late fact (`IntentClassified` for the
    /// intent span, `TurnSummary` for the turn) before it is ended with this timestamp.
    pub(super) closing_at: Option<u64>,
    /// The status to end with when nothing more specific arrives.
    pub(super) status: Status,
    /// A tool span's call id.
    pub(super) call_id: Option<String>,
}

#[derive(Default)]
pub(super) struct RunState {
    pub(super) turn: Option<Key>,
    /// The intent span waiting for `IntentClassified`.
    pub(super) pending_intent: Option<Key>,
    /// Classifier llm span id → its intent span key (one entry per classifier call in
    /// flight, so a short list rather than a hash map, which would allocate a table per turn).
    pub(super) intent_of_llm: Vec<(Arc<str>, Key)>,
    pub(super) tokens: u64,
    pub(super) cost: Option<f64>,
    pub(super) cost_unknown: bool,
    pub(super) tool_calls: u64,
    pub(super) open: usize,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) spans: Map<Key, Open>,
    /// span id → run id, to find a parent that lives in another run (sub-agent, handoff).
    pub(super) by_span: Map<Arc<str>, Arc<str>>,
    pub(super) runs: Map<Arc<str>, RunState>,
    /// run id → span context of a turn that ended paused, so the turn that resumes it can
    /// link to it (bounded: cleared when it reaches [`PAUSED_TURNS_KEPT`]).
    pub(super) paused_turns: Map<Arc<str>, opentelemetry::trace::SpanContext>,
    /// Open descendants in other shards of spans that ended here, for
    /// [`Shards::cascade`] once this shard's lock is released.
    pub(super) foreign: Vec<Foreign>,
    /// The END attributes being added (kept empty between events, reused for its capacity).
    pub(super) end_attrs: Vec<KeyValue>,
}

/// How many paused turns one shard's [`State::paused_turns`] remembers.
pub(super) const PAUSED_TURNS_KEPT: usize = 256;

pub(super) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Finds the open span `span_id`: in `run` first, then in any run (a cross-run parent).
pub(super) fn resolve(state: &State, run: &Arc<str>, span_id: &Arc<str>) -> Option<Key> {
    let key = Key::new(run.clone(), span_id.clone());
    if state.spans.contains_key(&key) {
        return Some(key);
    }
    let other = state.by_span.get(span_id)?;
    let key = Key::new(other.clone(), span_id.clone());
    state.spans.contains_key(&key).then_some(key)
}

pub(super) fn run_turn<'a>(state: &'a State, run: &Arc<str>) -> Option<&'a Open> {
    let turn = state.runs.get(run)?.turn.as_ref()?;
    state.spans.get(turn)
}

pub(super) fn run_turn_cx(state: &State, run: &Arc<str>) -> Context {
    run_turn(state, run)
        .map(|o| o.cx.clone())
        .unwrap_or_else(Context::current)
}

pub(super) fn insert(
    state: &mut State,
    key: Key,
    cx: Context,
    kind: Kind,
    parent: Option<Key>,
    start: u64,
) {
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
pub(super) fn close_children(state: &mut State, key: &Key, at: u64, reason: &str) {
    let children = state
        .spans
        .get_mut(key)
        .map(|o| std::mem::take(&mut o.children))
        .unwrap_or_default();
    for child in children {
        if state.spans.contains_key(&child) {
            end_cancelled(state, &child, at, reason);
        } else if child.0 != key.0 && Shards::index(&child.0) != Shards::index(&key.0) {
            // A nested run's span in another shard: ended once this shard is released.
            state.foreign.push(Foreign {
                key: child,
                at,
                reason: reason.to_string(),
            });
        }
    }
}

/// Ends `key` as cancelled (UNSET + `kaos.cancelled`), its descendants first. A span already
/// waiting for a late fact keeps its own end time and status.
pub(super) fn end_cancelled(state: &mut State, key: &Key, at: u64, reason: &str) {
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
pub(super) fn end_span(state: &mut State, key: &Key, at: u64) {
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
pub(super) fn settle_pending(state: &mut State, event: &Event) {
    let run = &event.run_id;
    let Some(r) = state.runs.get(run) else {
        return;
    };
    // Only read the event when an intent span is waiting (most events find none).
    let waits_intent = || {
        matches!(
            &event.kind,
            EventKind::IntentClassified { .. } | EventKind::UsageObserved { .. }
        ) || matches!(&event.kind, EventKind::Span(s) if s.subject == SpanSubject::LlmCall
                && s.phase == SpanPhase::Start
                && s.attr_str("purpose") == Some("intent_classification"))
    };
    if let Some(ikey) = r.pending_intent.clone()
        && !waits_intent()
    {
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
pub(super) fn finish_turn_without_summary(state: &mut State, run: &Arc<str>) {
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
