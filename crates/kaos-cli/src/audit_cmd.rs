//! `kaos audit show|export|html FILE`: reading audit trails back, drawing them, turning them
//! into a self-contained HTML page, and replaying them to an OTLP collector.

use std::path::Path;

use anyhow::Context as _;
use kaos_agents::audit::{self, AuditLog};
use kaos_agents::otel::{CaptureContent, TelemetryBuilder};
use kaos_agents::tree;

use crate::cli::{AuditAction, AuditArgs};
use crate::exit::CliError;

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
    crate::out::redact_events(&mut log.events);
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
                tree::render_tree(&log.events, &crate::run::tree_options())
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
            let page =
                audit::html::render_html_named(&log, kaos_agents::otel::SpanNaming::from_env());
            match output {
                Some(out) => {
                    write_owner_only(out, page.as_bytes())
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

/// Writes `bytes` to `path`, creating it owner-only (`0600` on Unix) like every audit file:
/// the page carries the trail's content. An existing file keeps its mode and is replaced.
fn write_owner_only(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
