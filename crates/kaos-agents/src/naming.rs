//! Span names: the one function that names a kaos span, used by the OTel exporter, the
//! terminal tree (`kaos run --trace`, `kaos audit show`) and the HTML viewer, so a name read
//! in the terminal is the name a trace backend shows.
//!
//! | span | [`SpanNaming::Seed`] (default) | [`SpanNaming::GenAi`] |
//! |---|---|---|
//! | turn | `agent.turn` | `invoke_agent {agent}` |
//! | classifier call | `agent.intent_classification` › `chat {model}` | same |
//! | model call | `chat {model}` | same |
//! | tool call | `agent.tool_call.{tool}` | `execute_tool {tool}` |
//! | plan step | `agent.step.{id}` | same |
//! | sub-agent | `agent.subagent.{name}` | `invoke_agent {name}` |
//! | handoff | `agent.handoff.{to}` | same |

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::events::SpanSubject;

/// How spans are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanNaming {
    /// The seed's names: `agent.turn`, `agent.tool_call.{tool}`, `agent.subagent.{name}`,
    /// `chat {model}`.
    #[default]
    Seed,
    /// GenAI names: `invoke_agent {agent}`, `execute_tool {tool}`, `chat {model}`.
    GenAi,
}

impl SpanNaming {
    /// The environment variable read by [`SpanNaming::from_env`]: `seed` or `genai`.
    pub const ENV: &'static str = "KAOS_SPAN_NAMING";

    /// Parses `seed` or `genai` (any case; `gen_ai` too).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "seed" => Some(Self::Seed),
            "genai" | "gen_ai" => Some(Self::GenAi),
            _ => None,
        }
    }

    /// From `KAOS_SPAN_NAMING`: the exporter ([`crate::otel::OTelHook::new`]), the terminal
    /// tree and the HTML viewer of the `kaos` CLI all read it, so they name spans alike.
    /// Unset or blank is [`SpanNaming::Seed`]; a value it does not know is warned about and
    /// gives the default.
    pub fn from_env() -> Self {
        let Some(value) = std::env::var(Self::ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            return Self::default();
        };
        Self::parse(&value).unwrap_or_else(|| {
            crate::warn_once::warn_once(&format!(
                "ignoring {}={value:?}: expected seed or genai; the default applies",
                Self::ENV
            ));
            Self::default()
        })
    }
}

/// The name of the span that wraps a classifier's model call.
pub const INTENT_CLASSIFICATION_SPAN: &str = "agent.intent_classification";

/// The `purpose` attribute of a classifier's `llm_call` span.
pub const INTENT_CLASSIFICATION_PURPOSE: &str = "intent_classification";

/// `parts` joined, in one allocation (`format!` costs several times more on the hot path).
pub fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.push_str(p);
    }
    out
}

fn attr<'a>(attributes: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    crate::events::attr(attributes, key).and_then(Value::as_str)
}

/// The exported name of a kaos span, from its subject, its event name (`tool.search`,
/// `step.s1`, ...), its START attributes and its run's agent.
pub fn span_name(
    subject: SpanSubject,
    event_name: &str,
    attributes: &Map<String, Value>,
    agent: &str,
    naming: SpanNaming,
) -> Cow<'static, str> {
    let genai = naming == SpanNaming::GenAi;
    let suffix = |prefix: &str| event_name.strip_prefix(prefix).unwrap_or(event_name);
    match subject {
        SpanSubject::Turn if genai => Cow::Owned(concat(&["invoke_agent ", agent])),
        SpanSubject::Turn => Cow::Borrowed("agent.turn"),
        SpanSubject::LlmCall => {
            Cow::Owned(concat(&["chat ", attr(attributes, "model").unwrap_or("")]))
        }
        SpanSubject::ToolCall => {
            let tool = attr(attributes, "tool_name").unwrap_or_else(|| suffix("tool."));
            let prefix = if genai {
                "execute_tool "
            } else {
                "agent.tool_call."
            };
            Cow::Owned(concat(&[prefix, tool]))
        }
        SpanSubject::Step => {
            let id = attr(attributes, "step_id").unwrap_or_else(|| suffix("step."));
            Cow::Owned(concat(&["agent.step.", id]))
        }
        SpanSubject::Subagent => {
            let name = attr(attributes, "subagent_name").unwrap_or_else(|| suffix("subagent."));
            let prefix = if genai {
                "invoke_agent "
            } else {
                "agent.subagent."
            };
            Cow::Owned(concat(&[prefix, name]))
        }
        SpanSubject::Handoff => {
            let to = attr(attributes, "to_agent").unwrap_or_else(|| suffix("handoff."));
            Cow::Owned(concat(&["agent.handoff.", to]))
        }
    }
}

/// The name of the span the exporter puts around this one, if any: a classifier's model call
/// sits inside `agent.intent_classification`.
pub fn wrapper_name(subject: SpanSubject, attributes: &Map<String, Value>) -> Option<&'static str> {
    (subject == SpanSubject::LlmCall
        && attr(attributes, "purpose") == Some(INTENT_CLASSIFICATION_PURPOSE))
    .then_some(INTENT_CLASSIFICATION_SPAN)
}

/// The id the exporter (and the tree) gives the wrapper of the span `span_id`.
pub fn wrapper_id(span_id: &str) -> String {
    concat(&[span_id, "#intent"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn names_per_subject_and_naming() {
        let seed = SpanNaming::Seed;
        let genai = SpanNaming::GenAi;
        let none = Map::new();
        assert_eq!(
            span_name(SpanSubject::Turn, "turn.1", &none, "a", seed),
            "agent.turn"
        );
        assert_eq!(
            span_name(SpanSubject::Turn, "turn.1", &none, "a", genai),
            "invoke_agent a"
        );
        let tool = map(json!({"tool_name": "wordcount"}));
        assert_eq!(
            span_name(SpanSubject::ToolCall, "tool.x", &tool, "a", seed),
            "agent.tool_call.wordcount"
        );
        assert_eq!(
            span_name(SpanSubject::ToolCall, "tool.x", &none, "a", genai),
            "execute_tool x"
        );
        let llm = map(json!({"model": "offline", "purpose": "intent_classification"}));
        assert_eq!(
            span_name(SpanSubject::LlmCall, "llm_call.x", &llm, "a", seed),
            "chat offline"
        );
        assert_eq!(
            wrapper_name(SpanSubject::LlmCall, &llm),
            Some(INTENT_CLASSIFICATION_SPAN)
        );
        assert_eq!(wrapper_name(SpanSubject::ToolCall, &llm), None);
        assert_eq!(
            span_name(SpanSubject::Subagent, "subagent.r", &none, "a", genai),
            "invoke_agent r"
        );
        assert_eq!(
            span_name(SpanSubject::Handoff, "handoff.b", &none, "a", seed),
            "agent.handoff.b"
        );
        assert_eq!(
            span_name(SpanSubject::Step, "step.s1", &none, "a", seed),
            "agent.step.s1"
        );
    }
}
