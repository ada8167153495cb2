//! Helpers: the test MCP server (stdio or HTTP), a fake model that calls the tool named in
//! the user's message, and an in-memory OTel harness.

use std::path::PathBuf;
use std::sync::Arc;

use kaos_agents::kaos_llm::Role;
use kaos_agents::otel::{CaptureContent, OTelHook};
use kaos_agents::{
    Agent, FunctionClient, KaosRuntime, LlmRequest, McpServerConfig, Message, ProviderResponse,
    Runner,
};
use kaos_mcp::McpToolset;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

/// The test server binary (rmcp's server side; see `src/bin/kaos-mcp-test-server.rs`).
pub const SERVER: &str = env!("CARGO_BIN_EXE_kaos-mcp-test-server");

/// A file the test server appends what it received to.
pub struct CallLog {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl CallLog {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.jsonl");
        Self { _dir: dir, path }
    }

    /// Every call the server logged, in order.
    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The stdio server as a config named `name`.
    pub fn stdio(&self, name: &str) -> McpServerConfig {
        let mut c = McpServerConfig::stdio(name, [SERVER]);
        c.env
            .insert("KAOS_MCP_TEST_LOG".into(), self.path.display().to_string());
        c
    }

    /// Starts the server on streamable HTTP; returns the child (killed on drop) and its URL.
    pub async fn http(&self) -> (tokio::process::Child, String) {
        let mut child = tokio::process::Command::new(SERVER)
            .args(["--http", "127.0.0.1:0"])
            .env("KAOS_MCP_TEST_LOG", &self.path)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = lines.next_line().await.unwrap().unwrap();
        let addr = line.strip_prefix("listening on ").unwrap().to_string();
        (child, format!("http://{addr}/mcp"))
    }
}

fn system(messages: &[Message]) -> &str {
    messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .unwrap_or_default()
}

fn last_user(messages: &[Message]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// A fake model: a message `call TOOL {json args}` makes it call TOOL once and then answer
/// `result was: <tool result>`; any other message gets `echo: <message>`.
pub fn model() -> FunctionClient {
    FunctionClient::new(|messages: &[Message], request: &LlmRequest| {
        if system(messages).contains("Decide how an assistant should handle") {
            let intent = if last_user(messages).contains("call ") {
                "tool_use"
            } else {
                "respond"
            };
            return ProviderResponse::from_text(format!(
                r#"{{"intent":"{intent}","confidence":0.9,"reasoning":"test"}}"#
            ))
            .with_usage(10, 1);
        }
        if !request.tools.is_empty() {
            if let Some(last) = messages.last().filter(|m| m.role == Role::Tool) {
                return ProviderResponse::from_text(format!("result was: {}", last.content))
                    .with_usage(20, 2);
            }
            let user = last_user(messages);
            let rest = user.split("call ").nth(1).unwrap_or_default();
            let (tool, args) = rest.split_once(' ').unwrap_or((rest, "{}"));
            // The first JSON value (a served agent's prompt has more text after it).
            let args: Value = serde_json::Deserializer::from_str(args)
                .into_iter::<Value>()
                .next()
                .and_then(Result::ok)
                .unwrap_or(Value::Null);
            return ProviderResponse::from_tool_call("tc_1", tool.trim(), args).with_usage(15, 3);
        }
        let user = last_user(messages);
        ProviderResponse::from_text(
            serde_json::json!({ "response": format!("echo: {user}") }).to_string(),
        )
        .with_usage(30, 4)
    })
}

/// An in-memory exporter and an OTel hook over it.
pub struct Harness {
    pub exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
    pub hook: Arc<OTelHook>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_capture(CaptureContent::None)
    }

    pub fn with_capture(mode: CaptureContent) -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let hook =
            Arc::new(OTelHook::new(provider.tracer("kaos-mcp-test")).with_capture_content(mode));
        Self {
            exporter,
            _provider: provider,
            hook,
        }
    }

    pub fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().unwrap()
    }

    pub fn span(&self, name: &str) -> SpanData {
        self.spans()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}: {:?}", names(&self.spans())))
    }
}

pub fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}

/// A string attribute of a span.
pub fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// An agent on the fake model with these permission rules, over `toolset`.
pub fn runner(toolset: &McpToolset, rules: &[(&str, kaos_agents::PermissionDecision)]) -> Runner {
    let mut b = Agent::builder().name("tester").model("fake");
    for (p, d) in rules {
        b = b.permission(*p, *d);
    }
    let runtime = toolset.attach(KaosRuntime::test_mode().with_client("fake", model()));
    Runner::new(b.build().unwrap(), runtime)
}

/// The `traceparent` of a finished span, as the W3C header would carry it.
pub fn traceparent_of(span: &SpanData) -> String {
    format!(
        "00-{}-{}-01",
        span.span_context.trace_id(),
        span.span_context.span_id()
    )
}

/// Prints the spans of one trace as an indented tree (for the report; visible with
/// `--nocapture`).
pub fn print_tree(spans: &[SpanData]) {
    fn walk(spans: &[SpanData], parent: opentelemetry::trace::SpanId, depth: usize) {
        for s in spans.iter().filter(|s| s.parent_span_id == parent) {
            let mcp: Vec<String> = s
                .attributes
                .iter()
                .filter(|kv| {
                    let k = kv.key.as_str();
                    k.starts_with("mcp.") || k.starts_with("jsonrpc.") || k.starts_with("network.")
                })
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            println!(
                "{}{} [span {}] {}",
                "  ".repeat(depth),
                s.name,
                s.span_context.span_id(),
                mcp.join(" ")
            );
            walk(spans, s.span_context.span_id(), depth + 1);
        }
    }
    let ids: std::collections::HashSet<_> =
        spans.iter().map(|s| s.span_context.span_id()).collect();
    if let Some(root) = spans.iter().find(|s| !ids.contains(&s.parent_span_id)) {
        println!(
            "trace {} (parent {})",
            root.span_context.trace_id(),
            root.parent_span_id
        );
        walk(spans, root.parent_span_id, 0);
    }
}
