//! Observability wiring of a turn: OTLP export, content capture, trace continuation (also
//! into command tools) and the audit trail. (`kaos audit` is [`crate::audit_cmd`].)

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use kaos_agents::audit::AuditHook;
use kaos_agents::otel::{
    CaptureContent, Exporter, OTelHook, Protocol, Telemetry, TelemetryBuilder, format_traceparent,
};
use kaos_agents::{CircuitBreaker, Hook, RunOptions, Runner};

use crate::cli::{self, OtlpProtocol};
use crate::plan::Observability;
use crate::tools::TraceContext;

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
    Ok(())
}

/// Whether the user asked for OTLP (or console) export, by flag or by `OTEL_*` variables.
fn export_requested(o: &Observability) -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    o.otlp.is_some()
        || set("OTEL_EXPORTER_OTLP_ENDPOINT")
        || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "otlp" || v == "console"
        })
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
        builder = builder.protocol(match p {
            OtlpProtocol::Http => Protocol::HttpProtobuf,
            OtlpProtocol::Grpc => Protocol::Grpc,
        });
    }
    Ok(Some(builder))
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
    /// The W3C `traceparent` of a tool call's span (by run and span id), when tracing is on:
    /// command tools pass it to their child process as `TRACEPARENT`, so the child's own
    /// spans join the turn's trace under the tool call.
    pub fn context(&self) -> TraceContext {
        let slot = Arc::clone(&self.0);
        Arc::new(move |run_id: &str, span_id: &str| {
            let cx = slot.get()?.context_of(run_id, span_id)?;
            format_traceparent(&cx)
        })
    }
}

/// The hooks' resources that need closing after the run.
#[derive(Default)]
pub struct Observers {
    telemetry: Option<Telemetry>,
}

impl Observers {
    /// Flushes the span exporter within a deadline and says on stderr what did not make it.
    /// Never fails the run.
    pub fn finish(&self, notes: bool) {
        let Some(telemetry) = &self.telemetry else {
            return;
        };
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
}

impl Observers {
    /// The span pipeline, when tracing is on.
    pub fn telemetry(&self) -> Option<&Telemetry> {
        self.telemetry.as_ref()
    }
}

/// The OTel and audit hooks as shared hooks (for `kaos serve`, which attaches them to
/// every runner it builds).
pub fn shared_hooks(
    o: &Observability,
    trace: &TraceSlot,
) -> anyhow::Result<(Vec<Arc<dyn Hook>>, Observers)> {
    let mut hooks: Vec<Arc<dyn Hook>> = Vec::new();
    let mut observers = Observers::default();
    if let Some(builder) = tracing_settings(o)? {
        let telemetry = builder
            .service_name(service_name())
            .build()
            .context("setting up OTLP export")?;
        let hook = Arc::new(telemetry.hook().with_capture_content(capture_mode(o)));
        let _ = trace.0.set(hook.clone());
        hooks.push(hook);
        observers.telemetry = Some(telemetry);
    }
    if let Some(dir) = &o.audit {
        let hook = AuditHook::new(dir).with_context(|| {
            format!(
                "--audit {}: cannot create the audit directory",
                dir.display()
            )
        })?;
        hooks.push(Arc::new(hook));
    }
    Ok((hooks, observers))
}

/// Adds the circuit breaker, the OTel and the audit hooks to `runner`; the OTel hook also
/// goes into `trace` for the command tools.
pub fn attach_hooks(
    runner: Runner,
    o: &Observability,
    trace: &TraceSlot,
) -> anyhow::Result<(Runner, Observers)> {
    let mut runner = runner.with_hook(circuit_breaker());
    let mut observers = Observers::default();
    if let Some(builder) = tracing_settings(o)? {
        let telemetry = builder
            .service_name(service_name())
            .build()
            .context("setting up OTLP export")?;
        let hook = Arc::new(telemetry.hook().with_capture_content(capture_mode(o)));
        // Command tools read the hook to hand their span's context to the child process.
        let _ = trace.0.set(hook.clone());
        runner = runner.with_shared_hook(hook);
        observers.telemetry = Some(telemetry);
    }
    if let Some(dir) = &o.audit {
        let hook = AuditHook::new(dir).with_context(|| {
            format!(
                "--audit {}: cannot create the audit directory",
                dir.display()
            )
        })?;
        runner = runner.with_hook(hook);
    }
    Ok((runner, observers))
}

/// `OTEL_SERVICE_NAME`, else `kaos`.
pub fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "kaos".into())
}

/// The run options for a turn: `--traceparent` / `TRACEPARENT` continues the caller's trace.
pub fn run_options(o: &Observability) -> RunOptions {
    RunOptions {
        traceparent: o.traceparent.clone(),
    }
}
