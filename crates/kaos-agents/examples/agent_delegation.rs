//! A coordinator delegates memo drafting to a sub-agent, fully offline.
//!
//! Run with: `cargo run -p kaos-agents --example agent_delegation`
//!
//! Prints the turn's event tree (indented by parent span): the memo-drafter's whole turn
//! runs inside the `subagent` span, inside the coordinator's `tool.memo_drafter` call.

use std::collections::HashMap;

use futures::StreamExt;
use kaos_agents::kaos_llm::Role;
use kaos_agents::{
    Agent, AgentResponse, Event, EventKind, FunctionClient, KaosRuntime, LlmRequest, Message,
    ProviderResponse, Runner, agent_as_tool,
};
use serde_json::json;

fn system(messages: &[Message]) -> String {
    messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

fn is_classifier(messages: &[Message]) -> bool {
    system(messages).contains("Decide how an assistant should handle")
}

/// The sub-agent's model: classifies as "respond", then writes the draft.
fn drafter_model(messages: &[Message], _r: &LlmRequest) -> ProviderResponse {
    if is_classifier(messages) {
        return ProviderResponse::from_text(
            r#"{"intent":"respond","confidence":0.9,"reasoning":"drafting"}"#,
        )
        .with_usage(80, 10);
    }
    ProviderResponse::from_text(
        r#"{"response":"DRAFT: Memo to counsel\nRe: the Q3 filings. We reviewed the filings and see no open issues."}"#,
    )
    .with_usage(300, 60)
}

/// The coordinator's model: uses tools, delegates once, then relays the draft.
fn coordinator_model(messages: &[Message], _r: &LlmRequest) -> ProviderResponse {
    if is_classifier(messages) {
        return ProviderResponse::from_text(
            r#"{"intent":"tool_use","confidence":0.9,"reasoning":"delegate"}"#,
        )
        .with_usage(90, 10);
    }
    match messages.last().filter(|m| m.role == Role::Tool) {
        Some(result) => {
            ProviderResponse::from_text(format!("The drafter's memo:\n{}", result.content))
                .with_usage(150, 40)
        }
        None => ProviderResponse::from_tool_call(
            "tc_1",
            "memo_drafter",
            json!({"task": "Draft a memo to counsel about the Q3 filings."}),
        )
        .with_usage(120, 20),
    }
}

/// One line per event, indented by its parent span's depth.
fn print_tree(events: &[Event]) {
    let mut depth: HashMap<String, usize> = HashMap::new();
    let mut open: Vec<String> = Vec::new();
    for e in events {
        let (d, extra) = match &e.kind {
            EventKind::Span(s) if !s.phase.is_terminal() => {
                let d = s
                    .parent_span_id
                    .as_ref()
                    .and_then(|p| depth.get(&**p))
                    .map_or(0, |d| d + 1);
                depth.insert(s.span_id.to_string(), d);
                open.push(s.span_id.to_string());
                (d, format!(" {}", s.name))
            }
            EventKind::Span(s) => {
                open.retain(|x| **x != *s.span_id);
                (
                    depth.get(&*s.span_id).copied().unwrap_or(0),
                    format!(" {}", s.name),
                )
            }
            _ => (
                open.last()
                    .and_then(|id| depth.get(id))
                    .map_or(0, |d| d + 1),
                String::new(),
            ),
        };
        println!("{}{}{}  [{}]", "  ".repeat(d), e.label(), extra, e.agent);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let drafter = Agent::builder()
        .name("memo-drafter")
        .model("drafter")
        .instructions("You draft short legal memos.")
        .tool("none")
        .build()?;
    let runtime = KaosRuntime::test_mode()
        .with_client("drafter", FunctionClient::new(drafter_model))
        .with_client("coordinator", FunctionClient::new(coordinator_model))
        .with_tool(agent_as_tool(
            drafter,
            None,
            "memo_drafter",
            "Drafts a memo for the task it is given.",
        ));
    let coordinator = Agent::builder()
        .name("coordinator")
        .model("coordinator")
        .tool("memo_drafter")
        .build()?;
    let runner = Runner::new(coordinator, runtime);

    let events: Vec<Event> = runner
        .run(
            "Get a memo to counsel drafted about the Q3 filings.",
            "demo",
        )
        .collect()
        .await;
    println!("event tree:");
    print_tree(&events);
    let response = AgentResponse::from_events(&events, "demo")?;
    println!("\nanswer:\n{}", response.text);
    println!(
        "\ntokens (coordinator + memo-drafter): {}",
        response.tokens_used
    );
    if !response.text.contains("DRAFT: Memo to counsel") {
        return Err("the answer should contain the sub-agent's draft".into());
    }
    Ok(())
}
