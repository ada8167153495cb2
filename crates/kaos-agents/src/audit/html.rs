//! A self-contained HTML viewer of an audit log (`kaos audit html FILE`).
//!
//! One file, no network: inline CSS and JavaScript, the events embedded as JSON in a
//! `<script type="application/json">` block (every `<`, `>` and `&` escaped as `\u003c`,
//! `\u003e`, `\u0026`, so no `</script>` can end it early). The page's script rebuilds each
//! run's span tree (the same rules as [`crate::tree::build_runs`]) and shows a runs list,
//! span rows with timing bars (sub-agent runs under their parent span), errors highlighted,
//! and a details panel with a span's attributes and value events when it is clicked. A
//! Content-Security-Policy forbids every fetch.

use serde_json::json;

use super::AuditLog;
use crate::naming;

const TEMPLATE: &str = include_str!("viewer.html");
const PLACEHOLDER: &str = "/*KAOS_AUDIT_DATA*/";

/// Renders `log` as one self-contained HTML page.
pub fn render_html(log: &AuditLog) -> String {
    render_html_named(log, naming::SpanNaming::default())
}

/// [`render_html`] with spans named under `naming` (as the exporter names them).
pub fn render_html_named(log: &AuditLog, naming: naming::SpanNaming) -> String {
    // Span names (and the intent wrapper) come from the exporter's naming function; the
    // page's script only draws them.
    let mut names = serde_json::Map::new();
    let mut wrappers = serde_json::Map::new();
    for run in log.runs_named(naming) {
        let mut run_names = serde_json::Map::new();
        let mut run_wrappers = serde_json::Map::new();
        for (i, span) in run.spans.iter().enumerate() {
            run_names.insert(span.span_id.to_string(), span.name.clone().into());
            // A wrapper node comes right before the span it wraps, which is its child.
            if let Some(next) = run.spans.get(i + 1)
                && span.children.first() == Some(&(i + 1))
                && *span.span_id == naming::wrapper_id(&next.span_id)
            {
                run_wrappers.insert(
                    next.span_id.to_string(),
                    json!([span.span_id.to_string(), span.name]),
                );
            }
        }
        names.insert(run.run_id.to_string(), run_names.into());
        wrappers.insert(run.run_id.to_string(), run_wrappers.into());
    }
    let data = json!({
        "span_names": names,
        "span_wrappers": wrappers,
        "path": log.path.display().to_string(),
        "header": log.header,
        "torn_tail": log.torn_tail,
        "included": log.included.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
        "events": log.events,
    });
    let json = script_safe_json(&data);
    TEMPLATE.replacen(PLACEHOLDER, &json, 1)
}

/// JSON text safe inside a `<script>` element: `<`, `>` and `&` only occur inside JSON
/// strings, where their `\u` escapes mean the same.
fn script_safe_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_close_is_escaped() {
        let s = script_safe_json(&json!({"a": "</script><!-- & x"}));
        assert!(!s.contains("</"));
        assert!(!s.contains('<'));
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back["a"], "</script><!-- & x");
        assert_eq!(TEMPLATE.matches(PLACEHOLDER).count(), 1);
    }
}
