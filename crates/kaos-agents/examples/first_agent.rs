//! Shows an agent remembering a conversation across two turns, fully offline.
//!
//! Run with: `cargo run -p kaos-agents --example first_agent`
//!
//! Prints each turn's event stream, then the answers: turn 1 sees 1 user message in its
//! history, turn 2 sees 2.

use futures::StreamExt;
use kaos_agents::{
    Agent, FunctionClient, KaosRuntime, LlmRequest, Message, ProviderResponse, Runner,
};

/// A fake model: the classifier always says "respond"; the respond call counts the user
/// lines in the conversation history it was given.
fn fake_model(messages: &[Message], _request: &LlmRequest) -> ProviderResponse {
    let prompt: String = messages.iter().map(|m| m.content.to_lowercase()).collect();
    if prompt.contains("intent") && prompt.contains("reasoning") {
        return ProviderResponse::from_text(
            r#"{"intent":"respond","confidence":0.95,"reasoning":"chat"}"#,
        )
        .with_usage(100, 10);
    }
    let history = messages
        .last()
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let users = history.matches("user:").count();
    ProviderResponse::from_text(format!(
        r#"{{"response":"I can see {users} user message(s) so far."}}"#
    ))
    .with_usage(200, 20)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime =
        KaosRuntime::test_mode().with_client("function-test", FunctionClient::new(fake_model));
    let agent = Agent::builder()
        .name("first-agent")
        .model("function-test")
        .build()?;
    let runner = Runner::new(agent, runtime);

    println!("turn 1 events:");
    let mut stream = runner.run("Hello! Who are you?", "first-agent-demo");
    while let Some(event) = stream.next().await {
        println!("  {}", event.to_json());
    }
    let second = runner
        .turn("And what did I just ask?", "first-agent-demo")
        .await?;
    println!("turn {}: {}", second.turn_number, second.text);
    println!(
        "tokens over the turn (classifier included): {}",
        second.tokens_used
    );
    if !second.text.contains("2 user message") {
        return Err("turn 2 should see both user messages".into());
    }
    Ok(())
}
