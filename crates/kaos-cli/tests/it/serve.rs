//! `kaos serve` as a process: SIGTERM drains with a long turn in flight, then exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{KAOS, TempDir};

/// A generous bound only so a broken build fails instead of hanging CI.
const BOUND: Duration = Duration::from_secs(300);

fn request(addr: &str, method: &str, path: &str, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

fn status_of(addr: &str, path: &str) -> (u16, String) {
    let mut s = request(addr, "GET", path, "");
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
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_line = |pred: &dyn Fn(&str) -> bool| -> String {
        loop {
            let line = lines.recv_timeout(BOUND).expect("kaos serve went quiet");
            seen.push(line.clone());
            if pred(&line) {
                return line;
            }
        }
    };
    let listening = wait_line(&|l| l.contains("listening on http://"));
    let addr = listening
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

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
    wait_line(&|l| l.contains("draining"));
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
    let rest: Vec<String> = lines.iter().collect();
    seen.extend(rest);
    let all = seen.join("\n");
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
