//! AnthropicClient against the local test server.

use kaos_llm::providers::create_client_with;
use kaos_llm::retry::RetryPolicy;
use kaos_llm::{
    AnthropicClient, ContentPart, LlmClient, LlmError, LlmRequest, Message, RequestOptions,
    StopReason, StreamEvent, ToolCall, ToolChoice, ToolDefinition,
};
use serde_json::json;

use crate::util::{Reply, TestServer, collect_stream, sse_event};

fn client(server: &TestServer) -> AnthropicClient {
    AnthropicClient::new("claude-haiku-4-5", "sk-ant-test")
        .with_base_url(server.url())
        .with_retry(RetryPolicy::none())
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "get_weather".into(),
        description: "Weather for a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }
}

fn text_answer() -> serde_json::Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 5,
                  "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}
    })
}

#[tokio::test]
async fn sends_the_messages_api_shape_and_reads_a_text_answer() {
    let server = TestServer::start(vec![Reply::json(200, text_answer())]).await;
    let request = LlmRequest::new(vec![Message::system("Be brief."), Message::user("Hi")])
        .with_tools(vec![weather_tool()])
        .with_tool_choice(ToolChoice::Required);

    let answer = client(&server).complete(&request).await.unwrap();

    let sent = server.single_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None);
    let body = sent.json();
    assert_eq!(body["model"], "claude-haiku-4-5");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["system"], "Be brief.");
    assert_eq!(body["stream"], false);
    assert_eq!(body["messages"], json!([{"role": "user", "content": "Hi"}]));
    assert_eq!(
        body["tools"],
        json!([{"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
    );
    assert_eq!(body["tool_choice"], json!({"type": "any"}));

    assert_eq!(answer.provider, "anthropic");
    assert_eq!(answer.model, "claude-haiku-4-5-20251001");
    assert_eq!(answer.text(), "Hello!");
    assert_eq!(answer.stop_reason, Some(StopReason::EndTurn));
    assert_eq!(answer.response_id.as_deref(), Some("msg_01"));
    assert_eq!(
        answer.usage.input_tokens, 130,
        "input includes cached tokens"
    );
    assert_eq!(answer.usage.output_tokens, 5);
    assert_eq!(answer.usage.total_tokens, 135);
    assert_eq!(answer.usage.cache_read_tokens, 100);
    assert_eq!(answer.usage.cache_write_tokens, 20);
    assert!(answer.latency > std::time::Duration::ZERO);
}

#[tokio::test]
async fn options_map_to_max_tokens_temperature_and_stop_sequences() {
    let server = TestServer::start(vec![Reply::json(200, text_answer())]).await;
    let request = LlmRequest::new(vec![Message::user("Hi")]).with_options(RequestOptions {
        max_tokens: Some(100),
        temperature: Some(0.5),
        stop: vec!["END".into()],
        timeout: None,
    });
    client(&server).complete(&request).await.unwrap();
    let body = server.single_request().json();
    assert_eq!(body["max_tokens"], 100);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["stop_sequences"], json!(["END"]));
    assert!(body.get("system").is_none());
    assert!(body.get("tools").is_none());
}

#[tokio::test]
async fn reads_tool_calls_and_thinking() {
    let server = TestServer::start(vec![Reply::json(
        200,
        json!({
            "id": "msg_02", "model": "claude-haiku-4-5",
            "content": [
                {"type": "thinking", "thinking": "Need weather.", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "server_tool_use_of_the_future", "id": "x"}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 3, "output_tokens": 4}
        }),
    )])
    .await;
    let request = LlmRequest::new(vec![Message::user("Weather in Paris?")])
        .with_tools(vec![weather_tool()])
        .with_tool_choice(ToolChoice::Tool {
            name: "get_weather".into(),
        });
    let answer = client(&server).complete(&request).await.unwrap();
    assert_eq!(
        server.single_request().json()["tool_choice"],
        json!({"type": "tool", "name": "get_weather"})
    );
    assert_eq!(answer.thinking(), "Need weather.");
    assert_eq!(answer.text(), "Checking.");
    assert_eq!(
        answer.tool_calls(),
        vec![&ToolCall::new(
            "toolu_1",
            "get_weather",
            json!({"city": "Paris"})
        )]
    );
    assert_eq!(answer.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(answer.usage.input_tokens, 3);
}

#[tokio::test]
async fn tool_results_round_trip_as_one_user_message_of_tool_result_blocks() {
    let server = TestServer::start(vec![Reply::json(200, text_answer())]).await;
    let request = LlmRequest::new(vec![
        Message::system("sys"),
        Message::user("Weather in Paris and Rome?"),
        Message::assistant_with_tools(
            "Let me check.",
            vec![
                ToolCall::new("toolu_1", "get_weather", json!({"city": "Paris"})),
                ToolCall::new("toolu_2", "get_weather", json!({"city": "Rome"})),
            ],
        ),
        Message::tool_result("toolu_1", "sunny", false),
        Message::tool_result("toolu_2", "city not found", true),
        Message::user("Answer briefly."),
    ])
    .with_tools(vec![weather_tool()]);
    client(&server).complete(&request).await.unwrap();
    let body = server.single_request().json();
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "city not found", "is_error": true},
                {"type": "text", "text": "Answer briefly."}
            ]}
        ])
    );
    assert!(body.get("tool_choice").is_none());
}

fn stream_script() -> Vec<String> {
    vec![
        sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "msg_s", "type": "message",
                "role": "assistant", "model": "claude-haiku-4-5", "content": [],
                "stop_reason": null, "usage": {"input_tokens": 25, "output_tokens": 1,
                "cache_read_input_tokens": 5}}}),
        ),
        sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        "event: ping\ndata: {\"type\": \"ping\"}\n\n".into(),
        sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
        ),
        sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
        ),
        sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ),
        sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use",
                "id": "toolu_9", "name": "get_weather", "input": {}}}),
        ),
        sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
        ),
        sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
        ),
        sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 1}),
        ),
        sse_event(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": 42}}),
        ),
        sse_event("message_stop", &json!({"type": "message_stop"})),
    ]
}

#[tokio::test]
async fn streams_text_tool_call_and_usage_then_done() {
    let server = TestServer::start(vec![Reply::sse(&stream_script())]).await;
    let client = client(&server);
    let request = LlmRequest::new(vec![Message::user("Weather?")]).with_tools(vec![weather_tool()]);
    let events: Vec<StreamEvent> = collect_stream(&client, &request)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    assert_eq!(server.single_request().json()["stream"], true);
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Let me check.");
    let args: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments_delta,
                ..
            } => Some(arguments_delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(args, "{\"city\": \"Paris\"}");
    assert!(events.contains(&StreamEvent::ToolCallDelta {
        index: 0,
        id: Some("toolu_9".into()),
        name: Some("get_weather".into()),
        arguments_delta: String::new(),
    }));
    let usage = events.iter().find_map(|e| match e {
        StreamEvent::Usage(u) => Some(*u),
        _ => None,
    });
    assert_eq!(
        usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((30, 42))
    );

    let Some(StreamEvent::Done(done)) = events.last() else {
        panic!("last event must be Done: {events:?}");
    };
    assert_eq!(done.provider, "anthropic");
    assert_eq!(done.response_id.as_deref(), Some("msg_s"));
    assert_eq!(done.text(), "Let me check.");
    assert_eq!(
        done.tool_calls(),
        vec![&ToolCall::new(
            "toolu_9",
            "get_weather",
            json!({"city": "Paris"})
        )]
    );
    assert_eq!(done.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(done.usage.input_tokens, 30);
    assert_eq!(done.usage.cache_read_tokens, 5);
    assert_eq!(done.usage.output_tokens, 42);
    assert!(matches!(done.parts[0], ContentPart::Text { .. }));
}

#[tokio::test]
async fn a_stream_error_event_is_a_typed_provider_error() {
    let server = TestServer::start(vec![Reply::sse(&[sse_event(
        "error",
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )])])
    .await;
    let events = collect_stream(&client(&server), &LlmRequest::new(vec![Message::user("x")])).await;
    match events.as_slice() {
        [
            Err(LlmError::Provider {
                status: 529,
                message,
                ..
            }),
        ] => {
            assert!(message.contains("Overloaded"))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn error_bodies_keep_status_and_message() {
    let server = TestServer::start(vec![Reply::json(
        400,
        json!({"type": "error", "error": {"type": "invalid_request_error",
               "message": "messages: roles must alternate"}}),
    )])
    .await;
    let err = client(&server)
        .complete(&LlmRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    match &err {
        LlmError::Provider {
            provider,
            status,
            message,
            ..
        } => {
            assert_eq!(provider, "anthropic");
            assert_eq!(*status, 400);
            assert_eq!(message, "messages: roles must alternate");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn auth_errors_are_typed() {
    let server = TestServer::start(vec![Reply::json(
        401,
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
    )])
    .await;
    let err = client(&server)
        .complete(&LlmRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::Auth { status: 401, message, .. } if message == "invalid x-api-key"),
        "{err:?}"
    );
    assert_eq!(err.kind(), "auth_failure");
}

#[tokio::test]
async fn a_garbage_body_is_a_decode_error_naming_provider_and_status() {
    let server = TestServer::start(vec![Reply::text(200, "<html>proxy login</html>")]).await;
    let err = client(&server)
        .complete(&LlmRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Decode { status: 200, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("anthropic") && text.contains("200"), "{text}");
    assert!(text.contains("proxy login"), "{text}");
}

#[tokio::test]
async fn a_non_sse_stream_body_is_a_decode_error() {
    let server = TestServer::start(vec![Reply::text(200, "not an event stream")]).await;
    let events = collect_stream(&client(&server), &LlmRequest::new(vec![Message::user("x")])).await;
    match events.as_slice() {
        [Err(err @ LlmError::Decode { status: 200, .. })] => {
            assert!(err.to_string().contains("anthropic"))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn env_config_names_the_missing_variable_and_reads_the_base_url() {
    let err = AnthropicClient::from_lookup("claude-haiku-4-5", |_| None).unwrap_err();
    assert!(
        matches!(&err, LlmError::Config(m) if m.contains("ANTHROPIC_API_KEY")),
        "{err:?}"
    );

    let server = TestServer::start(vec![Reply::json(200, text_answer())]).await;
    let url = server.url();
    let client = create_client_with("anthropic:claude-haiku-4-5", |name| match name {
        "ANTHROPIC_API_KEY" => Some("sk-ant-env".into()),
        "ANTHROPIC_BASE_URL" => Some(format!("{url}/")),
        _ => None,
    })
    .unwrap();
    assert_eq!(client.provider(), "anthropic");
    assert_eq!(client.model(), "claude-haiku-4-5");
    client
        .complete(&LlmRequest::new(vec![Message::user("x")]))
        .await
        .unwrap();
    let sent = server.single_request();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-env"));
}

/// Live-key test: talks to the real provider, so it is ignored offline and in CI.
/// Run with `ANTHROPIC_API_KEY=... cargo test -p kaos-llm -- --ignored live_`.
#[tokio::test]
#[ignore = "live-key test: needs ANTHROPIC_API_KEY and the network"]
async fn live_anthropic_answers() {
    let client = AnthropicClient::from_env("claude-haiku-4-5").unwrap();
    let request = LlmRequest::new(vec![Message::user("Say hi in one word.")]);
    let answer = client.complete(&request).await.unwrap();
    assert!(!answer.text().is_empty());
    assert!(answer.usage.input_tokens > 0);
    let events = collect_stream(&client, &request).await;
    assert!(matches!(events.last(), Some(Ok(StreamEvent::Done(_)))));
}

/// With a propagator set (the application's choice; the `kaos` CLI sets the W3C one when it
/// exports spans), a request carries the current context: inside a turn, the model call's
/// `chat` span, so a gateway that continues traces nests under it.
#[cfg(feature = "otel")]
#[tokio::test]
async fn requests_carry_the_current_trace_context() {
    use opentelemetry::context::FutureExt as _;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let server = TestServer::start(vec![Reply::json(200, text_answer())]).await;
    let span = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("vendor", "abc")]).unwrap(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(span);
    client(&server)
        .complete(&LlmRequest::new(vec![Message::user("Hi")]))
        .with_context(cx)
        .await
        .unwrap();
    let sent = server.single_request();
    assert_eq!(
        sent.header("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(sent.header("tracestate"), Some("vendor=abc"));
}
