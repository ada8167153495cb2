//! Streaming turns: deltas from the Anthropic and OpenAI wire formats (local fake servers),
//! the typed respond call's field streaming and corrective retry, a stream cut by the
//! provider, a consumer that drops mid-stream, and delta coalescing.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use kaos_agents::coalesce::{Coalesce, DeltaCoalescer};
use kaos_agents::hooks::RecordingHook;
use kaos_agents::{
    Agent, Event, EventKind, FnTool, KaosRuntime, LlmClient, Runner, SpanPhase, SpanSubject,
    TurnError,
};
use kaos_llm::fake_provider::{
    FakeProvider, FakeReply, StreamEnd, StreamPart, anthropic_stream, openai_stream,
};
use kaos_llm::retry::RetryPolicy;
use kaos_llm::{AnthropicClient, Chunking, FunctionClient, OpenAiClient, ProviderResponse};
use serde_json::{Value, json};

use crate::util::{assert_well_formed, labels, routing_model};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct TextArgs {
    /// The text.
    text: String,
}

fn wordcount() -> FnTool {
    FnTool::new("wordcount", "Counts words.", |a: TextArgs| async move {
        a.text.split_whitespace().count().to_string()
    })
    .read_only()
}

fn pieces(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| (*s).to_owned()).collect()
}

fn runner(client: Arc<dyn LlmClient>, tools: bool) -> (Runner, Arc<RecordingHook>) {
    let mut runtime = KaosRuntime::test_mode().with_shared_client("fake", client);
    if tools {
        runtime = runtime.with_tool(wordcount());
    }
    let agent = Agent::builder()
        .name("streamer")
        .model("fake")
        .build()
        .unwrap();
    let rec = Arc::new(RecordingHook::new());
    (
        Runner::new(agent, runtime).with_shared_hook(rec.clone()),
        rec,
    )
}

fn anthropic(server: &FakeProvider) -> Arc<dyn LlmClient> {
    Arc::new(
        AnthropicClient::new("fake-model", "test-key")
            .with_base_url(server.base_url())
            .with_retry(RetryPolicy::none()),
    )
}

fn openai(server: &FakeProvider) -> Arc<dyn LlmClient> {
    Arc::new(
        OpenAiClient::new("fake-model", "test-key")
            .with_base_url(format!("{}/v1", server.base_url()))
            .with_retry(RetryPolicy::none()),
    )
}

fn anthropic_json(text: &str) -> FakeReply {
    FakeReply::Json(json!({
        "id": "msg_c", "type": "message", "role": "assistant", "model": "fake-model",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 5}
    }))
}

fn openai_json(text: &str) -> FakeReply {
    FakeReply::Json(json!({
        "id": "chatcmpl-c", "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    }))
}

const TOOL_USE: &str = r#"{"intent":"tool_use","confidence":0.9,"reasoning":"count"}"#;
const RESPOND: &str = r#"{"intent":"respond","confidence":0.9,"reasoning":"chat"}"#;

/// The text deltas of each `llm_call` span, in order.
fn deltas_by_span(events: &[Event]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        if let EventKind::TextDelta { content, span_id } = &e.kind {
            let key = span_id.as_deref().unwrap_or("-").to_owned();
            out.entry(key).or_default().push(content.clone());
        }
    }
    out
}

/// The `llm_call` span end events, in order.
fn llm_ends(events: &[Event]) -> Vec<&kaos_agents::SpanEvent> {
    events
        .iter()
        .filter_map(|e| e.span())
        .filter(|s| s.subject == SpanSubject::LlmCall && s.phase.is_terminal())
        .collect()
}

/// Every delta sits inside its own open `llm_call` span.
fn assert_deltas_inside_their_span(events: &[Event]) {
    let mut open: Vec<Arc<str>> = Vec::new();
    for e in events {
        match &e.kind {
            EventKind::Span(s) if s.subject == SpanSubject::LlmCall => {
                if s.phase == SpanPhase::Start {
                    open.push(s.span_id.clone());
                } else {
                    open.retain(|id| *id != s.span_id);
                }
            }
            EventKind::TextDelta { span_id, .. } | EventKind::ThinkingDelta { span_id, .. } => {
                let span = span_id.clone().expect("a streamed delta names its span");
                assert_eq!(open.last(), Some(&span), "delta outside its llm_call span");
            }
            _ => {}
        }
    }
}

/// The golden sequence of a tool turn whose react calls stream thinking, text and a tool
/// call interleaved, then a text answer.
fn tool_turn_golden(events: &[Event]) {
    assert_eq!(
        labels(events),
        [
            "span(turn,start)",
            "span(llm_call,start)",
            "span(llm_call,complete)",
            "intent_classified",
            "usage_observed",
            "span(llm_call,start)",
            "thinking_delta",
            "thinking_delta",
            "text_delta",
            "text_delta",
            "span(llm_call,complete)",
            "usage_observed",
            "span(tool_call,start)",
            "span(tool_call,complete)",
            "span(llm_call,start)",
            "text_delta",
            "text_delta",
            "text_delta",
            "span(llm_call,complete)",
            "usage_observed",
            "span(turn,complete)",
            "turn_summary",
        ]
    );
    assert_well_formed(events);
    assert_deltas_inside_their_span(events);
    let texts: Vec<Vec<String>> = deltas_by_span(events).into_values().collect();
    let ends = llm_ends(events);
    let by_span = deltas_by_span(events);
    assert_eq!(by_span[&*ends[1].span_id], ["Let me ", "count."]);
    assert_eq!(
        by_span[&*ends[2].span_id],
        ["The text has ", "3 ", "words."]
    );
    assert_eq!(texts.len(), 2);
    for end in &ends[1..] {
        let a = &end.attributes;
        assert_eq!(a["stream"], true);
        assert_eq!(a["input_tokens"], 12);
        assert_eq!(a["output_tokens"], 34);
        assert!(a["time_to_first_chunk_ms"].as_f64().unwrap() >= 0.0);
        assert!(a["first_chunk_unix_nano"].as_u64().unwrap() > 0);
    }
    assert_eq!(ends[1].attributes["stop_reason"], "tool_use");
    assert_eq!(ends[2].attributes["stop_reason"], "end_turn");
    // Thinking (2) + text (2) + tool-call pieces: the call start and its 2 argument pieces.
    assert_eq!(ends[1].attributes["chunks"], 2 + 2 + 3);
    assert_eq!(ends[2].attributes["streamed_chars"], 21);
    let thinking: String = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ThinkingDelta { content, .. } => Some(content.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(thinking, "Need to count");
}

fn tool_turn_parts() -> (Vec<StreamPart>, Vec<StreamPart>) {
    (
        vec![
            StreamPart::Thinking(pieces(&["Need ", "to count"])),
            StreamPart::Text(pieces(&["Let me ", "count."])),
            StreamPart::Tool {
                id: "call_1".into(),
                name: "wordcount".into(),
                pieces: pieces(&[r#"{"te"#, r#"xt": "a b c"}"#]),
            },
        ],
        vec![StreamPart::Text(pieces(&["The text has ", "3 ", "words."]))],
    )
}

#[tokio::test]
async fn anthropic_stream_golden_sequence_with_interleaved_text_and_tool_call() {
    let (first, second) = tool_turn_parts();
    let server = FakeProvider::start(vec![
        anthropic_json(TOOL_USE),
        FakeReply::sse(anthropic_stream(&first, "tool_use")),
        FakeReply::sse(anthropic_stream(&second, "end_turn")),
    ])
    .await
    .unwrap();
    let (runner, rec) = runner(anthropic(&server), true);
    let response = runner.turn("count the words of a b c", "s").await.unwrap();
    assert_eq!(response.text, "The text has 3 words.");
    tool_turn_golden(&rec.events());
    let tree = kaos_agents::tree::render_tree(&rec.events(), &Default::default());
    let streamed: Vec<&str> = tree
        .lines()
        .filter(|l| l.contains("first_chunk="))
        .collect();
    assert_eq!(streamed.len(), 2, "{tree}");
    assert!(streamed[0].contains("chunks=7"), "{tree}");
    let bodies = server.bodies();
    assert!(bodies[1].contains(r#""stream":true"#), "{}", bodies[1]);
}

#[tokio::test]
async fn openai_stream_golden_sequence_with_interleaved_text_and_tool_call() {
    let (first, second) = tool_turn_parts();
    let server = FakeProvider::start(vec![
        openai_json(TOOL_USE),
        FakeReply::sse(openai_stream(&first, "tool_calls")),
        FakeReply::sse(openai_stream(&second, "stop")),
    ])
    .await
    .unwrap();
    let (runner, rec) = runner(openai(&server), true);
    let response = runner.turn("count the words of a b c", "s").await.unwrap();
    assert_eq!(response.text, "The text has 3 words.");
    let events = rec.events();
    // Same shape; OpenAI names its stop reasons differently.
    let mut normalized = events.clone();
    for e in &mut normalized {
        if let EventKind::Span(s) = &mut e.kind
            && let Some(Value::String(r)) = s.attributes.get_mut("stop_reason")
        {
            *r = match r.as_str() {
                "tool_calls" => "tool_use".into(),
                "stop" => "end_turn".into(),
                other => other.into(),
            };
        }
    }
    tool_turn_golden(&normalized);
}

#[tokio::test]
async fn the_respond_field_streams_with_escapes_split_across_chunks() {
    let server = FakeProvider::start(vec![
        anthropic_json(RESPOND),
        FakeReply::sse(anthropic_stream(
            &[StreamPart::Text(pieces(&[
                r#"{"respo"#,
                r#"nse": "caf\u00"#,
                r#"e9 \"ok\" \ud83d"#,
                r#"\ude00\n"}"#,
            ]))],
            "end_turn",
        )),
    ])
    .await
    .unwrap();
    let (runner, rec) = runner(anthropic(&server), false);
    let response = runner.turn("hello", "s").await.unwrap();
    assert_eq!(response.text, "café \"ok\" 😀\n");
    let events = rec.events();
    assert_deltas_inside_their_span(&events);
    let deltas: Vec<Vec<String>> = deltas_by_span(&events).into_values().collect();
    assert_eq!(deltas, [pieces(&["caf", "é \"ok\" ", "😀\n"])]);
}

#[tokio::test]
async fn a_broken_streamed_answer_is_retracted_and_the_retry_announced() {
    let client = FunctionClient::scripted([
        ProviderResponse::from_text(RESPOND),
        ProviderResponse::from_text(r#"{"response": "half an answer", "#),
        ProviderResponse::from_text(r#"{"response": "the whole answer"}"#),
    ])
    .with_chunking(Chunking::chars(4));
    let (runner, rec) = runner(Arc::new(client), false);
    let response = runner.turn("hello", "s").await.unwrap();
    assert_eq!(response.text, "the whole answer");
    let events = rec.events();
    assert_deltas_inside_their_span(&events);
    let mut after_retraction = String::new();
    let mut before = String::new();
    let mut retracted = 0;
    for e in &events {
        match &e.kind {
            EventKind::TextDelta { content, .. } => after_retraction.push_str(content),
            EventKind::TextRetracted {
                retry_attempt,
                reason,
                ..
            } => {
                assert_eq!(*retry_attempt, Some(2));
                assert!(reason.contains("could not be parsed"), "{reason}");
                before = std::mem::take(&mut after_retraction);
                retracted += 1;
            }
            _ => {}
        }
    }
    assert_eq!(retracted, 1);
    assert_eq!(before, "half an answer");
    assert_eq!(after_retraction, "the whole answer");
    assert_eq!(llm_ends(&events)[1].attributes["attempts"], 2);
}

#[tokio::test]
async fn a_plain_prose_answer_streams_whole_at_the_end_without_a_retry() {
    let client = FunctionClient::scripted([
        ProviderResponse::from_text(RESPOND),
        ProviderResponse::from_text("Just prose, no JSON."),
    ])
    .with_chunking(Chunking::chars(4));
    let (runner, rec) = runner(Arc::new(client), false);
    let response = runner.turn("hello", "s").await.unwrap();
    assert_eq!(response.text, "Just prose, no JSON.");
    let deltas: Vec<Vec<String>> = deltas_by_span(&rec.events()).into_values().collect();
    assert_eq!(deltas, [pieces(&["Just prose, no JSON."])]);
}

#[tokio::test]
async fn each_calls_deltas_concatenate_to_its_text() {
    let client = FunctionClient::new(routing_model("wordcount", json!({"text": "a b c"})))
        .with_chunking(Chunking::chars(3));
    let (runner, rec) = runner(Arc::new(client), true);
    for message in ["use the tool please", "just chat"] {
        let response = runner.turn(message, "s").await.unwrap();
        let events = rec.events();
        let run: Vec<Event> = events
            .into_iter()
            .filter(|e| *e.run_id == *response.run_id)
            .collect();
        assert_deltas_inside_their_span(&run);
        let by_span = deltas_by_span(&run);
        assert_eq!(by_span.len(), 1, "one call streamed the answer");
        let pieces = by_span.into_values().next().unwrap();
        assert!(pieces.len() > 3, "streamed in pieces: {pieces:?}");
        assert!(
            pieces
                .iter()
                .all(|p| p.chars().count() <= 3 || message == "just chat")
        );
        assert_eq!(pieces.concat(), response.text);
    }
}

#[tokio::test]
async fn a_stream_cut_by_the_provider_is_an_error_span_counting_what_arrived() {
    let mut chunks = anthropic_stream(
        &[StreamPart::Text(pieces(&[
            r#"{"response": "Hel"#,
            "lo wor",
        ]))],
        "end_turn",
    );
    chunks.truncate(4); // message_start, block start, two deltas: no message_stop.
    let server = FakeProvider::start(vec![anthropic_json(RESPOND), FakeReply::sse(chunks)])
        .await
        .unwrap();
    let (runner, rec) = runner(anthropic(&server), false);
    let err = runner.turn("hello", "s").await.unwrap_err();
    let TurnError::Failed { failure, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(failure.error_type, "stream_interrupted");
    let events = rec.events();
    assert_well_formed(&events);
    let end = llm_ends(&events)[1];
    assert_eq!(end.phase, SpanPhase::Error);
    assert_eq!(end.error.as_ref().unwrap().error_type, "stream_interrupted");
    assert_eq!(end.attributes["chunks"], 2);
    assert_eq!(end.attributes["streamed_chars"], 23);
    let streamed: Vec<Vec<String>> = deltas_by_span(&events).into_values().collect();
    assert_eq!(streamed, [pieces(&["Hel", "lo wor"])]);
}

#[tokio::test]
async fn a_consumer_dropping_mid_stream_cancels_every_span_and_closes_the_connection() {
    let chunks = anthropic_stream(
        &[StreamPart::Text(pieces(&[r#"{"response": "Hello"#]))],
        "end_turn",
    );
    let server = FakeProvider::start(vec![
        anthropic_json(RESPOND),
        FakeReply::Sse {
            chunks: chunks[..3].to_vec(),
            gap: std::time::Duration::ZERO,
            gate_last: false,
            end: StreamEnd::Hold,
        },
    ])
    .await
    .unwrap();
    let (runner, rec) = runner(anthropic(&server), false);
    let mut stream = runner.run("hello", "s");
    while let Some(event) = stream.next().await {
        if matches!(event.kind, EventKind::TextDelta { .. }) {
            break;
        }
    }
    drop(stream);
    // The server sees the client go away (no sleep: this waits on the server's event).
    server.disconnects(1).await;
    let events = rec.events();
    assert_well_formed(&events);
    let cancelled: Vec<&str> = events
        .iter()
        .filter_map(|e| e.span())
        .filter(|s| s.phase == SpanPhase::Cancelled)
        .map(|s| s.subject.as_str())
        .collect();
    assert_eq!(cancelled, ["llm_call", "turn"]);
}

#[test]
fn coalescing_merges_a_calls_deltas_and_releases_them_before_other_events() {
    let event = |seq: u64, kind: EventKind| Event {
        timestamp: seq,
        sequence: seq,
        session_id: "s".into(),
        run_id: "r".into(),
        agent: "a".into(),
        kind,
    };
    let delta = |seq, text: &str, span: &str| {
        event(
            seq,
            EventKind::TextDelta {
                content: text.into(),
                span_id: Some(span.into()),
            },
        )
    };
    let coalescer = DeltaCoalescer::new(Coalesce {
        max_bytes: 8,
        max_age: std::time::Duration::from_secs(3600),
    });
    let mut out = Vec::new();
    let input = [
        delta(0, "abc", "s1"),
        delta(1, "def", "s1"),
        delta(2, "ghi", "s1"), // 9 bytes: released
        delta(3, "jk", "s1"),
        delta(4, "lm", "s2"), // another span: "jk" released first
        event(
            5,
            EventKind::RunError {
                error_type: "x".into(),
                message: "m".into(),
                recovery_hint: "h".into(),
            },
        ),
    ];
    for e in &input {
        coalescer.push(e, &mut |e| out.push(e.clone()));
    }
    let shape: Vec<String> = out
        .iter()
        .map(|e| match &e.kind {
            EventKind::TextDelta { content, span_id } => {
                format!("{}:{content}@{}", span_id.as_deref().unwrap(), e.sequence)
            }
            other => other.type_name().to_string(),
        })
        .collect();
    assert_eq!(shape, ["s1:abcdefghi@0", "s1:jk@3", "s2:lm@4", "run_error"]);
}

#[cfg(feature = "otel")]
#[tokio::test]
async fn the_chat_span_lasts_to_the_last_chunk_and_records_time_to_first_chunk() {
    use crate::otel_hook::{Harness, attr};
    use opentelemetry::Value as OValue;
    use opentelemetry::trace::Status;

    let mut cut = anthropic_stream(
        &[StreamPart::Text(pieces(&[r#"{"response": "Hi"#]))],
        "end_turn",
    );
    cut.truncate(3);
    let server = FakeProvider::start(vec![
        anthropic_json(RESPOND),
        FakeReply::sse(anthropic_stream(
            &[StreamPart::Text(pieces(&[
                r#"{"response": "Hel"#,
                r#"lo"}"#,
            ]))],
            "end_turn",
        )),
        anthropic_json(RESPOND),
        FakeReply::sse(cut),
    ])
    .await
    .unwrap();
    let h = Harness::new();
    let (runner, _) = runner(anthropic(&server), false);
    let runner = runner.with_shared_hook(h.hook.clone());
    runner.turn("hello", "s").await.unwrap();
    runner.turn("again", "s").await.unwrap_err();
    let spans = h.spans();
    let respond: Vec<_> = spans
        .iter()
        .filter(|s| {
            attr(s, "kaos.purpose").map(|v| v.as_str().to_string()) == Some("respond".into())
        })
        .collect();
    assert_eq!(respond.len(), 2);
    let (ok, broken) = (respond[0], respond[1]);
    assert_eq!(attr(ok, "gen_ai.request.stream"), Some(OValue::Bool(true)));
    assert_eq!(
        attr(ok, "gen_ai.usage.output_tokens"),
        Some(OValue::I64(34))
    );
    // A string array, as the conventions define it.
    let Some(OValue::Array(opentelemetry::Array::String(reasons))) =
        attr(ok, "gen_ai.response.finish_reasons")
    else {
        panic!("finish_reasons is not a string array on {ok:?}")
    };
    assert_eq!(reasons.len(), 1);
    let Some(OValue::F64(ttfc)) = attr(ok, "gen_ai.response.time_to_first_chunk") else {
        panic!("no time to first chunk on {ok:?}")
    };
    let first = ok
        .events
        .iter()
        .find(|e| e.name == "gen_ai.first_chunk")
        .expect("a first-chunk span event");
    assert!(ok.start_time <= first.timestamp && first.timestamp <= ok.end_time);
    let since_start = first
        .timestamp
        .duration_since(ok.start_time)
        .unwrap()
        .as_secs_f64();
    assert!((since_start - ttfc).abs() < 0.05, "{since_start} vs {ttfc}");
    assert!(ttfc >= 0.0);
    // The cut stream: an error span with what arrived counted.
    assert!(
        matches!(broken.status, Status::Error { .. }),
        "{:?}",
        broken.status
    );
    assert_eq!(attr(broken, "kaos.stream.chunks"), Some(OValue::I64(1)));
    assert_eq!(attr(broken, "kaos.stream.chars"), Some(OValue::I64(16)));
}

/// A stop reason kaos has no name for (Anthropic's `pause_turn`) reaches the event stream and
/// the chat span as the provider's own text; it used to be recorded as a JSON object, which
/// the span mapping could not read, so `gen_ai.response.finish_reasons` went missing.
#[cfg(feature = "otel")]
#[tokio::test]
async fn an_unnamed_stop_reason_is_kept_verbatim_on_the_event_and_the_span() {
    use crate::otel_hook::{Harness, attr};
    use opentelemetry::Value as OValue;

    let server = FakeProvider::start(vec![
        anthropic_json(RESPOND),
        FakeReply::sse(anthropic_stream(
            &[StreamPart::Text(pieces(&[r#"{"response": "Hi"}"#]))],
            "pause_turn",
        )),
    ])
    .await
    .unwrap();
    let h = Harness::new();
    let (runner, rec) = runner(anthropic(&server), false);
    let runner = runner.with_shared_hook(h.hook.clone());
    runner.turn("hello", "s").await.unwrap();
    let ends: Vec<_> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Span(s)
                if s.phase == SpanPhase::Complete && s.name == "llm_call.respond" =>
            {
                Some(s)
            }
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].attributes["stop_reason"], "pause_turn");
    let spans = h.spans();
    let respond = spans
        .iter()
        .find(|s| attr(s, "kaos.purpose").map(|v| v.as_str().to_string()) == Some("respond".into()))
        .expect("the respond chat span");
    assert_eq!(
        attr(respond, "gen_ai.response.finish_reasons"),
        Some(OValue::Array(opentelemetry::Array::String(vec![
            "pause_turn".into()
        ])))
    );
}

/// A model behind a URL is named on its chat spans and its model-call metrics by host and
/// port (`server.address`, `server.port`, recommended by the conventions); a client with no
/// server (a closure) has neither.
#[cfg(feature = "otel")]
#[tokio::test]
async fn chat_spans_and_model_metrics_name_the_models_server() {
    use crate::otel_hook::{Harness, attr};
    use crate::otel_metrics::{memory_provider, points};
    use kaos_agents::otel::MetricsHook;
    use kaos_agents::otel::metrics::GEN_AI_CLIENT_OPERATION_DURATION;
    use opentelemetry::Value as OValue;
    use opentelemetry::metrics::MeterProvider as _;

    let answer = [StreamPart::Text(pieces(&[r#"{"response": "Hello!"}"#]))];
    let server = FakeProvider::start(vec![
        openai_json(RESPOND),
        FakeReply::sse(openai_stream(&answer, "stop")),
    ])
    .await
    .unwrap();
    let port = server
        .base_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<i64>().ok())
        .expect("a port in the fake provider's URL");
    let h = Harness::new();
    let (provider, exporter) = memory_provider();
    let metrics = Arc::new(MetricsHook::new(provider.meter("kaos.agents")));
    let (served, _) = runner(openai(&server), false);
    served
        .with_shared_hook(h.hook.clone())
        .with_shared_hook(metrics)
        .turn("hello", "s")
        .await
        .unwrap();
    let spans = h.spans();
    let chats: Vec<_> = spans
        .iter()
        .filter(|s| s.name.starts_with("chat "))
        .collect();
    assert_eq!(chats.len(), 2, "{spans:?}");
    for chat in chats {
        assert_eq!(
            attr(chat, "server.address"),
            Some(OValue::from("127.0.0.1"))
        );
        assert_eq!(attr(chat, "server.port"), Some(OValue::I64(port)));
    }
    // Only model calls go to a server.
    let turn = spans.iter().find(|s| s.name == "agent.turn").unwrap();
    assert_eq!(attr(turn, "server.address"), None);
    provider.force_flush().unwrap();
    let durations = points(
        &exporter.get_finished_metrics().unwrap(),
        GEN_AI_CLIENT_OPERATION_DURATION,
    );
    assert!(!durations.is_empty());
    for p in &durations {
        assert_eq!(p.attr("server.address"), Some("127.0.0.1"), "{p:?}");
        assert_eq!(p.attr("server.port"), Some(port.to_string().as_str()));
    }

    // A closure-backed model has no server.
    let h = Harness::new();
    let model = FunctionClient::new(routing_model("wordcount", json!({})));
    let (local, _) = runner(Arc::new(model), false);
    local
        .with_shared_hook(h.hook.clone())
        .turn("hello", "s")
        .await
        .unwrap();
    let spans = h.spans();
    let chat = spans.iter().find(|s| s.name.starts_with("chat ")).unwrap();
    assert_eq!(attr(chat, "server.address"), None);
    assert_eq!(attr(chat, "server.port"), None);
}
