//! The LLM layer of kaos.
//!
//! - [`types`]: provider-neutral messages, tool definitions, responses and usage.
//! - [`LlmClient`]: one model behind one async method; [`FunctionClient`] backs it with a
//!   closure or a script for offline runs and tests.
//! - [`providers`]: Anthropic Messages and OpenAI Chat Completions (and any
//!   OpenAI-compatible server) over `reqwest`, with retries, timeouts and SSE streaming;
//!   [`FallbackClient`] fails over between clients.
//! - [`spec`]: model specs such as `anthropic:claude-haiku-4-5`; [`create_client`] turns one
//!   into a client.
//! - [`pricing`]: USD cost of a response.
//! - [`structured`]: typed JSON calls with a corrective retry.
//! - [`stream_text`]: streaming a JSON field's text as it arrives, and what a stream delivered.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod client;
pub mod error;
#[cfg(feature = "fake-provider")]
pub mod fake_provider;
pub mod fallback;
pub mod function;
pub mod json;
pub mod pricing;
pub mod providers;
pub mod retry;
pub mod spec;
pub mod stream_text;
pub mod structured;
pub mod structured_stream;
pub mod types;

pub use client::{LlmClient, ServerAddress, StreamEvent};
pub use error::LlmError;
pub use fallback::FallbackClient;
pub use providers::{AnthropicClient, OpenAiClient, create_client};
pub use spec::ModelSpec;

pub use function::{Chunking, FunctionClient, IntoLlmResult, chunked_events};
pub use json::extract_json;
pub use structured::{Signature, StructuredOutput, TypedOutcome};

pub use types::{
    ContentPart, LlmRequest, Message, ProviderResponse, RequestOptions, Role, StopReason, ToolCall,
    ToolChoice, ToolDefinition, Usage,
};
