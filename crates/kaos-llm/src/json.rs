//! Finding the JSON value in a model's text.
//!
//! Models wrap JSON in prose, in Markdown fences, or send it bare. [`extract_json`] tries, in
//! order: the whole text, each fenced block, then the outermost balanced `{...}` or `[...]`.
//!
//! The work is linear in the text: the fences and the balanced spans are found in single
//! passes, the spans tried are disjoint, and an unclosed bracket is rescanned past at most
//! four times (so `"{{{{…"` costs a few passes, not one per bracket).

use serde_json::Value;

/// No JSON value could be found in a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no JSON value found in the model's text ({reason}); text starts with: {preview:?}")]
pub struct JsonExtractError {
    /// Why the last candidate failed to parse.
    pub reason: String,
    /// The first 120 characters of the text.
    pub preview: String,
}

/// Extracts the first JSON value from `text`.
pub fn extract_json(text: &str) -> Result<Value, JsonExtractError> {
    let trimmed = text.trim();
    let mut last_error = String::from("the text is empty");
    if !trimmed.is_empty() {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(v) => return Ok(v),
            Err(e) => last_error = e.to_string(),
        }
    }
    for block in fenced_blocks(trimmed) {
        match serde_json::from_str::<Value>(block.trim()) {
            Ok(v) => return Ok(v),
            Err(e) => last_error = e.to_string(),
        }
    }
    let mut from = 0;
    for _ in 0..=MAX_RESCANS {
        let scan = balanced_spans(trimmed, from);
        for candidate in scan.spans {
            match serde_json::from_str::<Value>(candidate) {
                Ok(v) => return Ok(v),
                Err(e) => last_error = e.to_string(),
            }
        }
        match scan.unclosed {
            Some(open) => {
                last_error = format!("a bracket at byte {open} is never closed");
                from = open + 1;
            }
            None => break,
        }
    }
    Err(JsonExtractError {
        reason: last_error,
        preview: trimmed.chars().take(120).collect(),
    })
}

/// How many times the scan restarts after an opening bracket that is never closed.
const MAX_RESCANS: usize = 4;

/// The bodies of Markdown code fences (```` ```json ... ``` ````), in order.
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        // Skip the info string (e.g. "json") up to the end of the line.
        let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
        let body = &after[body_start..];
        match body.find("```") {
            Some(end) => {
                blocks.push(&body[..end]);
                rest = &body[end + 3..];
            }
            None => {
                blocks.push(body);
                break;
            }
        }
    }
    blocks
}

/// The outcome of one pass over the text.
struct Scan<'a> {
    /// Disjoint top-level balanced `{...}` / `[...]` spans, in order.
    spans: Vec<&'a str>,
    /// The opening bracket whose span never closed, if the text ended inside one.
    unclosed: Option<usize>,
}

/// One string-aware pass from byte `from`: each top-level bracket opens a span that ends
/// where the depth returns to zero. Quotes count only inside a span (prose around the JSON
/// may hold a stray `"`); bracket kinds are not matched (the JSON parser judges the span).
fn balanced_spans(text: &str, from: usize) -> Scan<'_> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(from) {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' if depth > 0 => in_string = true,
            b'{' | b'[' => {
                if depth == 0 {
                    start = i;
                }
                depth += 1;
            }
            b'}' | b']' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    // Brackets are ASCII, so both ends are on character boundaries.
                    if let Some(span) = text.get(start..=i) {
                        spans.push(span);
                    }
                }
            }
            _ => {}
        }
    }
    Scan {
        spans,
        unclosed: (depth > 0).then_some(start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bare_json_parses() {
        assert_eq!(extract_json(r#" {"a": 1} "#).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn fenced_json_parses() {
        let text = "Here you go:\n```json\n{\"intent\": \"respond\"}\n```\nThanks";
        assert_eq!(extract_json(text).unwrap(), json!({"intent": "respond"}));
    }

    #[test]
    fn json_inside_prose_parses() {
        let text = "Sure! The answer is {\"response\": \"a {brace} inside\"} as requested.";
        assert_eq!(
            extract_json(text).unwrap(),
            json!({"response": "a {brace} inside"})
        );
    }

    #[test]
    fn skips_a_broken_candidate_and_takes_the_next() {
        let text = "{not json} and then {\"ok\": true}";
        assert_eq!(extract_json(text).unwrap(), json!({"ok": true}));
    }

    #[test]
    fn an_unclosed_bracket_is_scanned_past() {
        let text = "{\"a\": {\"b\": 1}";
        assert_eq!(extract_json(text).unwrap(), json!({"b": 1}));
        let err = extract_json("[[[[").unwrap_err();
        assert!(err.reason.contains("never closed"), "{err}");
    }

    #[test]
    fn long_hostile_text_is_linear() {
        // Quadratic scanning would need ~10^12 steps on these; linear ones finish at once.
        for text in [
            "{".repeat(1_000_000),
            "[\"".repeat(500_000),
            "{x} ".repeat(300_000),
            format!("x{}", "```".repeat(300_000)),
        ] {
            assert!(extract_json(&text).is_err());
        }
    }

    #[test]
    fn no_json_is_an_error_that_shows_the_text() {
        let err = extract_json("I cannot do that.").unwrap_err();
        assert!(err.to_string().contains("I cannot do that."));
    }
}
