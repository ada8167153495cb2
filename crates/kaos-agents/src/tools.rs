//! Tools an agent can call: the [`Tool`] trait, [`FnTool`], and the [`ToolRegistry`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::scope::TurnScope;

/// What a tool may ask of the runtime that runs it: model clients and the other tools.
/// [`crate::KaosRuntime`] is the host of every turn; tools see only this.
pub trait ToolHost: std::any::Any + Send + Sync {
    /// The model client for a model spec (`provider:model`).
    fn client(&self, spec: &str) -> Result<Arc<dyn kaos_llm::LlmClient>, kaos_llm::LlmError>;

    /// The host's tool named `name`.
    fn tool(&self, name: &str) -> Option<Arc<dyn Tool>>;
}

/// Hints about what a tool does; the permission policy reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ToolAnnotations {
    /// Only reads; safe to run without asking.
    pub read_only: bool,
    /// May destroy data; the default policy asks first.
    pub destructive: bool,
    /// Calling it twice with the same arguments has the same effect as once.
    pub idempotent: bool,
    /// Talks to the outside world.
    pub open_world: bool,
    /// Always needs a human's approval.
    pub requires_confirmation: bool,
}

/// What a tool returns.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ToolOutput {
    /// Text for the model.
    pub text: String,
    /// Optional structured result.
    pub structured: Option<Value>,
    /// Whether the tool reported an error.
    pub is_error: bool,
    /// Whether the tool cut its own output short (e.g. a command's stdout past a cap); the
    /// text says where.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Protocol attributes for the call's `tool_call` span (e.g. `mcp.method.name`,
    /// `jsonrpc.request.id`): they go on its terminal event as they are, and the OTel hook
    /// copies the `mcp.*`, `jsonrpc.*`, `network.*` and `rpc.*` ones onto the span.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub span_attributes: Map<String, Value>,
}

impl ToolOutput {
    /// A successful text result.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// An error result the model can read.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            is_error: true,
            ..Self::default()
        }
    }

    /// Marks the output as cut short by the tool itself.
    pub fn mark_truncated(mut self) -> Self {
        self.truncated = true;
        self
    }

    /// Adds an attribute for the call's span (see [`ToolOutput::span_attributes`]).
    pub fn with_span_attribute(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.span_attributes.insert(key.into(), value.into());
        self
    }

    /// Adds a structured result.
    pub fn with_structured(mut self, value: Value) -> Self {
        self.structured = Some(value);
        self
    }

    /// The text the model sees: the text, plus the structured JSON when both exist and the
    /// structured JSON says more than the text (see [`ToolOutput::structured_repeats_text`]).
    pub fn model_text(&self) -> String {
        match &self.structured {
            Some(v) if self.text.is_empty() => v.to_string(),
            Some(v) if !self.structured_repeats_text(v) => format!("{}\n\n{}", self.text, v),
            _ => self.text.clone(),
        }
    }

    /// Whether `structured` only repeats the text: the text is its JSON (what MCP asks a
    /// server to send next to structured content, e.g. server-everything), or it is
    /// `{"result": <the text>}` (how the Python MCP SDK wraps a tool's plain return value).
    pub fn structured_repeats_text(&self, structured: &Value) -> bool {
        let text = self.text.trim();
        let parsed = serde_json::from_str::<Value>(text).ok();
        if parsed.as_ref() == Some(structured) {
            return true;
        }
        match structured.as_object() {
            Some(o) if o.len() == 1 => match o.get("result") {
                Some(Value::String(s)) => s.trim() == text,
                Some(other) => parsed.as_ref() == Some(other),
                None => false,
            },
            _ => false,
        }
    }
}

impl From<String> for ToolOutput {
    fn from(text: String) -> Self {
        ToolOutput::text(text)
    }
}

impl From<&str> for ToolOutput {
    fn from(text: &str) -> Self {
        ToolOutput::text(text)
    }
}

impl<T: Into<ToolOutput>, E: std::fmt::Display> From<Result<T, E>> for ToolOutput {
    fn from(result: Result<T, E>) -> Self {
        match result {
            Ok(v) => v.into(),
            Err(e) => ToolOutput::error(e.to_string()),
        }
    }
}

/// What a tool call knows about where it runs.
#[derive(Clone)]
pub struct ToolContext {
    /// The session.
    pub session_id: Arc<str>,
    /// The run.
    pub run_id: Arc<str>,
    /// The model's id for this call.
    pub call_id: String,
    /// The calling agent's name.
    pub agent: Arc<str>,
    /// The tool_call span's id (for nesting work under it).
    pub span_id: Arc<str>,
    pub(crate) scope: Option<TurnScope>,
    pub(crate) host: Option<Arc<dyn ToolHost>>,
    pub(crate) nested_usage: Option<Arc<std::sync::Mutex<NestedUsage>>>,
}

/// Tokens and cost a tool spent on model calls of its own (a delegated sub-agent's turn);
/// the calling turn adds them to its `TurnSummary`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NestedUsage {
    /// Token counts.
    pub usage: kaos_llm::Usage,
    /// USD; `None` when some model's price is unknown.
    pub cost_usd: Option<f64>,
}

impl std::fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolContext")
            .field("session_id", &self.session_id)
            .field("run_id", &self.run_id)
            .field("call_id", &self.call_id)
            .field("agent", &self.agent)
            .field("span_id", &self.span_id)
            .finish_non_exhaustive()
    }
}

impl ToolContext {
    /// A context for calling a tool outside a turn (tests, scripts).
    pub fn detached(call_id: impl Into<String>) -> Self {
        Self {
            session_id: Arc::from(""),
            run_id: Arc::from(""),
            call_id: call_id.into(),
            agent: Arc::from(""),
            span_id: Arc::from(""),
            scope: None,
            host: None,
            nested_usage: None,
        }
    }

    /// The host (runtime) of the calling turn, if any.
    pub fn host(&self) -> Option<&dyn ToolHost> {
        self.host.as_deref()
    }

    /// Reports tokens and cost this call spent on model calls of its own (e.g. a sub-agent's
    /// turn); the calling turn adds them to its summary's totals. No-op outside a turn.
    pub fn report_nested_usage(&self, usage: kaos_llm::Usage, cost_usd: Option<f64>) {
        if let Some(sink) = &self.nested_usage {
            let mut acc = sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            acc.usage += usage;
            acc.cost_usd = match (acc.cost_usd, cost_usd) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
    }

    /// The live turn this call belongs to, if any (delegation uses it to nest a sub-agent's
    /// events inside this call's span).
    pub fn scope(&self) -> Option<&TurnScope> {
        self.scope.as_ref()
    }
}

/// A tool. Keep implementations cheap to share: the registry holds them as `Arc<dyn Tool>`.
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls it by.
    fn name(&self) -> &str;

    /// What it does, for the model.
    fn description(&self) -> &str;

    /// JSON Schema of its arguments object.
    fn parameters(&self) -> &Value;

    /// Hints for the permission policy.
    fn annotations(&self) -> ToolAnnotations {
        ToolAnnotations::default()
    }

    /// Runs the tool. Bad arguments must come back as an error result, not a panic.
    async fn call(&self, arguments: Value, ctx: &ToolContext) -> ToolOutput;
}

type ToolFn = dyn Fn(Value, ToolContext) -> BoxFuture<'static, ToolOutput> + Send + Sync;

/// A tool made of a typed closure: arguments are deserialized with serde and the schema
/// comes from `schemars`.
///
/// With an OTel hook, the tool call's span is the current OpenTelemetry context while the
/// closure's future runs (each poll), so spans and instrumented HTTP calls made inside nest
/// under `agent.tool_call.{name}`. Work handed to `tokio::spawn` does not inherit it: carry
/// it with `opentelemetry::context::FutureExt::with_current_context` (or `Context::current()`
/// taken before spawning). Code in the closure before its `async` block runs before the
/// span is current.
///
/// ```
/// use kaos_agents::tools::{FnTool, Tool};
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Args { /// The text to count.
///     text: String }
/// let tool = FnTool::new("wordcount", "Counts words.", |args: Args| async move {
///     args.text.split_whitespace().count().to_string()
/// }).read_only();
/// assert_eq!(tool.name(), "wordcount");
/// ```
pub struct FnTool {
    name: String,
    description: String,
    parameters: Value,
    annotations: ToolAnnotations,
    f: Box<ToolFn>,
}

impl std::fmt::Debug for FnTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnTool")
            .field("name", &self.name)
            .field("annotations", &self.annotations)
            .finish_non_exhaustive()
    }
}

impl FnTool {
    /// A tool whose arguments deserialize into `A`.
    pub fn new<A, F, Fut, R>(name: impl Into<String>, description: impl Into<String>, f: F) -> Self
    where
        A: DeserializeOwned + schemars::JsonSchema + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Into<ToolOutput>,
    {
        let name = name.into();
        let tool_name = name.clone();
        let parameters = tool_schema::<A>();
        let f = Arc::new(f);
        Self {
            name,
            description: description.into(),
            parameters,
            annotations: ToolAnnotations::default(),
            f: Box::new(move |value, _ctx| {
                let f = Arc::clone(&f);
                let tool_name = tool_name.clone();
                Box::pin(async move {
                    match serde_json::from_value::<A>(value) {
                        Ok(args) => f(args).await.into(),
                        Err(e) => ToolOutput::error(format!(
                            "invalid arguments for tool {tool_name}: {e}. Check the tool's parameter schema and call it again."
                        )),
                    }
                })
            }),
        }
    }

    /// A tool over raw JSON arguments with an explicit schema; the closure also gets the
    /// call's [`ToolContext`].
    pub fn from_json<F, Fut, R>(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
        f: F,
    ) -> Self
    where
        F: Fn(Value, ToolContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Into<ToolOutput>,
    {
        let f = Arc::new(f);
        Self {
            name: name.into(),
            description: description.into(),
            parameters,
            annotations: ToolAnnotations::default(),
            f: Box::new(move |value, ctx| {
                let f = Arc::clone(&f);
                Box::pin(async move { f(value, ctx).await.into() })
            }),
        }
    }

    /// Sets all annotations.
    pub fn with_annotations(mut self, annotations: ToolAnnotations) -> Self {
        self.annotations = annotations;
        self
    }

    /// Marks the tool read-only (and idempotent).
    pub fn read_only(mut self) -> Self {
        self.annotations.read_only = true;
        self.annotations.idempotent = true;
        self
    }

    /// Marks the tool destructive.
    pub fn destructive(mut self) -> Self {
        self.annotations.destructive = true;
        self
    }

    /// Marks the tool as always needing approval.
    pub fn requires_confirmation(mut self) -> Self {
        self.annotations.requires_confirmation = true;
        self
    }
}

#[async_trait::async_trait]
impl Tool for FnTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn parameters(&self) -> &Value {
        &self.parameters
    }
    fn annotations(&self) -> ToolAnnotations {
        self.annotations
    }
    async fn call(&self, arguments: Value, ctx: &ToolContext) -> ToolOutput {
        (self.f)(arguments, ctx.clone()).await
    }
}

/// The JSON schema of a tool's argument type, as providers expect it (an object schema
/// without the `$schema` and `title` keys).
pub fn tool_schema<A: schemars::JsonSchema>() -> Value {
    let schema = schemars::schema_for!(A);
    let mut value =
        serde_json::to_value(&schema).unwrap_or_else(|_| serde_json::json!({"type": "object"}));
    if let Some(obj) = value.as_object_mut() {
        obj.remove("$schema");
        obj.remove("title");
        obj.entry("type")
            .or_insert_with(|| Value::String("object".into()));
        obj.entry("properties")
            .or_insert_with(|| Value::Object(Default::default()));
    }
    value
}

/// A source of tools whose set can change while the runtime lives (an MCP server that sends
/// `tools/list_changed`). Runners take its tools at construction and again before a turn
/// whenever [`ToolSource::generation`] has moved.
pub trait ToolSource: Send + Sync {
    /// A number that changes whenever [`ToolSource::tools`] would return a different set.
    fn generation(&self) -> u64;

    /// The tools as of now.
    fn tools(&self) -> Vec<Arc<dyn Tool>>;
}

/// The tools a runtime offers, by name, in registration order.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: Vec<Arc<dyn Tool>>,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tools.iter().map(|t| t.name().to_string()))
            .finish()
    }
}

impl ToolRegistry {
    /// Registers a tool; a tool with the same name is replaced.
    pub fn register(&mut self, tool: Arc<dyn Tool>) {
        let name = tool.name().to_string();
        match self.by_name.get(&name) {
            Some(&i) => self.tools[i] = tool,
            None => {
                self.by_name.insert(name, self.tools.len());
                self.tools.push(tool);
            }
        }
    }

    /// The tool with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.by_name.get(name).map(|&i| &self.tools[i])
    }

    /// Every tool, in registration order.
    pub fn all(&self) -> &[Arc<dyn Tool>] {
        &self.tools
    }

    /// How many tools there are.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::ToolOutput;
    use serde_json::json;

    #[test]
    fn structured_content_reaches_the_model_once() {
        // More than the text: both.
        let out = ToolOutput::text("echo: hi").with_structured(json!({"echo": "hi"}));
        assert_eq!(out.model_text(), "echo: hi\n\n{\"echo\":\"hi\"}");
        // The text is the JSON (MCP's backward-compatible text block): once.
        let out = ToolOutput::text(r#"{"temperature": 36, "humidity": 82}"#)
            .with_structured(json!({"humidity": 82, "temperature": 36}));
        assert_eq!(out.model_text(), r#"{"temperature": 36, "humidity": 82}"#);
        // A plain return wrapped as {"result": ...} (the Python SDK): once.
        let out = ToolOutput::text("QUIET").with_structured(json!({"result": "QUIET"}));
        assert_eq!(out.model_text(), "QUIET");
        let out = ToolOutput::text("42").with_structured(json!({"result": 42}));
        assert_eq!(out.model_text(), "42");
        let out = ToolOutput::text("41").with_structured(json!({"result": 42}));
        assert_eq!(out.model_text(), "41\n\n{\"result\":42}");
        // Only structured: its JSON.
        let out = ToolOutput::text("").with_structured(json!({"a": 1}));
        assert_eq!(out.model_text(), "{\"a\":1}");
    }
}
