//! While a tool or model call runs, its span's OTel context is current: spans the tool or
//! the model client make themselves (through the global tracer, or `tracing` bridged by
//! `tracing-opentelemetry`) nest under `agent.tool_call.*` and `chat …`.

use std::sync::{Arc, OnceLock};

use kaos_agents::otel::{CaptureContent, OTelHook};
use kaos_agents::{Agent, FnTool, KaosRuntime, Runner};
use kaos_llm::{FunctionClient, LlmRequest, Message};
use opentelemetry::trace::{Span as _, SpanId, TraceContextExt as _, Tracer as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;

use crate::otel_hook::{assert_well_formed, named, parent_name};
use crate::util::{is_classifier, routing_model};

/// The process's global tracer provider, installed once (every test of this binary that
/// uses the global tracer shares it; each finds its own spans by unique names).
struct Global {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
}

fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        Global { exporter, provider }
    })
}

impl Global {
    /// The spans of the trace that holds a span named `name`.
    fn trace_of(&self, name: &str) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        let all = self.exporter.get_finished_spans().unwrap();
        let trace = all
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name:?} exported"))
            .span_context
            .trace_id();
        all.into_iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .collect()
    }
}

/// The tree of `spans`, one line per span, children indented under their parent.
pub fn render_tree(spans: &[SpanData]) -> String {
    fn walk(spans: &[SpanData], parent: SpanId, depth: usize, out: &mut String) {
        let mut children: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.parent_span_id == parent)
            .collect();
        children.sort_by_key(|s| s.start_time);
        for s in children {
            out.push_str(&format!(
                "{}{}  span={} parent={}\n",
                "  ".repeat(depth),
                s.name,
                s.span_context.span_id(),
                s.parent_span_id
            ));
            walk(spans, s.span_context.span_id(), depth + 1, out);
        }
    }
    let ids: std::collections::HashSet<SpanId> =
        spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut out = String::new();
    // Roots: spans whose parent is not among them (INVALID, or a caller's span).
    let mut roots: Vec<SpanId> = spans
        .iter()
        .filter(|s| !ids.contains(&s.parent_span_id))
        .map(|s| s.parent_span_id)
        .collect();
    roots.dedup();
    for root in roots {
        walk(spans, root, 0, &mut out);
    }
    out
}

fn runner(runtime: KaosRuntime) -> Runner {
    let hook = OTelHook::new(opentelemetry::trace::TracerProvider::tracer(
        &global().provider,
        "kaos-test",
    ))
    .with_capture_content(CaptureContent::None);
    let agent = Agent::builder()
        .name("nester")
        .model("fake")
        .build()
        .unwrap();
    Runner::new(agent, runtime).with_shared_hook(Arc::new(hook))
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Query {
    /// What to look up.
    q: String,
}

/// A tool that makes its own span through the global tracer, after an await (the context
/// must be current on every poll, not only the first).
fn lookup_tool(name: &'static str, span_name: &'static str) -> FnTool {
    FnTool::new(name, "Looks things up.", move |a: Query| async move {
        tokio::task::yield_now().await;
        let tracer = opentelemetry::global::tracer("user-tool");
        let span = tracer.start(span_name);
        let cx = opentelemetry::Context::current_with_span(span);
        // A grandchild: the user's own nesting keeps working under ours.
        tracer.start_with_context("user.db.query", &cx);
        cx.span().end();
        format!("found {}", a.q)
    })
    .read_only()
}

#[tokio::test]
async fn a_tools_own_span_nests_under_its_tool_call_span() {
    let runtime = KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("lookup_a", json!({"q": "lease"}))),
        )
        .with_tool(lookup_tool("lookup_a", "user.lookup_a"));
    runner(runtime)
        .turn("use the tool", "nest-a")
        .await
        .unwrap();
    let spans = global().trace_of("user.lookup_a");
    println!("{}", render_tree(&spans));
    assert_well_formed(&spans);
    let user = named(&spans, "user.lookup_a");
    assert_eq!(
        parent_name(&spans, user).as_deref(),
        Some("agent.tool_call.lookup_a")
    );
    let query = named(&spans, "user.db.query");
    assert_eq!(query.parent_span_id, user.span_context.span_id());
    let tool = named(&spans, "agent.tool_call.lookup_a");
    assert_eq!(parent_name(&spans, tool).as_deref(), Some("agent.turn"));
    // Outside the tool call, nothing of ours is current any more.
    assert!(!opentelemetry::Context::current().has_active_span());
}

#[tokio::test]
async fn a_model_clients_own_span_nests_under_its_chat_span() {
    let route = routing_model("x", json!({}));
    let client = FunctionClient::new(move |messages: &[Message], request: &LlmRequest| {
        // What an instrumented HTTP client does: a client span under the current context.
        let name = if is_classifier(messages) {
            "user.http classify"
        } else {
            "user.http answer"
        };
        opentelemetry::global::tracer("user-http").start(name).end();
        route(messages, request)
    });
    let runtime = KaosRuntime::test_mode().with_client("fake", client);
    runner(runtime)
        .turn("Summarize the lease.", "nest-b")
        .await
        .unwrap();
    let spans = global().trace_of("user.http answer");
    println!("{}", render_tree(&spans));
    assert_well_formed(&spans);
    for name in ["user.http classify", "user.http answer"] {
        let user = named(&spans, name);
        let chat = spans
            .iter()
            .find(|s| s.span_context.span_id() == user.parent_span_id)
            .unwrap_or_else(|| panic!("{name} has no parent in the trace"));
        assert_eq!(chat.name, "chat function-test", "{name}");
    }
    let classify = named(&spans, "user.http classify");
    assert_eq!(
        spans
            .iter()
            .find(|s| s.span_context.span_id() == classify.parent_span_id)
            .and_then(|chat| parent_name(&spans, chat))
            .as_deref(),
        Some("agent.intent_classification")
    );
}

/// With `tracing-opentelemetry` (its default context activation), a `tracing` span made
/// inside a tool nests under the tool call, also when the whole turn runs inside an outer
/// `tracing` span.
#[cfg(feature = "tracing")]
#[tokio::test]
async fn a_tracing_span_inside_a_tool_nests_under_its_tool_call_span() {
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let tool = FnTool::new("lookup_t", "Looks up.", |a: Query| async move {
        let span = tracing::info_span!("user.traced_lookup");
        async move {
            tokio::task::yield_now().await;
            format!("found {}", a.q)
        }
        .instrument(span)
        .await
    })
    .read_only();
    let runtime = KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("lookup_t", json!({"q": "lease"}))),
        )
        .with_tool(tool);
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(
            opentelemetry::trace::TracerProvider::tracer(&global().provider, "app"),
        ));
    let _guard = tracing::subscriber::set_default(subscriber);
    let handler = tracing::info_span!("user.handler");
    runner(runtime)
        .turn("use the tool", "nest-t")
        .instrument(handler.clone())
        .await
        .unwrap();
    drop(handler);
    let spans = global().trace_of("user.traced_lookup");
    println!("{}", render_tree(&spans));
    let user = named(&spans, "user.traced_lookup");
    assert_eq!(
        parent_name(&spans, user).as_deref(),
        Some("agent.tool_call.lookup_t")
    );
    let turn = named(&spans, "agent.turn");
    assert_eq!(parent_name(&spans, turn).as_deref(), Some("user.handler"));
}
