//! OpenTelemetry export of turn event streams (feature `otel`).
//!
//! * [`OTelHook`] maps a turn's events onto spans (DESIGN §5): `agent.turn`,
//!   `agent.intent_classification`, `chat {model}`, `agent.tool_call.{tool}`,
//!   `agent.step.{id}`, `agent.subagent.{name}`, `agent.handoff.{to}`, each with GenAI
//!   semantic-convention attributes. [`SpanNaming::GenAi`] switches to GenAI names.
//! * [`telemetry`] builds a tracer provider from the standard `OTEL_*` variables, counts
//!   exported, dropped and failed spans, and shuts down within a deadline.
//! * [`replay`] turns recorded events back into spans with their original times and ids.
//!
//! Cancelled spans keep status UNSET (a deferral or abandonment is not an error, as in
//! Pydantic AI and Strands) and carry `kaos.cancelled=true` and `kaos.cancel_reason`.

pub mod attributes;
pub mod content;
mod env;
mod hook;
mod intern;
mod mapping;
pub mod meter;
pub mod metrics;
pub mod replay;
mod shards;
mod state;
pub mod telemetry;
mod tracer;

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub use crate::naming::SpanNaming;
pub use content::{CaptureContent, DEFAULT_CONTENT_CAP};
pub use hook::OTelHook;
pub use meter::{Metrics, MetricsBuilder, MetricsExporter};
pub use metrics::MetricsHook;
pub use replay::{ReplayError, export_recorded, replay_spans, span_id_for, trace_id_for_run};
pub use telemetry::{
    ConsoleExporter, CountingExporter, Exporter, MemoryExporter, Protocol, Telemetry,
    TelemetryBuilder, TelemetryError, TelemetryStats,
};
pub use tracer::ambient_context;

/// The turn START attribute that carries a W3C `traceparent` to continue.
pub const TRACEPARENT_ATTRIBUTE: &str = "traceparent";

/// A context whose (remote) span is the one named by a W3C `traceparent` header value
/// (`00-{trace id}-{span id}-{flags}`), or `None` if it does not parse.
pub fn parse_traceparent(traceparent: &str) -> Option<Context> {
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.trim().to_string());
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The W3C `traceparent` of the span in `cx`, if it holds a valid one.
pub fn format_traceparent(cx: &Context) -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}
