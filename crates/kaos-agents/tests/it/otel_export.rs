//! Wire output over OTLP/HTTP to a local receiver, a refused collector, and replay.

use kaos_agents::testing::ScopeDriver;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use kaos_agents::events::{Event, SpanSubject};
use kaos_agents::hooks::{HookSet, RecordingHook};
use kaos_agents::otel::{
    CaptureContent, Telemetry, export_recorded, replay_spans, span_id_for, trace_id_for_run,
};
use kaos_agents::scope::{TurnScope, new_run_id};
use kaos_agents::{SpanPhase, attrs};
use opentelemetry::trace::SpanId;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
use opentelemetry_sdk::Resource;
use prost::Message;

use crate::otel_hook::{Harness, respond_turn};

/// A minimal OTLP/HTTP receiver: every decoded request goes to the channel.
pub(crate) fn receiver() -> (String, mpsc::Receiver<ExportTraceServiceRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve(stream, tx));
        }
    });
    (url, rx)
}

fn serve(stream: TcpStream, tx: mpsc::Sender<ExportTraceServiceRequest>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return; // connection closed
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        tx.send(request).unwrap();
        writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
    }
}

pub(crate) fn wire_spans(requests: &[ExportTraceServiceRequest]) -> Vec<ProtoSpan> {
    requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .collect()
}

fn service_names(requests: &[ExportTraceServiceRequest]) -> Vec<String> {
    requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|rs| rs.resource.as_ref())
        .flat_map(|res| &res.attributes)
        .filter(|kv| kv.key == "service.name")
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn drain(rx: &mpsc::Receiver<ExportTraceServiceRequest>) -> Vec<ExportTraceServiceRequest> {
    rx.try_iter().collect()
}

fn by_name<'a>(spans: &'a [ProtoSpan], name: &str) -> &'a ProtoSpan {
    spans.iter().find(|s| s.name == name).unwrap()
}

#[test]
fn otlp_http_wire_output() {
    let (url, rx) = receiver();
    let telemetry = Telemetry::builder()
        .traces_endpoint(url)
        .service_name("kaos-wire-test")
        .build()
        .unwrap();
    let hook = Arc::new(telemetry.hook());
    let mut hooks = HookSet::default();
    hooks.push(hook.clone());
    let scope = TurnScope::new("wire".into(), new_run_id(), "assistant".into(), hooks);
    respond_turn(&scope);
    let stats = telemetry.shutdown_with_deadline(Duration::from_secs(30));
    assert!(stats.shut_down);
    assert_eq!((stats.ended, stats.exported, stats.failed), (4, 4, 0));

    let requests = drain(&rx);
    assert!(
        service_names(&requests)
            .iter()
            .all(|s| s == "kaos-wire-test")
    );
    assert!(!service_names(&requests).is_empty());
    let spans = wire_spans(&requests);
    assert_eq!(spans.len(), 4);
    let turn = by_name(&spans, "agent.turn");
    let intent = by_name(&spans, "agent.intent_classification");
    assert!(turn.parent_span_id.is_empty());
    assert_eq!(intent.parent_span_id, turn.span_id);
    for chat in spans.iter().filter(|s| s.name == "chat function-test") {
        assert!(chat.parent_span_id == intent.span_id || chat.parent_span_id == turn.span_id);
        assert_eq!(chat.kind, 3, "CLIENT");
    }
    assert!(spans.iter().all(|s| s.trace_id == turn.trace_id));
    assert_eq!(turn.status.as_ref().unwrap().code, 1, "OK");
}

#[test]
fn refused_collector_is_counted_and_shutdown_is_bounded() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let telemetry = Telemetry::builder()
        .traces_endpoint(format!("http://{closed}/v1/traces"))
        .max_retries(0)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut hooks = HookSet::default();
    hooks.push(Arc::new(telemetry.hook()));
    let scope = TurnScope::new("down".into(), new_run_id(), "assistant".into(), hooks);
    respond_turn(&scope); // the turn completes: export never blocks it
    assert_eq!(scope.open_span_count(), 0);
    let stats = telemetry.shutdown_with_deadline(Duration::from_secs(2));
    eprintln!("refused: {stats:?}");
    // It returned (bounded); what it managed to learn is in the stats.
    assert_eq!(stats.ended, 4);
    assert_eq!(stats.exported, 0);
    if stats.shut_down {
        assert_eq!(stats.failed, 4, "{stats:?}");
    }
}

fn recorded_turns() -> (Vec<Event>, Arc<str>) {
    let recorder = Arc::new(RecordingHook::new());
    let mut hooks = HookSet::default();
    hooks.push(recorder.clone());
    let scope = TurnScope::new("replay".into(), new_run_id(), "lead".into(), hooks);
    let (turn, _) = scope.start_span(
        SpanSubject::Turn,
        "turn.1",
        attrs! {"turn_number" => 1, "model" => "m"},
    );
    let (tool, _) = scope.start_span(
        SpanSubject::ToolCall,
        "tool.helper",
        attrs! {"tool_name" => "helper", "call_id" => "c1"},
    );
    let (sub, _) = scope.start_span(
        SpanSubject::Subagent,
        "subagent.helper",
        attrs! {"subagent_name" => "helper", "task" => "t"},
    );
    let nested = TurnScope::nested(&scope, sub.clone(), "replay".into(), "helper".into());
    respond_turn(&nested);
    scope.end_span(&sub, SpanPhase::Complete, attrs! {}, None);
    scope.end_span(
        &tool,
        SpanPhase::Complete,
        attrs! {"is_error" => false},
        None,
    );
    scope.end_span(
        &turn,
        SpanPhase::Complete,
        attrs! {"outcome" => "completed"},
        None,
    );
    (recorder.events(), scope.run_id().clone())
}

#[test]
fn replay_keeps_times_ids_and_derives_the_trace_id() {
    let (events, root_run) = recorded_turns();
    let spans = replay_spans(&events, CaptureContent::None);
    assert_eq!(spans.len(), 3 + 4);
    let trace = trace_id_for_run(&root_run);
    assert_eq!(format!("{trace}"), root_run.strip_prefix("run_").unwrap());
    for s in &spans {
        assert_eq!(
            s.span_context.trace_id(),
            trace,
            "{} is in the root run's trace",
            s.name
        );
    }
    // Every event span keeps its id and its original start/end timestamps.
    for e in &events {
        let Some(span) = e.span() else { continue };
        let replayed = spans
            .iter()
            .find(|s| s.span_context.span_id() == span_id_for(&span.span_id))
            .unwrap_or_else(|| panic!("no replayed span for {}", span.name));
        let t = std::time::UNIX_EPOCH + Duration::from_nanos(e.timestamp);
        if span.phase == SpanPhase::Start {
            assert_eq!(replayed.start_time, t, "{}", span.name);
            let parent = span.parent_span_id.as_deref().map(span_id_for);
            let mut replayed_parent = replayed.parent_span_id;
            if span.attr_str("purpose") == Some("intent_classification") {
                // The classifier call sits in the intent span, a child of the same parent.
                let intent = spans
                    .iter()
                    .find(|s| s.span_context.span_id() == replayed_parent)
                    .unwrap();
                assert_eq!(intent.name, "agent.intent_classification");
                assert_eq!(
                    intent.span_context.span_id(),
                    span_id_for(&format!("{}#intent", span.span_id))
                );
                replayed_parent = intent.parent_span_id;
            }
            assert_eq!(replayed_parent, parent.unwrap_or(SpanId::INVALID));
        } else {
            assert_eq!(replayed.end_time, t, "{}", span.name);
        }
    }
    // Deterministic: the same record replays to the same ids.
    let again = replay_spans(&events, CaptureContent::None);
    let ids = |v: &[opentelemetry_sdk::trace::SpanData]| {
        let mut ids: Vec<String> = v
            .iter()
            .map(|s| {
                format!(
                    "{}/{}/{}",
                    s.span_context.trace_id(),
                    s.span_context.span_id(),
                    s.parent_span_id
                )
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&spans), ids(&again));
    // Replayed inside someone else's span: the same trees (a record has no caller; its roots
    // used to join whatever span was current).
    use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let outer = opentelemetry::Context::current_with_span(provider.tracer("app").start("outer"));
    let inside = {
        let _current = outer.attach();
        replay_spans(&events, CaptureContent::None)
    };
    assert_eq!(ids(&spans), ids(&inside));
}

#[test]
fn replay_exports_over_otlp() {
    let (events, root_run) = recorded_turns();
    let (url, rx) = receiver();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .unwrap();
    let resource = Resource::builder().with_service_name("kaos-replay").build();
    let n = export_recorded(&events, exporter, &resource, CaptureContent::None).unwrap();
    assert_eq!(n, 7);
    let requests = drain(&rx);
    assert_eq!(service_names(&requests), ["kaos-replay"]);
    let spans = wire_spans(&requests);
    assert_eq!(spans.len(), 7);
    let root = root_run.strip_prefix("run_").unwrap();
    for s in &spans {
        let hex: String = s.trace_id.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, root);
    }
    let first_start = events.iter().find(|e| e.span().is_some()).unwrap();
    let turn = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    assert_eq!(turn.start_time_unix_nano, first_start.timestamp);
}

#[test]
fn memory_telemetry_and_harness_agree() {
    // The Memory exporter of Telemetry sees what the in-memory test exporter sees.
    let telemetry = Telemetry::builder()
        .exporter(kaos_agents::otel::Exporter::Memory)
        .synchronous(true)
        .build()
        .unwrap();
    let mut hooks = HookSet::default();
    hooks.push(Arc::new(telemetry.hook()));
    respond_turn(&TurnScope::new(
        "m".into(),
        new_run_id(),
        "assistant".into(),
        hooks,
    ));
    let h = Harness::new();
    respond_turn(&h.scope("m", "assistant"));
    let mut a: Vec<_> = telemetry
        .memory_spans()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    let mut b: Vec<_> = h.spans().iter().map(|s| s.name.to_string()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(telemetry.stats().exported, 4);
}
