//! Observability of `kaos run`: OTLP export (and a collector that is down), trace
//! continuation into command tools, the audit trail and its replay, JSON logs and metrics.

use std::process::{Command, Stdio};

use super::{KAOS, TempDir, events, kaos, text};

/// A local OTLP/HTTP collector: answers 200 to every request and reports `(path, body)` for
/// each.
pub(crate) fn otlp_receiver() -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    otlp_receiver_answering(|_| "200 OK")
}

/// [`otlp_receiver`] answering each path with the status `status(path)` gives.
fn otlp_receiver_answering(
    status: fn(&str) -> &'static str,
) -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let answer = format!(
                "HTTP/1.1 {}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                status(&path)
            );
            let _ = stream.write_all(answer.as_bytes());
            let _ = tx.send((path, body));
        }
    });
    (url, rx)
}

#[test]
fn spans_go_to_an_otlp_collector_and_audit_trails_replay_there() {
    let dir = TempDir::new("otlp");
    let (url, received) = otlp_receiver();
    let trail = dir.path().join("trail");
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--ephemeral",
            "--session",
            "traced",
            "--otlp",
            &url,
            "--audit",
            trail.to_str().unwrap(),
            "Summarize the lease.",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("exported 4 span(s)"),
        "{}",
        text(&out.stderr)
    );
    let (path, body) = received
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(path, "/v1/traces");
    assert!(body.len() > 100, "an ExportTraceServiceRequest body");
    // Metrics go to the same collector, after the spans (the exporter shuts down first).
    let (path, body) = received
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(path, "/v1/metrics");
    assert!(body.len() > 100, "an ExportMetricsServiceRequest body");

    let file = trail.join("traced.jsonl");
    let out = kaos(
        dir.path(),
        &["audit", "export", file.to_str().unwrap(), "--otlp", &url],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("with their recorded times"),
        "{}",
        text(&out.stderr)
    );
    let (path, _) = received
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(path, "/v1/traces");
}

#[test]
fn command_tools_continue_the_trace_with_traceparent() {
    let dir = TempDir::new("traceparent");
    let (url, _received) = otlp_receiver();
    dir.write(
        "agent.toml",
        r#"name = "tracer"
model = "script:replies.json"
[[tools]]
name = "show"
description = "Prints its TRACEPARENT and TRACESTATE."
command = ["sh", "-c", "cat >/dev/null; printf '%s|%s' \"$TRACEPARENT\" \"$TRACESTATE\""]
read_only = true
parameters = { type = "object", properties = {} }
"#,
    );
    dir.write(
        "replies.json",
        r#"["{\"intent\":\"tool_use\",\"confidence\":0.9}",
            {"tool_calls":[{"name":"show","arguments":{}}]},
            "done"]"#,
    );
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let out = Command::new(KAOS)
        .args([
            "run",
            "--agent",
            "agent.toml",
            "--ephemeral",
            "--json",
            "--otlp",
            &url,
            "--traceparent",
            caller,
            "go",
        ])
        .current_dir(dir.path())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("TRACEPARENT")
        .env("TRACESTATE", "vendor=abc")
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = events(&out.stdout);
    let tool_end = events
        .iter()
        .find(|e| e["kind"]["name"] == "tool.show" && e["kind"]["phase"] == "complete")
        .expect("a completed tool.show span");
    let seen = tool_end["kind"]["attributes"]["result_summary"]
        .as_str()
        .unwrap();
    // The caller's tracestate travels with its trace, into the tool's process too.
    let (seen, state) = seen.split_once('|').unwrap();
    assert_eq!(state, "vendor=abc");
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {seen:?}");
    assert_eq!(
        parts[1], "0af7651916cd43dd8448eb211c80319c",
        "the caller's trace continues into the tool"
    );
    assert_ne!(
        parts[2], "b7ad6b7169203331",
        "the parent is the tool call's own span"
    );
}

#[test]
fn a_collector_that_is_down_costs_a_warning_not_the_run() {
    let dir = TempDir::new("otlp-down");
    // Bind and drop a listener so the port is closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let trail = dir.path().join("trail");
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--ephemeral",
            "--session",
            "down",
            "--otlp",
            &url,
            "--audit",
            trail.to_str().unwrap(),
            "hi",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("were not exported"),
        "{}",
        text(&out.stderr)
    );
    // Replaying the trail to the same dead collector is a failed run (1), not a usage error.
    let file = trail.join("down.jsonl");
    let out = kaos(
        dir.path(),
        &["audit", "export", file.to_str().unwrap(), "--otlp", &url],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn a_backend_without_metrics_gets_its_refusal_named_not_a_timeout() {
    // Phoenix and Jaeger take traces over OTLP but answer 405 or 404 on /v1/metrics.
    let dir = TempDir::new("otlp-traces-only");
    let (url, received) = otlp_receiver_answering(|path| match path {
        "/v1/metrics" => "405 Method Not Allowed",
        _ => "200 OK",
    });
    let out = kaos(
        dir.path(),
        &["run", "--ephemeral", "--otlp", &url, "Summarize the lease."],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("exported 4 span(s)"), "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("metrics were not exported"))
        .unwrap_or_else(|| panic!("a metrics warning: {stderr}"));
    assert!(warning.contains("405"), "the collector's status: {warning}");
    assert!(!warning.contains("within"), "not a timeout: {warning}");
    assert!(warning.contains("OTEL_METRICS_EXPORTER=none"), "{warning}");
    let paths: Vec<String> = received.try_iter().map(|(path, _)| path).collect();
    assert!(paths.contains(&"/v1/metrics".to_string()), "{paths:?}");
}

#[test]
fn audit_trail_is_written_redacted_and_replayable() {
    let dir = TempDir::new("audit");
    let trail = dir.path().join("trail");
    let trail_s = trail.to_str().unwrap();
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--ephemeral",
            "--session",
            "audited",
            "--audit",
            trail_s,
            "My key is sk-ant-api03-CANARYCANARYCANARYCANARY01, summarize the lease.",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let file = trail.join("audited.jsonl");
    let content = std::fs::read_to_string(&file).unwrap();
    assert!(content.lines().count() > 3);
    assert!(
        !content.contains("CANARYCANARY"),
        "the key must be redacted in the audit file"
    );
    let out = kaos(dir.path(), &["audit", "show", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("agent.turn")
            && shown.contains("agent.intent_classification")
            && shown.contains("chat "),
        "{shown}"
    );
    assert!(
        shown.contains("redacted before writing: anthropic_key="),
        "{shown}"
    );
    let html = dir.path().join("trail.html");
    let out = kaos(
        dir.path(),
        &[
            "audit",
            "html",
            file.to_str().unwrap(),
            "-o",
            html.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&html).unwrap().contains("<html"));
    let out = kaos(dir.path(), &["audit", "show", "missing.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing.jsonl"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn json_logs_carry_the_turns_trace_id_and_metrics_are_exported() {
    let dir = TempDir::new("logs");
    let out = Command::new(KAOS)
        .args([
            "run",
            "--ephemeral",
            "-vv",
            "--log-format",
            "json",
            "Summarize the lease.",
        ])
        .current_dir(dir.path())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("TRACEPARENT")
        .env_remove("RUST_LOG")
        .env("OTEL_TRACES_EXPORTER", "console")
        .env("OTEL_METRICS_EXPORTER", "console")
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // The console exporter prints `span agent.turn trace=<id> ...`.
    let turn_line = stdout
        .lines()
        .find(|l| l.starts_with("span agent.turn "))
        .unwrap_or_else(|| panic!("no agent.turn span on stdout:\n{stdout}"));
    let trace_id = turn_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("trace="))
        .unwrap();
    // Every stderr line is a JSON object: the CLI's own notes ("session: …") included.
    let logs: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let start = logs
        .iter()
        .find(|l| l["fields"]["event"] == "span(turn,start)")
        .unwrap_or_else(|| panic!("no turn start line in {}", text(&out.stderr)));
    assert_eq!(start["trace_id"], trace_id, "{start}");
    assert_eq!(start["span_id"].as_str().unwrap().len(), 16);
    // Every line about the turn carries its trace: the ends of its spans (each with the ended
    // span's own id, not its parent's), the usage and the summary (with the turn's ids).
    let turn_span = turn_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("id="))
        .unwrap();
    for event in [
        "span(llm_call,complete)",
        "usage_observed",
        "intent_classified",
        "turn_summary",
    ] {
        let lines: Vec<_> = logs
            .iter()
            .filter(|l| l["fields"]["event"] == event)
            .collect();
        assert!(
            !lines.is_empty(),
            "no {event} line in {}",
            text(&out.stderr)
        );
        for line in lines {
            assert_eq!(line["trace_id"], trace_id, "{line}");
            if event == "span(llm_call,complete)" {
                assert_ne!(line["span_id"], turn_span, "{line}");
            } else {
                assert_eq!(line["span_id"], turn_span, "{line}");
            }
        }
    }
    assert!(
        start["fields"]["run_id"]
            .as_str()
            .unwrap()
            .starts_with("run_")
    );
    assert!(
        stdout.contains("[metric] gen_ai.client.token.usage")
            && stdout.contains("gen_ai.token.type=input"),
        "{stdout}"
    );
    assert!(stdout.contains("[metric] kaos.turn.duration"), "{stdout}");
}

/// Runs `kaos run` offline with `vars` set (and the OTLP variables of the test's own
/// environment removed).
fn run_with_env(dir: &TempDir, vars: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(KAOS);
    cmd.args(["run", "--ephemeral", "Summarize the lease."])
        .current_dir(dir.path())
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .stdin(Stdio::null());
    for k in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "TRACEPARENT",
        "RUST_LOG",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Settings meant for another SDK (as in a shared environment) cost a warning, not the run:
/// the SDK specification says to ignore a value that is not understood, and to read a blank
/// one as unset.
#[test]
fn otel_settings_kaos_does_not_know_are_ignored_with_a_warning() {
    let dir = TempDir::new("otel-unknown");
    let out = run_with_env(
        &dir,
        &[
            ("OTEL_TRACES_EXPORTER", "console"),
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_METRIC_EXPORT_INTERVAL", ""),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("OTEL_METRICS_EXPORTER") && stderr.contains("prometheus"),
        "{stderr}"
    );
    assert!(stderr.contains("jaeger_remote"), "{stderr}");
    assert!(
        text(&out.stdout).contains("span agent.turn "),
        "{}",
        text(&out.stdout)
    );
}

/// Spans on the console with no collector named: the metrics print there too, rather than
/// failing against a collector at localhost that nobody asked for.
#[test]
fn console_spans_bring_console_metrics_not_a_dead_collector() {
    let dir = TempDir::new("otel-console");
    let out = run_with_env(&dir, &[("OTEL_TRACES_EXPORTER", "console")]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("were not exported"), "{stderr}");
    assert!(stdout.contains("[metric] kaos.turn.duration"), "{stdout}");
}

/// The resource: `service.name` from `OTEL_RESOURCE_ATTRIBUTES` when `OTEL_SERVICE_NAME` is
/// not set (the specification's order; it used to be overwritten with `kaos`), the other
/// attributes kept, and a `service.instance.id` so two processes are two series.
#[test]
fn the_resource_follows_otel_resource_attributes() {
    let dir = TempDir::new("otel-resource");
    let (url, received) = otlp_receiver();
    let out = run_with_env(
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-resattrs,deployment.environment.name=dev",
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let contains =
        |body: &[u8], needle: &str| body.windows(needle.len()).any(|w| w == needle.as_bytes());
    for _ in 0..2 {
        let (path, body) = received
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap();
        assert!(contains(&body, "from-resattrs"), "{path}: no service.name");
        assert!(contains(&body, "deployment.environment.name"), "{path}");
        assert!(contains(&body, "service.instance.id"), "{path}");
    }
}

/// A capture setting kaos cannot use is said once (every hook the process builds reads it),
/// and `EVENT_ONLY`, which asks for content in events kaos does not emit, is said too.
#[test]
fn capture_settings_kaos_cannot_use_are_said_once() {
    let dir = TempDir::new("capture-env");
    let var = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";
    let out = run_with_env(&dir, &[("OTEL_TRACES_EXPORTER", "console"), (var, "bogus")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.matches("\"bogus\"").count(), 1, "{stderr}");
    let out = run_with_env(
        &dir,
        &[("OTEL_TRACES_EXPORTER", "console"), (var, "EVENT_ONLY")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("captures nothing").count(), 1, "{stderr}");
}

/// When kaos exports spans, a model request carries the `chat` span's `traceparent` (a
/// gateway that continues traces nests under it): the provider here records the request's
/// headers and refuses it, and a scripted fallback answers.
#[test]
fn model_requests_carry_the_chat_spans_traceparent() {
    let dir = TempDir::new("provider-traceparent");
    let (url, requests) = super::run::unauthorized_provider_recording();
    dir.write(
        "agent.toml",
        &format!(
            "model = \"openai-compatible:gw@{url}\"\n[fallback]\nmodels = [\"script:backup.json\"]\n"
        ),
    );
    dir.write(
        "backup.json",
        r#"["{\"intent\":\"respond\"}", "{\"response\":\"from the backup\"}"]"#,
    );
    let mut cmd = Command::new(KAOS);
    cmd.args(["run", "--agent", "agent.toml", "--ephemeral", "hello"])
        .current_dir(dir.path())
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .env("OTEL_TRACES_EXPORTER", "console")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("TRACEPARENT")
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let trace = stdout
        .lines()
        .find(|l| l.starts_with("span agent.turn "))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("trace=")))
        .unwrap_or_else(|| panic!("no agent.turn span:\n{stdout}"))
        .to_string();
    let request = requests
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let traceparent = request
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("traceparent:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no traceparent in:\n{request}"));
    assert!(
        traceparent.starts_with(&format!("00-{trace}-")),
        "{traceparent} is not in trace {trace}"
    );
}

/// The agent span names the model as its chat spans do (`llama3`), not by the spec, whose
/// URL may carry credentials (`openai-compatible:llama3@http://user:pass@host/v1`).
#[test]
fn the_agent_span_names_the_model_not_the_spec_with_its_url() {
    let dir = TempDir::new("model-spec-url");
    let (url, _requests) = super::run::unauthorized_provider_recording();
    let with_password = url.replacen("http://", "http://user:s3cretpw@", 1);
    dir.write(
        "agent.toml",
        &format!(
            "model = \"openai-compatible:llama3@{with_password}\"\n[fallback]\nmodels = [\"script:backup.json\"]\n"
        ),
    );
    dir.write(
        "backup.json",
        r#"["{\"intent\":\"respond\"}", "{\"response\":\"from the backup\"}"]"#,
    );
    let out = Command::new(KAOS)
        .args(["run", "--agent", "agent.toml", "--ephemeral", "hello"])
        .current_dir(dir.path())
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .env("OTEL_TRACES_EXPORTER", "console")
        .env("OTEL_METRICS_EXPORTER", "console")
        .env(
            "OTEL_SEMCONV_STABILITY_OPT_IN",
            "gen_ai_latest_experimental",
        )
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("s3cretpw"), "{stdout}");
    let turn = stdout
        .lines()
        .find(|l| l.starts_with("span agent.turn "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(turn.contains("gen_ai.request.model=llama3"), "{turn}");
}

/// `KAOS_SPAN_NAMING=genai`: the exporter, the terminal tree and the audit trail's tree and
/// page all name spans the GenAI way, alike (the CLI could not switch it before).
#[test]
fn genai_span_naming_reaches_the_trace_the_tree_and_the_audit_views() {
    let dir = TempDir::new("genai-naming");
    let trail = dir.path().join("trail");
    let out = Command::new(KAOS)
        .args(["run", "--ephemeral", "--trace", "--session", "g", "--audit"])
        .arg(&trail)
        .arg("Summarize the lease.")
        .current_dir(dir.path())
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .env("KAOS_SPAN_NAMING", "genai")
        .env("OTEL_TRACES_EXPORTER", "console")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("span invoke_agent assistant "), "{stdout}");
    assert!(stderr.contains("✓ invoke_agent assistant"), "{stderr}");
    let file = trail.join("g.jsonl");
    let show = Command::new(KAOS)
        .args(["audit", "show", file.to_str().unwrap()])
        .current_dir(dir.path())
        .env("KAOS_SPAN_NAMING", "genai")
        .output()
        .unwrap();
    assert!(
        text(&show.stdout).contains("invoke_agent assistant"),
        "{}",
        text(&show.stdout)
    );
    let page = dir.path().join("g.html");
    let html = Command::new(KAOS)
        .args([
            "audit",
            "html",
            file.to_str().unwrap(),
            "-o",
            page.to_str().unwrap(),
        ])
        .current_dir(dir.path())
        .env("KAOS_SPAN_NAMING", "genai")
        .output()
        .unwrap();
    assert_eq!(html.status.code(), Some(0), "{}", text(&html.stderr));
    assert!(
        std::fs::read_to_string(&page)
            .unwrap()
            .contains("invoke_agent assistant")
    );
}
