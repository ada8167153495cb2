//! A tool result going back into the prompt is capped (`Agent::max_tool_result_bytes`) with
//! a marker saying how much was cut; the tool span says so (`kaos.result_truncated`).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kaos_agents::{Agent, Event, FnTool, KaosRuntime, Runner, SpanPhase, SpanSubject};
use kaos_llm::{FunctionClient, LlmRequest, Message, ProviderResponse, Role};
use serde_json::json;

use crate::util::is_classifier;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Size {
    /// Bytes to print.
    bytes: usize,
}

/// A model that calls `dump` once with `bytes`, keeps the tool result it was given, then
/// answers.
fn model(bytes: usize, seen: Arc<Mutex<Option<String>>>) -> FunctionClient {
    FunctionClient::new(move |messages: &[Message], request: &LlmRequest| {
        if is_classifier(messages) {
            return ProviderResponse::from_text(
                r#"{"intent":"tool_use","confidence":0.9,"reasoning":"t"}"#,
            );
        }
        if request.tools.is_empty() {
            return ProviderResponse::from_text(r#"{"response":"x"}"#);
        }
        match messages.iter().rev().find(|m| m.role == Role::Tool) {
            None => ProviderResponse::from_tool_call("tc_1", "dump", json!({ "bytes": bytes })),
            Some(m) => {
                *seen.lock().unwrap() = Some(m.content.clone());
                ProviderResponse::from_text("done")
            }
        }
    })
}

async fn run(bytes: usize, cap: usize) -> (Option<String>, Vec<Event>) {
    let seen = Arc::new(Mutex::new(None));
    // Multi-byte characters: the cut must land on a character boundary.
    let dump = FnTool::new("dump", "Prints a lot.", |s: Size| async move {
        "é".repeat(s.bytes / 2)
    })
    .read_only();
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", model(bytes, seen.clone()))
        .with_tool(dump);
    let agent = Agent::builder()
        .model("fake")
        .max_tool_result_bytes(cap)
        .build()
        .unwrap();
    let events: Vec<Event> = Runner::new(agent, runtime)
        .run("use the tool", "s")
        .collect()
        .await;
    let seen = seen.lock().unwrap().clone();
    (seen, events)
}

fn tool_end(events: &[Event]) -> kaos_agents::SpanEvent {
    events
        .iter()
        .filter_map(Event::span)
        .find(|s| s.subject == SpanSubject::ToolCall && s.phase == SpanPhase::Complete)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn a_result_over_the_cap_is_cut_with_a_marker_and_the_span_says_so() {
    let (seen, events) = run(1_000_001, 1001).await;
    let seen = seen.expect("the model got the tool result");
    assert!(seen.len() < 1001 + 100, "capped: {} bytes", seen.len());
    assert!(seen.starts_with("éé"));
    assert!(
        seen.ends_with(
            "[kaos: tool result truncated: 1000000 bytes, the first 1000 kept, 999000 cut]"
        ),
        "{}",
        &seen[seen.len() - 120..]
    );
    let end = tool_end(&events);
    assert_eq!(end.attributes["kaos.result_truncated"], true);
    assert_eq!(end.attributes["kaos.result_original_bytes"], 1_000_000);
}

#[tokio::test]
async fn a_result_under_the_cap_is_untouched() {
    let (seen, events) = run(2000, 4096).await;
    assert_eq!(seen.unwrap(), "é".repeat(1000));
    let end = tool_end(&events);
    assert_eq!(end.attributes["kaos.result_truncated"], false);
    assert!(!end.attributes.contains_key("kaos.result_original_bytes"));
}

#[test]
fn the_cap_is_validated_and_has_a_generous_default() {
    let agent = Agent::builder().build().unwrap();
    assert_eq!(agent.max_tool_result_bytes, 64 * 1024);
    let err = Agent::builder()
        .max_tool_result_bytes(10)
        .build()
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("max_tool_result_bytes"));
}
