//! Shows a typed structured call: a `Signature` builds the prompt from instructions, inputs
//! and an output type, then decodes and validates the model's JSON.
//!
//! Run offline: `cargo run -p kaos-llm --example typed_call`
//! Run live:    `KAOS_LEARN_LIVE=1 ANTHROPIC_API_KEY=... cargo run -p kaos-llm --example typed_call`
//!
//! Prints the decoded value, the attempts it took and the usage.

use std::sync::Arc;

use kaos_llm::structured::Signature;
use kaos_llm::{FunctionClient, LlmClient, LlmRequest, Message, ProviderResponse, RequestOptions};

/// A sentiment verdict.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Sentiment {
    /// One of positive, negative or neutral.
    label: String,
    /// How sure, from 0 to 1.
    confidence: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client: Arc<dyn LlmClient> = if std::env::var("KAOS_LEARN_LIVE").is_ok_and(|v| v == "1") {
        kaos_llm::create_client("anthropic:claude-haiku-4-5")?
    } else {
        // Offline: the first answer is prose (not JSON), so the call makes one corrective retry.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        Arc::new(FunctionClient::new(move |_: &[Message], _: &LlmRequest| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                ProviderResponse::from_text("It sounds positive to me!").with_usage(40, 8)
            } else {
                ProviderResponse::from_text(
                    "```json\n{\"label\": \"positive\", \"confidence\": 0.92}\n```",
                )
                .with_usage(60, 12)
            }
        }))
    };
    let signature = Signature::<Sentiment>::new("Classify the sentiment of the text.")
        .input("text", "The text to classify.");
    let outcome = signature
        .call(
            client.as_ref(),
            &[("text", "I love this lease, it is so fair.")],
            &RequestOptions::default(),
        )
        .await?;
    println!(
        "label: {}, confidence: {}",
        outcome.value.label, outcome.value.confidence
    );
    println!(
        "attempts: {}, tokens: {}, cost: {:?}",
        outcome.attempts, outcome.usage.total_tokens, outcome.cost_usd
    );
    Ok(())
}
