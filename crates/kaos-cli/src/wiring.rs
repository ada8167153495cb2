//! Observability wiring: OTLP export, content capture, trace continuation, the audit trail,
//! and the `kaos audit` commands.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use kaos_agents::audit::{self, AuditHook, AuditLog};
use kaos_agents::otel::{
    CaptureContent, Exporter, OTelHook, Protocol, Telemetry, TelemetryBuilder, format_traceparent,
};
use kaos_agents::tree::{self, TreeOptions};
use kaos_agents::{Hook, RunOptions, Runner};

use crate::cli::{self, AuditAction, AuditArgs, OtlpProtocol};
use crate::exit::CliError;
use crate::plan::Observability;

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

/// The process's OTel hook, once tracing is on (one per `kaos` process).
static TRACE_HOOK: OnceLock<Arc<OTelHook>> = OnceLock::new();

/// The W3C `traceparent` of the span `span_id` of run `run_id`, when tracing is on: command
/// tools pass it to their child process as `TRACEPARENT`, so the child's own spans join the
/// turn's trace under the tool call.
pub fn traceparent_for(run_id: &str, span_id: &str) -> Option<String> {
    let cx = TRACE_HOOK.get()?.context_of(run_id, span_id)?;
    format_traceparent(&cx)
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
pub fn shared_hooks(o: &Observability) -> anyhow::Result<(Vec<Arc<dyn Hook>>, Observers)> {
    let mut hooks: Vec<Arc<dyn Hook>> = Vec::new();
    let mut observers = Observers::default();
    if let Some(builder) = tracing_settings(o)? {
        let telemetry = builder
            .service_name(service_name())
            .build()
            .context("setting up OTLP export")?;
        let hook = Arc::new(telemetry.hook().with_capture_content(capture_mode(o)));
        let _ = TRACE_HOOK.set(hook.clone());
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

/// Adds the OTel and audit hooks to `runner`.
pub fn attach_hooks(runner: Runner, o: &Observability) -> anyhow::Result<(Runner, Observers)> {
    let mut runner = runner;
    let mut observers = Observers::default();
    if let Some(builder) = tracing_settings(o)? {
        let telemetry = builder
            .service_name(service_name())
            .build()
            .context("setting up OTLP export")?;
        let hook = Arc::new(telemetry.hook().with_capture_content(capture_mode(o)));
        // Command tools look the hook up to hand their span's context to the child process.
        let _ = TRACE_HOOK.set(hook.clone());
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
fn service_name() -> String {
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

/// Reads an audit file with its sub-agent files, reporting a torn tail on stderr.
fn read_trail(file: &Path) -> anyhow::Result<AuditLog> {
    let mut log = audit::read_file(file).with_context(|| format!("reading {}", file.display()))?;
    if let Some(line) = log.torn_tail {
        eprintln!(
            "kaos: {}: line {line} is incomplete (torn write); it was skipped",
            file.display()
        );
    }
    log.include_subagents()
        .with_context(|| format!("reading the sub-agent trails next to {}", file.display()))?;
    Ok(log)
}

/// `kaos audit show|export|html FILE`: an unreadable trail or bad settings exit 2; a
/// failed export (collector down) exits 1.
pub fn audit_command(args: &AuditArgs) -> Result<u8, CliError> {
    match &args.action {
        AuditAction::Show { file } => {
            let log = read_trail(file).map_err(CliError::usage)?;
            print!(
                "{}",
                tree::render_tree(&log.events, &TreeOptions::default())
            );
            let mut redacted = kaos_agents::redact::RedactionStats::default();
            for trailer in &log.trailers {
                redacted.merge(&trailer.redactions);
            }
            if redacted.total() > 0 {
                let kinds: Vec<String> = redacted
                    .counts
                    .iter()
                    .map(|(k, n)| format!("{k}={n}"))
                    .collect();
                println!("redacted before writing: {}", kinds.join(", "));
            }
            Ok(0)
        }
        AuditAction::Html { file, output } => {
            let log = read_trail(file).map_err(CliError::usage)?;
            let page = audit::html::render_html(&log);
            match output {
                Some(out) => {
                    std::fs::write(out, page)
                        .with_context(|| format!("writing {}", out.display()))
                        .map_err(CliError::failed)?;
                    eprintln!("kaos: wrote {}", out.display());
                }
                None => print!("{page}"),
            }
            Ok(0)
        }
        AuditAction::Export { file, otlp } => {
            let log = read_trail(file).map_err(CliError::usage)?;
            let mut builder = TelemetryBuilder::from_env()
                .context("reading the OTEL_* variables")
                .map_err(CliError::usage)?;
            if let Some(url) = otlp {
                builder = if url.trim_end_matches('/').ends_with("/v1/traces") {
                    builder.traces_endpoint(url.clone())
                } else {
                    builder.endpoint(url.clone())
                };
            }
            let builder = builder.service_name(service_name());
            let target = builder.resolved_endpoint();
            // The OTLP/HTTP exporter uses a blocking client that must not be created or
            // dropped on an async runtime's thread: export from a plain thread.
            let export = || -> anyhow::Result<usize> {
                let exporter = builder.otlp_exporter().context("setting up OTLP export")?;
                let resource = builder.resource();
                kaos_agents::otel::export_recorded(
                    &log.events,
                    exporter,
                    &resource,
                    CaptureContent::None,
                )
                .with_context(|| format!("exporting {} to {target}", file.display()))
            };
            let n = std::thread::scope(|scope| scope.spawn(export).join())
                .map_err(|_| CliError::failed(anyhow::anyhow!("the export thread crashed")))?
                .map_err(CliError::failed)?;
            if n == 0 {
                return Err(CliError::usage(anyhow::anyhow!(
                    "{}: the trail holds no spans to export",
                    file.display()
                )));
            }
            eprintln!(
                "kaos: exported {n} span(s) from {} to {target} with their recorded times",
                file.display()
            );
            Ok(0)
        }
    }
}
