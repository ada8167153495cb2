//! The OTel hook's bookkeeping, per run. A run's open spans sit in a short vector owned by its
//! [`RunState`] (a respond turn has at most three open at once), found by id with a pointer
//! comparison in the common case: an event costs one map lookup (its run), and parents and
//! children inside a run are found by scanning that vector. Only what crosses runs — a nested
//! run's first span and the span it nests under — goes through [`Shared::by_span`] and
//! [`Shared::foreign`]. One [`State`] holds the runs of one shard ([`super::shards`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use opentelemetry::trace::{SpanContext, Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};

use super::attributes::*;
use super::intern::Interned;
use crate::events::{Event, EventKind, SpanPhase, SpanSubject};

/// Whether two ids are the same: the pointer first (the hook's ids are mostly the scope's own
/// `Arc`s), then the length and first byte (random ids of the same length differ there 15
/// times in 16, without a call to `memcmp`), then the text.
#[inline]
pub(super) fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b)
        || (a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b)
}

/// `(run_id, span_id)`: a span of some run, used where a reference crosses runs.
#[derive(Clone, Debug)]
pub(super) struct Key {
    pub(super) run: Arc<str>,
    pub(super) span: Arc<str>,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        same(&self.run, &other.run) && same(&self.span, &other.span)
    }
}

/// The hook's maps: keyed by our own ids, looked up about once per event, so a word-at-a-time
/// multiplicative hash (FxHash's) instead of SipHash.
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

impl Kind {
    /// Whether a nested run may start under a span of this kind (the runner nests sub-agent
    /// and handoff runs under their spans; a tool or step may run an agent). Such spans are
    /// indexed in [`Shared::by_span`]; a nested run under any other span is still found, by
    /// a scan ([`Search::Scan`]).
    fn hosts_runs(self) -> bool {
        matches!(
            self,
            Kind::Tool | Kind::Step | Kind::Subagent | Kind::Handoff
        )
    }
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
    /// Our span id.
    pub(super) id: Arc<str>,
    pub(super) cx: Context,
    pub(super) kind: Kind,
    /// The parent span, when it is in the same run.
    pub(super) parent: Option<Arc<str>>,
    /// Whether the parent is a span of another run (this is a nested run's first span).
    pub(super) nested_in_other_run: bool,
    /// First spans of nested runs started under this one (other runs, maybe other shards);
    /// ended as `parent_ended` when this span ends. Entries may be stale (already ended).
    pub(super) nested: Vec<Key>,
    pub(super) start_ns: u64,
    /// Logically ended at this time; waits for a late fact (`IntentClassified` for the
    /// intent span, `TurnSummary` for the turn) before it is ended with this timestamp.
    pub(super) closing_at: Option<u64>,
    /// The status to end with when nothing more specific arrives.
    pub(super) status: Status,
    /// A tool span's call id.
    pub(super) call_id: Option<String>,
}

impl Open {
    /// A span just started at `start_ns`.
    pub(super) fn new(id: Arc<str>, cx: Context, kind: Kind, start_ns: u64) -> Self {
        Self {
            id,
            cx,
            kind,
            parent: None,
            nested_in_other_run: false,
            nested: Vec::new(),
            start_ns,
            closing_at: None,
            status: Status::Unset,
            call_id: None,
        }
    }

    fn is_child_of(&self, id: &Arc<str>) -> bool {
        self.parent.as_ref().is_some_and(|p| same(p, id))
    }
}

/// One run's open spans and the facts its turn span collects.
pub(super) struct RunState {
    pub(super) id: Arc<str>,
    /// `hash_id(id)`, kept for the table's growth.
    hash: u64,
    /// Open spans, in start order.
    pub(super) spans: Vec<Open>,
    /// The intent span waiting for `IntentClassified`.
    pub(super) pending_intent: Option<Arc<str>>,
    /// Classifier llm span id → its intent span id (one entry per classifier call in flight).
    pub(super) intent_of_llm: Vec<(Arc<str>, Arc<str>)>,
    pub(super) tokens: u64,
    pub(super) cost: Option<f64>,
    pub(super) cost_unknown: bool,
    pub(super) tool_calls: u64,
}

impl RunState {
    fn new(id: Arc<str>, hash: u64) -> Self {
        Self {
            id,
            hash,
            spans: Vec::new(),
            pending_intent: None,
            intent_of_llm: Vec::new(),
            tokens: 0,
            cost: None,
            cost_unknown: false,
            tool_calls: 0,
        }
    }

    /// Made ready for run `id`, keeping the vectors' capacity.
    fn reuse(mut self, id: Arc<str>, hash: u64) -> Self {
        self.id = id;
        self.hash = hash;
        self.spans.clear();
        self.pending_intent = None;
        self.intent_of_llm.clear();
        self.tokens = 0;
        self.cost = None;
        self.cost_unknown = false;
        self.tool_calls = 0;
        self
    }

    /// Whether this is the state of run `id` (the same text, in the common case the same
    /// pointer).
    #[inline]
    fn is(&self, id: &str) -> bool {
        std::ptr::eq(&*self.id, id) || &*self.id == id
    }

    /// The position of open span `id`.
    #[inline]
    pub(super) fn find(&self, id: &Arc<str>) -> Option<usize> {
        self.spans.iter().position(|o| same(&o.id, id))
    }

    /// Open span `id`.
    pub(super) fn get(&self, id: &Arc<str>) -> Option<&Open> {
        self.spans.iter().find(|o| same(&o.id, id))
    }

    /// Open span `id`, to change.
    pub(super) fn get_mut(&mut self, id: &Arc<str>) -> Option<&mut Open> {
        self.spans.iter_mut().find(|o| same(&o.id, id))
    }

    /// The run's open turn span.
    pub(super) fn turn(&self) -> Option<&Open> {
        self.spans.iter().find(|o| o.kind == Kind::Turn)
    }

    /// The run's open turn span, to change.
    pub(super) fn turn_mut(&mut self) -> Option<&mut Open> {
        self.spans.iter_mut().find(|o| o.kind == Kind::Turn)
    }

    /// The context of the run's open turn, else the caller's current one.
    pub(super) fn turn_cx(run: Option<&Self>) -> Context {
        run.and_then(Self::turn)
            .map(|o| o.cx.clone())
            .unwrap_or_else(Context::current)
    }
}

/// A span to end as cancelled, in a run other than the one being handled (a nested run's
/// span whose parent ended): ended by [`super::shards::Shards::cascade`] once the handled
/// run's shard is released.
pub(super) struct Foreign {
    pub(super) key: Key,
    pub(super) at: u64,
    pub(super) reason: String,
}

/// What a shard keeps besides its runs.
#[derive(Default)]
pub(super) struct Shared {
    /// span id → run id of the open spans under which nested runs may start
    /// ([`Kind::hosts_runs`]), to find a nested run's parent in another run.
    pub(super) by_span: Map<Arc<str>, Arc<str>>,
    /// run id → span context of a turn that ended paused, so the turn that resumes it can
    /// link to it (bounded: cleared when it reaches [`PAUSED_TURNS_KEPT`]).
    pub(super) paused_turns: Map<Arc<str>, SpanContext>,
    /// Spans of other runs to end once this shard's lock is released.
    pub(super) foreign: Vec<Foreign>,
    /// The END attributes being added (kept empty between events, reused for its capacity).
    pub(super) end_attrs: Vec<KeyValue>,
    /// Finished runs' states, reused (with their vectors' capacity) by new runs.
    spare: Vec<RunState>,
    /// Open spans' attributes put on them when they end, however they end: a model call's
    /// request content, which its completion replaces after a typed call's corrective retry
    /// (an SDK span cannot take an attribute back). Empty unless content is captured.
    deferred: Vec<(Key, Vec<KeyValue>)>,
    /// Attribute values that repeat from span to span, shared rather than copied.
    pub(super) strings: Interned,
}

impl Shared {
    /// Where the attributes deferred to span `span` of run `run` are, if any are.
    fn deferred_at(&self, run: &Arc<str>, span: &Arc<str>) -> Option<usize> {
        self.deferred
            .iter()
            .position(|(k, _)| same(&k.span, span) && same(&k.run, run))
    }

    /// The attributes deferred to the end of span `span` of run `run`, to change (made
    /// empty if there are none).
    pub(super) fn deferred_mut(&mut self, run: &Arc<str>, span: &Arc<str>) -> &mut Vec<KeyValue> {
        let i = match self.deferred_at(run, span) {
            Some(i) => i,
            None => {
                let key = Key {
                    run: run.clone(),
                    span: span.clone(),
                };
                self.deferred.push((key, Vec::new()));
                self.deferred.len() - 1
            }
        };
        &mut self.deferred[i].1
    }

    /// Takes the attributes deferred to the end of span `span` of run `run`.
    fn take_deferred(&mut self, run: &Arc<str>, span: &Arc<str>) -> Option<Vec<KeyValue>> {
        let i = self.deferred_at(run, span)?;
        Some(self.deferred.swap_remove(i).1)
    }
}

/// How [`State::find_nest_parent`] looks for a span of another run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Search {
    /// In the index of spans that may host nested runs (one map lookup).
    Index,
    /// Through every open span of the shard.
    Scan,
}

/// How many finished run states one shard keeps for reuse.
const SPARE_RUNS: usize = 16;

/// The largest span vector (capacity) a kept run state may hold.
const SPARE_SPANS_MAX: usize = 16;

/// How many paused turns one shard's [`Shared::paused_turns`] remembers.
pub(super) const PAUSED_TURNS_KEPT: usize = 256;

/// The hash of a run id: picks the run's shard ([`super::shards::Shards::index_of`]) and
/// finds it in the shard's [`Runs`], so an event hashes its run id once.
pub(super) fn hash_id(id: &str) -> u64 {
    let mut h = IdHasher::default();
    h.write(id.as_bytes());
    h.finish()
}

/// The runs of one shard, looked up by id and [`hash_id`].
#[derive(Default)]
pub(super) struct Runs {
    table: HashTable<RunState>,
}

impl Runs {
    /// How many runs have state.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Run `id` (whose hash is `hash`).
    pub(super) fn get(&self, id: &str, hash: u64) -> Option<&RunState> {
        self.table.find(hash, |r| r.is(id))
    }

    /// Run `id` (whose hash is `hash`), to change.
    pub(super) fn get_mut(&mut self, id: &str, hash: u64) -> Option<&mut RunState> {
        self.table.find_mut(hash, |r| r.is(id))
    }

    /// Every run.
    pub(super) fn iter(&self) -> impl Iterator<Item = &RunState> {
        self.table.iter()
    }

    /// Every run, to change.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut RunState> {
        self.table.iter_mut()
    }
}

/// One shard: its runs and what they share.
#[derive(Default)]
pub(super) struct State {
    pub(super) runs: Runs,
    pub(super) shared: Shared,
}

impl State {
    /// The state of run `run` (whose hash is `hash`), made (or reused) if it has none.
    pub(super) fn run_entry(&mut self, run: &Arc<str>, hash: u64) -> (&mut RunState, &mut Shared) {
        let Self { runs, shared } = self;
        let state = match runs.table.entry(hash, |r| r.is(run), |r| r.hash) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let fresh = match shared.spare.pop() {
                    Some(spare) => spare.reuse(run.clone(), hash),
                    None => RunState::new(run.clone(), hash),
                };
                v.insert(fresh).into_mut()
            }
        };
        (state, shared)
    }

    /// Forgets run `run` if it has no open span left.
    pub(super) fn drop_if_done(&mut self, run: &str, hash: u64) {
        if self.runs.get(run, hash).is_some_and(|r| r.spans.is_empty()) {
            self.retire(run, hash);
        }
    }

    /// Forgets run `run` (whose hash is `hash`), which has no open span left, keeping its
    /// state for reuse.
    pub(super) fn retire(&mut self, run: &str, hash: u64) {
        let Ok(entry) = self.runs.table.find_entry(hash, |r| r.is(run)) else {
            return;
        };
        let (done, _) = entry.remove();
        if self.shared.spare.len() < SPARE_RUNS
            // A run that once held many spans at once gives its memory back.
            && done.spans.capacity() <= SPARE_SPANS_MAX
        {
            self.shared.spare.push(done);
        }
    }

    /// How many spans are open in this shard.
    pub(super) fn open_spans(&self) -> usize {
        self.runs.iter().map(|r| r.spans.len()).sum()
    }

    /// Finds open span `span_id` of a run other than `child.run` (the parent of a nested
    /// run's first span), records `child` as nested under it and returns its context. With
    /// [`Search::Index`], only spans [`Shared::by_span`] indexes; with [`Search::Scan`], every
    /// open span of the shard (a nested run under a span of a kind the index leaves out).
    pub(super) fn find_nest_parent(
        &mut self,
        span_id: &Arc<str>,
        child: &Key,
        search: Search,
    ) -> Option<Context> {
        let open = match search {
            Search::Index => {
                let run = self
                    .shared
                    .by_span
                    .get(span_id)
                    .filter(|run| !same(run, &child.run))?;
                let hash = hash_id(run);
                self.runs
                    .get_mut(run, hash)?
                    .spans
                    .iter_mut()
                    .find(|o| same(&o.id, span_id))
            }
            Search::Scan => self
                .runs
                .iter_mut()
                .filter(|r| !same(&r.id, &child.run))
                .flat_map(|r| r.spans.iter_mut())
                .find(|o| same(&o.id, span_id)),
        }?;
        open.nested.push(child.clone());
        Some(open.cx.clone())
    }

    /// Ends every open span of this shard (status UNSET, `kaos.cancel_reason=reason`),
    /// children first, at `now` (or the time a span waiting for a late fact ended). With
    /// `skip_nested`, the first spans of nested runs are left to their parents (which end them
    /// through [`Shared::foreign`], with the parent's time). Returns how many ended here.
    pub(super) fn close(&mut self, reason: &str, now: u64, skip_nested: bool) -> usize {
        let before = self.open_spans();
        let Self { runs, shared } = self;
        for run in runs.iter_mut() {
            // A root: no parent open in this run (ending a span ends its children first, so a
            // child never outlives its parent; a parent that is somehow gone is not waited for).
            let is_root = |spans: &[Open], o: &Open| {
                o.parent
                    .as_ref()
                    .is_none_or(|p| !spans.iter().any(|q| same(&q.id, p)))
            };
            while let Some(root) = run
                .spans
                .iter()
                .find(|o| is_root(&run.spans, o) && !(skip_nested && o.nested_in_other_run))
                .map(|o| o.id.clone())
            {
                let at = run.get(&root).and_then(|o| o.closing_at).unwrap_or(now);
                end_cancelled(run, shared, &root, at, reason);
            }
        }
        let ended = before - self.open_spans();
        let done: Vec<(Arc<str>, u64)> = self
            .runs
            .iter()
            .filter(|r| r.spans.is_empty())
            .map(|r| (r.id.clone(), r.hash))
            .collect();
        for (id, hash) in done {
            self.retire(&id, hash);
        }
        ended
    }
}

pub(super) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Records span `open` of `run` as started.
pub(super) fn insert(run: &mut RunState, shared: &mut Shared, open: Open) {
    if open.kind.hosts_runs() {
        shared.by_span.insert(open.id.clone(), run.id.clone());
    }
    run.spans.push(open);
}

/// Ends the open descendants of span `id` (children first) as cancelled, at `at`: this
/// run's at once, nested runs' through [`Shared::foreign`].
pub(super) fn close_children(
    run: &mut RunState,
    shared: &mut Shared,
    id: &Arc<str>,
    at: u64,
    reason: &str,
) {
    if let Some(open) = run.get_mut(id)
        && !open.nested.is_empty()
    {
        for key in std::mem::take(&mut open.nested) {
            shared.foreign.push(Foreign {
                key,
                at,
                reason: reason.to_string(),
            });
        }
    }
    while let Some(child) = run
        .spans
        .iter()
        .find(|o| o.is_child_of(id))
        .map(|o| o.id.clone())
    {
        end_cancelled(run, shared, &child, at, reason);
    }
}

/// Ends span `id` as cancelled (UNSET + `kaos.cancelled`), its descendants first. A span
/// already waiting for a late fact keeps its own end time and status.
pub(super) fn end_cancelled(
    run: &mut RunState,
    shared: &mut Shared,
    id: &Arc<str>,
    at: u64,
    reason: &str,
) {
    let Some(open) = run.get_mut(id) else {
        return;
    };
    let at = match open.closing_at {
        Some(closing) => closing,
        None => {
            open.cx.span().set_attributes([
                KeyValue::new(KAOS_CANCELLED, true),
                KeyValue::new(KAOS_CANCEL_REASON, reason.to_string()),
            ]);
            open.status = Status::Unset;
            at
        }
    };
    close_children(run, shared, id, at, reason);
    end_span(run, shared, id, at);
}

/// Ends the OTel span `id` of `run` exactly once (descendants first) and forgets it.
pub(super) fn end_span(run: &mut RunState, shared: &mut Shared, id: &Arc<str>, at: u64) {
    close_children(run, shared, id, at, "parent_ended");
    let Some(i) = run.find(id) else {
        return;
    };
    let open = run.spans.remove(i);
    if open.kind.hosts_runs()
        && let Some(owner) = shared.by_span.remove(&open.id)
        && !same(&owner, &run.id)
    {
        // Another run's span with the same id (ids are random; only hand-made ones collide).
        shared.by_span.insert(open.id.clone(), owner);
    }
    if run.pending_intent.as_ref().is_some_and(|p| same(p, id)) {
        run.pending_intent = None;
    }
    let span = open.cx.span();
    if !shared.deferred.is_empty()
        && let Some(attrs) = shared.take_deferred(&run.id, id)
    {
        span.set_attributes(attrs);
    }
    span.set_status(open.status);
    span.end_with_timestamp(system_time(at.max(open.start_ns)));
}

/// Before handling `event`: a waiting intent span of its run ends unless `event` is the
/// fact it waits for (or usage, or another classifier attempt); a waiting turn of its run
/// ends unless `event` is its summary.
pub(super) fn settle_pending(run: &mut RunState, shared: &mut Shared, event: &Event) {
    // Only read the event when an intent span is waiting (most events find none).
    let waits_intent = || {
        matches!(
            &event.kind,
            EventKind::IntentClassified { .. } | EventKind::UsageObserved { .. }
        ) || matches!(&event.kind, EventKind::Span(s) if s.subject == SpanSubject::LlmCall
                && s.phase == SpanPhase::Start
                && s.attr_str("purpose") == Some("intent_classification"))
    };
    if let Some(intent) = run.pending_intent.clone()
        && !waits_intent()
    {
        let at = run
            .get(&intent)
            .and_then(|o| o.closing_at)
            .unwrap_or(event.timestamp);
        end_span(run, shared, &intent, at);
    }
    let is_summary = matches!(
        &event.kind,
        EventKind::TurnSummary(_) | EventKind::UsageObserved { .. }
    );
    if !is_summary
        && let Some((turn, at)) = run.turn().and_then(|o| Some((o.id.clone(), o.closing_at?)))
    {
        finish_turn_without_summary(run);
        end_span(run, shared, &turn, at);
    }
}

/// A turn that ends without a summary takes the usage seen so far.
pub(super) fn finish_turn_without_summary(run: &RunState) {
    let (tokens, cost, unknown, tools) = (run.tokens, run.cost, run.cost_unknown, run.tool_calls);
    if let Some(open) = run.turn() {
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

/// Whether the hook has nothing to do for an event of this kind (it changes no span).
pub(super) fn passes_by(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::PlanProposed { .. }
            | EventKind::TextDelta { .. }
            | EventKind::ThinkingDelta { .. }
            | EventKind::TextRetracted { .. }
            | EventKind::PatternMismatch { .. }
    )
}

/// Where a new span's parent is.
pub(super) enum Parent {
    /// A span of the same run (its id).
    Local(Arc<str>),
    /// A span of another run, under which a nested run's first span starts (its context).
    Nested(Context),
}
