//! The typed turn event stream.
//!
//! A turn is a sequence of [`Event`]s. Each carries an envelope (wall-clock timestamp,
//! gap-free per-run sequence, session, run and agent) and a [`EventKind`]: either a
//! [`SpanEvent`] (a phase boundary of a turn, step, tool call, model call, sub-agent or
//! handoff) or a value event (a fact such as [`EventKind::IntentClassified`]).
//!
//! # Format
//!
//! Events serialize to JSON with the envelope fields at the top and the kind under `"kind"`,
//! tagged by a snake_case `"type"`:
//!
//! ```json
//! {"timestamp":1764105600000000000,"sequence":0,"session_id":"s1","run_id":"run_…","agent":"assistant",
//!  "kind":{"type":"span","subject":"turn","phase":"start","span_id":"9f1c…","parent_span_id":null,
//!          "name":"turn.1","duration_ms":null,"attributes":{"turn_number":1},"error":null}}
//! ```
//!
//! Unknown fields are rejected on decode, so a reader notices a format change.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a span is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanSubject {
    /// One turn of an agent.
    Turn,
    /// One plan step.
    Step,
    /// One tool call.
    ToolCall,
    /// One model call (`attributes.purpose` says which: intent_classification, respond, react, ...).
    LlmCall,
    /// A delegated sub-agent run.
    Subagent,
    /// A handoff to another agent.
    Handoff,
}

impl SpanSubject {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanSubject::Turn => "turn",
            SpanSubject::Step => "step",
            SpanSubject::ToolCall => "tool_call",
            SpanSubject::LlmCall => "llm_call",
            SpanSubject::Subagent => "subagent",
            SpanSubject::Handoff => "handoff",
        }
    }
}

/// Which boundary of a span an event marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanPhase {
    /// The span begins.
    Start,
    /// The span ended successfully.
    Complete,
    /// The span ended with an error.
    Error,
    /// The span was cut short (stream dropped, task aborted, timeout, pause).
    Cancelled,
}

impl SpanPhase {
    /// Whether this phase ends a span.
    pub fn is_terminal(self) -> bool {
        !matches!(self, SpanPhase::Start)
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanPhase::Start => "start",
            SpanPhase::Complete => "complete",
            SpanPhase::Error => "error",
            SpanPhase::Cancelled => "cancelled",
        }
    }
}

/// The error carried by an `error` (or `cancelled`) phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanError {
    /// A short, stable kind (`tool_timeout`, `tool_panic`, `permission_denied`, `auth_failure`, ...).
    pub error_type: String,
    /// A readable message.
    pub message: String,
}

/// A phase boundary. START and its terminal phase share `span_id`; every phase carries the
/// same `parent_span_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanEvent {
    /// What the span is about.
    pub subject: SpanSubject,
    /// Which boundary this is.
    pub phase: SpanPhase,
    /// 16 hex characters, unique per span.
    pub span_id: Arc<str>,
    /// The enclosing span, if any.
    pub parent_span_id: Option<Arc<str>>,
    /// `turn.{n}`, `tool.{name}`, `llm_call.{purpose}`, `step.{id}`, `subagent.{name}`, `handoff.{to}`.
    pub name: String,
    /// Measured duration (terminal phases only).
    pub duration_ms: Option<f64>,
    /// Subject-specific attributes (see the runner's docs).
    pub attributes: Map<String, Value>,
    /// The error of an `error`/`cancelled` phase.
    pub error: Option<SpanError>,
}

impl SpanEvent {
    /// An attribute as a string, if present and a string.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        attr(&self.attributes, key).and_then(Value::as_str)
    }
}

/// Maps up to this size are searched by [`attr`] with a linear scan.
const SCAN_MAX: usize = 16;

/// `map[key]` for an event's attribute map. The maps hold a handful of entries (one B-tree
/// node), so a scan that compares lengths before bytes is cheaper than the B-tree's ordered
/// search, which compares bytes at every step; the OTel and metrics hooks look up a dozen
/// keys per span.
pub(crate) fn attr<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() > SCAN_MAX {
        return map.get(key);
    }
    map.iter().find_map(|(k, v)| (k == key).then_some(v))
}

/// The kinds of intent the classifier chooses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Answer directly.
    Respond,
    /// Use tools.
    ToolUse,
    /// Research over documents.
    Research,
    /// Make and execute a multi-step plan.
    Plan,
    /// Ask a clarifying question.
    Clarify,
}

impl Intent {
    /// All intents, in prompt order.
    pub const ALL: [Intent; 5] = [
        Intent::Respond,
        Intent::ToolUse,
        Intent::Research,
        Intent::Plan,
        Intent::Clarify,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Respond => "respond",
            Intent::ToolUse => "tool_use",
            Intent::Research => "research",
            Intent::Plan => "plan",
            Intent::Clarify => "clarify",
        }
    }

    /// Parses an intent leniently: any case, `-` or space for `_`.
    pub fn parse(text: &str) -> Option<Intent> {
        let norm = text.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        Intent::ALL.into_iter().find(|i| i.as_str() == norm)
    }
}

impl<'de> Deserialize<'de> for Intent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Intent::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown intent {s:?}; expected one of respond, tool_use, research, plan, clarify"
            ))
        })
    }
}

impl schemars::JsonSchema for Intent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Intent".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": ["respond", "tool_use", "research", "plan", "clarify"]
        })
    }
}

impl std::fmt::Display for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a proposed plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStepSummary {
    /// The step's id (`step-{n}-{hex}`).
    pub step_id: String,
    /// What the step does.
    pub description: String,
    /// The tool it calls, or `None` for a reasoning step.
    pub tool_name: Option<String>,
}

/// One tool call as summarized at the end of a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallSummary {
    /// The tool.
    pub tool_name: String,
    /// The call id.
    pub call_id: String,
    /// Whether it failed (error, panic, timeout, denial, skip).
    pub is_error: bool,
    /// How long it ran.
    pub duration_ms: f64,
    /// The plan step it belonged to, if any.
    pub step_id: Option<String>,
}

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnOutcome {
    /// The agent answered.
    #[default]
    Completed,
    /// The turn waits for a human to approve a tool call.
    Paused,
    /// The turn failed (see the `RunError` event).
    Failed,
}

/// The last event of a finished turn: what it produced and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnSummary {
    /// The answer.
    pub text: String,
    /// The classified intent (`None` if classification failed).
    pub intent: Option<Intent>,
    /// Every tool call of the turn.
    pub tool_calls: Vec<ToolCallSummary>,
    /// Total tokens over every model call of the turn (the classifier included).
    pub tokens_used: u64,
    /// Input tokens over every model call.
    pub input_tokens: u64,
    /// Output tokens over every model call.
    pub output_tokens: u64,
    /// USD cost over every model call; `None` when some model's price is unknown.
    pub cost_usd: Option<f64>,
    /// How the turn ended.
    pub outcome: TurnOutcome,
}

/// What happened. Spans mark phase boundaries; the other variants are facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EventKind {
    /// A phase boundary.
    Span(SpanEvent),
    /// The classifier chose an intent.
    IntentClassified {
        /// The intent.
        intent: Intent,
        /// Confidence in `[0, 1]`.
        confidence: f64,
        /// Why (heuristic decisions end with "(heuristic)").
        reasoning: String,
    },
    /// A plan, before it runs.
    PlanProposed {
        /// Its steps.
        steps: Vec<PlanStepSummary>,
        /// How it will run (`adaptive`).
        strategy: String,
    },
    /// Tokens and cost of one model call.
    UsageObserved {
        /// Input tokens (cached included).
        input_tokens: u64,
        /// Output tokens.
        output_tokens: u64,
        /// Input plus output.
        total_tokens: u64,
        /// USD cost; `None` when the model's price is unknown.
        cost_usd: Option<f64>,
        /// The model.
        model: String,
        /// What the call was for (`intent_classification`, `respond`, `react`, ...).
        source: String,
    },
    /// Answer text: one event per streamed chunk of a model call, in order. The
    /// concatenation of a call's deltas (after its last [`EventKind::TextRetracted`], if
    /// any) is that call's text.
    TextDelta {
        /// The text.
        content: String,
        /// The `llm_call` span that produced it (`None` for text the runner wrote itself,
        /// such as a budget notice, or in trails written before streaming).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        span_id: Option<Arc<str>>,
    },
    /// Reasoning ("thinking") text of a model call, as the provider streams it. Not part of
    /// the answer.
    ThinkingDelta {
        /// The text.
        content: String,
        /// The `llm_call` span it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        span_id: Option<Arc<str>>,
    },
    /// The text a model call streamed so far is void (its answer could not be used). When
    /// `retry_attempt` is set a corrective retry follows and streams anew; otherwise the
    /// deltas that follow replace the void text.
    TextRetracted {
        /// The `llm_call` span whose text is void.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        span_id: Option<Arc<str>>,
        /// Why (the parse error of the streamed answer, for example).
        reason: String,
        /// The attempt number of the corrective retry that follows, if one does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_attempt: Option<u32>,
    },
    /// The classified intent does not fit the agent's pattern; the runner falls back.
    PatternMismatch {
        /// The intent.
        classified_intent: Intent,
        /// The agent's pattern.
        agent_pattern: String,
        /// The pattern that would fit.
        recommended_pattern: String,
        /// What the runner does instead.
        fallback: String,
    },
    /// A tool call waits for a human's approval; the turn pauses.
    ToolCallApprovalRequired {
        /// The call id.
        call_id: String,
        /// The tool.
        tool_name: String,
        /// The arguments the model gave.
        arguments: Value,
        /// Why approval is needed.
        reason: String,
        /// Where the paused run's state is stored, if it was stored.
        run_state_ref: Option<String>,
    },
    /// A budget ran out.
    BudgetExceeded {
        /// Which budget (`steps`, `replans`, `tokens`, `cost`, `wall_clock`, `chat_cost`).
        kind: String,
        /// The limit.
        limit: f64,
        /// The value that crossed it.
        actual: f64,
        /// A readable reason.
        reason: String,
    },
    /// The turn failed.
    RunError {
        /// A short, stable kind (`auth_failure`, `rate_limit`, `transport_error`, ...).
        error_type: String,
        /// What went wrong.
        message: String,
        /// How to recover.
        recovery_hint: String,
    },
    /// The last event of a finished turn.
    TurnSummary(TurnSummary),
}

impl EventKind {
    /// The `"type"` tag of this kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Span(_) => "span",
            EventKind::IntentClassified { .. } => "intent_classified",
            EventKind::PlanProposed { .. } => "plan_proposed",
            EventKind::UsageObserved { .. } => "usage_observed",
            EventKind::TextDelta { .. } => "text_delta",
            EventKind::ThinkingDelta { .. } => "thinking_delta",
            EventKind::TextRetracted { .. } => "text_retracted",
            EventKind::PatternMismatch { .. } => "pattern_mismatch",
            EventKind::ToolCallApprovalRequired { .. } => "tool_call_approval_required",
            EventKind::BudgetExceeded { .. } => "budget_exceeded",
            EventKind::RunError { .. } => "run_error",
            EventKind::TurnSummary(_) => "turn_summary",
        }
    }
}

/// One event of a turn's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Wall-clock time of emission, in nanoseconds since the Unix epoch.
    pub timestamp: u64,
    /// Position in the run's stream: 0, 1, 2, ... with no gaps.
    pub sequence: u64,
    /// The session.
    pub session_id: Arc<str>,
    /// The run (one per `Runner::run` call).
    pub run_id: Arc<str>,
    /// The agent's name.
    pub agent: Arc<str>,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// The span boundary, if this event is one.
    pub fn span(&self) -> Option<&SpanEvent> {
        match &self.kind {
            EventKind::Span(span) => Some(span),
            _ => None,
        }
    }

    /// Whether this is a span of `subject` at `phase`.
    pub fn is_span(&self, subject: SpanSubject, phase: SpanPhase) -> bool {
        self.span()
            .is_some_and(|s| s.subject == subject && s.phase == phase)
    }

    /// A short label such as `span(turn,start)` or `intent_classified`, for logs and tests.
    pub fn label(&self) -> String {
        match &self.kind {
            EventKind::Span(s) => format!("span({},{})", s.subject.as_str(), s.phase.as_str()),
            other => other.type_name().to_string(),
        }
    }

    /// This event as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"serialization_error\":{:?}}}", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> Map<String, Value> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), Value::from(i)))
            .collect()
    }

    #[test]
    fn attr_finds_what_get_finds() {
        let m = map(&["attempts", "b", "input_tokens", "model", "zz"]);
        for key in ["a", "attempts", "input_tokens", "missing", "zz", "zzz"] {
            assert_eq!(attr(&m, key), m.get(key), "{key}");
        }
    }

    #[test]
    fn attr_on_a_large_map_searches_it() {
        let keys: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let m = map(&refs);
        assert_eq!(attr(&m, "k39"), Some(&Value::from(39)));
        assert_eq!(attr(&m, "k40"), None);
    }
}
