//! The turn's parent: with no explicit traceparent, `agent.turn` is a child of the caller's
//! current OTel context, or (feature `tracing`) of the current `tracing` span; an explicit
//! `traceparent` or a session parent wins.

use std::collections::HashMap;

use kaos_agents::attrs;
use kaos_agents::events::{SpanSubject, TurnOutcome};
use kaos_agents::otel::parse_traceparent;
use kaos_agents::testing::ScopeDriver;
use kaos_agents::{Agent, KaosRuntime, Runner};
use kaos_llm::FunctionClient;
use opentelemetry::Context;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::SpanData;
use serde_json::json;

use crate::otel_hook::{Harness, attr_s, end_turn, named, start_turn, summary};
use crate::util::routing_model;

fn runner(h: &Harness) -> Runner {
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", FunctionClient::new(routing_model("x", json!({}))));
    let agent = Agent::builder().model("fake").build().unwrap();
    Runner::new(agent, runtime).with_shared_hook(h.hook.clone())
}

#[tokio::test]
async fn a_turn_continues_the_callers_otel_context() {
    let h = Harness::new();
    let app = h.provider.tracer("app");
    let request = app.start("GET /summarize");
    let cx = Context::current_with_span(request);
    runner(&h)
        .turn("Summarize the lease.", "s")
        .with_context(cx.clone())
        .await
        .unwrap();
    cx.span().end();
    let spans = h.spans();
    let parent = named(&spans, "GET /summarize");
    let turn = named(&spans, "agent.turn");
    assert_eq!(turn.parent_span_id, parent.span_context.span_id());
    assert_eq!(turn.span_context.trace_id(), parent.span_context.trace_id());
    // Without a caller context, a turn is a root.
    runner(&h).turn("again", "s2").await.unwrap();
    let spans = h.spans();
    let roots = spans
        .iter()
        .filter(|s| {
            s.name == "agent.turn" && s.parent_span_id == opentelemetry::trace::SpanId::INVALID
        })
        .count();
    assert_eq!(roots, 1);
}

/// The turn's parent is the context where `run` was called, even when the stream is polled
/// elsewhere: an axum handler returns `Sse::new(runner.run(..))`, and the server polls it
/// after the handler's span has been left.
#[tokio::test]
async fn a_stream_made_in_a_context_and_polled_outside_it_keeps_that_parent() {
    use futures::StreamExt as _;
    let h = Harness::new();
    let app = h.provider.tracer("app");
    let cx = Context::current_with_span(app.start("GET /stream"));
    let stream = {
        let _inside = cx.clone().attach();
        runner(&h).run("Summarize the lease.", "s")
    };
    let events: Vec<_> = stream.collect().await;
    assert!(!events.is_empty());
    cx.span().end();
    let spans = h.spans();
    let parent = named(&spans, "GET /stream");
    let turn = named(&spans, "agent.turn");
    assert_eq!(turn.parent_span_id, parent.span_context.span_id());
    assert_eq!(turn.span_context.trace_id(), parent.span_context.trace_id());
    // Only the turn's own START took that parent: its children nest under the turn.
    let chat = spans.iter().find(|s| s.name.starts_with("chat ")).unwrap();
    assert_ne!(chat.parent_span_id, parent.span_context.span_id());
}

#[cfg(feature = "tracing")]
#[tokio::test]
async fn a_turn_inside_a_tracing_span_is_its_child() {
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let h = Harness::new();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(h.provider.tracer("app")));
    let _guard = tracing::subscriber::set_default(subscriber);
    let handler = tracing::info_span!("handler");
    runner(&h)
        .turn("Summarize the lease.", "s")
        .instrument(handler.clone())
        .await
        .unwrap();
    drop(handler);
    let spans = h.spans();
    let parent = named(&spans, "handler");
    let turn = named(&spans, "agent.turn");
    assert_eq!(turn.parent_span_id, parent.span_context.span_id());
    assert_eq!(turn.span_context.trace_id(), parent.span_context.trace_id());
}

/// An explicit `traceparent` on the turn, or a session parent set through the API, wins over
/// the ambient context.
#[test]
fn traceparent_on_turn_start_continues_the_callers_trace() {
    let h = Harness::new();
    let scope = h.scope("s-tp", "assistant");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (turn, _) = scope.start_span(
        SpanSubject::Turn,
        "turn.1",
        attrs! {"turn_number" => 1, "model" => "function-test", "traceparent" => tp},
    );
    end_turn(&scope, &turn, "completed");
    scope.emit(summary("x", None, vec![], TurnOutcome::Completed));
    // Session-level parent (API) for a turn without the attribute.
    let other = h.scope("s-tp2", "assistant");
    h.hook.set_session_parent(
        "s-tp2",
        parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap(),
    );
    let turn2 = start_turn(&other, 1);
    end_turn(&other, &turn2, "completed");
    other.emit(summary("x", None, vec![], TurnOutcome::Completed));

    let spans = h.spans();
    let by_session: HashMap<String, &SpanData> = spans
        .iter()
        .map(|s| (attr_s(s, "kaos.session_id"), s))
        .collect();
    let t1 = by_session["s-tp"];
    assert_eq!(
        format!("{}", t1.span_context.trace_id()),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(format!("{}", t1.parent_span_id), "00f067aa0ba902b7");
    assert!(t1.parent_span_is_remote);
    let t2 = by_session["s-tp2"];
    assert_eq!(
        format!("{}", t2.span_context.trace_id()),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(format!("{}", t2.parent_span_id), "b7ad6b7169203331");
}
