//! Streaming a model call into a turn's events: text and thinking deltas as they arrive
//! (parented to the call's `llm_call` span), and the facts the span records when the stream
//! ends (chunks, characters, time to first chunk).

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kaos_llm::structured::{Signature, StructuredOutput, TypedOutcome};
use kaos_llm::structured_stream::TypedStreamUpdate;
use kaos_llm::{LlmClient, LlmError, LlmRequest, ProviderResponse, RequestOptions, StreamEvent};
use serde_json::{Map, Value};

use crate::events::EventKind;
use crate::scope::{TurnScope, now_unix_nanos};

/// What a streamed call delivered, for its span's attributes (also when it broke).
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamStats {
    started: Option<Instant>,
    /// Content chunks received (text, thinking, tool-call pieces).
    pub chunks: u64,
    /// Characters of visible text received.
    pub chars: u64,
    /// Wall-clock time of the first chunk (ns since the epoch).
    pub first_chunk_unix_nano: Option<u64>,
    /// Milliseconds from the request to the first chunk.
    pub time_to_first_chunk_ms: Option<f64>,
}

impl StreamStats {
    fn start() -> Self {
        Self {
            started: Some(Instant::now()),
            ..Self::default()
        }
    }

    /// Counts one event; true for content.
    fn count(&mut self, event: &StreamEvent) {
        let chars = match event {
            StreamEvent::TextDelta(text) => text.chars().count() as u64,
            StreamEvent::ThinkingDelta(_) | StreamEvent::ToolCallDelta { .. } => 0,
            StreamEvent::Usage(_) | StreamEvent::Done(_) => return,
        };
        self.chunks += 1;
        self.chars += chars;
        if self.first_chunk_unix_nano.is_none() {
            self.first_chunk_unix_nano = Some(now_unix_nanos());
            self.time_to_first_chunk_ms = self.started.map(|s| s.elapsed().as_secs_f64() * 1000.0);
        }
    }

    /// Adds `stream`, `chunks`, `streamed_chars` and, once a chunk came, the first chunk's
    /// time (`first_chunk_unix_nano`, `time_to_first_chunk_ms`) to a span's attributes.
    pub fn write(&self, attrs: &mut Map<String, Value>) {
        attrs.insert("stream".into(), true.into());
        attrs.insert("chunks".into(), self.chunks.into());
        attrs.insert("streamed_chars".into(), self.chars.into());
        if let Some(at) = self.first_chunk_unix_nano {
            attrs.insert("first_chunk_unix_nano".into(), at.into());
        }
        if let Some(ms) = self.time_to_first_chunk_ms {
            attrs.insert("time_to_first_chunk_ms".into(), ms.into());
        }
    }
}

/// Emits the thinking of a stream event under `span`.
fn emit_thinking(scope: &TurnScope, span: &Arc<str>, event: &StreamEvent) {
    if let StreamEvent::ThinkingDelta(text) = event
        && !text.is_empty()
    {
        scope.emit(EventKind::ThinkingDelta {
            content: text.clone(),
            span_id: Some(span.clone()),
        });
    }
}

/// Streams a plain model call: each text chunk becomes a `TextDelta` (and each thinking
/// chunk a `ThinkingDelta`) under `span` as it arrives. Returns the assembled response.
pub(crate) async fn stream_chat(
    scope: &TurnScope,
    span: &Arc<str>,
    client: &dyn LlmClient,
    request: &LlmRequest,
) -> (Result<ProviderResponse, LlmError>, StreamStats) {
    let mut stats = StreamStats::start();
    let mut events = client.stream(request);
    let mut done = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => return (Err(e), stats),
        };
        stats.count(&event);
        match event {
            StreamEvent::TextDelta(content) if !content.is_empty() => {
                scope.emit(EventKind::TextDelta {
                    content,
                    span_id: Some(span.clone()),
                });
            }
            StreamEvent::Done(response) => done = Some(response),
            other => emit_thinking(scope, span, &other),
        }
    }
    let result = done.ok_or_else(|| LlmError::StreamInterrupted {
        provider: client.provider().to_owned(),
        message: "the stream ended without its final response".into(),
    });
    (result, stats)
}

/// Streams a typed call whose answer is a JSON object with the string field `field`: the
/// field's characters become `TextDelta`s under `span` as they arrive; a corrective retry
/// is announced with `TextRetracted { retry_attempt }`. Returns the outcome and the text
/// streamed since the last retraction.
pub(crate) async fn stream_typed<O: StructuredOutput>(
    scope: &TurnScope,
    span: &Arc<str>,
    client: &dyn LlmClient,
    signature: &Signature<O>,
    inputs: &[(&str, &str)],
    field: &str,
) -> (Result<TypedOutcome<O>, LlmError>, StreamStats, String) {
    let mut stats = StreamStats::start();
    let mut streamed = String::new();
    let result = signature
        .call_streaming(
            client,
            inputs,
            &RequestOptions::default(),
            field,
            &mut |update| match update {
                TypedStreamUpdate::Event(event) => {
                    stats.count(event);
                    emit_thinking(scope, span, event);
                }
                TypedStreamUpdate::Field(text) => {
                    streamed.push_str(text);
                    scope.emit(EventKind::TextDelta {
                        content: text.to_owned(),
                        span_id: Some(span.clone()),
                    });
                }
                TypedStreamUpdate::Retry { attempt, reason } => {
                    streamed.clear();
                    scope.emit(EventKind::TextRetracted {
                        span_id: Some(span.clone()),
                        reason: format!("the streamed answer could not be parsed: {reason}"),
                        retry_attempt: Some(attempt),
                    });
                }
            },
        )
        .await;
    (result, stats, streamed)
}

/// Makes the text streamed under `span` end as `answer`: emits what is missing, or, when the
/// streamed text is not a prefix of the answer, retracts it (saying `why`) and emits the
/// answer whole. Afterwards the span's deltas since its last retraction concatenate to
/// `answer`.
pub(crate) fn settle_text(
    scope: &TurnScope,
    span: &Arc<str>,
    streamed: &str,
    answer: &str,
    why: &str,
) {
    let rest = match answer.strip_prefix(streamed) {
        Some(rest) => rest,
        None => {
            scope.emit(EventKind::TextRetracted {
                span_id: Some(span.clone()),
                reason: why.to_owned(),
                retry_attempt: None,
            });
            answer
        }
    };
    if !rest.is_empty() {
        scope.emit(EventKind::TextDelta {
            content: rest.to_owned(),
            span_id: Some(span.clone()),
        });
    }
}
