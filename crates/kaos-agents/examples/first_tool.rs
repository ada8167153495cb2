//! Shows a read-only tool called by an agent, with the turn's event stream, offline.
//!
//! Run with: `cargo run -p kaos-agents --example first_tool`
//!
//! Prints every event as `sequence label name` indented by span nesting, then the answer
//! ("There are 3 words.").

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use kaos_agents::{
    Agent, Event, FnTool, KaosRuntime, LlmRequest, Message, ProviderResponse, Runner,
};
use kaos_llm::{FunctionClient, Role};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct WordcountArgs {
    /// The text whose words to count.
    text: String,
}

/// A fake model: classifies as tool_use, calls `kaos-learn-wordcount`, then reports its result.
fn fake_model(messages: &[Message], request: &LlmRequest) -> ProviderResponse {
    let prompt: String = messages.iter().map(|m| m.content.to_lowercase()).collect();
    if prompt.contains("intent") && prompt.contains("reasoning") {
        return ProviderResponse::from_text(
            r#"{"intent":"tool_use","confidence":0.9,"reasoning":"needs the wordcount tool"}"#,
        );
    }
    match messages.iter().rev().find(|m| m.role == Role::Tool) {
        None if !request.tools.is_empty() => ProviderResponse::from_tool_call(
            "tc_1",
            "kaos-learn-wordcount",
            serde_json::json!({"text": "a b c"}),
        ),
        Some(result) => ProviderResponse::from_text(format!("There are {} words.", result.content)),
        None => ProviderResponse::from_text("No tools were offered."),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wordcount = FnTool::new(
        "kaos-learn-wordcount",
        "Counts the words in a text.",
        |args: WordcountArgs| async move { args.text.split_whitespace().count().to_string() },
    )
    .read_only();
    let runtime = KaosRuntime::test_mode()
        .with_client("function-test", FunctionClient::new(fake_model))
        .with_tool(wordcount);
    let agent = Agent::builder()
        .name("first-tool")
        .model("function-test")
        .build()?;
    let runner = Runner::new(agent, runtime);

    let events: Vec<Event> = runner
        .run("How many words are in 'a b c'?", "first-tool-demo")
        .collect()
        .await;
    let mut depth: HashMap<Arc<str>, usize> = HashMap::new();
    let mut answer = String::new();
    for event in &events {
        let (indent, name) = match event.span() {
            Some(span) => {
                let d = span
                    .parent_span_id
                    .as_ref()
                    .and_then(|p| depth.get(p))
                    .map_or(0, |d| d + 1);
                depth.insert(span.span_id.clone(), d);
                (d, span.name.as_str())
            }
            None => (0, ""),
        };
        if let kaos_agents::EventKind::TextDelta { content, .. } = &event.kind {
            answer.push_str(content);
        }
        println!(
            "{:>2} {}{} {}",
            event.sequence,
            "  ".repeat(indent),
            event.label(),
            name
        );
    }
    println!("answer: {answer}");
    if answer != "There are 3 words." {
        return Err(format!("unexpected answer {answer:?}").into());
    }
    Ok(())
}
