//! One OTelHook under many concurrent runs (multi-thread runtime): every run's spans form
//! one complete tree of its own, as if it had run alone.

use std::collections::{BTreeMap, HashMap, HashSet};

use kaos_agents::{Agent, FnTool, KaosRuntime, Runner, agent_as_tool};
use kaos_llm::FunctionClient;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::SpanData;
use serde_json::json;

use crate::otel_hook::{Harness, assert_well_formed, attr_s, parent_name, tool_turn};
use crate::util::routing_model;

const RUNS: usize = 64;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct TextArgs {
    /// The text.
    text: String,
}

fn runner(h: &Harness) -> Runner {
    let tool = FnTool::new("wordcount", "Counts words.", |a: TextArgs| async move {
        // Yield so the runs interleave on the workers mid-turn.
        tokio::task::yield_now().await;
        a.text.split_whitespace().count().to_string()
    })
    .read_only();
    let runtime = KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("wordcount", json!({"text": "a b c"}))),
        )
        .with_tool(tool);
    let agent = Agent::builder()
        .name("counter")
        .model("fake")
        .build()
        .unwrap();
    Runner::new(agent, runtime).with_shared_hook(h.hook.clone())
}

/// Each trace's span names with their parents' names, sorted: the shape of one tree.
fn shapes(spans: &[SpanData]) -> HashMap<TraceId, Vec<(String, Option<String>)>> {
    let mut by_trace: HashMap<TraceId, Vec<&SpanData>> = HashMap::new();
    for s in spans {
        by_trace
            .entry(s.span_context.trace_id())
            .or_default()
            .push(s);
    }
    by_trace
        .into_iter()
        .map(|(trace, members)| {
            let ids: HashSet<SpanId> = members.iter().map(|s| s.span_context.span_id()).collect();
            let roots: Vec<_> = members
                .iter()
                .filter(|s| s.parent_span_id == SpanId::INVALID)
                .collect();
            assert_eq!(roots.len(), 1, "trace {trace} has {} roots", roots.len());
            assert_eq!(roots[0].name, "agent.turn");
            let mut shape: Vec<(String, Option<String>)> = members
                .iter()
                .map(|s| {
                    assert!(
                        s.parent_span_id == SpanId::INVALID || ids.contains(&s.parent_span_id),
                        "{}'s parent is outside its trace",
                        s.name
                    );
                    (s.name.to_string(), parent_name(spans, s))
                })
                .collect();
            shape.sort();
            (trace, shape)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_runs_make_sixty_four_correct_trees() {
    // The shape one run makes alone.
    let alone = Harness::new();
    runner(&alone).turn("use the tool", "alone").await.unwrap();
    let expected = shapes(&alone.spans()).into_values().next().unwrap();
    assert_eq!(expected.len(), 6, "{expected:?}");

    let h = Harness::new();
    let runner = runner(&h);
    let tasks: Vec<_> = (0..RUNS)
        .map(|i| {
            let runner = runner.clone();
            tokio::spawn(async move { runner.turn("use the tool", &format!("s{i}")).await })
        })
        .collect();
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.text, "result was: 3");
    }
    let spans = h.spans();
    assert_well_formed(&spans);
    assert_eq!(spans.len(), RUNS * expected.len());
    let trees = shapes(&spans);
    assert_eq!(trees.len(), RUNS, "one trace per run");
    for shape in trees.values() {
        assert_eq!(shape, &expected);
    }
    // Each run's spans carry that run's id, one run per tree.
    let mut runs: BTreeMap<String, TraceId> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.name == "agent.turn") {
        let previous = runs.insert(attr_s(s, "kaos.run_id"), s.span_context.trace_id());
        assert!(previous.is_none(), "run exported two turns");
    }
    assert_eq!(runs.len(), RUNS);
    h.assert_state_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_with_sub_agents_nest_each_sub_turn_in_its_own_tree() {
    let h = Harness::new();
    let helper = Agent::builder()
        .name("helper")
        .model("fake")
        .build()
        .unwrap();
    let runtime = KaosRuntime::test_mode().with_client(
        "fake",
        FunctionClient::new(routing_model("helper", json!({"task": "summarize"}))),
    );
    let sub = agent_as_tool(helper, None, "helper", "Delegates.");
    let lead = Agent::builder().name("lead").model("fake").build().unwrap();
    let runner = Runner::new(lead, runtime.with_tool(sub)).with_shared_hook(h.hook.clone());
    let tasks: Vec<_> = (0..RUNS / 2)
        .map(|i| {
            let runner = runner.clone();
            tokio::spawn(async move { runner.turn("use the tool", &format!("d{i}")).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let spans = h.spans();
    assert_well_formed(&spans);
    let trees = shapes(&spans);
    assert_eq!(
        trees.len(),
        RUNS / 2,
        "sub-agent turns join their lead's trace"
    );
    for (trace, shape) in &trees {
        let turns = shape.iter().filter(|(n, _)| n == "agent.turn").count();
        assert_eq!(turns, 2, "trace {trace}: {shape:?}");
        assert!(
            shape.contains(&(
                "agent.turn".to_string(),
                Some("agent.subagent.helper".to_string())
            )),
            "trace {trace}: {shape:?}"
        );
    }
    h.assert_state_empty();
}

/// The same under plain threads driving scripted turns straight through the scopes.
#[test]
fn hundred_concurrent_runs_through_one_hook() {
    let h = Harness::new();
    std::thread::scope(|threads| {
        for i in 0..100 {
            let h = &h;
            threads.spawn(move || {
                // Same call id in every run: keys are scoped by run.
                tool_turn(&h.scope(&format!("session-{i}"), "assistant"));
            });
        }
    });
    let spans = h.spans();
    assert_eq!(spans.len(), 400);
    assert_well_formed(&spans);
    let mut traces: HashMap<_, Vec<&SpanData>> = HashMap::new();
    for s in &spans {
        traces.entry(s.span_context.trace_id()).or_default().push(s);
    }
    assert_eq!(traces.len(), 100);
    for tree in traces.values() {
        let turn = tree.iter().find(|s| s.name == "agent.turn").unwrap();
        let session = attr_s(turn, "kaos.session_id");
        for s in tree {
            if s.name == "chat function-test" {
                assert_eq!(attr_s(s, "gen_ai.conversation.id"), session);
            }
            if s.name == "agent.tool_call.wordcount" || s.name == "agent.intent_classification" {
                assert_eq!(s.parent_span_id, turn.span_context.span_id());
            }
        }
        assert_eq!(tree.len(), 4);
    }
    h.assert_state_empty();
}
