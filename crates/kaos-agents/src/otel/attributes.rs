//! Attribute names (our own table: the semconv crate's GenAI constants are deprecated) and
//! conversions from event values to OpenTelemetry values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::{Array, KeyValue, StringValue, Value};
use serde_json::Value as Json;

/// `gen_ai.operation.name`: `invoke_agent`, `chat`, `execute_tool`.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// `gen_ai.provider.name` (was `gen_ai.system`).
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// `gen_ai.request.model`.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// `gen_ai.response.model`.
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// `gen_ai.response.id`.
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
/// `gen_ai.response.finish_reasons` (string array).
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// `gen_ai.request.stream` (bool): the call was streamed.
pub const GEN_AI_REQUEST_STREAM: &str = "gen_ai.request.stream";
/// `gen_ai.response.time_to_first_chunk` (seconds, streamed calls).
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
/// `kaos.stream.chunks`: content chunks a streamed call received (also on a cut stream).
pub const KAOS_STREAM_CHUNKS: &str = "kaos.stream.chunks";
/// `kaos.stream.chars`: characters of text a streamed call received.
pub const KAOS_STREAM_CHARS: &str = "kaos.stream.chars";
/// The span event a streamed `chat` span records at its first chunk.
pub const EVENT_FIRST_CHUNK: &str = "gen_ai.first_chunk";
/// `gen_ai.usage.input_tokens` (cached tokens included).
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// `gen_ai.usage.output_tokens`.
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// `gen_ai.usage.cache_read.input_tokens`.
pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
/// `gen_ai.agent.name`.
pub const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
/// `gen_ai.conversation.id` (our session id).
pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
/// `gen_ai.tool.name`.
pub const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
/// `gen_ai.tool.call.id`.
pub const GEN_AI_TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
/// `gen_ai.tool.type` (`function`).
pub const GEN_AI_TOOL_TYPE: &str = "gen_ai.tool.type";
/// `gen_ai.tool.call.arguments` (opt-in content, JSON string).
pub const GEN_AI_TOOL_CALL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";
/// `gen_ai.tool.call.result` (opt-in content: a text result as the text, any other result as
/// its JSON).
pub const GEN_AI_TOOL_CALL_RESULT: &str = "gen_ai.tool.call.result";
/// `gen_ai.output.messages` (opt-in content, JSON string of GenAI output messages).
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// `gen_ai.input.messages` (opt-in content, JSON string of GenAI chat messages).
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// `gen_ai.system_instructions` (opt-in content, JSON string of GenAI parts).
pub const GEN_AI_SYSTEM_INSTRUCTIONS: &str = "gen_ai.system_instructions";
/// The agent span's input as text (OpenInference's `input.value`), with content capture on:
/// Phoenix fills a trace's and a session's input from it (it does not read it from
/// `gen_ai.input.messages`).
pub const INPUT_VALUE: &str = "input.value";
/// The agent span's answer as text (OpenInference's `output.value`), with content capture on.
pub const OUTPUT_VALUE: &str = "output.value";
/// The model server's host (OTel `server.address`, on `chat` spans and model-call metrics).
pub const SERVER_ADDRESS: &str = "server.address";
/// The model server's port (OTel `server.port`).
pub const SERVER_PORT: &str = "server.port";
/// `error.type` (stable).
pub const ERROR_TYPE: &str = "error.type";

/// `invoke_agent` operation.
pub const OP_INVOKE_AGENT: &str = "invoke_agent";
/// `chat` operation.
pub const OP_CHAT: &str = "chat";
/// `execute_tool` operation.
pub const OP_EXECUTE_TOOL: &str = "execute_tool";

/// `kaos.session_id`.
pub const KAOS_SESSION_ID: &str = "kaos.session_id";
/// `kaos.run_id`.
pub const KAOS_RUN_ID: &str = "kaos.run_id";
/// `kaos.turn_number`.
pub const KAOS_TURN_NUMBER: &str = "kaos.turn_number";
/// `kaos.intent`.
pub const KAOS_INTENT: &str = "kaos.intent";
/// `kaos.confidence`.
pub const KAOS_CONFIDENCE: &str = "kaos.confidence";
/// `kaos.reasoning` (≤200 chars).
pub const KAOS_REASONING: &str = "kaos.reasoning";
/// `kaos.tokens_used`.
pub const KAOS_TOKENS_USED: &str = "kaos.tokens_used";
/// `kaos.input_tokens` (turn rollup; usage proper lives on `chat` spans).
pub const KAOS_INPUT_TOKENS: &str = "kaos.input_tokens";
/// `kaos.output_tokens` (turn rollup).
pub const KAOS_OUTPUT_TOKENS: &str = "kaos.output_tokens";
/// `kaos.cost_usd`.
pub const KAOS_COST_USD: &str = "kaos.cost_usd";
/// `kaos.tool_call_count`.
pub const KAOS_TOOL_CALL_COUNT: &str = "kaos.tool_call_count";
/// `kaos.resumed_from`: on a resumed turn, the run id of the paused turn it continues.
pub const KAOS_RESUMED_FROM: &str = "kaos.resumed_from";
/// `kaos.outcome` (`completed`, `paused`, `failed`).
pub const KAOS_OUTCOME: &str = "kaos.outcome";
/// `kaos.purpose` of a model call.
pub const KAOS_PURPOSE: &str = "kaos.purpose";
/// `kaos.attempts` of a model call.
pub const KAOS_ATTEMPTS: &str = "kaos.attempts";
/// `kaos.tool_name`.
pub const KAOS_TOOL_NAME: &str = "kaos.tool_name";
/// `kaos.call_id`.
pub const KAOS_CALL_ID: &str = "kaos.call_id";
/// `kaos.permission` (`allow`, `deny`, `ask`).
pub const KAOS_PERMISSION: &str = "kaos.permission";
/// `kaos.is_error`.
pub const KAOS_IS_ERROR: &str = "kaos.is_error";
/// `kaos.result_truncated` (bool, tool spans): the result is incomplete, cut by the tool
/// itself (a command's output cap) or by the prompt cap (`Agent::max_tool_result_bytes`).
pub const KAOS_RESULT_TRUNCATED: &str = "kaos.result_truncated";
/// `kaos.result_original_bytes` (tool spans): the result's size before the prompt cap cut it.
pub const KAOS_RESULT_ORIGINAL_BYTES: &str = "kaos.result_original_bytes";
/// `kaos.duration_ms`.
pub const KAOS_DURATION_MS: &str = "kaos.duration_ms";
/// `kaos.approval_required`: the tool call waits for a human (the turn paused).
pub const KAOS_APPROVAL_REQUIRED: &str = "kaos.approval_required";
/// `kaos.step_id`.
pub const KAOS_STEP_ID: &str = "kaos.step_id";
/// `kaos.description`.
pub const KAOS_DESCRIPTION: &str = "kaos.description";
/// `kaos.subagent_name`.
pub const KAOS_SUBAGENT_NAME: &str = "kaos.subagent_name";
/// `kaos.task` of a sub-agent (≤200 chars).
pub const KAOS_TASK: &str = "kaos.task";
/// `kaos.from_agent`.
pub const KAOS_FROM_AGENT: &str = "kaos.from_agent";
/// `kaos.to_agent`.
pub const KAOS_TO_AGENT: &str = "kaos.to_agent";
/// `kaos.reason`.
pub const KAOS_REASON: &str = "kaos.reason";
/// `kaos.error_type`.
pub const KAOS_ERROR_TYPE: &str = "kaos.error_type";
/// `kaos.recovery_hint` (≤200 chars).
pub const KAOS_RECOVERY_HINT: &str = "kaos.recovery_hint";
/// `kaos.cancelled`: the span was cut short (status stays UNSET).
pub const KAOS_CANCELLED: &str = "kaos.cancelled";
/// `kaos.cancel_reason`.
pub const KAOS_CANCEL_REASON: &str = "kaos.cancel_reason";

/// The short-text cap of `kaos.reasoning`, `kaos.description`, messages.
pub const SHORT_TEXT_CHARS: usize = 200;

/// `text` cut to at most `max` characters (on a char boundary).
pub fn truncate_chars(text: &str, max: usize) -> String {
    // At most `max` bytes is at most `max` characters: no need to count them.
    if text.len() <= max {
        return text.to_string();
    }
    match text.char_indices().nth(max) {
        Some((i, _)) => text[..i].to_string(),
        None => text.to_string(),
    }
}

/// A unix-nanosecond timestamp as `SystemTime`.
pub fn system_time(unix_nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(unix_nanos)
}

/// A JSON value as an OpenTelemetry value: scalars map directly, homogeneous scalar arrays
/// to arrays, anything else to its JSON text.
pub fn otel_value(value: &Json) -> Value {
    match value {
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::I64(i),
            None => Value::F64(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::String(s.clone().into()),
        Json::Array(items) if !items.is_empty() && items.iter().all(Json::is_string) => {
            Value::Array(Array::String(
                items
                    .iter()
                    .filter_map(Json::as_str)
                    .map(|s| StringValue::from(s.to_string()))
                    .collect(),
            ))
        }
        other => Value::String(other.to_string().into()),
    }
}

/// `key` = the JSON value converted by [`otel_value`].
pub fn kv_json(key: &'static str, value: &Json) -> KeyValue {
    KeyValue::new(key, otel_value(value))
}

/// A JSON value as an integer, if it is one (or a float with no fraction).
pub fn as_i64(value: &Json) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
        .or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0)
                .map(|f| f as i64)
        })
}

/// A `u64` as an OpenTelemetry integer (saturating).
pub fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
