//! Hooks are called outside the scope's lock: a hook may call back into the run, events
//! reach the hooks in sequence order (also when recorded from inside a hook or from two
//! threads), and a panic in `flush`/`shutdown` is isolated like one in `on_event`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use kaos_agents::hooks::{HookError, RecordingHook};
use kaos_agents::testing::ScopeDriver;
use kaos_agents::{
    Agent, Event, EventKind, FnHook, FnTool, Hook, HookSet, KaosRuntime, Runner, SpanPhase,
    SpanSubject, TurnScope, attrs,
};
use kaos_llm::FunctionClient;
use serde_json::json;

use crate::util::{assert_well_formed, labels, routing_model};

/// What the reading hook saw: the event's label, open spans, the innermost open span.
type Seen = (String, usize, Option<String>);

/// A hook that reads the live scope of the turn it observes (handed over by a tool) on
/// every event: before hooks ran outside the lock, this deadlocked on the first read.
#[tokio::test]
async fn a_hook_that_reads_the_running_scope_does_not_deadlock() {
    let slot: Arc<OnceLock<TurnScope>> = Arc::new(OnceLock::new());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let tool_slot = slot.clone();
    let grab = FnTool::from_json(
        "grab",
        "Hands its scope over.",
        json!({"type": "object"}),
        move |_, ctx: kaos_agents::ToolContext| {
            let slot = tool_slot.clone();
            async move {
                if let Some(scope) = ctx.scope() {
                    let _ = slot.set(scope.clone());
                }
                "grabbed".to_string()
            }
        },
    );
    let (hook_slot, hook_seen) = (slot.clone(), seen.clone());
    let reader = FnHook::new(move |e: &Event| {
        if let Some(scope) = hook_slot.get() {
            // Every read takes the scope's lock, from inside the hook call.
            let open = scope.open_span_count();
            let current = scope.current_span().map(|s| s.to_string());
            assert!(scope.halted().is_none());
            hook_seen.lock().unwrap().push((e.label(), open, current));
        }
    });
    let runtime = KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("grab", json!({}))),
        )
        .with_tool(grab);
    let agent = Agent::builder().model("fake").build().unwrap();
    let rec = Arc::new(RecordingHook::new());
    let runner = Runner::new(agent, runtime)
        .with_hook(reader)
        .with_shared_hook(rec.clone());
    let response = runner.turn("use the tool", "s").await.unwrap();
    assert_eq!(response.tool_calls.len(), 1);
    let events = rec.events();
    assert_well_formed(&events);
    let turn_id = events[0].span().unwrap().span_id.to_string();
    let seen = seen.lock().unwrap().clone();
    // The hook saw the bookkeeping already done for the event it is handed: the tool span
    // is closed at its END, the turn span at its END.
    let at = |label: &str| seen.iter().find(|(l, ..)| l == label).cloned().unwrap();
    assert_eq!(
        at("span(tool_call,complete)"),
        ("span(tool_call,complete)".into(), 1, Some(turn_id))
    );
    assert_eq!(
        at("span(turn,complete)"),
        ("span(turn,complete)".into(), 0, None)
    );
    assert_eq!(at("turn_summary"), ("turn_summary".into(), 0, None));
}

/// A hook that emits into the scope it is observing: the new event is delivered after the
/// current one (never nested inside it), to every hook, in sequence order.
#[test]
fn an_event_emitted_from_inside_a_hook_is_delivered_right_after_the_current_one() {
    let slot: Arc<OnceLock<TurnScope>> = Arc::new(OnceLock::new());
    let inside = Arc::new(AtomicBool::new(false));
    let nested_calls = Arc::new(AtomicUsize::new(0));
    let (hook_slot, hook_inside, hook_nested) =
        (slot.clone(), inside.clone(), nested_calls.clone());
    let emitter = FnHook::new(move |e: &Event| {
        if hook_inside.swap(true, Ordering::SeqCst) {
            hook_nested.fetch_add(1, Ordering::SeqCst);
        }
        if e.is_span(SpanSubject::Turn, SpanPhase::Start)
            && let Some(scope) = hook_slot.get()
        {
            scope.emit(EventKind::TextDelta {
                content: "from a hook".into(),
                span_id: None,
            });
        }
        hook_inside.store(false, Ordering::SeqCst);
    });
    let rec = Arc::new(RecordingHook::new());
    let mut hooks = HookSet::default();
    hooks.push(Arc::new(emitter));
    hooks.push(rec.clone());
    let scope = TurnScope::new("s".into(), "run_1".into(), "a".into(), hooks);
    slot.set(scope.clone()).unwrap();
    let (turn, _) = scope.start_span(SpanSubject::Turn, "turn.1", attrs! {"turn_number" => 1});
    scope.end_span(&turn, SpanPhase::Complete, attrs! {}, None);
    let streamed: Vec<Event> = std::iter::from_fn(|| scope.pop()).collect();
    let recorded = rec.events();
    assert_eq!(
        labels(&recorded),
        ["span(turn,start)", "text_delta", "span(turn,complete)"]
    );
    let sequences: Vec<u64> = recorded.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [0, 1, 2]);
    assert_eq!(
        streamed.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [0, 1, 2],
        "the stream gets them in the same order"
    );
    assert_eq!(
        nested_calls.load(Ordering::SeqCst),
        0,
        "no hook call ran inside another"
    );
}

/// Two threads emitting on one scope: each hook sees the events in sequence order.
#[test]
fn events_from_two_threads_reach_the_hooks_in_sequence_order() {
    let order: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink = order.clone();
    let mut hooks = HookSet::default();
    hooks.push(Arc::new(FnHook::new(move |e: &Event| {
        // Some work between reading the sequence and recording it widens any race.
        let text = serde_json::to_string(e).unwrap();
        assert!(!text.is_empty());
        sink.lock().unwrap().push(e.sequence);
    })));
    let scope = TurnScope::new("s".into(), "run_1".into(), "a".into(), hooks);
    std::thread::scope(|threads| {
        for t in 0..2 {
            let scope = scope.clone();
            threads.spawn(move || {
                for i in 0..500 {
                    scope.emit(EventKind::TextDelta {
                        content: format!("{t}-{i}"),
                        span_id: None,
                    });
                }
            });
        }
    });
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 1000);
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "delivered out of sequence order"
    );
    let streamed: Vec<u64> = std::iter::from_fn(|| scope.pop())
        .map(|e| e.sequence)
        .collect();
    assert_eq!(streamed, order);
}

struct Lifecycle {
    panics: bool,
    flushed: AtomicUsize,
}

impl Hook for Lifecycle {
    fn name(&self) -> &str {
        if self.panics { "panicky" } else { "steady" }
    }
    fn flush(&self) -> Result<(), HookError> {
        if self.panics {
            panic!("flush bug");
        }
        self.flushed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn shutdown(&self) -> Result<(), HookError> {
        if self.panics {
            panic!("shutdown bug");
        }
        self.flushed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_panic_in_flush_or_shutdown_is_isolated_counted_and_reported() {
    let steady = Arc::new(Lifecycle {
        panics: false,
        flushed: AtomicUsize::new(0),
    });
    let mut hooks = HookSet::default();
    hooks.push(Arc::new(Lifecycle {
        panics: true,
        flushed: AtomicUsize::new(0),
    }));
    hooks.push(steady.clone());
    let errors = hooks.flush();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].hook, "panicky");
    assert!(
        errors[0].message.contains("flush panicked: flush bug"),
        "{}",
        errors[0]
    );
    let errors = hooks.shutdown();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .message
            .contains("shutdown panicked: shutdown bug"),
        "{}",
        errors[0]
    );
    assert_eq!(
        steady.flushed.load(Ordering::SeqCst),
        2,
        "the other hook still ran"
    );
    assert_eq!(hooks.panic_count(), 2);
}

/// A tool sees its turn's runtime only through the narrow `ToolHost`: the other tools and
/// the model clients.
#[tokio::test]
async fn a_tool_reaches_other_tools_and_clients_through_its_host() {
    let inner = FnTool::new("inner", "Says hi.", |_: serde_json::Value| async { "hi" });
    let outer = FnTool::from_json(
        "outer",
        "Calls inner.",
        json!({"type": "object"}),
        |_, ctx: kaos_agents::ToolContext| async move {
            let host = ctx.host().expect("a turn's tool has a host");
            assert!(host.client("fake").is_ok());
            let inner = host.tool("inner").expect("inner is registered");
            inner.call(json!({}), &ctx).await.text
        },
    );
    let runtime = KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("outer", json!({}))),
        )
        .with_tool(inner)
        .with_tool(outer);
    let agent = Agent::builder().model("fake").build().unwrap();
    let response = Runner::new(agent, runtime)
        .turn("use the tool", "s")
        .await
        .unwrap();
    assert_eq!(response.text, "result was: hi");
}
