//! Typed structured calls: prompt layout, JSON decoding, corrective retries.

use kaos_llm::{
    FunctionClient, LlmError, LlmRequest, Message, ProviderResponse, RequestOptions, Role,
    Signature,
};
use serde_json::json;

/// How to handle the user's message.
#[derive(Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
struct Route {
    /// Why this intent was chosen.
    reasoning: String,
    /// What to do next: "respond" or "use_tool".
    intent: String,
    /// How sure the model is, from 0 to 1.
    #[serde(default)]
    confidence: Option<f64>,
}

fn signature() -> Signature<Route> {
    Signature::<Route>::new("Decide how to handle the user's message.")
        .input("message", "The user's latest message")
        .input("history", "Earlier turns")
}

const VALID: &str = r#"{"reasoning": "a greeting", "intent": "respond"}"#;

fn route() -> Route {
    Route {
        reasoning: "a greeting".into(),
        intent: "respond".into(),
        confidence: None,
    }
}

fn text(reply: &str, input: u64, output: u64) -> ProviderResponse {
    ProviderResponse::from_text(reply).with_usage(input, output)
}

#[test]
fn system_prompt_lists_fields_schema_and_the_json_rule() {
    let sig = signature();
    let prompt = sig.system_prompt();
    assert!(prompt.starts_with("Decide how to handle the user's message."));
    assert!(prompt.contains("## Output Format"));
    assert!(prompt.contains("Respond with a JSON object containing these fields:"));
    assert!(prompt.contains("- **intent**: What to do next: \"respond\" or \"use_tool\"."));
    assert!(prompt.contains("- **reasoning**: Why this intent was chosen."));
    assert!(prompt.contains("- **confidence**: How sure the model is, from 0 to 1. (optional)"));
    // Required fields first, in declaration order; then the optional ones.
    let reasoning = prompt.find("- **reasoning**").unwrap();
    let intent = prompt.find("- **intent**").unwrap();
    let confidence = prompt.find("- **confidence**").unwrap();
    assert!(reasoning < intent && intent < confidence);
    assert!(prompt.contains("## JSON Schema\n```json\n{"));
    // The schema itself, with its required list.
    let schema_text = format!("{:#}", sig.schema());
    assert!(prompt.contains(&schema_text));
    assert!(schema_text.contains("\"required\""));
    assert!(!schema_text.contains("$schema"));
    assert!(
        prompt
            .trim_end()
            .ends_with("Do not write anything before or after the JSON.")
    );
    assert!(prompt.contains("ONLY with valid JSON"));
}

#[test]
fn messages_are_system_then_user_with_one_line_per_input() {
    let sig = signature();
    let messages = sig.messages(&[("history", "none"), ("message", "hello there")]);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].role, Role::System);
    assert_eq!(messages[0].content, sig.system_prompt());
    assert_eq!(messages[1].role, Role::User);
    // Declared order, not the order given.
    assert_eq!(
        messages[1].content,
        "**message** (The user's latest message): hello there\n\n**history** (Earlier turns): none"
    );
}

#[test]
fn long_values_start_on_the_next_line_and_undeclared_inputs_follow() {
    let sig = signature();
    let long = "x".repeat(201);
    let messages = sig.messages(&[("message", &long), ("extra", "e")]);
    assert_eq!(
        messages[1].content,
        format!("**message** (The user's latest message):\n{long}\n\n**extra**: e")
    );
    let exactly_200 = "y".repeat(200);
    let messages = sig.messages(&[("message", &exactly_200)]);
    assert_eq!(
        messages[1].content,
        format!("**message** (The user's latest message): {exactly_200}")
    );
}

#[test]
fn few_shot_examples_are_user_assistant_pairs() {
    let sig = signature()
        .example(
            &[("message", "hi")],
            json!({"reasoning": "greeting", "intent": "respond"}),
        )
        .example(
            &[("message", "list files")],
            json!({"reasoning": "needs a tool", "intent": "use_tool"}),
        );
    let messages = sig.messages(&[("message", "what now?")]);
    let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::User,
            Role::Assistant,
            Role::User
        ]
    );
    assert_eq!(
        messages[1].content,
        "**message** (The user's latest message): hi"
    );
    let first: serde_json::Value = serde_json::from_str(&messages[2].content).unwrap();
    assert_eq!(first, json!({"reasoning": "greeting", "intent": "respond"}));
    assert_eq!(
        messages[3].content,
        "**message** (The user's latest message): list files"
    );
    assert!(messages[4].content.contains("use_tool"));
    assert_eq!(
        messages[5].content,
        "**message** (The user's latest message): what now?"
    );
}

#[test]
fn parses_plain_fenced_and_prose_wrapped_json() {
    let sig = signature();
    assert_eq!(sig.parse(VALID).unwrap(), route());
    assert_eq!(
        sig.parse(&format!("```json\n{VALID}\n```")).unwrap(),
        route()
    );
    assert_eq!(
        sig.parse(&format!("Sure, here it is:\n{VALID}\nHope that helps!"))
            .unwrap(),
        route()
    );
}

#[test]
fn parse_ignores_extra_keys_and_accepts_double_encoded_json() {
    let sig = signature();
    let extra = r#"{"reasoning": "a greeting", "intent": "respond", "mood": "cheerful"}"#;
    assert_eq!(sig.parse(extra).unwrap(), route());
    let double = serde_json::to_string(VALID).unwrap();
    assert_eq!(sig.parse(&double).unwrap(), route());
    let with_conf = r#"{"reasoning": "r", "intent": "respond", "confidence": 0.5}"#;
    assert_eq!(sig.parse(with_conf).unwrap().confidence, Some(0.5));
}

#[test]
fn parse_errors_are_readable() {
    let sig = signature();
    let missing = sig.parse(r#"{"reasoning": "no intent"}"#).unwrap_err();
    assert!(missing.contains("missing field `intent`"), "{missing}");
    let garbage = sig.parse("I'd rather not.").unwrap_err();
    assert!(garbage.contains("no JSON value found"), "{garbage}");
    let wrong_type = sig
        .parse(r#"{"reasoning": 3, "intent": "respond"}"#)
        .unwrap_err();
    assert!(wrong_type.contains("invalid type"), "{wrong_type}");
}

#[tokio::test]
async fn valid_answer_takes_one_attempt() {
    let client = FunctionClient::scripted([text(VALID, 100, 20)]);
    let outcome = signature()
        .call(&client, &[("message", "hi")], &RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome.value, route());
    assert_eq!(outcome.attempts, 1);
    assert_eq!(outcome.usage.input_tokens, 100);
    assert_eq!(outcome.usage.output_tokens, 20);
    assert_eq!(outcome.provider, "function");
    assert_eq!(outcome.model, "function-test");
    assert_eq!(outcome.raw_text, VALID);
    // The fake model has no price: unknown, not zero.
    assert_eq!(outcome.cost_usd, None);
    assert_eq!(client.call_count(), 1);
}

#[tokio::test]
async fn request_carries_the_options_and_no_tools() {
    let client = FunctionClient::scripted([text(VALID, 1, 1)]);
    let options = RequestOptions {
        max_tokens: Some(321),
        temperature: Some(0.0),
        ..RequestOptions::default()
    };
    let outcome = signature()
        .call(&client, &[("message", "hi")], &options)
        .await
        .unwrap();
    assert!(
        outcome.corrections.is_empty(),
        "a valid first answer needs none"
    );
    let requests = client.requests();
    assert_eq!(requests[0].options, options);
    assert!(requests[0].tools.is_empty());
    assert_eq!(requests[0].messages.len(), 2);
}

#[tokio::test]
async fn garbage_then_valid_retries_once_quoting_the_error() {
    let client = FunctionClient::scripted([text("no idea", 100, 10), text(VALID, 150, 20)]);
    let outcome = signature()
        .call(&client, &[("message", "hi")], &RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome.value, route());
    assert_eq!(outcome.attempts, 2);
    assert_eq!(outcome.usage.input_tokens, 250);
    assert_eq!(outcome.usage.output_tokens, 30);
    assert_eq!(outcome.usage.total_tokens, 280);

    let requests = client.requests();
    assert_eq!(requests.len(), 2);
    let second = &requests[1].messages;
    assert_eq!(second.len(), 4);
    assert_eq!(second[2].role, Role::Assistant);
    assert_eq!(second[2].content, "no idea");
    assert_eq!(second[3].role, Role::User);
    assert!(
        second[3]
            .content
            .contains("Your previous response could not be parsed"),
        "{}",
        second[3].content
    );
    assert!(
        second[3].content.contains("no JSON value found"),
        "{}",
        second[3].content
    );
    assert!(second[3].content.contains("format exactly"));
    // The outcome says what the retry added: the last request is the signature's messages
    // followed by these.
    assert_eq!(outcome.corrections.len(), 2);
    assert_eq!(outcome.corrections[0].content, second[2].content);
    assert_eq!(outcome.corrections[1].content, second[3].content);
    assert_eq!(
        signature().messages(&[("message", "hi")]).len() + outcome.corrections.len(),
        second.len()
    );
}

#[tokio::test]
async fn missing_field_retry_quotes_the_field() {
    let client = FunctionClient::scripted([
        text(r#"{"reasoning": "forgot"}"#, 10, 1),
        text(VALID, 10, 1),
    ]);
    let outcome = signature()
        .call(&client, &[("message", "hi")], &RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome.attempts, 2);
    let requests = client.requests();
    assert!(
        requests[1].messages[3]
            .content
            .contains("missing field `intent`")
    );
}

#[tokio::test]
async fn garbage_twice_is_invalid_output_with_summed_usage() {
    let client = FunctionClient::scripted([text("nope", 100, 10), text("still nope", 120, 12)]);
    let err = signature()
        .call(&client, &[("message", "hi")], &RequestOptions::default())
        .await
        .unwrap_err();
    match err {
        LlmError::InvalidOutput {
            attempts,
            message,
            raw,
            usage,
        } => {
            assert_eq!(attempts, 2);
            assert!(message.contains("no JSON value found"), "{message}");
            assert_eq!(raw, "still nope");
            assert_eq!(usage.input_tokens, 220);
            assert_eq!(usage.output_tokens, 22);
        }
        other => panic!("expected InvalidOutput, got {other:?}"),
    }
    assert_eq!(client.call_count(), 2);
}

#[tokio::test]
async fn max_retries_is_respected() {
    let client = FunctionClient::new(|_: &[Message], _: &LlmRequest| text("nope", 1, 1));
    let err = signature()
        .max_retries(3)
        .call(&client, &[("message", "hi")], &RequestOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::InvalidOutput { attempts: 4, .. }));
    assert_eq!(client.call_count(), 4);

    let client = FunctionClient::new(|_: &[Message], _: &LlmRequest| text("nope", 1, 1));
    let err = signature()
        .max_retries(0)
        .call(&client, &[("message", "hi")], &RequestOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::InvalidOutput { attempts: 1, .. }));
    assert_eq!(client.call_count(), 1);
}

#[tokio::test]
async fn provider_errors_are_returned_without_retry() {
    let client = FunctionClient::scripted([
        Err(LlmError::Auth {
            provider: "anthropic".into(),
            status: 401,
            message: "invalid x-api-key".into(),
        }),
        Ok(text(VALID, 1, 1)),
    ]);
    let err = signature()
        .call(&client, &[("message", "hi")], &RequestOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Auth { status: 401, .. }), "{err:?}");
    assert_eq!(client.call_count(), 1);
}

#[tokio::test]
async fn priced_models_report_cost_summed_over_attempts() {
    let priced = |reply: &str| {
        let mut r = text(reply, 1_000_000, 100_000);
        r.model = "gpt-4o-mini".into();
        r.provider = "openai".into();
        r.response_id = Some(format!("resp-{}", reply.len()));
        r
    };
    let client = FunctionClient::scripted([priced("garbage"), priced(VALID)]);
    let outcome = signature()
        .call(&client, &[("message", "hi")], &RequestOptions::default())
        .await
        .unwrap();
    // Each attempt: 1M input at 0.15 + 100k output at 0.60 = 0.21.
    let cost = outcome.cost_usd.unwrap();
    assert!((cost - 0.42).abs() < 1e-9, "{cost}");
    assert_eq!(outcome.model, "gpt-4o-mini");
    assert_eq!(outcome.provider, "openai");
    assert_eq!(outcome.response_id, Some(format!("resp-{}", VALID.len())));
}

#[test]
fn signature_is_send_sync_and_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Signature<Route>>();
}

/// A nested, enum-valued output: descriptions of referenced types are used.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Pass,
    Fail,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Review {
    verdict: Verdict,
    /// Problems found.
    issues: Vec<String>,
}

#[test]
fn nested_types_are_listed_and_decoded() {
    let sig = Signature::<Review>::new("Review the patch.");
    let prompt = sig.system_prompt();
    assert!(prompt.contains("- **verdict**:"), "{prompt}");
    assert!(prompt.contains("- **issues**: Problems found."));
    let review = sig
        .parse(r#"{"verdict": "fail", "issues": ["typo"]}"#)
        .unwrap();
    assert!(matches!(review.verdict, Verdict::Fail));
    assert_eq!(review.issues, ["typo"]);
    assert!(sig.parse(r#"{"verdict": "FAIL", "issues": []}"#).is_err());
}

mod streaming {
    use kaos_llm::structured::Signature;
    use kaos_llm::structured_stream::TypedStreamUpdate;
    use kaos_llm::{Chunking, FunctionClient, LlmError, ProviderResponse, RequestOptions};

    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    struct Reply {
        /// The reply.
        response: String,
        /// A count.
        n: u32,
    }

    /// What the updates said, in order: `F:` field text, `R:` a retry.
    async fn run(
        client: &FunctionClient,
        signature: &Signature<Reply>,
    ) -> (Result<u32, LlmError>, Vec<String>) {
        let mut log: Vec<String> = Vec::new();
        let result = signature
            .call_streaming(
                client,
                &[],
                &RequestOptions::default(),
                "response",
                &mut |u| match u {
                    TypedStreamUpdate::Field(t) => match log.last_mut() {
                        Some(last) if last.starts_with("F:") => last.push_str(t),
                        _ => log.push(format!("F:{t}")),
                    },
                    TypedStreamUpdate::Retry { attempt, .. } => log.push(format!("R:{attempt}")),
                    TypedStreamUpdate::Event(_) => {}
                },
            )
            .await
            .map(|o| {
                assert!(!o.value.response.is_empty());
                // Each retry added the rejected answer and the request to answer again.
                assert_eq!(o.corrections.len(), 2 * (o.attempts as usize - 1));
                o.value.n
            });
        (result, log)
    }

    #[tokio::test]
    async fn a_broken_object_after_streaming_is_retried_and_the_retry_announced() {
        let client = FunctionClient::scripted([
            ProviderResponse::from_text(r#"{"response": "first \"try\"", "n": "oops"}"#),
            ProviderResponse::from_text(r#"{"response": "second", "n": 2}"#),
        ])
        .with_chunking(Chunking::chars(2));
        let (result, log) = run(&client, &Signature::new("Reply.")).await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(log, ["F:first \"try\"", "R:2", "F:second"]);
    }

    #[tokio::test]
    async fn plain_prose_skips_the_retry_when_asked() {
        let client = FunctionClient::scripted([ProviderResponse::from_text("just prose")])
            .with_chunking(Chunking::chars(2));
        let signature = Signature::new("Reply.").plain_text_fallback(true);
        let (result, log) = run(&client, &signature).await;
        assert!(
            matches!(result, Err(LlmError::InvalidOutput { attempts: 1, ref raw, .. }) if raw == "just prose")
        );
        assert!(log.is_empty());
    }
}
