//! Model-call content in the GenAI conventions' message-parts shape (semconv v1.37+,
//! `gen-ai-{input,output}-messages.json`, `gen-ai-system-instructions.json`).
//!
//! When a hook asks for content ([`crate::Hook::captures_content`]), the runner puts a model
//! call's request and answer on its `llm_call` span events, already in this shape:
//!
//! | attribute | phase | value |
//! |---|---|---|
//! | [`SYSTEM_INSTRUCTIONS`] | START (and complete, after a retry) | `[{"type":"text","content":…}]` (the leading system messages) |
//! | [`INPUT_MESSAGES`] | START (and complete, after a retry) | `[{"role":"user","parts":[…]}, …]` (the rest of the request) |
//! | [`OUTPUT_MESSAGES`] | complete | `[{"role":"assistant","parts":[…],"finish_reason":"stop"}]` |
//!
//! Parts are `text {content}`, `tool_call {id,name,arguments}`, `tool_call_response
//! {id,response}` and `reasoning {content}`. When no hook asks, none of this is built: the
//! events carry no content and the runner does no work for it. When one does, every hook and
//! the stream's consumer see the content too (the audit trail records it through its
//! redactor, `kaos run --json` prints it). A typed call that needed a corrective retry
//! carries, on its completion, the request its last attempt was asked (the first request, then
//! each rejected answer and the correction): the answer on the span is that attempt's, and so
//! is the input the OTel hook puts beside it (`retried_request`).

use kaos_llm::structured::{Signature, StructuredOutput, TypedOutcome};
use kaos_llm::{ContentPart, Message, Role, StopReason};
use serde_json::{Map, Value, json};

/// The `llm_call` START attribute with the request's non-system messages.
pub const INPUT_MESSAGES: &str = "input_messages";
/// The `llm_call` START attribute with the request's leading system messages, as parts.
pub const SYSTEM_INSTRUCTIONS: &str = "system_instructions";
/// The `llm_call` completion attribute with the answer.
pub const OUTPUT_MESSAGES: &str = "output_messages";

fn text_part(text: &str) -> Value {
    json!({"type": "text", "content": text})
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// The user's message of a turn as [`INPUT_MESSAGES`]: one user `ChatMessage` (the agent
/// span's input, as conversation views show it).
pub fn user_input(message: &str) -> Value {
    json!([{"role": "user", "parts": [text_part(message)]}])
}

/// One request message as a `ChatMessage {role, parts}`.
pub fn chat_message(message: &Message) -> Value {
    let mut parts = Vec::with_capacity(1 + message.tool_calls.len());
    match message.role {
        Role::Tool => parts.push(json!({
            "type": "tool_call_response",
            "id": message.tool_call_id,
            "response": message.content,
        })),
        _ => {
            if !message.content.is_empty() || message.tool_calls.is_empty() {
                parts.push(text_part(&message.content));
            }
            parts.extend(message.tool_calls.iter().map(|c| {
                json!({"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments})
            }));
        }
    }
    json!({"role": role_name(message.role), "parts": parts})
}

/// Adds [`SYSTEM_INSTRUCTIONS`] (when the request starts with system messages) and
/// [`INPUT_MESSAGES`] for `messages` to a START's attributes.
pub fn request_attributes(messages: &[Message], attrs: &mut Map<String, Value>) {
    let leading = messages
        .iter()
        .take_while(|m| m.role == Role::System)
        .count();
    if leading > 0 {
        let parts: Vec<Value> = messages[..leading]
            .iter()
            .map(|m| text_part(&m.content))
            .collect();
        attrs.insert(SYSTEM_INSTRUCTIONS.into(), Value::Array(parts));
    }
    let rest: Vec<Value> = messages[leading..].iter().map(chat_message).collect();
    attrs.insert(INPUT_MESSAGES.into(), Value::Array(rest));
}

/// After a typed call's corrective retries, the request its last attempt was asked (the
/// signature's messages, then each rejected answer and the correction), added to `attrs` as
/// [`SYSTEM_INSTRUCTIONS`] and [`INPUT_MESSAGES`] for the call's completion. Nothing when the
/// first answer was valid (the START's request is the one that was answered).
pub(crate) fn retried_request<O: StructuredOutput>(
    signature: &Signature<O>,
    inputs: &[(&str, &str)],
    out: &TypedOutcome<O>,
    attrs: &mut Map<String, Value>,
) {
    if out.corrections.is_empty() {
        return;
    }
    let mut asked = signature.messages(inputs);
    asked.extend(out.corrections.iter().cloned());
    request_attributes(&asked, attrs);
}

/// The conventions' `finish_reason` for a provider's stop reason (`stop` when unknown).
pub fn finish_reason(stop: Option<&StopReason>) -> String {
    stop.map_or("stop", |s| finish_reason_of(s.as_str()))
        .to_string()
}

/// A stop reason as the runner records it on a model call's END ([`StopReason::as_str`]:
/// `end_turn`, `tool_use`, ...) in the conventions' words (`stop`, `tool_call`, ...), for
/// `gen_ai.response.finish_reasons` and the output message's `finish_reason` alike; a
/// provider's own reason (`pause_turn`) stays as it is.
pub fn finish_reason_of(stop_reason: &str) -> &str {
    match stop_reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" => "length",
        "tool_use" => "tool_call",
        other => other,
    }
}

/// An answer made of `parts` as [`OUTPUT_MESSAGES`]: one assistant `OutputMessage` whose
/// parts keep the answer's order (reasoning, text, tool calls).
pub fn output_messages(parts: &[ContentPart], stop: Option<&StopReason>) -> Value {
    let parts: Vec<Value> = parts
        .iter()
        .map(|p| match p {
            ContentPart::Text { text } => text_part(text),
            ContentPart::Thinking { thinking } => {
                json!({"type": "reasoning", "content": thinking})
            }
            ContentPart::ToolUse { tool_call } => json!({
                "type": "tool_call",
                "id": tool_call.id,
                "name": tool_call.name,
                "arguments": tool_call.arguments,
            }),
        })
        .collect();
    json!([{"role": "assistant", "parts": parts, "finish_reason": finish_reason(stop)}])
}

/// A text answer as [`OUTPUT_MESSAGES`].
pub fn output_text(text: &str, stop: Option<&StopReason>) -> Value {
    json!([{"role": "assistant", "parts": [text_part(text)], "finish_reason": finish_reason(stop)}])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaos_llm::ToolCall;

    #[test]
    fn request_splits_system_and_maps_every_role() {
        let messages = vec![
            Message::system("Be brief."),
            Message::user("Count the words."),
            Message::assistant_with_tools(
                "",
                vec![ToolCall::new("tc_1", "wordcount", json!({"text": "a b"}))],
            ),
            Message::tool_result("tc_1", "2", false),
        ];
        let mut attrs = Map::new();
        request_attributes(&messages, &mut attrs);
        assert_eq!(
            attrs[SYSTEM_INSTRUCTIONS],
            json!([{"type": "text", "content": "Be brief."}])
        );
        assert_eq!(
            attrs[INPUT_MESSAGES],
            json!([
                {"role": "user", "parts": [{"type": "text", "content": "Count the words."}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "tc_1", "name": "wordcount", "arguments": {"text": "a b"}}]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "tc_1", "response": "2"}]},
            ])
        );
    }

    #[test]
    fn finish_reasons_follow_the_conventions() {
        assert_eq!(finish_reason(None), "stop");
        assert_eq!(finish_reason(Some(&StopReason::MaxTokens)), "length");
        assert_eq!(finish_reason(Some(&StopReason::ToolUse)), "tool_call");
        assert_eq!(
            finish_reason(Some(&StopReason::ContentFilter)),
            "content_filter"
        );
        assert_eq!(
            finish_reason(Some(&StopReason::Other("pause".into()))),
            "pause"
        );
    }
}
