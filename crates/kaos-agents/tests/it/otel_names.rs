//! One vocabulary: the terminal tree names every span exactly as the exporter does, for
//! every golden scenario and both namings.

use std::sync::Arc;

use futures::StreamExt;
use kaos_agents::hooks::RecordingHook;
use kaos_agents::naming::SpanNaming;
use kaos_agents::otel::OTelHook;
use kaos_agents::tree::build_runs_named;
use kaos_agents::{Agent, Event, FnTool, KaosRuntime, LlmError, Runner};
use kaos_llm::{FunctionClient, ProviderResponse};
use serde_json::json;

use crate::otel_hook::Harness;
use crate::util::routing_model;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct TextArgs {
    /// The text.
    text: String,
}

fn tool_runtime(destructive: bool) -> KaosRuntime {
    let tool = FnTool::new("wordcount", "Counts words.", |a: TextArgs| async move {
        a.text.split_whitespace().count().to_string()
    });
    let tool = if destructive {
        tool.destructive()
    } else {
        tool.read_only()
    };
    KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("wordcount", json!({"text": "a b c"}))),
        )
        .with_tool(tool)
}

fn failing_runtime() -> KaosRuntime {
    let client = FunctionClient::new(
        |_: &[kaos_llm::Message], _: &kaos_llm::LlmRequest| -> Result<ProviderResponse, LlmError> {
            Err(LlmError::Auth {
                provider: "function".into(),
                status: 401,
                message: "no key".into(),
            })
        },
    );
    KaosRuntime::test_mode().with_client("fake", client)
}

/// Runs one turn with an OTel hook and a recorder; returns (tree names, exported names),
/// both sorted.
async fn both_names(
    agent: Agent,
    runtime: KaosRuntime,
    naming: SpanNaming,
) -> (Vec<String>, Vec<String>) {
    let h = Harness::with(|hook: OTelHook| hook.with_naming(naming));
    let rec = Arc::new(RecordingHook::new());
    let runner = Runner::new(agent, runtime)
        .with_shared_hook(h.hook.clone())
        .with_shared_hook(rec.clone());
    let _: Vec<Event> = runner.run("use the tool on a b c", "s").collect().await;
    let mut tree: Vec<String> = build_runs_named(&rec.events(), naming)
        .iter()
        .flat_map(|run| run.spans.iter().map(|s| s.name.clone()))
        .collect();
    tree.sort();
    let mut exported: Vec<String> = h.spans().iter().map(|s| s.name.to_string()).collect();
    exported.sort();
    (tree, exported)
}

fn agent() -> Agent {
    Agent::builder()
        .name("tester")
        .model("fake")
        .build()
        .unwrap()
}

#[tokio::test]
async fn tree_names_equal_exported_names_in_every_scenario() {
    for naming in [SpanNaming::Seed, SpanNaming::GenAi] {
        let respond = KaosRuntime::test_mode()
            .with_client("fake", FunctionClient::new(routing_model("x", json!({}))));
        let scenarios: Vec<(&str, Agent, KaosRuntime)> = vec![
            ("respond", agent(), respond),
            ("tool", agent(), tool_runtime(false)),
            ("paused", agent(), tool_runtime(true)),
            ("auth failure", agent(), failing_runtime()),
            (
                "delegation",
                crate::delegation::coordinator(),
                crate::delegation::runtime(),
            ),
        ];
        for (scenario, agent, runtime) in scenarios {
            let (tree, exported) = both_names(agent, runtime, naming).await;
            assert!(!tree.is_empty(), "{scenario}: no spans");
            assert_eq!(tree, exported, "{scenario} under {naming:?}");
            let turn = if naming == SpanNaming::Seed {
                "agent.turn"
            } else {
                "invoke_agent "
            };
            assert!(
                tree.iter().any(|n| n.starts_with(turn)),
                "{scenario}: {tree:?}"
            );
        }
    }
}
