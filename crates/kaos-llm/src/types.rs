//! Provider-neutral request and response types.
//!
//! Every provider converts its wire format to and from these types, so the rest of kaos
//! (the runtime, the typed calls, the fakes) never sees a provider's JSON.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The human (or the runtime speaking for them).
    User,
    /// The model.
    Assistant,
    /// The result of a tool call, answering an assistant's `tool_calls`.
    Tool,
}

/// One message of a conversation.
///
/// An assistant message may carry tool calls; a tool message carries the id of the call it
/// answers. Build them with [`Message::system`], [`Message::user`], [`Message::assistant`],
/// [`Message::assistant_with_tools`] and [`Message::tool_result`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text (may be empty for an assistant message that only calls tools).
    pub content: String,
    /// Tool calls the assistant asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a tool message: whether the tool reported an error.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

impl Message {
    fn plain(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            is_error: false,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::plain(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::plain(Role::User, content)
    }

    /// An assistant message with text only.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::plain(Role::Assistant, content)
    }

    /// An assistant message that calls tools.
    pub fn assistant_with_tools(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls,
            ..Self::plain(Role::Assistant, content)
        }
    }

    /// A tool result answering the call `call_id`.
    pub fn tool_result(
        call_id: impl Into<String>,
        content: impl Into<String>,
        is_error: bool,
    ) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            is_error,
            ..Self::plain(Role::Tool, content)
        }
    }
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call; the tool result must quote it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON (normally an object).
    pub arguments: Value,
}

impl ToolCall {
    /// A tool call.
    pub fn new(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments,
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The tool's name.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// The model must not call tools.
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Tool {
        /// The tool's name.
        name: String,
    },
}

/// Generation options of one request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RequestOptions {
    /// Maximum output tokens (providers that need one default to 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Overrides the client's request timeout for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Everything a client needs for one model call. The model itself is part of the client.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LlmRequest {
    /// The conversation, system messages included.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    /// Tool choice (`None` = provider default, which is "auto" when tools are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Generation options.
    #[serde(default)]
    pub options: RequestOptions,
}

impl LlmRequest {
    /// A request with these messages and no tools.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Adds tool definitions.
    pub fn with_tools(mut self, tools: Vec<ToolDefinition>) -> Self {
        self.tools = tools;
        self
    }

    /// Sets the tool choice.
    pub fn with_tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = Some(choice);
        self
    }

    /// Sets the generation options.
    pub fn with_options(mut self, options: RequestOptions) -> Self {
        self.options = options;
        self
    }

    /// The system messages' text, joined by blank lines (providers with a separate system
    /// field use this).
    pub fn system_text(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        if parts.is_empty() {
            None
        } else {
            Some(parts.join("\n\n"))
        }
    }
}

/// One piece of a model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Visible text.
    Text {
        /// The text.
        text: String,
    },
    /// Reasoning the provider exposed.
    Thinking {
        /// The reasoning text.
        thinking: String,
    },
    /// A tool call.
    ToolUse {
        /// The call.
        tool_call: ToolCall,
    },
}

/// Token counts of one call (or a sum of calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input plus output.
    pub total_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Usage with these input and output counts.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
            total_tokens: input_tokens.saturating_add(output_tokens),
            cache_read_tokens: 0,
            cache_write_tokens: 0,
        }
    }
}

/// Sums saturate at `u64::MAX`: a provider reporting absurd counts cannot overflow them.
impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        self.input_tokens = self.input_tokens.saturating_add(rhs.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(rhs.output_tokens);
        self.total_tokens = self.total_tokens.saturating_add(rhs.total_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(rhs.cache_read_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(rhs.cache_write_tokens);
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(mut self, rhs: Self) -> Usage {
        self += rhs;
        self
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its answer.
    EndTurn,
    /// It hit the output token limit.
    MaxTokens,
    /// It wants tool results.
    ToolUse,
    /// It produced a stop sequence.
    StopSequence,
    /// The provider filtered the output.
    ContentFilter,
    /// Anything else, verbatim.
    Other(String),
}

impl StopReason {
    /// The reason as one string: the snake_case name (`end_turn`, `max_tokens`, ...), or the
    /// provider's own text for [`StopReason::Other`] (whose serde form is an object).
    pub fn as_str(&self) -> &str {
        match self {
            Self::EndTurn => "end_turn",
            Self::MaxTokens => "max_tokens",
            Self::ToolUse => "tool_use",
            Self::StopSequence => "stop_sequence",
            Self::ContentFilter => "content_filter",
            Self::Other(other) => other,
        }
    }
}

/// A model's answer, whatever the provider.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProviderResponse {
    /// Provider name (`anthropic`, `openai`, `openai-compatible`, `function`, ...).
    pub provider: String,
    /// The model that answered.
    pub model: String,
    /// The answer's parts in order.
    pub parts: Vec<ContentPart>,
    /// Token usage.
    pub usage: Usage,
    /// Why the model stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// The provider's id for the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    /// Time from sending the request to the full answer.
    #[serde(default)]
    pub latency: Duration,
}

impl ProviderResponse {
    /// A text answer (provider `function`, model `function-test`): handy for fakes.
    pub fn from_text(text: impl Into<String>) -> Self {
        Self {
            provider: "function".into(),
            model: "function-test".into(),
            parts: vec![ContentPart::Text { text: text.into() }],
            stop_reason: Some(StopReason::EndTurn),
            ..Self::default()
        }
    }

    /// An answer that calls one tool: handy for fakes.
    pub fn from_tool_call(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: Value,
    ) -> Self {
        Self {
            provider: "function".into(),
            model: "function-test".into(),
            parts: vec![ContentPart::ToolUse {
                tool_call: ToolCall::new(id, name, arguments),
            }],
            stop_reason: Some(StopReason::ToolUse),
            ..Self::default()
        }
    }

    /// Adds another tool call to the answer.
    pub fn with_tool_call(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: Value,
    ) -> Self {
        self.parts.push(ContentPart::ToolUse {
            tool_call: ToolCall::new(id, name, arguments),
        });
        self.stop_reason = Some(StopReason::ToolUse);
        self
    }

    /// Sets the usage.
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        self.usage = Usage::new(input_tokens, output_tokens);
        self
    }

    /// Sets the provider and model names.
    pub fn with_model(mut self, provider: impl Into<String>, model: impl Into<String>) -> Self {
        self.provider = provider.into();
        self.model = model.into();
        self
    }

    /// The text parts, concatenated.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            if let ContentPart::Text { text } = part {
                out.push_str(text);
            }
        }
        out
    }

    /// The thinking parts, concatenated.
    pub fn thinking(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            if let ContentPart::Thinking { thinking } = part {
                out.push_str(thinking);
            }
        }
        out
    }

    /// The tool calls, in order.
    pub fn tool_calls(&self) -> Vec<&ToolCall> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::ToolUse { tool_call } => Some(tool_call),
                _ => None,
            })
            .collect()
    }

    /// The JSON value in the text: the whole text, a fenced block, or the outermost
    /// `{...}` / `[...]` inside surrounding prose.
    pub fn output_json(&self) -> Result<Value, crate::json::JsonExtractError> {
        crate::json::extract_json(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::StopReason;

    #[test]
    fn stop_reason_as_str_is_its_serde_name_or_the_providers_text() {
        for reason in [
            StopReason::EndTurn,
            StopReason::MaxTokens,
            StopReason::ToolUse,
            StopReason::StopSequence,
            StopReason::ContentFilter,
        ] {
            assert_eq!(
                serde_json::to_value(&reason).unwrap(),
                serde_json::Value::String(reason.as_str().to_string())
            );
        }
        assert_eq!(
            StopReason::Other("pause_turn".into()).as_str(),
            "pause_turn"
        );
    }
}
