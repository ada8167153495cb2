//! Pause on approval, resume with approve / deny, resume in a fresh runner.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use kaos_agents::{
    Agent, AgentResponse, Approval, Event, EventKind, FnGate, FnTool, HookAction, KaosRuntime,
    ProviderResponse, Runner, SpanPhase, SpanSubject, TurnOutcome,
};
use serde_json::json;

use crate::support::{Call, assert_balanced, classify, last_tool_result, model, tree};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct DeleteArgs {
    path: String,
}

fn setup() -> (KaosRuntime, Agent, Arc<AtomicUsize>) {
    setup_with(true)
}

fn setup_with(confirm: bool) -> (KaosRuntime, Agent, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let tool = FnTool::new("delete_file", "Deletes a file.", move |a: DeleteArgs| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            format!("deleted {}", a.path)
        }
    });
    let tool = if confirm {
        tool.requires_confirmation()
    } else {
        tool
    };
    let m = model(|call, messages| match call {
        Call::Classify => classify("tool_use"),
        Call::React => match last_tool_result(messages) {
            Some(r) => ProviderResponse::from_text(format!("Result: {r}")).with_usage(5, 5),
            None => {
                ProviderResponse::from_tool_call("tc_del", "delete_file", json!({"path": "/tmp/x"}))
                    .with_usage(5, 5)
            }
        },
        _ => ProviderResponse::from_text("unexpected"),
    });
    let rt = KaosRuntime::test_mode().with_client("m", m).with_tool(tool);
    let agent = Agent::builder().name("ops").model("m").build().unwrap();
    (rt, agent, runs)
}

async fn pause(runner: &Runner, session: &str) -> (Vec<Event>, String) {
    let events: Vec<Event> = runner.run("delete /tmp/x", session).collect().await;
    assert_balanced(&events);
    let r = AgentResponse::from_events(&events, session).unwrap();
    assert_eq!(r.outcome, TurnOutcome::Paused);
    let pending = r.pending_approval.unwrap();
    assert_eq!(
        pending.run_state_ref.as_deref(),
        Some(format!("session:{session}#pending_runs/{}", r.run_id).as_str())
    );
    (events, r.run_id)
}

#[tokio::test]
async fn pause_then_approve_runs_the_tool_exactly_once() {
    let (rt, agent, runs) = setup();
    let runner = Runner::new(agent, rt.clone());
    let (events, run_id) = pause(&runner, "p1").await;
    assert_eq!(
        tree(&events),
        vec![
            "span(turn,start) turn.1",
            "  span(llm_call,start) llm_call.intent_classification",
            "  span(llm_call,complete) llm_call.intent_classification",
            "  intent_classified",
            "  usage_observed",
            "  span(llm_call,start) llm_call.react",
            "  span(llm_call,complete) llm_call.react",
            "  usage_observed",
            "  span(tool_call,start) tool.delete_file",
            "    tool_call_approval_required",
            "  span(tool_call,cancelled) tool.delete_file",
            "span(turn,complete) turn.1",
            "turn_summary",
        ]
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "nothing ran before approval"
    );
    let session = rt.store().load("p1").await.unwrap().unwrap();
    assert!(session.pending_runs.contains_key(&run_id));
    assert_eq!(session.messages.len(), 1, "the user message is saved");
    assert_eq!(runner.pending_runs("p1").await.len(), 1);

    let resumed: Vec<Event> = runner
        .resume(&run_id, "p1", Approval::Approve)
        .collect()
        .await;
    assert_balanced(&resumed);
    assert_eq!(
        tree(&resumed),
        vec![
            "span(turn,start) turn.1",
            "  span(tool_call,start) tool.delete_file",
            "  span(tool_call,complete) tool.delete_file",
            "  span(llm_call,start) llm_call.react",
            "    text_delta",
            "  span(llm_call,complete) llm_call.react",
            "  usage_observed",
            "span(turn,complete) turn.1",
            "turn_summary",
        ]
    );
    let start = resumed[0].span().unwrap();
    assert_eq!(start.attr_str("resumed_from"), Some(run_id.as_str()));
    assert_ne!(&*resumed[0].run_id, run_id.as_str(), "a new run");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the tool body ran exactly once"
    );
    let r = AgentResponse::from_events(&resumed, "p1").unwrap();
    assert_eq!(r.text, "Result: deleted /tmp/x");
    assert_eq!(r.tool_calls.len(), 1);
    let session = rt.store().load("p1").await.unwrap().unwrap();
    assert!(
        session.pending_runs.is_empty(),
        "the paused state is removed"
    );
    assert_eq!(session.turn_count, 1);
    assert_eq!(session.messages.len(), 2);

    // Resuming again is refused as already resumed, and runs nothing.
    let again: Vec<Event> = runner
        .resume(&run_id, "p1", Approval::Approve)
        .collect()
        .await;
    assert_balanced(&again);
    let err = AgentResponse::from_events(&again, "p1").unwrap_err();
    assert!(err.to_string().contains("run_already_resumed"), "{err}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn pause_then_deny_gives_the_model_a_denied_result() {
    let (rt, agent, runs) = setup();
    let runner = Runner::new(agent, rt);
    let (_, run_id) = pause(&runner, "p2").await;
    let resumed: Vec<Event> = runner
        .resume(
            &run_id,
            "p2",
            Approval::Deny {
                reason: "not today".into(),
            },
        )
        .collect()
        .await;
    assert_balanced(&resumed);
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a denied tool never runs");
    let end = resumed
        .iter()
        .filter_map(Event::span)
        .find(|s| s.subject == SpanSubject::ToolCall && s.phase.is_terminal())
        .unwrap();
    assert_eq!(end.phase, SpanPhase::Error);
    assert_eq!(end.error.as_ref().unwrap().error_type, "approval_denied");
    let r = AgentResponse::from_events(&resumed, "p2").unwrap();
    assert!(
        r.text.contains("denied") && r.text.contains("not today"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn resume_in_a_fresh_runner_with_the_same_store() {
    let (rt, agent, runs) = setup();
    let (_, run_id) = pause(&Runner::new(agent.clone(), rt.clone()), "p3").await;
    // A different runner (as another process would build) over the same store.
    let fresh = Runner::new(agent, rt);
    let resumed: Vec<Event> = fresh
        .resume(&run_id, "p3", Approval::Approve)
        .collect()
        .await;
    assert_balanced(&resumed);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let r = AgentResponse::from_events(&resumed, "p3").unwrap();
    assert_eq!(r.text, "Result: deleted /tmp/x");
}

#[tokio::test]
async fn hook_require_approval_pauses_and_the_approval_covers_that_call_only() {
    let (rt, _, runs) = setup_with(false);
    let rt = rt.with_store(Arc::new(kaos_agents::InMemoryStore::new()));
    // A plain tool (no confirmation annotation) gated by a hook instead.
    let agent = Agent::builder()
        .name("ops")
        .model("m")
        .permission("delete_file", kaos_agents::PermissionDecision::Allow)
        .build()
        .unwrap();
    let runner = Runner::new(agent, rt).with_hook(FnGate::new(|_| HookAction::RequireApproval));
    let (_, run_id) = pause(&runner, "p4").await;
    let resumed: Vec<Event> = runner
        .resume(&run_id, "p4", Approval::Approve)
        .collect()
        .await;
    assert_balanced(&resumed);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(matches!(
        &resumed.last().unwrap().kind,
        EventKind::TurnSummary(s) if s.outcome == TurnOutcome::Completed
    ));
}

#[tokio::test]
async fn resume_runs_the_rest_of_the_interrupted_round() {
    let (rt, agent, runs) = setup();
    let reads = Arc::new(AtomicUsize::new(0));
    let r2 = reads.clone();
    let rt = rt.with_tool(
        FnTool::new("read_file", "Reads a file.", move |a: DeleteArgs| {
            r2.fetch_add(1, Ordering::SeqCst);
            async move { format!("contents of {}", a.path) }
        })
        .read_only(),
    );
    let m = model(|call, messages| match call {
        Call::Classify => classify("tool_use"),
        Call::React => match last_tool_result(messages) {
            Some(r) => ProviderResponse::from_text(format!("last: {r}")),
            None => {
                ProviderResponse::from_tool_call("tc_del", "delete_file", json!({"path": "/a"}))
                    .with_tool_call("tc_read", "read_file", json!({"path": "/b"}))
            }
        },
        _ => ProviderResponse::from_text("unexpected"),
    });
    let rt = rt.with_client("m", m);
    let runner = Runner::new(agent, rt);
    let (_, run_id) = pause(&runner, "p5").await;
    assert_eq!(
        reads.load(Ordering::SeqCst),
        0,
        "calls after the paused one wait too"
    );
    let resumed: Vec<Event> = runner
        .resume(&run_id, "p5", Approval::Approve)
        .collect()
        .await;
    assert_balanced(&resumed);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    let names: Vec<String> = resumed
        .iter()
        .filter_map(Event::span)
        .filter(|s| s.phase == SpanPhase::Start)
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(
        names,
        vec![
            "turn.1",
            "tool.delete_file",
            "tool.read_file",
            "llm_call.react"
        ]
    );
    let r = AgentResponse::from_events(&resumed, "p5").unwrap();
    assert_eq!(r.text, "last: contents of /b");
}
