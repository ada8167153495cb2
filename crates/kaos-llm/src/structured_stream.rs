//! Streaming typed calls: [`Signature::call_streaming`] streams one string field of the
//! answer (for example a reply's `response`) while the model writes it, then validates the
//! whole object as [`Signature::call`] does.

use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::client::{LlmClient, StreamEvent};
use crate::error::LlmError;
use crate::stream_text::JsonFieldStreamer;
use crate::structured::{Signature, StructuredOutput, TypedOutcome};
use crate::types::{Message, ProviderResponse, RequestOptions, Usage};

/// What a streaming typed call reports while it runs.
#[derive(Debug)]
pub enum TypedStreamUpdate<'a> {
    /// A raw event of the model's stream (every attempt's, in order).
    Event(&'a StreamEvent),
    /// More characters of the streamed field, JSON escapes decoded.
    Field(&'a str),
    /// The last attempt's answer could not be decoded and a corrective retry starts: the field
    /// text streamed so far is void.
    Retry {
        /// The attempt that starts (2 for the first retry).
        attempt: u32,
        /// Why the previous answer was rejected.
        reason: &'a str,
    },
}

impl<O: StructuredOutput> Signature<O> {
    /// Like [`call`](Signature::call), but streams: every model event and the decoded
    /// characters of the top-level string field `field` reach `on_update` as they arrive.
    /// The whole object is validated at the end of each attempt; a corrective retry is
    /// announced with [`TypedStreamUpdate::Retry`] before it starts.
    ///
    /// A stream that breaks is returned as its error (what arrived was already reported).
    ///
    /// ```
    /// use kaos_llm::structured::Signature;
    /// use kaos_llm::structured_stream::TypedStreamUpdate;
    /// use kaos_llm::{Chunking, FunctionClient, ProviderResponse, RequestOptions};
    ///
    /// #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// struct Reply {
    ///     /// The reply.
    ///     response: String,
    /// }
    ///
    /// # futures::executor::block_on(async {
    /// let client = FunctionClient::scripted([ProviderResponse::from_text(
    ///     r#"{"response": "Hi \u00e9"}"#,
    /// )])
    /// .with_chunking(Chunking::chars(3));
    /// let mut pieces = Vec::new();
    /// let outcome = Signature::<Reply>::new("Reply.")
    ///     .call_streaming(&client, &[], &RequestOptions::default(), "response", &mut |u| {
    ///         if let TypedStreamUpdate::Field(text) = u {
    ///             pieces.push(text.to_owned());
    ///         }
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(pieces.concat(), "Hi é");
    /// assert_eq!(outcome.value.response, "Hi é");
    /// assert!(pieces.len() > 1);
    /// # });
    /// ```
    pub async fn call_streaming(
        &self,
        client: &dyn LlmClient,
        inputs: &[(&str, &str)],
        options: &RequestOptions,
        field: &str,
        on_update: &mut (dyn FnMut(TypedStreamUpdate<'_>) + Send),
    ) -> Result<TypedOutcome<O>, LlmError> {
        let started = Instant::now();
        let mut request = self.request(inputs, options);
        let asked = request.messages.len();
        let mut usage = Usage::default();
        let mut cost_usd = Some(0.0);
        let mut attempts = 0u32;
        let mut chunks = 0u64;
        let mut first_chunk: Option<Duration> = None;
        let mut rejected: Option<String> = None;
        loop {
            attempts += 1;
            if let Some(reason) = rejected.take() {
                on_update(TypedStreamUpdate::Retry {
                    attempt: attempts,
                    reason: &reason,
                });
            }
            let response = {
                let mut extractor = JsonFieldStreamer::new(field);
                let mut events = client.stream(&request);
                let mut done: Option<ProviderResponse> = None;
                while let Some(event) = events.next().await {
                    let event = event?;
                    if matches!(
                        event,
                        StreamEvent::TextDelta(_)
                            | StreamEvent::ThinkingDelta(_)
                            | StreamEvent::ToolCallDelta { .. }
                    ) {
                        chunks += 1;
                        first_chunk.get_or_insert_with(|| started.elapsed());
                    }
                    on_update(TypedStreamUpdate::Event(&event));
                    match event {
                        StreamEvent::TextDelta(text) => {
                            let piece = extractor.push(&text);
                            if !piece.is_empty() {
                                on_update(TypedStreamUpdate::Field(&piece));
                            }
                        }
                        StreamEvent::Done(response) => done = Some(response),
                        _ => {}
                    }
                }
                done.ok_or_else(|| LlmError::StreamInterrupted {
                    provider: client.provider().to_owned(),
                    message: "the stream ended without its final response".into(),
                })?
            };
            usage += response.usage;
            cost_usd = match (cost_usd, response.cost_usd()) {
                (Some(sum), Some(cost)) => Some(crate::pricing::round_usd(sum + cost)),
                _ => None,
            };
            let text = response.text();
            match self.parse(&text) {
                Ok(value) => {
                    return Ok(TypedOutcome {
                        value,
                        usage,
                        cost_usd,
                        attempts,
                        latency: started.elapsed(),
                        provider: response.provider,
                        model: response.model,
                        response_id: response.response_id,
                        raw_text: text,
                        stop_reason: response.stop_reason,
                        time_to_first_chunk: first_chunk,
                        chunks,
                        corrections: request.messages.split_off(asked),
                    });
                }
                Err(reason) if self.gives_up_on(&text, attempts) => {
                    return Err(LlmError::InvalidOutput {
                        attempts,
                        message: reason,
                        raw: text,
                        usage,
                    });
                }
                Err(reason) => {
                    tracing::debug!(attempt = attempts, %reason, "streamed typed call: invalid output, retrying");
                    request.messages.push(Message::assistant(text));
                    request
                        .messages
                        .push(Message::user(Self::correction(&reason)));
                    rejected = Some(reason);
                }
            }
        }
    }
}
