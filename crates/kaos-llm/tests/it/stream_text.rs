//! The incremental JSON field extractor: any chunking of any JSON string gives the same text.

use kaos_llm::stream_text::JsonFieldStreamer;
use proptest::prelude::*;

/// Encodes `text` as the body of a JSON string, each char escaped as `modes` say:
/// 0 raw where JSON allows it, 1 a short escape where one exists, 2 `\uXXXX` (surrogate pairs
/// above U+FFFF), in lower or upper case hex.
fn encode(text: &str, modes: &[u8]) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        let mode = modes.get(i % modes.len().max(1)).copied().unwrap_or(0);
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        let must_escape = c == '"' || c == '\\' || (c as u32) < 0x20;
        match (mode % 3, short) {
            (0, _) if !must_escape => out.push(c),
            (1, Some(s)) | (0, Some(s)) => out.push_str(s),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    if mode >= 3 {
                        out.push_str(&format!("\\u{unit:04X}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
            }
        }
    }
    out
}

/// `text` cut at char boundaries after each of `sizes` chars (cycling).
fn chunks(text: &str, sizes: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < chars.len() {
        let size = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        let end = (at + size).min(chars.len());
        out.push(chars[at..end].iter().collect());
        at = end;
        i += 1;
    }
    out
}

proptest! {
    #![proptest_config(crate::util::proptest_config(512))]

    #[test]
    fn any_chunking_of_any_json_string_gives_the_same_text(
        text in any::<String>(),
        modes in proptest::collection::vec(0u8..6, 1..8),
        sizes in proptest::collection::vec(1usize..7, 1..8),
        prose in "[a-z :`]{0,12}",
    ) {
        let json = format!(
            r#"{prose}{{"other": "x\"y", "n": [1, {{"response": "no"}}], "response": "{}", "after": "z"}}"#,
            encode(&text, &modes)
        );
        // The reference: what serde_json decodes.
        let start = json.find('{').unwrap();
        let value: serde_json::Value = serde_json::from_str(&json[start..]).unwrap();
        prop_assert_eq!(value["response"].as_str(), Some(text.as_str()));

        let mut streamer = JsonFieldStreamer::new("response");
        let mut streamed = String::new();
        for chunk in chunks(&json, &sizes) {
            streamed.push_str(&streamer.push(&chunk));
        }
        prop_assert_eq!(&streamed, &text);
        prop_assert!(streamer.is_complete());
    }
}

#[test]
fn every_split_of_a_surrogate_pair_decodes() {
    let json = r#"{"response": "a\ud83d\ude00b\u00e9\n"}"#;
    for split in 1..json.len() {
        let mut streamer = JsonFieldStreamer::new("response");
        let mut text = streamer.push(&json[..split]);
        text.push_str(&streamer.push(&json[split..]));
        assert_eq!(text, "a😀bé\n", "split at {split}");
    }
}
