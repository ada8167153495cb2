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
pub use meter::{Metrics, MetricsBuilder, MetricsExporter, MetricsShutdownError};
pub use metrics::MetricsHook;
pub use replay::{ReplayError, export_recorded, replay_spans, span_id_for, trace_id_for_run};
pub use telemetry::{
    ConsoleExporter, CountingExporter, Exporter, MemoryExporter, Protocol, Telemetry,
    TelemetryBuilder, TelemetryError, TelemetryStats,
};
pub use tracer::ambient_context;

/// The turn START attribute that carries a W3C `traceparent` to continue.
pub const TRACEPARENT_ATTRIBUTE: &str = "traceparent";

/// Whether `value` is a `traceparent` the W3C Trace Context spec accepts: version `00` in
/// exactly `00-{32 hex}-{16 hex}-{2 hex}`, lowercase, with a trace id and a parent id that
/// are not all zeros; a later version (not `ff`) has the same first 55 characters and, if
/// longer, a `-` after them. The SDK's own parser is lenient (it pads a short trace id, takes
/// uppercase or one-digit versions); the spec says such a header is to be ignored.
pub fn valid_traceparent(value: &str) -> bool {
    let value = value.trim();
    let b = value.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|s| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
    };
    let nonzero =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().any(|c| *c != b'0'));
    let shape = b.len() >= 55
        && hex(0..2)
        && &b[0..2] != b"ff"
        && [2, 35, 52].iter().all(|&i| b[i] == b'-')
        && hex(3..35)
        && hex(36..52)
        && hex(53..55)
        && nonzero(3..35)
        && nonzero(36..52);
    let length = match &b[..2.min(b.len())] {
        b"00" => b.len() == 55,
        _ => b.len() == 55 || b.get(55) == Some(&b'-'),
    };
    shape && length
}

/// A context whose (remote) span is the one named by a W3C `traceparent` header value
/// (`00-{trace id}-{span id}-{flags}`), or `None` if it is not one ([`valid_traceparent`]).
pub fn parse_traceparent(traceparent: &str) -> Option<Context> {
    parse_trace_context(traceparent, None)
}

/// [`parse_traceparent`] with the `tracestate` that came with it (vendor data a caller's
/// tracer expects back on the spans continuing its trace; kept only with a valid
/// `traceparent`, as the W3C spec says).
pub fn parse_trace_context(traceparent: &str, tracestate: Option<&str>) -> Option<Context> {
    if !valid_traceparent(traceparent) {
        return None;
    }
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.trim().to_string());
    if let Some(state) = tracestate.map(str::trim).filter(|s| !s.is_empty()) {
        carrier.insert("tracestate".to_string(), state.to_string());
    }
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes W3C Trace Context the process's global text-map propagator, so outgoing requests
/// instrumented through it carry the current span: the model providers' HTTP requests (a
/// gateway such as LiteLLM continues the `chat` span). The `kaos` CLI calls it when it exports
/// spans; a library user who wants it calls it (or sets a propagator of their own).
pub fn propagate_trace_context() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// The W3C `tracestate` of the span in `cx`, when it has one.
pub fn format_tracestate(cx: &Context) -> Option<String> {
    let state = cx.span().span_context().trace_state().header();
    (!state.is_empty()).then_some(state)
}

/// The W3C `traceparent` of the span in `cx`, if it holds a valid one.
pub fn format_traceparent(cx: &Context) -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_follow_the_w3c_rules() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert!(valid_traceparent(good));
        assert!(parse_traceparent(good).is_some());
        // A later version may carry more after a dash.
        assert!(valid_traceparent(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"
        ));
        let cx = parse_trace_context(good, Some("vendor=abc,other=1")).unwrap();
        assert_eq!(
            format_tracestate(&cx).as_deref(),
            Some("vendor=abc,other=1")
        );
        assert_eq!(format_tracestate(&parse_traceparent(good).unwrap()), None);
        assert!(parse_trace_context("00-bad", Some("vendor=abc")).is_none());
        for bad in [
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "AB-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
            "+00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            "",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
