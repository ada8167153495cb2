//! [`MetricsHook`]: GenAI client metrics and kaos's own, from the same event stream as the
//! spans, through the OpenTelemetry metrics SDK. It works with or without [`super::OTelHook`].
//!
//! | metric | instrument, unit | attributes | when |
//! |---|---|---|---|
//! | `gen_ai.client.operation.duration` | histogram `s` | `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`, `server.address`, `server.port` (clients with a server), `error.type` | every model call |
//! | `gen_ai.client.token.usage` | histogram `{token}` | the same + `gen_ai.token.type` (`input`/`output`) | every model call that reported usage |
//! | `gen_ai.client.operation.time_to_first_chunk` | histogram `s` | the same as duration | streamed calls (`time_to_first_chunk_ms` on the call's end) |
//! | `kaos.turn.duration` | histogram `s` | `gen_ai.agent.name`, `kaos.outcome` | every turn |
//! | `kaos.tool_call.duration` | histogram `s` | `gen_ai.tool.name`, `error.type`, `kaos.cancelled` | every tool call that ran or was cut short (not one paused for approval) |
//! | `kaos.span_exports` | observable counter `{span}` | `kaos.export.result` (`exported`, `failed`, `dropped`) | with [`MetricsHook::observe_exports`] |
//! | `kaos.audit.write_failures` | observable counter `{event}` | – | with [`MetricsHook::observe_audit`] |
//! | `kaos.redactions` | observable counter `{replacement}` | `kaos.redaction.rule` | with [`MetricsHook::observe_audit`] |
//! | `gen_ai.invoke_agent.duration`, `gen_ai.execute_tool.duration` | histogram `s` | as the turn/tool ones | only with `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental` (unreleased names) |
//!
//! `error.type` is set only on operations that ended in an error (phase `Error`, or a tool
//! result marked as an error). Cancelled ones are measured without it: kaos's own tool metric
//! marks them `kaos.cancelled=true`, its turn metric `kaos.outcome=cancelled`, and the GenAI
//! metrics carry no extra attribute. A tool call paused for approval did not run and records
//! no tool duration.
//!
//! Bucket boundaries are the conventions' (v1.41 `gen-ai-metrics.md`).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter, ObservableCounter};
use serde_json::Value;

use super::attributes::*;
use super::state::IdHasher;
use super::telemetry::TelemetryStats;
use crate::audit::AuditHook;
use crate::events::{Event, EventKind, SpanEvent, SpanPhase, SpanSubject, attr};
use crate::hooks::{Hook, HookAction};

/// `gen_ai.client.operation.duration` (s).
pub const GEN_AI_CLIENT_OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
/// `gen_ai.client.token.usage` ({token}).
pub const GEN_AI_CLIENT_TOKEN_USAGE: &str = "gen_ai.client.token.usage";
/// `gen_ai.client.operation.time_to_first_chunk` (s), streamed calls only.
pub const GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";
/// `gen_ai.invoke_agent.duration` (s): unreleased, behind the experimental opt-in.
pub const GEN_AI_INVOKE_AGENT_DURATION: &str = "gen_ai.invoke_agent.duration";
/// `gen_ai.execute_tool.duration` (s): unreleased, behind the experimental opt-in.
pub const GEN_AI_EXECUTE_TOOL_DURATION: &str = "gen_ai.execute_tool.duration";
/// `kaos.turn.duration` (s) by outcome.
pub const KAOS_TURN_DURATION: &str = "kaos.turn.duration";
/// `kaos.tool_call.duration` (s) by tool and error.
pub const KAOS_TOOL_CALL_DURATION: &str = "kaos.tool_call.duration";
/// `kaos.span_exports` ({span}) by `kaos.export.result`.
pub const KAOS_SPAN_EXPORTS: &str = "kaos.span_exports";
/// `kaos.audit.write_failures` ({event}).
pub const KAOS_AUDIT_WRITE_FAILURES: &str = "kaos.audit.write_failures";
/// `kaos.redactions` ({replacement}) by `kaos.redaction.rule`.
pub const KAOS_REDACTIONS: &str = "kaos.redactions";
/// `gen_ai.token.type`: `input` or `output`.
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";

/// The conventions' boundaries for durations in seconds (and time to first chunk).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// The conventions' boundaries for token counts.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// The variable that opts into unreleased GenAI names.
pub const SEMCONV_OPT_IN_ENV: &str = "OTEL_SEMCONV_STABILITY_OPT_IN";
/// Its value that does.
pub const GEN_AI_LATEST_EXPERIMENTAL: &str = "gen_ai_latest_experimental";

/// Whether `OTEL_SEMCONV_STABILITY_OPT_IN` (a comma-separated list) names
/// `gen_ai_latest_experimental`.
pub fn experimental_opt_in(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.split(',').any(|p| p.trim() == GEN_AI_LATEST_EXPERIMENTAL))
}

const SHARDS: usize = 16;

/// What a span's START said that its end needs.
struct Started {
    start_ns: u64,
    /// Base attributes of its measurements (operation, provider, model / tool / agent).
    attrs: Vec<KeyValue>,
}

type Key = (Arc<str>, Arc<str>);

/// Open spans, sharded by key so concurrent runs rarely share a lock.
struct OpenSpans {
    shards: Vec<Mutex<HashMap<Key, Started, std::hash::BuildHasherDefault<IdHasher>>>>,
}

impl OpenSpans {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }

    fn shard(
        &self,
        key: &Key,
    ) -> &Mutex<HashMap<Key, Started, std::hash::BuildHasherDefault<IdHasher>>> {
        let mut h = std::hash::BuildHasherDefault::<IdHasher>::default().build_hasher();
        key.0.hash(&mut h);
        key.1.hash(&mut h);
        let i = (std::hash::Hasher::finish(&h) as usize) % SHARDS;
        &self.shards[i]
    }

    fn insert(&self, key: Key, started: Started) {
        self.shard(&key)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, started);
    }

    fn remove(&self, key: &Key) -> Option<Started> {
        self.shard(key)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key)
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum()
    }
}

/// Records GenAI client metrics and kaos's own from turn events (see the module table).
pub struct MetricsHook {
    meter: Meter,
    operation_duration: Histogram<f64>,
    token_usage: Histogram<u64>,
    time_to_first_chunk: Histogram<f64>,
    turn_duration: Histogram<f64>,
    tool_duration: Histogram<f64>,
    invoke_agent_duration: Option<Histogram<f64>>,
    execute_tool_duration: Option<Histogram<f64>>,
    open: OpenSpans,
    observers: Mutex<Vec<ObservableCounter<u64>>>,
}

impl std::fmt::Debug for MetricsHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHook")
            .field("experimental", &self.invoke_agent_duration.is_some())
            .finish_non_exhaustive()
    }
}

fn seconds_histogram(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(DURATION_BUCKETS.to_vec())
        .build()
}

impl MetricsHook {
    /// Instruments on `meter`; the unreleased names follow `OTEL_SEMCONV_STABILITY_OPT_IN`.
    pub fn new(meter: Meter) -> Self {
        let opt_in = std::env::var(SEMCONV_OPT_IN_ENV).ok();
        Self::with_experimental(meter, experimental_opt_in(opt_in.as_deref()))
    }

    /// A hook over the global meter provider's `kaos.agents` meter.
    pub fn global() -> Self {
        Self::new(opentelemetry::global::meter("kaos.agents"))
    }

    /// Instruments on `meter`, with the unreleased GenAI names when `experimental`.
    pub fn with_experimental(meter: Meter, experimental: bool) -> Self {
        let operation_duration = seconds_histogram(
            &meter,
            GEN_AI_CLIENT_OPERATION_DURATION,
            "GenAI operation duration.",
        );
        let token_usage = meter
            .u64_histogram(GEN_AI_CLIENT_TOKEN_USAGE)
            .with_unit("{token}")
            .with_description("Number of input and output tokens used.")
            .with_boundaries(TOKEN_BUCKETS.to_vec())
            .build();
        let time_to_first_chunk = seconds_histogram(
            &meter,
            GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK,
            "Time to receive the first chunk of a streamed response.",
        );
        let turn_duration = seconds_histogram(
            &meter,
            KAOS_TURN_DURATION,
            "Agent turn duration, by outcome.",
        );
        let tool_duration = seconds_histogram(
            &meter,
            KAOS_TOOL_CALL_DURATION,
            "Tool call duration, by tool and error.",
        );
        let (invoke_agent_duration, execute_tool_duration) = if experimental {
            (
                Some(seconds_histogram(
                    &meter,
                    GEN_AI_INVOKE_AGENT_DURATION,
                    "GenAI agent invocation duration.",
                )),
                Some(seconds_histogram(
                    &meter,
                    GEN_AI_EXECUTE_TOOL_DURATION,
                    "GenAI tool execution duration.",
                )),
            )
        } else {
            (None, None)
        };
        Self {
            meter,
            operation_duration,
            token_usage,
            time_to_first_chunk,
            turn_duration,
            tool_duration,
            invoke_agent_duration,
            execute_tool_duration,
            open: OpenSpans::new(),
            observers: Mutex::new(Vec::new()),
        }
    }

    /// How many started spans wait for their end (drops to 0 when every turn ended).
    pub fn open_span_count(&self) -> usize {
        self.open.len()
    }

    /// Reports span export outcomes (`kaos.span_exports` by `kaos.export.result`) read from
    /// `stats` at each collection (e.g. `move || telemetry.stats()`).
    pub fn observe_exports(&self, stats: impl Fn() -> TelemetryStats + Send + Sync + 'static) {
        let counter = self
            .meter
            .u64_observable_counter(KAOS_SPAN_EXPORTS)
            .with_unit("{span}")
            .with_description("Ended spans by export result.")
            .with_callback(move |observer| {
                let s = stats();
                observer.observe(
                    s.exported,
                    &[KeyValue::new("kaos.export.result", "exported")],
                );
                observer.observe(s.failed, &[KeyValue::new("kaos.export.result", "failed")]);
                if s.shut_down {
                    observer.observe(
                        s.pending_or_dropped,
                        &[KeyValue::new("kaos.export.result", "dropped")],
                    );
                }
            })
            .build();
        self.keep(counter);
    }

    /// Reports an audit trail's write failures and its redactions by rule.
    pub fn observe_audit(&self, audit: Arc<AuditHook>) {
        let a = audit.clone();
        let failures = self
            .meter
            .u64_observable_counter(KAOS_AUDIT_WRITE_FAILURES)
            .with_unit("{event}")
            .with_description("Audit events lost to write, sync or open failures.")
            .with_callback(move |observer| observer.observe(a.stats().failures, &[]))
            .build();
        let redactions = self
            .meter
            .u64_observable_counter(KAOS_REDACTIONS)
            .with_unit("{replacement}")
            .with_description("Values replaced by the redactor, by rule.")
            .with_callback(move |observer| {
                for (rule, n) in &audit.stats().redactions.counts {
                    observer.observe(*n, &[KeyValue::new("kaos.redaction.rule", rule.clone())]);
                }
            })
            .build();
        self.keep(failures);
        self.keep(redactions);
    }

    fn keep(&self, counter: ObservableCounter<u64>) {
        self.observers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(counter);
    }

    fn on_start(&self, event: &Event, span: &SpanEvent) {
        let s = |k: &str| span.attr_str(k).unwrap_or("").to_string();
        let attrs = match span.subject {
            SpanSubject::LlmCall => {
                let mut attrs = vec![
                    KeyValue::new(GEN_AI_OPERATION_NAME, OP_CHAT),
                    KeyValue::new(GEN_AI_PROVIDER_NAME, s("provider")),
                    KeyValue::new(GEN_AI_REQUEST_MODEL, s("model")),
                ];
                // The conventions recommend the server on model-call metrics, as on spans.
                if let Some(host) = span.attr_str("server_address") {
                    attrs.push(KeyValue::new(SERVER_ADDRESS, host.to_string()));
                    if let Some(port) =
                        attr(&span.attributes, "server_port").and_then(Value::as_i64)
                    {
                        attrs.push(KeyValue::new(SERVER_PORT, port));
                    }
                }
                attrs
            }
            SpanSubject::ToolCall => {
                let tool = span
                    .attr_str("tool_name")
                    .unwrap_or_else(|| span.name.strip_prefix("tool.").unwrap_or(&span.name));
                vec![KeyValue::new(GEN_AI_TOOL_NAME, tool.to_string())]
            }
            SpanSubject::Turn => {
                let mut attrs = vec![KeyValue::new(GEN_AI_AGENT_NAME, event.agent.clone())];
                // The GenAI agent metric also names the agent's model and provider (the
                // conventions require the provider); kaos's own turn metric keeps to the
                // agent and the outcome. Read only when that metric is on.
                if self.invoke_agent_duration.is_some() {
                    for (key, name) in [
                        ("provider", GEN_AI_PROVIDER_NAME),
                        ("model", GEN_AI_REQUEST_MODEL),
                    ] {
                        if let Some(v) = span.attr_str(key) {
                            attrs.push(KeyValue::new(name, v.to_string()));
                        }
                    }
                }
                attrs
            }
            _ => return,
        };
        self.open.insert(
            (event.run_id.clone(), span.span_id.clone()),
            Started {
                start_ns: event.timestamp,
                attrs,
            },
        );
    }

    fn on_end(&self, event: &Event, span: &SpanEvent) {
        let Some(started) = self
            .open
            .remove(&(event.run_id.clone(), span.span_id.clone()))
        else {
            return;
        };
        let seconds = span
            .duration_ms
            .map(|ms| ms / 1000.0)
            .unwrap_or_else(|| event.timestamp.saturating_sub(started.start_ns) as f64 / 1e9);
        let mut attrs = started.attrs;
        let a = &span.attributes;
        // `error.type` only when the operation ended in an error (the GenAI conventions): a
        // cancelled span carries a `SpanError` with its reason, but a cancellation is not a
        // failure, and the spans keep status UNSET for it too.
        let cancelled = span.phase == SpanPhase::Cancelled;
        let error_type = if cancelled {
            None
        } else {
            span.error.as_ref().map(|e| e.error_type.clone())
        };
        match span.subject {
            SpanSubject::LlmCall => {
                if let Some(m) = attr(a, "response_model").and_then(Value::as_str)
                    && !m.is_empty()
                {
                    attrs.push(KeyValue::new(GEN_AI_RESPONSE_MODEL, m.to_string()));
                }
                if let Some(e) = error_type {
                    attrs.push(KeyValue::new(ERROR_TYPE, e));
                }
                self.operation_duration.record(seconds, &attrs);
                if let Some(ms) = attr(a, "time_to_first_chunk_ms").and_then(Value::as_f64) {
                    self.time_to_first_chunk.record(ms / 1000.0, &attrs);
                }
                for (field, kind) in [("input_tokens", "input"), ("output_tokens", "output")] {
                    if let Some(n) = attr(a, field).and_then(Value::as_u64) {
                        attrs.push(KeyValue::new(GEN_AI_TOKEN_TYPE, kind));
                        self.token_usage.record(n, &attrs);
                        attrs.pop();
                    }
                }
            }
            SpanSubject::ToolCall => {
                // A call paused for a human's approval never ran: no tool duration to record.
                if cancelled && awaits_approval(span) {
                    return;
                }
                let is_error = attr(a, "is_error").and_then(Value::as_bool) == Some(true);
                let error_type = error_type
                    .or_else(|| (is_error && !cancelled).then(|| "tool_error".to_string()));
                if let Some(e) = error_type {
                    attrs.push(KeyValue::new(ERROR_TYPE, e));
                }
                // kaos's own metric tells cancellations apart; the GenAI one keeps to the
                // conventions' attributes.
                if cancelled {
                    attrs.push(KeyValue::new(KAOS_CANCELLED, true));
                }
                self.tool_duration.record(seconds, &attrs);
                if let Some(h) = &self.execute_tool_duration {
                    if cancelled {
                        attrs.pop();
                    }
                    attrs.push(KeyValue::new(GEN_AI_OPERATION_NAME, OP_EXECUTE_TOOL));
                    h.record(seconds, &attrs);
                }
            }
            SpanSubject::Turn => {
                let outcome =
                    attr(a, "outcome")
                        .and_then(Value::as_str)
                        .unwrap_or(match span.phase {
                            SpanPhase::Cancelled => "cancelled",
                            SpanPhase::Error => "failed",
                            _ => "completed",
                        });
                // kaos's own metric: the agent (the first attribute) and the outcome.
                let own: Vec<KeyValue> = attrs
                    .iter()
                    .take(1)
                    .cloned()
                    .chain([KeyValue::new(KAOS_OUTCOME, outcome.to_string())])
                    .collect();
                self.turn_duration.record(seconds, &own);
                if let Some(h) = &self.invoke_agent_duration {
                    attrs.push(KeyValue::new(GEN_AI_OPERATION_NAME, OP_INVOKE_AGENT));
                    if let Some(e) = error_type {
                        attrs.push(KeyValue::new(ERROR_TYPE, e));
                    }
                    h.record(seconds, &attrs);
                }
            }
            _ => {}
        }
    }
}

/// Whether a cancelled tool call stopped to wait for a human's approval (the runner ends its
/// span with the reason `awaiting_approval`, as an attribute or as the error type).
fn awaits_approval(span: &SpanEvent) -> bool {
    attr(&span.attributes, "cancel_reason").and_then(Value::as_str) == Some(AWAITING_APPROVAL)
        || span
            .error
            .as_ref()
            .is_some_and(|e| e.error_type == AWAITING_APPROVAL)
}

/// The cancel reason of a tool call paused for approval.
const AWAITING_APPROVAL: &str = "awaiting_approval";

impl Hook for MetricsHook {
    fn name(&self) -> &str {
        "metrics"
    }

    fn on_event(&self, event: &Event) -> HookAction {
        if let EventKind::Span(span) = &event.kind {
            match span.phase {
                SpanPhase::Start => self.on_start(event, span),
                _ => self.on_end(event, span),
            }
        }
        HookAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_in_reads_a_list() {
        assert!(experimental_opt_in(Some("http,gen_ai_latest_experimental")));
        assert!(experimental_opt_in(Some(" gen_ai_latest_experimental ")));
        assert!(!experimental_opt_in(Some("http")));
        assert!(!experimental_opt_in(None));
    }
}
