//! The `kaos` binary with MCP peers we did not write (pinned and installed by
//! `.ci/ensure-mcp-peers`; run when `KAOS_MCP_INTEROP=1`, as `.ci/run` sets):
//! * `kaos run` with an agent whose tools come from `@modelcontextprotocol/server-everything`
//!   (stdio and streamable HTTP) and from a Python SDK `MCPServer` (stdio); the server gets
//!   `_meta.traceparent` in the trace given by `--traceparent`;
//! * the Python SDK's client driving `kaos mcp serve` over stdio and streamable HTTP with the
//!   offline model; the caller's traceparent reaches the served turn (its audit trail).
//!
//! Without the variable each test says, past the harness's output capture, that it did not run.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};

use super::observability::otlp_receiver;
use super::{KAOS, TempDir, events, kaos, text};

const INTEROP_ENV: &str = "KAOS_MCP_INTEROP";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The installed peers (`<repo>/target/mcp-peers`, or `KAOS_MCP_PEERS_DIR`).
struct Peers(PathBuf);

impl Peers {
    fn everything(&self) -> String {
        self.0
            .join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
            .display()
            .to_string()
    }
    fn python(&self) -> String {
        self.0.join("venv/bin/python").display().to_string()
    }
}

/// kaos-mcp's Python peer scripts.
fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kaos-mcp/tests/data")
        .join(name)
        .display()
        .to_string()
}

fn peers(test: &str) -> Option<Peers> {
    if std::env::var(INTEROP_ENV).as_deref() != Ok("1") {
        let line = format!(
            "kaos-cli MCP interop check `{test}` did NOT run ({INTEROP_ENV} is not 1): run \
             .ci/ensure-mcp-peers, then {INTEROP_ENV}=1 cargo test -p kaos-cli --test integration \
             mcp_interop (.ci/run does both).\n"
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        return None;
    }
    let dir = std::env::var_os("KAOS_MCP_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mcp-peers"));
    let peers = Peers(dir);
    for needed in [peers.everything(), peers.python()] {
        assert!(
            Path::new(&needed).exists(),
            "{INTEROP_ENV}=1 asks for the MCP interop tests but {needed} is missing: run \
             .ci/ensure-mcp-peers."
        );
    }
    Some(peers)
}

/// A child killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `pipe` until a line `pick` maps to `Some` (then keeps draining it in the background).
fn wait_for_line<T: Send + 'static>(
    pipe: impl std::io::Read + Send + 'static,
    pick: impl Fn(&str) -> Option<T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut tx = Some(tx);
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = pick(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Ok(found));
            }
            seen.push(line);
        }
        if let Some(tx) = tx {
            let _ = tx.send(Err(seen));
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(Ok(found)) => found,
        Ok(Err(seen)) => panic!("the peer closed its output first: {seen:?}"),
        Err(e) => panic!("the peer printed nothing expected: {e}"),
    }
}

/// `kaos run` of `agent.toml` on a script that calls `tool` with `args`, exporting spans to
/// a local collector (MCP calls carry `traceparent` when tracing is on) in trace `CALLER`;
/// returns the tool call's closing span event.
fn run_agent(dir: &TempDir, servers: &str, tool: &str, args: Value) -> Value {
    dir.write(
        "replies.json",
        &json!([
            "{\"intent\":\"tool_use\",\"confidence\":0.9,\"reasoning\":\"use the server\"}",
            {"tool_calls": [{"name": tool, "arguments": args}]},
            "Done."
        ])
        .to_string(),
    );
    dir.write(
        "agent.toml",
        &format!("name = \"interop\"\nmodel = \"script:replies.json\"\n\n{servers}"),
    );
    let (otlp, _received) = otlp_receiver();
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--agent",
            "agent.toml",
            "--ephemeral",
            "--json",
            "--otlp",
            &otlp,
            "--traceparent",
            CALLER,
            "Use the server.",
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
        .unwrap_or_else(|| panic!("no tool call: {}", text(&out.stdout)))
        .clone();
    println!("tool call: {}", end["kind"]["attributes"]);
    end
}

/// The `traceparent` a server received continues the run's trace under a new span.
fn assert_in_callers_trace(traceparent: &str) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], TRACE, "{traceparent}");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "a child span, not the caller's"
    );
}

#[test]
fn kaos_run_uses_server_everything_over_stdio() {
    let Some(peers) = peers("kaos_run_uses_server_everything_over_stdio") else {
        return;
    };
    let dir = TempDir::new("interop-everything");
    let wire = dir.path().join("wire.jsonl");
    let servers = format!(
        "[[mcp_servers]]\nname = \"everything\"\ncommand = [\"sh\", \"-c\", {cmd:?}, {wire:?}, \"node\", {index:?}]\ntools = [\"echo\", \"get-*\"]\ntimeout_ms = 30000\n",
        cmd = r#"tee -a "$0" | exec "$1" "$2" stdio"#,
        wire = wire.display().to_string(),
        index = peers.everything(),
    );
    let end = run_agent(
        &dir,
        &servers,
        "everything.echo",
        json!({"message": "hello from kaos run"}),
    );
    let attrs = &end["kind"]["attributes"];
    assert_eq!(attrs["is_error"], false, "{attrs}");
    assert_eq!(attrs["result_summary"], "Echo: hello from kaos run");
    assert_eq!(attrs["network.transport"], "pipe");
    assert_eq!(attrs["mcp.method.name"], "tools/call");
    let received = std::fs::read_to_string(&wire).unwrap();
    let call: Value = received
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|m| m["method"] == "tools/call")
        .unwrap_or_else(|| panic!("no tools/call on the wire: {received}"));
    println!("server-everything received: {call}");
    assert_eq!(
        call["id"].to_string(),
        attrs["jsonrpc.request.id"].as_str().unwrap()
    );
    assert_in_callers_trace(call["params"]["_meta"]["traceparent"].as_str().unwrap());
}

#[test]
fn kaos_run_uses_server_everything_over_streamable_http() {
    let Some(peers) = peers("kaos_run_uses_server_everything_over_streamable_http") else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("node")
        .args([peers.everything().as_str(), "streamableHttp"])
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _server = Running(child);
    let ready = format!("listening on port {port}");
    wait_for_line(stderr, move |l| l.contains(&ready).then_some(()));

    let dir = TempDir::new("interop-everything-http");
    let servers = format!(
        "[[mcp_servers]]\nname = \"everything\"\nurl = \"http://127.0.0.1:{port}/mcp\"\ntimeout_ms = 30000\n"
    );
    let end = run_agent(
        &dir,
        &servers,
        "everything.get-sum",
        json!({"a": 2, "b": 40}),
    );
    let attrs = &end["kind"]["attributes"];
    assert_eq!(attrs["is_error"], false, "{attrs}");
    assert_eq!(attrs["result_summary"], "The sum of 2 and 40 is 42.");
    assert_eq!(attrs["network.transport"], "tcp");
    assert!(
        !attrs["mcp.session.id"].as_str().unwrap().is_empty(),
        "{attrs}"
    );
}

#[test]
fn kaos_run_uses_a_python_mcpserver() {
    let Some(peers) = peers("kaos_run_uses_a_python_mcpserver") else {
        return;
    };
    let dir = TempDir::new("interop-python-server");
    let log = dir.path().join("calls.jsonl");
    let servers = format!(
        "[[mcp_servers]]\nname = \"py\"\ncommand = [{python:?}, {server:?}]\nenv = {{ KAOS_MCP_INTEROP_LOG = {log:?} }}\ntimeout_ms = 30000\n",
        python = peers.python(),
        server = script("interop_server.py"),
        log = log.display().to_string(),
    );
    let end = run_agent(&dir, &servers, "py.shout", json!({"text": "quiet please"}));
    let attrs = &end["kind"]["attributes"];
    assert_eq!(attrs["is_error"], false, "{attrs}");
    // The SDK also returns `{"result": "QUIET PLEASE"}` as structured content: said once.
    assert_eq!(attrs["result_summary"], "QUIET PLEASE");
    let logged: Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    println!("the Python server received: {logged}");
    assert_in_callers_trace(logged["traceparent"].as_str().unwrap());
}

const HELPER: &str =
    "name = \"helper\"\ninstructions = \"Answers questions about leases.\"\nmodel = \"offline\"\n";

/// Runs the Python client (`interop_client.py`) with `transport` arguments; returns its
/// report.
fn python_client(peers: &Peers, dir: &TempDir, transport: &[&str]) -> (Output, Value) {
    let report = dir.path().join("report.json");
    let out = Command::new(peers.python())
        .arg(script("interop_client.py"))
        .args([
            "--tool",
            "helper",
            "--message",
            "Summarize the lease.",
            "--traceparent",
            CALLER,
            "--report",
        ])
        .arg(&report)
        .args(transport)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("no report ({e}); client stderr: {}", text(&out.stderr))),
    )
    .unwrap();
    println!("python client report: {report}");
    (out, report)
}

/// The answer the Python client got from `kaos mcp serve`, and the caller's trace in the
/// served turn's audit trail.
fn check_served(out: &Output, report: &Value, audit: &Path) {
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["helper"]);
    assert_ne!(report["call"]["isError"], json!(true), "{report}");
    assert!(
        report["text"].as_str().unwrap().contains("lease"),
        "{report}"
    );
    let s = &report["call"]["structuredContent"];
    assert!(s["run_id"].as_str().unwrap().starts_with("run_"), "{s}");
    let bad = report["bad_call"]["error"].as_str().unwrap_or_default();
    assert!(bad.contains("message"), "{}", report["bad_call"]);
    // The served turn's audit trail (named after the session, tenant-scoped over HTTP)
    // holds the caller's traceparent.
    let run_id = s["run_id"].as_str().unwrap();
    let trail = read_tree(audit);
    assert!(
        trail.contains(run_id),
        "no trail of {run_id} in {}",
        audit.display()
    );
    assert!(trail.contains(CALLER), "{trail}");
}

/// Every file under `dir`, concatenated.
fn read_tree(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.push_str(&read_tree(&path));
        } else {
            all.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    all
}

#[test]
fn python_client_drives_kaos_mcp_serve_over_stdio() {
    let Some(peers) = peers("python_client_drives_kaos_mcp_serve_over_stdio") else {
        return;
    };
    let dir = TempDir::new("interop-python-stdio");
    let agent = dir.write("helper.toml", HELPER);
    let audit = dir.path().join("audit");
    let (agent, audit_s) = (agent.display().to_string(), audit.display().to_string());
    let (out, report) = python_client(
        &peers,
        &dir,
        &[
            "--",
            KAOS,
            "mcp",
            "serve",
            "--ephemeral",
            "--agent",
            &agent,
            "--audit",
            &audit_s,
        ],
    );
    check_served(&out, &report, &audit);
}

#[test]
fn python_client_drives_kaos_mcp_serve_over_streamable_http() {
    let Some(peers) = peers("python_client_drives_kaos_mcp_serve_over_streamable_http") else {
        return;
    };
    let dir = TempDir::new("interop-python-http");
    let agent = dir.write("helper.toml", HELPER);
    let audit = dir.path().join("audit");
    let token = "interop-token-for-kaos-mcp-serve";
    let mut child = Command::new(KAOS)
        .args(["mcp", "serve", "--ephemeral", "--agent"])
        .arg(&agent)
        .arg("--audit")
        .arg(&audit)
        .args(["--http", "127.0.0.1:0"])
        .env("KAOS_API_TOKENS", token)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _server = Running(child);
    // "kaos: serving MCP over HTTP at http://127.0.0.1:PORT/mcp: helper"
    let url = wait_for_line(stderr, |l| {
        l.split(" at ")
            .nth(1)
            .and_then(|rest| rest.split(": ").next())
            .map(str::to_string)
    });
    let (out, report) = python_client(&peers, &dir, &["--url", &url, "--token", token]);
    check_served(&out, &report, &audit);
}
