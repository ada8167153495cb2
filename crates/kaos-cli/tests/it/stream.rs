//! Streaming through the CLI: the answer (or each `text_delta` line with `--json`) reaches
//! stdout while the fake provider is still streaming; the offline and script models stream
//! in chunks.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use kaos_llm::fake_provider::{FakeProvider, FakeReply, StreamEnd, StreamPart, anthropic_stream};
use serde_json::{Value, json};

use super::{KAOS, TempDir, events, kaos, text};

/// A provider that answers the classifier, then streams `{"response": "Hello streaming
/// world"}` in three pieces and holds back its last chunk until the test releases it.
async fn gated_provider() -> FakeProvider {
    let classifier = FakeReply::Json(json!({
        "id": "msg_c", "type": "message", "role": "assistant", "model": "fake-model",
        "content": [{"type": "text", "text": r#"{"intent":"respond","confidence":0.9,"reasoning":"chat"}"#}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 5}
    }));
    let chunks = anthropic_stream(
        &[StreamPart::Text(vec![
            r#"{"response": "Hello"#.into(),
            " streaming".into(),
            r#" world"}"#.into(),
        ])],
        "end_turn",
    );
    FakeProvider::start(vec![
        classifier,
        FakeReply::Sse {
            chunks,
            gap: std::time::Duration::ZERO,
            gate_last: true,
            end: StreamEnd::Close,
        },
    ])
    .await
    .unwrap()
}

fn spawn(dir: &TempDir, server: &FakeProvider, args: &[&str]) -> Child {
    Command::new(KAOS)
        .args(args)
        .args(["--ephemeral", "--model", "anthropic:fake-model", "hello"])
        .current_dir(dir.path())
        .env("ANTHROPIC_API_KEY", "test-key")
        .env("ANTHROPIC_BASE_URL", server.base_url())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("TRACEPARENT")
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_the_answer_before_the_provider_sends_its_last_chunk() {
    let dir = TempDir::new("stream-text");
    let server = gated_provider().await;
    let mut child = spawn(&dir, &server, &["run", "--stream"]);
    let mut stdout = child.stdout.take().unwrap();
    // Read stdout until the first delta shows (a blocking read off the runtime's threads).
    let (seen, stdout) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("Hello") {
            if stdout.read(&mut byte).unwrap() == 0 {
                break;
            }
            seen.push(byte[0]);
        }
        (seen, stdout)
    })
    .await
    .unwrap();
    assert_eq!(text(&seen), "Hello", "the first delta reached stdout");
    assert_eq!(
        server.last_chunks_sent(),
        0,
        "the first delta was printed while the provider still held its last chunk"
    );
    server.release_last_chunk();
    let output = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let mut stdout = stdout;
        stdout.read_to_string(&mut rest).unwrap();
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (rest, status, err)
    })
    .await
    .unwrap();
    assert!(output.1.success(), "{}", output.2);
    assert_eq!(
        format!("Hello{}", output.0),
        "Hello streaming world\n",
        "streamed once, not printed again at the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_json_flushes_each_text_delta_line_as_it_happens() {
    let dir = TempDir::new("stream-json");
    let server = gated_provider().await;
    let mut child = spawn(&dir, &server, &["run", "--json"]);
    let stdout = child.stdout.take().unwrap();
    let (first, lines) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut first = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["kind"]["type"] == "text_delta" {
                first = Some(v);
                break;
            }
        }
        (first, lines)
    })
    .await
    .unwrap();
    let first = first.expect("a text_delta line");
    assert_eq!(first["kind"]["content"], "Hello");
    assert!(first["kind"]["span_id"].is_string(), "{first}");
    assert_eq!(
        server.last_chunks_sent(),
        0,
        "the line came before the last chunk"
    );
    server.release_last_chunk();
    let rest: Vec<Value> = tokio::task::spawn_blocking(move || {
        let rest = lines
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        assert!(child.wait().unwrap().success());
        rest
    })
    .await
    .unwrap();
    let deltas: String = std::iter::once(&first)
        .chain(&rest)
        .filter(|e| e["kind"]["type"] == "text_delta")
        .map(|e| e["kind"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "Hello streaming world");
    let llm_end = rest
        .iter()
        .rfind(|e| e["kind"]["subject"] == "llm_call" && e["kind"]["phase"] == "complete")
        .unwrap();
    assert!(llm_end["kind"]["attributes"]["time_to_first_chunk_ms"].is_number());
    assert_eq!(llm_end["kind"]["attributes"]["stop_reason"], "end_turn");
}

#[test]
fn the_offline_model_streams_its_answer_in_chunks() {
    let dir = TempDir::new("stream-offline");
    let out = kaos(dir.path(), &["run", "--json", "--ephemeral", "Say hi."]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = events(&out.stdout);
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"]["type"] == "text_delta")
        .map(|e| e["kind"]["content"].as_str().unwrap())
        .collect();
    assert!(deltas.len() > 5, "{deltas:?}");
    let summary = events
        .iter()
        .find(|e| e["kind"]["type"] == "turn_summary")
        .unwrap();
    assert_eq!(deltas.concat(), summary["kind"]["text"].as_str().unwrap());
}

#[test]
fn a_script_reply_sets_its_chunking() {
    let dir = TempDir::new("stream-script");
    dir.write(
        "replies.json",
        r#"[
            {"text": "{\"intent\": \"respond\", \"confidence\": 0.9}"},
            {"text": "{\"response\": \"abcdefgh\"}", "chunk_chars": 3, "chunk_delay_ms": 1}
        ]"#,
    );
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--json",
            "--ephemeral",
            "--model",
            "script:replies.json",
            "hi",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deltas: Vec<String> = events(&out.stdout)
        .iter()
        .filter(|e| e["kind"]["type"] == "text_delta")
        .map(|e| e["kind"]["content"].as_str().unwrap().to_owned())
        .collect();
    // `{"response": "abcdefgh"}` in 3-char pieces: the field's text arrives as it is cut.
    assert_eq!(deltas, ["a", "bcd", "efg", "h"]);
}
