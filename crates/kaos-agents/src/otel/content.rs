//! Opt-in message content on spans: tool arguments and results and the turn's answer, as
//! JSON strings in the GenAI message shape, redacted on request and capped in size (still
//! valid JSON after truncation).

use serde_json::{Value, json};

use crate::redact::Redactor;

/// Whether (and how) message content goes on spans. Off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaptureContent {
    /// No content on spans (default).
    #[default]
    None,
    /// Content passed through the redactor first.
    Redacted,
    /// Content verbatim.
    Full,
}

impl CaptureContent {
    /// The environment variable read by [`CaptureContent::from_env`].
    pub const ENV: &'static str = "KAOS_CAPTURE_CONTENT";

    /// Parses `none|off|false|0`, `redacted|redact`, `full|on|true|1` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "none" | "off" | "false" | "0" => Some(Self::None),
            "redacted" | "redact" => Some(Self::Redacted),
            "full" | "on" | "true" | "1" => Some(Self::Full),
            _ => None,
        }
    }

    /// From `KAOS_CAPTURE_CONTENT`; unset or unknown values mean [`CaptureContent::None`].
    pub fn from_env() -> Self {
        std::env::var(Self::ENV)
            .ok()
            .and_then(|v| Self::parse(&v))
            .unwrap_or_default()
    }
}

/// The default per-attribute cap: 16 KiB.
pub const DEFAULT_CONTENT_CAP: usize = 16 * 1024;

/// The capture settings of a hook.
#[derive(Clone)]
pub(crate) struct ContentPolicy {
    pub(crate) mode: CaptureContent,
    pub(crate) cap: usize,
    pub(crate) redactor: Redactor,
}

impl ContentPolicy {
    pub(crate) fn new(mode: CaptureContent) -> Self {
        Self {
            mode,
            cap: DEFAULT_CONTENT_CAP,
            redactor: Redactor::default(),
        }
    }

    /// Short free text that always goes on spans (reasons, descriptions, error messages):
    /// redacted whatever the capture mode, then cut to 200 characters.
    pub(crate) fn short(&self, text: &str) -> String {
        super::attributes::truncate_chars(
            &self.redactor.redact_str(text),
            super::attributes::SHORT_TEXT_CHARS,
        )
    }

    /// Whether content goes on spans at all (check before building a value to render).
    pub(crate) fn captures(&self) -> bool {
        self.mode != CaptureContent::None
    }

    /// The JSON text to put on a span for `value`, or `None` when capture is off.
    pub(crate) fn render(&self, mut value: Value) -> Option<String> {
        match self.mode {
            CaptureContent::None => return None,
            CaptureContent::Full => {}
            CaptureContent::Redacted => self.redactor.redact_value(&mut value),
        }
        Some(capped_json(&value, self.cap))
    }
}

/// The GenAI `gen_ai.output.messages` value for one assistant answer.
pub(crate) fn output_messages(text: &str, finish_reason: &str) -> Value {
    json!([{
        "role": "assistant",
        "parts": [{"type": "text", "content": text}],
        "finish_reason": finish_reason,
    }])
}

const MARKER: &str = "…[truncated]";

fn shorten_strings(value: &mut Value, max_chars: usize) {
    match value {
        Value::String(s) if s.chars().count() > max_chars => {
            let mut cut = super::attributes::truncate_chars(s, max_chars);
            cut.push_str(MARKER);
            *s = cut;
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shorten_strings(v, max_chars)),
        Value::Object(map) => map.values_mut().for_each(|v| shorten_strings(v, max_chars)),
        _ => {}
    }
}

/// `value` serialized to at most `cap` bytes and still valid JSON: long strings are cut
/// first (keeping the structure); if that is not enough, the whole text is cut and wrapped
/// as one JSON string.
pub fn capped_json(value: &Value, cap: usize) -> String {
    let text = value.to_string();
    if text.len() <= cap {
        return text;
    }
    let mut limit = cap;
    while limit >= 16 {
        let mut shortened = value.clone();
        shorten_strings(&mut shortened, limit);
        let text = shortened.to_string();
        if text.len() <= cap {
            return text;
        }
        limit /= 2;
    }
    // Too many keys or items: keep a prefix of the text, as a JSON string.
    let mut budget = cap.saturating_sub(MARKER.len() + 2);
    loop {
        let mut prefix = truncate_bytes(&text, budget).to_string();
        prefix.push_str(MARKER);
        let wrapped = Value::String(prefix).to_string();
        if wrapped.len() <= cap || budget == 0 {
            return wrapped;
        }
        budget = budget.saturating_sub((wrapped.len() - cap).max(1));
    }
}

fn truncate_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_json_stays_valid_and_small() {
        let big = json!({"a": "x".repeat(100_000), "b": [1, 2, 3]});
        let out = capped_json(&big, 1024);
        assert!(out.len() <= 1024);
        let back: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["b"], json!([1, 2, 3]));
        let many: Vec<Value> = (0..10_000).map(|i| json!({"k": i})).collect();
        let out = capped_json(&Value::Array(many), 512);
        assert!(out.len() <= 512);
        assert!(serde_json::from_str::<Value>(&out).is_ok());
    }
}
