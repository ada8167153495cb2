//! Streaming workloads: how fast a model's chunks reach the consumer of a turn.
//!
//! - `stream_first_delta_ms`: a local fake provider (Anthropic wire format over HTTP on
//!   127.0.0.1) streams a respond answer in 100 chunks 20 ms apart; the time from the server
//!   writing the first chunk to the turn's consumer receiving the first `TextDelta`, and the
//!   same lag over all 100 chunks (p50 / max).
//! - `stream_delta_event_ns`: the runtime's cost per delta event (extractor, event, hooks: a
//!   counting hook and the coalescing audit trail): a respond turn streaming N one-character
//!   chunks minus the same turn streaming the answer in one chunk, ÷ (N − 1).
//! - `stream_cli_json_*`: the first workload through the `kaos run --json` pipe (the `kaos`
//!   binary next to this one), timed where the bench reads each `text_delta` line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kaos_agents::audit::{AuditHook, FsyncPolicy};
use kaos_agents::{Agent, EventKind, FnHook, KaosRuntime, Runner};
use kaos_llm::fake_provider::{FakeProvider, FakeReply, StreamEnd};
use kaos_llm::function::EventStream;
use kaos_llm::retry::RetryPolicy;
use kaos_llm::{
    AnthropicClient, Chunking, FunctionClient, LlmRequest, ProviderResponse, chunked_events,
};
use serde_json::json;

use crate::{BoxError, Sizes};

/// Chunks of the fake provider's answer, and the pause between them.
const CHUNKS: usize = 100;
const GAP: Duration = Duration::from_millis(20);

/// The streaming figures.
#[derive(Debug, Clone)]
pub(crate) struct StreamFigures {
    pub first_delta_ms: f64,
    pub delta_lag_p50_ms: f64,
    pub delta_lag_max_ms: f64,
    pub delta_event_ns: f64,
    /// `None` when the `kaos` binary is not next to this one.
    pub cli: Option<(f64, f64, f64)>,
}

fn classifier_reply() -> FakeReply {
    FakeReply::Json(json!({
        "id": "msg_c", "type": "message", "role": "assistant", "model": "fake-model",
        "content": [{"type": "text", "text": r#"{"intent":"respond","confidence":0.9,"reasoning":"bench"}"#}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 5}
    }))
}

/// A respond answer in `CHUNKS` chunks, each carrying one piece of the `response` field
/// (so the k-th `TextDelta` is the k-th chunk), `GAP` apart.
fn streamed_answer() -> FakeReply {
    let event = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    let delta = |text: String| {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        )
    };
    let mut chunks = Vec::with_capacity(CHUNKS + 1);
    for i in 0..CHUNKS {
        let mut chunk = String::new();
        if i == 0 {
            chunk.push_str(&event("message_start", json!({"type": "message_start", "message": {"id": "msg_s", "model": "fake-model", "usage": {"input_tokens": 10, "output_tokens": 1}}})));
            chunk.push_str(&event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            chunk.push_str(&delta(format!("{{\"response\": \"w{i} ")));
        } else if i == CHUNKS - 1 {
            chunk.push_str(&delta(format!("w{i}\"}}")));
        } else {
            chunk.push_str(&delta(format!("w{i} ")));
        }
        chunks.push(chunk);
    }
    let mut tail = event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    tail.push_str(&event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 200}})));
    tail.push_str(&event("message_stop", json!({"type": "message_stop"})));
    chunks.push(tail);
    FakeReply::Sse {
        chunks,
        gap: GAP,
        gate_last: false,
        end: StreamEnd::Close,
    }
}

fn agent() -> Result<Agent, BoxError> {
    Ok(Agent::builder().name("bench").model("fake").build()?)
}

/// Lags (ms) of the consumer's delta arrival times behind the server's chunk send times.
fn lags(sent: &[Instant], seen: &[Instant]) -> Vec<f64> {
    sent.iter()
        .zip(seen)
        .map(|(s, r)| r.saturating_duration_since(*s).as_secs_f64() * 1000.0)
        .collect()
}

fn p50_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let p50 = v.get(v.len() / 2).copied().unwrap_or(0.0);
    (p50, v.last().copied().unwrap_or(0.0))
}

/// One streamed turn through the runner; returns (first delta lag, all lags).
async fn runner_turn() -> Result<(f64, Vec<f64>), BoxError> {
    let server = FakeProvider::start(vec![classifier_reply(), streamed_answer()]).await?;
    let client = AnthropicClient::new("fake-model", "bench-key")
        .with_base_url(server.base_url())
        .with_retry(RetryPolicy::none());
    let runtime = KaosRuntime::test_mode().with_client("fake", client);
    let runner = Runner::new(agent()?, runtime);
    let mut stream = runner.run("hi", "bench");
    let mut seen = Vec::with_capacity(CHUNKS);
    while let Some(event) = stream.next().await {
        if matches!(event.kind, EventKind::TextDelta { .. }) {
            seen.push(Instant::now());
        }
    }
    let sent = server.chunk_times();
    if seen.len() != CHUNKS {
        return Err(format!("expected {CHUNKS} deltas, saw {}", seen.len()).into());
    }
    let lags = lags(&sent, &seen);
    Ok((lags[0], lags))
}

/// A runner whose respond answer of `n` characters streams in `piece`-character chunks,
/// with a counting hook and the audit trail under `dir`.
fn delta_runner(n: usize, piece: usize, dir: &std::path::Path) -> Result<Runner, BoxError> {
    let answer = "x".repeat(n);
    let client = FunctionClient::streaming(move |request: LlmRequest| -> EventStream {
        let system = request.system_text().unwrap_or_default();
        if system.contains("Decide how an assistant") {
            return chunked_events(
                ProviderResponse::from_text(r#"{"intent":"respond","confidence":0.9}"#),
                Chunking::chars(1 << 20),
            );
        }
        let text = json!({ "response": answer }).to_string();
        // The field's characters arrive `piece` at a time; the JSON around them in one go.
        let mut events = Vec::new();
        let open = r#"{"response": ""#.len() - 1;
        events.push(Ok(kaos_llm::StreamEvent::TextDelta(
            text[..open].to_owned(),
        )));
        let body = &text[open..text.len() - 2];
        for i in (0..body.len()).step_by(piece) {
            events.push(Ok(kaos_llm::StreamEvent::TextDelta(
                body[i..(i + piece).min(body.len())].to_owned(),
            )));
        }
        events.push(Ok(kaos_llm::StreamEvent::TextDelta(
            text[text.len() - 2..].to_owned(),
        )));
        events.push(Ok(kaos_llm::StreamEvent::Done(
            ProviderResponse::from_text(text.clone()),
        )));
        futures::stream::iter(events).boxed()
    })
    .without_recording();
    let audit = AuditHook::new(dir)?.with_fsync(FsyncPolicy::Never);
    let count = Arc::new(AtomicU64::new(0));
    let runtime = KaosRuntime::test_mode().with_client("fake", client);
    Ok(Runner::new(agent()?, runtime)
        .with_hook(FnHook::new(move |_e| {
            count.fetch_add(1, Ordering::Relaxed);
        }))
        .with_hook(audit))
}

/// The time of one turn of `runner` on `session`.
async fn timed_turn(runner: &Runner, session: &str) -> Duration {
    let started = Instant::now();
    let mut stream = runner.run("hi", session.to_owned());
    while stream.next().await.is_some() {}
    started.elapsed()
}

/// Per-delta cost: median turn streaming `n` one-char chunks minus median turn streaming
/// them in one chunk (interleaved), ÷ (n − 1).
async fn delta_event_ns(n: usize, reps: usize) -> Result<f64, BoxError> {
    let dir = std::env::temp_dir().join(format!("kaos-bench-stream-{}", std::process::id()));
    let one = delta_runner(n, n, &dir)?;
    let many = delta_runner(n, 1, &dir)?;
    for _ in 0..2 {
        timed_turn(&one, "one").await;
        timed_turn(&many, "many").await;
    }
    let mut ones = Vec::with_capacity(reps);
    let mut manys = Vec::with_capacity(reps);
    for _ in 0..reps {
        ones.push(timed_turn(&one, "one").await.as_secs_f64());
        manys.push(timed_turn(&many, "many").await.as_secs_f64());
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (one, _) = p50_max(ones);
    let (many, _) = p50_max(manys);
    Ok((many - one).max(0.0) * 1e9 / (n.saturating_sub(1)).max(1) as f64)
}

/// The `kaos` binary built next to this one (same profile), if any.
fn kaos_binary() -> Option<std::path::PathBuf> {
    let path = std::env::current_exe().ok()?.parent()?.join("kaos");
    path.is_file().then_some(path)
}

/// One streamed turn through `kaos run --json`; returns (first delta lag, all lags).
async fn cli_turn(kaos: &std::path::Path) -> Result<(f64, Vec<f64>), BoxError> {
    let server = FakeProvider::start(vec![classifier_reply(), streamed_answer()]).await?;
    let dir = std::env::temp_dir().join(format!("kaos-bench-cli-{}", std::process::id()));
    let mut child = Command::new(kaos)
        .args(["run", "--json", "--ephemeral", "--quiet"])
        .args(["--model", "anthropic:fake-model", "hi"])
        .env("ANTHROPIC_API_KEY", "bench-key")
        .env("ANTHROPIC_BASE_URL", server.base_url())
        .env("XDG_DATA_HOME", &dir)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("TRACEPARENT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let seen = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::with_capacity(CHUNKS);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(r#""type":"text_delta""#) {
                seen.push(Instant::now());
            }
        }
        seen
    })
    .await?;
    let status = child.wait()?;
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() || seen.len() != CHUNKS {
        return Err(format!("kaos run --json: {status}, {} deltas", seen.len()).into());
    }
    let lags = lags(&server.chunk_times(), &seen);
    Ok((lags[0], lags))
}

/// Runs the streaming workloads (on a multi-threaded runtime: the fake server and the
/// consumer run side by side, as a provider and a client would).
pub(crate) fn streaming(sizes: Sizes) -> Result<StreamFigures, BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let turns = sizes.stream_turns;
    rt.block_on(async {
        let mut firsts = Vec::new();
        let mut all = Vec::new();
        for _ in 0..turns {
            let (first, lags) = runner_turn().await?;
            firsts.push(first);
            all.extend(lags);
        }
        let (first_delta_ms, _) = p50_max(firsts);
        let (delta_lag_p50_ms, delta_lag_max_ms) = p50_max(all);

        let delta_event_ns =
            delta_event_ns(sizes.stream_delta_chars, sizes.stream_delta_turns).await?;

        let cli = match kaos_binary() {
            Some(kaos) => {
                let mut firsts = Vec::new();
                let mut all = Vec::new();
                for _ in 0..turns {
                    let (first, lags) = cli_turn(&kaos).await?;
                    firsts.push(first);
                    all.extend(lags);
                }
                let (first, _) = p50_max(firsts);
                let (p50, max) = p50_max(all);
                Some((first, p50, max))
            }
            None => None,
        };
        Ok(StreamFigures {
            first_delta_ms,
            delta_lag_p50_ms,
            delta_lag_max_ms,
            delta_event_ns,
            cli,
        })
    })
}
