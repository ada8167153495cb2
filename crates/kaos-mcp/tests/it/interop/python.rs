//! The official Python MCP SDK (`mcp`, pinned in .ci/mcp-peers) both ways:
//! * its client (`tests/data/interop_client.py`) drives kaos agents served as MCP tools over
//!   stdio and streamable HTTP, sending `_meta.traceparent`; the agent's turn (spans in this
//!   process's in-memory exporter) continues the caller's trace;
//! * its `MCPServer` (v1's FastMCP; `tests/data/interop_server.py`) is a tool source for a
//!   kaos agent over stdio and streamable HTTP; the server logs the `traceparent` it received,
//!   which is our tool span's.

use std::path::Path;
use std::process::Stdio;

use kaos_agents::{Agent, KaosRuntime, McpServerConfig, Runner, TurnOutcome};
use kaos_mcp::McpToolset;
use kaos_mcp::serve::{AgentServer, ServedAgent, TokenSet, serve_http};
use rmcp::ServiceExt;
use serde_json::{Value, json};

use super::{Lines, PATIENCE, data, peers, read_json, traced_turn};
use crate::serve::{CALLER_SPAN, CALLER_TRACE, served, start_http};
use crate::support::{Harness, attr, model, print_tree, runner, traceparent_of};

fn caller_traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

/// The Python client's arguments: call `helper` in session `s1` with the caller's
/// traceparent, and write the report to `report`.
fn client_args(report: &Path) -> Vec<String> {
    [
        data("interop_client.py"),
        "--tool".into(),
        "helper".into(),
        "--message".into(),
        "hello from python".into(),
        "--session-id".into(),
        "s1".into(),
        "--traceparent".into(),
        caller_traceparent(),
        "--report".into(),
        report.display().to_string(),
    ]
    .into()
}

/// What the Python client saw, and the served turn's spans.
fn check_served(report: &Value, h: &Harness) {
    println!(
        "python client report: {}",
        serde_json::to_string(report).unwrap()
    );
    assert!(report.get("failure").is_none(), "{report:#}");
    let version = report["protocol_version"].as_str().unwrap();
    println!("protocol version the Python client negotiated with kaos: {version}");
    let names: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["helper", "ops"]);
    assert_eq!(
        report["tools"][0]["inputSchema"]["required"],
        json!(["message"])
    );
    let call = &report["call"];
    assert_ne!(call["isError"], json!(true), "{call}");
    let text = report["text"].as_str().unwrap();
    assert!(
        text.starts_with("echo: ") && text.contains("hello from python"),
        "{text}"
    );
    let s = &call["structuredContent"];
    assert_eq!(s["session_id"], "s1");
    assert_eq!(s["outcome"], "completed");
    assert_eq!(s["intent"], "respond");
    assert!(s["run_id"].as_str().unwrap().starts_with("run_"));
    // No `message`: a JSON-RPC error the SDK raises, naming the field.
    let bad = report["bad_call"]["error"].as_str().unwrap_or_default();
    assert!(bad.contains("message"), "{}", report["bad_call"]);

    // The caller's traceparent parents the agent's turn.
    let spans = h.spans();
    print_tree(&spans);
    let turn = h.span("agent.turn");
    assert_eq!(turn.span_context.trace_id().to_string(), CALLER_TRACE);
    assert_eq!(turn.parent_span_id.to_string(), CALLER_SPAN);
    assert!(
        spans
            .iter()
            .all(|s| s.span_context.trace_id() == turn.span_context.trace_id()),
        "every span of the served turn is in the caller's trace"
    );
}

#[tokio::test]
async fn python_client_drives_agents_served_over_stdio() {
    let Some(peers) = peers("python_client_drives_agents_served_over_stdio") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    // The Python client runs its MCP session over its own stdin/stdout; we serve on the
    // other ends of those pipes, in this process (so its spans reach the harness).
    let mut child = tokio::process::Command::new(peers.python())
        .args(client_args(&report))
        .arg("--stdio-self")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = Lines::collect(child.stderr.take().unwrap());
    let io = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let h = Harness::new();
    let running = served(&h)
        .serve(io)
        .await
        .unwrap_or_else(|e| panic!("{e}; client stderr: {:?}", stderr.all()));
    // The client writes its report, then waits for us to close its stdin.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !report.exists() && child.try_wait().unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the Python client hangs; stderr: {:?}",
            stderr.all()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = running.cancel().await;
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the Python client does not exit; stderr: {:?}",
                stderr.all()
            )
        })
        .unwrap();
    assert!(status.success(), "stderr: {:?}", stderr.all());
    check_served(&read_json(&report), &h);
}

#[tokio::test]
async fn python_client_drives_agents_served_over_streamable_http() {
    let Some(peers) = peers("python_client_drives_agents_served_over_streamable_http") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new();
    let token = "interop-token-for-the-python-client";
    let (addr, _stop) = start_http(&h, TokenSet::from_list(token).unwrap()).await;
    let url = format!("http://{addr}/mcp");
    let run = |report: &Path, token: Option<&str>| {
        let mut cmd = tokio::process::Command::new(peers.python());
        cmd.args(client_args(report)).args(["--url", url.as_str()]);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        cmd.kill_on_drop(true).output()
    };
    // Without the bearer token the SDK gets kaos's 401, whose JSON-RPC error body it
    // shows to its caller.
    let refused = dir.path().join("refused.json");
    let out = tokio::time::timeout(PATIENCE, run(&refused, None))
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let failure = read_json(&refused)["failure"].to_string();
    println!("the Python client without a token: {failure}");
    assert!(
        failure.contains("a valid bearer token is required"),
        "{failure}"
    );

    let report = dir.path().join("report.json");
    let out = tokio::time::timeout(PATIENCE, run(&report, Some(token)))
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_served(&read_json(&report), &h);
}

/// The Python server's call log.
fn logged(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The Python server's tools through kaos: listed with annotations, `shout` answered with
/// our tool span's traceparent received, `fail` an error result, `erase` held for approval.
async fn exercise_python_server(toolset: &McpToolset, log: &Path, transport: &str) {
    let tools = toolset.tools();
    let find = |name: &str| {
        tools
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    let shout = find("py.shout");
    assert_eq!(shout.description(), "Upper-cases its text.");
    assert_eq!(shout.parameters()["required"], json!(["text"]));
    assert!(shout.annotations().read_only);
    assert!(find("py.erase").annotations().destructive);

    let h = Harness::new();
    let r = traced_turn(&h, toolset, r#"call py.shout {"text":"quiet please"}"#).await;
    print_tree(&h.spans());
    // The SDK also sends `{"result": "QUIET PLEASE"}` as structured content: read once.
    assert_eq!(r.text, "result was: QUIET PLEASE");
    assert!(!r.tool_calls[0].is_error);
    let span = h.span("agent.tool_call.py.shout");
    let calls = logged(log);
    println!("the Python server received: {}", calls[0]);
    assert_eq!(calls[0]["tool"], "shout");
    assert_eq!(
        calls[0]["traceparent"].as_str().unwrap(),
        traceparent_of(&span)
    );
    assert_eq!(
        attr(&span, "jsonrpc.request.id").unwrap(),
        calls[0]["request_id"].as_str().unwrap()
    );
    assert_eq!(attr(&span, "network.transport").as_deref(), Some(transport));
    println!(
        "protocol version kaos negotiated with the Python server: {}",
        attr(&span, "mcp.protocol.version").unwrap()
    );

    let h = Harness::new();
    let r = traced_turn(&h, toolset, r#"call py.fail {"reason":"because"}"#).await;
    assert!(r.tool_calls[0].is_error, "{:?}", r.tool_calls);
    assert!(r.text.contains("failed on purpose: because"), "{}", r.text);
    assert_eq!(
        attr(&h.span("agent.tool_call.py.fail"), "kaos.is_error").as_deref(),
        Some("true")
    );

    // destructiveHint → ask: paused, and the server never sees the call.
    let r = runner(toolset, &[])
        .turn(r#"call py.erase {"path":"/tmp/x"}"#, "erase")
        .await
        .unwrap();
    assert_eq!(r.outcome, TurnOutcome::Paused);
    assert!(logged(log).iter().all(|c| c["tool"] != "erase"));
}

#[tokio::test]
async fn kaos_uses_a_python_mcpserver_over_stdio() {
    let Some(peers) = peers("kaos_uses_a_python_mcpserver_over_stdio") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let mut config = McpServerConfig::stdio("py", [peers.python(), data("interop_server.py")]);
    config
        .env
        .insert("KAOS_MCP_INTEROP_LOG".into(), log.display().to_string());
    let toolset = McpToolset::connect(vec![config]).await.unwrap();
    exercise_python_server(&toolset, &log, "pipe").await;
}

#[tokio::test]
async fn kaos_uses_a_python_mcpserver_over_streamable_http() {
    let Some(peers) = peers("kaos_uses_a_python_mcpserver_over_streamable_http") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let mut child = tokio::process::Command::new(peers.python())
        .args([data("interop_server.py").as_str(), "--http"])
        .env("KAOS_MCP_INTEROP_LOG", &log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = Lines::collect(child.stdout.take().unwrap());
    let _stderr = Lines::collect(child.stderr.take().unwrap());
    let addr = stdout
        .wait_for("`listening on` from the Python server", |l| {
            l.strip_prefix("listening on ").map(str::to_string)
        })
        .await;
    let url = format!("http://{addr}/mcp");
    let toolset = McpToolset::connect(vec![McpServerConfig::http("py", &url)])
        .await
        .unwrap();
    exercise_python_server(&toolset, &log, "tcp").await;
    let h = Harness::new();
    traced_turn(&h, &toolset, r#"call py.shout {"text":"again"}"#).await;
    let session = attr(&h.span("agent.tool_call.py.shout"), "mcp.session.id").unwrap();
    assert!(!session.is_empty());
}

/// Two boundaries, one trace: the Python client calls a served kaos agent (with its
/// traceparent), whose tool comes from server-everything (which gets the tool span's).
#[tokio::test]
async fn a_python_caller_a_served_agent_and_server_everything_share_one_trace() {
    let Some(peers) = peers("a_python_caller_a_served_agent_and_server_everything_share_one_trace")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wire = dir.path().join("received.jsonl");
    let [node, index] = peers.everything();
    let everything = McpServerConfig::stdio(
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
    let h = Harness::new();
    let toolset = McpToolset::connect(vec![everything])
        .await
        .unwrap()
        .with_otel_hook(h.hook.clone());
    let relay = Agent::builder()
        .name("relay")
        .model("fake")
        .build()
        .unwrap();
    let runtime = toolset.attach(KaosRuntime::test_mode().with_client("fake", model()));
    let runner = Runner::new(relay, runtime).with_shared_hook(h.hook.clone());
    let server = AgentServer::new(vec![ServedAgent::new(runner)]);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_http(
        server,
        "127.0.0.1:0".parse().unwrap(),
        TokenSet::empty(),
        true,
        move |a| {
            let _ = bound_tx.send(a);
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let url = format!("http://{}/mcp", bound_rx.await.unwrap());

    let report = dir.path().join("report.json");
    let out = tokio::process::Command::new(peers.python())
        .arg(data("interop_client.py"))
        .args([
            "--url",
            url.as_str(),
            "--tool",
            "relay",
            "--message",
            r#"call everything.echo {"message":"through two hops"}"#,
            "--traceparent",
            caller_traceparent().as_str(),
            "--report",
        ])
        .arg(&report)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PATIENCE, out).await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = read_json(&report);
    let text = report["text"].as_str().unwrap();
    println!("the Python caller got: {text}");
    assert!(text.contains("Echo: through two hops"), "{report:#}");

    let spans = h.spans();
    print_tree(&spans);
    let turn = h.span("agent.turn");
    let tool = h.span("agent.tool_call.everything.echo");
    assert_eq!(turn.span_context.trace_id().to_string(), CALLER_TRACE);
    assert_eq!(turn.parent_span_id.to_string(), CALLER_SPAN);
    assert_eq!(tool.span_context.trace_id().to_string(), CALLER_TRACE);
    assert_eq!(tool.parent_span_id, turn.span_context.span_id());
    let received = std::fs::read_to_string(&wire).unwrap();
    let call: Value = received
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|m| m["method"] == "tools/call")
        .unwrap();
    println!(
        "server-everything received traceparent {}",
        call["params"]["_meta"]["traceparent"]
    );
    assert_eq!(
        call["params"]["_meta"]["traceparent"].as_str().unwrap(),
        traceparent_of(&tool)
    );
}
