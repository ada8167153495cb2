//! Conversion between kaos types and the Anthropic Messages API.

use serde_json::{Map, Value, json};

use super::wire::{Block, MessageResponse, WireUsage};
use crate::types::{
    ContentPart, LlmRequest, ProviderResponse, Role, StopReason, ToolCall, ToolChoice, Usage,
};

/// `max_tokens` when the request sets none (the API requires one).
pub(crate) const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The JSON body of `POST /v1/messages`.
pub(crate) fn request_body(model: &str, request: &LlmRequest, stream: bool) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(request.options.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if let Some(system) = request.system_text() {
        body.insert("system".into(), json!(system));
    }
    body.insert("messages".into(), Value::Array(messages(request)));
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = &request.tool_choice {
            body.insert("tool_choice".into(), tool_choice(choice));
        }
    }
    if let Some(temperature) = request.options.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    if !request.options.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.options.stop));
    }
    body.insert("stream".into(), json!(stream));
    Value::Object(body)
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Tool { name } => json!({"type": "tool", "name": name}),
    }
}

/// The conversation without system messages. Tool results become `tool_result` blocks of a
/// user message; consecutive results (and a user text right after them) share one message.
fn messages(request: &LlmRequest) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for message in &request.messages {
        match message.role {
            Role::System => {}
            Role::User => {
                if let Some(blocks) = open_tool_results(&mut out) {
                    blocks.push(json!({"type": "text", "text": message.content}));
                } else {
                    out.push(json!({"role": "user", "content": message.content}));
                }
            }
            Role::Assistant => {
                if message.tool_calls.is_empty() {
                    out.push(json!({"role": "assistant", "content": message.content}));
                    continue;
                }
                let mut blocks = Vec::new();
                if !message.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": message.content}));
                }
                for call in &message.tool_calls {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": tool_input(&call.arguments),
                    }));
                }
                out.push(json!({"role": "assistant", "content": blocks}));
            }
            Role::Tool => {
                let mut block = json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
                    "content": message.content,
                });
                if message.is_error {
                    block["is_error"] = json!(true);
                }
                if let Some(blocks) = open_tool_results(&mut out) {
                    blocks.push(block);
                } else {
                    out.push(json!({"role": "user", "content": [block]}));
                }
            }
        }
    }
    out
}

/// The blocks of the last message if it is a user message of tool results.
fn open_tool_results(out: &mut [Value]) -> Option<&mut Vec<Value>> {
    let last = out.last_mut()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let blocks = last.get_mut("content")?.as_array_mut()?;
    let is_results = blocks
        .first()
        .and_then(|b| b.get("type"))
        .and_then(Value::as_str)
        == Some("tool_result");
    is_results.then_some(blocks)
}

/// Anthropic wants an object; arguments kept as raw text travel as `{"_raw": text}`.
fn tool_input(arguments: &Value) -> Value {
    match arguments {
        Value::Object(_) => arguments.clone(),
        Value::Null => json!({}),
        other => json!({"_raw": other}),
    }
}

/// Our usage: `input_tokens` includes cache reads and writes.
pub(crate) fn usage(wire: &WireUsage) -> Usage {
    let cache_read = wire.cache_read_input_tokens.unwrap_or(0);
    let cache_write = wire.cache_creation_input_tokens.unwrap_or(0);
    let input = wire
        .input_tokens
        .unwrap_or(0)
        .saturating_add(cache_read)
        .saturating_add(cache_write);
    let output = wire.output_tokens.unwrap_or(0);
    Usage {
        input_tokens: input,
        output_tokens: output,
        total_tokens: input.saturating_add(output),
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
    }
}

/// Maps `stop_reason`.
pub(crate) fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "end_turn" => StopReason::EndTurn,
        "max_tokens" => StopReason::MaxTokens,
        "tool_use" => StopReason::ToolUse,
        "stop_sequence" => StopReason::StopSequence,
        "refusal" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

/// Converts a non-streamed answer.
pub(crate) fn response(wire: MessageResponse, provider: &str, model: &str) -> ProviderResponse {
    let parts = wire
        .content
        .into_iter()
        .filter_map(|block| match block {
            Block::Text { text } => Some(ContentPart::Text { text }),
            Block::Thinking { thinking } => Some(ContentPart::Thinking { thinking }),
            Block::ToolUse { id, name, input } => Some(ContentPart::ToolUse {
                tool_call: ToolCall::new(id, name, input),
            }),
            Block::Other => None,
        })
        .collect();
    ProviderResponse {
        provider: provider.to_owned(),
        model: wire.model.unwrap_or_else(|| model.to_owned()),
        parts,
        usage: usage(&wire.usage),
        stop_reason: wire.stop_reason.as_deref().map(stop_reason),
        response_id: wire.id,
        latency: Default::default(),
    }
}
