//! `kaos serve` as a process: SIGTERM drains with a long turn in flight, then exits 0; the
//! JSON access log line carries the server span's ids where log backends look for them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::{KAOS, TempDir};

/// A generous bound only so a broken build fails instead of hanging CI.
const BOUND: Duration = Duration::from_secs(300);

fn request(addr: &str, method: &str, path: &str, body: &str) -> TcpStream {
    request_with(addr, method, path, "", body)
}

/// [`request`] with extra header lines (`name: value\r\n` each).
fn request_with(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// A child's stderr lines as they come, and those seen so far.
struct StderrLines {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl StderrLines {
    /// Reads `stderr` line by line on a thread of its own.
    fn follow(stderr: std::process::ChildStderr) -> Self {
        let (tx, lines) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line `pred` accepts (the lines before it are kept in `seen`).
    fn wait(&mut self, pred: &dyn Fn(&str) -> bool) -> String {
        loop {
            let Ok(line) = self.lines.recv_timeout(BOUND) else {
                panic!("kaos serve went quiet:\n{}", self.seen.join("\n"));
            };
            self.seen.push(line.clone());
            if pred(&line) {
                return line;
            }
        }
    }
}

/// The `host:port` of `kaos serve`'s "listening on http://…" line.
fn address_in(listening: &str) -> String {
    listening
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn status_of(addr: &str, path: &str) -> (u16, String) {
    status_with(addr, path, "")
}

/// [`status_of`] with extra header lines.
fn status_with(addr: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = request_with(addr, "GET", path, headers, "");
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, text)
}

#[test]
fn sigterm_drains_a_long_turn_then_exits_zero() {
    let dir = TempDir::new("serve-drain");
    let started = dir.path().join("started");
    let release = dir.path().join("release");
    for fifo in [&started, &release] {
        assert!(Command::new("mkfifo").arg(fifo).status().unwrap().success());
    }
    dir.write(
        "agent.toml",
        &format!(
            r#"
name = "ops"
model = "script:replies.json"
[[tools]]
name = "long"
read_only = true
command = ["sh", "-c", "echo started > '{}'; cat '{}' > /dev/null; echo finished"]
"#,
            started.display(),
            release.display()
        ),
    );
    dir.write(
        "replies.json",
        r#"["{\"intent\":\"tool_use\"}", {"tool_calls":[{"name":"long","arguments":{}}]}, "all done"]"#,
    );
    let mut child = Command::new(KAOS)
        .args([
            "serve",
            "--agent",
            "agent.toml",
            "--ephemeral",
            "--insecure-localhost",
            "--bind",
            "127.0.0.1:0",
            "--audit",
            "audit",
        ])
        .current_dir(dir.path())
        .env_remove("KAOS_API_TOKENS")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_TRACES_EXPORTER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stderr lines, as they come: the listening address, then the access log.
    let mut err = StderrLines::follow(child.stderr.take().unwrap());
    let listening = err.wait(&|l| l.contains("listening on http://"));
    let addr = address_in(&listening);

    // The long turn, streamed.
    let mut turn = request(
        &addr,
        "POST",
        "/v1/sessions/s1/messages",
        r#"{"message": "run the long job"}"#,
    );
    let (body_tx, body) = mpsc::channel();
    let mut reader = turn.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = reader.read_to_string(&mut text);
        let _ = body_tx.send(text);
    });
    let (started_tx, started_rx) = mpsc::channel();
    let started_path = started.clone();
    std::thread::spawn(move || {
        let _ = started_tx.send(std::fs::read_to_string(started_path));
    });
    let said = started_rx.recv_timeout(BOUND).unwrap().unwrap();
    assert_eq!(said.trim(), "started");

    // SIGTERM with the turn in flight: the server drains.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    err.wait(&|l| l.contains("draining"));
    let (code, text) = status_of(&addr, "/readyz");
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("draining"));
    let mut refused = request(
        &addr,
        "POST",
        "/v1/sessions/s2/messages",
        r#"{"message": "hi"}"#,
    );
    let mut answer = String::new();
    refused.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_lowercase().contains("retry-after"));

    // Let the tool finish: the turn completes and the stream ends with its summary.
    std::fs::write(&release, "go\n").unwrap();
    let streamed = body.recv_timeout(BOUND).unwrap();
    drop(turn.flush());
    assert!(streamed.starts_with("HTTP/1.1 200"), "{streamed}");
    assert!(streamed.contains("event: turn_summary"), "{streamed}");
    assert!(streamed.contains("all done"));

    let status = child.wait().unwrap();
    let rest: Vec<String> = err.lines.iter().collect();
    err.seen.extend(rest);
    let all = err.seen.join("\n");
    assert_eq!(status.code(), Some(0), "{all}");
    assert!(
        all.contains("stopped (1 turn(s) in flight at the signal, 0 cancelled"),
        "{all}"
    );
    assert!(
        all.contains("route=/v1/sessions/{session_id}/messages status=200"),
        "{all}"
    );
    assert!(
        !all.contains("run the long job"),
        "the access log has no bodies"
    );
    // The audit trail was flushed with the finished turn.
    let trail = std::fs::read_to_string(dir.path().join("audit").join("local.s1.jsonl")).unwrap();
    assert!(trail.contains("turn_summary"));
}

#[test]
fn serve_refuses_to_start_without_a_token() {
    let dir = TempDir::new("serve-notoken");
    let out = Command::new(KAOS)
        .args(["serve", "--ephemeral", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("KAOS_API_TOKENS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KAOS_API_TOKENS"));
    let out = Command::new(KAOS)
        .args([
            "serve",
            "--ephemeral",
            "--insecure-localhost",
            "--bind",
            "0.0.0.0:0",
        ])
        .current_dir(dir.path())
        .env_remove("KAOS_API_TOKENS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// `kaos serve --log-format json` in an empty dir, one `GET /healthz` (the raw response),
/// then SIGTERM: (the raw response, stdout, the stderr lines). `tracing` sets
/// `OTEL_TRACES_EXPORTER=console`; otherwise no `OTEL_*` variable is passed on.
fn one_request_logged_as_json(tracing: bool) -> (String, String, Vec<String>) {
    one_request_logged_as_json_from(tracing, None)
}

/// [`one_request_logged_as_json`], the request carrying `traceparent` when given.
fn one_request_logged_as_json_from(
    tracing: bool,
    traceparent: Option<&str>,
) -> (String, String, Vec<String>) {
    let dir = TempDir::new("serve-access-log");
    let mut command = Command::new(KAOS);
    command
        .args([
            "serve",
            "--insecure-localhost",
            "--ephemeral",
            "--bind",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .current_dir(dir.path())
        .env_remove("KAOS_API_TOKENS")
        .env_remove("RUST_LOG")
        .env_remove("TRACEPARENT")
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
        command.env_remove(name);
    }
    if tracing {
        command.env("OTEL_TRACES_EXPORTER", "console");
    }
    let mut child = command.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let printed = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let mut err = StderrLines::follow(child.stderr.take().unwrap());
    let listening = err.wait(&|l| l.contains("listening on http://"));
    let addr = address_in(&listening);
    let headers = traceparent.map_or(String::new(), |tp| format!("traceparent: {tp}\r\n"));
    let (code, response) = status_with(&addr, "/healthz", &headers);
    assert_eq!(code, 200, "{response}");
    // The line is written when the response body ends, maybe just after the client saw it.
    err.wait(&|l| l.contains("kaos_server::access"));
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    let stdout = printed.join().unwrap();
    let StderrLines { lines, mut seen } = err;
    seen.extend(lines.try_iter());
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    (response, stdout, seen)
}

/// The access log line among the stderr lines, parsed.
fn access_line(stderr: &[String]) -> Value {
    let all = stderr.join("\n");
    let line = stderr
        .iter()
        .find(|l| l.contains("kaos_server::access"))
        .unwrap_or_else(|| panic!("no access log line in\n{all}"));
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["target"], "kaos_server::access", "{line}");
    assert_eq!(v["fields"]["route"], "/healthz", "{line}");
    assert_eq!(v["fields"]["status"], 200, "{line}");
    v
}

/// Whether `key` names a member of any object in `v`, at any depth.
fn has_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(map) => map.contains_key(key) || map.values().any(|v| has_key(v, key)),
        Value::Array(items) => items.iter().any(|v| has_key(v, key)),
        _ => false,
    }
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn the_json_access_log_line_has_the_server_spans_ids_at_its_top_level() {
    let (response, stdout, stderr) = one_request_logged_as_json(true);
    let line = access_line(&stderr);
    let trace_id = line["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{line}"));
    let span_id = line["span_id"].as_str().unwrap_or_else(|| panic!("{line}"));
    assert!(lower_hex(trace_id, 32), "{line}");
    assert!(lower_hex(span_id, 16), "{line}");
    // Once, at the top: not repeated among the event's own fields.
    assert!(!has_key(&line["fields"], "trace_id"), "{line}");
    // The console exporter prints `span GET /healthz trace=<id> id=<id> ...`.
    let span = stdout
        .lines()
        .find(|l| l.starts_with("span GET /healthz "))
        .unwrap_or_else(|| panic!("no server span on stdout:\n{stdout}"));
    let word = |prefix: &str| {
        span.split_whitespace()
            .find_map(|w| w.strip_prefix(prefix))
            .unwrap()
            .to_string()
    };
    assert_eq!(trace_id, word("trace="), "{span}");
    assert_eq!(span_id, word("id="), "{span}");
    // And the response named the same span.
    let header = response
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("traceresponse:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no traceresponse in\n{response}"));
    assert_eq!(header, format!("00-{trace_id}-{span_id}-01"), "{line}");
}

#[test]
fn without_tracing_the_json_access_log_line_has_no_trace_ids() {
    let (response, _, stderr) = one_request_logged_as_json(false);
    assert!(
        !response.to_ascii_lowercase().contains("traceresponse"),
        "{response}"
    );
    let line = access_line(&stderr);
    assert!(!has_key(&line, "trace_id"), "{line}");
    assert!(!has_key(&line, "span_id"), "{line}");
}

/// Without a tracer the server names no span of its own back (the caller's span id in a
/// `traceresponse` would claim a child that does not exist); the access line still carries
/// the caller's trace, which it belongs to.
#[test]
fn without_tracing_a_callers_traceparent_is_not_echoed_as_ours() {
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let (response, _, stderr) = one_request_logged_as_json_from(false, Some(&tp));
    let lower = response.to_ascii_lowercase();
    assert!(
        !lower.contains("traceresponse") && !lower.contains("traceparent"),
        "{response}"
    );
    let line = access_line(&stderr);
    assert_eq!(line["trace_id"], trace, "{line}");
}
