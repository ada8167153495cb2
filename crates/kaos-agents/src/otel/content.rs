//! Opt-in message content on spans, redacted on request and capped in size. Messages are
//! JSON strings in the GenAI message-parts shape (still valid JSON, and still a messages
//! array, after truncation): `gen_ai.system_instructions`, `gen_ai.input.messages` and
//! `gen_ai.output.messages` on `chat` spans (from [`crate::message_parts`]), the user's
//! message and the answer on the turn span. Tool arguments go on tool spans as JSON, a
//! tool's result as its text when it is text (else as JSON). The turn span also gets the
//! user's message and the answer as plain text (`input.value`, `output.value`, for Phoenix).
//!
//! Switched by `--capture-content` (CLI), else `KAOS_CAPTURE_CONTENT`, else the GenAI alias
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` ([`CaptureContent::from_vars`]); off
//! when none is set, and **redacted** when merely turned on.

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

    /// The de-facto GenAI switch, honoured as an alias of [`CaptureContent::ENV`] (which
    /// wins when both are set).
    pub const OTEL_ENV: &'static str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

    /// Parses a `KAOS_CAPTURE_CONTENT` / `--capture-content` value (any case):
    /// `none|off|false|0` capture nothing, `redacted|redact|on|true|1` capture redacted
    /// content (on means redacted), `full` captures it verbatim.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "none" | "off" | "false" | "0" => Some(Self::None),
            "redacted" | "redact" | "on" | "true" | "1" => Some(Self::Redacted),
            "full" => Some(Self::Full),
            _ => None,
        }
    }

    /// Parses an `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` value (any case):
    /// `true`, `SPAN_ONLY` and `SPAN_AND_EVENT` turn capture on, **redacted** (kaos puts
    /// content on spans only, and on means redacted); `false`, `NO_CONTENT` and
    /// `EVENT_ONLY` (kaos emits no content events) leave it off.
    pub fn parse_otel(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "span_only" | "span_and_event" => Some(Self::Redacted),
            "" | "false" | "no_content" | "event_only" => Some(Self::None),
            _ => None,
        }
    }

    /// The mode the two variables' values give. Precedence: `KAOS_CAPTURE_CONTENT`, then
    /// `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`, then off (the CLI's
    /// `--capture-content` flag comes before both). A value that does not parse is an error
    /// naming the variable.
    pub fn from_vars(kaos: Option<&str>, otel: Option<&str>) -> Result<Self, String> {
        if let Some(v) = kaos {
            return Self::parse(v).ok_or_else(|| {
                format!(
                    "{}={v:?}: expected none, redacted or full (or off/on)",
                    Self::ENV
                )
            });
        }
        if let Some(v) = otel {
            return Self::parse_otel(v).ok_or_else(|| {
                format!(
                    "{}={v:?}: expected NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT, true or false",
                    Self::OTEL_ENV
                )
            });
        }
        Ok(Self::None)
    }

    /// From `KAOS_CAPTURE_CONTENT`, else `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`
    /// ([`CaptureContent::from_vars`]). Unset means [`CaptureContent::None`]; a value that
    /// does not parse is logged as a warning (once) and also means off (content is never
    /// captured by mistake), and so is `EVENT_ONLY`, which asks for content kaos does not
    /// record (it puts content on spans, not in events).
    pub fn from_env() -> Self {
        let kaos = std::env::var(Self::ENV).ok();
        let otel = std::env::var(Self::OTEL_ENV).ok();
        if kaos.is_none()
            && otel
                .as_deref()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("event_only"))
        {
            crate::warn_once::warn_once(&format!(
                "{}=EVENT_ONLY: kaos records message content on spans, not in events, so this \
                 captures nothing; SPAN_ONLY or SPAN_AND_EVENT capture it (redacted)",
                Self::OTEL_ENV
            ));
        }
        Self::from_vars(kaos.as_deref(), otel.as_deref()).unwrap_or_else(|e| {
            crate::warn_once::warn_once(&format!(
                "{e}; the value is ignored (content capture is off unless another setting \
                 turns it on)"
            ));
            Self::None
        })
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

    /// A tool's result for `gen_ai.tool.call.result`, or `None` when capture is off. The
    /// attribute is of the conventions' `any` type: a text result is a string attribute as
    /// it is (no JSON quotes around it), anything else its JSON. Redacted per the mode and
    /// capped like [`ContentPolicy::render`].
    pub(crate) fn render_result(&self, value: &Value) -> Option<String> {
        match value {
            Value::String(text) => self.render_text(text),
            other => self.render(other.clone()),
        }
    }

    /// Free text to put on a span as content, or `None` when capture is off: redacted per
    /// the mode, capped to [`ContentPolicy::cap`] bytes (ending in the truncation marker).
    pub(crate) fn render_text(&self, text: &str) -> Option<String> {
        let text = match self.mode {
            CaptureContent::None => return None,
            CaptureContent::Full => std::borrow::Cow::Borrowed(text),
            CaptureContent::Redacted => self.redactor.redact_str(text),
        };
        Some(capped_text(&text, self.cap))
    }
}

/// `text` cut to at most `cap` bytes (on a character boundary), ending in the truncation
/// marker when it was cut.
fn capped_text(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_string();
    }
    let mut cut = truncate_bytes(text, cap.saturating_sub(MARKER.len())).to_string();
    cut.push_str(MARKER);
    cut
}

impl ContentPolicy {
    /// The JSON text of a GenAI messages (or parts) array, or `None` when capture is off:
    /// redacted per the mode, then capped to [`ContentPolicy::cap`] bytes by
    /// [`capped_messages`], so it is still an array of the same shape.
    pub(crate) fn render_messages(&self, value: &Value) -> Option<String> {
        let mut value = match self.mode {
            CaptureContent::None => return None,
            _ => value.clone(),
        };
        if self.mode == CaptureContent::Redacted {
            self.redactor.redact_value(&mut value);
        }
        Some(capped_messages(value, self.cap))
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

/// A GenAI messages (or parts) array serialized to at most `cap` bytes and still an array of
/// the same shape (so it validates against the conventions' schema): long strings are cut
/// first (ending in `…[truncated]`), then the oldest items are dropped (the newest is the
/// one a reader wants), and if even one item does not fit, the array is empty.
pub fn capped_messages(value: Value, cap: usize) -> String {
    let text = value.to_string();
    if text.len() <= cap {
        return text;
    }
    let mut limit = cap;
    let mut shortened = value;
    while limit >= 16 {
        shorten_content(&mut shortened, limit);
        let text = shortened.to_string();
        if text.len() <= cap {
            return text;
        }
        limit /= 2;
    }
    let Value::Array(items) = shortened else {
        return capped_json(&shortened, cap);
    };
    // Keep the longest tail that fits: `[` + items joined by `,` + `]`.
    let texts: Vec<String> = items.iter().map(Value::to_string).collect();
    let mut used = 2;
    let mut first = texts.len();
    for (i, t) in texts.iter().enumerate().rev() {
        let add = t.len() + usize::from(first < texts.len());
        if used + add > cap {
            break;
        }
        used += add;
        first = i;
    }
    format!("[{}]", texts[first..].join(","))
}

/// Keys whose values name a message's structure (a part's `type`, a message's `role`, ...):
/// never cut, or the value would no longer follow the schema.
const STRUCTURAL_KEYS: [&str; 5] = ["type", "role", "finish_reason", "id", "name"];

/// Keys whose values are a part's free-form payload (a tool call's arguments, a tool's
/// response): any JSON at all, which may be big without holding one long string.
const PAYLOAD_KEYS: [&str; 2] = ["arguments", "response"];

/// [`shorten_strings`] on a messages array, leaving structural values whole. A payload too
/// big even with its strings cut (five thousand numbers) becomes its JSON text, cut: the
/// part stays, with its id and name, instead of its whole message being dropped.
fn shorten_content(value: &mut Value, max_chars: usize) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if STRUCTURAL_KEYS.contains(&k.as_str()) {
                    continue;
                }
                shorten_content(v, max_chars);
                if PAYLOAD_KEYS.contains(&k.as_str()) && !v.is_string() {
                    let text = v.to_string();
                    if text.len() > max_chars {
                        let mut cut = truncate_bytes(&text, max_chars).to_string();
                        cut.push_str(MARKER);
                        *v = Value::String(cut);
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shorten_content(v, max_chars)),
        other => shorten_strings(other, max_chars),
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
    fn a_text_result_is_its_text_and_anything_else_its_json() {
        let mut policy = ContentPolicy::new(CaptureContent::Redacted);
        assert_eq!(policy.render_result(&json!("3")).as_deref(), Some("3"));
        assert_eq!(
            policy.render_result(&json!({"n": 3})).as_deref(),
            Some(r#"{"n":3}"#)
        );
        let secret = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789";
        let redacted = policy
            .render_result(&json!(format!("key {secret}")))
            .unwrap();
        assert!(
            !redacted.contains(secret) && redacted.contains("REDACTED"),
            "{redacted}"
        );
        // An odd cap puts the cut inside a two-byte character: it backs off to a boundary.
        policy.cap = 65;
        let long = policy.render_result(&json!("é".repeat(100))).unwrap();
        assert!(long.len() <= 65 && long.ends_with(MARKER), "{long}");
        assert!(
            long.trim_end_matches(MARKER).chars().all(|c| c == 'é'),
            "{long}"
        );
        policy.mode = CaptureContent::None;
        assert_eq!(policy.render_result(&json!("3")), None);
    }

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

    #[test]
    fn capped_messages_keep_the_array_shape() {
        let msg =
            |text: String| json!({"role": "user", "parts": [{"type": "text", "content": text}]});
        let long: Vec<Value> = (0..3)
            .map(|i| msg(format!("{i}{}", "é".repeat(5_000))))
            .collect();
        let out = capped_messages(Value::Array(long), 1024);
        assert!(out.len() <= 1024, "{} bytes", out.len());
        let back: Value = serde_json::from_str(&out).unwrap();
        let items = back.as_array().unwrap();
        assert_eq!(items.len(), 3);
        let text = items[2]["parts"][0]["content"].as_str().unwrap();
        assert!(text.starts_with('2') && text.ends_with(MARKER), "{text}");
        // Too many messages for the cap: the oldest go, the newest stays.
        let many: Vec<Value> = (0..500).map(|i| msg(format!("m{i}"))).collect();
        let out = capped_messages(Value::Array(many), 300);
        assert!(out.len() <= 300);
        let back: Value = serde_json::from_str(&out).unwrap();
        let items = back.as_array().unwrap();
        assert!(!items.is_empty());
        assert_eq!(items.last().unwrap()["parts"][0]["content"], "m499");
        // A tool call whose arguments are big without a long string (many numbers): the
        // call stays, its arguments cut to text, rather than the whole message going.
        let call = json!([{"role": "assistant", "finish_reason": "tool_call", "parts": [{
            "type": "tool_call", "id": "call_1", "name": "sum",
            "arguments": {"xs": (0..5_000).collect::<Vec<u32>>()},
        }]}]);
        let out = capped_messages(call, 1024);
        assert!(out.len() <= 1024, "{} bytes", out.len());
        let back: Value = serde_json::from_str(&out).unwrap();
        let part = &back[0]["parts"][0];
        assert_eq!(
            (part["type"].as_str(), part["id"].as_str()),
            (Some("tool_call"), Some("call_1"))
        );
        let args = part["arguments"].as_str().unwrap();
        assert!(
            args.starts_with("{\"xs\":[0,1,2") && args.ends_with(MARKER),
            "{args}"
        );
        // Not even one message fits: an empty array, still valid.
        let out = capped_messages(json!([msg("x".repeat(100))]), 20);
        assert_eq!(out, "[]");
    }

    #[test]
    fn capture_variables_and_their_precedence() {
        type C = CaptureContent;
        assert_eq!(C::from_vars(None, None), Ok(C::None));
        // The GenAI alias: true (and span modes) mean capture, redacted by default.
        for on in ["true", "TRUE", "SPAN_ONLY", "span_and_event"] {
            assert_eq!(C::from_vars(None, Some(on)), Ok(C::Redacted), "{on}");
        }
        for off in ["false", "NO_CONTENT", "EVENT_ONLY"] {
            assert_eq!(C::from_vars(None, Some(off)), Ok(C::None), "{off}");
        }
        // KAOS_CAPTURE_CONTENT wins over the alias, both ways.
        assert_eq!(C::from_vars(Some("full"), Some("NO_CONTENT")), Ok(C::Full));
        assert_eq!(C::from_vars(Some("none"), Some("true")), Ok(C::None));
        // On means redacted; verbatim needs `full`.
        assert_eq!(C::parse("on"), Some(C::Redacted));
        assert_eq!(C::parse("true"), Some(C::Redacted));
        assert_eq!(C::parse("full"), Some(C::Full));
        let err = C::from_vars(None, Some("yes please")).unwrap_err();
        assert!(err.contains(C::OTEL_ENV), "{err}");
        let err = C::from_vars(Some("maybe"), None).unwrap_err();
        assert!(err.contains(C::ENV), "{err}");
    }
}
