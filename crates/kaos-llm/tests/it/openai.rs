//! OpenAiClient (and OpenAI-compatible servers) against the local test server.

use kaos_llm::providers::create_client_with;
use kaos_llm::retry::RetryPolicy;
use kaos_llm::{
    LlmClient, LlmError, LlmRequest, Message, OpenAiClient, RequestOptions, StopReason,
    StreamEvent, ToolCall, ToolChoice, ToolDefinition,
};
use serde_json::{Value, json};

use crate::util::{Reply, TestServer, collect_stream, sse_data};

fn client(server: &TestServer) -> OpenAiClient {
    OpenAiClient::new("gpt-4o-mini", "sk-test")
        .with_base_url(format!("{}/v1", server.url()))
        .with_retry(RetryPolicy::none())
}

fn lookup_tool() -> ToolDefinition {
    ToolDefinition {
        name: "lookup".into(),
        description: "Look something up".into(),
        parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
    }
}

fn text_answer() -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127,
                  "prompt_tokens_details": {"cached_tokens": 100}}
    })
}

#[tokio::test]
async fn sends_the_chat_completions_shape_and_reads_a_text_answer() {
    let server = TestServer::start(vec![Reply::json(200, text_answer())]).await;
    let request = LlmRequest::new(vec![Message::system("Be brief."), Message::user("Hi")])
        .with_tools(vec![lookup_tool()])
        .with_tool_choice(ToolChoice::Auto)
        .with_options(RequestOptions {
            max_tokens: Some(50),
            ..RequestOptions::default()
        });
    let answer = client(&server).complete(&request).await.unwrap();

    let sent = server.single_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-test"));
    let body = sent.json();
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["stream"], false);
    assert!(body.get("stream_options").is_none());
    assert_eq!(body["max_completion_tokens"], 50);
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    );
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {"name": "lookup", "description": "Look something up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}])
    );
    assert_eq!(body["tool_choice"], "auto");

    assert_eq!(answer.provider, "openai");
    assert_eq!(answer.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(answer.text(), "Hello!");
    assert_eq!(answer.stop_reason, Some(StopReason::EndTurn));
    assert_eq!(answer.response_id.as_deref(), Some("chatcmpl-1"));
    assert_eq!(
        answer.usage.input_tokens, 120,
        "prompt_tokens already include cached ones"
    );
    assert_eq!(answer.usage.cache_read_tokens, 100);
    assert_eq!(answer.usage.output_tokens, 7);
    assert_eq!(answer.usage.total_tokens, 127);
    assert!(answer.latency > std::time::Duration::ZERO);
}

#[tokio::test]
async fn reads_tool_calls_and_keeps_invalid_arguments_as_a_string() {
    let server = TestServer::start(vec![Reply::json(
        200,
        json!({
            "id": "chatcmpl-2", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"rust\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": "{not json"}}
                ]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3}
        }),
    )])
    .await;
    let request = LlmRequest::new(vec![Message::user("Find rust")])
        .with_tools(vec![lookup_tool()])
        .with_tool_choice(ToolChoice::Tool {
            name: "lookup".into(),
        });
    let answer = client(&server).complete(&request).await.unwrap();
    assert_eq!(
        server.single_request().json()["tool_choice"],
        json!({"type": "function", "function": {"name": "lookup"}})
    );
    assert_eq!(
        answer.tool_calls(),
        vec![
            &ToolCall::new("call_1", "lookup", json!({"q": "rust"})),
            &ToolCall::new("call_2", "lookup", json!("{not json")),
        ]
    );
    assert_eq!(answer.text(), "");
    assert_eq!(answer.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(answer.usage.total_tokens, 13);
}

#[tokio::test]
async fn finish_reasons_map_to_stop_reasons() {
    for (finish, expected) in [
        ("length", StopReason::MaxTokens),
        ("content_filter", StopReason::ContentFilter),
        ("weird", StopReason::Other("weird".into())),
    ] {
        let server = TestServer::start(vec![Reply::json(
            200,
            json!({"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}),
        )])
        .await;
        let answer = client(&server)
            .complete(&LlmRequest::new(vec![Message::user("x")]))
            .await
            .unwrap();
        assert_eq!(answer.stop_reason, Some(expected));
        assert_eq!(
            answer.model, "gpt-4o-mini",
            "falls back to the client's model"
        );
    }
}

#[tokio::test]
async fn tool_results_round_trip_as_tool_messages() {
    let server = TestServer::start(vec![Reply::json(200, text_answer())]).await;
    let request = LlmRequest::new(vec![
        Message::user("Find rust"),
        Message::assistant_with_tools(
            "",
            vec![ToolCall::new("call_1", "lookup", json!({"q": "rust"}))],
        ),
        Message::tool_result("call_1", "Rust is a language.", false),
    ])
    .with_tools(vec![lookup_tool()]);
    client(&server).complete(&request).await.unwrap();
    assert_eq!(
        server.single_request().json()["messages"],
        json!([
            {"role": "user", "content": "Find rust"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"rust\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Rust is a language."}
        ])
    );
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    sse_data(
        &json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string(),
    )
}

fn stream_script() -> Vec<String> {
    vec![
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Let me "}), None),
        chunk(json!({"content": "look."}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_7", "type": "function",
                "function": {"name": "lookup", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\":"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"rust\"}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        sse_data(
            &json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                    "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9,
                    "total_tokens": 29, "prompt_tokens_details": {"cached_tokens": 4}}})
            .to_string(),
        ),
        sse_data("[DONE]"),
    ]
}

#[tokio::test]
async fn streams_text_tool_call_and_usage_then_done() {
    let server = TestServer::start(vec![Reply::sse(&stream_script())]).await;
    let client = client(&server);
    let request = LlmRequest::new(vec![Message::user("Find rust")]).with_tools(vec![lookup_tool()]);
    let events: Vec<StreamEvent> = collect_stream(&client, &request)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let body = server.single_request().json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));

    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Let me look.");
    assert!(events.contains(&StreamEvent::ToolCallDelta {
        index: 0,
        id: Some("call_7".into()),
        name: Some("lookup".into()),
        arguments_delta: String::new(),
    }));
    let args: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallDelta {
                arguments_delta, ..
            } => Some(arguments_delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(args, "{\"q\":\"rust\"}");
    assert!(events.iter().any(
        |e| matches!(e, StreamEvent::Usage(u) if u.input_tokens == 20 && u.cache_read_tokens == 4)
    ));
    let Some(StreamEvent::Done(done)) = events.last() else {
        panic!("last event must be Done: {events:?}");
    };
    assert_eq!(done.text(), "Let me look.");
    assert_eq!(
        done.tool_calls(),
        vec![&ToolCall::new("call_7", "lookup", json!({"q": "rust"}))]
    );
    assert_eq!(done.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(done.usage.total_tokens, 29);
    assert_eq!(done.response_id.as_deref(), Some("chatcmpl-s"));
}

#[tokio::test]
async fn a_stream_without_done_marker_still_finishes_once_a_finish_reason_arrived() {
    let server = TestServer::start(vec![Reply::sse(&[
        chunk(json!({"content": "hi"}), None),
        chunk(json!({}), Some("stop")),
    ])])
    .await;
    let events = collect_stream(&client(&server), &LlmRequest::new(vec![Message::user("x")])).await;
    match events.last() {
        Some(Ok(StreamEvent::Done(done))) => assert_eq!(done.text(), "hi"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn compatible_servers_get_no_key_and_the_classic_max_tokens() {
    let server = TestServer::start(vec![Reply::json(
        200,
        json!({"choices": [{"message": {"content": "ollama says hi", "reasoning": "hmm"},
               "finish_reason": "stop"}]}),
    )])
    .await;
    let client = OpenAiClient::compatible("llama3", format!("{}/v1/", server.url()))
        .with_retry(RetryPolicy::none());
    assert_eq!(client.provider(), "openai-compatible");
    assert_eq!(
        client.to_string(),
        format!("openai-compatible:llama3@{}/v1", server.url())
    );
    let request = LlmRequest::new(vec![Message::user("hi")]).with_options(RequestOptions {
        max_tokens: Some(64),
        ..RequestOptions::default()
    });
    let answer = client.complete(&request).await.unwrap();
    let sent = server.single_request();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(sent.json()["max_tokens"], 64);
    assert_eq!(answer.provider, "openai-compatible");
    assert_eq!(answer.model, "llama3");
    assert_eq!(answer.text(), "ollama says hi");
    assert_eq!(answer.thinking(), "hmm");
}

#[tokio::test]
async fn compatible_spec_reads_only_its_own_optional_key() {
    let server = TestServer::start(vec![Reply::json(200, text_answer())]).await;
    let spec = format!("openai-compatible:llama3@{}/v1", server.url());
    let client = create_client_with(&spec, |name| match name {
        "OPENAI_API_KEY" => Some("sk-real-openai-key".into()),
        "OPENAI_COMPATIBLE_API_KEY" => Some("local-key".into()),
        _ => None,
    })
    .unwrap();
    client
        .complete(&LlmRequest::new(vec![Message::user("x")]))
        .await
        .unwrap();
    assert_eq!(
        server.single_request().header("authorization"),
        Some("Bearer local-key")
    );
}

#[tokio::test]
async fn error_bodies_keep_status_and_message() {
    let server = TestServer::start(vec![Reply::json(
        404,
        json!({"error": {"message": "The model `gpt-9` does not exist", "type": "invalid_request_error",
               "code": "model_not_found"}}),
    )])
    .await;
    let err = client(&server)
        .complete(&LlmRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::Provider { status: 404, message, provider, .. }
            if message == "The model `gpt-9` does not exist" && provider == "openai"),
        "{err:?}"
    );
}

#[tokio::test]
async fn forbidden_is_an_auth_error() {
    let server = TestServer::start(vec![Reply::json(
        403,
        json!({"error": {"message": "Project does not have access"}}),
    )])
    .await;
    let err = client(&server)
        .complete(&LlmRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Auth { status: 403, .. }), "{err:?}");
}

#[tokio::test]
async fn a_garbage_body_is_a_decode_error_naming_provider_and_status() {
    let server = TestServer::start(vec![Reply::text(200, "{\"truncated\": ")]).await;
    let err = client(&server)
        .complete(&LlmRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, LlmError::Decode { status: 200, .. }),
        "{err:?}"
    );
    assert!(text.contains("openai") && text.contains("200"), "{text}");
}

#[tokio::test]
async fn env_config_names_the_missing_variable_and_reads_the_base_url() {
    let err = OpenAiClient::from_lookup("gpt-4o-mini", |_| None).unwrap_err();
    assert!(
        matches!(&err, LlmError::Config(m) if m.contains("OPENAI_API_KEY")),
        "{err:?}"
    );

    let server = TestServer::start(vec![Reply::json(200, text_answer())]).await;
    let base = format!("{}/v1", server.url());
    let client = create_client_with("gpt-4o-mini", |name| match name {
        "OPENAI_API_KEY" => Some("sk-env".into()),
        "OPENAI_BASE_URL" => Some(base.clone()),
        _ => None,
    })
    .unwrap();
    assert_eq!(client.provider(), "openai");
    client
        .complete(&LlmRequest::new(vec![Message::user("x")]))
        .await
        .unwrap();
    let sent = server.single_request();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-env"));
}

/// Live-key test: talks to the real provider, so it is ignored offline and in CI.
/// Run with `OPENAI_API_KEY=... cargo test -p kaos-llm -- --ignored live_`.
#[tokio::test]
#[ignore = "live-key test: needs OPENAI_API_KEY and the network"]
async fn live_openai_answers() {
    let client = OpenAiClient::from_env("gpt-4o-mini").unwrap();
    let request = LlmRequest::new(vec![Message::user("Say hi in one word.")]);
    let answer = client.complete(&request).await.unwrap();
    assert!(!answer.text().is_empty());
    let events = collect_stream(&client, &request).await;
    assert!(matches!(events.last(), Some(Ok(StreamEvent::Done(_)))));
}
