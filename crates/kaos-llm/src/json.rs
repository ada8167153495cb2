//! Finding the JSON value in a model's text.
//!
//! Models wrap JSON in prose, in Markdown fences, or send it bare. [`extract_json`] tries, in
//! order: the whole text, each fenced block, then the outermost balanced `{...}` or `[...]`.

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
    for candidate in balanced_candidates(trimmed) {
        match serde_json::from_str::<Value>(candidate) {
            Ok(v) => return Ok(v),
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(JsonExtractError {
        reason: last_error,
        preview: trimmed.chars().take(120).collect(),
    })
}

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

/// Balanced `{...}` / `[...]` spans, scanning from each opening bracket, string-aware.
fn balanced_candidates(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let open = bytes[i];
        if (open == b'{' || open == b'[')
            && let Some(end) = matching_close(bytes, i)
        {
            out.push(&text[i..=end]);
            i = end + 1;
            continue;
        }
        i += 1;
    }
    out
}

fn matching_close(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &b) in bytes[start..].iter().enumerate() {
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
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(start + offset);
                }
            }
            _ => {}
        }
    }
    None
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
    fn no_json_is_an_error_that_shows_the_text() {
        let err = extract_json("I cannot do that.").unwrap_err();
        assert!(err.to_string().contains("I cannot do that."));
    }
}
