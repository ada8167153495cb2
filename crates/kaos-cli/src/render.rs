//! The span tree printed on stderr.
//!
//! TEMPORARY: a small private renderer until `kaos_agents::tree::render_tree(events, opts)`
//! (audit branch) lands on main; the lead will switch [`render_tree`] over to it.

use std::collections::HashMap;
use std::fmt::Write as _;

use kaos_agents::{Event, EventKind, SpanPhase};

/// Renders the spans of `events` as an indented tree: name, duration, status.
pub fn render_tree(events: &[Event]) -> String {
    struct Node<'a> {
        name: &'a str,
        parent: Option<&'a str>,
        extra: String,
        end: Option<(SpanPhase, Option<f64>, String)>,
    }
    let mut order: Vec<&str> = Vec::new();
    let mut nodes: HashMap<&str, Node<'_>> = HashMap::new();
    let mut turn_notes: HashMap<&str, String> = HashMap::new();
    for event in events {
        match &event.kind {
            EventKind::Span(span) if span.phase == SpanPhase::Start => {
                let mut extra = String::new();
                if let Some(model) = span.attr_str("model") {
                    let _ = write!(extra, " model={model}");
                }
                if let Some(p) = span.attr_str("permission")
                    && p != "allow"
                {
                    let _ = write!(extra, " permission={p}");
                }
                order.push(&span.span_id);
                nodes.insert(
                    &span.span_id,
                    Node {
                        name: &span.name,
                        parent: span.parent_span_id.as_deref(),
                        extra,
                        end: None,
                    },
                );
            }
            EventKind::Span(span) => {
                if let Some(node) = nodes.get_mut(&*span.span_id) {
                    let why = span
                        .error
                        .as_ref()
                        .map(|e| format!("{}: {}", e.error_type, e.message))
                        .unwrap_or_default();
                    node.end = Some((span.phase, span.duration_ms, why));
                }
            }
            EventKind::IntentClassified {
                intent, confidence, ..
            } => {
                turn_notes.insert(&event.run_id, format!(" intent={intent} ({confidence:.2})"));
            }
            _ => {}
        }
    }
    // The first span of each run is its turn; put the intent there.
    let mut seen_runs = std::collections::HashSet::new();
    let root_run = events.first().map(|e| &*e.run_id);
    for event in events {
        if let Some(span) = event.span()
            && span.phase == SpanPhase::Start
            && seen_runs.insert(&*event.run_id)
            && let Some(node) = nodes.get_mut(&*span.span_id)
        {
            if Some(&*event.run_id) != root_run {
                let _ = write!(node.extra, " agent={}", event.agent);
            }
            if let Some(note) = turn_notes.get(&*event.run_id) {
                node.extra.push_str(note);
            }
        }
    }
    let depth = |id: &str| {
        let mut d = 0usize;
        let mut cur = nodes.get(id).and_then(|n| n.parent);
        while let Some(parent) = cur {
            match nodes.get(parent) {
                Some(n) if d < 64 => {
                    d += 1;
                    cur = n.parent;
                }
                _ => break,
            }
        }
        d
    };
    let mut out = String::new();
    for id in &order {
        let Some(node) = nodes.get(id) else { continue };
        let indent = "  ".repeat(depth(id));
        let (status, duration) = match &node.end {
            None => ("open".to_string(), String::new()),
            Some((phase, ms, why)) => {
                let status = match phase {
                    SpanPhase::Complete => "ok".to_string(),
                    other if why.is_empty() => other.as_str().to_string(),
                    other => format!("{} ({why})", other.as_str()),
                };
                (status, ms.map(|m| format!("{m:.1} ms")).unwrap_or_default())
            }
        };
        let _ = writeln!(
            out,
            "{indent}{:<w$} {duration:>10}  {status}{}",
            node.name,
            node.extra,
            w = 36usize.saturating_sub(indent.len()).max(node.name.len())
        );
    }
    out
}
