//! API keys never show up in Debug, Display or errors, even when a server echoes them.

use kaos_llm::retry::RetryPolicy;
use kaos_llm::{AnthropicClient, LlmClient, LlmError, LlmRequest, Message, OpenAiClient};
use serde_json::json;

use crate::util::{Reply, TestServer, collect_stream, recording_policy};

const ANTHROPIC_CANARY: &str = "sk-ant-CANARY-0123456789abcdef";
const OPENAI_CANARY: &str = "sk-proj-CANARY-fedcba9876543210";

fn request() -> LlmRequest {
    LlmRequest::new(vec![Message::user("x")])
}

fn assert_clean(text: &str) {
    assert!(!text.contains("CANARY"), "a key leaked into: {text}");
}

fn assert_error_clean(err: &LlmError) {
    assert_clean(&err.to_string());
    assert_clean(&format!("{err:?}"));
}

#[test]
fn clients_never_print_their_keys() {
    let anthropic = AnthropicClient::new("claude-haiku-4-5", ANTHROPIC_CANARY);
    let openai = OpenAiClient::new("gpt-4o-mini", OPENAI_CANARY);
    let compatible =
        OpenAiClient::compatible("llama3", "http://127.0.0.1:1/v1").with_api_key(OPENAI_CANARY);
    for text in [
        format!("{anthropic:?}"),
        format!("{anthropic:#?}"),
        anthropic.to_string(),
        format!("{openai:?}"),
        format!("{openai:#?}"),
        openai.to_string(),
        format!("{compatible:?}"),
        compatible.to_string(),
    ] {
        assert_clean(&text);
    }
    assert!(format!("{anthropic:?}").contains("REDACTED"));
}

#[test]
fn keys_from_the_environment_are_not_printed_either() {
    let client = AnthropicClient::from_lookup("claude-haiku-4-5", |name| {
        (name == "ANTHROPIC_API_KEY").then(|| ANTHROPIC_CANARY.to_owned())
    })
    .unwrap();
    assert_clean(&format!("{client:?}"));
}

/// Error bodies that quote the key back, as some proxies and providers do.
fn echoing_replies(key: &str) -> Vec<(Reply, &'static str)> {
    vec![
        (
            Reply::json(
                401,
                json!({"error": {"message": format!("Incorrect API key provided: {key}")}}),
            ),
            "auth",
        ),
        (
            Reply::json(
                400,
                json!({"error": {"message": format!("bad request for key {key}")}}),
            ),
            "provider",
        ),
        (
            Reply::text(200, &format!("<html>key={key}</html>")),
            "decode",
        ),
        (
            Reply::text(502, &format!("upstream rejected {key}")),
            "plain-body",
        ),
    ]
}

#[tokio::test]
async fn errors_from_servers_that_echo_the_anthropic_key_are_scrubbed() {
    for (reply, what) in echoing_replies(ANTHROPIC_CANARY) {
        let server = TestServer::start(vec![reply]).await;
        let client = AnthropicClient::new("claude-haiku-4-5", ANTHROPIC_CANARY)
            .with_base_url(server.url())
            .with_retry(RetryPolicy::none());
        let err = client.complete(&request()).await.unwrap_err();
        assert_error_clean(&err);
        assert!(err.to_string().contains("[REDACTED]"), "{what}: {err}");
        for event in collect_stream(&client, &request()).await {
            if let Err(err) = event {
                assert_error_clean(&err);
            }
        }
        // The key did travel, in its header only.
        assert_eq!(
            server.requests()[0].header("x-api-key"),
            Some(ANTHROPIC_CANARY)
        );
    }
}

#[tokio::test]
async fn errors_from_servers_that_echo_the_openai_key_are_scrubbed() {
    for (reply, what) in echoing_replies(OPENAI_CANARY) {
        let server = TestServer::start(vec![reply]).await;
        let client = OpenAiClient::new("gpt-4o-mini", OPENAI_CANARY)
            .with_base_url(server.url())
            .with_retry(RetryPolicy::none());
        let err = client.complete(&request()).await.unwrap_err();
        assert_error_clean(&err);
        assert!(err.to_string().contains("[REDACTED]"), "{what}: {err}");
    }
}

#[tokio::test]
async fn exhausted_retries_do_not_leak_the_key() {
    let server = TestServer::start(vec![Reply::text(
        503,
        &format!("no capacity for {OPENAI_CANARY}"),
    )])
    .await;
    let (policy, _) = recording_policy(2);
    let client = OpenAiClient::new("gpt-4o-mini", OPENAI_CANARY)
        .with_base_url(server.url())
        .with_retry(policy);
    let err = client.complete(&request()).await.unwrap_err();
    assert!(matches!(err, LlmError::RetryExhausted { .. }), "{err:?}");
    assert_error_clean(&err);
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn transport_errors_do_not_leak_the_key() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = AnthropicClient::new("m", ANTHROPIC_CANARY)
        .with_base_url(url)
        .with_retry(RetryPolicy::none());
    let err = client.complete(&request()).await.unwrap_err();
    assert!(matches!(err, LlmError::Transport { .. }), "{err:?}");
    assert_error_clean(&err);
}
