//! Exports an agent turn as OpenTelemetry spans, fully offline.
//!
//! Run with: `cargo run -p kaos-agents --example export_otel --features otel`
//!
//! A fake model answers the intent classifier and the respond call; the `OTelHook` turns
//! the turn's events into spans in an in-memory exporter, and the example prints their
//! names. With `KAOS_LEARN_LIVE=1` and `ANTHROPIC_API_KEY` set it uses
//! `anthropic:claude-haiku-4-5` instead of the fake.
//!
//! To send the spans to a collector instead, build the tracer with
//! `kaos_agents::otel::Telemetry::from_env()` (honours `OTEL_EXPORTER_OTLP_ENDPOINT`, ...).

use kaos_agents::otel::OTelHook;
use kaos_agents::{
    Agent, FunctionClient, KaosRuntime, LlmRequest, Message, ProviderResponse, Runner,
};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The fake model: classifier prompts mention "intent" and "reasoning".
fn fake(messages: &[Message], _request: &LlmRequest) -> ProviderResponse {
    let prompt: String = messages.iter().map(|m| m.content.to_lowercase()).collect();
    if prompt.contains("intent") && prompt.contains("reasoning") {
        ProviderResponse::from_text(r#"{"intent":"respond","confidence":0.95,"reasoning":"x"}"#)
            .with_usage(100, 10)
    } else {
        ProviderResponse::from_text(r#"{"response":"Hello from the agent."}"#).with_usage(200, 20)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exporter = kaos_agents::otel::MemoryExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();

    let live = std::env::var("KAOS_LEARN_LIVE").is_ok_and(|v| v == "1")
        && std::env::var("ANTHROPIC_API_KEY").is_ok_and(|k| !k.is_empty());
    let (runtime, model) = if live {
        (KaosRuntime::test_mode(), "anthropic:claude-haiku-4-5")
    } else {
        (
            KaosRuntime::test_mode().with_client("function-test", FunctionClient::new(fake)),
            "function-test",
        )
    };
    let agent = Agent::builder().model(model).build()?;
    let runner = Runner::new(agent, runtime).with_hook(OTelHook::new(provider.tracer("kaos")));
    let response = runner.turn("Summarize the lease.", "otel-demo").await?;
    println!("agent: {}", response.text);

    provider.force_flush()?;
    let mut names: Vec<String> = exporter
        .spans()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    names.sort();
    println!("captured {} OpenTelemetry span(s):", names.len());
    println!();
    for name in &names {
        println!("  {name}");
    }
    if !names.iter().any(|n| n == "agent.turn") {
        return Err("no agent.turn span was captured".into());
    }
    if !names.iter().any(|n| n == "agent.intent_classification") {
        return Err("no agent.intent_classification span was captured".into());
    }
    provider.shutdown()?;
    Ok(())
}
