//! `kaos run` and friends: answers, JSON events, tools, permissions, errors, resume, sessions,
//! Ctrl-C, delegates, chat, bounded tool output, the circuit breaker and `[fallback]`.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::store::{ops_agent, pause};
use super::{KAOS, TempDir, assert_spans_closed, events, kaos, text};

const TOOL_AGENT: &str = r#"
name = "toolbox"
model = "script:replies.json"

[[tools]]
name = "answer"
description = "Returns the answer."
command = ["sh", "-c", "cat >/dev/null; echo 42"]
read_only = true
"#;

#[test]
fn offline_run_prints_an_answer_and_a_tree() {
    let dir = TempDir::new("offline");
    let out = kaos(
        dir.path(),
        &["run", "Summarize the lease.", "--ephemeral", "--trace"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("offline demo model"), "{stdout}");
    assert!(stdout.contains("lease"), "{stdout}");
    assert!(stderr.contains("turn"), "{stderr}");
    assert!(stderr.contains("intent_classification"), "{stderr}");
    assert!(
        !dir.path().join("xdg").exists(),
        "--ephemeral wrote to disk"
    );
}

#[test]
fn json_output_is_one_complete_turn() {
    let dir = TempDir::new("json");
    let out = kaos(dir.path(), &["run", "--json", "--ephemeral", "Hello there"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = events(&out.stdout);
    let first = &events[0]["kind"];
    assert_eq!(
        (
            first["type"].as_str(),
            first["subject"].as_str(),
            first["phase"].as_str()
        ),
        (Some("span"), Some("turn"), Some("start"))
    );
    assert_eq!(events.last().unwrap()["kind"]["type"], "turn_summary");
    assert_spans_closed(&events);
}

#[test]
fn stdin_message_and_default_state_dir() {
    let dir = TempDir::new("stdin");
    let mut child = Command::new(KAOS)
        .args(["run", "-q"])
        .current_dir(dir.path())
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Summarize the memo.")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("memo"));
    assert!(dir.path().join("xdg/kaos/sessions").is_dir());
}

#[test]
fn scripted_tool_turn_runs_the_command() {
    let dir = TempDir::new("tool");
    dir.write("agent.toml", TOOL_AGENT);
    dir.write(
        "replies.json",
        r#"["{\"intent\":\"tool_use\",\"confidence\":0.9}",
            {"tool_calls":[{"name":"answer","arguments":{"q":"life"}}]},
            "The tool said 42."]"#,
    );
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--agent",
            "agent.toml",
            "--ephemeral",
            "--trace",
            "--json",
            "Ask the tool",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = events(&out.stdout);
    assert_spans_closed(&events);
    let tool_end = events
        .iter()
        .find(|e| e["kind"]["name"] == "tool.answer" && e["kind"]["phase"] == "complete")
        .expect("a completed tool.answer span");
    assert_eq!(
        tool_end["kind"]["attributes"]["is_error"], false,
        "{tool_end}"
    );
    let summary = &events.last().unwrap()["kind"];
    assert_eq!(summary["text"], "The tool said 42.");
    assert_eq!(summary["tool_calls"][0]["tool_name"], "answer");
    assert!(
        text(&out.stderr).contains("agent.tool_call.answer"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn deny_rule_stops_the_command() {
    let dir = TempDir::new("deny");
    dir.write(
        "agent.toml",
        r#"
model = "script:replies.json"
[[tools]]
name = "touch"
command = ["sh", "-c", "touch marker"]
[[permissions]]
pattern = "touch"
action = "deny"
"#,
    );
    dir.write(
        "replies.json",
        r#"["{\"intent\":\"tool_use\"}", {"tool_calls":[{"name":"touch","arguments":{}}]}, "It was denied."]"#,
    );
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--agent",
            "agent.toml",
            "--ephemeral",
            "--trace",
            "make the marker",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("permission_denied"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !dir.path().join("marker").exists(),
        "the denied command ran"
    );
}

#[test]
fn bad_toml_is_a_usage_error_naming_the_line() {
    let dir = TempDir::new("badtoml");
    dir.write("bad.toml", "name = \"a\"\n\nmodle = \"offline\"\n");
    let out = kaos(
        dir.path(),
        &["run", "--agent", "bad.toml", "--ephemeral", "hi"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.toml:3"), "{stderr}");
    assert!(stderr.contains("modle"), "{stderr}");

    dir.write("empty.toml", "[[tools]]\nname = \"t\"\ncommand = []\n");
    let out = kaos(
        dir.path(),
        &["run", "--agent", "empty.toml", "--ephemeral", "hi"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("empty.toml:3") && stderr.contains("tools[0].command"),
        "{stderr}"
    );
}

#[test]
fn unknown_model_spec_lists_the_accepted_forms() {
    let dir = TempDir::new("spec");
    let out = kaos(
        dir.path(),
        &["run", "--model", "nope:x", "--ephemeral", "hi"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for form in [
        "offline",
        "script:FILE.json",
        "anthropic:<model>",
        "openai-compatible",
    ] {
        assert!(stderr.contains(form), "{form} missing: {stderr}");
    }
}

#[test]
fn bad_script_json_names_file_and_line() {
    let dir = TempDir::new("badscript");
    dir.write("s.json", "[\n\"a\",\n}\n");
    let out = kaos(
        dir.path(),
        &["run", "--model", "script:s.json", "--ephemeral", "hi"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("s.json:3"), "{stderr}");
}

#[test]
fn exhausted_script_fails_the_turn_with_the_call_number() {
    let dir = TempDir::new("exhausted");
    dir.write("s.json", r#"["{\"intent\":\"respond\"}"]"#);
    let out = kaos(
        dir.path(),
        &["run", "--model", "script:s.json", "--ephemeral", "hi"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("s.json") && stderr.contains("call #2"),
        "{stderr}"
    );
}

#[test]
fn unknown_flags_are_usage_errors() {
    let dir = TempDir::new("wiring");
    let out = kaos(dir.path(), &["run", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--ephemeral",
            "--otlp-protocol",
            "carrier-pigeon",
            "hi",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_paused_run_is_approved_or_denied_with_kaos_resume() {
    let dir = TempDir::new("resume");
    let marker = dir.path().join("ran.txt");
    ops_agent(&dir, &marker, "");
    dir.write(
        "after.json",
        r#"["The report is gone.", "Understood, I left it."]"#,
    );
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let pause = |session: &str| pause(&dir, state, session);
    let resume = |run: &str, session: &str, extra: &[&str]| {
        let mut args = vec![
            "resume",
            run,
            "--agent",
            "ops.toml",
            "--model",
            "script:after.json",
            "--state-dir",
            state,
            "--session",
            session,
            "-q",
        ];
        args.extend_from_slice(extra);
        kaos(dir.path(), &args)
    };

    let run = pause("approve-me");
    assert!(!marker.exists(), "a paused tool has not run");
    let out = resume(&run, "approve-me", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "The report is gone.");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "once\n",
        "the approved call ran exactly once"
    );
    let again = resume(&run, "approve-me", &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("run_already_resumed"),
        "{}",
        text(&again.stderr)
    );

    std::fs::remove_file(&marker).unwrap();
    let run = pause("deny-me");
    let out = resume(&run, "deny-me", &["--deny", "not today"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!marker.exists(), "a denied call never runs");
}

#[test]
fn help_teaches_by_example() {
    let dir = TempDir::new("help");
    let out = kaos(dir.path(), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("kaos run \"Summarize the lease.\""));
    let out = kaos(dir.path(), &["run", "--help"]);
    assert!(text(&out.stdout).contains("script:replies.json"));
}

#[test]
fn sessions_persist_across_runs() {
    let dir = TempDir::new("persist");
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let args = |m: &'static str| vec!["run", "--session", "s1", "--state-dir", state, "-q", m];
    let first = kaos(dir.path(), &args("My name is Ada."));
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(!text(&first.stdout).contains("earlier user message"));
    let second = kaos(dir.path(), &args("What is my name?"));
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert!(
        text(&second.stdout).contains("1 earlier user message"),
        "{}",
        text(&second.stdout)
    );
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--session",
            "s1",
            "--state-dir",
            state,
            "--json",
            "Third",
        ],
    );
    let events = events(&out.stdout);
    assert_eq!(events[0]["kind"]["attributes"]["turn_number"], 3);
}

#[test]
fn sigint_during_a_slow_tool_cancels_the_turn() {
    let dir = TempDir::new("sigint");
    // The slow tool says it started through a named pipe: opening it for reading blocks
    // until the tool writes, so the test waits on the event itself, not on a clock.
    let fifo = dir.path().join("started");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    dir.write(
        "agent.toml",
        &format!(
            r#"
model = "script:replies.json"
[[tools]]
name = "slow"
command = ["sh", "-c", "echo started > '{}'; sleep 30"]
"#,
            fifo.display()
        ),
    );
    dir.write(
        "replies.json",
        r#"["{\"intent\":\"tool_use\"}", {"tool_calls":[{"name":"slow","arguments":{}}]}, "done"]"#,
    );
    let child = Command::new(KAOS)
        .args([
            "run",
            "--agent",
            "agent.toml",
            "--ephemeral",
            "--json",
            "go slow",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (started_tx, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = started_tx.send(std::fs::read_to_string(fifo));
    });
    // A generous bound only so a broken build fails instead of hanging CI.
    let said = started
        .recv_timeout(Duration::from_secs(300))
        .expect("the slow tool never started")
        .unwrap();
    assert_eq!(said.trim(), "started");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let events = events(&out.stdout);
    assert_spans_closed(&events);
    assert!(
        events
            .iter()
            .any(|e| e["kind"]["name"] == "tool.slow" && e["kind"]["phase"] == "cancelled"),
        "no cancelled tool span"
    );
}

#[test]
fn delegate_runs_a_nested_turn() {
    let dir = TempDir::new("delegate");
    dir.write(
        "main.toml",
        r#"
name = "lead"
model = "script:replies.json"
[[delegates]]
name = "helper"
description = "Asks the helper."
agent = "helper.toml"
"#,
    );
    dir.write(
        "helper.toml",
        "name = \"helper\"\nmodel = \"script:replies.json\"\n",
    );
    // One script, consumed in call order across both agents.
    dir.write(
        "replies.json",
        r#"["{\"intent\":\"tool_use\"}",
            {"tool_calls":[{"name":"helper","arguments":{"task":"say hi"}}]},
            "{\"intent\":\"respond\"}",
            "{\"response\":\"hi from helper\"}",
            "The helper said hi."]"#,
    );
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--agent",
            "main.toml",
            "--ephemeral",
            "--json",
            "delegate",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = events(&out.stdout);
    assert_spans_closed(&events);
    assert!(events.iter().any(|e| e["agent"] == "helper"));
    // The helper's turn nests in a subagent span inside the delegating tool call.
    let start = |subject: &str, agent: &str| {
        events
            .iter()
            .find(|e| {
                e["agent"] == agent
                    && e["kind"]["subject"] == subject
                    && e["kind"]["phase"] == "start"
            })
            .unwrap_or_else(|| panic!("no {subject} START from {agent}"))["kind"]
            .clone()
    };
    let tool = start("tool_call", "lead");
    let sub = start("subagent", "lead");
    let helper_turn = start("turn", "helper");
    assert_eq!(sub["parent_span_id"], tool["span_id"]);
    assert_eq!(helper_turn["parent_span_id"], sub["span_id"]);
    assert_eq!(
        events.last().unwrap()["kind"]["text"],
        "The helper said hi."
    );
}

#[test]
fn chat_keeps_history_across_launches() {
    let dir = TempDir::new("chat");
    let chat = |input: &'static [u8]| {
        let mut child = Command::new(KAOS)
            .args(["chat", "--session", "c1", "--state-dir", "state"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let first = chat(b"Summarize the lease.\n/session\n/exit\n");
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let stdout = text(&first.stdout);
    assert!(
        stdout.contains("offline demo model") && stdout.contains("c1"),
        "{stdout}"
    );
    let second = chat(b"And the deposit?\n");
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert!(text(&second.stderr).contains("resuming session c1"));
    assert!(text(&second.stdout).contains("1 earlier user message"));
}

/// A command tool printing 100 MiB: the turn completes, the result says it was truncated,
/// and kaos's peak memory (read by the tool itself from /proc/$PPID after printing) stays
/// far below what keeping the output would take.
#[cfg(target_os = "linux")]
#[test]
fn a_command_printing_100_mib_is_truncated_with_bounded_memory() {
    let dir = TempDir::new("flood");
    dir.write(
        "agent.toml",
        r#"
model = "script:replies.json"
[[tools]]
name = "flood"
description = "Prints a lot."
command = ["sh", "-c", "head -c 104857600 /dev/zero | tr '\\0' x; grep VmHWM /proc/$PPID/status > hwm.txt"]
"#,
    );
    dir.write(
        "replies.json",
        r#"["{\"intent\":\"tool_use\"}", {"tool_calls":[{"name":"flood","arguments":{}}]}, "Done."]"#,
    );
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--agent",
            "agent.toml",
            "--ephemeral",
            "--json",
            "flood it",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = events(&out.stdout);
    assert_spans_closed(&events);
    let tool_end = events
        .iter()
        .find(|e| e["kind"]["name"] == "tool.flood" && e["kind"]["phase"] == "complete")
        .expect("a completed tool.flood span");
    let summary = tool_end["kind"]["attributes"]["result_summary"]
        .as_str()
        .unwrap();
    assert!(
        summary.starts_with(
            "[output truncated by kaos: the first 1048576 of 104857600 bytes of stdout are shown]"
        ),
        "{summary}"
    );
    assert_eq!(
        tool_end["kind"]["attributes"]["kaos.result_truncated"], true,
        "the command tool's own cut is on the tool span"
    );
    assert_eq!(events.last().unwrap()["kind"]["text"], "Done.");
    let hwm = std::fs::read_to_string(dir.path().join("hwm.txt")).unwrap();
    let kib: u64 = hwm
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /proc status line {hwm:?}"));
    // Keeping the output would need > 100 MiB (more with the text copies).
    assert!(kib < 64 * 1024, "kaos peaked at {kib} KiB");
    eprintln!("kaos peak RSS while the tool printed 100 MiB: {kib} KiB");
}

/// `kaos` installs the circuit breaker: after five failures in a row the sixth call of the
/// same tool is skipped (it does not run) and the model is told why.
#[test]
fn the_circuit_breaker_skips_a_tool_that_keeps_failing() {
    let dir = TempDir::new("circuit");
    dir.write(
        "agent.toml",
        r#"
model = "script:replies.json"
[[tools]]
name = "broken"
command = ["sh", "-c", "echo run >> runs.txt; echo down >&2; exit 1"]
"#,
    );
    let call = r#"{"tool_calls":[{"name":"broken","arguments":{}}]}"#;
    dir.write(
        "replies.json",
        &format!(
            r#"["{{\"intent\":\"tool_use\"}}", {call}, {call}, {call}, {call}, {call}, {call}, "Gave up."]"#
        ),
    );
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--agent",
            "agent.toml",
            "--ephemeral",
            "--json",
            "try",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = events(&out.stdout);
    let ends: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"]["name"] == "tool.broken" && e["kind"]["phase"] != "start")
        .collect();
    assert_eq!(ends.len(), 6, "{ends:?}");
    let runs = std::fs::read_to_string(dir.path().join("runs.txt")).unwrap();
    assert_eq!(runs.lines().count(), 5, "the sixth call did not run");
    assert_eq!(
        ends[5]["kind"]["error"]["error_type"], "skipped_by_hook",
        "{}",
        ends[5]
    );
    assert_eq!(events.last().unwrap()["kind"]["text"], "Gave up.");
}

/// A local provider that answers every request with 401 (failover-eligible, never retried).
pub(super) fn unauthorized_provider() -> String {
    unauthorized_provider_recording().0
}

/// [`unauthorized_provider`], also handing over each request as it arrived (head and body).
pub(super) fn unauthorized_provider_recording() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (tx, requests) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 65536];
            let n = stream.read(&mut buf).unwrap_or(0);
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let body = r#"{"error":{"message":"bad key"}}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, requests)
}

/// `[fallback]` builds a FallbackClient: the agent's model fails, the next one answers.
#[test]
fn a_fallback_model_answers_when_the_first_fails() {
    let dir = TempDir::new("fallback");
    let url = unauthorized_provider();
    dir.write(
        "agent.toml",
        &format!(
            r#"
model = "openai-compatible:broken@{url}"
[fallback]
models = ["script:backup.json"]
"#
        ),
    );
    dir.write(
        "backup.json",
        r#"["{\"intent\":\"respond\"}", "{\"response\":\"answered by the backup\"}"]"#,
    );
    let out = kaos(
        dir.path(),
        &["run", "--agent", "agent.toml", "--ephemeral", "hello"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "answered by the backup");

    dir.write(
        "agent.toml",
        "model = \"offline\"\n[fallback]\nmodels = [\n  \"nope:x\",\n]\n",
    );
    let out = kaos(
        dir.path(),
        &["run", "--agent", "agent.toml", "--ephemeral", "hello"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("agent.toml:4: field `fallback.models[0]`"),
        "{err}"
    );
}

/// The CLI reads the library's one agent-file schema: `[[tools]]` tables are its command
/// tools, and a bad table names the file, the line and the field.
#[test]
fn agent_file_errors_in_tool_tables_name_file_line_and_field() {
    let dir = TempDir::new("schema");
    dir.write(
        "agent.toml",
        "name = \"a\"\n\n[[tools]]\nname = \"ok\"\ncommand = [\"true\"]\n\n[[tools]]\nname = \"wc\"\ncomand = [\"wc\"]\n",
    );
    let out = kaos(
        dir.path(),
        &["run", "--agent", "agent.toml", "--ephemeral", "hi"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("agent.toml:7: field `tools[1]`") && stderr.contains("comand"),
        "{stderr}"
    );
    dir.write(
        "agent.toml",
        "[[tools]]\nname = \"big\"\ncommand = [\"true\"]\nmax_output_bytes = 0\n",
    );
    let out = kaos(
        dir.path(),
        &["run", "--agent", "agent.toml", "--ephemeral", "hi"],
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("agent.toml:4: field `tools[0].max_output_bytes`"),
        "{stderr}"
    );
}
