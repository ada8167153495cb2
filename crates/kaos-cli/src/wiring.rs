//! Spots the lead wires when the OTel and audit branches merge. Every flag is parsed into
//! the plan now; the ones not available yet fail with exit 2 instead of being ignored.

use anyhow::bail;
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
    if let Some(dir) = &o.audit {
        bail!(
            "--audit {}: the audit trail is not available in this build yet (it lands with the audit branch)",
            dir.display()
        );
    }
    Ok(())
}

/// Adds the OTel and audit hooks to `runner`.
///
/// WIRING(otel, audit): build `OTelHook` from `o.otlp`/`o.otlp_protocol`/`o.capture_content`
/// and the audit hook from `o.audit` here. Today there is nothing to add.
pub fn attach_hooks(runner: Runner, _o: &Observability) -> Runner {
    runner
}

/// The run options for a turn: `--traceparent` / `TRACEPARENT` continues the caller's trace.
pub fn run_options(o: &Observability) -> RunOptions {
    RunOptions {
        traceparent: o.traceparent.clone(),
    }
}

/// `kaos audit show|export|html FILE`.
///
/// WIRING(audit): implement with the audit crate's reader once it merges.
pub fn audit_command(args: &AuditArgs) -> anyhow::Result<u8> {
    let (what, file) = match &args.action {
        AuditAction::Show { file } => ("show", file),
        AuditAction::Export { file } => ("export", file),
        AuditAction::Html { file } => ("html", file),
    };
    bail!(
        "kaos audit {what} {}: not available in this build yet (it lands with the audit branch)",
        file.display()
    )
}
