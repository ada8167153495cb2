//! Metrics read back through the SDK's in-memory metric exporter and a local OTLP/HTTP
//! receiver: histogram buckets, attributes, token types, the experimental opt-in, and
//! `error.type` only on failures (not on cancellations or calls paused for approval).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use kaos_agents::events::{SpanError, SpanPhase, SpanSubject, TurnOutcome};
use kaos_agents::hooks::HookSet;
use kaos_agents::otel::metrics::{
    DURATION_BUCKETS, GEN_AI_CLIENT_OPERATION_DURATION, GEN_AI_CLIENT_TOKEN_USAGE,
    GEN_AI_EXECUTE_TOOL_DURATION, GEN_AI_INVOKE_AGENT_DURATION, KAOS_TOOL_CALL_DURATION,
    KAOS_TURN_DURATION, TOKEN_BUCKETS,
};
use kaos_agents::otel::{Metrics, MetricsHook};
use kaos_agents::scope::{TurnScope, new_run_id};
use kaos_agents::testing::ScopeDriver;
use kaos_agents::{Agent, FnTool, KaosRuntime, Runner, attrs};
use kaos_llm::FunctionClient;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use prost::Message;
use serde_json::json;

use crate::util::routing_model;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct TextArgs {
    /// The text.
    text: String,
}

fn tool_runner(hook: Arc<MetricsHook>) -> Runner {
    let tool = FnTool::new("wordcount", "Counts words.", |a: TextArgs| async move {
        a.text.split_whitespace().count().to_string()
    })
    .read_only();
    runner_with(hook, tool)
}

/// A runner whose model calls `tool` once (as `wordcount`), with `hook`.
fn runner_with(hook: Arc<MetricsHook>, tool: FnTool) -> Runner {
    let runtime = KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("wordcount", json!({"text": "a b c"}))),
        )
        .with_tool(tool);
    let agent = Agent::builder()
        .name("tester")
        .model("fake")
        .build()
        .unwrap();
    Runner::new(agent, runtime).with_shared_hook(hook)
}

pub(crate) fn memory_provider() -> (SdkMeterProvider, InMemoryMetricExporter) {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    (provider, exporter)
}

/// One histogram data point, flattened: attributes, bounds, bucket counts, count, sum.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    attrs: Vec<(String, String)>,
    bounds: Vec<f64>,
    count: u64,
    sum: f64,
}

impl Point {
    pub(crate) fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn flat(attrs: &mut dyn Iterator<Item = &KeyValue>) -> Vec<(String, String)> {
    attrs
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

pub(crate) fn points(metrics: &[ResourceMetrics], name: &str) -> Vec<Point> {
    let mut out = Vec::new();
    for rm in metrics.iter().rev().take(1) {
        for scope in rm.scope_metrics() {
            for m in scope.metrics().filter(|m| m.name() == name) {
                match m.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        out.extend(h.data_points().map(|p| Point {
                            attrs: flat(&mut p.attributes()),
                            bounds: p.bounds().collect(),
                            count: p.count(),
                            sum: p.sum(),
                        }))
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        out.extend(h.data_points().map(|p| Point {
                            attrs: flat(&mut p.attributes()),
                            bounds: p.bounds().collect(),
                            count: p.count(),
                            sum: p.sum() as f64,
                        }))
                    }
                    other => panic!("{name}: unexpected data {other:?}"),
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn metrics_without_traces_read_back_from_the_sdk() {
    let (provider, exporter) = memory_provider();
    let hook = Arc::new(MetricsHook::with_experimental(
        provider.meter("kaos.agents"),
        false,
    ));
    let response = tool_runner(hook.clone())
        .turn("use the tool on a b c", "s")
        .await
        .unwrap();
    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    assert_eq!(hook.open_span_count(), 0);

    let durations = points(&metrics, GEN_AI_CLIENT_OPERATION_DURATION);
    assert!(!durations.is_empty());
    let calls: u64 = durations.iter().map(|p| p.count).sum();
    assert_eq!(calls, 3, "classifier, tool call, answer: {durations:?}");
    for p in &durations {
        assert_eq!(p.bounds, DURATION_BUCKETS.to_vec());
        assert_eq!(p.attr("gen_ai.operation.name"), Some("chat"));
        assert_eq!(p.attr("gen_ai.provider.name"), Some("function"));
        assert_eq!(p.attr("gen_ai.request.model"), Some("function-test"));
        assert_eq!(p.attr("error.type"), None);
    }

    let tokens = points(&metrics, GEN_AI_CLIENT_TOKEN_USAGE);
    let sum_of = |kind: &str| -> f64 {
        tokens
            .iter()
            .filter(|p| p.attr("gen_ai.token.type") == Some(kind))
            .map(|p| p.sum)
            .sum()
    };
    assert!(tokens.iter().all(|p| p.bounds == TOKEN_BUCKETS.to_vec()));
    assert_eq!(sum_of("input"), response.input_tokens as f64);
    assert_eq!(sum_of("output"), response.output_tokens as f64);
    assert!(response.input_tokens > 0);

    let turns = points(&metrics, KAOS_TURN_DURATION);
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].attr("kaos.outcome"), Some("completed"));
    assert_eq!(turns[0].attr("gen_ai.agent.name"), Some("tester"));
    let tools = points(&metrics, KAOS_TOOL_CALL_DURATION);
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].attr("gen_ai.tool.name"), Some("wordcount"));
    assert_eq!(tools[0].count, 1);
    // Unreleased names stay off without the opt-in.
    assert!(points(&metrics, GEN_AI_INVOKE_AGENT_DURATION).is_empty());
    assert!(points(&metrics, GEN_AI_EXECUTE_TOOL_DURATION).is_empty());
}

#[tokio::test]
async fn experimental_names_come_with_the_opt_in() {
    let (provider, exporter) = memory_provider();
    let hook = Arc::new(MetricsHook::with_experimental(
        provider.meter("kaos.agents"),
        true,
    ));
    tool_runner(hook)
        .turn("use the tool on a b c", "s")
        .await
        .unwrap();
    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    let agent = points(&metrics, GEN_AI_INVOKE_AGENT_DURATION);
    assert_eq!(agent.len(), 1);
    assert_eq!(agent[0].attr("gen_ai.operation.name"), Some("invoke_agent"));
    // The agent's model and its provider (required by the conventions), as on its span.
    assert!(
        agent[0].attr("gen_ai.request.model").is_some(),
        "{:?}",
        agent[0]
    );
    assert!(
        agent[0].attr("gen_ai.provider.name").is_some(),
        "{:?}",
        agent[0]
    );
    // kaos's own turn metric keeps to the agent and the outcome.
    let turns = points(&metrics, KAOS_TURN_DURATION);
    assert_eq!(turns[0].attr("gen_ai.request.model"), None);
    let tool = points(&metrics, GEN_AI_EXECUTE_TOOL_DURATION);
    assert_eq!(tool[0].attr("gen_ai.tool.name"), Some("wordcount"));
    assert_eq!(tool[0].attr("gen_ai.operation.name"), Some("execute_tool"));
}

#[tokio::test]
async fn a_failed_model_call_carries_error_type() {
    let (provider, exporter) = memory_provider();
    let hook = Arc::new(MetricsHook::with_experimental(
        provider.meter("kaos.agents"),
        false,
    ));
    let client = FunctionClient::new(
        |_: &[kaos_llm::Message],
         _: &kaos_llm::LlmRequest|
         -> Result<kaos_llm::ProviderResponse, kaos_llm::LlmError> {
            Err(kaos_llm::LlmError::Auth {
                provider: "function".into(),
                status: 401,
                message: "no key".into(),
            })
        },
    );
    let agent = Agent::builder().model("fake").build().unwrap();
    let runner = Runner::new(agent, KaosRuntime::test_mode().with_client("fake", client))
        .with_shared_hook(hook);
    assert!(runner.turn("hi", "s").await.is_err());
    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    let d = points(&metrics, GEN_AI_CLIENT_OPERATION_DURATION);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].attr("error.type"), Some("auth_failure"));
    let turns = points(&metrics, KAOS_TURN_DURATION);
    assert_eq!(turns[0].attr("kaos.outcome"), Some("failed"));
}

#[tokio::test]
async fn a_tool_call_paused_for_approval_records_no_tool_duration() {
    let (provider, exporter) = memory_provider();
    let hook = Arc::new(MetricsHook::with_experimental(
        provider.meter("kaos.agents"),
        true,
    ));
    // A destructive tool asks for approval: the turn pauses before the tool runs.
    let tool = FnTool::new("wordcount", "Deletes words.", |_: TextArgs| async {
        "done".to_string()
    })
    .destructive();
    let response = runner_with(hook.clone(), tool)
        .turn("use the tool", "s")
        .await
        .unwrap();
    assert_eq!(response.outcome, TurnOutcome::Paused);
    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    assert_eq!(hook.open_span_count(), 0);

    let tools = points(&metrics, KAOS_TOOL_CALL_DURATION);
    assert!(tools.is_empty(), "a tool that never ran: {tools:?}");
    let tools = points(&metrics, GEN_AI_EXECUTE_TOOL_DURATION);
    assert!(tools.is_empty(), "a tool that never ran: {tools:?}");
    // Nothing failed: no data point of the paused turn carries `error.type`.
    for name in [
        GEN_AI_CLIENT_OPERATION_DURATION,
        GEN_AI_INVOKE_AGENT_DURATION,
        KAOS_TURN_DURATION,
    ] {
        let p = points(&metrics, name);
        assert!(!p.is_empty(), "{name} recorded");
        assert!(
            p.iter().all(|p| p.attr("error.type").is_none()),
            "{name}: {p:?}"
        );
    }
    let turns = points(&metrics, KAOS_TURN_DURATION);
    assert_eq!(turns[0].attr("kaos.outcome"), Some("paused"));
}

#[test]
fn cancelled_operations_are_measured_without_error_type() {
    let (provider, exporter) = memory_provider();
    let hook = Arc::new(MetricsHook::with_experimental(
        provider.meter("kaos.agents"),
        true,
    ));
    let mut hooks = HookSet::default();
    hooks.push(hook.clone());
    let scope = TurnScope::new("s".into(), new_run_id(), "tester".into(), hooks);
    let cancelled = || {
        Some(SpanError {
            error_type: "cancelled".into(),
            message: "the stream was dropped".into(),
        })
    };
    let (turn, _) = scope.start_span(SpanSubject::Turn, "turn.1", attrs! {"turn_number" => 1});
    let (llm, _) = scope.start_span(
        SpanSubject::LlmCall,
        "llm.respond",
        attrs! {"provider" => "function", "model" => "function-test"},
    );
    scope.end_span(
        &llm,
        SpanPhase::Cancelled,
        attrs! {"cancel_reason" => "stream_dropped"},
        cancelled(),
    );
    // One tool call fails (it keeps `error.type`), one is cut short.
    let (failed, _) = scope.start_span(
        SpanSubject::ToolCall,
        "tool.fetch",
        attrs! {"tool_name" => "fetch"},
    );
    let timeout = SpanError {
        error_type: "timeout".into(),
        message: "fetch timed out".into(),
    };
    scope.end_span(
        &failed,
        SpanPhase::Error,
        attrs! {"is_error" => true},
        Some(timeout),
    );
    let (cut, _) = scope.start_span(
        SpanSubject::ToolCall,
        "tool.search",
        attrs! {"tool_name" => "search"},
    );
    scope.end_span(
        &cut,
        SpanPhase::Cancelled,
        attrs! {"is_error" => false},
        cancelled(),
    );
    scope.end_span(&turn, SpanPhase::Cancelled, attrs! {}, cancelled());
    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    assert_eq!(hook.open_span_count(), 0);

    let chat = points(&metrics, GEN_AI_CLIENT_OPERATION_DURATION);
    assert_eq!(chat.len(), 1);
    assert_eq!(chat[0].count, 1);
    assert_eq!(chat[0].attr("error.type"), None);
    assert_eq!(
        chat[0].attr("kaos.cancelled"),
        None,
        "no kaos attribute on gen_ai.*"
    );

    let tool = |name: &str, tool: &str| -> Point {
        let found: Vec<Point> = points(&metrics, name)
            .into_iter()
            .filter(|p| p.attr("gen_ai.tool.name") == Some(tool))
            .collect();
        assert_eq!(found.len(), 1, "{name} {tool}: {found:?}");
        found[0].clone()
    };
    let p = tool(KAOS_TOOL_CALL_DURATION, "search");
    assert_eq!(p.attr("error.type"), None);
    assert_eq!(p.attr("kaos.cancelled"), Some("true"));
    let p = tool(GEN_AI_EXECUTE_TOOL_DURATION, "search");
    assert_eq!(p.attr("error.type"), None);
    assert_eq!(
        p.attr("kaos.cancelled"),
        None,
        "no kaos attribute on gen_ai.*"
    );
    for name in [KAOS_TOOL_CALL_DURATION, GEN_AI_EXECUTE_TOOL_DURATION] {
        let p = tool(name, "fetch");
        assert_eq!(p.attr("error.type"), Some("timeout"), "{name}");
        assert_eq!(p.attr("kaos.cancelled"), None, "{name}");
    }

    let turns = points(&metrics, KAOS_TURN_DURATION);
    assert_eq!(turns[0].attr("kaos.outcome"), Some("cancelled"));
    let agent = points(&metrics, GEN_AI_INVOKE_AGENT_DURATION);
    assert_eq!(agent.len(), 1);
    assert_eq!(agent[0].attr("error.type"), None);
}

/// A minimal OTLP/HTTP receiver of metrics: every decoded request goes to the channel.
fn receiver() -> (String, mpsc::Receiver<ExportMetricsServiceRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve(stream, tx));
        }
    });
    (base, rx)
}

fn serve(stream: TcpStream, tx: mpsc::Sender<ExportMetricsServiceRequest>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        let mut path_ok = false;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if l.starts_with("POST /v1/metrics ") {
                path_ok = true;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        assert!(path_ok, "metrics must go to /v1/metrics");
        tx.send(ExportMetricsServiceRequest::decode(body.as_slice()).unwrap())
            .unwrap();
        writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_over_otlp_http_to_a_local_receiver() {
    let (base, rx) = receiver();
    let metrics = Metrics::builder()
        .endpoint(base)
        .interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let hook = metrics.hook().unwrap();
    tool_runner(hook)
        .turn("use the tool on a b c", "s")
        .await
        .unwrap();
    // Shutdown exports what was recorded (the periodic reader's final collection).
    let m = metrics.clone();
    let done =
        tokio::task::spawn_blocking(move || m.shutdown_with_deadline(Duration::from_secs(30)))
            .await
            .unwrap();
    assert_eq!(done, Ok(()));
    let requests: Vec<ExportMetricsServiceRequest> = rx.try_iter().collect();
    let wire: Vec<_> = requests
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| sm.metrics.clone())
        .collect();
    let tokens = wire
        .iter()
        .find(|m| m.name == GEN_AI_CLIENT_TOKEN_USAGE)
        .expect("token usage exported");
    assert_eq!(tokens.unit, "{token}");
    let Some(metric::Data::Histogram(h)) = &tokens.data else {
        panic!("token usage is a histogram: {tokens:?}");
    };
    let mut types: Vec<String> = h
        .data_points
        .iter()
        .flat_map(|p| &p.attributes)
        .filter(|kv| kv.key == "gen_ai.token.type")
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    types.sort();
    types.dedup();
    assert_eq!(types, ["input", "output"]);
    assert_eq!(h.data_points[0].explicit_bounds, TOKEN_BUCKETS.to_vec());
    let duration = wire
        .iter()
        .find(|m| m.name == GEN_AI_CLIENT_OPERATION_DURATION)
        .expect("operation duration exported");
    assert_eq!(duration.unit, "s");
    let Some(metric::Data::Histogram(h)) = &duration.data else {
        panic!("duration is a histogram");
    };
    assert_eq!(h.data_points[0].explicit_bounds, DURATION_BUCKETS.to_vec());
    println!("metrics export read back: {wire:#?}");
}
