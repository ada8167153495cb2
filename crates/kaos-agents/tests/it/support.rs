//! Helpers shared by the integration tests: a fake model routed by prompt, span checks and
//! an indented event tree.

use std::collections::HashMap;

use kaos_agents::kaos_llm::Role;
use kaos_agents::{Event, EventKind, FunctionClient, LlmRequest, Message, ProviderResponse};

/// Which call a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Classify,
    Respond,
    React,
    PlanExpand,
    ToolArgs,
    PlanStep,
    Synthesis,
}

pub fn call_of(messages: &[Message], request: &LlmRequest) -> Call {
    let system = messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    if system.contains("Decide how an assistant should handle") {
        Call::Classify
    } else if system.contains("Break the user's goal") {
        Call::PlanExpand
    } else if system.contains("Choose the arguments") {
        Call::ToolArgs
    } else if system.contains("Carry out one reasoning step") {
        Call::PlanStep
    } else if system.contains("Write the final answer") {
        Call::Synthesis
    } else if !request.tools.is_empty() {
        Call::React
    } else {
        Call::Respond
    }
}

/// The last user message's text (the rendered inputs of a typed call).
pub fn last_user(messages: &[Message]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// The last message if it is a tool result.
pub fn last_tool_result(messages: &[Message]) -> Option<String> {
    messages
        .last()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.clone())
}

pub fn classify(intent: &str) -> ProviderResponse {
    ProviderResponse::from_text(format!(
        r#"{{"intent":"{intent}","confidence":0.9,"reasoning":"test"}}"#
    ))
    .with_usage(10, 1)
}

/// A fake model from a routing closure.
pub fn model(
    f: impl Fn(Call, &[Message]) -> ProviderResponse + Send + Sync + 'static,
) -> FunctionClient {
    FunctionClient::new(move |messages: &[Message], request: &LlmRequest| {
        f(call_of(messages, request), messages)
    })
}

/// Asserts that every START has exactly one terminal phase (same span id, same parent)
/// and nothing ends that did not start; and that sequences are gap-free per run.
pub fn assert_balanced(events: &[Event]) {
    let mut open: HashMap<String, Option<String>> = HashMap::new();
    let mut ended: HashMap<String, usize> = HashMap::new();
    let mut seq: HashMap<String, u64> = HashMap::new();
    for e in events {
        let next = seq.entry(e.run_id.to_string()).or_insert(0);
        assert_eq!(e.sequence, *next, "sequence gap in run {}", e.run_id);
        *next += 1;
        if let EventKind::Span(s) = &e.kind {
            let id = s.span_id.to_string();
            let parent = s.parent_span_id.as_ref().map(|p| p.to_string());
            if s.phase.is_terminal() {
                let started = open
                    .remove(&id)
                    .unwrap_or_else(|| panic!("{} ends a span that is not open", e.label()));
                assert_eq!(started, parent, "parent changed between phases of {id}");
                *ended.entry(id).or_default() += 1;
            } else {
                assert!(open.insert(id, parent).is_none(), "span started twice");
            }
        }
    }
    assert!(open.is_empty(), "spans never ended: {open:?}");
    assert!(ended.values().all(|n| *n == 1));
}

/// One line per event: indentation by open-span depth, the label and (for spans) the name.
pub fn tree(events: &[Event]) -> Vec<String> {
    let mut depth: HashMap<String, usize> = HashMap::new();
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for e in events {
        match &e.kind {
            EventKind::Span(s) if !s.phase.is_terminal() => {
                let d = s
                    .parent_span_id
                    .as_ref()
                    .and_then(|p| depth.get(&p.to_string()))
                    .map_or(0, |d| d + 1);
                depth.insert(s.span_id.to_string(), d);
                stack.push(s.span_id.to_string());
                out.push(format!("{}{} {}", "  ".repeat(d), e.label(), s.name));
            }
            EventKind::Span(s) => {
                let d = depth.get(&s.span_id.to_string()).copied().unwrap_or(0);
                stack.retain(|x| **x != *s.span_id);
                out.push(format!("{}{} {}", "  ".repeat(d), e.label(), s.name));
            }
            _ => {
                let d = stack
                    .last()
                    .and_then(|id| depth.get(id))
                    .map_or(0, |d| d + 1);
                out.push(format!("{}{}", "  ".repeat(d), e.label()));
            }
        }
    }
    out
}

/// The span event of `label` named `name` (first match).
pub fn span<'a>(events: &'a [Event], label: &str, name: &str) -> &'a kaos_agents::SpanEvent {
    events
        .iter()
        .filter(|e| e.label() == label)
        .filter_map(|e| e.span())
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {label} {name}"))
}
