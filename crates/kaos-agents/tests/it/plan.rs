//! The PLAN pattern: live steps, nesting, replans and budgets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use kaos_agents::{
    Agent, AgentPattern, AgentResponse, Budget, Event, EventKind, FnTool, KaosRuntime,
    ProviderResponse, Runner, ToolOutput,
};
use serde_json::json;

use crate::support::{Call, assert_balanced, classify, last_user, model, span, tree};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Q {
    query: String,
}

/// `search` works; `flaky` always fails. The plan model proposes `search` then a reasoning
/// step; with `fail_first` the first plan uses `flaky` and the replan (which sees the
/// failure) a reasoning step.
fn setup(fail_first: bool, budget: Budget, priced: bool) -> (Runner, Arc<AtomicUsize>) {
    let flaky_runs = Arc::new(AtomicUsize::new(0));
    let fr = flaky_runs.clone();
    let m = model(move |call, messages| {
        let r = match call {
            Call::Classify => classify("plan"),
            Call::PlanExpand => {
                let failed_before = last_user(messages).contains("boom");
                if fail_first && !failed_before {
                    ProviderResponse::from_text(
                        json!({"steps": [
                            {"description": "call flaky", "tool": "flaky", "expected_output": "data"},
                            {"description": "summarize", "tool": null, "expected_output": "summary"}
                        ]})
                        .to_string(),
                    )
                } else if fail_first {
                    ProviderResponse::from_text(
                        json!({"steps": [
                            {"description": "reason without flaky", "tool": null, "expected_output": "an answer"}
                        ]})
                        .to_string(),
                    )
                } else {
                    ProviderResponse::from_text(
                        json!({"steps": [
                            {"description": "search filings", "tool": "search", "expected_output": "hits"},
                            {"description": "compare them", "tool": null, "expected_output": "comparison"}
                        ]})
                        .to_string(),
                    )
                }
            }
            Call::ToolArgs => ProviderResponse::from_text(r#"{"arguments": {"query": "filings"}}"#),
            Call::PlanStep => ProviderResponse::from_text(r#"{"result": "compared"}"#),
            Call::Synthesis => ProviderResponse::from_text(r#"{"answer": "All done."}"#),
            _ => ProviderResponse::from_text("unexpected"),
        };
        let r = r.with_usage(10, 10);
        if priced {
            r.with_model("anthropic", "claude-haiku-4-5")
        } else {
            r
        }
    });
    // A priced fake reports a priced model, so a cost cap can be enforced from the start.
    let m = if priced {
        m.with_model("claude-haiku-4-5")
    } else {
        m
    };
    let rt = KaosRuntime::test_mode()
        .with_client("m", m)
        .with_tool(
            FnTool::new("search", "Searches filings.", |q: Q| async move {
                format!("3 hits for {}", q.query)
            })
            .read_only(),
        )
        .with_tool(
            FnTool::new("flaky", "Fails.", move |_q: Q| {
                fr.fetch_add(1, Ordering::SeqCst);
                async { ToolOutput::error("boom") }
            })
            .read_only(),
        );
    let agent = Agent::builder()
        .name("planner")
        .model("m")
        .pattern(AgentPattern::Plan)
        .budget(budget)
        .build()
        .unwrap();
    (Runner::new(agent, rt), flaky_runs)
}

async fn run(runner: &Runner, session: &str) -> Vec<Event> {
    let events: Vec<Event> = runner
        .run("First search the filings, then compare them", session)
        .collect()
        .await;
    assert_balanced(&events);
    events
}

/// The event tree with random step ids replaced by `<id>`.
fn shape(events: &[Event]) -> Vec<String> {
    tree(events)
        .into_iter()
        .map(|l| match l.find("step.step-") {
            Some(i) => format!("{}step.<id>", &l[..i]),
            None => l,
        })
        .collect()
}

fn budget_exceeded(events: &[Event]) -> Option<(String, f64, f64)> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::BudgetExceeded {
            kind,
            limit,
            actual,
            ..
        } => Some((kind.clone(), *limit, *actual)),
        _ => None,
    })
}

#[tokio::test]
async fn two_step_plan_runs_live_with_the_tool_nested_under_its_step() {
    let (runner, _) = setup(false, Budget::default(), false);
    let events = run(&runner, "plan1").await;
    let t = tree(&events);
    let t: Vec<String> = t
        .into_iter()
        .map(|l| {
            // Step ids are random; keep the structure.
            match l.find("step.step-") {
                Some(i) => format!("{}step.<id>", &l[..i]),
                None => l,
            }
        })
        .collect();
    assert_eq!(
        t,
        vec![
            "span(turn,start) turn.1",
            "  span(llm_call,start) llm_call.intent_classification",
            "  span(llm_call,complete) llm_call.intent_classification",
            "  intent_classified",
            "  usage_observed",
            "  span(llm_call,start) llm_call.plan_expansion",
            "  span(llm_call,complete) llm_call.plan_expansion",
            "  usage_observed",
            "  plan_proposed",
            "  span(step,start) step.<id>",
            "    span(llm_call,start) llm_call.tool_arguments",
            "    span(llm_call,complete) llm_call.tool_arguments",
            "    usage_observed",
            "    span(tool_call,start) tool.search",
            "    span(tool_call,complete) tool.search",
            "  span(step,complete) step.<id>",
            "  span(step,start) step.<id>",
            "    span(llm_call,start) llm_call.plan_step",
            "    span(llm_call,complete) llm_call.plan_step",
            "    usage_observed",
            "  span(step,complete) step.<id>",
            "  span(llm_call,start) llm_call.plan_synthesis",
            "    text_delta",
            "  span(llm_call,complete) llm_call.plan_synthesis",
            "  usage_observed",
            "span(turn,complete) turn.1",
            "turn_summary",
        ],
    );
    let steps = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::PlanProposed { steps, strategy } => {
                assert_eq!(strategy, "adaptive");
                Some(steps.clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].tool_name.as_deref(), Some("search"));
    assert_eq!(steps[1].tool_name, None);
    for (n, s) in steps.iter().enumerate() {
        let rest = s.step_id.strip_prefix(&format!("step-{}-", n + 1)).unwrap();
        assert!(rest.len() == 6 && rest.chars().all(|c| c.is_ascii_hexdigit()));
    }
    // The tool span's parent is the step span.
    let step = span(
        &events,
        "span(step,start)",
        &format!("step.{}", steps[0].step_id),
    );
    let tool = span(&events, "span(tool_call,start)", "tool.search");
    assert_eq!(tool.parent_span_id.as_ref(), Some(&step.span_id));
    assert_eq!(tool.attr_str("step_id"), Some(steps[0].step_id.as_str()));
    assert_eq!(tool.attributes["arguments"], json!({"query": "filings"}));
    let end = span(
        &events,
        "span(step,complete)",
        &format!("step.{}", steps[0].step_id),
    );
    assert_eq!(end.attr_str("result_summary"), Some("3 hits for filings"));
    let r = AgentResponse::from_events(&events, "plan1").unwrap();
    assert_eq!(r.text, "All done.");
    assert_eq!(
        r.tool_calls[0].step_id.as_deref(),
        Some(steps[0].step_id.as_str())
    );
    // classify + expand + args + step + synthesis, 20 tokens each.
    assert_eq!(r.tokens_used, 5 * 20);
}

#[tokio::test]
async fn a_failing_step_triggers_one_replan() {
    let (runner, flaky) = setup(true, Budget::default(), false);
    let events = run(&runner, "plan2").await;
    assert_eq!(
        shape(&events),
        vec![
            "span(turn,start) turn.1",
            "  span(llm_call,start) llm_call.intent_classification",
            "  span(llm_call,complete) llm_call.intent_classification",
            "  intent_classified",
            "  usage_observed",
            "  span(llm_call,start) llm_call.plan_expansion",
            "  span(llm_call,complete) llm_call.plan_expansion",
            "  usage_observed",
            "  plan_proposed",
            "  span(step,start) step.<id>",
            "    span(llm_call,start) llm_call.tool_arguments",
            "    span(llm_call,complete) llm_call.tool_arguments",
            "    usage_observed",
            "    span(tool_call,start) tool.flaky",
            "    span(tool_call,error) tool.flaky",
            "  span(step,error) step.<id>",
            "  span(llm_call,start) llm_call.plan_expansion",
            "  span(llm_call,complete) llm_call.plan_expansion",
            "  usage_observed",
            "  plan_proposed",
            "  span(step,start) step.<id>",
            "    span(llm_call,start) llm_call.plan_step",
            "    span(llm_call,complete) llm_call.plan_step",
            "    usage_observed",
            "  span(step,complete) step.<id>",
            "  span(llm_call,start) llm_call.plan_synthesis",
            "    text_delta",
            "  span(llm_call,complete) llm_call.plan_synthesis",
            "  usage_observed",
            "span(turn,complete) turn.1",
            "turn_summary",
        ]
    );
    // Step numbers continue across the replan.
    let plans: Vec<Vec<String>> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PlanProposed { steps, .. } => {
                Some(steps.iter().map(|s| s.step_id.clone()).collect())
            }
            _ => None,
        })
        .collect();
    assert!(plans[0][0].starts_with("step-1-") && plans[0][1].starts_with("step-2-"));
    assert!(plans[1][0].starts_with("step-2-"), "{plans:?}");
    let labels: Vec<String> = events.iter().map(Event::label).collect();
    assert_eq!(
        labels.iter().filter(|l| *l == "plan_proposed").count(),
        2,
        "{labels:#?}"
    );
    assert_eq!(flaky.load(Ordering::SeqCst), 1);
    assert!(labels.contains(&"span(step,error)".to_string()));
    // The second step of the failed plan never started.
    assert_eq!(
        labels.iter().filter(|l| *l == "span(step,start)").count(),
        2
    );
    assert!(budget_exceeded(&events).is_none());
    let r = AgentResponse::from_events(&events, "plan2").unwrap();
    assert_eq!(r.text, "All done.");
}

#[tokio::test]
async fn replans_budget_stops_the_plan() {
    let budget = Budget {
        max_replans: 0,
        ..Budget::default()
    };
    let (runner, _) = setup(true, budget, false);
    let events = run(&runner, "plan3").await;
    assert_eq!(budget_exceeded(&events), Some(("replans".into(), 0.0, 1.0)));
    let r = AgentResponse::from_events(&events, "plan3").unwrap();
    assert!(
        r.text.starts_with("Plan execution stopped: replans")
            && r.text.contains("Completed 1 step"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn steps_budget_stops_the_plan() {
    let budget = Budget {
        max_steps: 1,
        ..Budget::default()
    };
    let (runner, _) = setup(false, budget, false);
    let events = run(&runner, "plan4").await;
    assert_eq!(
        shape(&events)[9..],
        [
            "  span(step,start) step.<id>",
            "    span(llm_call,start) llm_call.tool_arguments",
            "    span(llm_call,complete) llm_call.tool_arguments",
            "    usage_observed",
            "    span(tool_call,start) tool.search",
            "    span(tool_call,complete) tool.search",
            "  span(step,complete) step.<id>",
            "  budget_exceeded",
            "  text_delta",
            "span(turn,complete) turn.1",
            "turn_summary",
        ]
    );
    assert_eq!(budget_exceeded(&events), Some(("steps".into(), 1.0, 2.0)));
    let labels: Vec<String> = events.iter().map(Event::label).collect();
    assert_eq!(
        labels.iter().filter(|l| *l == "span(step,start)").count(),
        1
    );
    // Stopped before synthesis.
    assert!(!labels.iter().any(|l| l.contains("plan_synthesis")));
    let r = AgentResponse::from_events(&events, "plan4").unwrap();
    assert!(
        r.text.contains("Plan execution stopped: steps"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn tokens_budget_stops_the_plan() {
    let budget = Budget {
        max_tokens: Some(40),
        ..Budget::default()
    };
    let (runner, _) = setup(false, budget, false);
    let events = run(&runner, "plan5").await;
    // classify 20 + expand 20 = 40 >= 40 before the first step.
    assert_eq!(
        budget_exceeded(&events),
        Some(("tokens".into(), 40.0, 40.0))
    );
    let r = AgentResponse::from_events(&events, "plan5").unwrap();
    assert!(
        r.text.contains("Plan execution stopped: tokens") && r.text.contains("Completed 0 step")
    );
}

#[tokio::test]
async fn cost_budget_stops_the_plan() {
    let budget = Budget {
        max_cost_usd: Some(0.000_01),
        ..Budget::default()
    };
    let (runner, _) = setup(false, budget, true);
    let events = run(&runner, "plan6").await;
    let (kind, limit, actual) = budget_exceeded(&events).unwrap();
    assert_eq!(kind, "cost");
    assert_eq!(limit, 0.000_01);
    assert!(actual >= limit);
}

#[tokio::test]
async fn wall_clock_budget_stops_the_plan() {
    // A zero limit is crossed by any elapsed time: deterministic without sleeping.
    let budget = Budget {
        max_wall_clock_secs: Some(0.0),
        ..Budget::default()
    };
    let (runner, _) = setup(false, budget, false);
    let events = run(&runner, "plan7").await;
    assert_eq!(budget_exceeded(&events).unwrap().0, "wall_clock");
    let r = AgentResponse::from_events(&events, "plan7").unwrap();
    assert!(r.text.contains("Plan execution stopped: wall_clock"));
}

#[tokio::test]
async fn chat_agent_with_a_plan_intent_falls_back_to_the_tool_loop() {
    let m = model(|call, _| match call {
        Call::Classify => classify("plan"),
        _ => ProviderResponse::from_text("direct"),
    });
    let rt = KaosRuntime::test_mode()
        .with_client("m", m)
        .with_tool(FnTool::new("search", "Searches.", |q: Q| async move { q.query }).read_only());
    let agent = Agent::builder().name("c").model("m").build().unwrap();
    let events: Vec<Event> = Runner::new(agent, rt)
        .run("x then y", "plan8")
        .collect()
        .await;
    assert_balanced(&events);
    let labels: Vec<String> = events.iter().map(Event::label).collect();
    assert!(labels.contains(&"pattern_mismatch".to_string()));
    assert!(!labels.contains(&"plan_proposed".to_string()));
}

#[tokio::test]
async fn a_plan_step_paused_for_approval_resumes_inside_its_step() {
    let published = Arc::new(AtomicUsize::new(0));
    let arg_calls = Arc::new(AtomicUsize::new(0));
    let (p2, a2) = (published.clone(), arg_calls.clone());
    let m = model(move |call, _| match call {
        Call::Classify => classify("plan"),
        Call::PlanExpand => ProviderResponse::from_text(
            json!({"steps": [
                {"description": "publish the report", "tool": "publish", "expected_output": "url"},
                {"description": "announce it", "tool": null, "expected_output": "text"}
            ]})
            .to_string(),
        ),
        Call::ToolArgs => {
            a2.fetch_add(1, Ordering::SeqCst);
            ProviderResponse::from_text(r#"{"arguments": {"query": "report"}}"#)
        }
        Call::PlanStep => ProviderResponse::from_text(r#"{"result": "announced"}"#),
        Call::Synthesis => ProviderResponse::from_text(r#"{"answer": "Published and announced."}"#),
        _ => ProviderResponse::from_text("unexpected"),
    });
    let rt = KaosRuntime::test_mode().with_client("m", m).with_tool(
        FnTool::new("publish", "Publishes.", move |q: Q| {
            p2.fetch_add(1, Ordering::SeqCst);
            async move { format!("published {}", q.query) }
        })
        .requires_confirmation(),
    );
    let agent = Agent::builder()
        .name("planner")
        .model("m")
        .pattern(AgentPattern::Plan)
        .build()
        .unwrap();
    let runner = Runner::new(agent.clone(), rt.clone());
    let paused = run(&runner, "plan9").await;
    let r = AgentResponse::from_events(&paused, "plan9").unwrap();
    assert_eq!(r.outcome, kaos_agents::TurnOutcome::Paused);
    assert!(r.pending_approval.unwrap().run_state_ref.is_some());
    assert_eq!(published.load(Ordering::SeqCst), 0);
    let state = &runner.pending_runs("plan9").await[0];
    assert_eq!(state.plan.as_ref().unwrap().next_step, 0);

    let resumed: Vec<Event> = Runner::new(agent, rt)
        .resume(&r.run_id, "plan9", kaos_agents::Approval::Approve)
        .collect()
        .await;
    assert_balanced(&resumed);
    assert_eq!(
        shape(&resumed),
        vec![
            "span(turn,start) turn.1",
            "  span(step,start) step.<id>",
            "    span(tool_call,start) tool.publish",
            "    span(tool_call,complete) tool.publish",
            "  span(step,complete) step.<id>",
            "  span(step,start) step.<id>",
            "    span(llm_call,start) llm_call.plan_step",
            "    span(llm_call,complete) llm_call.plan_step",
            "    usage_observed",
            "  span(step,complete) step.<id>",
            "  span(llm_call,start) llm_call.plan_synthesis",
            "    text_delta",
            "  span(llm_call,complete) llm_call.plan_synthesis",
            "  usage_observed",
            "span(turn,complete) turn.1",
            "turn_summary",
        ]
    );
    assert_eq!(
        published.load(Ordering::SeqCst),
        1,
        "the approved step ran once"
    );
    assert_eq!(
        arg_calls.load(Ordering::SeqCst),
        1,
        "arguments were not re-synthesized"
    );
    let done = AgentResponse::from_events(&resumed, "plan9").unwrap();
    assert_eq!(done.text, "Published and announced.");
    assert!(runner.pending_runs("plan9").await.is_empty());
}
