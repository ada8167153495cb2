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

/// Where a client's requests go: a URL's host (never its user or password) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// Host name or IP address, as in the URL.
    pub host: String,
    /// The URL's port, or its scheme's default (443 for https, 80 for http).
    pub port: u16,
}

impl ServerAddress {
    /// The host and port of `url`; `None` when it does not parse or has no host.
    pub fn of_url(url: &str) -> Option<Self> {
        let url = reqwest::Url::parse(url).ok()?;
        Some(Self {
            host: url
                .host_str()?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: url.port_or_known_default()?,
        })
    }
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

    /// The host and port its requests go to, for telemetry (`server.address`,
    /// `server.port` on `chat` spans and model-call metrics); `None` for a client with no
    /// server (the default: closures, scripts).
    fn server_address(&self) -> Option<ServerAddress> {
        None
    }

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
    fn server_address(&self) -> Option<ServerAddress> {
        (**self).server_address()
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
    fn server_address(&self) -> Option<ServerAddress> {
        (**self).server_address()
    }
    fn stream<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxStream<'a, Result<StreamEvent, LlmError>> {
        (**self).stream(request)
    }
}

#[cfg(test)]
mod tests {
    use super::ServerAddress;

    fn of(url: &str) -> Option<(String, u16)> {
        ServerAddress::of_url(url).map(|s| (s.host, s.port))
    }

    #[test]
    fn a_server_address_is_a_urls_host_and_port_without_its_credentials() {
        assert_eq!(
            of("https://api.anthropic.com"),
            Some(("api.anthropic.com".into(), 443))
        );
        assert_eq!(
            of("http://user:secret@127.0.0.1:8080/v1"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(of("http://[::1]:9000/v1"), Some(("::1".into(), 9000)));
        assert_eq!(of("http://localhost/v1"), Some(("localhost".into(), 80)));
        assert_eq!(of("not a url"), None);
        assert_eq!(of("unix:/tmp/socket"), None);
    }
}
