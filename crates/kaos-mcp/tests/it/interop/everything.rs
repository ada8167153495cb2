//! kaos as an MCP client of the reference TypeScript server
//! `@modelcontextprotocol/server-everything` (pinned in .ci/mcp-peers), over stdio and
//! streamable HTTP: tools listed with their annotations, `echo` called and answered, a
//! failing call, and the `_meta.traceparent` of the tool span on the wire.

use std::process::Stdio;

use kaos_agents::{McpServerConfig, Tool};
use kaos_mcp::McpToolset;
use serde_json::Value;

use super::{Lines, free_port, peers, traced_turn};
use crate::support::{Harness, attr, print_tree, traceparent_of};

fn find(toolset: &McpToolset, name: &str) -> std::sync::Arc<dyn Tool> {
    let tools = toolset.tools();
    let names: Vec<String> = tools.iter().map(|t| t.name().to_string()).collect();
    tools
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("server-everything lists no {name}: {names:?}"))
}

/// Checks the tools kaos took from server-everything.
fn check_listing(toolset: &McpToolset) {
    let echo = find(toolset, "everything.echo");
    assert_eq!(echo.description(), "Echoes back the input string");
    assert_eq!(echo.parameters()["properties"]["message"]["type"], "string");
    assert_eq!(
        echo.parameters()["required"],
        serde_json::json!(["message"])
    );
    assert!(echo.annotations().read_only && !echo.annotations().destructive);
    let sum = find(toolset, "everything.get-sum");
    assert_eq!(sum.parameters()["properties"]["a"]["type"], "number");
}

/// `echo` through an agent turn: answered, one tool span with the MCP attributes; returns
/// the tool span.
async fn check_echo(toolset: &McpToolset, transport: &str) -> opentelemetry_sdk::trace::SpanData {
    let h = Harness::new();
    let r = traced_turn(
        &h,
        toolset,
        r#"call everything.echo {"message":"hello from kaos"}"#,
    )
    .await;
    print_tree(&h.spans());
    assert!(r.text.contains("Echo: hello from kaos"), "{}", r.text);
    assert!(!r.tool_calls[0].is_error);
    let span = h.span("agent.tool_call.everything.echo");
    assert_eq!(
        attr(&span, "mcp.method.name").as_deref(),
        Some("tools/call")
    );
    assert_eq!(attr(&span, "network.transport").as_deref(), Some(transport));
    let version = attr(&span, "mcp.protocol.version").unwrap();
    println!("negotiated protocol version with server-everything: {version}");
    assert!(version.starts_with("20"), "{version}");
    assert_eq!(
        span.span_context.trace_id(),
        h.span("agent.turn").span_context.trace_id()
    );
    span
}

/// A call server-everything refuses (a string where `get-sum` wants numbers): an error
/// result for the model, with the validation message, and the turn goes on.
async fn check_failing_call(toolset: &McpToolset) {
    let h = Harness::new();
    let r = traced_turn(&h, toolset, r#"call everything.get-sum {"a":"one","b":2}"#).await;
    println!("failing call answered: {}", r.text);
    assert!(r.tool_calls[0].is_error, "{:?}", r.tool_calls);
    assert!(r.text.starts_with("result was: "), "{}", r.text);
    assert!(r.text.contains("number"), "{}", r.text);
    let span = h.span("agent.tool_call.everything.get-sum");
    assert_eq!(attr(&span, "kaos.is_error").as_deref(), Some("true"));
}

/// `get-structured-content` sends its JSON both as text (MCP's backward-compatible block)
/// and as structured content: the model reads it once.
async fn check_structured(toolset: &McpToolset) {
    let h = Harness::new();
    let r = traced_turn(
        &h,
        toolset,
        r#"call everything.get-structured-content {"location":"Chicago"}"#,
    )
    .await;
    println!("structured call answered: {}", r.text);
    assert!(!r.tool_calls[0].is_error, "{}", r.text);
    assert_eq!(
        r.text.matches("Light rain / drizzle").count(),
        1,
        "{}",
        r.text
    );
}

#[tokio::test]
async fn server_everything_over_stdio() {
    let Some(peers) = peers("server_everything_over_stdio") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wire = dir.path().join("received.jsonl");
    // `tee` keeps what the server received on stdin, to compare with our spans.
    let [node, index] = peers.everything();
    let config = McpServerConfig::stdio(
        "everything",
        [
            "sh".to_string(),
            "-c".to_string(),
            r#"tee -a "$0" | exec "$1" "$2" stdio"#.to_string(),
            wire.display().to_string(),
            node,
            index,
        ],
    );
    let toolset = McpToolset::connect(vec![config]).await.unwrap();
    check_listing(&toolset);
    let span = check_echo(&toolset, "pipe").await;

    let received: Vec<Value> = std::fs::read_to_string(&wire)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let call = received
        .iter()
        .find(|m| m["method"] == "tools/call")
        .unwrap_or_else(|| panic!("no tools/call reached the server: {received:?}"));
    println!("server-everything received: {call}");
    assert_eq!(call["params"]["name"], "echo");
    assert_eq!(
        call["params"]["_meta"]["traceparent"].as_str().unwrap(),
        traceparent_of(&span)
    );
    assert_eq!(
        attr(&span, "jsonrpc.request.id").unwrap(),
        call["id"].to_string()
    );
    check_failing_call(&toolset).await;
    check_structured(&toolset).await;
}

#[tokio::test]
async fn server_everything_over_streamable_http() {
    let Some(peers) = peers("server_everything_over_streamable_http") else {
        return;
    };
    let port = free_port();
    let [node, index] = peers.everything();
    let mut child = tokio::process::Command::new(node)
        .args([index.as_str(), "streamableHttp"])
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = Lines::collect(child.stdout.take().unwrap());
    let stderr = Lines::collect(child.stderr.take().unwrap());
    stderr
        .wait_for("`listening on port` from server-everything", |l| {
            l.contains(&format!("listening on port {port}"))
                .then_some(())
        })
        .await;

    let url = format!("http://127.0.0.1:{port}/mcp");
    let toolset = McpToolset::connect(vec![McpServerConfig::http("everything", &url)])
        .await
        .unwrap();
    check_listing(&toolset);
    let span = check_echo(&toolset, "tcp").await;
    // The session id on our span is the one server-everything created.
    let session = attr(&span, "mcp.session.id").unwrap();
    let created = stdout
        .wait_for("`Session initialized` from server-everything", |l| {
            l.strip_prefix("Session initialized with ID: ")
                .map(str::to_string)
        })
        .await;
    assert_eq!(session, created, "server stdout: {:?}", stdout.all());
    check_failing_call(&toolset).await;
    check_structured(&toolset).await;
}
