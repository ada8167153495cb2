//! Redactor: every built-in kind, JSON structure, truncation, counting.

use std::borrow::Cow;

use kaos_agents::redact::{RedactionStats, Redactor};
use kaos_agents::{Event, EventKind, SpanEvent, SpanPhase, SpanSubject};
use serde_json::json;

const ANTHROPIC: &str = "sk-ant-api03-CANARYabcdefghijklmnopqrstuvwxyz0123456789-AAAA";
const OPENAI: &str = "sk-proj-CANARYabcdefghijklmnopqrstuvwxyz0123";
const CARD: &str = "4111 1111 1111 1111";

#[test]
fn clean_text_is_borrowed() {
    let r = Redactor::default();
    let text = "The weather in Paris is 21°C; order #12345 shipped 2024-01-15.";
    assert!(matches!(r.redact_str(text), Cow::Borrowed(_)));
    assert!(r.stats().is_empty());
}

#[test]
fn each_secret_kind_is_named() {
    let r = Redactor::default();
    let cases = [
        (format!("key={ANTHROPIC}"), "anthropic_key"),
        (format!("use {OPENAI} now"), "openai_key"),
        ("old sk-abcdefghijklmnopqrstuvwx1234".to_string(), "openai_key"),
        ("aws AKIAIOSFODNN7EXAMPLE here".to_string(), "aws_access_key_id"),
        ("Authorization: Bearer abcDEF123456789.xyz".to_string(), "bearer_token"),
        (
            "tok eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end".to_string(),
            "jwt",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc=\n-----END RSA PRIVATE KEY-----".to_string(),
            "private_key",
        ),
        ("login password=hunter2CANARY ok".to_string(), "password"),
        (r#"{"password": "hunter2CANARY"}"#.to_string(), "password"),
        ("api_key: abcd1234efgh".to_string(), "credential"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789".to_string(), "github_pat"),
        (format!("card {CARD} thanks"), "card_number"),
        ("card 4242-4242-4242-4242".to_string(), "card_number"),
        ("ssn 123-45-6789.".to_string(), "ssn"),
    ];
    for (text, kind) in cases {
        let mut stats = RedactionStats::default();
        let out = r.redact_str_counted(&text, &mut stats);
        assert!(
            out.contains(&format!("[REDACTED:{kind}]")),
            "{text:?} -> {out:?} (expected {kind})"
        );
        assert!(!out.contains("CANARY"), "{out}");
        assert_eq!(stats.get(kind), 1, "{text:?} -> {stats:?}");
    }
}

#[test]
fn surrounding_text_and_prefixes_survive() {
    let r = Redactor::default();
    assert_eq!(
        r.redact_str("Authorization: Bearer abcDEF123456789 please"),
        "Authorization: Bearer [REDACTED:bearer_token] please"
    );
    assert_eq!(
        r.redact_str(r#"{"user": "bob", "password": "hunter2CANARY"}"#),
        r#"{"user": "bob", "password": "[REDACTED:password]"}"#
    );
}

#[test]
fn not_everything_with_digits_is_a_card() {
    let r = Redactor::default();
    for text in [
        "4111 1111 1111 1112",  // fails Luhn
        "phone 555-123-4567",   // not an SSN, PII off
        "id 000-12-3456",       // implausible SSN
        "tokens used: 1234567", // short number
        "contact bob@example.com",
    ] {
        assert_eq!(r.redact_str(text), text);
    }
}

#[test]
fn pii_is_opt_in() {
    let r = Redactor::default().with_pii(true);
    assert_eq!(
        r.redact_str("mail bob@example.com or call (555) 123-4567"),
        "mail [REDACTED:email] or call [REDACTED:phone]"
    );
}

#[test]
fn user_patterns_and_keep_group() {
    let r = Redactor::default()
        .try_with_pattern("employee_id", r"(?P<keep>emp-)\d{6}")
        .unwrap();
    assert_eq!(
        r.redact_str("by emp-123456."),
        "by emp-[REDACTED:employee_id]."
    );
    assert!(Redactor::default().try_with_pattern("bad", "(").is_err());
}

#[test]
fn json_values_keep_their_structure() {
    let r = Redactor::default().with_sensitive_key("X-Custom-Secret");
    let mut v = json!({
        "query": format!("look up {CARD}"),
        "Authorization": "Basic dXNlcjpwYXNz",
        "headers": {"x-api-key": "abc", "x_custom_secret": 42, "content-type": "json"},
        "api_key": null,
        "input_tokens": 12,
        "items": [OPENAI, "plain", 3, true],
    });
    let mut stats = RedactionStats::default();
    r.redact_value_counted(&mut v, &mut stats);
    assert_eq!(
        v,
        json!({
            "query": "look up [REDACTED:card_number]",
            "Authorization": "[REDACTED:sensitive_key]",
            "headers": {"x-api-key": "[REDACTED:sensitive_key]", "x_custom_secret": "[REDACTED:sensitive_key]", "content-type": "json"},
            "api_key": null,
            "input_tokens": 12,
            "items": ["[REDACTED:openai_key]", "plain", 3, true],
        })
    );
    assert_eq!(stats.get("sensitive_key"), 3);
    assert_eq!(stats.get("card_number"), 1);
    assert_eq!(stats.get("openai_key"), 1);
    assert_eq!(stats.total(), 5);
}

#[test]
fn long_strings_are_truncated_with_a_hash() {
    let r = Redactor::default().with_max_string_len(10);
    let out = r.redact_str("0123456789abcdefé");
    assert!(
        out.starts_with("0123456789…[TRUNCATED 7 chars; sha256="),
        "{out}"
    );
    assert!(out.ends_with(']'));
    let hex = out.rsplit("sha256=").next().unwrap().trim_end_matches(']');
    assert_eq!(hex.len(), 16);
    assert_eq!(r.redact_str("0123456789"), "0123456789");
    assert_eq!(r.stats().get("truncated"), 1);
    // default threshold is 4096
    let long = "x".repeat(5000);
    let out = Redactor::default().redact_str(&long);
    assert!(out.contains("[TRUNCATED 904 chars;"));
}

#[test]
fn events_keep_envelope_and_ids() {
    let r = Redactor::default();
    let mut attributes = serde_json::Map::new();
    attributes.insert("arguments".into(), json!({"token": "abc", "q": OPENAI}));
    attributes.insert("tool_name".into(), json!("search"));
    let event = Event {
        timestamp: 1,
        sequence: 7,
        session_id: "s".into(),
        run_id: "run_1".into(),
        agent: "a".into(),
        kind: EventKind::Span(SpanEvent {
            subject: SpanSubject::ToolCall,
            phase: SpanPhase::Start,
            span_id: "4111111111111111".into(), // Luhn-valid, but an id: untouched
            parent_span_id: None,
            name: "tool.search".into(),
            duration_ms: None,
            attributes,
            error: None,
        }),
    };
    let out = r.redact_event(&event);
    let span = out.span().unwrap();
    assert_eq!(&*span.span_id, "4111111111111111");
    assert_eq!(
        span.attributes["arguments"],
        json!({"token": "[REDACTED:sensitive_key]", "q": "[REDACTED:openai_key]"})
    );
    assert_eq!(out.sequence, 7);
    assert_eq!(r.stats().total(), 2);
    let none = Redactor::none();
    assert_eq!(none.redact_event(&event), event);
}

#[test]
fn url_query_keys_and_signatures_are_redacted() {
    let r = Redactor::default();
    for (text, expected) in [
        (
            "GET https://generativelanguage.googleapis.com/v1/models?key=plainSecretValue12345",
            "GET https://generativelanguage.googleapis.com/v1/models?key=[REDACTED:url_query_secret]",
        ),
        // Azure SAS: only the signature goes, the other parameters stay readable.
        (
            "https://acct.blob.core.windows.net/c/f?sv=2023-01-03&sig=sv2023abcdEFGH%2Fxyz&se=2026",
            "https://acct.blob.core.windows.net/c/f?sv=2023-01-03&sig=[REDACTED:url_query_secret]&se=2026",
        ),
        (
            "s3 https://b.s3.amazonaws.com/k?X-Amz-Date=20260101&X-Amz-Signature=0a1b2c3d4e5f6789 ok",
            "s3 https://b.s3.amazonaws.com/k?X-Amz-Date=20260101&X-Amz-Signature=[REDACTED:url_query_secret] ok",
        ),
        (
            "gcs ?x-goog-signature=ab12cd34ef56#part",
            "gcs ?x-goog-signature=[REDACTED:url_query_secret]#part",
        ),
        (
            r#"{"url": "https://x.test/f?Expires=1&Signature=abcDEF123%2B"}"#,
            r#"{"url": "https://x.test/f?Expires=1&Signature=[REDACTED:url_query_secret]"}"#,
        ),
        // The names other rules already knew are still redacted in the same URL.
        (
            "https://api.test/v1?token=tok123456789&KEY=plainSecretValue12345&page=2",
            "https://api.test/v1?token=[REDACTED:credential]&KEY=[REDACTED:url_query_secret]&page=2",
        ),
    ] {
        let mut stats = RedactionStats::default();
        assert_eq!(r.redact_str_counted(text, &mut stats), expected, "{text}");
        assert_eq!(stats.get("url_query_secret"), 1, "{text}: {stats:?}");
    }
}

#[test]
fn key_value_outside_a_url_query_is_kept() {
    let r = Redactor::default();
    for text in [
        "the key=value pairs",
        "sort key=name",
        "Each entry is key=plainSecretValue12345 in the config format.",
        "sig=abcdefgh1234 signature=abcdefgh1234",
        "if (&key==other) {}",
        "https://maps.googleapis.com/maps/api/js?key=YOUR_API_KEY",
        "https://maps.googleapis.com/maps/api/js?key={api_key}&v=3",
        "https://example.com/items?key=$API_KEY",
        "https://example.com/items?key=42&sort=asc",
    ] {
        assert_eq!(r.redact_str(text), text);
    }
    assert!(r.stats().is_empty(), "{:?}", r.stats());
}
