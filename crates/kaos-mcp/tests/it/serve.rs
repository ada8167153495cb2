//! Agents served as MCP tools, driven by rmcp's client: over an in-memory pipe (the stdio
//! code path) and over streamable HTTP with bearer tokens.

use std::net::SocketAddr;

use kaos_agents::{Agent, FnTool, KaosRuntime, Runner};
use kaos_mcp::serve::{AgentServer, HttpServeError, ServedAgent, TokenSet, serve_http};
use rmcp::model::{CallToolRequestParams, CallToolResult, RequestMetaObject};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::support::{Harness, model, print_tree};

pub(crate) const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub(crate) const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct PathArgs {
    /// The path.
    path: String,
}

pub(crate) fn served(h: &Harness) -> AgentServer {
    let helper = Agent::builder()
        .name("helper")
        .instructions("Answers questions.\nMore detail.")
        .model("fake")
        .build()
        .unwrap();
    let wipe = FnTool::new("wipe", "Wipes a path.", |a: PathArgs| async move {
        format!("wiped {}", a.path)
    })
    .destructive();
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", model())
        .with_tool(wipe);
    let runner = Runner::new(helper, runtime).with_shared_hook(h.hook.clone());
    let ops = Agent::builder().name("ops").model("fake").build().unwrap();
    let ops_runner = Runner::new(ops, runner.runtime().clone()).with_shared_hook(h.hook.clone());
    AgentServer::new(vec![
        ServedAgent::new(runner),
        ServedAgent::new(ops_runner).with_approval_hint(std::sync::Arc::new(|run, session| {
            format!("Run `kaos resume {run} --agent ops.toml --session {session}`.")
        })),
    ])
}

async fn ask(
    client: &RunningService<RoleClient, ()>,
    tool: &str,
    args: Value,
    traceparent: Option<&str>,
) -> CallToolResult {
    let mut params = CallToolRequestParams::new(tool.to_string())
        .with_arguments(args.as_object().unwrap().clone());
    if let Some(tp) = traceparent {
        let mut meta = RequestMetaObject::default();
        meta.set_traceparent(tp);
        meta.set_tracestate("vendor=abc");
        params.meta = Some(meta);
    }
    client.call_tool(params).await.unwrap()
}

fn text_of(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| match c {
            rmcp::model::ContentBlock::Text(t) => Some(t.text.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn exercise(client: &RunningService<RoleClient, ()>, h: &Harness) {
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["helper", "ops"]);
    assert!(
        tools[0]
            .description
            .as_deref()
            .unwrap()
            .contains("Answers questions.")
    );
    assert_eq!(tools[0].input_schema["required"], json!(["message"]));

    // An answer, its structured content, and the caller's trace continued.
    let tp = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let r = ask(
        client,
        "helper",
        json!({"message": "hello", "session_id": "s1"}),
        Some(&tp),
    )
    .await;
    assert_eq!(r.is_error, Some(false));
    assert!(
        text_of(&r).starts_with("echo: ") && text_of(&r).contains("hello"),
        "{}",
        text_of(&r)
    );
    let s = r.structured_content.clone().unwrap();
    assert_eq!(s["session_id"], "s1");
    assert_eq!(s["intent"], "respond");
    assert_eq!(s["turn_number"], 1);
    assert_eq!(s["outcome"], "completed");
    assert!(s["run_id"].as_str().unwrap().starts_with("run_"));
    assert_eq!(s["usage"]["input_tokens"], 40);
    let spans = h.spans();
    print_tree(&spans);
    let turn = spans.iter().find(|s| s.name == "agent.turn").unwrap();
    assert_eq!(turn.span_context.trace_id().to_string(), CALLER_TRACE);
    assert_eq!(turn.parent_span_id.to_string(), CALLER_SPAN);
    // The caller's `_meta.tracestate` travels with its trace.
    assert_eq!(turn.span_context.trace_state().header(), "vendor=abc");

    // The session continues; tool calls are listed.
    let r = ask(
        client,
        "helper",
        json!({"message": "call wipe {\"path\":\"/tmp/a\"}", "session_id": "s2"}),
        None,
    )
    .await;
    // `wipe` is destructive: the run pauses and says how to approve it.
    let s = r.structured_content.clone().unwrap();
    assert_eq!(s["outcome"], "paused");
    assert_eq!(s["pending_approval"]["tool_name"], "wipe");
    assert!(
        text_of(&r).contains("paused before calling wipe"),
        "{}",
        text_of(&r)
    );
    assert!(text_of(&r).contains("Runner::resume"), "{}", text_of(&r));
    let r = ask(
        client,
        "ops",
        json!({"message": "call wipe {\"path\":\"/x\"}"}),
        None,
    )
    .await;
    assert!(text_of(&r).contains("kaos resume run_"), "{}", text_of(&r));
    let session = r.structured_content.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        session.starts_with("mcp-"),
        "a new session when none is given: {session}"
    );

    let r = ask(
        client,
        "helper",
        json!({"message": "again", "session_id": "s1"}),
        None,
    )
    .await;
    assert_eq!(r.structured_content.unwrap()["turn_number"], 2);

    // Bad input is a JSON-RPC error naming the problem.
    let err = client
        .call_tool(CallToolRequestParams::new("helper").with_arguments(serde_json::Map::new()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("message"), "{err}");
    let err = client
        .call_tool(CallToolRequestParams::new("nobody"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("helper, ops"), "{err}");
}

#[tokio::test]
async fn agents_are_served_over_a_stdio_style_pipe() {
    let h = Harness::new();
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let server = served(&h);
    tokio::spawn(async move {
        let running = server.serve(server_io).await.unwrap();
        let _ = running.waiting().await;
    });
    let client = ().serve(client_io).await.unwrap();
    exercise(&client, &h).await;
}

pub(crate) async fn start_http(
    h: &Harness,
    tokens: TokenSet,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = served(h);
    tokio::spawn(async move {
        serve_http(
            server,
            "127.0.0.1:0".parse().unwrap(),
            tokens,
            false,
            move |a| {
                let _ = bound_tx.send(a);
            },
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
        .unwrap();
    });
    (bound_rx.await.unwrap(), stop_tx)
}

#[tokio::test]
async fn agents_are_served_over_streamable_http_with_bearer_tokens() {
    let h = Harness::new();
    let token = "t0ken-for-the-mcp-test-123456";
    let (addr, _stop) =
        start_http(&h, TokenSet::from_list(&format!("alice={token}")).unwrap()).await;
    let url = format!("http://{addr}/mcp");

    // No token (or a wrong one): refused, with a JSON-RPC error body that MCP clients show.
    let raw = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 401);
    assert_eq!(raw.headers()["www-authenticate"], "Bearer");
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], kaos_mcp::serve::UNAUTHORIZED_CODE);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bearer token"),
        "{body}"
    );
    let anon = StreamableHttpClientTransport::from_uri(url.as_str());
    assert!(().serve(anon).await.is_err());
    let wrong = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(url.as_str())
            .auth_header("not-the-token-at-all"),
    );
    assert!(().serve(wrong).await.is_err());

    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(url.as_str()).auth_header(token),
    );
    let client = ().serve(transport).await.unwrap();
    exercise(&client, &h).await;
}

#[tokio::test]
async fn http_refuses_to_start_without_a_token_unless_told_on_loopback() {
    let h = Harness::new();
    let err = serve_http(
        served(&h),
        "0.0.0.0:0".parse().unwrap(),
        TokenSet::empty(),
        true,
        |_| {},
        async {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HttpServeError::NoToken { .. }));
    assert!(err.to_string().contains("KAOS_API_TOKENS"), "{err}");
    let err = serve_http(
        served(&h),
        "127.0.0.1:0".parse().unwrap(),
        TokenSet::empty(),
        false,
        |_| {},
        async {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("--insecure-localhost"), "{err}");
    // Explicitly insecure on loopback: it starts (and stops at once here).
    let mut bound = None;
    serve_http(
        served(&h),
        "127.0.0.1:0".parse().unwrap(),
        TokenSet::empty(),
        true,
        |a| bound = Some(a),
        async {},
    )
    .await
    .unwrap();
    assert!(bound.unwrap().ip().is_loopback());
}
