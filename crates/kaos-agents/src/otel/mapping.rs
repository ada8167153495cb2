//! The event → span mapping tables: span names, kinds and attributes per subject.

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use serde_json::Value;

use super::SpanNaming;
use super::attributes::*;
use super::content::ContentPolicy;
use super::intern::Interned;
use super::state::Kind;
use crate::events::{Event, SpanEvent, SpanPhase, SpanSubject, TurnOutcome, attr};
use crate::message_parts::{
    INPUT_MESSAGES, OUTPUT_MESSAGES, SYSTEM_INSTRUCTIONS, finish_reason_of,
};
use crate::naming::span_name;

/// Prefixes of tool-reported protocol attributes copied onto `tool_call` spans.
const PROTOCOL_PREFIXES: [&str; 4] = ["mcp.", "jsonrpc.", "network.", "rpc."];

/// The attribute capacity of a new span (START, END and late attributes together).
const SPAN_ATTRIBUTES: usize = 18;

/// Name, kind and START attributes of a span. The name comes from
/// [`crate::naming::span_name`], the function the terminal tree uses too.
pub(super) fn start_shape(
    naming: SpanNaming,
    content: &ContentPolicy,
    event: &Event,
    span: &SpanEvent,
    strings: &mut Interned,
) -> (Cow<'static, str>, SpanKind, Vec<KeyValue>) {
    let a = &span.attributes;
    let s = |k: &str| attr(a, k).and_then(Value::as_str).unwrap_or("").to_string();
    // The attribute `key`, else the event name after `prefix` (`tool.search` → `search`).
    let named = |key: &str, prefix: &str| -> &str {
        attr(a, key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| span.name.strip_prefix(prefix).unwrap_or(&span.name))
    };
    let name = span_name(span.subject, &span.name, a, &event.agent, naming);
    // The SDK keeps this vector as the span's attribute list and pushes the END and
    // late attributes onto it: sized for a span's whole life (a completed turn has up to
    // 17, a tool call 16), so it rarely reallocates.
    let mut attrs = Vec::with_capacity(SPAN_ATTRIBUTES);
    let kind = match span.subject {
        SpanSubject::Turn => {
            attrs.extend([
                KeyValue::new(GEN_AI_OPERATION_NAME, OP_INVOKE_AGENT),
                // The event's shared ids go on the span as they are (no copy).
                KeyValue::new(GEN_AI_AGENT_NAME, event.agent.clone()),
                KeyValue::new(GEN_AI_CONVERSATION_ID, event.session_id.clone()),
                KeyValue::new(KAOS_SESSION_ID, event.session_id.clone()),
                KeyValue::new(KAOS_RUN_ID, event.run_id.clone()),
            ]);
            let keys = StartKeys::of(a);
            if let Some(n) = keys.turn_number.and_then(as_i64) {
                attrs.push(KeyValue::new(KAOS_TURN_NUMBER, n));
            }
            if let Some(p) = keys.provider.and_then(Value::as_str) {
                attrs.push(KeyValue::new(GEN_AI_PROVIDER_NAME, strings.value(p)));
            }
            if let Some(m) = keys.model.and_then(Value::as_str) {
                attrs.push(KeyValue::new(GEN_AI_REQUEST_MODEL, strings.value(m)));
            }
            if let Some(r) = keys.resumed_from.and_then(Value::as_str) {
                attrs.push(KeyValue::new(KAOS_RESUMED_FROM, r.to_string()));
            }
            SpanKind::Internal
        }
        SpanSubject::LlmCall => {
            let keys = StartKeys::of(a);
            let mut text =
                |v: Option<&Value>| strings.value(v.and_then(Value::as_str).unwrap_or(""));
            attrs.extend([
                KeyValue::new(GEN_AI_OPERATION_NAME, OP_CHAT),
                KeyValue::new(GEN_AI_PROVIDER_NAME, text(keys.provider)),
                KeyValue::new(GEN_AI_REQUEST_MODEL, text(keys.model)),
                KeyValue::new(GEN_AI_CONVERSATION_ID, event.session_id.clone()),
                KeyValue::new(KAOS_PURPOSE, text(keys.purpose)),
            ]);
            if keys.stream.and_then(Value::as_bool) == Some(true) {
                attrs.push(KeyValue::new(GEN_AI_REQUEST_STREAM, true));
            }
            if let Some(host) = keys.server_address.and_then(Value::as_str) {
                attrs.push(KeyValue::new(SERVER_ADDRESS, strings.value(host)));
            }
            if let Some(port) = keys.server_port.and_then(as_i64) {
                attrs.push(KeyValue::new(SERVER_PORT, port));
            }
            SpanKind::Client
        }
        SpanSubject::ToolCall => {
            let tool = strings.value(named("tool_name", "tool."));
            // One copy of the call id for both attributes.
            let call_id: Arc<str> =
                Arc::from(attr(a, "call_id").and_then(Value::as_str).unwrap_or(""));
            attrs.extend([
                KeyValue::new(GEN_AI_OPERATION_NAME, OP_EXECUTE_TOOL),
                KeyValue::new(GEN_AI_TOOL_NAME, tool.clone()),
                KeyValue::new(GEN_AI_TOOL_CALL_ID, call_id.clone()),
                KeyValue::new(GEN_AI_TOOL_TYPE, "function"),
                KeyValue::new(KAOS_TOOL_NAME, tool),
                KeyValue::new(KAOS_CALL_ID, call_id),
                KeyValue::new(KAOS_SESSION_ID, event.session_id.clone()),
            ]);
            if let Some(p) = attr(a, "permission").and_then(Value::as_str) {
                attrs.push(KeyValue::new(KAOS_PERMISSION, strings.value(p)));
            }
            if let Some(p) = attr(a, "step_id").and_then(Value::as_str) {
                attrs.push(KeyValue::new(KAOS_STEP_ID, p.to_string()));
            }
            SpanKind::Internal
        }
        SpanSubject::Step => {
            attrs.extend([
                KeyValue::new(KAOS_STEP_ID, named("step_id", "step.").to_string()),
                KeyValue::new(KAOS_DESCRIPTION, content.short(&s("description"))),
                KeyValue::new(KAOS_SESSION_ID, event.session_id.clone()),
            ]);
            SpanKind::Internal
        }
        SpanSubject::Subagent => {
            let name = strings.value(named("subagent_name", "subagent."));
            attrs.extend([
                KeyValue::new(GEN_AI_OPERATION_NAME, OP_INVOKE_AGENT),
                KeyValue::new(GEN_AI_AGENT_NAME, name.clone()),
                KeyValue::new(KAOS_SUBAGENT_NAME, name),
                KeyValue::new(KAOS_TASK, content.short(&s("task"))),
            ]);
            SpanKind::Internal
        }
        SpanSubject::Handoff => {
            attrs.extend([
                KeyValue::new(KAOS_FROM_AGENT, s("from_agent")),
                KeyValue::new(KAOS_TO_AGENT, named("to_agent", "handoff.").to_string()),
                KeyValue::new(KAOS_REASON, content.short(&s("reason"))),
            ]);
            SpanKind::Internal
        }
    };
    (name, kind, attrs)
}

/// The START attributes of a turn or a model call, read in one pass over the event's map
/// (one lookup per key searched the map once per key).
#[derive(Default)]
struct StartKeys<'a> {
    model: Option<&'a Value>,
    provider: Option<&'a Value>,
    purpose: Option<&'a Value>,
    stream: Option<&'a Value>,
    turn_number: Option<&'a Value>,
    resumed_from: Option<&'a Value>,
    server_address: Option<&'a Value>,
    server_port: Option<&'a Value>,
}

impl<'a> StartKeys<'a> {
    fn of(a: &'a serde_json::Map<String, Value>) -> Self {
        let mut keys = Self::default();
        for (k, v) in a {
            match k.as_str() {
                "model" => keys.model = Some(v),
                "provider" => keys.provider = Some(v),
                "purpose" => keys.purpose = Some(v),
                "stream" => keys.stream = Some(v),
                "turn_number" => keys.turn_number = Some(v),
                "resumed_from" => keys.resumed_from = Some(v),
                "server_address" => keys.server_address = Some(v),
                "server_port" => keys.server_port = Some(v),
                _ => {}
            }
        }
        keys
    }
}

/// The message content under `src` (a GenAI messages or parts array the runner put on the
/// event, see [`crate::message_parts`]) as `dst`, rendered by the capture policy.
fn content_attribute(
    content: &ContentPolicy,
    a: &serde_json::Map<String, Value>,
    src: &str,
    dst: &'static str,
    out: &mut Vec<KeyValue>,
) {
    if let Some(text) = attr(a, src).and_then(|v| content.render_messages(v)) {
        out.push(KeyValue::new(dst, text));
    }
}

/// The content attributes a span gets at its START, with capture on, pushed onto `out`: the
/// agent span's input (the user's message, as conversation views show it, and as the text
/// Phoenix shows for a trace), a tool call's arguments.
pub(super) fn start_content(
    content: &ContentPolicy,
    kind: Kind,
    a: &serde_json::Map<String, Value>,
    out: &mut Vec<KeyValue>,
) {
    match kind {
        Kind::Turn => {
            let Some(messages) = attr(a, INPUT_MESSAGES) else {
                return;
            };
            if let Some(text) = content.render_messages(messages) {
                out.push(KeyValue::new(GEN_AI_INPUT_MESSAGES, text));
            }
            // The one user message's text ([`crate::message_parts::user_input`]).
            if let Some(text) = messages
                .pointer("/0/parts/0/content")
                .and_then(Value::as_str)
                .and_then(|t| content.render_text(t))
            {
                out.push(KeyValue::new(INPUT_VALUE, text));
            }
        }
        Kind::Tool => {
            if let Some(text) = attr(a, "arguments").and_then(|args| content.render(args.clone())) {
                out.push(KeyValue::new(GEN_AI_TOOL_CALL_ARGUMENTS, text));
            }
        }
        _ => {}
    }
}

/// Why an agent's answer ended, in the conventions' words: a paused turn stopped for a tool
/// call's approval, a failed one on an error.
pub(super) fn turn_finish_reason(outcome: TurnOutcome) -> &'static str {
    match outcome {
        TurnOutcome::Completed => "stop",
        TurnOutcome::Paused => "tool_call",
        TurnOutcome::Failed => "error",
    }
}

/// A model call's request content (the START's, or the completion's after a typed call's
/// corrective retry) into `deferred`, replacing what was there for the same attribute.
pub(super) fn request_content(
    content: &ContentPolicy,
    a: &serde_json::Map<String, Value>,
    deferred: &mut Vec<KeyValue>,
) {
    for (src, dst) in [
        (SYSTEM_INSTRUCTIONS, GEN_AI_SYSTEM_INSTRUCTIONS),
        (INPUT_MESSAGES, GEN_AI_INPUT_MESSAGES),
    ] {
        if let Some(messages) = attr(a, src) {
            deferred.retain(|kv| kv.key.as_str() != dst);
            if let Some(text) = content.render_messages(messages) {
                deferred.push(KeyValue::new(dst, text));
            }
        }
    }
}

/// What a terminal phase's attributes say beyond the span attributes they become, read in
/// the same pass over the event's map.
#[derive(Default)]
pub(super) struct EndFacts<'a> {
    pub(super) is_error: Option<bool>,
    pub(super) outcome: Option<&'a str>,
    pub(super) result_summary: Option<&'a Value>,
    pub(super) cancel_reason: Option<&'a str>,
    pub(super) first_chunk_unix_nano: Option<u64>,
    pub(super) time_to_first_chunk_ms: Option<f64>,
}

/// The attributes a span's terminal phase adds, pushed onto `out` (a buffer the caller
/// reuses from span to span: no allocation per END), and the facts the hook reads besides.
/// One pass over the event's map with a `match` on each key: a model call's END is read for
/// a dozen keys, and one lookup per key searched the map a dozen times.
pub(super) fn end_attributes<'a>(
    content: &ContentPolicy,
    kind: Kind,
    span: &'a SpanEvent,
    out: &mut Vec<KeyValue>,
    strings: &mut Interned,
) -> EndFacts<'a> {
    let a = &span.attributes;
    let mut facts = EndFacts::default();
    let [
        mut attempts,
        mut cache_read,
        mut chunks,
        mut cost,
        mut input,
        mut output,
    ] = [None; 6];
    let [
        mut response_id,
        mut response_model,
        mut stop_reason,
        mut streamed_chars,
    ] = [None; 4];
    let [mut original_bytes, mut truncated] = [None; 2];
    let mut protocol = false;
    for (k, v) in a {
        match k.as_str() {
            "is_error" => facts.is_error = v.as_bool(),
            "outcome" => facts.outcome = v.as_str(),
            "result_summary" => facts.result_summary = Some(v),
            "cancel_reason" => facts.cancel_reason = v.as_str(),
            "first_chunk_unix_nano" => facts.first_chunk_unix_nano = v.as_u64(),
            "time_to_first_chunk_ms" => facts.time_to_first_chunk_ms = v.as_f64(),
            "attempts" => attempts = Some(v),
            "cache_read_tokens" => cache_read = Some(v),
            "chunks" => chunks = Some(v),
            "cost_usd" => cost = Some(v),
            "input_tokens" => input = Some(v),
            "output_tokens" => output = Some(v),
            "response_id" => response_id = Some(v),
            "response_model" => response_model = Some(v),
            "stop_reason" => stop_reason = Some(v),
            "streamed_chars" => streamed_chars = Some(v),
            "kaos.result_original_bytes" => original_bytes = Some(v),
            "kaos.result_truncated" => truncated = Some(v),
            key => protocol |= kind == Kind::Tool && is_protocol_key(key),
        }
    }
    match kind {
        Kind::Llm => {
            let mut int_attr = |v: Option<&Value>, dst: &'static str| {
                if let Some(v) = v.and_then(as_i64) {
                    out.push(KeyValue::new(dst, v));
                }
            };
            int_attr(input, GEN_AI_USAGE_INPUT_TOKENS);
            int_attr(output, GEN_AI_USAGE_OUTPUT_TOKENS);
            // Zero is also what kaos records for a provider that reports no cache, so a 0 is
            // left off (a provider's explicit "0 cached" with it: a cache hit rate over spans
            // then counts the spans that name a read).
            int_attr(
                cache_read.filter(|v| v.as_u64() != Some(0)),
                GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
            );
            int_attr(attempts, KAOS_ATTEMPTS);
            int_attr(chunks, KAOS_STREAM_CHUNKS);
            int_attr(streamed_chars, KAOS_STREAM_CHARS);
            if let Some(ms) = facts.time_to_first_chunk_ms {
                out.push(KeyValue::new(
                    GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                    ms / 1000.0,
                ));
            }
            if let Some(c) = cost.and_then(Value::as_f64) {
                out.push(KeyValue::new(KAOS_COST_USD, c));
            }
            if let Some(m) = response_model.and_then(Value::as_str) {
                out.push(KeyValue::new(GEN_AI_RESPONSE_MODEL, strings.value(m)));
            }
            if let Some(id) = response_id.and_then(Value::as_str) {
                out.push(KeyValue::new(GEN_AI_RESPONSE_ID, id.to_string()));
            }
            if let Some(r) = stop_reason.and_then(Value::as_str) {
                // A one-element string array, built as such (no JSON detour), in the same
                // words as the output message's `finish_reason`.
                out.push(KeyValue::new(
                    GEN_AI_RESPONSE_FINISH_REASONS,
                    opentelemetry::Value::Array(vec![strings.value(finish_reason_of(r))].into()),
                ));
            }
            if content.captures() {
                content_attribute(content, a, OUTPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES, out);
            }
        }
        Kind::Tool => {
            let is_error = facts.is_error.unwrap_or(span.phase == SpanPhase::Error);
            out.push(KeyValue::new(KAOS_IS_ERROR, is_error));
            if let Some(b) = truncated.and_then(Value::as_bool) {
                out.push(KeyValue::new(KAOS_RESULT_TRUNCATED, b));
            }
            if let Some(n) = original_bytes.and_then(as_i64) {
                out.push(KeyValue::new(KAOS_RESULT_ORIGINAL_BYTES, n));
            }
            if protocol {
                protocol_attributes(a, out);
            }
        }
        Kind::Step => {
            out.push(KeyValue::new(KAOS_IS_ERROR, span.phase == SpanPhase::Error));
        }
        Kind::Turn => {
            if let Some(o) = facts.outcome {
                out.push(KeyValue::new(KAOS_OUTCOME, strings.value(o)));
            }
        }
        Kind::Intent | Kind::Subagent | Kind::Handoff => {}
    }
    facts
}

/// Whether `key` is a protocol attribute a tool reported ([`PROTOCOL_PREFIXES`]).
fn is_protocol_key(key: &str) -> bool {
    PROTOCOL_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Protocol attributes a tool reported (MCP: `mcp.method.name`, `jsonrpc.request.id`,
/// `network.transport`, ...), as they are.
fn protocol_attributes(a: &serde_json::Map<String, Value>, out: &mut Vec<KeyValue>) {
    for (k, v) in a.iter().filter(|(k, _)| is_protocol_key(k)) {
        let key = opentelemetry::Key::new(k.clone());
        match v {
            Value::String(s) => out.push(KeyValue::new(key, s.clone())),
            Value::Bool(b) => out.push(KeyValue::new(key, *b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => out.push(KeyValue::new(key, i)),
                None => out.push(KeyValue::new(key, n.as_f64().unwrap_or(0.0))),
            },
            other => out.push(KeyValue::new(key, other.to_string())),
        }
    }
}
