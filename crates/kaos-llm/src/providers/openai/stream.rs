//! Decoding the Chat Completions stream (`data: {chunk}` ... `data: [DONE]`).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::convert::{stop_reason, usage};
use super::wire::{ChatChunk, WireUsage};
use crate::client::StreamEvent;
use crate::error::LlmError;
use crate::providers::http::{SseEvent, StreamDecoder, error_message, parse_arguments};
use crate::types::{ContentPart, ProviderResponse, StopReason, ToolCall};

#[derive(Default)]
struct PendingCall {
    id: String,
    name: String,
    arguments: String,
}

/// Assembles a streamed Chat Completions answer.
pub(crate) struct OpenAiDecoder {
    provider: String,
    model: String,
    id: Option<String>,
    text: String,
    thinking: String,
    calls: BTreeMap<usize, PendingCall>,
    usage: Option<WireUsage>,
    stop: Option<StopReason>,
    complete: bool,
}

impl OpenAiDecoder {
    pub fn new(provider: &str, model: &str) -> Self {
        Self {
            provider: provider.to_owned(),
            model: model.to_owned(),
            id: None,
            text: String::new(),
            thinking: String::new(),
            calls: BTreeMap::new(),
            usage: None,
            stop: None,
            complete: false,
        }
    }
}

impl StreamDecoder for OpenAiDecoder {
    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), LlmError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.complete = true;
            return Ok(());
        }
        let value: serde_json::Value =
            serde_json::from_str(data).map_err(|e| LlmError::StreamInterrupted {
                provider: self.provider.clone(),
                message: format!("undecodable stream chunk: {e}"),
            })?;
        if value.get("error").is_some() {
            return Err(LlmError::StreamInterrupted {
                provider: self.provider.clone(),
                message: error_message(data.as_bytes()),
            });
        }
        let chunk: ChatChunk =
            serde_json::from_value(value).map_err(|e| LlmError::StreamInterrupted {
                provider: self.provider.clone(),
                message: format!("undecodable stream chunk: {e}"),
            })?;
        if self.id.is_none() {
            self.id = chunk.id;
        }
        if let Some(model) = chunk.model {
            self.model = model;
        }
        for choice in chunk.choices {
            let delta = choice.delta;
            if let Some(thinking) = delta.reasoning_content.or(delta.reasoning)
                && !thinking.is_empty()
            {
                self.thinking.push_str(&thinking);
                out.push_back(StreamEvent::ThinkingDelta(thinking));
            }
            if let Some(text) = delta.content
                && !text.is_empty()
            {
                self.text.push_str(&text);
                out.push_back(StreamEvent::TextDelta(text));
            }
            for call in delta.tool_calls {
                let pending = self.calls.entry(call.index).or_default();
                let function = call.function.unwrap_or_default();
                let id = call.id.filter(|id| !id.is_empty());
                let name = function.name.filter(|n| !n.is_empty());
                if let Some(id) = &id {
                    pending.id.clone_from(id);
                }
                if let Some(name) = &name {
                    pending.name.push_str(name);
                }
                let arguments = function.arguments.unwrap_or_default();
                pending.arguments.push_str(&arguments);
                out.push_back(StreamEvent::ToolCallDelta {
                    index: call.index,
                    id,
                    name,
                    arguments_delta: arguments,
                });
            }
            if let Some(reason) = choice.finish_reason {
                self.stop = Some(stop_reason(&reason));
            }
        }
        if let Some(wire) = chunk.usage {
            self.usage = Some(wire);
            out.push_back(StreamEvent::Usage(usage(Some(&wire))));
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.complete
    }

    fn can_finish_at_eof(&self) -> bool {
        self.stop.is_some()
    }

    fn finish(&mut self, latency: Duration) -> ProviderResponse {
        let mut parts = Vec::new();
        if !self.thinking.is_empty() {
            parts.push(ContentPart::Thinking {
                thinking: std::mem::take(&mut self.thinking),
            });
        }
        if !self.text.is_empty() {
            parts.push(ContentPart::Text {
                text: std::mem::take(&mut self.text),
            });
        }
        for call in std::mem::take(&mut self.calls).into_values() {
            parts.push(ContentPart::ToolUse {
                tool_call: ToolCall::new(call.id, call.name, parse_arguments(&call.arguments)),
            });
        }
        ProviderResponse {
            provider: self.provider.clone(),
            model: self.model.clone(),
            parts,
            usage: usage(self.usage.as_ref()),
            stop_reason: self.stop.take(),
            response_id: self.id.take(),
            latency,
        }
    }
}
