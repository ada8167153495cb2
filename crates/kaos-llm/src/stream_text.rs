//! Streaming text out of a model's answer as it arrives.
//!
//! - [`JsonFieldStreamer`]: an incremental extractor that emits the characters of one
//!   top-level string field of a JSON object (for example the `response` of a typed respond
//!   call) while the object is still being streamed. JSON string escapes, `\uXXXX` surrogate
//!   pairs included, are decoded correctly wherever the chunks split them.
//! - [`StreamAccumulator`]: folds [`StreamEvent`]s into what arrived so far (text, thinking,
//!   chunk count, usage), so a stream cut half-way can still report what it delivered.

use std::time::Instant;

use crate::client::StreamEvent;
use crate::types::Usage;

/// Where the extractor is in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the object's opening `{`.
    Seek,
    /// Inside the object (at any depth), outside a string.
    Structure,
    /// Inside a string that is not the wanted value (a key is collected when at depth 1).
    OtherString,
    /// After the wanted key: waiting for `:` then the value's opening quote.
    AfterKey,
    /// Streaming the wanted value.
    Value,
    /// The value ended (or was not a string): nothing more is emitted.
    Done,
}

/// Emits the characters of a top-level string field of a streamed JSON object.
///
/// Feed it the text chunks in order with [`push`](Self::push); each call returns the
/// decoded characters of the field that became available. Text before the object (prose, a
/// Markdown fence) is skipped. The concatenation of the returned pieces equals the field's
/// value as `serde_json` decodes it, however the chunks split the text (escapes and
/// surrogate pairs included). A lone surrogate, which `serde_json` rejects, comes out as
/// U+FFFD; the caller still validates the whole object at the end.
///
/// ```
/// use kaos_llm::stream_text::JsonFieldStreamer;
///
/// let mut field = JsonFieldStreamer::new("response");
/// let mut text = String::new();
/// for chunk in [r#"{"resp"#, r#"onse": "caf\u00"#, r#"e9 \ud83d"#, r#"\ude00\n"}"#] {
///     text.push_str(&field.push(chunk));
/// }
/// assert_eq!(text, "café 😀\n");
/// assert!(field.is_complete());
/// ```
#[derive(Debug, Clone)]
pub struct JsonFieldStreamer {
    field: String,
    phase: Phase,
    depth: u32,
    /// At depth 1, the next string is a key.
    expect_key: bool,
    /// The key being read (depth 1 keys only).
    key: Option<String>,
    /// Inside a string: the previous char was an unconsumed backslash.
    escape: bool,
    /// Hex digits of a `\u` escape being read.
    unicode: Option<String>,
    /// A decoded high surrogate waiting for its low half.
    high: Option<u16>,
}

impl JsonFieldStreamer {
    /// An extractor of the top-level string field `field`.
    pub fn new(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            phase: Phase::Seek,
            depth: 0,
            expect_key: false,
            key: None,
            escape: false,
            unicode: None,
            high: None,
        }
    }

    /// Whether the field's closing quote was seen (nothing more will be emitted).
    pub fn is_complete(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether the field's value has started streaming.
    pub fn is_streaming(&self) -> bool {
        self.phase == Phase::Value
    }

    /// Feeds the next chunk; returns the field characters it completed.
    pub fn push(&mut self, chunk: &str) -> String {
        let mut out = String::new();
        for c in chunk.chars() {
            if self.phase == Phase::Done {
                break;
            }
            self.step(c, &mut out);
        }
        out
    }

    fn step(&mut self, c: char, out: &mut String) {
        match self.phase {
            Phase::Seek => {
                if c == '{' {
                    self.phase = Phase::Structure;
                    self.depth = 1;
                    self.expect_key = true;
                }
            }
            Phase::Structure => match c {
                '"' => {
                    if self.depth == 1 && self.expect_key {
                        self.key = Some(String::new());
                    }
                    self.expect_key = false;
                    self.escape = false;
                    self.phase = Phase::OtherString;
                }
                '{' | '[' => self.depth += 1,
                '}' | ']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.phase = Phase::Done;
                    }
                }
                ',' if self.depth == 1 => self.expect_key = true,
                _ => {}
            },
            Phase::OtherString => {
                if self.escape {
                    self.escape = false;
                    if let Some(key) = &mut self.key {
                        key.push(simple_escape(c).unwrap_or(c));
                    }
                } else if c == '\\' {
                    self.escape = true;
                } else if c == '"' {
                    let key = self.key.take();
                    self.phase = if key.as_deref() == Some(self.field.as_str()) {
                        Phase::AfterKey
                    } else {
                        Phase::Structure
                    };
                } else if let Some(key) = &mut self.key {
                    key.push(c);
                }
            }
            Phase::AfterKey => match c {
                ':' => {}
                '"' => {
                    self.phase = Phase::Value;
                    self.escape = false;
                }
                c if c.is_whitespace() => {}
                // The field is not a string: there is nothing to stream.
                _ => self.phase = Phase::Done,
            },
            Phase::Value => self.value_char(c, out),
            Phase::Done => {}
        }
    }

    fn value_char(&mut self, c: char, out: &mut String) {
        if let Some(digits) = &mut self.unicode {
            if !c.is_ascii_hexdigit() {
                // Invalid escape: serde rejects it; show what we have and move on.
                self.unicode = None;
                self.flush_high(out);
                out.push(char::REPLACEMENT_CHARACTER);
                return self.value_char(c, out);
            }
            digits.push(c);
            if digits.len() < 4 {
                return;
            }
            let unit = u16::from_str_radix(digits, 16).unwrap_or(0xFFFD);
            self.unicode = None;
            return self.code_unit(unit, out);
        }
        if self.escape {
            self.escape = false;
            if c == 'u' {
                self.unicode = Some(String::with_capacity(4));
                return;
            }
            self.flush_high(out);
            out.push(simple_escape(c).unwrap_or(c));
            return;
        }
        match c {
            '\\' => self.escape = true,
            '"' => {
                self.flush_high(out);
                self.phase = Phase::Done;
            }
            c => {
                self.flush_high(out);
                out.push(c);
            }
        }
    }

    /// One UTF-16 code unit from a `\u` escape.
    fn code_unit(&mut self, unit: u16, out: &mut String) {
        match unit {
            0xD800..=0xDBFF => {
                self.flush_high(out);
                self.high = Some(unit);
            }
            0xDC00..=0xDFFF => match self.high.take() {
                Some(high) => {
                    let code =
                        0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
                    out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                None => out.push(char::REPLACEMENT_CHARACTER),
            },
            _ => {
                self.flush_high(out);
                out.push(char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
        }
    }

    /// A high surrogate not followed by a low one.
    fn flush_high(&mut self, out: &mut String) {
        if self.high.take().is_some() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// The character a one-letter JSON escape stands for.
fn simple_escape(c: char) -> Option<char> {
    Some(match c {
        '"' => '"',
        '\\' => '\\',
        '/' => '/',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        _ => return None,
    })
}

/// What a stream delivered so far: its text, thinking, chunk count and timing.
///
/// Push every event with [`push`](Self::push); when the stream breaks, the accumulator still
/// says what arrived (for an error span's attributes).
#[derive(Debug, Clone, Default)]
pub struct StreamAccumulator {
    /// The visible text so far.
    pub text: String,
    /// The reasoning text so far.
    pub thinking: String,
    /// How many content chunks (text, thinking or tool-call deltas) arrived.
    pub chunks: u64,
    /// The last usage the stream reported.
    pub usage: Option<Usage>,
    /// When the first content chunk arrived.
    pub first_chunk_at: Option<Instant>,
}

impl StreamAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one event in; returns true when it is the stream's first content chunk.
    pub fn push(&mut self, event: &StreamEvent) -> bool {
        let content = match event {
            StreamEvent::TextDelta(text) => {
                self.text.push_str(text);
                true
            }
            StreamEvent::ThinkingDelta(thinking) => {
                self.thinking.push_str(thinking);
                true
            }
            StreamEvent::ToolCallDelta { .. } => true,
            StreamEvent::Usage(usage) => {
                self.usage = Some(*usage);
                false
            }
            StreamEvent::Done(_) => false,
        };
        if !content {
            return false;
        }
        self.chunks += 1;
        if self.first_chunk_at.is_none() {
            self.first_chunk_at = Some(Instant::now());
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_all(field: &str, chunks: &[&str]) -> String {
        let mut s = JsonFieldStreamer::new(field);
        chunks.iter().map(|c| s.push(c)).collect()
    }

    #[test]
    fn skips_prose_other_keys_and_nested_values() {
        let text = r#"Sure: ```json
{"meta": {"response": "nested"}, "list": ["response", "x"], "response": "a\"b\\c\/d\te"} ```"#;
        assert_eq!(stream_all("response", &[text]), "a\"b\\c/d\te");
    }

    #[test]
    fn a_value_key_is_not_a_key() {
        let text = r#"{"other": "response", "response": "yes"}"#;
        assert_eq!(stream_all("response", &[text]), "yes");
    }

    #[test]
    fn non_string_field_streams_nothing() {
        let mut s = JsonFieldStreamer::new("response");
        assert_eq!(s.push(r#"{"response": 42, "x": "y"}"#), "");
        assert!(s.is_complete());
    }

    #[test]
    fn lone_surrogates_become_replacement_chars() {
        assert_eq!(
            stream_all("r", &[r#"{"r": "\ud83dx\ude00"}"#]),
            "\u{FFFD}x\u{FFFD}"
        );
    }

    #[test]
    fn accumulator_counts_content_chunks() {
        let mut acc = StreamAccumulator::new();
        assert!(acc.push(&StreamEvent::TextDelta("a".into())));
        assert!(!acc.push(&StreamEvent::ThinkingDelta("t".into())));
        assert!(!acc.push(&StreamEvent::Usage(Usage::new(1, 2))));
        assert_eq!((acc.text.as_str(), acc.chunks), ("a", 2));
    }
}
