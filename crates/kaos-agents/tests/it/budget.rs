//! Cost caps with unpriced models are never silently unlimited: the turn refuses to start,
//! or `max_tokens` stands in for the cost cap, or the turn stops once its cost is unknown.

use futures::StreamExt;
use kaos_agents::{
    Agent, AgentPattern, AgentResponse, Budget, Event, EventKind, FnTool, KaosRuntime, Runner,
    TurnError,
};
use kaos_llm::{FunctionClient, ProviderResponse};
use serde_json::json;

use crate::support::{Call, classify, last_user, model};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Empty {}

/// A fake that always wants another tool call (only a cap stops it) or, for a plan, one
/// reasoning step; every response from `response_model`.
fn endless(response_model: Option<&'static str>) -> FunctionClient {
    model(move |call, messages| {
        let r = match call {
            Call::Classify if last_user(messages).contains("make a plan") => classify("plan"),
            Call::Classify => classify("tool_use"),
            Call::PlanExpand => ProviderResponse::from_text(
                json!({"steps": [{"description": "think", "tool": null, "expected_output": "x"}]})
                    .to_string(),
            ),
            Call::PlanStep => ProviderResponse::from_text(r#"{"result": "thought"}"#),
            Call::Synthesis => ProviderResponse::from_text(r#"{"answer": "done"}"#),
            _ => ProviderResponse::from_tool_call("tc", "again", json!({})),
        }
        .with_usage(100, 100);
        match response_model {
            Some(m) => r.with_model("anthropic", m),
            None => r,
        }
    })
}

fn runner(client: FunctionClient, pattern: AgentPattern, budget: Budget) -> Runner {
    let rt = KaosRuntime::test_mode()
        .with_client("m", client)
        .with_tool(FnTool::new("again", "x", |_: Empty| async { "ok" }).read_only());
    let agent = Agent::builder()
        .name("a")
        .model("m")
        .pattern(pattern)
        .budget(budget)
        .build()
        .unwrap();
    Runner::new(agent, rt)
}

fn exceeded(events: &[Event]) -> Option<(String, f64, f64, String)> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::BudgetExceeded {
            kind,
            limit,
            actual,
            reason,
        } => Some((kind.clone(), *limit, *actual, reason.clone())),
        _ => None,
    })
}

fn model_calls(events: &[Event]) -> usize {
    events
        .iter()
        .filter_map(Event::span)
        .filter(|s| s.name.starts_with("llm_call") && s.phase == kaos_agents::SpanPhase::Start)
        .count()
}

#[tokio::test]
async fn a_cost_cap_on_an_unpriced_model_without_a_token_cap_refuses_to_start() {
    for (pattern, budget, field) in [
        (
            AgentPattern::Chat,
            Budget {
                chat_max_cost_usd: Some(0.01),
                ..Budget::default()
            },
            "chat_max_cost_usd",
        ),
        (
            AgentPattern::Plan,
            Budget {
                max_cost_usd: Some(0.01),
                ..Budget::default()
            },
            "max_cost_usd",
        ),
    ] {
        let r = runner(endless(None), pattern, budget);
        let events: Vec<Event> = r.run("go", "s").collect().await;
        assert_eq!(model_calls(&events), 0, "nothing was spent");
        let Err(TurnError::Failed { failure, .. }) = AgentResponse::from_events(&events, "s")
        else {
            panic!("the turn must fail");
        };
        assert_eq!(failure.error_type, "budget_unenforceable");
        assert!(
            failure.message.contains(field) && failure.message.contains("function-test"),
            "{}",
            failure.message
        );
        assert!(failure.recovery_hint.contains("max_tokens"));
    }
}

#[tokio::test]
async fn with_a_token_cap_the_chat_cost_cap_falls_back_to_tokens() {
    let budget = Budget {
        chat_max_cost_usd: Some(0.01),
        max_tokens: Some(500),
        ..Budget::default()
    };
    let r = runner(endless(None), AgentPattern::Chat, budget);
    let events: Vec<Event> = r.run("go", "s").collect().await;
    let (kind, limit, actual, reason) = exceeded(&events).unwrap();
    assert_eq!(kind, "chat_tokens");
    assert_eq!(limit, 500.0);
    assert!(actual >= 500.0, "{actual}");
    assert!(reason.contains("price is unknown"), "{reason}");
    // classify 200 + react 200 = 400 < 500, react again: 600 >= 500, stop.
    assert_eq!(model_calls(&events), 3);
    let response = AgentResponse::from_events(&events, "s").unwrap();
    assert!(
        response.text.contains("token cap (500 tokens)"),
        "{}",
        response.text
    );
}

#[tokio::test]
async fn with_a_token_cap_the_plan_cost_cap_falls_back_to_tokens() {
    let budget = Budget {
        max_cost_usd: Some(0.01),
        max_tokens: Some(300),
        ..Budget::default()
    };
    let r = runner(endless(None), AgentPattern::Plan, budget);
    let events: Vec<Event> = r.run("make a plan", "s").collect().await;
    let (kind, limit, actual, _) = exceeded(&events).unwrap();
    assert_eq!(kind, "tokens");
    assert_eq!((limit, actual), (300.0, 400.0));
}

#[tokio::test]
async fn a_chat_turn_whose_cost_becomes_unknown_stops_at_the_next_check() {
    // The client says it is a priced model, but its answers come from an unpriced one.
    let client = endless(None).with_model("claude-haiku-4-5");
    let budget = Budget {
        chat_max_cost_usd: Some(100.0),
        ..Budget::default()
    };
    let r = runner(client, AgentPattern::Chat, budget);
    let events: Vec<Event> = r.run("go", "s").collect().await;
    let (kind, limit, _, reason) = exceeded(&events).unwrap();
    assert_eq!(kind, "cost_unknown");
    assert_eq!(limit, 100.0);
    assert!(reason.contains("max_tokens"), "{reason}");
    assert_eq!(model_calls(&events), 2, "stopped after the first round");
}

#[tokio::test]
async fn a_plan_turn_whose_cost_becomes_unknown_stops_before_its_first_step() {
    let client = endless(None).with_model("claude-haiku-4-5");
    let budget = Budget {
        max_cost_usd: Some(100.0),
        ..Budget::default()
    };
    let r = runner(client, AgentPattern::Plan, budget);
    let events: Vec<Event> = r.run("make a plan", "s").collect().await;
    assert_eq!(exceeded(&events).unwrap().0, "cost_unknown");
    let response = AgentResponse::from_events(&events, "s").unwrap();
    assert!(
        response
            .text
            .contains("Plan execution stopped: cost_unknown"),
        "{}",
        response.text
    );
}

#[tokio::test]
async fn a_priced_model_keeps_the_cost_cap() {
    let budget = Budget {
        chat_max_cost_usd: Some(0.001),
        ..Budget::default()
    };
    let client = endless(Some("claude-haiku-4-5")).with_model("claude-haiku-4-5");
    let r = runner(client, AgentPattern::Chat, budget);
    let events: Vec<Event> = r.run("go", "s").collect().await;
    assert_eq!(exceeded(&events).unwrap().0, "chat_cost");
}
