//! The [`LlmClient`] trait: one model behind one async method.

use futures::stream::{self, BoxStream, StreamExt};

use crate::error::LlmError;
use crate::types::{ContentPart, LlmRequest, ProviderResponse, Usage};

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// More visible text.
    TextDelta(String),
    /// More reasoning text.
    ThinkingDelta(String),
    /// Part of a tool call. `id` and `name` arrive with the first delta of a call.
    ToolCallDelta {
        /// Position of the call in the answer.
        index: usize,
        /// The call id (first delta only).
        id: Option<String>,
        /// The tool name (first delta only).
        name: Option<String>,
        /// A fragment of the arguments' JSON text.
        arguments_delta: String,
    },
    /// Token usage (normally near the end).
    Usage(Usage),
    /// The whole answer, assembled; always the last event of a successful stream.
    Done(ProviderResponse),
}

/// A model. Implementations are cheap to share as `Arc<dyn LlmClient>`.
///
/// Only [`complete`](LlmClient::complete) is required; [`stream`](LlmClient::stream) has a
/// default that yields the complete answer as deltas.
#[async_trait::async_trait]
pub trait LlmClient: Send + Sync {
    /// Sends one request and waits for the whole answer.
    async fn complete(&self, request: &LlmRequest) -> Result<ProviderResponse, LlmError>;

    /// The provider name (`anthropic`, `openai`, `function`, ...), used in spans and events.
    fn provider(&self) -> &str;

    /// The model name this client talks to.
    fn model(&self) -> &str;

    /// Streams the answer. The default calls [`complete`](LlmClient::complete) and replays
    /// the answer as deltas, so every client can be streamed.
    fn stream<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxStream<'a, Result<StreamEvent, LlmError>> {
        stream::once(async move { self.complete(request).await })
            .flat_map(|result| match result {
                Ok(response) => {
                    stream::iter(response_as_events(response).into_iter().map(Ok)).boxed()
                }
                Err(e) => stream::iter(vec![Err(e)]).boxed(),
            })
            .boxed()
    }
}

/// The stream events that replay a complete answer.
pub fn response_as_events(response: ProviderResponse) -> Vec<StreamEvent> {
    let mut events = Vec::with_capacity(response.parts.len() + 2);
    let mut tool_index = 0;
    for part in &response.parts {
        match part {
            ContentPart::Text { text } => events.push(StreamEvent::TextDelta(text.clone())),
            ContentPart::Thinking { thinking } => {
                events.push(StreamEvent::ThinkingDelta(thinking.clone()))
            }
            ContentPart::ToolUse { tool_call } => {
                events.push(StreamEvent::ToolCallDelta {
                    index: tool_index,
                    id: Some(tool_call.id.clone()),
                    name: Some(tool_call.name.clone()),
                    arguments_delta: tool_call.arguments.to_string(),
                });
                tool_index += 1;
            }
        }
    }
    events.push(StreamEvent::Usage(response.usage));
    events.push(StreamEvent::Done(response));
    events
}

#[async_trait::async_trait]
impl<C: LlmClient + ?Sized> LlmClient for std::sync::Arc<C> {
    async fn complete(&self, request: &LlmRequest) -> Result<ProviderResponse, LlmError> {
        (**self).complete(request).await
    }
    fn provider(&self) -> &str {
        (**self).provider()
    }
    fn model(&self) -> &str {
        (**self).model()
    }
    fn stream<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxStream<'a, Result<StreamEvent, LlmError>> {
        (**self).stream(request)
    }
}

#[async_trait::async_trait]
impl<C: LlmClient + ?Sized> LlmClient for Box<C> {
    async fn complete(&self, request: &LlmRequest) -> Result<ProviderResponse, LlmError> {
        (**self).complete(request).await
    }
    fn provider(&self) -> &str {
        (**self).provider()
    }
    fn model(&self) -> &str {
        (**self).model()
    }
    fn stream<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxStream<'a, Result<StreamEvent, LlmError>> {
        (**self).stream(request)
    }
}
