//! The runner and the CHAT pattern: golden event sequences, guarded tools, cancellation,
//! concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kaos_agents::hooks::{FnGate, RecordingHook};
use kaos_agents::{
    Agent, Event, EventKind, FnHook, FnTool, Hook, HookAction, Intent, KaosRuntime, LlmError,
    PermissionDecision, Runner, SpanPhase, SpanSubject, ToolOutput, TurnError, TurnOutcome,
};
use kaos_llm::{FunctionClient, ProviderResponse};
use serde_json::json;

use crate::util::{assert_well_formed, is_classifier, labels, routing_model};

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

fn runner_with(runtime: KaosRuntime) -> (Runner, Arc<RecordingHook>) {
    let agent = Agent::builder()
        .name("tester")
        .model("fake")
        .build()
        .unwrap();
    let rec = Arc::new(RecordingHook::new());
    let runner = Runner::new(agent, runtime).with_shared_hook(rec.clone());
    (runner, rec)
}

fn tool_runtime(tool: FnTool) -> KaosRuntime {
    KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("wordcount", json!({"text": "a b c"}))),
        )
        .with_tool(tool)
}

#[tokio::test]
async fn respond_turn_golden_sequence() {
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", FunctionClient::new(routing_model("x", json!({}))));
    let (runner, rec) = runner_with(runtime);
    let response = runner.turn("Summarize the lease.", "s1").await.unwrap();
    let events = rec.events();
    assert_eq!(
        labels(&events),
        [
            "span(turn,start)",
            "span(llm_call,start)",
            "span(llm_call,complete)",
            "intent_classified",
            "usage_observed",
            "span(llm_call,start)",
            "text_delta",
            "span(llm_call,complete)",
            "usage_observed",
            "span(turn,complete)",
            "turn_summary",
        ]
    );
    assert_well_formed(&events);
    let turn_id = events[0].span().unwrap().span_id.clone();
    assert_eq!(events[0].span().unwrap().parent_span_id, None);
    assert_eq!(
        events[1].span().unwrap().parent_span_id.as_ref(),
        Some(&turn_id)
    );
    assert_eq!(
        events[1].span().unwrap().attr_str("purpose"),
        Some("intent_classification")
    );
    assert_eq!(response.text, "echo: Summarize the lease.");
    assert_eq!(response.intent.unwrap().intent, Intent::Respond);
    assert_eq!(response.turn_number, 1);
    // Totals include the classifier: 110 + 220.
    assert_eq!(response.tokens_used, 330);
    assert_eq!(
        response.cost_usd, None,
        "function-test has no price: unknown, not zero"
    );
    let second = runner.turn("Again", "s1").await.unwrap();
    assert_eq!(second.turn_number, 2);
}

#[tokio::test]
async fn usage_events_add_up_to_the_summary() {
    let (runner, rec) = runner_with(tool_runtime(wordcount()));
    runner.turn("use the tool please", "s").await.unwrap();
    let events = rec.events();
    let mut sum = 0;
    let mut summary_tokens = 0;
    for e in &events {
        match &e.kind {
            EventKind::UsageObserved { total_tokens, .. } => sum += total_tokens,
            EventKind::TurnSummary(s) => summary_tokens = s.tokens_used,
            _ => {}
        }
    }
    assert_eq!(sum, 110 + 55 + 66);
    assert_eq!(summary_tokens, sum);
}

#[tokio::test]
async fn tool_turn_golden_sequence() {
    let (runner, rec) = runner_with(tool_runtime(wordcount()));
    let response = runner.turn("use the tool on a b c", "s").await.unwrap();
    let events = rec.events();
    assert_eq!(
        labels(&events),
        [
            "span(turn,start)",
            "span(llm_call,start)",
            "span(llm_call,complete)",
            "intent_classified",
            "usage_observed",
            "span(llm_call,start)",
            "span(llm_call,complete)",
            "usage_observed",
            "span(tool_call,start)",
            "span(tool_call,complete)",
            "span(llm_call,start)",
            "text_delta",
            "span(llm_call,complete)",
            "usage_observed",
            "span(turn,complete)",
            "turn_summary",
        ]
    );
    assert_well_formed(&events);
    let turn_id = events[0].span().unwrap().span_id.clone();
    let tool = events[8].span().unwrap();
    assert_eq!(tool.parent_span_id.as_ref(), Some(&turn_id));
    assert_eq!(tool.name, "tool.wordcount");
    assert_eq!(tool.attributes["arguments"], json!({"text": "a b c"}));
    assert_eq!(tool.attributes["permission"], "allow");
    let done = events[9].span().unwrap();
    assert_eq!(done.attributes["result_summary"], "3");
    assert_eq!(done.attributes["is_error"], false);
    assert_eq!(response.text, "result was: 3");
    assert_eq!(response.tool_calls.len(), 1);
    assert!(!response.tool_calls[0].is_error);
}

fn tool_span_end(events: &[Event]) -> kaos_agents::SpanEvent {
    events
        .iter()
        .filter_map(Event::span)
        .find(|s| s.subject == SpanSubject::ToolCall && s.phase != SpanPhase::Start)
        .cloned()
        .expect("a tool_call terminal phase")
}

#[tokio::test]
async fn denied_tool_is_not_run_and_the_model_sees_an_error() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let tool = FnTool::new("wordcount", "Counts words.", move |_: TextArgs| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "3".to_string() }
    });
    let fake = Arc::new(FunctionClient::new(routing_model(
        "wordcount",
        json!({"text": "a"}),
    )));
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", fake.clone())
        .with_tool(tool);
    let agent = Agent::builder()
        .model("fake")
        .permission("word*", PermissionDecision::Deny)
        .build()
        .unwrap();
    let rec = Arc::new(RecordingHook::new());
    let runner = Runner::new(agent, runtime).with_shared_hook(rec.clone());
    let response = runner.turn("use the tool", "s").await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a denied tool must not run");
    let events = rec.events();
    assert_well_formed(&events);
    let end = tool_span_end(&events);
    assert_eq!(end.phase, SpanPhase::Error);
    assert_eq!(end.error.unwrap().error_type, "permission_denied");
    assert!(response.tool_calls[0].is_error);
    let last_request = fake.requests().last().cloned().unwrap();
    let tool_msg = last_request
        .messages
        .iter()
        .find(|m| m.tool_call_id.is_some())
        .unwrap();
    assert!(tool_msg.is_error && tool_msg.content.contains("denied"));
}

#[tokio::test]
async fn ask_pauses_the_turn_before_the_tool_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let tool = FnTool::new("wordcount", "Deletes words.", move |_: TextArgs| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "done".to_string() }
    })
    .destructive();
    let (runner, rec) = runner_with(tool_runtime(tool));
    let response = runner.turn("use the tool", "s").await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(response.outcome, TurnOutcome::Paused);
    let pending = response.pending_approval.unwrap();
    assert_eq!(pending.tool_name, "wordcount");
    assert!(pending.reason.contains("approval"));
    let events = rec.events();
    assert_well_formed(&events);
    let l = labels(&events);
    let i = l
        .iter()
        .position(|x| x == "tool_call_approval_required")
        .unwrap();
    assert_eq!(&l[i - 1], "span(tool_call,start)");
    assert_eq!(&l[i + 1], "span(tool_call,cancelled)");
    assert_eq!(&l[i + 2], "span(turn,complete)");
    assert_eq!(
        tool_span_end(&events).error.unwrap().error_type,
        "awaiting_approval"
    );
}

#[tokio::test]
async fn a_hook_can_skip_or_require_approval_before_the_tool_runs() {
    for (answer, expect_outcome) in [
        (HookAction::Skip, TurnOutcome::Completed),
        (HookAction::RequireApproval, TurnOutcome::Paused),
    ] {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let tool = FnTool::new("wordcount", "Counts.", move |_: TextArgs| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "3".to_string() }
        })
        .read_only();
        let (runner, rec) = runner_with(tool_runtime(tool));
        let runner = runner.with_hook(FnGate::new(move |_span| answer));
        let response = runner.turn("use the tool", "s").await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 0, "{answer:?}");
        assert_eq!(response.outcome, expect_outcome);
        assert_well_formed(&rec.events());
    }
}

#[tokio::test]
async fn classifier_auth_error_fails_the_turn_with_a_run_error() {
    let client = FunctionClient::new(
        |_: &[kaos_llm::Message], _: &kaos_llm::LlmRequest| -> Result<ProviderResponse, LlmError> {
            Err(LlmError::Auth {
                provider: "function".into(),
                status: 401,
                message: "no key".into(),
            })
        },
    );
    let (runner, rec) = runner_with(KaosRuntime::test_mode().with_client("fake", client));
    let err = runner.turn("hi", "s").await.unwrap_err();
    let TurnError::Failed { failure, response } = err else {
        panic!("expected Failed")
    };
    assert_eq!(failure.error_type, "auth_failure");
    assert!(failure.message.contains("401"));
    assert_eq!(response.outcome, TurnOutcome::Failed);
    let events = rec.events();
    assert_well_formed(&events);
    assert_eq!(
        labels(&events),
        [
            "span(turn,start)",
            "span(llm_call,start)",
            "span(llm_call,error)",
            "run_error",
            "span(turn,error)",
            "turn_summary"
        ]
    );
}

#[tokio::test]
async fn malformed_classifier_output_falls_back_to_the_heuristic() {
    let client = FunctionClient::new(|messages: &[kaos_llm::Message], _: &kaos_llm::LlmRequest| {
        if is_classifier(messages) {
            ProviderResponse::from_text("I think it's a plan, maybe?").with_usage(10, 1)
        } else {
            ProviderResponse::from_text(r#"{"response":"ok"}"#)
        }
    });
    let fake = Arc::new(client);
    let (runner, rec) = runner_with(KaosRuntime::test_mode().with_client("fake", fake.clone()));
    let response = runner.turn("hello", "s").await.unwrap();
    let intent = response.intent.unwrap();
    assert_eq!(intent.intent, Intent::Respond);
    assert!(intent.reasoning.ends_with("(heuristic)"));
    assert_eq!(
        fake.call_count(),
        3,
        "two classifier attempts (one corrective retry) and the respond call"
    );
    let events = rec.events();
    assert_well_formed(&events);
    assert!(labels(&events).contains(&"span(llm_call,error)".to_string()));
    assert_eq!(
        response.tokens_used, 22,
        "the failed attempts' usage still counts"
    );
}

async fn run_failing_tool(
    tool: FnTool,
    agent_timeout: Duration,
) -> (Vec<Event>, kaos_agents::AgentResponse) {
    let runtime = tool_runtime(tool);
    let agent = Agent::builder()
        .model("fake")
        .tool_timeout(agent_timeout)
        .build()
        .unwrap();
    let rec = Arc::new(RecordingHook::new());
    let runner = Runner::new(agent, runtime).with_shared_hook(rec.clone());
    let response = runner.turn("use the tool", "s").await.unwrap();
    (rec.events(), response)
}

#[tokio::test]
async fn tool_error_panic_and_timeout_become_error_spans_and_the_loop_continues() {
    let erroring = FnTool::new("wordcount", "Fails.", |_: TextArgs| async {
        ToolOutput::error("disk on fire")
    });
    let panicking = FnTool::new("wordcount", "Panics.", |_: TextArgs| async {
        if true {
            panic!("boom");
        }
        String::new()
    });
    let slow = FnTool::new("wordcount", "Hangs.", |_: TextArgs| async {
        futures::future::pending::<()>().await;
        String::new()
    });
    for (tool, kind) in [
        (erroring, "tool_error"),
        (panicking, "tool_panic"),
        (slow, "tool_timeout"),
    ] {
        let (events, response) = run_failing_tool(tool, Duration::from_millis(20)).await;
        assert_well_formed(&events);
        let end = tool_span_end(&events);
        assert_eq!(end.phase, SpanPhase::Error, "{kind}");
        assert_eq!(end.error.unwrap().error_type, kind);
        assert_eq!(
            response.outcome,
            TurnOutcome::Completed,
            "{kind}: the loop continues to an answer"
        );
        assert!(
            response.text.starts_with("result was:"),
            "{kind}: {}",
            response.text
        );
    }
}

#[tokio::test]
async fn invalid_tool_arguments_come_back_as_an_error_result() {
    let runtime = KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("wordcount", json!({"txt": 1}))),
        )
        .with_tool(wordcount());
    let (runner, rec) = runner_with(runtime);
    let response = runner.turn("use the tool", "s").await.unwrap();
    assert!(response.tool_calls[0].is_error);
    assert!(
        response.text.contains("invalid arguments"),
        "{}",
        response.text
    );
    assert_well_formed(&rec.events());
}

#[tokio::test]
async fn dropping_the_stream_mid_tool_cancels_every_open_span_and_keeps_the_session() {
    let entered = Arc::new(tokio::sync::Notify::new());
    let signal = entered.clone();
    let tool = FnTool::new("wordcount", "Hangs.", move |_: TextArgs| {
        let signal = signal.clone();
        async move {
            signal.notify_one();
            futures::future::pending::<()>().await;
            String::new()
        }
    })
    .read_only();
    let runtime = tool_runtime(tool);
    let store = runtime.store().clone();
    let (runner, rec) = runner_with(runtime);
    let mut stream = runner.run("use the tool", "cancel-me");
    let mut seen = Vec::new();
    while let Some(e) = stream.next().await {
        let is_tool_start = e.is_span(SpanSubject::ToolCall, SpanPhase::Start);
        seen.push(e);
        if is_tool_start {
            break;
        }
    }
    // Drive the tool until it is really running, then drop the stream.
    tokio::select! {
        _ = stream.next() => panic!("the tool never finishes"),
        _ = entered.notified() => {}
    }
    drop(stream);
    let events = rec.events();
    assert_well_formed(&events);
    let tail = labels(&events[events.len() - 2..]);
    assert_eq!(tail, ["span(tool_call,cancelled)", "span(turn,cancelled)"]);
    assert!(
        store.load("cancel-me").await.unwrap().is_none(),
        "the session must not be half-written"
    );
}

#[tokio::test]
async fn a_panicking_hook_is_isolated_and_counted() {
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", FunctionClient::new(routing_model("x", json!({}))));
    let agent = Agent::builder().model("fake").build().unwrap();
    let rec = Arc::new(RecordingHook::new());
    let runner = Runner::new(agent, runtime)
        .with_hook(FnHook::new(|e: &Event| {
            if e.sequence == 2 {
                panic!("hook bug");
            }
        }))
        .with_shared_hook(rec.clone());
    let response = runner.turn("hi", "s").await.unwrap();
    assert_eq!(response.text, "echo: hi");
    assert_eq!(runner.hooks().panic_count(), 1);
    assert_eq!(rec.events().len(), 11, "the other hook saw every event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_sessions_have_no_cross_talk() {
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", FunctionClient::new(routing_model("x", json!({}))));
    let (runner, _rec) = runner_with(runtime);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let runner = runner.clone();
        tasks.push(tokio::spawn(async move {
            let r = runner
                .turn(format!("message {i}"), format!("session-{i}"))
                .await
                .unwrap();
            (i, r)
        }));
    }
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.text, format!("echo: message {i}"));
        assert_eq!(r.session_id, format!("session-{i}"));
        assert_eq!(r.turn_number, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_turns_on_one_session_lose_nothing() {
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", FunctionClient::new(routing_model("x", json!({}))));
    let store = runtime.store().clone();
    let (runner, _rec) = runner_with(runtime);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let runner = runner.clone();
            tokio::spawn(async move {
                runner
                    .turn(format!("m{i}"), "shared")
                    .await
                    .unwrap()
                    .turn_number
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=20).collect::<Vec<u64>>());
    let session = store.load("shared").await.unwrap().unwrap();
    assert_eq!(session.turn_count, 20);
    assert_eq!(session.messages.len(), 40);
}

#[tokio::test]
async fn events_round_trip_through_json_strictly() {
    let (runner, rec) = runner_with(tool_runtime(wordcount()));
    runner.turn("use the tool", "s").await.unwrap();
    for e in rec.events() {
        let line = e.to_json();
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }
    let mut value = serde_json::to_value(&rec.events()[0]).unwrap();
    value["surprise"] = json!(1);
    assert!(
        serde_json::from_value::<Event>(value).is_err(),
        "unknown fields are rejected"
    );
}

#[tokio::test]
async fn an_unknown_model_spec_fails_the_turn_listing_accepted_forms() {
    let agent = Agent::builder().model("mystery-model").build().unwrap();
    let runner = Runner::new(agent, KaosRuntime::test_mode());
    let err = runner.turn("hi", "s").await.unwrap_err();
    let TurnError::Failed { failure, .. } = err else {
        panic!()
    };
    assert_eq!(failure.error_type, "config_error");
    assert!(
        failure.message.contains("anthropic:"),
        "{}",
        failure.message
    );
}

#[test]
fn hooks_default_methods_do_nothing() {
    struct Nothing;
    impl Hook for Nothing {}
    let _ = Nothing.flush();
}

#[tokio::test]
async fn a_plan_intent_on_a_chat_agent_records_the_mismatch_then_runs_the_tool_loop() {
    let client = FunctionClient::new(
        |messages: &[kaos_llm::Message], request: &kaos_llm::LlmRequest| {
            if is_classifier(messages) {
                ProviderResponse::from_text(
                    r#"{"intent":"plan","confidence":0.8,"reasoning":"steps"}"#,
                )
            } else if request.tools.is_empty() {
                ProviderResponse::from_text(r#"{"response":"no tools"}"#)
            } else if messages.iter().any(|m| m.tool_call_id.is_some()) {
                ProviderResponse::from_text("counted")
            } else {
                ProviderResponse::from_tool_call("tc_1", "wordcount", json!({"text": "a b"}))
            }
        },
    );
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", client)
        .with_tool(wordcount());
    let (runner, rec) = runner_with(runtime);
    let response = runner.turn("first count, then report", "s").await.unwrap();
    let events = rec.events();
    assert_well_formed(&events);
    let mismatch = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::PatternMismatch {
                agent_pattern,
                recommended_pattern,
                fallback,
                ..
            } => Some((
                agent_pattern.clone(),
                recommended_pattern.clone(),
                fallback.clone(),
            )),
            _ => None,
        })
        .expect("a PatternMismatch event");
    assert_eq!(mismatch, ("chat".into(), "plan".into(), "tool_loop".into()));
    assert_eq!(response.text, "counted");
    assert_eq!(response.tool_calls.len(), 1);
}

#[tokio::test]
async fn the_tool_loop_stops_at_max_iterations_with_a_clear_note() {
    // A model that calls the tool forever.
    let client = FunctionClient::new(|messages: &[kaos_llm::Message], _: &kaos_llm::LlmRequest| {
        if is_classifier(messages) {
            ProviderResponse::from_text(
                r#"{"intent":"tool_use","confidence":0.9,"reasoning":"tools"}"#,
            )
        } else {
            ProviderResponse::from_tool_call("tc", "wordcount", json!({"text": "a"}))
        }
    });
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", client)
        .with_tool(wordcount());
    let agent = Agent::builder()
        .model("fake")
        .max_react_iterations(3)
        .build()
        .unwrap();
    let rec = Arc::new(RecordingHook::new());
    let runner = Runner::new(agent, runtime).with_shared_hook(rec.clone());
    let response = runner.turn("loop", "s").await.unwrap();
    assert_eq!(response.tool_calls.len(), 3);
    assert!(response.text.contains("3 tool rounds"), "{}", response.text);
    assert_eq!(response.outcome, TurnOutcome::Completed);
    assert_well_formed(&rec.events());
}

#[tokio::test]
async fn the_second_turn_prompt_includes_the_first_turns_history() {
    let fake = Arc::new(FunctionClient::new(routing_model("x", json!({}))));
    let runtime = KaosRuntime::test_mode().with_client("fake", fake.clone());
    let (runner, _rec) = runner_with(runtime);
    runner.turn("My name is Ada.", "mem").await.unwrap();
    runner.turn("What is my name?", "mem").await.unwrap();
    let respond_prompts: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| !is_classifier(&r.messages))
        .map(|r| {
            r.messages
                .last()
                .map(|m| m.content.clone())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(respond_prompts.len(), 2);
    assert_eq!(respond_prompts[0].matches("user: ").count(), 1);
    assert!(respond_prompts[1].contains("user: My name is Ada."));
    assert!(respond_prompts[1].contains("assistant: echo: My name is Ada."));
    assert!(respond_prompts[1].contains("user: What is my name?"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_on_one_runtime_serialize_turns_on_a_shared_session() {
    // A model that yields, so turns really interleave between loading and saving.
    let route = routing_model("x", json!({}));
    let client = FunctionClient::new_async(move |request: kaos_llm::LlmRequest| {
        let reply = route(&request.messages, &request);
        async move {
            tokio::task::yield_now().await;
            reply
        }
    });
    let runtime = KaosRuntime::test_mode().with_client("fake", client);
    let store = runtime.store().clone();
    let agent = Agent::builder().model("fake").build().unwrap();
    let a = Runner::new(agent.clone(), runtime.clone());
    let b = Runner::new(agent, runtime);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let runner = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { runner.turn(format!("m{i}"), "shared").await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let session = store.load("shared").await.unwrap().unwrap();
    assert_eq!(session.turn_count, 40);
    assert_eq!(
        session.messages.len(),
        80,
        "no lost update between the two runners"
    );
}
