//! The circuit breaker hook and the chat cost cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kaos_agents::hooks::{CircuitBreaker, CircuitState, ManualClock};
use kaos_agents::{
    Agent, Budget, Event, EventKind, FnTool, KaosRuntime, ProviderResponse, Runner, SpanPhase,
    SpanSubject, ToolOutput,
};
use serde_json::json;

use crate::support::{Call, assert_balanced, classify, last_tool_result, model};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Empty {}

fn tool_end(events: &[Event]) -> kaos_agents::SpanEvent {
    events
        .iter()
        .filter_map(Event::span)
        .find(|s| s.subject == SpanSubject::ToolCall && s.phase.is_terminal())
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn breaker_opens_skips_the_tool_then_probes_half_open() {
    let runs = Arc::new(AtomicUsize::new(0));
    let healthy = Arc::new(AtomicBool::new(false));
    let (r2, h2) = (runs.clone(), healthy.clone());
    let tool = FnTool::new("flaky", "Sometimes fails.", move |_: Empty| {
        r2.fetch_add(1, Ordering::SeqCst);
        let ok = h2.load(Ordering::SeqCst);
        async move {
            if ok {
                ToolOutput::text("fine")
            } else {
                ToolOutput::error("boom")
            }
        }
    })
    .read_only();
    let m = model(|call, messages| match call {
        Call::Classify => classify("tool_use"),
        Call::React => match last_tool_result(messages) {
            Some(r) => ProviderResponse::from_text(format!("saw: {r}")),
            None => ProviderResponse::from_tool_call("tc", "flaky", json!({})),
        },
        _ => ProviderResponse::from_text("unexpected"),
    });
    let rt = KaosRuntime::test_mode().with_client("m", m).with_tool(tool);
    let agent = Agent::builder().name("a").model("m").build().unwrap();
    let clock = ManualClock::new();
    let breaker =
        Arc::new(CircuitBreaker::new(2, Duration::from_secs(30)).with_clock(clock.clone()));
    let runner = Runner::new(agent, rt).with_shared_hook(breaker.clone());
    let turn = |session: &'static str| {
        let runner = runner.clone();
        async move {
            let events: Vec<Event> = runner.run("use flaky", session).collect().await;
            assert_balanced(&events);
            events
        }
    };

    // Two failures open the circuit.
    turn("c1").await;
    assert_eq!(breaker.state("flaky"), CircuitState::Closed { failures: 1 });
    turn("c2").await;
    assert!(matches!(breaker.state("flaky"), CircuitState::Open { .. }));
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // Open: the tool is skipped, not run; the model is told why.
    let events = turn("c3").await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "an open circuit does not run the tool"
    );
    let end = tool_end(&events);
    assert_eq!(end.phase, SpanPhase::Error);
    assert_eq!(end.error.unwrap().error_type, "skipped_by_hook");
    let text = match &events.last().unwrap().kind {
        EventKind::TurnSummary(s) => s.text.clone(),
        _ => unreachable!(),
    };
    assert!(text.contains("skipped by a hook"), "{text}");

    // Not yet time: still skipped.
    clock.advance(Duration::from_secs(29));
    turn("c4").await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // Half-open: one probe runs; it fails and the circuit opens again.
    clock.advance(Duration::from_secs(1));
    turn("c5").await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert!(matches!(breaker.state("flaky"), CircuitState::Open { .. }));

    // Next probe succeeds and closes it.
    clock.advance(Duration::from_secs(30));
    healthy.store(true, Ordering::SeqCst);
    let events = turn("c6").await;
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert_eq!(tool_end(&events).phase, SpanPhase::Complete);
    assert_eq!(breaker.state("flaky"), CircuitState::Closed { failures: 0 });
}

#[tokio::test]
async fn half_open_allows_a_single_probe() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::new(1, Duration::from_secs(5)).with_clock(clock.clone());
    let mk = |phase: SpanPhase, is_error: bool| -> Event {
        let mut attributes = serde_json::Map::new();
        attributes.insert("tool_name".into(), json!("t"));
        attributes.insert("is_error".into(), json!(is_error));
        Event {
            timestamp: 0,
            sequence: 0,
            session_id: Arc::from("s"),
            run_id: Arc::from("r"),
            agent: Arc::from("a"),
            kind: EventKind::Span(kaos_agents::SpanEvent {
                subject: SpanSubject::ToolCall,
                phase,
                span_id: Arc::from("0000000000000001"),
                parent_span_id: None,
                name: "tool.t".into(),
                duration_ms: None,
                attributes,
                error: None,
            }),
        }
    };
    let hooks = {
        let mut h = kaos_agents::HookSet::default();
        h.push(Arc::new(breaker));
        h
    };
    use kaos_agents::HookAction;
    assert_eq!(
        hooks.dispatch(&mk(SpanPhase::Start, false)),
        HookAction::Continue
    );
    hooks.dispatch(&mk(SpanPhase::Error, true));
    assert_eq!(
        hooks.dispatch(&mk(SpanPhase::Start, false)),
        HookAction::Skip
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        hooks.dispatch(&mk(SpanPhase::Start, false)),
        HookAction::Continue
    );
    // The probe is in flight: a second call is skipped.
    assert_eq!(
        hooks.dispatch(&mk(SpanPhase::Start, false)),
        HookAction::Skip
    );
    hooks.dispatch(&mk(SpanPhase::Complete, false));
    assert_eq!(
        hooks.dispatch(&mk(SpanPhase::Start, false)),
        HookAction::Continue
    );
    // Open again; a probe that is cancelled (e.g. paused) does not wedge it half-open.
    hooks.dispatch(&mk(SpanPhase::Error, true));
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        hooks.dispatch(&mk(SpanPhase::Start, false)),
        HookAction::Continue
    );
    hooks.dispatch(&mk(SpanPhase::Cancelled, false));
    assert_eq!(
        hooks.dispatch(&mk(SpanPhase::Start, false)),
        HookAction::Continue
    );
}

#[tokio::test]
async fn chat_cost_cap_stops_the_tool_loop_between_model_calls() {
    let m = model(|call, _| {
        match call {
            Call::Classify => classify("tool_use"),
            // Always wants another tool call: only the cap stops it.
            _ => ProviderResponse::from_tool_call("tc", "flaky", json!({})).with_usage(1000, 1000),
        }
        .with_model("anthropic", "claude-haiku-4-5")
    });
    let rt = KaosRuntime::test_mode()
        .with_client("m", m.with_model("claude-haiku-4-5"))
        .with_tool(FnTool::new("flaky", "x", |_: Empty| async { "ok" }).read_only());
    let agent = Agent::builder()
        .name("a")
        .model("m")
        .budget(Budget {
            chat_max_cost_usd: Some(0.001),
            ..Budget::default()
        })
        .build()
        .unwrap();
    let events: Vec<Event> = Runner::new(agent, rt).run("go", "cap").collect().await;
    assert_balanced(&events);
    let react_calls = events
        .iter()
        .filter_map(Event::span)
        .filter(|s| s.name == "llm_call.react" && s.phase == SpanPhase::Start)
        .count();
    assert_eq!(
        react_calls, 1,
        "the cap stopped the loop after the first round"
    );
    let exceeded = events.iter().find_map(|e| match &e.kind {
        EventKind::BudgetExceeded {
            kind,
            limit,
            actual,
            ..
        } => Some((kind.clone(), *limit, *actual)),
        _ => None,
    });
    let (kind, limit, actual) = exceeded.unwrap();
    assert_eq!(kind, "chat_cost");
    assert_eq!(limit, 0.001);
    assert!(actual >= 0.001);
}
