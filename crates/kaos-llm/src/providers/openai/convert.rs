//! Conversion between kaos types and OpenAI Chat Completions.

use serde_json::{Map, Value, json};

use super::wire::{ChatResponse, WireUsage};
use crate::providers::http::parse_arguments;
use crate::types::{
    ContentPart, LlmRequest, ProviderResponse, Role, StopReason, ToolCall, ToolChoice, Usage,
};

/// How the body names the output limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// api.openai.com: `max_completion_tokens` (required by reasoning models).
    OpenAi,
    /// OpenAI-compatible servers: the classic `max_tokens`.
    Compatible,
}

/// The JSON body of `POST /chat/completions`.
pub(crate) fn request_body(
    model: &str,
    request: &LlmRequest,
    stream: bool,
    flavour: Flavour,
) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages(request)));
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters
                }})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = &request.tool_choice {
            body.insert("tool_choice".into(), tool_choice(choice));
        }
    }
    if let Some(max) = request.options.max_tokens {
        let field = match flavour {
            Flavour::OpenAi => "max_completion_tokens",
            Flavour::Compatible => "max_tokens",
        };
        body.insert(field.into(), json!(max));
    }
    if let Some(temperature) = request.options.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    if !request.options.stop.is_empty() {
        body.insert("stop".into(), json!(request.options.stop));
    }
    body.insert("stream".into(), json!(stream));
    if stream {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(body)
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool { name } => json!({"type": "function", "function": {"name": name}}),
    }
}

fn messages(request: &LlmRequest) -> Vec<Value> {
    request
        .messages
        .iter()
        .map(|message| match message.role {
            Role::System => json!({"role": "system", "content": message.content}),
            Role::User => json!({"role": "user", "content": message.content}),
            Role::Assistant if message.tool_calls.is_empty() => {
                json!({"role": "assistant", "content": message.content})
            }
            Role::Assistant => {
                let calls: Vec<Value> = message
                    .tool_calls
                    .iter()
                    .map(|call| {
                        json!({"id": call.id, "type": "function", "function": {
                            "name": call.name, "arguments": arguments_text(&call.arguments)
                        }})
                    })
                    .collect();
                let content = if message.content.is_empty() {
                    Value::Null
                } else {
                    json!(message.content)
                };
                json!({"role": "assistant", "content": content, "tool_calls": calls})
            }
            Role::Tool => json!({
                "role": "tool",
                "tool_call_id": message.tool_call_id.clone().unwrap_or_default(),
                "content": message.content,
            }),
        })
        .collect()
}

/// Arguments as JSON text; arguments kept as raw text go back verbatim.
fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(raw) => raw.clone(),
        Value::Null => "{}".to_owned(),
        other => other.to_string(),
    }
}

/// Our usage (`prompt_tokens` already includes cached tokens).
pub(crate) fn usage(wire: Option<&WireUsage>) -> Usage {
    let Some(wire) = wire else {
        return Usage::default();
    };
    let mut usage = Usage::new(wire.prompt_tokens, wire.completion_tokens);
    usage.cache_read_tokens = wire
        .prompt_tokens_details
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0);
    usage
}

/// Maps `finish_reason`.
pub(crate) fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

/// Converts a non-streamed answer (the first choice). `None` if there is no choice.
pub(crate) fn response(
    wire: ChatResponse,
    provider: &str,
    model: &str,
) -> Option<ProviderResponse> {
    let usage = usage(wire.usage.as_ref());
    let choice = wire.choices.into_iter().next()?;
    let message = choice.message;
    let mut parts = Vec::new();
    if let Some(thinking) = message.reasoning_content.or(message.reasoning)
        && !thinking.is_empty()
    {
        parts.push(ContentPart::Thinking { thinking });
    }
    if let Some(text) = message.content
        && !text.is_empty()
    {
        parts.push(ContentPart::Text { text });
    }
    for call in message.tool_calls {
        parts.push(ContentPart::ToolUse {
            tool_call: ToolCall::new(
                call.id,
                call.function.name,
                parse_arguments(&call.function.arguments),
            ),
        });
    }
    Some(ProviderResponse {
        provider: provider.to_owned(),
        model: wire.model.unwrap_or_else(|| model.to_owned()),
        parts,
        usage,
        stop_reason: choice.finish_reason.as_deref().map(stop_reason),
        response_id: wire.id,
        latency: Default::default(),
    })
}
