//! Property tests of what parses text from outside: JSON in a model's answer and model
//! specs. Arbitrary input gives a value or an error, never a panic or a hang.

use kaos_llm::{ModelSpec, Signature, extract_json};
use proptest::prelude::*;
use serde_json::Value;

/// Text a model might send: prose, fences, brackets, quotes and escapes in any order.
fn model_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-zA-Z .,!?']{0,20}",
            Just("```json\n".to_owned()),
            Just("```".to_owned()),
            Just("\n".to_owned()),
            "[{}\\[\\]\":,\\\\]{1,8}",
            Just(r#"{"response": "hi"}"#.to_owned()),
            Just(r#"{"intent": "respond", "confidence": 0.9"#.to_owned()),
            any::<String>(),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

/// A JSON value a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[allow(dead_code)]
struct Answer {
    response: String,
}

proptest! {
    #![proptest_config(crate::util::proptest_config(128))]

    #[test]
    fn json_extraction_never_panics(text in model_text()) {
        let _ = extract_json(&text);
        let _ = Signature::<Answer>::new("answer").parse(&text);
    }

    #[test]
    fn json_between_bracket_free_prose_is_found(
        before in "[a-zA-Z .,!?]{0,40}",
        value in json_value(),
        after in "[a-zA-Z .,!?]{0,40}",
    ) {
        prop_assume!(value.is_object() || value.is_array());
        let text = format!("{before}{value}{after}");
        prop_assert_eq!(extract_json(&text).unwrap(), value.clone());
        let fenced = format!("{before}\n```json\n{value:#}\n```\n{after}");
        prop_assert_eq!(extract_json(&fenced).unwrap(), value);
    }

    #[test]
    fn model_specs_parse_or_fail_and_round_trip(spec in prop_oneof![
        any::<String>(),
        "(anthropic|openai|openai-compatible|function|claude-|gpt-|o1|)[:@a-z0-9./-]{0,24}",
        "openai-compatible:[a-z0-9]{0,8}@(http://|https://|)[a-z0-9.:/@]{0,20}",
        // Regression: no host after the scheme once parsed, then failed to re-parse.
        Just("openai-compatible:0@http://".to_owned()),
        Just("openai-compatible:0@https:///".to_owned()),
    ]) {
        if let Ok(parsed) = ModelSpec::parse(&spec) {
            let canonical = parsed.to_string();
            prop_assert_eq!(ModelSpec::parse(&canonical).ok(), Some(parsed));
        }
    }
}
