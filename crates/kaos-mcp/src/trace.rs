//! Trace context across the MCP boundary: the W3C `traceparent`/`tracestate` of the tool
//! span, injected into a request's `params._meta` (SEP-414), and extracted on the server side.

use std::collections::HashMap;
use std::sync::Arc;

use kaos_agents::ToolContext;
use kaos_agents::otel::OTelHook;
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rmcp::model::RequestMetaObject;

/// Finds the OTel context of a tool call's span.
pub type TraceResolver = Arc<dyn Fn(&ToolContext) -> Option<Context> + Send + Sync>;

/// The resolver for an [`OTelHook`]: the hook's span for the call (`run_id`, `span_id`), or
/// else the current context if it holds a span.
pub fn otel_resolver(hook: Arc<OTelHook>) -> TraceResolver {
    Arc::new(move |ctx: &ToolContext| {
        hook.context_of(&ctx.run_id, &ctx.span_id)
            .or_else(current_context)
    })
}

/// The current OTel context, if it holds a valid span.
pub fn current_context() -> Option<Context> {
    let cx = Context::current();
    cx.span().span_context().is_valid().then_some(cx)
}

/// Writes `cx`'s `traceparent` (and `tracestate`, when not empty) into `meta`.
pub fn inject(cx: &Context, meta: &mut RequestMetaObject) {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    if let Some(tp) = carrier.remove("traceparent") {
        meta.set_traceparent(tp);
    }
    if let Some(ts) = carrier.remove("tracestate").filter(|s| !s.is_empty()) {
        meta.set_tracestate(ts);
    }
}
