//! Decoding the Anthropic Messages stream (`message_start`, `content_block_start`,
//! `content_block_delta`, `content_block_stop`, `message_delta`, `message_stop`).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::convert::{stop_reason, usage};
use super::wire::{Block, Delta, StreamPayload, WireUsage};
use crate::client::StreamEvent;
use crate::error::LlmError;
use crate::providers::http::{SseEvent, StreamDecoder, parse_arguments};
use crate::types::{ContentPart, ProviderResponse, StopReason, ToolCall};

enum Slot {
    Text(String),
    Thinking(String),
    Tool {
        ordinal: usize,
        id: String,
        name: String,
        json: String,
    },
    Ignored,
}

/// Assembles a streamed Anthropic answer.
pub(crate) struct AnthropicDecoder {
    provider: String,
    model: String,
    id: Option<String>,
    usage: WireUsage,
    blocks: BTreeMap<usize, Slot>,
    tools: usize,
    stop: Option<StopReason>,
    complete: bool,
}

impl AnthropicDecoder {
    pub fn new(provider: &str, model: &str) -> Self {
        Self {
            provider: provider.to_owned(),
            model: model.to_owned(),
            id: None,
            usage: WireUsage::default(),
            blocks: BTreeMap::new(),
            tools: 0,
            stop: None,
            complete: false,
        }
    }

    fn merge_usage(&mut self, update: WireUsage) {
        let u = &mut self.usage;
        u.input_tokens = update.input_tokens.or(u.input_tokens);
        u.output_tokens = update.output_tokens.or(u.output_tokens);
        u.cache_read_input_tokens = update.cache_read_input_tokens.or(u.cache_read_input_tokens);
        u.cache_creation_input_tokens = update
            .cache_creation_input_tokens
            .or(u.cache_creation_input_tokens);
    }
}

impl StreamDecoder for AnthropicDecoder {
    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), LlmError> {
        let payload: StreamPayload =
            serde_json::from_str(&event.data).map_err(|e| LlmError::StreamInterrupted {
                provider: self.provider.clone(),
                message: format!("undecodable stream event: {e}"),
            })?;
        match payload {
            StreamPayload::MessageStart { message } => {
                self.id = message.id;
                if let Some(model) = message.model {
                    self.model = model;
                }
                self.merge_usage(message.usage);
            }
            StreamPayload::ContentBlockStart {
                index,
                content_block,
            } => {
                let slot = match content_block {
                    Block::Text { text } => {
                        if !text.is_empty() {
                            out.push_back(StreamEvent::TextDelta(text.clone()));
                        }
                        Slot::Text(text)
                    }
                    Block::Thinking { thinking } => Slot::Thinking(thinking),
                    Block::ToolUse { id, name, .. } => {
                        let ordinal = self.tools;
                        self.tools += 1;
                        out.push_back(StreamEvent::ToolCallDelta {
                            index: ordinal,
                            id: Some(id.clone()),
                            name: Some(name.clone()),
                            arguments_delta: String::new(),
                        });
                        Slot::Tool {
                            ordinal,
                            id,
                            name,
                            json: String::new(),
                        }
                    }
                    Block::Other => Slot::Ignored,
                };
                self.blocks.insert(index, slot);
            }
            StreamPayload::ContentBlockDelta { index, delta } => {
                let slot = self.blocks.entry(index).or_insert_with(|| match &delta {
                    Delta::ThinkingDelta { .. } => Slot::Thinking(String::new()),
                    _ => Slot::Text(String::new()),
                });
                match (slot, delta) {
                    (Slot::Text(text), Delta::TextDelta { text: more }) => {
                        text.push_str(&more);
                        out.push_back(StreamEvent::TextDelta(more));
                    }
                    (Slot::Thinking(thinking), Delta::ThinkingDelta { thinking: more }) => {
                        thinking.push_str(&more);
                        out.push_back(StreamEvent::ThinkingDelta(more));
                    }
                    (Slot::Tool { ordinal, json, .. }, Delta::InputJsonDelta { partial_json }) => {
                        json.push_str(&partial_json);
                        out.push_back(StreamEvent::ToolCallDelta {
                            index: *ordinal,
                            id: None,
                            name: None,
                            arguments_delta: partial_json,
                        });
                    }
                    _ => {}
                }
            }
            StreamPayload::ContentBlockStop | StreamPayload::Ping | StreamPayload::Other => {}
            StreamPayload::MessageDelta { delta, usage: more } => {
                if let Some(reason) = delta.stop_reason {
                    self.stop = Some(stop_reason(&reason));
                }
                self.merge_usage(more);
                out.push_back(StreamEvent::Usage(usage(&self.usage)));
            }
            StreamPayload::MessageStop => self.complete = true,
            StreamPayload::Error { error } => {
                let status = match error.kind.as_str() {
                    "overloaded_error" => 529,
                    "rate_limit_error" => 429,
                    "api_error" => 500,
                    "invalid_request_error" => 400,
                    _ => 500,
                };
                return Err(LlmError::Provider {
                    provider: self.provider.clone(),
                    status,
                    message: format!("{}: {}", error.kind, error.message),
                    retry_after: None,
                });
            }
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
        let parts = std::mem::take(&mut self.blocks)
            .into_values()
            .filter_map(|slot| match slot {
                Slot::Text(text) => Some(ContentPart::Text { text }),
                Slot::Thinking(thinking) => Some(ContentPart::Thinking { thinking }),
                Slot::Tool { id, name, json, .. } => Some(ContentPart::ToolUse {
                    tool_call: ToolCall::new(id, name, parse_arguments(&json)),
                }),
                Slot::Ignored => None,
            })
            .collect();
        ProviderResponse {
            provider: self.provider.clone(),
            model: self.model.clone(),
            parts,
            usage: usage(&self.usage),
            stop_reason: self.stop.take(),
            response_id: self.id.take(),
            latency,
        }
    }
}
