//! A destructive tool call pauses the turn for approval; a human approves and the run
//! resumes where it stopped. Fully offline.
//!
//! Run with: `cargo run -p kaos-agents --example pause_resume`
//!
//! Prints "awaiting approval", then the resumed run's events; the tool body runs once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use kaos_agents::kaos_llm::Role;
use kaos_agents::{
    Agent, AgentResponse, Approval, Event, FnTool, FunctionClient, KaosRuntime, LlmRequest,
    Message, ProviderResponse, Runner,
};
use serde_json::json;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Args {
    /// The file to delete.
    path: String,
}

fn fake_model(messages: &[Message], _r: &LlmRequest) -> ProviderResponse {
    let system = messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    if system.contains("Decide how an assistant should handle") {
        return ProviderResponse::from_text(
            r#"{"intent":"tool_use","confidence":0.9,"reasoning":"delete"}"#,
        );
    }
    match messages.last().filter(|m| m.role == Role::Tool) {
        Some(result) => ProviderResponse::from_text(format!("Done: {}", result.content)),
        None => ProviderResponse::from_tool_call(
            "tc_1",
            "delete_file",
            json!({"path": "/data/old-report.pdf"}),
        ),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let delete = FnTool::new("delete_file", "Deletes a file.", move |a: Args| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            format!("deleted {}", a.path)
        }
    })
    .destructive();
    let runtime = KaosRuntime::test_mode()
        .with_client("function-test", FunctionClient::new(fake_model))
        .with_tool(delete);
    let agent = Agent::builder()
        .name("ops")
        .model("function-test")
        .build()?;
    let runner = Runner::new(agent.clone(), runtime.clone());

    let paused = runner.turn("Delete the old report.", "ops-demo").await?;
    let Some(pending) = paused.pending_approval else {
        return Err("the destructive call should wait for approval".into());
    };
    println!(
        "awaiting approval: {} {} ({}); state at {}",
        pending.tool_name,
        pending.arguments,
        pending.reason,
        pending.run_state_ref.as_deref().unwrap_or("-")
    );

    // A fresh runner over the same store stands in for another process.
    let approver = Runner::new(agent, runtime);
    let events: Vec<Event> = approver
        .resume(&paused.run_id, "ops-demo", Approval::Approve)
        .collect()
        .await;
    println!("approved; resumed run:");
    for e in &events {
        println!("  {}", e.label());
    }
    let done = AgentResponse::from_events(&events, "ops-demo")?;
    println!("answer: {}", done.text);
    let n = runs.load(Ordering::SeqCst);
    println!("tool body ran {n} time(s)");
    if n != 1 {
        return Err("the approved call must run exactly once".into());
    }
    Ok(())
}
