//! Message content on `chat` spans (`gen_ai.system_instructions`, `gen_ai.input.messages`,
//! `gen_ai.output.messages`): validated against the conventions' JSON schema (the subset in
//! `tests/data/genai-content.schema.json`), redacted, capped to valid JSON, and not even
//! built when capture is off.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use kaos_agents::attrs;
use kaos_agents::message_parts::{self, INPUT_MESSAGES, OUTPUT_MESSAGES, SYSTEM_INSTRUCTIONS};
use kaos_agents::otel::CaptureContent;
use kaos_agents::scope::TurnScope;
use kaos_agents::testing::ScopeDriver;
use kaos_agents::{Agent, Event, FnTool, KaosRuntime, Runner, SpanPhase, SpanSubject};
use kaos_llm::{FunctionClient, LlmRequest, Message, ProviderResponse};
use opentelemetry_sdk::trace::SpanData;
use serde_json::{Value, json};

use crate::otel_hook::{Harness, attr, attr_s, named};
use crate::util::{is_classifier, routing_model};

const SECRET: &str = "sk-ant-api03-Z01Q1Qr3AF3O9WpwKkCxMi_c9rzhIDQlCZspEBhqH8p7adOLKy3m6WqUZSH7dG0SxBSrVu-bj8T04sN1Tfs7kU7uJE0aiAA";

/// A JSON Schema validator for the keywords the schema file uses (`$ref` into `$defs`,
/// `type`, `const`, `enum`, `oneOf`, `properties`, `required`, `additionalProperties: false`,
/// `items`). Any other keyword is an error, so the file cannot silently ask for more.
struct Schema {
    root: Value,
}

impl Schema {
    fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/genai-content.schema.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        Self {
            root: serde_json::from_str(&text).unwrap(),
        }
    }

    /// Validates `doc` against `#/$defs/{def}`.
    fn validate(&self, def: &str, doc: &Value) -> Result<(), String> {
        self.check(&self.def(def)?, doc, "$")
    }

    fn def(&self, name: &str) -> Result<Value, String> {
        self.root["$defs"]
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no $defs/{name} in the schema"))
    }

    fn check(&self, schema: &Value, doc: &Value, at: &str) -> Result<(), String> {
        let s = schema
            .as_object()
            .ok_or_else(|| format!("{at}: schema is not an object"))?;
        for key in s.keys() {
            let known = [
                "$ref",
                "type",
                "const",
                "enum",
                "oneOf",
                "properties",
                "required",
                "additionalProperties",
                "items",
            ];
            if !known.contains(&key.as_str()) {
                return Err(format!("{at}: unsupported schema keyword {key}"));
            }
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r
                .strip_prefix("#/$defs/")
                .ok_or_else(|| format!("{at}: unsupported $ref {r}"))?;
            return self.check(&self.def(name)?, doc, at);
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{at}: bad type keyword")),
            };
            let actual = match doc {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            if !types.contains(&actual) {
                return Err(format!("{at}: {actual} is not {types:?}"));
            }
        }
        if let Some(c) = s.get("const")
            && c != doc
        {
            return Err(format!("{at}: {doc} is not {c}"));
        }
        if let Some(Value::Array(allowed)) = s.get("enum")
            && !allowed.contains(doc)
        {
            return Err(format!("{at}: {doc} is not one of {allowed:?}"));
        }
        if let Some(Value::Array(options)) = s.get("oneOf") {
            let errors: Vec<String> = options
                .iter()
                .filter_map(|o| self.check(o, doc, at).err())
                .collect();
            if options.len() - errors.len() != 1 {
                return Err(format!(
                    "{at}: {doc} matches {} of oneOf ({errors:?})",
                    options.len() - errors.len()
                ));
            }
        }
        if let Value::Object(map) = doc {
            for req in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = req.as_str().unwrap_or_default();
                if !map.contains_key(key) {
                    return Err(format!("{at}: missing required {key}"));
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            let closed = s.get("additionalProperties") == Some(&Value::Bool(false));
            for (k, v) in map {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => self.check(sub, v, &format!("{at}.{k}"))?,
                    None if closed => return Err(format!("{at}: unexpected property {k}")),
                    None => {}
                }
            }
        }
        if let (Some(items), Value::Array(docs)) = (s.get("items"), doc) {
            for (i, d) in docs.iter().enumerate() {
                self.check(items, d, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}

#[test]
fn the_validator_rejects_what_the_conventions_reject() {
    let schema = Schema::load();
    let good = json!([{"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "2"}]}]);
    schema.validate("InputMessages", &good).unwrap();
    let bad = [
        // `result` is the old output schema's field: the parts schema says `response`.
        (
            "InputMessages",
            json!([{"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "result": "2"}]}]),
        ),
        ("InputMessages", json!([{"role": "bot", "parts": []}])),
        ("InputMessages", json!([{"role": "user", "content": "hi"}])),
        ("InputMessages", json!({"role": "user", "parts": []})),
        (
            "OutputMessages",
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "x"}]}]),
        ),
        (
            "OutputMessages",
            json!([{"role": "assistant", "parts": [{"type": "txt", "content": "x"}], "finish_reason": "stop"}]),
        ),
        ("SystemInstructions", json!([{"type": "text"}])),
        ("SystemInstructions", json!("be brief")),
    ];
    for (def, doc) in bad {
        assert!(schema.validate(def, &doc).is_err(), "{def} accepted {doc}");
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct TextArgs {
    /// The text.
    text: String,
}

fn tool_runner(h: &Harness) -> Runner {
    let tool = FnTool::new("wordcount", "Counts words.", |a: TextArgs| async move {
        a.text.split_whitespace().count().to_string()
    })
    .read_only();
    let runtime = KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("wordcount", json!({"text": "a b c"}))),
        )
        .with_tool(tool);
    let agent = Agent::builder()
        .name("tester")
        .instructions("Count words when asked.")
        .model("fake")
        .build()
        .unwrap();
    Runner::new(agent, runtime).with_shared_hook(h.hook.clone())
}

fn chats(spans: &[SpanData]) -> Vec<&SpanData> {
    let mut chats: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name.starts_with("chat "))
        .collect();
    chats.sort_by_key(|s| s.start_time);
    chats
}

fn json_attr(span: &SpanData, key: &str) -> Value {
    serde_json::from_str(&attr_s(span, key)).unwrap_or_else(|e| panic!("{key}: {e}"))
}

const MESSAGE: &str = "use the tool on my notes; my key is ";

#[tokio::test]
async fn chat_spans_carry_redacted_messages_in_the_parts_schema() {
    let h = Harness::with(|hook| hook.with_capture_content(CaptureContent::Redacted));
    let schema = Schema::load();
    tool_runner(&h)
        .turn(&format!("{MESSAGE}{SECRET}"), "content")
        .await
        .unwrap();
    let spans = h.spans();
    let chats = chats(&spans);
    assert_eq!(chats.len(), 3, "classifier and two tool-loop calls");
    for chat in &chats {
        let purpose = attr_s(chat, "kaos.purpose");
        for (key, def) in [
            ("gen_ai.system_instructions", "SystemInstructions"),
            ("gen_ai.input.messages", "InputMessages"),
            ("gen_ai.output.messages", "OutputMessages"),
        ] {
            let doc = json_attr(chat, key);
            schema
                .validate(def, &doc)
                .unwrap_or_else(|e| panic!("{purpose} {key}: {e}\n{doc:#}"));
        }
        // The user's message is there, its secret is not.
        let input = attr_s(chat, "gen_ai.input.messages");
        assert!(input.contains(MESSAGE), "{purpose}: {input}");
        assert!(
            input.contains("[REDACTED:anthropic_key]"),
            "{purpose}: {input}"
        );
    }
    for span in &spans {
        for kv in &span.attributes {
            assert!(
                !kv.value.as_str().contains(SECRET),
                "{} {} leaks the secret",
                span.name,
                kv.key
            );
        }
    }
    // The agent span shows the user's message (redacted) as its input and the answer as its
    // output, in the same schema.
    let turn = named(&spans, "agent.turn");
    let input = json_attr(turn, "gen_ai.input.messages");
    schema.validate("InputMessages", &input).unwrap();
    let text = input[0]["parts"][0]["content"].as_str().unwrap();
    assert!(
        input[0]["role"] == "user" && text.starts_with(MESSAGE) && !text.contains(SECRET),
        "{input}"
    );
    let output = json_attr(turn, "gen_ai.output.messages");
    schema.validate("OutputMessages", &output).unwrap();
    assert_eq!(output[0]["finish_reason"], "stop");
    // The same two as plain text (OpenInference's `input.value` and `output.value`), which
    // Phoenix shows as the trace's and the session's input and output.
    assert_eq!(attr_s(turn, "input.value"), text);
    assert_eq!(
        attr_s(turn, "output.value"),
        output[0]["parts"][0]["content"].as_str().unwrap()
    );
    // The first tool-loop call asks for the tool; the second sees the call and its result.
    let (ask, answer) = (chats[1], chats[2]);
    assert_eq!(
        json_attr(ask, "gen_ai.output.messages"),
        json!([{"role": "assistant", "finish_reason": "tool_call", "parts": [
            {"type": "tool_call", "id": "tc_1", "name": "wordcount", "arguments": {"text": "a b c"}}
        ]}])
    );
    let input = json_attr(answer, "gen_ai.input.messages");
    let tail: Vec<&Value> = input.as_array().unwrap().iter().rev().take(2).collect();
    assert_eq!(
        tail[0],
        &json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": "tc_1", "response": "3"}]})
    );
    assert_eq!(tail[1]["parts"][0]["type"], "tool_call");
    let output = json_attr(answer, "gen_ai.output.messages");
    assert_eq!(output[0]["parts"][0]["content"], "result was: 3");
    assert_eq!(output[0]["finish_reason"], "stop");
    // The agent's instructions are the system instructions, not an input message.
    let system = attr_s(answer, "gen_ai.system_instructions");
    assert!(system.contains("Count words when asked."), "{system}");
    assert!(
        input
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["role"] != "system")
    );
    eprintln!(
        "chat span {:?}\n  gen_ai.input.messages = {}\n  gen_ai.output.messages = {}",
        answer.name,
        attr_s(answer, "gen_ai.input.messages"),
        attr_s(answer, "gen_ai.output.messages")
    );
    h.assert_state_empty();
}

#[tokio::test]
async fn usage_only_on_chat_spans_and_no_model_on_the_intent_wrapper() {
    let h = Harness::new();
    tool_runner(&h).turn("use the tool", "usage").await.unwrap();
    let spans = h.spans();
    for span in &spans {
        let usage = span
            .attributes
            .iter()
            .any(|kv| kv.key.as_str().starts_with("gen_ai.usage."));
        assert_eq!(
            usage,
            span.name.starts_with("chat "),
            "{}: gen_ai.usage.* belongs on chat spans only (a backend summing spans would count it twice)",
            span.name
        );
    }
    // The agent span names its provider and model (the conventions require the provider on
    // an invoke_agent span, internal ones included), as its chat spans do.
    let turn = named(&spans, "agent.turn");
    let chat = chats(&spans)[0];
    assert_eq!(
        attr(turn, "gen_ai.provider.name"),
        attr(chat, "gen_ai.provider.name")
    );
    assert!(attr(turn, "gen_ai.provider.name").is_some());
    let wrapper = named(&spans, "agent.intent_classification");
    assert_eq!(attr(wrapper, "gen_ai.request.model"), None);
    assert_eq!(attr(wrapper, "gen_ai.operation.name"), None);
    // Every model call says why its answer ended, the classifier's (a typed call) included,
    // in the conventions' words (the ones its output message uses): a call that asked for a
    // tool ended with `tool_call`, the others with `stop` (not `tool_use`, `end_turn`).
    let mut reasons = Vec::new();
    for chat in chats(&spans) {
        match attr(chat, "gen_ai.response.finish_reasons") {
            Some(opentelemetry::Value::Array(opentelemetry::Array::String(r))) if r.len() == 1 => {
                reasons.push(r[0].as_str().to_string());
            }
            other => panic!(
                "{} ({}): no finish reason: {other:?}",
                chat.name,
                attr_s(chat, "kaos.purpose")
            ),
        }
    }
    assert!(reasons.iter().any(|r| r == "tool_call"), "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r == "tool_call" || r == "stop"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_small_cap_still_leaves_valid_messages() {
    let h = Harness::with(|hook| {
        hook.with_capture_content(CaptureContent::Full)
            .with_content_cap(300)
    });
    let schema = Schema::load();
    let long = format!("use the tool on {}", "word ".repeat(2_000));
    tool_runner(&h).turn(&long, "cap").await.unwrap();
    let spans = h.spans();
    let mut cut = 0;
    for chat in chats(&spans) {
        for (key, def) in [
            ("gen_ai.system_instructions", "SystemInstructions"),
            ("gen_ai.input.messages", "InputMessages"),
            ("gen_ai.output.messages", "OutputMessages"),
        ] {
            let text = attr_s(chat, key);
            assert!(text.len() <= 300, "{key}: {} bytes", text.len());
            let doc: Value = serde_json::from_str(&text).unwrap();
            schema
                .validate(def, &doc)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            cut += usize::from(text.contains("…[truncated]"));
        }
    }
    assert!(cut >= 3, "the long user message was cut on every chat span");
}

fn content_attrs(events: &[Event]) -> usize {
    events
        .iter()
        .filter_map(Event::span)
        .filter(|s| s.subject == SpanSubject::LlmCall)
        .map(|s| {
            [SYSTEM_INSTRUCTIONS, INPUT_MESSAGES, OUTPUT_MESSAGES]
                .iter()
                .filter(|k| s.attributes.contains_key(**k))
                .count()
        })
        .sum()
}

#[tokio::test]
async fn content_is_built_only_when_a_hook_captures_it() {
    let off = Harness::new();
    let events: Vec<Event> = tool_runner(&off)
        .run("use the tool", "off".to_string())
        .collect()
        .await;
    assert_eq!(
        content_attrs(&events),
        0,
        "capture off: no content in the events"
    );
    assert!(off.spans().iter().all(|s| {
        ["gen_ai.input.messages", "input.value", "output.value"]
            .iter()
            .all(|key| attr(s, key).is_none())
    }));
    let on = Harness::with(|hook| hook.with_capture_content(CaptureContent::Redacted));
    let events: Vec<Event> = tool_runner(&on)
        .run("use the tool", "on".to_string())
        .collect()
        .await;
    // Three calls: system instructions and input on each START, output on each end.
    assert_eq!(content_attrs(&events), 9);
}

/// How many times `key` is set on `span` (an SDK span keeps every set, duplicates included).
fn times_set(span: &SpanData, key: &str) -> usize {
    span.attributes
        .iter()
        .filter(|kv| kv.key.as_str() == key)
        .count()
}

#[tokio::test]
async fn a_retried_typed_call_shows_the_request_its_last_attempt_answered() {
    let h = Harness::with(|hook| hook.with_capture_content(CaptureContent::Full));
    let classifier_calls = Arc::new(AtomicUsize::new(0));
    let calls = classifier_calls.clone();
    let route = routing_model("wordcount", json!({"text": "a b c"}));
    let model = move |messages: &[Message], request: &LlmRequest| {
        // The classifier's first answer cannot be parsed: the typed call retries once.
        if is_classifier(messages) && calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return ProviderResponse::from_text("I would rather not say.").with_usage(80, 8);
        }
        route(messages, request)
    };
    let runtime = KaosRuntime::test_mode().with_client("fake", FunctionClient::new(model));
    let agent = Agent::builder()
        .name("tester")
        .instructions("Answer briefly.")
        .model("fake")
        .build()
        .unwrap();
    Runner::new(agent, runtime)
        .with_shared_hook(h.hook.clone())
        .turn("hello there", "retry")
        .await
        .unwrap();
    assert_eq!(classifier_calls.load(Ordering::SeqCst), 2);
    let spans = h.spans();
    let chats = chats(&spans);
    let classifier = chats
        .iter()
        .find(|s| attr_s(s, "kaos.purpose") == "intent_classification")
        .expect("the classifier's chat span");
    assert_eq!(
        attr(classifier, "kaos.attempts"),
        Some(opentelemetry::Value::I64(2))
    );
    // The input beside the (second) answer is what the second attempt was asked: the first
    // request, the rejected answer, and the request to answer again.
    let input = json_attr(classifier, "gen_ai.input.messages");
    let input = input.as_array().unwrap();
    assert!(input.len() >= 3, "{input:#?}");
    let rejected = &input[input.len() - 2];
    assert_eq!(rejected["role"], "assistant");
    assert_eq!(rejected["parts"][0]["content"], "I would rather not say.");
    assert_eq!(input[input.len() - 1]["role"], "user");
    assert_eq!(input[0]["role"], "user");
    let output = json_attr(classifier, "gen_ai.output.messages");
    assert!(
        output[0]["parts"][0]["content"]
            .as_str()
            .unwrap()
            .contains("\"intent\""),
        "{output:#}"
    );
    // Every content attribute once on every chat span: the replaced request is not left
    // beside the new one.
    let schema = Schema::load();
    for chat in &chats {
        for (key, def) in [
            ("gen_ai.system_instructions", "SystemInstructions"),
            ("gen_ai.input.messages", "InputMessages"),
            ("gen_ai.output.messages", "OutputMessages"),
        ] {
            assert_eq!(times_set(chat, key), 1, "{} {key}", chat.name);
            schema
                .validate(def, &json_attr(chat, key))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }
    h.assert_state_empty();
}

#[test]
fn a_model_call_cut_short_still_shows_its_request() {
    let h = Harness::with(|hook| hook.with_capture_content(CaptureContent::Full));
    let scope = h.scope("s-cut", "assistant");
    scope.start_span(SpanSubject::Turn, "turn.1", attrs! {"turn_number" => 1});
    let mut start = attrs! {"purpose" => "respond", "provider" => "function", "model" => "m"};
    message_parts::request_attributes(
        &[Message::system("Be brief."), Message::user("Hello there")],
        &mut start,
    );
    scope.start_span(SpanSubject::LlmCall, "llm_call.respond", start);
    // The process shuts down while the model is still answering.
    assert_eq!(h.hook.close_all("shutdown"), 2);
    let spans = h.spans();
    let chat = named(&spans, "chat m");
    assert_eq!(attr_s(chat, "kaos.cancel_reason"), "shutdown");
    assert!(attr_s(chat, "gen_ai.input.messages").contains("Hello there"));
    assert!(attr_s(chat, "gen_ai.system_instructions").contains("Be brief."));
    assert_eq!(times_set(chat, "gen_ai.input.messages"), 1);
    h.assert_state_empty();
}

fn tool_with_args(scope: &TurnScope, args: serde_json::Value, result: &str) {
    let (id, _) = scope.start_span(
        SpanSubject::ToolCall,
        "tool.echo",
        attrs! {"tool_name" => "echo", "call_id" => "c1", "arguments" => args, "permission" => "allow"},
    );
    scope.end_span(
        &id,
        SpanPhase::Complete,
        attrs! {"tool_name" => "echo", "call_id" => "c1", "is_error" => false, "result_summary" => result},
        None,
    );
}

#[test]
fn redacted_capture_goes_through_the_shared_redactor() {
    let h = Harness::with(|hook| hook.with_capture_content(CaptureContent::Redacted));
    let scope = h.scope("s-red", "assistant");
    let secret = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz";
    tool_with_args(
        &scope,
        json!({"password": "hunter2", "text": format!("my key is {secret}")}),
        &format!("echoed {secret}"),
    );
    let spans = h.spans();
    let t = named(&spans, "agent.tool_call.echo");
    let args = attr_s(t, "gen_ai.tool.call.arguments");
    let result = attr_s(t, "gen_ai.tool.call.result");
    for text in [&args, &result] {
        assert!(
            !text.contains("hunter2") && !text.contains(secret),
            "{text}"
        );
        assert!(text.contains("REDACTED"), "{text}");
    }
    let args: serde_json::Value = serde_json::from_str(&args).unwrap();
    assert!(args["text"].as_str().unwrap().starts_with("my key is "));
}

#[test]
fn captured_content_is_capped_and_still_json() {
    let h = Harness::with(|hook| {
        hook.with_capture_content(CaptureContent::Full)
            .with_content_cap(1024)
    });
    let scope = h.scope("s-cap", "assistant");
    tool_with_args(&scope, json!({"blob": "x".repeat(100_000), "n": 7}), "ok");
    let spans = h.spans();
    let args = attr_s(
        named(&spans, "agent.tool_call.echo"),
        "gen_ai.tool.call.arguments",
    );
    assert!(args.len() <= 1024, "{}", args.len());
    let v: serde_json::Value = serde_json::from_str(&args).unwrap();
    assert_eq!(v["n"], 7);
    assert!(v["blob"].as_str().unwrap().ends_with("[truncated]"));
}

#[test]
fn capture_mode_parses_env_values() {
    assert_eq!(CaptureContent::parse("full"), Some(CaptureContent::Full));
    assert_eq!(
        CaptureContent::parse("Redacted"),
        Some(CaptureContent::Redacted)
    );
    assert_eq!(CaptureContent::parse("none"), Some(CaptureContent::None));
    assert_eq!(CaptureContent::parse("maybe"), None);
}
