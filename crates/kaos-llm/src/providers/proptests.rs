//! Property tests: hostile bytes through the SSE parser and the providers' stream decoders
//! give events or typed errors, never a panic; what the parser holds stays under its limit.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;

use super::anthropic::AnthropicDecoder;
use super::http::{SseEvent, SseParser, StreamDecoder};
use super::openai::OpenAiDecoder;

const LIMIT: usize = 256;

/// Bytes that look like a server-sent-event stream, with junk mixed in.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b"data: ".to_vec()),
            Just(b"data:".to_vec()),
            Just(b"event: message_start".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n\n".to_vec()),
            Just(b": comment\n".to_vec()),
            Just(b"retry: 1000\n".to_vec()),
            "[a-z{}\\[\\]\":,. 0-9\\\\]{0,40}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..48),
        ],
        0..48,
    )
    .prop_map(|parts| parts.concat())
}

fn parse_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<Vec<SseEvent>, ()> {
    let mut parser = SseParser::new(LIMIT);
    let mut events = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([bytes.len()]) {
        events.extend(parser.feed(&bytes[at..cut.max(at)]).map_err(|_| ())?);
        at = cut.max(at);
    }
    events.extend(parser.finish().map_err(|_| ())?);
    Ok(events)
}

/// Event payloads a decoder may meet: provider-shaped JSON with hostile values, or junk.
fn payload() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        Just("0".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("-1".to_owned()),
        Just("1e400".to_owned()),
        Just("null".to_owned()),
        (0u64..10_000).prop_map(|n| n.to_string()),
    ];
    let text = "[a-z \"\\\\{}]{0,12}".prop_map(|t| serde_json::Value::String(t).to_string());
    prop_oneof![
        Just("[DONE]".to_owned()),
        "[a-z{}\\[\\]\":, 0-9]{0,40}",
        (number.clone(), number.clone(), text.clone()).prop_map(|(i, o, t)| format!(
            r#"{{"choices":[{{"index":{i},"delta":{{"content":{t},"tool_calls":[{{"index":{o},"function":{{"arguments":{t}}}}}]}},"finish_reason":null}}],"usage":{{"prompt_tokens":{i},"completion_tokens":{o}}}}}"#
        )),
        (number.clone(), text.clone()).prop_map(|(i, t)| format!(
            r#"{{"type":"content_block_start","index":{i},"content_block":{{"type":"tool_use","id":{t},"name":{t},"input":{{}}}}}}"#
        )),
        (number.clone(), text.clone()).prop_map(|(i, t)| format!(
            r#"{{"type":"content_block_delta","index":{i},"delta":{{"type":"input_json_delta","partial_json":{t}}}}}"#
        )),
        (number.clone(), text).prop_map(|(i, t)| format!(
            r#"{{"type":"content_block_delta","index":{i},"delta":{{"type":"text_delta","text":{t}}}}}"#
        )),
        (number.clone(), number).prop_map(|(i, o)| format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn"}},"usage":{{"input_tokens":{i},"output_tokens":{o}}}}}"#
        )),
        Just(r#"{"type":"message_stop"}"#.to_owned()),
        Just(r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#.to_owned()),
    ]
}

fn events() -> impl Strategy<Value = Vec<SseEvent>> {
    let name = prop_oneof![
        Just(None),
        Just(Some("message_start".to_owned())),
        Just(Some("content_block_start".to_owned())),
        Just(Some("content_block_delta".to_owned())),
        Just(Some("message_delta".to_owned())),
        Just(Some("message_stop".to_owned())),
        Just(Some("error".to_owned())),
        Just(Some("ping".to_owned())),
    ];
    prop::collection::vec(
        (name, payload()).prop_map(|(event, data)| SseEvent { event, data }),
        0..24,
    )
}

/// Feeds events until the decoder fails or completes, then assembles the answer.
fn decode(mut decoder: impl StreamDecoder, events: Vec<SseEvent>) {
    let mut out = VecDeque::new();
    for event in events {
        if decoder.on_event(event, &mut out).is_err() || decoder.is_complete() {
            break;
        }
    }
    let _ = decoder.can_finish_at_eof();
    let _ = decoder.finish(Duration::ZERO);
}

/// Found by `sse_parsing_never_panics_and_ignores_where_bytes_split`: a `data:` line of
/// invalid UTF-8 under the byte limit grew past it when each byte became U+FFFD (3 bytes).
#[test]
fn invalid_utf8_data_cannot_outgrow_the_limit() {
    let mut bytes = b"data: ".to_vec();
    bytes.extend(std::iter::repeat_n(0x80u8, LIMIT / 2));
    bytes.extend_from_slice(b"\n\n");
    assert!(bytes.len() <= LIMIT, "the raw line is under the limit");
    assert!(parse_in_pieces(&bytes, &[]).is_err());
    let mut ok = b"data: ".to_vec();
    ok.extend(std::iter::repeat_n(0x80u8, LIMIT / 3 - 1));
    ok.extend_from_slice(b"\n\n");
    let events = parse_in_pieces(&ok, &[]).unwrap_or_default();
    assert_eq!(events.len(), 1);
    assert!(events[0].data.len() <= LIMIT);
}

proptest! {
    #![proptest_config(proptest_config(96))]

    #[test]
    fn sse_parsing_never_panics_and_ignores_where_bytes_split(
        bytes in sse_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let whole = parse_in_pieces(&bytes, &[]);
        let pieces = parse_in_pieces(&bytes, &cuts);
        if let Ok(events) = &whole {
            for event in events {
                prop_assert!(event.data.len() <= LIMIT);
            }
            prop_assert_eq!(&whole, &pieces);
        }
    }

    #[test]
    fn a_line_past_the_limit_is_an_error_however_it_arrives(
        prefix in "[a-z]{0,10}",
        extra in 1usize..64,
        cut in any::<usize>(),
    ) {
        let mut bytes = format!("data: {prefix}").into_bytes();
        bytes.resize(LIMIT + extra, b'x');
        prop_assert!(parse_in_pieces(&bytes, &[cut]).is_err());
        bytes.push(b'\n');
        prop_assert!(parse_in_pieces(&bytes, &[cut]).is_err());
    }

    #[test]
    fn stream_decoders_never_panic(events in events()) {
        decode(OpenAiDecoder::new("openai", "m"), events.clone());
        decode(AnthropicDecoder::new("anthropic", "m"), events);
    }
}

/// `default` cases, or `PROPTEST_CASES` when it is set (an explicit count ignores it).
fn proptest_config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}
