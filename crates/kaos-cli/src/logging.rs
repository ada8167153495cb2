//! The process's `tracing` subscriber: library events (audit write failures, retry warnings,
//! hook panics, ...) go to stderr as text or JSON lines, filtered by `RUST_LOG` or `-v`,
//! passed through the library's redactor, and carrying the OTel `trace_id`/`span_id` of the
//! kaos span they belong to, so a log line leads to its trace.

use std::io::Write as _;

use kaos_agents::redact::Redactor;
use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::LogFormat;

/// The filter when `RUST_LOG` is unset: warnings, or more with each `-v`.
fn default_filter(verbose: u8) -> &'static str {
    match verbose {
        // The logging hook's per-span warnings ("span failed …") repeat what the command
        // itself reports (its error line, the tree's failed spans): shown from -v on.
        0 => "warn,kaos_agents::hooks::builtin=error",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Installs the subscriber (once per process; a second call does nothing).
pub fn install(verbose: u8, format: LogFormat) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter(verbose)));
    let layer = LineLayer {
        json: format == LogFormat::Json,
        redactor: Redactor::default(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// Writes each event as one line on stderr.
struct LineLayer {
    json: bool,
    redactor: Redactor,
}

/// Collects an event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), value.into());
    }
}

/// The OTel ids of the kaos span an event names (`run_id` + `kaos_span_id` fields), else of
/// its run's turn (a line about the turn as a whole), else of the current OTel context.
fn otel_ids(fields: &Map<String, Value>) -> Option<(String, String)> {
    let run = fields.get("run_id").and_then(Value::as_str);
    let span = fields
        .get("kaos_span_id")
        .or_else(|| fields.get("span_id"))
        .and_then(Value::as_str);
    let named = run.and_then(|run| {
        span.and_then(|span| crate::wiring::context_of(run, span))
            .or_else(|| crate::wiring::turn_context_of(run))
    });
    let cx = named.unwrap_or_else(opentelemetry::Context::current);
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

impl<S: tracing::Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let fields = fields.0;
        let ids = otel_ids(&fields);
        let meta = event.metadata();
        let line = render(
            self.json,
            &self.redactor,
            meta.level().as_str(),
            meta.target(),
            fields,
            ids,
        );
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }
}

/// One log line: every field value passed through the redactor, the OTel ids appended.
fn render(
    json: bool,
    redactor: &Redactor,
    level: &str,
    target: &str,
    fields: Map<String, Value>,
    ids: Option<(String, String)>,
) -> String {
    // As one object, so sensitive keys (`api_key`, `authorization`, ...) are caught too.
    let mut fields = Value::Object(fields);
    redactor.redact_value(&mut fields);
    let Value::Object(mut fields) = fields else {
        return String::new();
    };
    if json {
        let mut obj = Map::new();
        obj.insert(
            "timestamp_unix_ms".into(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
                .into(),
        );
        obj.insert("level".into(), level.into());
        obj.insert("target".into(), target.into());
        if let Some((trace_id, span_id)) = ids {
            obj.insert("trace_id".into(), trace_id.into());
            obj.insert("span_id".into(), span_id.into());
        }
        obj.insert("fields".into(), Value::Object(fields));
        return Value::Object(obj).to_string();
    }
    let message = fields
        .remove("message")
        .map(|m| {
            m.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| m.to_string())
        })
        .unwrap_or_default();
    let mut line = format!("{level} {target}: {message}");
    for (k, v) in &fields {
        match v {
            Value::String(s) => line.push_str(&format!(" {k}={s}")),
            other => line.push_str(&format!(" {k}={other}")),
        }
    }
    if let Some((trace_id, span_id)) = ids {
        line.push_str(&format!(" trace_id={trace_id} span_id={span_id}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_redacted_and_carry_ids() {
        let mut fields = Map::new();
        fields.insert(
            "message".into(),
            "retrying with key sk-ant-api03-CANARYCANARYCANARYCANARY0123".into(),
        );
        fields.insert("api_key".into(), "hunter2hunter2".into());
        let ids = Some((
            "0af7651916cd43dd8448eb211c80319c".into(),
            "b7ad6b7169203331".into(),
        ));
        let line = render(
            true,
            &Redactor::default(),
            "WARN",
            "kaos_llm::retry",
            fields.clone(),
            ids.clone(),
        );
        assert!(
            !line.contains("CANARY") && !line.contains("hunter2"),
            "{line}"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(v["span_id"], "b7ad6b7169203331");
        assert_eq!(v["level"], "WARN");
        let text = render(false, &Redactor::default(), "WARN", "t", fields, ids);
        assert!(
            !text.contains("CANARY") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(
            text.ends_with("trace_id=0af7651916cd43dd8448eb211c80319c span_id=b7ad6b7169203331")
        );
    }

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(default_filter(0), "warn,kaos_agents::hooks::builtin=error");
        assert_eq!(default_filter(1), "info");
        assert_eq!(default_filter(2), "debug");
        assert_eq!(default_filter(9), "trace");
    }
}
