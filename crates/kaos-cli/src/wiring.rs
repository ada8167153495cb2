//! Observability wiring: the audit trail, OTLP export, trace continuation and the
//! `kaos audit` commands. Flags a build cannot honour fail with exit 2 instead of being ignored.

use anyhow::{Context as _, bail};
use kaos_agents::audit::{self, AuditHook, AuditLog};
use kaos_agents::tree::{self, TreeOptions};
use kaos_agents::{RunOptions, Runner};

use crate::cli::{AuditAction, AuditArgs};
use crate::plan::Observability;

/// Rejects observability flags this build cannot honour.
///
/// WIRING(otel): accept `--otlp`/`--otlp-protocol`/`--capture-content` and build the
/// exporter in [`attach_hooks`]. WIRING(audit): accept `--audit DIR`.
pub fn check_observability(o: &Observability) -> anyhow::Result<()> {
    if let Some(url) = &o.otlp {
        bail!(
            "--otlp {url} (or OTEL_EXPORTER_OTLP_ENDPOINT): OTLP export is not available in this build yet \
             (it lands with the OTel branch); unset it or drop the flag"
        );
    }
    if o.capture_content.is_some() {
        bail!("--capture-content: not available in this build yet (it lands with the OTel branch)");
    }
    Ok(())
}

/// Adds the OTel and audit hooks to `runner`.
///
/// WIRING(otel): build `OTelHook` from `o.otlp`/`o.otlp_protocol`/`o.capture_content` here.
pub fn attach_hooks(runner: Runner, o: &Observability) -> anyhow::Result<Runner> {
    let mut runner = runner;
    if let Some(dir) = &o.audit {
        let hook = AuditHook::new(dir).with_context(|| {
            format!(
                "--audit {}: cannot create the audit directory",
                dir.display()
            )
        })?;
        runner = runner.with_hook(hook);
    }
    Ok(runner)
}

/// The run options for a turn: `--traceparent` / `TRACEPARENT` continues the caller's trace.
pub fn run_options(o: &Observability) -> RunOptions {
    RunOptions {
        traceparent: o.traceparent.clone(),
    }
}

/// Reads an audit file with its sub-agent files, reporting a torn tail on stderr.
fn read_trail(file: &std::path::Path) -> anyhow::Result<AuditLog> {
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

/// `kaos audit show|export|html FILE`.
pub fn audit_command(args: &AuditArgs) -> anyhow::Result<u8> {
    match &args.action {
        AuditAction::Show { file } => {
            let log = read_trail(file)?;
            print!(
                "{}",
                tree::render_tree(&log.events, &TreeOptions::default())
            );
            Ok(0)
        }
        AuditAction::Html { file, output } => {
            let log = read_trail(file)?;
            let page = audit::html::render_html(&log);
            match output {
                Some(out) => {
                    std::fs::write(out, page)
                        .with_context(|| format!("writing {}", out.display()))?;
                    eprintln!("kaos: wrote {}", out.display());
                }
                None => print!("{page}"),
            }
            Ok(0)
        }
        AuditAction::Export { file } => bail!(
            "kaos audit export {}: OTLP replay is not available in this build yet",
            file.display()
        ),
    }
}
