//! The trace across the boundary: the server receives our tool span's traceparent in
//! `params._meta`, the one tool span carries the MCP attributes, and capture/redaction apply
//! to MCP arguments and results as to any tool.

use kaos_agents::otel::CaptureContent;
use kaos_agents::{Agent, KaosRuntime, McpServerConfig, Runner};
use kaos_mcp::McpToolset;
use opentelemetry::trace::SpanKind;

use crate::support::{CallLog, Harness, attr, model, names, print_tree, traceparent_of};

async fn traced_turn(h: &Harness, toolset: &McpToolset, message: &str) {
    let toolset = toolset.clone().with_otel_hook(h.hook.clone());
    let agent = Agent::builder()
        .name("tester")
        .model("fake")
        .build()
        .unwrap();
    let runtime = toolset.attach(KaosRuntime::test_mode().with_client("fake", model()));
    Runner::new(agent, runtime)
        .with_shared_hook(h.hook.clone())
        .turn(message, "traced")
        .await
        .unwrap();
}

fn check_one_tool_span(h: &Harness, log: &CallLog, tool: &str, transport: &str) {
    let spans = h.spans();
    print_tree(&spans);
    let tool_span = h.span(&format!("agent.tool_call.{tool}"));
    let turn = h.span("agent.turn");
    let calls = log.calls();
    let received = calls.last().unwrap();
    println!("server received: {received}");
    // The server got our trace id and the tool span's span id.
    assert_eq!(
        received["traceparent"].as_str().unwrap(),
        traceparent_of(&tool_span),
        "spans: {:?}",
        names(&spans)
    );
    assert_eq!(
        tool_span.span_context.trace_id(),
        turn.span_context.trace_id()
    );
    // The MCP attributes are on that span; no second span for the call.
    assert_eq!(
        attr(&tool_span, "mcp.method.name").as_deref(),
        Some("tools/call")
    );
    assert_eq!(
        attr(&tool_span, "network.transport").as_deref(),
        Some(transport)
    );
    assert_eq!(
        attr(&tool_span, "jsonrpc.request.id").unwrap(),
        received["request_id"].as_str().unwrap()
    );
    assert!(attr(&tool_span, "mcp.protocol.version").is_some());
    assert_eq!(
        attr(&tool_span, "gen_ai.operation.name").as_deref(),
        Some("execute_tool")
    );
    assert_eq!(tool_span.span_kind, SpanKind::Internal);
    let with_mcp = spans
        .iter()
        .filter(|s| attr(s, "mcp.method.name").is_some())
        .count();
    assert_eq!(with_mcp, 1, "{:?}", names(&spans));
}

#[tokio::test]
async fn the_stdio_server_receives_the_tool_spans_traceparent() {
    let log = CallLog::new();
    let h = Harness::new();
    let toolset = McpToolset::connect(vec![log.stdio("srv")]).await.unwrap();
    traced_turn(&h, &toolset, r#"call srv.echo {"text":"trace me"}"#).await;
    check_one_tool_span(&h, &log, "srv.echo", "pipe");
    assert!(attr(&h.span("agent.tool_call.srv.echo"), "mcp.session.id").is_none());
}

#[tokio::test]
async fn the_http_server_receives_the_tool_spans_traceparent_and_names_its_session() {
    let log = CallLog::new();
    let (_child, url) = log.http().await;
    let h = Harness::new();
    let toolset = McpToolset::connect(vec![McpServerConfig::http("web", &url)])
        .await
        .unwrap();
    traced_turn(&h, &toolset, r#"call web.echo {"text":"trace me"}"#).await;
    check_one_tool_span(&h, &log, "web.echo", "tcp");
    let session = attr(&h.span("agent.tool_call.web.echo"), "mcp.session.id").unwrap();
    assert!(!session.is_empty());
}

#[tokio::test]
async fn a_failing_call_keeps_its_attributes_and_error_status() {
    let log = CallLog::new();
    let h = Harness::new();
    let toolset = McpToolset::connect(vec![log.stdio("srv")]).await.unwrap();
    traced_turn(&h, &toolset, "call srv.reject {}").await;
    let span = h.span("agent.tool_call.srv.reject");
    assert_eq!(
        attr(&span, "rpc.response.status_code").as_deref(),
        Some("-32602")
    );
    assert_eq!(attr(&span, "kaos.is_error").as_deref(), Some("true"));
    assert_eq!(
        log.calls()[0]["traceparent"].as_str().unwrap(),
        traceparent_of(&span)
    );
}

#[tokio::test]
async fn captured_mcp_arguments_and_results_are_redacted_like_any_tool() {
    let log = CallLog::new();
    let h = Harness::with_capture(CaptureContent::Redacted);
    let toolset = McpToolset::connect(vec![log.stdio("srv")]).await.unwrap();
    let secret = "sk-ant-api03-abcdefghijklmnopqrstuvwx";
    traced_turn(
        &h,
        &toolset,
        &format!(r#"call srv.echo {{"text":"key {secret}"}}"#),
    )
    .await;
    let span = h.span("agent.tool_call.srv.echo");
    let args = attr(&span, "gen_ai.tool.call.arguments").unwrap();
    let result = attr(&span, "gen_ai.tool.call.result").unwrap();
    assert!(
        args.contains("[REDACTED:anthropic_key]") && !args.contains(secret),
        "{args}"
    );
    assert!(
        result.contains("[REDACTED:anthropic_key]") && !result.contains(secret),
        "{result}"
    );
    // The server itself got the real argument: redaction is for what leaves as telemetry.
    assert!(
        log.calls()[0]["arguments"]["text"]
            .as_str()
            .unwrap()
            .contains(secret)
    );
}
