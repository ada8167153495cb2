//! Observability wiring of a turn: OTLP export, content capture, trace continuation (also
//! into command tools) and the audit trail. (`kaos audit` is [`crate::audit_cmd`].)

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use kaos_agents::audit::AuditHook;
use kaos_agents::hooks::{HookAction, HookError, LoggingHook};
use kaos_agents::otel::{
    CaptureContent, Exporter, Metrics, MetricsBuilder, MetricsExporter, OTelHook, Protocol,
    Telemetry, TelemetryBuilder, format_traceparent, format_tracestate,
};
use kaos_agents::{CircuitBreaker, Event, EventKind, Hook, RunOptions, Runner, SpanPhase};

use crate::cli::{self, OtlpProtocol};
use crate::plan::Observability;
use crate::tools::{TraceContext, TraceHeaders};

/// The circuit breaker every `kaos` runner gets (as the reference auto-installs it): a tool
/// that failed this many times in a row is skipped ...
const CIRCUIT_FAILURES: u32 = 5;
/// ... until this long has passed; then one probe call runs.
const CIRCUIT_RESET: Duration = Duration::from_secs(30);

/// A fresh circuit breaker with the reference's defaults (5 failures, 30 s).
pub fn circuit_breaker() -> CircuitBreaker {
    CircuitBreaker::new(CIRCUIT_FAILURES, CIRCUIT_RESET)
}

/// How long the exporter may take to flush after a turn.
const EXPORT_DEADLINE: Duration = Duration::from_secs(2);

/// Checks observability settings that can be checked before anything runs.
pub fn check_observability(o: &Observability) -> anyhow::Result<()> {
    tracing_settings(o)?;
    metrics_settings(o)?;
    Ok(())
}

/// The items of a comma-separated `OTEL_*_EXPORTER` variable, lowercased.
fn exporter_items(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

/// Whether the user asked for OTLP (or console) export, by flag or by `OTEL_*` variables.
fn export_requested(o: &Observability) -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    o.otlp.is_some()
        || set("OTEL_EXPORTER_OTLP_ENDPOINT")
        || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        || exporter_items("OTEL_TRACES_EXPORTER")
            .iter()
            .any(|i| matches!(i.as_str(), "otlp" | "console" | "stdout" | "logging"))
}

/// The telemetry settings from the `OTEL_*` variables and the flags (flags win).
fn tracing_settings(o: &Observability) -> anyhow::Result<Option<TelemetryBuilder>> {
    if !export_requested(o) {
        return Ok(None);
    }
    let mut builder = TelemetryBuilder::from_env().context("reading the OTEL_* variables")?;
    if let Some(url) = &o.otlp {
        builder = builder.exporter(Exporter::Otlp);
        builder = if url.trim_end_matches('/').ends_with("/v1/traces") {
            builder.traces_endpoint(url.clone())
        } else {
            builder.endpoint(url.clone())
        };
    }
    if let Some(p) = o.otlp_protocol {
        builder = builder.protocol(protocol(p));
    }
    Ok(Some(builder))
}

fn protocol(p: OtlpProtocol) -> Protocol {
    match p {
        OtlpProtocol::Http => Protocol::HttpProtobuf,
        OtlpProtocol::Grpc => Protocol::Grpc,
    }
}

/// The metrics settings: on when `OTEL_METRICS_EXPORTER` asks for them, or when spans are
/// exported and it does not say `none`; then they go where the spans go (the same collector,
/// with the same transport, or the console when the spans print there and no collector was
/// named).
fn metrics_settings(o: &Observability) -> anyhow::Result<Option<MetricsBuilder>> {
    // Reading the variables warns about what kaos ignores (`prometheus`), also when the
    // result is that metrics stay off.
    let builder = MetricsBuilder::from_env().context("reading the OTEL_* variables")?;
    let asked: Vec<MetricsExporter> = exporter_items("OTEL_METRICS_EXPORTER")
        .iter()
        .filter_map(|i| MetricsExporter::parse(i))
        .collect();
    // Values kaos does not know count as unset (the specification: ignore them).
    let on = match asked.first() {
        Some(first) => *first != MetricsExporter::None,
        None => export_requested(o),
    };
    if !on {
        return Ok(None);
    }
    let mut builder = builder;
    if asked.is_empty() && o.otlp.is_none() && spans_to_console_only() {
        builder = builder.exporter(MetricsExporter::Console);
    }
    if let Some(url) = &o.otlp {
        let base = url.trim_end_matches('/');
        let base = base.strip_suffix("/v1/traces").unwrap_or(base);
        builder = builder
            .exporter(MetricsExporter::Otlp)
            .endpoint(base.to_string());
    }
    if let Some(p) = o.otlp_protocol {
        builder = builder.protocol(protocol(p));
    }
    Ok(Some(builder))
}

/// Whether spans print on the console and no OTLP endpoint is set for them (a local look,
/// no collector): metrics that were not asked for separately print there too, instead of
/// failing against a collector nobody named.
fn spans_to_console_only() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    exporter_items("OTEL_TRACES_EXPORTER")
        .iter()
        .find_map(|i| Exporter::parse(i))
        == Some(Exporter::Console)
        && !set("OTEL_EXPORTER_OTLP_ENDPOINT")
        && !set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
}

fn capture_mode(o: &Observability) -> CaptureContent {
    match o.capture_content {
        Some(cli::CaptureContent::None) => CaptureContent::None,
        Some(cli::CaptureContent::Redacted) => CaptureContent::Redacted,
        Some(cli::CaptureContent::Full) => CaptureContent::Full,
        None => CaptureContent::from_env(),
    }
}

/// Where a plan's command tools find the OTel hook once [`attach_hooks`] has made it: the
/// tools are built with the agent, before the hooks, so they get this slot (not a
/// process-global) and read it at call time.
#[derive(Clone, Default)]
pub struct TraceSlot(Arc<OnceLock<Arc<OTelHook>>>);

impl std::fmt::Debug for TraceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceSlot")
            .field("tracing", &self.0.get().is_some())
            .finish()
    }
}

impl TraceSlot {
    /// The OTel context of a tool call's span (by run and span id), when tracing is on: MCP
    /// tools put its `traceparent` into the request's `params._meta`.
    pub fn otel_context(&self, run_id: &str, span_id: &str) -> Option<opentelemetry::Context> {
        self.0.get()?.context_of(run_id, span_id)
    }

    /// The W3C trace headers of a tool call's span (by run and span id), when tracing is on:
    /// command tools pass them to their child process as `TRACEPARENT` and `TRACESTATE`, so
    /// the child's own spans join the turn's trace under the tool call.
    pub fn context(&self) -> TraceContext {
        let slot = Arc::clone(&self.0);
        Arc::new(move |run_id: &str, span_id: &str| {
            let cx = slot.get()?.context_of(run_id, span_id)?;
            Some(TraceHeaders {
                traceparent: format_traceparent(&cx)?,
                tracestate: format_tracestate(&cx),
            })
        })
    }
}

/// The process's OTel hook, for log lines only (the `tracing` subscriber is process-wide):
/// set by the first [`attach_hooks`] that turns tracing on.
static LOG_HOOK: OnceLock<Arc<OTelHook>> = OnceLock::new();

/// The OTel context of the open span `span_id` of run `run_id`, when tracing is on (log
/// lines carry its trace and span ids).
pub fn context_of(run_id: &str, span_id: &str) -> Option<opentelemetry::Context> {
    LOG_HOOK.get()?.context_of(run_id, span_id)
}

/// The OTel context of run `run_id`'s open turn, when tracing is on (for log lines about the
/// turn as a whole: its usage, its summary, a run error).
pub fn turn_context_of(run_id: &str) -> Option<opentelemetry::Context> {
    LOG_HOOK.get()?.turn_context_of(run_id)
}

/// The OTel hook and the logging hook as one, so every log line about a span finds that span
/// open: a START's line is written after the OTel hook opened its span (the line carries the
/// new span's ids), any other event's before the OTel hook handles it (an END's line still
/// finds its span, a summary's its turn). As two hooks in a row, one of the two orders left
/// half the lines without ids.
struct TracedLogging {
    otel: Arc<OTelHook>,
}

impl Hook for TracedLogging {
    fn name(&self) -> &str {
        "otel"
    }

    fn on_event(&self, event: &Event) -> HookAction {
        let start = matches!(&event.kind, EventKind::Span(s) if s.phase == SpanPhase::Start);
        if start {
            self.otel.on_event(event);
            LoggingHook.on_event(event);
        } else {
            LoggingHook.on_event(event);
            self.otel.on_event(event);
        }
        HookAction::Continue
    }

    fn captures_content(&self) -> bool {
        self.otel.captures_content()
    }

    fn otel_context(&self, run_id: &str, span_id: &str) -> Option<opentelemetry::Context> {
        self.otel.otel_context(run_id, span_id)
    }

    fn flush(&self) -> Result<(), HookError> {
        self.otel.flush()
    }

    fn shutdown(&self) -> Result<(), HookError> {
        self.otel.shutdown()
    }
}

/// The hooks' resources that need closing after the run.
#[derive(Default)]
pub struct Observers {
    telemetry: Option<Telemetry>,
    metrics: Option<Metrics>,
}

/// How to stop exporting metrics, for a collector that takes traces only (Phoenix, Jaeger).
pub const METRICS_OFF_HINT: &str =
    " (for a backend that takes no metrics, set OTEL_METRICS_EXPORTER=none)";

impl Observers {
    /// Flushes the span exporter within a deadline and says on stderr what did not make it.
    /// Never fails the run.
    pub fn finish(&self, notes: bool) {
        // Spans first, so the metrics' last export counts what happened to them.
        if let Some(telemetry) = &self.telemetry {
            let stats = telemetry.shutdown_with_deadline(EXPORT_DEADLINE);
            let target = telemetry.endpoint().unwrap_or("the console");
            let lost = stats.failed + stats.pending_or_dropped;
            if lost > 0 {
                eprintln!(
                    "kaos: warning: {lost} of {} span(s) were not exported to {target} ({} failed, {} dropped or still queued after {}s); the run itself is unaffected",
                    stats.ended,
                    stats.failed,
                    stats.pending_or_dropped,
                    EXPORT_DEADLINE.as_secs()
                );
            } else if notes && telemetry.exporter() == Exporter::Otlp {
                eprintln!("kaos: exported {} span(s) to {target}", stats.exported);
            }
        }
        if let Some(metrics) = &self.metrics
            && let Err(e) = metrics.shutdown_with_deadline(EXPORT_DEADLINE)
        {
            eprintln!(
                "kaos: warning: metrics were not exported to {}: {e}; the run itself is unaffected{}",
                metrics.endpoint().unwrap_or("the console"),
                METRICS_OFF_HINT
            );
        }
    }
}

impl Observers {
    /// The span pipeline, when tracing is on.
    pub fn telemetry(&self) -> Option<&Telemetry> {
        self.telemetry.as_ref()
    }

    /// The metrics pipeline, when metrics are on.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }
}

/// Every runner's hooks, in order: the circuit breaker ([`circuit_breaker`], one for the
/// process: `kaos serve` counts a tool's failures across requests), OTel (when tracing is
/// on), logging (library events to the `tracing` subscriber), audit, metrics (when on).
/// `kaos run`, `chat` and `resume` attach them with [`attach_hooks`]; `kaos serve` and `kaos
/// mcp serve` to every runner they build. The OTel hook also goes into `trace` for the
/// command tools.
pub fn shared_hooks(
    o: &Observability,
    trace: &TraceSlot,
) -> anyhow::Result<(Vec<Arc<dyn Hook>>, Observers)> {
    let mut hooks: Vec<Arc<dyn Hook>> = vec![Arc::new(circuit_breaker())];
    let mut observers = Observers::default();
    if let Some(builder) = tracing_settings(o)? {
        let telemetry = builder.build().context("setting up OTLP export")?;
        // Model requests carry the `chat` span's `traceparent` (a gateway continues it).
        kaos_agents::otel::propagate_trace_context();
        let hook = Arc::new(telemetry.hook().with_capture_content(capture_mode(o)));
        // Command tools read the hook to hand their span's context to the child process.
        let _ = trace.0.set(hook.clone());
        let _ = LOG_HOOK.set(hook.clone());
        // With the logging hook (library events to the `tracing` subscriber; `-vv` shows one
        // line per event), so each line carries the OTel ids of its span.
        hooks.push(Arc::new(TracedLogging { otel: hook }));
        observers.telemetry = Some(telemetry);
    } else {
        hooks.push(Arc::new(LoggingHook));
    }
    let metrics_hook = match metrics_settings(o)? {
        Some(builder) => {
            let metrics = builder.build().context("setting up metrics export")?;
            let hook = metrics.hook();
            observers.metrics = Some(metrics);
            hook
        }
        None => None,
    };
    if let (Some(hook), Some(telemetry)) = (&metrics_hook, &observers.telemetry) {
        hook.observe_exports(telemetry.stats_source());
    }
    if let Some(dir) = &o.audit {
        let hook = Arc::new(AuditHook::new(dir).with_context(|| {
            format!(
                "--audit {}: cannot create the audit directory",
                dir.display()
            )
        })?);
        if let Some(m) = &metrics_hook {
            m.observe_audit(hook.clone());
        }
        hooks.push(hook);
    }
    if let Some(hook) = metrics_hook {
        hooks.push(hook);
    }
    Ok((hooks, observers))
}

/// Adds [`shared_hooks`] (the circuit breaker and the observability hooks) to `runner`;
/// the OTel hook also goes into `trace` for the command tools.
pub fn attach_hooks(
    runner: Runner,
    o: &Observability,
    trace: &TraceSlot,
) -> anyhow::Result<(Runner, Observers)> {
    let (hooks, observers) = shared_hooks(o, trace)?;
    let runner = hooks
        .into_iter()
        .fold(runner, |runner, hook| runner.with_shared_hook(hook));
    Ok((runner, observers))
}

/// The run options for a turn: `--traceparent` / `TRACEPARENT` continues the caller's trace,
/// with `TRACESTATE`.
pub fn run_options(o: &Observability) -> RunOptions {
    RunOptions {
        traceparent: o.traceparent.clone(),
        tracestate: o.tracestate.clone(),
    }
}
