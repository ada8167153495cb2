//! `kaos mcp serve` driven by rmcp's client over stdio and HTTP, and an agent whose tools
//! come from another agent served over MCP.

use std::process::Stdio;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock, RequestMetaObject};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use super::{KAOS, TempDir, events, kaos, text};

const HELPER: &str = r#"
name = "helper"
instructions = "Answers questions about leases."
model = "offline"
"#;

fn text_of(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.clone()),
            _ => None,
        })
        .collect()
}

fn call(message: &str, traceparent: Option<&str>) -> CallToolRequestParams {
    let mut p = CallToolRequestParams::new("helper")
        .with_arguments(json!({"message": message}).as_object().unwrap().clone());
    if let Some(tp) = traceparent {
        let mut meta = RequestMetaObject::default();
        meta.set_traceparent(tp);
        p.meta = Some(meta);
    }
    p
}

#[tokio::test]
async fn mcp_serve_over_stdio_answers_and_continues_the_callers_trace() {
    let dir = TempDir::new("mcp-stdio");
    let agent = dir.write("helper.toml", HELPER);
    let audit = dir.path().join("audit");
    let mut cmd = tokio::process::Command::new(KAOS);
    cmd.args(["mcp", "serve", "--ephemeral", "--agent"])
        .arg(&agent)
        .arg("--audit")
        .arg(&audit)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    let (transport, _stderr) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = ().serve(transport).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, "helper");
    assert!(tools[0].description.as_deref().unwrap().contains("leases"));

    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = client
        .call_tool(call("Summarize the lease.", Some(tp)))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert!(text_of(&r).contains("lease"), "{}", text_of(&r));
    let s = r.structured_content.unwrap();
    assert!(s["run_id"].as_str().unwrap().starts_with("run_"), "{s}");
    assert!(s["intent"].is_string(), "{s}");
    assert!(s["usage"]["total_tokens"].as_u64().unwrap() > 0, "{s}");
    // The turn recorded the caller's traceparent (the OTel hook parents agent.turn on it).
    let session = s["session_id"].as_str().unwrap();
    let trail = std::fs::read_to_string(audit.join(format!("{session}.jsonl"))).unwrap();
    assert!(trail.contains(tp), "{trail}");
    client.cancel().await.unwrap();
}

#[test]
fn an_agent_uses_another_agent_served_over_mcp() {
    let dir = TempDir::new("mcp-chain");
    let helper = dir.write("helper.toml", HELPER);
    dir.write(
        "replies.json",
        &json!([
            "{\"intent\":\"tool_use\",\"confidence\":0.9,\"reasoning\":\"ask the helper\"}",
            {"tool_calls": [{"name": "helper.helper", "arguments": {"message": "Summarize the lease."}}]},
            "The helper answered."
        ])
        .to_string(),
    );
    let outer = format!(
        r#"
name = "outer"
model = "script:replies.json"

[[mcp_servers]]
name = "helper"
command = [{kaos:?}, "mcp", "serve", "--ephemeral", "--agent", {helper:?}]
timeout_ms = 20000
"#,
        kaos = KAOS,
        helper = helper.display().to_string()
    );
    dir.write("outer.toml", &outer);
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--agent",
            "outer.toml",
            "--ephemeral",
            "--json",
            "Ask the helper.",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let evs = events(&out.stdout);
    let end = evs
        .iter()
        .find(|e| {
            e["kind"]["type"] == "span"
                && e["kind"]["subject"] == "tool_call"
                && e["kind"]["phase"] != "start"
        })
        .unwrap_or_else(|| panic!("no tool call: {}", text(&out.stdout)));
    let attrs = &end["kind"]["attributes"];
    assert_eq!(attrs["tool_name"], "helper.helper");
    assert_eq!(attrs["is_error"], false, "{attrs}");
    assert!(
        attrs["result_summary"].as_str().unwrap().contains("lease"),
        "{attrs}"
    );
    assert_eq!(attrs["mcp.method.name"], "tools/call");
    assert_eq!(attrs["network.transport"], "pipe");
    let summary = evs.last().unwrap();
    assert_eq!(summary["kind"]["type"], "turn_summary", "{summary}");
}

#[tokio::test]
async fn mcp_serve_over_http_requires_a_token() {
    let dir = TempDir::new("mcp-http");
    let agent = dir.write("helper.toml", HELPER);
    let agent_s = agent.display().to_string();
    let out = kaos(
        dir.path(),
        &[
            "mcp",
            "serve",
            "--ephemeral",
            "--agent",
            &agent_s,
            "--http",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("KAOS_API_TOKENS"),
        "{}",
        text(&out.stderr)
    );

    let token = "a-test-token-of-some-length-42";
    let mut child = tokio::process::Command::new(KAOS)
        .args([
            "mcp",
            "serve",
            "--ephemeral",
            "--agent",
            &agent_s,
            "--http",
            "127.0.0.1:0",
        ])
        .env("KAOS_API_TOKENS", token)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    // "kaos: serving MCP over HTTP at http://127.0.0.1:PORT/mcp: helper"
    let base = line
        .split(" at ")
        .nth(1)
        .unwrap()
        .split("/mcp")
        .next()
        .unwrap();
    let url = format!("{base}/mcp");
    assert!(url.ends_with("/mcp"), "{line}");
    let anon = StreamableHttpClientTransport::from_uri(url.as_str());
    assert!(().serve(anon).await.is_err());
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(url.as_str()).auth_header(token),
    );
    let client = ().serve(transport).await.unwrap();
    let r = client
        .call_tool(call("Summarize the lease.", None))
        .await
        .unwrap();
    let s: Value = r.structured_content.clone().unwrap();
    assert!(s["run_id"].as_str().unwrap().starts_with("run_"), "{s}");
    assert!(text_of(&r).contains("lease"), "{}", text_of(&r));
}
