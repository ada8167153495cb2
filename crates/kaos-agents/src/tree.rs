//! Span trees of event streams: [`build_runs`] rebuilds each run's spans (with their value
//! events and nested sub-agent runs), [`render_tree`] draws them as text.
//!
//! The same renderer serves `kaos audit show` (a finished file) and `kaos run`'s live view
//! (a stream in progress: spans without a terminal phase show as running).
//!
//! ```text
//! run run_1 · session s1 · agent assistant
//! ✓ agent.turn 12.0ms outcome=completed
//! ├─ ✓ agent.intent_classification 3.1ms
//! │  └─ ✓ chat m 3.0ms model=m tokens=40/5
//! ├─ · intent tool_use (0.90)
//! ├─ ✗ agent.tool_call.search 1.0ms error tool_timeout: timed out after 1s
//! └─ ✓ chat m 2.2ms model=m tokens=60/12
//! = summary outcome=completed tokens=117 (100 in / 17 out) tool_calls=1
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::events::{Event, EventKind, SpanError, SpanPhase, SpanSubject};
use crate::naming::{self, SpanNaming};

/// How a span ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanStatus {
    /// Started, no terminal phase seen (still running, or the stream was cut).
    Open,
    /// Ended successfully.
    Complete,
    /// Ended with an error.
    Error,
    /// Cut short.
    Cancelled,
}

impl SpanStatus {
    fn from_phase(phase: SpanPhase) -> Self {
        match phase {
            SpanPhase::Start => SpanStatus::Open,
            SpanPhase::Complete => SpanStatus::Complete,
            SpanPhase::Error => SpanStatus::Error,
            SpanPhase::Cancelled => SpanStatus::Cancelled,
        }
    }

    /// The snake_case name (`open`, `complete`, `error`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            SpanStatus::Open => "open",
            SpanStatus::Complete => "complete",
            SpanStatus::Error => "error",
            SpanStatus::Cancelled => "cancelled",
        }
    }
}

/// One span of a run, rebuilt from its START and terminal events.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanNode {
    /// The span's id.
    pub span_id: Arc<str>,
    /// Its parent (in this run, or a span of the parent run for a sub-agent's root).
    pub parent_span_id: Option<Arc<str>>,
    /// What it is about.
    pub subject: SpanSubject,
    /// Its name as the exporter names it (`agent.turn`, `agent.tool_call.search`, ...).
    pub name: String,
    /// How it ended.
    pub status: SpanStatus,
    /// Index of its START event (into the events given to [`build_runs`]), if seen.
    pub start_event: Option<usize>,
    /// Timestamp (ns since the epoch) of its START, if seen.
    pub start_timestamp: Option<u64>,
    /// Timestamp of its terminal phase, if seen.
    pub end_timestamp: Option<u64>,
    /// Measured duration from the terminal phase.
    pub duration_ms: Option<f64>,
    /// START attributes, overlaid with the terminal phase's.
    pub attributes: Map<String, Value>,
    /// The terminal phase's error.
    pub error: Option<SpanError>,
    /// Child spans (indices into [`RunTree::spans`]), in start order.
    pub children: Vec<usize>,
    /// Value events emitted while this span was the innermost open one (indices into the
    /// events given to [`build_runs`]).
    pub events: Vec<usize>,
    /// Runs nested under this span (sub-agents, handoffs), as indices into the runs.
    pub child_runs: Vec<usize>,
}

impl SpanNode {
    /// A span not yet started or ended.
    fn new(
        span_id: Arc<str>,
        parent_span_id: Option<Arc<str>>,
        subject: SpanSubject,
        name: String,
    ) -> Self {
        Self {
            span_id,
            parent_span_id,
            subject,
            name,
            status: SpanStatus::Open,
            start_event: None,
            start_timestamp: None,
            end_timestamp: None,
            duration_ms: None,
            attributes: Map::new(),
            error: None,
            children: Vec::new(),
            events: Vec::new(),
            child_runs: Vec::new(),
        }
    }
}

/// One run's spans.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTree {
    /// The run.
    pub run_id: Arc<str>,
    /// Its session.
    pub session_id: Arc<str>,
    /// Its agent.
    pub agent: Arc<str>,
    /// The span of another run this run is nested under (its root spans' parent).
    pub parent_span_id: Option<Arc<str>>,
    /// The run that span belongs to, if it is among the events.
    pub parent_run: Option<usize>,
    /// Every span, in start order.
    pub spans: Vec<SpanNode>,
    /// Spans without a parent in this run.
    pub roots: Vec<usize>,
    /// Value events emitted while no span was open (the `TurnSummary`, usually).
    pub loose_events: Vec<usize>,
    /// Every event of the run, in order.
    pub events: Vec<usize>,
    /// The first event's timestamp.
    pub first_timestamp: u64,
    /// The last event's timestamp.
    pub last_timestamp: u64,
}

impl RunTree {
    /// The span with id `span_id`.
    pub fn span(&self, span_id: &str) -> Option<&SpanNode> {
        self.spans.iter().find(|s| &*s.span_id == span_id)
    }
}

/// Rebuilds every run's span tree from `events` (any order of runs; within a run, events in
/// emission order). Runs are in order of first appearance.
pub fn build_runs(events: &[Event]) -> Vec<RunTree> {
    build_runs_named(events, SpanNaming::Seed)
}

/// [`build_runs`] with spans named as the exporter names them under `naming`
/// ([`crate::naming::span_name`]); a classifier's model call gets the exporter's
/// `agent.intent_classification` wrapper node (id `{span_id}#intent`) around it.
pub fn build_runs_named(events: &[Event], naming: SpanNaming) -> Vec<RunTree> {
    struct Building {
        tree: RunTree,
        index: HashMap<Arc<str>, usize>,
        /// Open spans, innermost last.
        stack: Vec<usize>,
        /// Where each span sits on `stack` (a span started twice sits there twice), so an
        /// end finds its span without scanning the stack.
        on_stack: HashMap<usize, Vec<usize>>,
    }
    let mut runs: Vec<Building> = Vec::new();
    let mut by_run: HashMap<Arc<str>, usize> = HashMap::new();

    for (i, event) in events.iter().enumerate() {
        let r = *by_run.entry(event.run_id.clone()).or_insert_with(|| {
            runs.push(Building {
                tree: RunTree {
                    run_id: event.run_id.clone(),
                    session_id: event.session_id.clone(),
                    agent: event.agent.clone(),
                    parent_span_id: None,
                    parent_run: None,
                    spans: Vec::new(),
                    roots: Vec::new(),
                    loose_events: Vec::new(),
                    events: Vec::new(),
                    first_timestamp: event.timestamp,
                    last_timestamp: event.timestamp,
                },
                index: HashMap::new(),
                stack: Vec::new(),
                on_stack: HashMap::new(),
            });
            runs.len() - 1
        });
        let b = &mut runs[r];
        b.tree.events.push(i);
        b.tree.first_timestamp = b.tree.first_timestamp.min(event.timestamp);
        b.tree.last_timestamp = b.tree.last_timestamp.max(event.timestamp);

        let EventKind::Span(span) = &event.kind else {
            // An intent after a failed classifier call (the heuristic fallback): the
            // classification did give one, so its wrapper ends OK, as the exporter ends it.
            if matches!(event.kind, EventKind::IntentClassified { .. })
                && let Some(wrapper) = b
                    .tree
                    .spans
                    .iter_mut()
                    .rev()
                    .find(|n| n.span_id.ends_with("#intent"))
                && wrapper.status == SpanStatus::Error
            {
                wrapper.status = SpanStatus::Complete;
            }
            match b.stack.last() {
                Some(&top) => b.tree.spans[top].events.push(i),
                None => b.tree.loose_events.push(i),
            }
            continue;
        };
        let node_index = match b.index.get(&span.span_id) {
            Some(&n) => n,
            None => {
                let wrapper = naming::wrapper_name(span.subject, &span.attributes).map(|w| {
                    let n = b.tree.spans.len();
                    let id: Arc<str> = Arc::from(naming::wrapper_id(&span.span_id));
                    b.tree.spans.push(SpanNode::new(
                        id.clone(),
                        span.parent_span_id.clone(),
                        span.subject,
                        w.to_string(),
                    ));
                    b.index.insert(id, n);
                    match span.parent_span_id.as_ref().and_then(|p| b.index.get(p)) {
                        Some(&parent) => b.tree.spans[parent].children.push(n),
                        None => b.tree.roots.push(n),
                    }
                    n
                });
                let n = b.tree.spans.len();
                let name = naming::span_name(
                    span.subject,
                    &span.name,
                    &span.attributes,
                    &event.agent,
                    naming,
                );
                b.tree.spans.push(SpanNode {
                    span_id: span.span_id.clone(),
                    parent_span_id: span.parent_span_id.clone(),
                    subject: span.subject,
                    name: name.into_owned(),
                    status: SpanStatus::Open,
                    start_event: None,
                    start_timestamp: None,
                    end_timestamp: None,
                    duration_ms: None,
                    attributes: Map::new(),
                    error: None,
                    children: Vec::new(),
                    events: Vec::new(),
                    child_runs: Vec::new(),
                });
                b.index.insert(span.span_id.clone(), n);
                match wrapper.or_else(|| {
                    span.parent_span_id
                        .as_ref()
                        .and_then(|p| b.index.get(p).copied())
                }) {
                    Some(parent) => b.tree.spans[parent].children.push(n),
                    None => b.tree.roots.push(n),
                }
                n
            }
        };
        // The wrapper starts and ends with the call it wraps.
        if let Some(&w) = b.index.get(naming::wrapper_id(&span.span_id).as_str())
            && w + 1 == node_index
        {
            let wrapper = &mut b.tree.spans[w];
            if span.phase == SpanPhase::Start {
                wrapper.start_event = Some(i);
                wrapper.start_timestamp = Some(event.timestamp);
            } else {
                wrapper.status = SpanStatus::from_phase(span.phase);
                wrapper.end_timestamp = Some(event.timestamp);
                wrapper.duration_ms = span.duration_ms;
            }
        }
        let node = &mut b.tree.spans[node_index];
        for (k, v) in &span.attributes {
            node.attributes.insert(k.clone(), v.clone());
        }
        if span.phase == SpanPhase::Start {
            node.start_event = Some(i);
            node.start_timestamp = Some(event.timestamp);
            b.on_stack
                .entry(node_index)
                .or_default()
                .push(b.stack.len());
            b.stack.push(node_index);
        } else {
            node.status = SpanStatus::from_phase(span.phase);
            node.end_timestamp = Some(event.timestamp);
            node.duration_ms = span.duration_ms;
            node.error = span.error.clone();
            let pos = b.on_stack.get(&node_index).and_then(|p| p.last().copied());
            if let Some(pos) = pos {
                for closed in b.stack.drain(pos..) {
                    if let Some(positions) = b.on_stack.get_mut(&closed) {
                        positions.pop();
                    }
                }
            }
        }
    }

    // Link nested runs under the span of another run their roots name as parent.
    let mut owner: HashMap<Arc<str>, (usize, usize)> = HashMap::new();
    for (r, b) in runs.iter().enumerate() {
        for (n, span) in b.tree.spans.iter().enumerate() {
            owner.insert(span.span_id.clone(), (r, n));
        }
    }
    let mut links = Vec::new();
    for (r, b) in runs.iter().enumerate() {
        let parent = b
            .tree
            .roots
            .iter()
            .find_map(|&n| b.tree.spans[n].parent_span_id.clone());
        if let Some(parent) = parent {
            let target = owner.get(&parent).copied().filter(|(pr, _)| *pr != r);
            links.push((r, parent, target));
        }
    }
    // Each run has at most one candidate parent, so the links form a functional graph: its
    // cycles are disjoint, and dropping the link of the highest-numbered run of each cycle
    // (the one that, added in run order, would close it) leaves a forest. Linear.
    let mut candidate: Vec<Option<(usize, usize)>> = vec![None; runs.len()];
    for (r, parent, target) in &links {
        runs[*r].tree.parent_span_id = Some(parent.clone());
        candidate[*r] = *target;
    }
    for r in cycle_closers(&candidate) {
        candidate[r] = None;
    }
    for (r, target) in candidate.iter().enumerate() {
        if let Some((pr, pn)) = *target {
            runs[r].tree.parent_run = Some(pr);
            runs[pr].tree.spans[pn].child_runs.push(r);
        }
    }
    runs.into_iter().map(|b| b.tree).collect()
}

/// The highest-numbered run of each cycle of the parent links `parents` (run → (parent
/// run, span)), found in one pass over the runs (each run is visited once).
fn cycle_closers(parents: &[Option<(usize, usize)>]) -> Vec<usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; parents.len()];
    let mut closers = Vec::new();
    for start in 0..parents.len() {
        let mut path = Vec::new();
        let mut at = Some(start);
        while let Some(r) = at {
            match mark[r] {
                Mark::Done => break,
                Mark::OnPath => {
                    // `r` starts a cycle: the path from r's position to the end.
                    if let Some(from) = path.iter().position(|&p| p == r) {
                        closers.extend(path[from..].iter().copied().max());
                    }
                    break;
                }
                Mark::New => {
                    mark[r] = Mark::OnPath;
                    path.push(r);
                    at = parents[r].map(|(p, _)| p);
                }
            }
        }
        for r in path {
            mark[r] = Mark::Done;
        }
    }
    closers
}

/// Options of [`render_tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeOptions {
    /// ASCII only: `ok`/`ERR`/`CANCELLED`/`...` and `|-`, `` `- `` branches instead of
    /// `✓`/`✗`/`⊘`/`…` and box-drawing characters.
    pub ascii: bool,
    /// Print durations (turn off for stable output in tests).
    pub durations: bool,
    /// Also list `usage_observed` and `text_delta` events.
    pub verbose: bool,
    /// Longest quoted text (result summaries, answers), in characters.
    pub max_text: usize,
    /// Span names: the exporter's, under the same naming ([`SpanNaming::Seed`] by default).
    pub naming: SpanNaming,
}

impl Default for TreeOptions {
    fn default() -> Self {
        Self {
            ascii: false,
            durations: true,
            verbose: false,
            max_text: 60,
            naming: SpanNaming::Seed,
        }
    }
}

/// Draws the span tree of every top-level run in `events` (sub-agent runs appear under
/// their parent span).
pub fn render_tree(events: &[Event], opts: &TreeOptions) -> String {
    let runs = build_runs_named(events, opts.naming);
    let mut out = String::new();
    for (r, run) in runs.iter().enumerate() {
        if run.parent_run.is_none() {
            Renderer {
                events,
                runs: &runs,
                opts,
                out: &mut out,
            }
            .run(r);
        }
    }
    out
}

/// How many levels of branches are drawn; deeper items are drawn at this indentation with
/// a `[depth N]` marker.
const MAX_DRAWN_DEPTH: usize = 64;

struct Renderer<'a> {
    events: &'a [Event],
    runs: &'a [RunTree],
    opts: &'a TreeOptions,
    out: &'a mut String,
}

/// An item under a span: a child span, a value event or a nested run.
#[derive(Clone, Copy)]
enum Item {
    Span(usize, usize),
    Event(usize),
    Run(usize),
}

impl Renderer<'_> {
    fn run(&mut self, r: usize) {
        let run = &self.runs[r];
        let _ = writeln!(
            self.out,
            "run {} · session {} · agent {}",
            run.run_id, run.session_id, run.agent
        );
        let roots: Vec<Item> = run.roots.iter().map(|&n| Item::Span(r, n)).collect();
        for item in roots {
            self.item(item, "");
        }
        for &e in &run.loose_events {
            let _ = writeln!(self.out, "{}", self.event_line(e, true));
        }
    }

    fn items_of(&self, r: usize, n: usize) -> Vec<Item> {
        let span = &self.runs[r].spans[n];
        // Ordered by (timestamp, position in the stream): position decides within a stream,
        // timestamps interleave runs read from different files.
        let key = |e: usize| (self.events[e].timestamp, e);
        let mut items: Vec<((u64, usize), Item)> = Vec::new();
        for &c in &span.children {
            let child = &self.runs[r].spans[c];
            let k = child.start_event.map_or((0, 0), key);
            items.push((k, Item::Span(r, c)));
        }
        for &e in &span.events {
            let quiet = matches!(
                self.events[e].kind,
                EventKind::UsageObserved { .. }
                    | EventKind::TextDelta { .. }
                    | EventKind::ThinkingDelta { .. }
            );
            if self.opts.verbose || !quiet {
                items.push((key(e), Item::Event(e)));
            }
        }
        for &cr in &span.child_runs {
            let first = self.runs[cr].events.first().copied().unwrap_or(0);
            items.push((key(first), Item::Run(cr)));
        }
        items.sort_by_key(|(k, _)| *k);
        items.into_iter().map(|(_, item)| item).collect()
    }

    /// Writes `item` and everything under it at `prefix`. Iterative (an explicit stack, not
    /// recursion), so a crafted file nested 100 000 levels deep cannot overflow the stack;
    /// past [`MAX_DRAWN_DEPTH`] levels the branches stop growing and each line says its depth,
    /// so the output stays linear in the number of items.
    fn item(&mut self, item: Item, prefix: &str) {
        struct Frame {
            item: Item,
            prefix: Arc<str>,
            /// `Some(is_last)` under a parent, `None` at the top.
            last: Option<bool>,
            depth: usize,
        }
        let mut stack = vec![Frame {
            item,
            prefix: Arc::from(prefix),
            last: None,
            depth: 0,
        }];
        while let Some(Frame {
            item,
            prefix,
            last,
            depth,
        }) = stack.pop()
        {
            let (branch, child_prefix) = match (last, self.opts.ascii) {
                (None, _) => (String::new(), prefix.to_string()),
                (Some(false), false) => (format!("{prefix}├─ "), format!("{prefix}│  ")),
                (Some(true), false) => (format!("{prefix}└─ "), format!("{prefix}   ")),
                (Some(false), true) => (format!("{prefix}|- "), format!("{prefix}|  ")),
                (Some(true), true) => (format!("{prefix}`- "), format!("{prefix}   ")),
            };
            let marker = if depth > MAX_DRAWN_DEPTH {
                format!("[depth {depth}] ")
            } else {
                String::new()
            };
            let children = match item {
                Item::Span(r, n) => {
                    let line = self.span_line(&self.runs[r].spans[n]);
                    let _ = writeln!(self.out, "{branch}{marker}{line}");
                    self.items_of(r, n)
                }
                Item::Event(e) => {
                    let line = self.event_line(e, false);
                    let _ = writeln!(self.out, "{branch}{marker}{line}");
                    Vec::new()
                }
                Item::Run(cr) => {
                    let run = &self.runs[cr];
                    let arrow = if self.opts.ascii { "->" } else { "↳" };
                    let _ = writeln!(
                        self.out,
                        "{branch}{marker}{arrow} run {} · session {} · agent {}",
                        run.run_id, run.session_id, run.agent
                    );
                    let mut items: Vec<Item> =
                        run.roots.iter().map(|&n| Item::Span(cr, n)).collect();
                    items.extend(run.loose_events.iter().map(|&e| Item::Event(e)));
                    items
                }
            };
            let child_prefix: Arc<str> = if depth >= MAX_DRAWN_DEPTH {
                prefix
            } else {
                Arc::from(child_prefix)
            };
            let count = children.len();
            for (i, child) in children.into_iter().enumerate().rev() {
                stack.push(Frame {
                    item: child,
                    prefix: Arc::clone(&child_prefix),
                    last: Some(i + 1 == count),
                    depth: depth + 1,
                });
            }
        }
    }

    fn status(&self, status: SpanStatus) -> &'static str {
        match (status, self.opts.ascii) {
            (SpanStatus::Open, false) => "…",
            (SpanStatus::Complete, false) => "✓",
            (SpanStatus::Error, false) => "✗",
            (SpanStatus::Cancelled, false) => "⊘",
            (SpanStatus::Open, true) => "...",
            (SpanStatus::Complete, true) => "ok",
            (SpanStatus::Error, true) => "ERR",
            (SpanStatus::Cancelled, true) => "CANCELLED",
        }
    }

    fn span_line(&self, span: &SpanNode) -> String {
        let mut line = format!("{} {}", self.status(span.status), span.name);
        if span.status == SpanStatus::Open {
            line.push_str(" (running)");
        } else if self.opts.durations
            && let Some(d) = span.duration_ms
        {
            let _ = write!(line, " {d:.1}ms");
        }
        let a = &span.attributes;
        let get = |k: &str| a.get(k).filter(|v| !v.is_null());
        match span.subject {
            SpanSubject::Turn => {
                if let Some(v) = get("outcome") {
                    let _ = write!(line, " outcome={}", plain(v));
                }
            }
            SpanSubject::LlmCall => {
                if let Some(v) = get("model") {
                    let _ = write!(line, " model={}", plain(v));
                }
                if let (Some(i), Some(o)) = (get("input_tokens"), get("output_tokens")) {
                    let _ = write!(line, " tokens={}/{}", plain(i), plain(o));
                }
                if let Some(n) = get("attempts").and_then(Value::as_u64).filter(|n| *n > 1) {
                    let _ = write!(line, " attempts={n}");
                }
                // A streamed call: time to its first chunk and how many chunks arrived.
                if let Some(ms) = get("time_to_first_chunk_ms").and_then(Value::as_f64) {
                    let _ = write!(line, " first_chunk={ms:.1}ms");
                }
                if let Some(n) = get("chunks").and_then(Value::as_u64).filter(|n| *n > 0) {
                    let _ = write!(line, " chunks={n}");
                }
            }
            SpanSubject::ToolCall => {
                if get("is_error").and_then(Value::as_bool) == Some(true) {
                    line.push_str(" is_error");
                }
                if let Some(v) = get("permission").filter(|v| v.as_str() != Some("allow")) {
                    let _ = write!(line, " permission={}", plain(v));
                }
                if span.error.is_none()
                    && let Some(v) = get("result_summary")
                {
                    let _ = write!(line, " → {}", self.quote(&plain(v)));
                }
            }
            SpanSubject::Subagent | SpanSubject::Handoff | SpanSubject::Step => {}
        }
        if let Some(error) = &span.error
            && span.status != SpanStatus::Complete
        {
            let _ = write!(line, " error {}: {}", error.error_type, error.message);
        }
        line
    }

    fn event_line(&self, e: usize, top: bool) -> String {
        let dot = if top {
            "="
        } else if self.opts.ascii {
            "*"
        } else {
            "·"
        };
        let body = match &self.events[e].kind {
            EventKind::Span(s) => format!("span {}", s.name),
            EventKind::IntentClassified {
                intent, confidence, ..
            } => format!("intent {intent} ({confidence:.2})"),
            EventKind::PlanProposed { steps, strategy } => {
                format!("plan {} step(s), {strategy}", steps.len())
            }
            EventKind::UsageObserved {
                input_tokens,
                output_tokens,
                model,
                source,
                ..
            } => format!("usage {source} {model} tokens={input_tokens}/{output_tokens}"),
            EventKind::TextDelta { content, .. } => format!("text {}", self.quote(content)),
            EventKind::ThinkingDelta { content, .. } => {
                format!("thinking {}", self.quote(content))
            }
            EventKind::TextRetracted {
                reason,
                retry_attempt,
                ..
            } => match retry_attempt {
                Some(n) => format!("text retracted, retry #{n}: {}", self.quote(reason)),
                None => format!("text retracted: {}", self.quote(reason)),
            },
            EventKind::PatternMismatch {
                classified_intent,
                agent_pattern,
                fallback,
                ..
            } => format!("pattern_mismatch {classified_intent} vs {agent_pattern}, {fallback}"),
            EventKind::ToolCallApprovalRequired {
                tool_name, reason, ..
            } => format!("approval required for {tool_name}: {reason}"),
            EventKind::BudgetExceeded {
                kind,
                limit,
                actual,
                ..
            } => format!("budget_exceeded {kind} {actual} > {limit}"),
            EventKind::RunError {
                error_type,
                message,
                ..
            } => format!("run_error {error_type}: {message}"),
            EventKind::TurnSummary(s) => {
                let mut line = format!(
                    "summary outcome={} tokens={} ({} in / {} out)",
                    serde_json::to_value(s.outcome)
                        .map(|v| plain(&v))
                        .unwrap_or_default(),
                    s.tokens_used,
                    s.input_tokens,
                    s.output_tokens
                );
                if let Some(c) = s.cost_usd {
                    let _ = write!(line, " cost=${c:.4}");
                }
                if !s.tool_calls.is_empty() {
                    let _ = write!(line, " tool_calls={}", s.tool_calls.len());
                }
                line
            }
        };
        format!("{dot} {body}")
    }

    fn quote(&self, text: &str) -> String {
        let one_line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let n = one_line.chars().count();
        if n > self.opts.max_text {
            let cut: String = one_line.chars().take(self.opts.max_text).collect();
            format!("{cut:?}…")
        } else {
            format!("{one_line:?}")
        }
    }
}

/// A JSON value without quotes for strings.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
