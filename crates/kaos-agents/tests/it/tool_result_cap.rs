//! A tool result going back into the prompt is capped (`Agent::max_tool_result_bytes`) with
//! a marker saying how much was cut; the tool span says so (`kaos.result_truncated`).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kaos_agents::{Agent, Event, FnTool, KaosRuntime, Runner, SpanPhase, SpanSubject, ToolOutput};
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
    // Multi-byte characters: the cut must land on a character boundary.
    let dump = FnTool::new("dump", "Prints a lot.", |s: Size| async move {
        "é".repeat(s.bytes / 2)
    })
    .read_only();
    run_tool(dump, bytes, cap).await
}

async fn run_tool(dump: FnTool, bytes: usize, cap: usize) -> (Option<String>, Vec<Event>) {
    let seen = Arc::new(Mutex::new(None));
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

/// A tool that cut its own output (a command's capture cap: `ToolOutput::truncated`) marks
/// the span too, even when the result fits under the prompt cap.
#[tokio::test]
async fn a_result_the_tool_cut_itself_marks_the_span() {
    let dump = FnTool::new("dump", "Prints a lot.", |s: Size| async move {
        ToolOutput::text(format!("[cut by the tool] {}", "x".repeat(s.bytes))).mark_truncated()
    })
    .read_only();
    let (seen, events) = run_tool(dump, 100, 4096).await;
    assert!(seen.unwrap().starts_with("[cut by the tool] xxx"));
    let end = tool_end(&events);
    assert_eq!(end.attributes["kaos.result_truncated"], true);
    assert!(
        !end.attributes.contains_key("kaos.result_original_bytes"),
        "the prompt cap did not cut: {:?}",
        end.attributes
    );

    // Both cuts: still one flag, and the prompt cap's original size.
    let dump = FnTool::new("dump", "Prints a lot.", |s: Size| async move {
        ToolOutput::text("x".repeat(s.bytes)).mark_truncated()
    })
    .read_only();
    let (_, events) = run_tool(dump, 5000, 1024).await;
    let end = tool_end(&events);
    assert_eq!(end.attributes["kaos.result_truncated"], true);
    assert_eq!(end.attributes["kaos.result_original_bytes"], 5000);
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
