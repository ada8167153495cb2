//! Typed structured calls: ask a model for JSON and get a Rust value back.
//!
//! A [`Signature`] describes one kind of call: instructions, named input fields, few-shot
//! examples and the output type `O`. It is built once (the JSON schema of `O` and the system
//! prompt are generated in [`Signature::new`]) and reused for every call.
//!
//! [`Signature::call`] sends the prompt, extracts the JSON from the answer (plain text, a
//! fenced block, or JSON inside prose), deserializes it into `O`, and on failure makes
//! corrective retries that quote the parse error. Provider errors are returned as-is.
//!
//! ```
//! use kaos_llm::structured::Signature;
//! use kaos_llm::{FunctionClient, ProviderResponse, RequestOptions};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Route {
//!     /// What the user wants: "respond" or "use_tool".
//!     intent: String,
//! }
//!
//! # futures::executor::block_on(async {
//! let signature = Signature::<Route>::new("Classify the user's message.")
//!     .input("message", "The user's message");
//! let client = FunctionClient::scripted([ProviderResponse::from_text(r#"{"intent": "respond"}"#)]);
//! let outcome = signature
//!     .call(&client, &[("message", "hi")], &RequestOptions::default())
//!     .await
//!     .unwrap();
//! assert_eq!(outcome.value.intent, "respond");
//! assert_eq!(outcome.attempts, 1);
//! # });
//! ```

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::LlmClient;
use crate::error::LlmError;
use crate::json::extract_json;
use crate::types::{LlmRequest, Message, RequestOptions, StopReason, Usage};

/// An output type of a typed call: deserializable and with a JSON schema.
///
/// Implemented for every `T: DeserializeOwned + JsonSchema + Send + Sync + 'static`; derive
/// `serde::Deserialize` and `schemars::JsonSchema` on a struct and document its fields (the
/// doc comments become the field descriptions in the prompt).
pub trait StructuredOutput:
    serde::de::DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static
{
}

impl<T: serde::de::DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static> StructuredOutput
    for T
{
}

/// Values longer than this (in characters) start on the line after their label.
const INLINE_VALUE_LIMIT: usize = 200;

/// One declared input field.
#[derive(Debug, Clone)]
struct InputField {
    name: String,
    description: String,
}

/// One few-shot example as given (kept so it can be re-rendered when inputs change).
#[derive(Debug, Clone)]
struct Example {
    inputs: Vec<(String, String)>,
    output: Value,
}

/// A typed call: instructions, input fields, few-shot examples and the output type `O`.
///
/// Built once (schema generated once, system prompt cached) and reused for every call; it is
/// `Send + Sync` whatever `O` is. Cloning is cheap: the built parts are shared.
pub struct Signature<O> {
    inner: Arc<SignatureInner>,
    _output: PhantomData<fn() -> O>,
}

/// The parts of a [`Signature`], shared between clones (the builder methods copy on write).
#[derive(Clone)]
struct SignatureInner {
    instructions: String,
    inputs: Vec<InputField>,
    examples: Vec<Example>,
    /// The rendered user/assistant pairs of `examples`.
    example_messages: Vec<Message>,
    max_retries: u32,
    /// An answer with no JSON object in it is returned as invalid at once (no retry).
    plain_text_fallback: bool,
    schema: Value,
    system_prompt: String,
}

impl<O> Clone for Signature<O> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _output: PhantomData,
        }
    }
}

impl<O> std::fmt::Debug for Signature<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signature")
            .field("output", &std::any::type_name::<O>())
            .field("inputs", &self.inner.inputs)
            .field("examples", &self.inner.examples.len())
            .field("max_retries", &self.inner.max_retries)
            .finish_non_exhaustive()
    }
}

/// The result of a successful typed call.
#[derive(Debug, Clone)]
pub struct TypedOutcome<O> {
    /// The decoded output.
    pub value: O,
    /// Tokens spent, summed over all attempts.
    pub usage: Usage,
    /// Cost in USD summed over all attempts; `None` if any attempt's model has no known price.
    pub cost_usd: Option<f64>,
    /// How many model calls were made (1 = no corrective retry).
    pub attempts: u32,
    /// Wall time of the whole call, retries included.
    pub latency: Duration,
    /// Provider of the last response.
    pub provider: String,
    /// Model of the last response.
    pub model: String,
    /// The provider's id of the last response.
    pub response_id: Option<String>,
    /// The text of the last response.
    pub raw_text: String,
    /// Why the last response ended (`end_turn`, `max_tokens`, ...), when the provider said.
    pub stop_reason: Option<StopReason>,
    /// Streamed calls: time from the first request to its first content chunk.
    pub time_to_first_chunk: Option<Duration>,
    /// Streamed calls: content chunks received over all attempts.
    pub chunks: u64,
    /// What corrective retries added to the request, in order: each rejected answer (as the
    /// assistant) and the request to answer again (as the user). Empty when the first answer
    /// was valid; otherwise the last attempt was asked the signature's messages followed by
    /// these.
    pub corrections: Vec<Message>,
}

impl<O: StructuredOutput> Signature<O> {
    /// A signature with these instructions. Generates the JSON schema of `O` and the system
    /// prompt once.
    pub fn new(instructions: impl Into<String>) -> Self {
        let instructions = instructions.into();
        let mut schema = schemars::SchemaGenerator::default()
            .into_root_schema_for::<O>()
            .to_value();
        if let Value::Object(map) = &mut schema {
            // The meta-schema URL only costs tokens.
            map.remove("$schema");
        }
        let system_prompt = build_system_prompt(&instructions, &schema);
        Self {
            inner: Arc::new(SignatureInner {
                instructions,
                inputs: Vec::new(),
                examples: Vec::new(),
                example_messages: Vec::new(),
                max_retries: 1,
                plain_text_fallback: false,
                schema,
                system_prompt,
            }),
            _output: PhantomData,
        }
    }

    /// Declares an input field (fields are rendered in declaration order).
    pub fn input(mut self, name: &str, description: &str) -> Self {
        Arc::make_mut(&mut self.inner).inputs.push(InputField {
            name: name.to_owned(),
            description: description.to_owned(),
        });
        self.render_examples();
        self
    }

    /// Adds a few-shot example: these inputs should produce this output.
    pub fn example(mut self, inputs: &[(&str, &str)], output: Value) -> Self {
        Arc::make_mut(&mut self.inner).examples.push(Example {
            inputs: inputs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            output,
        });
        self.render_examples();
        self
    }

    /// Sets how many corrective retries follow an unparseable answer (default 1).
    pub fn max_retries(mut self, n: u32) -> Self {
        Arc::make_mut(&mut self.inner).max_retries = n;
        self
    }

    /// When the model answers without any JSON object (plain prose), skip the corrective
    /// retry and return [`LlmError::InvalidOutput`] at once, so the caller can use the prose.
    /// Answers that attempt JSON and break it are still retried.
    pub fn plain_text_fallback(mut self, on: bool) -> Self {
        Arc::make_mut(&mut self.inner).plain_text_fallback = on;
        self
    }

    /// Whether an answer's failure should end the call without a corrective retry.
    pub(crate) fn gives_up_on(&self, text: &str, attempts: u32) -> bool {
        attempts >= self.inner.max_retries.saturating_add(1)
            || (self.inner.plain_text_fallback && !text.contains('{'))
    }

    /// The corrective message that follows an unparseable answer.
    pub(crate) fn correction(reason: &str) -> String {
        format!(
            "Your previous response could not be parsed: {reason}. Please try again \
             and make sure your output matches the requested format exactly: one \
             JSON object matching the schema, with no other text."
        )
    }

    /// The request of a first attempt.
    pub(crate) fn request(&self, inputs: &[(&str, &str)], options: &RequestOptions) -> LlmRequest {
        LlmRequest {
            messages: self.messages(inputs),
            tools: Vec::new(),
            tool_choice: None,
            options: options.clone(),
        }
    }

    /// The system prompt: instructions, output fields and the JSON schema.
    pub fn system_prompt(&self) -> &str {
        &self.inner.system_prompt
    }

    /// The instructions this signature was built with.
    pub fn instructions(&self) -> &str {
        &self.inner.instructions
    }

    /// The JSON schema of `O` (without `$schema`).
    pub fn schema(&self) -> &Value {
        &self.inner.schema
    }

    /// The messages of a first attempt: the system prompt, the few-shot pairs, then the user
    /// message rendering `inputs`.
    pub fn messages(&self, inputs: &[(&str, &str)]) -> Vec<Message> {
        let inner = &*self.inner;
        let mut messages = Vec::with_capacity(inner.example_messages.len() + 4);
        messages.push(Message::system(inner.system_prompt.clone()));
        messages.extend(inner.example_messages.iter().cloned());
        messages.push(Message::user(render_inputs(&inner.inputs, inputs)));
        messages
    }

    /// Extracts the JSON value from `text` and deserializes it into `O`; `Err` is a readable
    /// reason that can be shown to the model.
    ///
    /// Accepts bare JSON, a fenced block, JSON inside prose, and a JSON string that itself
    /// holds a JSON object (some models double-encode). Extra keys are ignored; missing
    /// required fields are an error.
    pub fn parse(&self, text: &str) -> Result<O, String> {
        // Fast path, the common case: the answer is exactly a JSON object of `O`. Parsing it
        // straight into `O` skips building (and dropping) an intermediate `Value` tree; any
        // failure falls through to the general path below, so the accepted inputs and the
        // error messages are unchanged.
        let trimmed = text.trim();
        if trimmed.starts_with('{')
            && let Ok(value) = serde_json::from_str::<O>(trimmed)
        {
            return Ok(value);
        }
        let value = extract_json(text).map_err(|e| e.to_string())?;
        let value = match value {
            Value::String(inner) => match serde_json::from_str::<Value>(inner.trim()) {
                Ok(decoded @ (Value::Object(_) | Value::Array(_))) => decoded,
                _ => Value::String(inner),
            },
            other => other,
        };
        serde_json::from_value::<O>(value)
            .map_err(|e| format!("the JSON does not match the required schema: {e}"))
    }

    /// Calls the model and decodes its answer into `O`, with up to `max_retries` corrective
    /// retries when the answer cannot be decoded.
    ///
    /// Provider errors are returned as-is, without retry (retries of transient failures are
    /// the client's job). When every attempt fails to decode, returns
    /// [`LlmError::InvalidOutput`] with the usage of all attempts.
    pub async fn call(
        &self,
        client: &dyn LlmClient,
        inputs: &[(&str, &str)],
        options: &RequestOptions,
    ) -> Result<TypedOutcome<O>, LlmError> {
        let started = Instant::now();
        let mut request = self.request(inputs, options);
        let asked = request.messages.len();
        let mut usage = Usage::default();
        let mut cost_usd = Some(0.0);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let response = client.complete(&request).await?;
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
                        time_to_first_chunk: None,
                        chunks: 0,
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
                    tracing::debug!(attempt = attempts, %reason, "typed call: invalid output, retrying");
                    request.messages.push(Message::assistant(text));
                    request
                        .messages
                        .push(Message::user(Self::correction(&reason)));
                }
            }
        }
    }

    fn render_examples(&mut self) {
        let inner = Arc::make_mut(&mut self.inner);
        inner.example_messages.clear();
        for example in &inner.examples {
            let pairs: Vec<(&str, &str)> = example
                .inputs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            inner
                .example_messages
                .push(Message::user(render_inputs(&inner.inputs, &pairs)));
            inner
                .example_messages
                .push(Message::assistant(example.output.to_string()));
        }
    }
}

/// The system prompt: instructions, `## Output Format` with one line per output field,
/// `## JSON Schema` with the fenced schema, and a closing rule.
fn build_system_prompt(instructions: &str, schema: &Value) -> String {
    let schema_text = format!("{schema:#}");
    let mut prompt = String::with_capacity(instructions.len() + schema_text.len() * 2 + 256);
    let instructions = instructions.trim();
    if !instructions.is_empty() {
        prompt.push_str(instructions);
        prompt.push_str("\n\n");
    }
    prompt.push_str("## Output Format\n");
    let properties = schema.get("properties").and_then(Value::as_object);
    match properties {
        Some(properties) if !properties.is_empty() => {
            prompt.push_str("Respond with a JSON object containing these fields:\n");
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            // Required fields in declaration order (schemars keeps it in `required`; the
            // properties map is sorted), then the optional ones.
            let ordered = required
                .iter()
                .filter_map(|name| properties.get_key_value(*name))
                .chain(
                    properties
                        .iter()
                        .filter(|(name, _)| !required.contains(&name.as_str())),
                );
            for (name, property) in ordered {
                let description = field_description(property, schema);
                let _ = write!(prompt, "- **{name}**: {description}");
                if !required.contains(&name.as_str()) {
                    prompt.push_str(" (optional)");
                }
                prompt.push('\n');
            }
        }
        _ => prompt.push_str("Respond with a JSON value matching the schema below.\n"),
    }
    prompt.push_str("\n## JSON Schema\n```json\n");
    prompt.push_str(&schema_text);
    prompt.push_str("\n```\n\n");
    prompt.push_str(
        "Respond ONLY with valid JSON that matches this schema. \
         Do not write anything before or after the JSON.",
    );
    prompt
}

/// A field's description: its own, else the referenced definition's, else its type.
fn field_description(property: &Value, root: &Value) -> String {
    if let Some(d) = property.get("description").and_then(Value::as_str) {
        return one_line(d);
    }
    let referenced = property
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer));
    if let Some(target) = referenced {
        if let Some(d) = target.get("description").and_then(Value::as_str) {
            return one_line(d);
        }
        if let Some(values) = target.get("enum").and_then(Value::as_array) {
            return format!("one of {}", Value::Array(values.clone()));
        }
    }
    if let Some(values) = property.get("enum").and_then(Value::as_array) {
        return format!("one of {}", Value::Array(values.clone()));
    }
    match property.get("type") {
        Some(Value::String(t)) => format!("a {t}"),
        Some(other) => format!("type {other}"),
        None => "see the schema".to_owned(),
    }
}

/// Doc comments may span lines; a field line must not.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The user message: `**<name>** (<description>): <value>` per field, joined by blank lines.
///
/// Declared fields come first in declaration order (a declared field missing from `inputs` is
/// skipped); inputs that were not declared follow in the order given, without description.
fn render_inputs(fields: &[InputField], inputs: &[(&str, &str)]) -> String {
    let capacity: usize = fields
        .iter()
        .map(|f| f.name.len() + f.description.len() + 12)
        .sum::<usize>()
        + inputs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>();
    let mut out = String::with_capacity(capacity);
    let mut push = |name: &str, description: &str, value: &str| {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str("**");
        out.push_str(name);
        out.push_str("**");
        if !description.is_empty() {
            out.push_str(" (");
            out.push_str(description);
            out.push(')');
        }
        out.push(':');
        // More than INLINE_VALUE_LIMIT chars: `nth` stops after the limit instead of
        // counting every char of a long value (a conversation history can be 24 KB).
        let long = value.contains('\n')
            || (value.len() > INLINE_VALUE_LIMIT
                && value.chars().nth(INLINE_VALUE_LIMIT).is_some());
        out.push(if long { '\n' } else { ' ' });
        out.push_str(value);
    };
    for field in fields {
        if let Some((_, value)) = inputs.iter().find(|(k, _)| *k == field.name) {
            push(&field.name, &field.description, value);
        }
    }
    for (name, value) in inputs {
        if !fields.iter().any(|f| f.name == *name) {
            push(name, "", value);
        }
    }
    out
}
