//! Shared helpers: fake models, tools and checks on event streams.

use std::collections::HashMap;
use std::sync::Arc;

use kaos_agents::{Event, EventKind, SpanPhase};
use kaos_llm::{LlmRequest, Message, ProviderResponse, Role};

/// Whether the request is the intent classifier's (the seed's routing rule).
pub fn is_classifier(messages: &[Message]) -> bool {
    let all: String = messages.iter().map(|m| m.content.to_lowercase()).collect();
    all.contains("intent") && all.contains("reasoning")
}

/// The user's message in a classifier or respond prompt (`**message** (...): <text>`).
pub fn user_text(messages: &[Message]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// The value of the `message` input in a typed-call prompt (the whole user text otherwise).
pub fn message_value(messages: &[Message]) -> String {
    let text = user_text(messages);
    let first = text.lines().next().unwrap_or_default();
    match first.strip_prefix("**message**") {
        Some(rest) => rest
            .split_once("): ")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
        None => text,
    }
}

/// A fake model: classifies "tool"-mentioning messages as tool_use, others as respond;
/// in the tool loop calls `tool` once with `args`, then answers with the tool's result.
pub fn routing_model(
    tool: &'static str,
    args: serde_json::Value,
) -> impl Fn(&[Message], &LlmRequest) -> ProviderResponse + Send + Sync + 'static {
    move |messages, request| {
        if is_classifier(messages) {
            let intent = if message_value(messages).contains("tool") {
                "tool_use"
            } else {
                "respond"
            };
            return ProviderResponse::from_text(format!(
                r#"{{"intent":"{intent}","confidence":0.9,"reasoning":"routing"}}"#
            ))
            .with_usage(100, 10);
        }
        if !request.tools.is_empty() {
            let results: Vec<&Message> = messages.iter().filter(|m| m.role == Role::Tool).collect();
            return match results.last() {
                None => {
                    ProviderResponse::from_tool_call("tc_1", tool, args.clone()).with_usage(50, 5)
                }
                Some(r) => ProviderResponse::from_text(format!("result was: {}", r.content))
                    .with_usage(60, 6),
            };
        }
        let echoed = message_value(messages);
        ProviderResponse::from_text(
            serde_json::json!({ "response": format!("echo: {echoed}") }).to_string(),
        )
        .with_usage(200, 20)
    }
}

/// Asserts the structural invariants of one run's events: gap-free sequence from 0, every
/// START has exactly one terminal phase with the same parent, no terminal without START.
pub fn assert_well_formed(events: &[Event]) {
    let mut by_run: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in events {
        by_run.entry(&e.run_id).or_default().push(e);
    }
    for (run, evs) in by_run {
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(
                e.sequence,
                i as u64,
                "run {run}: sequence gap at {i}: {}",
                e.label()
            );
        }
        let mut open: HashMap<Arc<str>, Option<Arc<str>>> = HashMap::new();
        let mut closed = 0;
        let mut started = 0;
        for e in evs {
            if let EventKind::Span(s) = &e.kind {
                if s.phase == SpanPhase::Start {
                    started += 1;
                    assert!(
                        open.insert(s.span_id.clone(), s.parent_span_id.clone())
                            .is_none(),
                        "span started twice"
                    );
                } else {
                    closed += 1;
                    let parent = open
                        .remove(&s.span_id)
                        .unwrap_or_else(|| panic!("terminal without START: {}", s.name));
                    assert_eq!(
                        parent, s.parent_span_id,
                        "terminal phase must carry the START's parent"
                    );
                }
            }
        }
        assert!(open.is_empty(), "run {run}: spans left open: {open:?}");
        assert_eq!(started, closed);
    }
}

/// The labels of events, e.g. `span(turn,start)`.
pub fn labels(events: &[Event]) -> Vec<String> {
    events.iter().map(Event::label).collect()
}

/// `default` cases per property, or `PROPTEST_CASES` when it is set (a longer hunt for
/// flaky inputs: `PROPTEST_CASES=2000 cargo test`). An explicit `with_cases` would ignore it.
pub fn proptest_config(default: u32) -> proptest::prelude::ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::prelude::ProptestConfig::with_cases(cases)
}
