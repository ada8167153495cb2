//! A PLAN-pattern agent proposes a plan, then executes it live, fully offline.
//!
//! Run with: `cargo run -p kaos-agents --example plan_execute`
//!
//! Prints the proposed plan, the event tree (the search tool call nested under its step)
//! and the synthesized answer.

use futures::StreamExt;
use kaos_agents::kaos_llm::Role;
use kaos_agents::{
    Agent, AgentPattern, AgentResponse, Event, EventKind, FnTool, FunctionClient, KaosRuntime,
    LlmRequest, Message, ProviderResponse, Runner,
};
use serde_json::json;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Query {
    /// What to search for.
    query: String,
}

fn fake_model(messages: &[Message], _r: &LlmRequest) -> ProviderResponse {
    let system = messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let text = if system.contains("Decide how an assistant should handle") {
        json!({"intent": "plan", "confidence": 0.9, "reasoning": "several steps"})
    } else if system.contains("Break the user's goal") {
        json!({"steps": [
            {"description": "Search the 2025 filings", "tool": "search", "expected_output": "matching filings"},
            {"description": "Compare the filings", "tool": null, "expected_output": "the differences"}
        ]})
    } else if system.contains("Choose the arguments") {
        json!({"arguments": {"query": "2025 filings"}})
    } else if system.contains("Carry out one reasoning step") {
        json!({"result": "Filing B adds a risk factor that filing A lacks."})
    } else {
        json!({"answer": "Two 2025 filings were found; filing B adds a new risk factor."})
    };
    ProviderResponse::from_text(text.to_string()).with_usage(50, 10)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let search = FnTool::new("search", "Searches filings.", |q: Query| async move {
        format!("2 filings match {:?}: A, B", q.query)
    })
    .read_only();
    let runtime = KaosRuntime::test_mode()
        .with_client("function-test", FunctionClient::new(fake_model))
        .with_tool(search);
    let agent = Agent::builder()
        .name("planner")
        .model("function-test")
        .pattern(AgentPattern::Plan)
        .build()?;
    let runner = Runner::new(agent, runtime);
    let events: Vec<Event> = runner
        .run(
            "First find the 2025 filings, then compare them.",
            "plan-demo",
        )
        .collect()
        .await;
    let mut depth = std::collections::HashMap::new();
    for e in &events {
        match &e.kind {
            EventKind::PlanProposed { steps, .. } => {
                println!("plan proposed:");
                for s in steps {
                    println!(
                        "  {} {} (tool: {})",
                        s.step_id,
                        s.description,
                        s.tool_name.as_deref().unwrap_or("reasoning")
                    );
                }
            }
            EventKind::Span(s) => {
                let d = s
                    .parent_span_id
                    .as_ref()
                    .and_then(|p| depth.get(p).copied())
                    .map_or(0, |d: usize| d + 1);
                depth.insert(s.span_id.clone(), d);
                println!("{}{} {}", "  ".repeat(d), e.label(), s.name);
            }
            _ => {}
        }
    }
    let response = AgentResponse::from_events(&events, "plan-demo")?;
    println!("answer: {}", response.text);
    if response.tool_calls.len() != 1 || response.tool_calls[0].step_id.is_none() {
        return Err("the search should run once, inside a step".into());
    }
    Ok(())
}
