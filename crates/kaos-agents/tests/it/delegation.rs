//! Delegation (agent_as_tool, Runner::delegate), handoff and the depth limit.

use std::sync::Arc;

use futures::StreamExt;
use kaos_agents::hooks::RecordingHook;
use kaos_agents::{
    Agent, Event, EventKind, KaosRuntime, ProviderResponse, Runner, SpanPhase, SpanSubject,
    TurnOutcome, agent_as_tool, handoff_tool,
};
use serde_json::json;

use crate::support::{Call, assert_balanced, classify, last_tool_result, model, span, tree};

fn drafter() -> Agent {
    Agent::builder()
        .name("memo-drafter")
        .model("drafter")
        .tool("none")
        .build()
        .unwrap()
}

pub fn coordinator() -> Agent {
    Agent::builder()
        .name("coordinator")
        .model("coord")
        .tool("memo_drafter")
        .build()
        .unwrap()
}

/// The coordinator calls memo_drafter once, then answers with its result.
pub fn runtime() -> KaosRuntime {
    let drafter_model = model(|call, _| match call {
        Call::Classify => classify("respond"),
        _ => ProviderResponse::from_text(r#"{"response":"DRAFT: Memo to counsel re: filings"}"#)
            .with_usage(100, 50),
    });
    let coord_model = model(|call, messages| match call {
        Call::Classify => classify("tool_use"),
        Call::React => match last_tool_result(messages) {
            Some(result) => {
                ProviderResponse::from_text(format!("Here is the memo: {result}")).with_usage(20, 5)
            }
            None => ProviderResponse::from_tool_call(
                "tc_1",
                "memo_drafter",
                json!({"task": "Draft a memo to counsel about the filings"}),
            )
            .with_usage(20, 5),
        },
        _ => ProviderResponse::from_text("unexpected"),
    });
    KaosRuntime::test_mode()
        .with_client("drafter", drafter_model)
        .with_client("coord", coord_model)
        .with_tool(agent_as_tool(
            drafter(),
            None,
            "memo_drafter",
            "Drafts memos.",
        ))
}

#[tokio::test]
async fn sub_agent_turn_nests_inside_the_tool_call_and_usage_rolls_up() {
    let hook = Arc::new(RecordingHook::new());
    let runner = Runner::new(coordinator(), runtime()).with_shared_hook(hook.clone());
    let events: Vec<Event> = runner.run("Please draft the memo", "s1").collect().await;
    assert_balanced(&events);
    // The hooks saw exactly what the stream yielded (the sub-agent's events included).
    assert_eq!(hook.events().len(), events.len());
    let t = tree(&events);
    let expected = vec![
        "span(turn,start) turn.1",
        "  span(llm_call,start) llm_call.intent_classification",
        "  span(llm_call,complete) llm_call.intent_classification",
        "  intent_classified",
        "  usage_observed",
        "  span(llm_call,start) llm_call.react",
        "  span(llm_call,complete) llm_call.react",
        "  usage_observed",
        "  span(tool_call,start) tool.memo_drafter",
        "    span(subagent,start) subagent.memo-drafter",
        "      span(turn,start) turn.1",
        "        span(llm_call,start) llm_call.intent_classification",
        "        span(llm_call,complete) llm_call.intent_classification",
        "        intent_classified",
        "        usage_observed",
        "        span(llm_call,start) llm_call.respond",
        "          text_delta",
        "        span(llm_call,complete) llm_call.respond",
        "        usage_observed",
        "      span(turn,complete) turn.1",
        "      turn_summary",
        "    span(subagent,complete) subagent.memo-drafter",
        "  span(tool_call,complete) tool.memo_drafter",
        "  span(llm_call,start) llm_call.react",
        "    text_delta",
        "  span(llm_call,complete) llm_call.react",
        "  usage_observed",
        "span(turn,complete) turn.1",
        "turn_summary",
    ];
    assert_eq!(t, expected, "{t:#?}");

    // Parent ids: tool_call -> subagent -> sub turn.
    let tool = span(&events, "span(tool_call,start)", "tool.memo_drafter");
    let sub = span(&events, "span(subagent,start)", "subagent.memo-drafter");
    assert_eq!(sub.parent_span_id.as_ref(), Some(&tool.span_id));
    assert_eq!(sub.attr_str("subagent_name"), Some("memo-drafter"));
    assert!(sub.attr_str("task").unwrap().contains("memo to counsel"));
    let sub_turn = events
        .iter()
        .filter(|e| e.is_span(SpanSubject::Turn, SpanPhase::Start))
        .nth(1)
        .unwrap();
    assert_eq!(
        sub_turn.span().unwrap().parent_span_id.as_ref(),
        Some(&sub.span_id)
    );
    assert_ne!(
        sub_turn.run_id, events[0].run_id,
        "the sub-agent has its own run"
    );
    assert_eq!(&*sub_turn.session_id, "s1/subagent-memo-drafter");
    assert_eq!(&*sub_turn.agent, "memo-drafter");
    // The subagent span belongs to the parent run.
    let sub_event = events
        .iter()
        .find(|e| e.is_span(SpanSubject::Subagent, SpanPhase::Start))
        .unwrap();
    assert_eq!(sub_event.run_id, events[0].run_id);

    let sub_end = span(&events, "span(subagent,complete)", "subagent.memo-drafter");
    // Sub-agent: classifier 10+1, respond 100+50.
    assert_eq!(sub_end.attributes["tokens_used"], json!(161));
    assert!(
        sub_end
            .attr_str("result_summary")
            .unwrap()
            .contains("DRAFT: Memo to counsel")
    );

    let summary = match &events.last().unwrap().kind {
        EventKind::TurnSummary(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    // Parent: classifier 11 + 2 react rounds 25 each = 61; plus the sub-agent's 161.
    assert_eq!(summary.tokens_used, 61 + 161);
    assert!(summary.text.contains("DRAFT: Memo to counsel"));
    assert_eq!(summary.outcome, TurnOutcome::Completed);
}

#[tokio::test]
async fn runner_delegate_streams_the_sub_agent_inside_a_subagent_span() {
    let runner = Runner::new(coordinator(), runtime());
    let events: Vec<Event> = runner
        .delegate(drafter(), "Draft a memo", "s2")
        .collect()
        .await;
    assert_balanced(&events);
    let labels: Vec<String> = events.iter().map(Event::label).collect();
    assert_eq!(labels.first().unwrap(), "span(subagent,start)");
    assert_eq!(labels.last().unwrap(), "span(subagent,complete)");
    assert!(labels.contains(&"turn_summary".to_string()));
    let end = events.last().unwrap().span().unwrap();
    assert_eq!(end.attributes["tokens_used"], json!(161));
    assert!(end.parent_span_id.is_none());
}

#[tokio::test]
async fn handoff_nests_the_target_turn_and_completes() {
    let runner = Runner::new(coordinator(), runtime());
    let events: Vec<Event> = runner
        .handoff(drafter(), "Write the memo", "s3", "drafting is its job")
        .collect()
        .await;
    assert_balanced(&events);
    let t = tree(&events);
    assert_eq!(
        t.first().unwrap(),
        "span(handoff,start) handoff.memo-drafter"
    );
    assert_eq!(
        t.last().unwrap(),
        "span(handoff,complete) handoff.memo-drafter"
    );
    assert!(
        t.contains(&"  span(turn,start) turn.1".to_string()),
        "{t:#?}"
    );
    let start = events[0].span().unwrap();
    assert_eq!(start.attr_str("from_agent"), Some("coordinator"));
    assert_eq!(start.attr_str("to_agent"), Some("memo-drafter"));
    assert_eq!(start.attr_str("reason"), Some("drafting is its job"));
    // The target's turn runs on the same session.
    let turn = events
        .iter()
        .find(|e| e.is_span(SpanSubject::Turn, SpanPhase::Start))
        .unwrap();
    assert_eq!(&*turn.session_id, "s3");
    let end = events.last().unwrap().span().unwrap();
    assert!(end.attr_str("result_summary").unwrap().starts_with("DRAFT"));
    let r = kaos_agents::AgentResponse::from_events(&events, "s3").unwrap();
    assert!(r.text.starts_with("DRAFT"), "{}", r.text);
    assert_eq!(r.run_id, turn.run_id.to_string());
}

#[tokio::test]
async fn handoff_tool_runs_the_target_inside_the_tool_call() {
    let coord_model = model(|call, messages| match call {
        Call::Classify => classify("tool_use"),
        Call::React => match last_tool_result(messages) {
            Some(r) => ProviderResponse::from_text(format!("handed off: {r}")),
            None => ProviderResponse::from_tool_call(
                "tc_h",
                "handoff_to_memo_drafter",
                json!({"task": "take over"}),
            ),
        },
        _ => ProviderResponse::from_text("unexpected"),
    });
    let drafter_model = model(|call, _| match call {
        Call::Classify => classify("respond"),
        _ => ProviderResponse::from_text(r#"{"response":"DRAFT: taken over"}"#),
    });
    let rt = KaosRuntime::test_mode()
        .with_client("coord", coord_model)
        .with_client("drafter", drafter_model)
        .with_tool(handoff_tool(drafter(), None, "Hands off to the drafter."));
    let agent = Agent::builder()
        .name("coordinator")
        .model("coord")
        .tool("handoff_to_*")
        .build()
        .unwrap();
    let events: Vec<Event> = Runner::new(agent, rt).run("go", "s4").collect().await;
    assert_balanced(&events);
    let tool = span(
        &events,
        "span(tool_call,start)",
        "tool.handoff_to_memo_drafter",
    );
    let handoff = span(&events, "span(handoff,start)", "handoff.memo-drafter");
    assert_eq!(handoff.parent_span_id.as_ref(), Some(&tool.span_id));
    let r = kaos_agents::AgentResponse::from_events(&events, "s4").unwrap();
    assert!(r.text.contains("DRAFT: taken over"), "{}", r.text);
}

#[tokio::test]
async fn depth_limit_is_an_error_tool_result_not_a_crash() {
    // An agent that delegates to itself; depth 1 allows one level of nesting only.
    let recurser = Agent::builder()
        .name("recurser")
        .model("rec")
        .tool("recurse")
        .max_delegation_depth(1)
        .build()
        .unwrap();
    let rec_model = model(|call, messages| match call {
        Call::Classify => classify("tool_use"),
        Call::React => match last_tool_result(messages) {
            Some(r) => ProviderResponse::from_text(format!("result: {r}")),
            None => ProviderResponse::from_tool_call("tc", "recurse", json!({"task": "again"})),
        },
        _ => ProviderResponse::from_text("unexpected"),
    });
    let rt = KaosRuntime::test_mode()
        .with_client("rec", rec_model)
        .with_tool(agent_as_tool(
            recurser.clone(),
            None,
            "recurse",
            "Recurses.",
        ));
    let events: Vec<Event> = Runner::new(recurser, rt).run("go", "s5").collect().await;
    assert_balanced(&events);
    let subagents = events
        .iter()
        .filter(|e| e.is_span(SpanSubject::Subagent, SpanPhase::Start))
        .count();
    assert_eq!(subagents, 1, "only one level of nesting ran");
    let refused = events
        .iter()
        .filter_map(Event::span)
        .find(|s| s.subject == SpanSubject::ToolCall && s.phase == SpanPhase::Error)
        .expect("the nested call was refused");
    assert!(
        refused
            .attr_str("result_summary")
            .unwrap()
            .contains("Delegation depth limit reached")
    );
    let r = kaos_agents::AgentResponse::from_events(&events, "s5").unwrap();
    assert_eq!(r.outcome, TurnOutcome::Completed);
    assert!(r.text.contains("depth limit"), "{}", r.text);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_delegation_still_ends_every_nested_span() {
    // The sub-agent's model never answers; the parent's tool timeout cuts the call.
    let stuck = kaos_agents::FunctionClient::new_async(|_req| async {
        std::future::pending::<ProviderResponse>().await
    });
    let coord_model = model(|call, messages| match call {
        Call::Classify => classify("tool_use"),
        Call::React => match last_tool_result(messages) {
            Some(r) => ProviderResponse::from_text(format!("gave up: {r}")),
            None => ProviderResponse::from_tool_call("tc", "memo_drafter", json!({"task": "x"})),
        },
        _ => ProviderResponse::from_text("unexpected"),
    });
    let rt = KaosRuntime::test_mode()
        .with_client("drafter", stuck)
        .with_client("coord", coord_model)
        .with_tool(agent_as_tool(drafter(), None, "memo_drafter", "Drafts."));
    let agent = Agent::builder()
        .name("coordinator")
        .model("coord")
        .tool("memo_drafter")
        .tool_timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let events: Vec<Event> = Runner::new(agent, rt).run("go", "s6").collect().await;
    assert_balanced(&events);
    let t = tree(&events);
    assert!(
        t.contains(&"      span(turn,cancelled) turn.1".to_string()),
        "{t:#?}"
    );
    assert!(t.contains(&"    span(subagent,cancelled) subagent.memo-drafter".to_string()));
    let r = kaos_agents::AgentResponse::from_events(&events, "s6").unwrap();
    assert!(r.text.contains("did not finish"), "{}", r.text);
}
