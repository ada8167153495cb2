//! OTelHook on the real runner's event streams: respond, tool, auth failure, pause,
//! dropped stream, traceparent continuation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use kaos_agents::{
    Agent, FnTool, KaosRuntime, LlmError, RunOptions, Runner, SpanPhase, SpanSubject, TurnOutcome,
};
use kaos_llm::{FunctionClient, ProviderResponse};
use opentelemetry::Value;
use opentelemetry::trace::{SpanKind, Status};
use serde_json::json;

use crate::otel_hook::{Harness, assert_well_formed, attr, attr_s, named, names, parent_name};
use crate::util::routing_model;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct TextArgs {
    /// The text.
    text: String,
}

fn runner(h: &Harness, runtime: KaosRuntime) -> Runner {
    let agent = Agent::builder()
        .name("tester")
        .model("fake")
        .build()
        .unwrap();
    Runner::new(agent, runtime).with_shared_hook(h.hook.clone())
}

fn tool_runtime(tool: FnTool) -> KaosRuntime {
    KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("wordcount", json!({"text": "a b c"}))),
        )
        .with_tool(tool)
}

fn wordcount() -> FnTool {
    FnTool::new("wordcount", "Counts words.", |a: TextArgs| async move {
        a.text.split_whitespace().count().to_string()
    })
    .read_only()
}

#[tokio::test]
async fn runner_respond_turn() {
    let h = Harness::new();
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", FunctionClient::new(routing_model("x", json!({}))));
    let response = runner(&h, runtime)
        .turn("Summarize the lease.", "otel-demo")
        .await
        .unwrap();
    let spans = h.spans();
    assert_eq!(
        names(&spans),
        [
            "agent.intent_classification",
            "agent.turn",
            "chat function-test",
            "chat function-test"
        ]
    );
    assert_well_formed(&spans);
    let turn = named(&spans, "agent.turn");
    assert_eq!(turn.status, Status::Ok);
    assert_eq!(attr_s(turn, "kaos.intent"), "respond");
    assert_eq!(
        attr(turn, "kaos.tokens_used"),
        Some(Value::I64(response.tokens_used as i64))
    );
    let intent = named(&spans, "agent.intent_classification");
    assert_eq!(attr_s(intent, "kaos.reasoning"), "routing");
    let classifier = spans
        .iter()
        .find(|s| {
            s.name == "chat function-test" && attr_s(s, "kaos.purpose") == "intent_classification"
        })
        .unwrap();
    assert_eq!(classifier.span_kind, SpanKind::Client);
    assert_eq!(
        parent_name(&spans, classifier).as_deref(),
        Some("agent.intent_classification")
    );
    assert!(intent.start_time <= classifier.start_time && classifier.end_time <= intent.end_time);
    h.assert_state_empty();
}

#[tokio::test]
async fn runner_tool_turn() {
    let h = Harness::new();
    runner(&h, tool_runtime(wordcount()))
        .turn("use the tool", "s")
        .await
        .unwrap();
    let spans = h.spans();
    assert_well_formed(&spans);
    let tool = named(&spans, "agent.tool_call.wordcount");
    assert_eq!(parent_name(&spans, tool).as_deref(), Some("agent.turn"));
    assert_eq!(tool.status, Status::Ok);
    assert_eq!(attr_s(tool, "gen_ai.tool.call.id"), "tc_1");
    assert_eq!(
        attr(named(&spans, "agent.turn"), "kaos.tool_call_count"),
        Some(Value::I64(1))
    );
    h.assert_state_empty();
}

/// A tool name the model made up is model output: redacted before it names a span, so a
/// token the model echoed never reaches the trace (or the tree, or the audit trail), and a
/// made-up registered name is taken as it is. The turn's model is the chat spans' model name.
#[tokio::test]
async fn a_made_up_tool_name_is_redacted_in_span_names() {
    const TOKEN: &str = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    let h = Harness::new();
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", FunctionClient::new(routing_model(TOKEN, json!({}))))
        .with_tool(wordcount());
    let _ = runner(&h, runtime).turn("use the tool", "s").await;
    let spans = h.spans();
    let tool = spans
        .iter()
        .find(|s| s.name.starts_with("agent.tool_call."))
        .expect("a tool span");
    assert_eq!(tool.name, "agent.tool_call.[REDACTED:github_pat]");
    for span in &spans {
        assert!(!span.name.contains(TOKEN), "{}", span.name);
        for kv in &span.attributes {
            assert!(
                !kv.value.as_str().contains(TOKEN),
                "{} {}",
                span.name,
                kv.key
            );
        }
    }
    let turn = named(&spans, "agent.turn");
    let chat = spans.iter().find(|s| s.name.starts_with("chat ")).unwrap();
    assert_eq!(
        attr(turn, "gen_ai.request.model"),
        attr(chat, "gen_ai.request.model")
    );
}

/// `kaos.result_truncated` reaches the exported `execute_tool` span, from the tool's own cut
/// (`ToolOutput::truncated`) as from the prompt cap (with the size it cut from).
#[tokio::test]
async fn runner_tool_span_says_the_result_was_truncated() {
    let cut = FnTool::new("wordcount", "Counts words.", |_: TextArgs| async move {
        kaos_agents::ToolOutput::text("[output truncated by the tool] 3").mark_truncated()
    })
    .read_only();
    let h = Harness::new();
    runner(&h, tool_runtime(cut))
        .turn("use the tool", "s")
        .await
        .unwrap();
    let spans = h.spans();
    let tool = named(&spans, "agent.tool_call.wordcount");
    assert_eq!(attr(tool, "kaos.result_truncated"), Some(Value::Bool(true)));
    assert_eq!(attr(tool, "kaos.result_original_bytes"), None);

    let long = FnTool::new("wordcount", "Counts words.", |_: TextArgs| async move {
        "y".repeat(3000)
    })
    .read_only();
    let h = Harness::new();
    let agent = Agent::builder()
        .name("tester")
        .model("fake")
        .max_tool_result_bytes(1024)
        .build()
        .unwrap();
    Runner::new(agent, tool_runtime(long))
        .with_shared_hook(h.hook.clone())
        .turn("use the tool", "s")
        .await
        .unwrap();
    let spans = h.spans();
    let tool = named(&spans, "agent.tool_call.wordcount");
    assert_eq!(attr(tool, "kaos.result_truncated"), Some(Value::Bool(true)));
    assert_eq!(
        attr(tool, "kaos.result_original_bytes"),
        Some(Value::I64(3000))
    );

    let h = Harness::new();
    runner(&h, tool_runtime(wordcount()))
        .turn("use the tool", "s")
        .await
        .unwrap();
    let spans = h.spans();
    let tool = named(&spans, "agent.tool_call.wordcount");
    assert_eq!(
        attr(tool, "kaos.result_truncated"),
        Some(Value::Bool(false))
    );
}

#[tokio::test]
async fn runner_auth_failure() {
    let h = Harness::new();
    let client = FunctionClient::new(
        |_: &[kaos_llm::Message], _: &kaos_llm::LlmRequest| -> Result<ProviderResponse, LlmError> {
            Err(LlmError::Auth {
                provider: "function".into(),
                status: 401,
                message: "no key".into(),
            })
        },
    );
    let err = runner(&h, KaosRuntime::test_mode().with_client("fake", client))
        .turn("hi", "s")
        .await;
    assert!(err.is_err());
    let spans = h.spans();
    assert_well_formed(&spans);
    let turn = named(&spans, "agent.turn");
    assert!(matches!(turn.status, Status::Error { .. }));
    assert_eq!(attr_s(turn, "kaos.error_type"), "auth_failure");
    assert_eq!(attr_s(turn, "kaos.outcome"), "failed");
    h.assert_state_empty();
}

#[tokio::test]
async fn runner_paused_turn() {
    let h = Harness::new();
    let tool = FnTool::new("wordcount", "Deletes words.", |_: TextArgs| async {
        "done".to_string()
    })
    .destructive();
    let response = runner(&h, tool_runtime(tool))
        .turn("use the tool", "s")
        .await
        .unwrap();
    assert_eq!(response.outcome, TurnOutcome::Paused);
    let spans = h.spans();
    assert_well_formed(&spans);
    let tool = named(&spans, "agent.tool_call.wordcount");
    assert_eq!(tool.status, Status::Unset);
    assert_eq!(attr_s(tool, "kaos.cancel_reason"), "awaiting_approval");
    assert_eq!(
        attr(tool, "kaos.approval_required"),
        Some(Value::Bool(true))
    );
    assert_eq!(named(&spans, "agent.turn").status, Status::Unset);
    h.assert_state_empty();
}

#[tokio::test]
async fn resumed_turn_links_to_the_paused_turn() {
    let h = Harness::new();
    let tool = FnTool::new("wordcount", "Deletes words.", |_: TextArgs| async {
        "done".to_string()
    })
    .destructive();
    let runner = runner(&h, tool_runtime(tool));
    let paused = runner.turn("use the tool", "s").await.unwrap();
    assert_eq!(paused.outcome, TurnOutcome::Paused);
    let resumed: Vec<_> = runner
        .resume(paused.run_id.clone(), "s", kaos_agents::Approval::Approve)
        .collect()
        .await;
    assert!(!resumed.is_empty());
    let spans = h.spans();
    assert_well_formed(&spans);
    let turns: Vec<_> = spans.iter().filter(|s| s.name == "agent.turn").collect();
    assert_eq!(turns.len(), 2);
    let (first, second) = if attr(turns[0], "kaos.resumed_from").is_some() {
        (turns[1], turns[0])
    } else {
        (turns[0], turns[1])
    };
    assert_eq!(attr_s(second, "kaos.resumed_from"), paused.run_id);
    let links: Vec<_> = second.links.iter().collect();
    assert_eq!(links.len(), 1, "the resumed turn links to the paused one");
    assert_eq!(
        links[0].span_context.span_id(),
        first.span_context.span_id()
    );
    h.assert_state_empty();
}

/// Resumed by another process (another hook, the same store): the resumed turn still links
/// to the paused one, through the traceparent its run state kept, and continues a caller's
/// traceparent given to the resume.
#[tokio::test]
async fn a_turn_resumed_elsewhere_links_to_the_paused_turn() {
    let tool = || {
        FnTool::new("wordcount", "Deletes words.", |_: TextArgs| async {
            "done".to_string()
        })
        .destructive()
    };
    let runtime = tool_runtime(tool());
    let first = Harness::new();
    let paused = runner(&first, runtime.clone())
        .turn("use the tool", "s")
        .await
        .unwrap();
    assert_eq!(paused.outcome, TurnOutcome::Paused);
    let paused_turn = named(&first.spans(), "agent.turn").span_context.clone();
    let second = Harness::new();
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let options = RunOptions {
        traceparent: Some(caller.into()),
        tracestate: None,
    };
    let resumed: Vec<_> = runner(&second, runtime)
        .resume_with_options(
            paused.run_id.clone(),
            "s",
            kaos_agents::Approval::Approve,
            false,
            options,
        )
        .collect()
        .await;
    assert!(!resumed.is_empty());
    let spans = second.spans();
    let turn = named(&spans, "agent.turn");
    let links: Vec<_> = turn.links.iter().collect();
    assert_eq!(links.len(), 1, "the resumed turn links to the paused one");
    assert_eq!(links[0].span_context.span_id(), paused_turn.span_id());
    assert_eq!(links[0].span_context.trace_id(), paused_turn.trace_id());
    assert_eq!(
        turn.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

#[tokio::test]
async fn runner_dropped_stream_ends_every_span() {
    let h = Harness::new();
    let entered = Arc::new(tokio::sync::Notify::new());
    let signal = entered.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let tool = FnTool::new("wordcount", "Hangs.", move |_: TextArgs| {
        let signal = signal.clone();
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            signal.notify_one();
            futures::future::pending::<()>().await;
            String::new()
        }
    })
    .read_only();
    let runner = runner(&h, tool_runtime(tool));
    let mut stream = runner.run("use the tool", "cancel-me");
    while let Some(e) = stream.next().await {
        if e.is_span(SpanSubject::ToolCall, SpanPhase::Start) {
            break;
        }
    }
    tokio::select! {
        _ = stream.next() => panic!("the tool never finishes"),
        _ = entered.notified() => {}
    }
    assert!(h.hook.open_span_count() >= 2);
    drop(stream);
    let spans = h.spans();
    assert_well_formed(&spans);
    for name in ["agent.tool_call.wordcount", "agent.turn"] {
        let s = named(&spans, name);
        assert_eq!(s.status, Status::Unset);
        assert_eq!(attr(s, "kaos.cancelled"), Some(Value::Bool(true)));
    }
    h.assert_state_empty();
}

#[tokio::test]
async fn runner_traceparent_option() {
    let h = Harness::new();
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", FunctionClient::new(routing_model("x", json!({}))));
    let options = RunOptions {
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: Some("vendor=abc".into()),
    };
    let _: Vec<_> = runner(&h, runtime)
        .run_with("hi", "tp", options)
        .collect()
        .await;
    let spans = h.spans();
    let turn = named(&spans, "agent.turn");
    assert_eq!(
        turn.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(turn.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(
        spans
            .iter()
            .all(|s| s.span_context.trace_id() == turn.span_context.trace_id())
    );
    // The caller's tracestate travels with its trace, on every span continuing it.
    assert!(
        spans
            .iter()
            .all(|s| s.span_context.trace_state().header() == "vendor=abc"),
        "{:?}",
        spans
            .iter()
            .map(|s| s.span_context.trace_state().header())
            .collect::<Vec<_>>()
    );
}
