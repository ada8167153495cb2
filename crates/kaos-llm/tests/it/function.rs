//! FunctionClient: closures (sync and async), recording, scripts.

use kaos_llm::{
    FunctionClient, LlmClient, LlmError, LlmRequest, Message, ProviderResponse, RequestOptions,
    ToolChoice, ToolDefinition,
};
use serde_json::json;

fn request_with_tools() -> LlmRequest {
    LlmRequest::new(vec![
        Message::system("be brief"),
        Message::user("list files"),
    ])
    .with_tools(vec![ToolDefinition {
        name: "ls".into(),
        description: "List a directory".into(),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
    }])
    .with_tool_choice(ToolChoice::Auto)
    .with_options(RequestOptions {
        max_tokens: Some(64),
        ..RequestOptions::default()
    })
}

#[tokio::test]
async fn sync_closure_sees_the_full_request() {
    let client = FunctionClient::new(|messages: &[Message], request: &LlmRequest| {
        assert_eq!(messages.len(), 2);
        assert_eq!(request.tools.len(), 1);
        assert_eq!(request.tools[0].name, "ls");
        assert_eq!(request.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(request.options.max_tokens, Some(64));
        ProviderResponse::from_tool_call("call-1", "ls", json!({"path": "."}))
    });
    let response = client.complete(&request_with_tools()).await.unwrap();
    assert_eq!(response.tool_calls()[0].name, "ls");
    assert_eq!(client.provider(), "function");
    assert_eq!(client.model(), "function-test");
}

#[tokio::test]
async fn async_closure_sees_the_full_request() {
    let client = FunctionClient::new_async(|request: LlmRequest| async move {
        tokio::task::yield_now().await;
        let names: Vec<String> = request.tools.iter().map(|t| t.name.clone()).collect();
        ProviderResponse::from_text(format!("tools: {}", names.join(",")))
    });
    let response = client.complete(&request_with_tools()).await.unwrap();
    assert_eq!(response.text(), "tools: ls");
}

#[tokio::test]
async fn closures_may_return_errors() {
    let client = FunctionClient::new(|_: &[Message], _: &LlmRequest| {
        Err::<ProviderResponse, _>(LlmError::Function("boom".into()))
    });
    let err = client.complete(&request_with_tools()).await.unwrap_err();
    assert!(err.to_string().contains("boom"));
}

#[tokio::test]
async fn requests_are_recorded_in_order() {
    let client = FunctionClient::new(|messages: &[Message], _: &LlmRequest| {
        ProviderResponse::from_text(messages.last().map_or("", |m| m.content.as_str()))
    });
    client
        .complete(&LlmRequest::new(vec![Message::user("one")]))
        .await
        .unwrap();
    client.complete(&request_with_tools()).await.unwrap();
    let requests = client.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(client.call_count(), 2);
    assert_eq!(requests[0].messages[0].content, "one");
    assert!(requests[0].tools.is_empty());
    assert_eq!(requests[1], request_with_tools());
}

#[tokio::test]
async fn without_recording_still_counts() {
    let client =
        FunctionClient::new(|_: &[Message], _: &LlmRequest| ProviderResponse::from_text("ok"))
            .without_recording()
            .with_model("fake-model");
    client.complete(&request_with_tools()).await.unwrap();
    assert!(client.requests().is_empty());
    assert_eq!(client.call_count(), 1);
    assert_eq!(client.model(), "fake-model");
}

#[tokio::test]
async fn script_replies_in_order_then_is_exhausted() {
    let client = FunctionClient::scripted([
        ProviderResponse::from_text("first"),
        ProviderResponse::from_text("second"),
    ]);
    let request = LlmRequest::new(vec![Message::user("hi")]);
    assert_eq!(client.complete(&request).await.unwrap().text(), "first");
    assert_eq!(client.complete(&request).await.unwrap().text(), "second");
    let err = client.complete(&request).await.unwrap_err();
    assert!(
        err.to_string().contains("script exhausted after 2 calls"),
        "{err}"
    );
    assert_eq!(client.call_count(), 3);
    assert_eq!(client.requests().len(), 3);
}

#[tokio::test]
async fn script_may_hold_errors() {
    let client = FunctionClient::scripted([
        Err(LlmError::Config("no key".into())),
        Ok(ProviderResponse::from_text("ok")),
    ]);
    let request = LlmRequest::new(vec![Message::user("hi")]);
    assert!(matches!(
        client.complete(&request).await,
        Err(LlmError::Config(_))
    ));
    assert_eq!(client.complete(&request).await.unwrap().text(), "ok");
}

#[tokio::test]
async fn chunking_streams_text_in_pieces_that_concatenate_to_the_answer() {
    use futures::StreamExt;
    use kaos_llm::{Chunking, StreamEvent};
    let answer = "héllo, wörld 😀 — streamed";
    let client = FunctionClient::new(move |_m: &[Message], _r: &LlmRequest| {
        ProviderResponse::from_text(answer).with_tool_call(
            "c1",
            "t",
            serde_json::json!({"a": "bcdef"}),
        )
    })
    .with_chunking(Chunking::chars(3));
    let request = LlmRequest::new(vec![Message::user("hi")]);
    let events: Vec<StreamEvent> = client.stream(&request).map(|e| e.unwrap()).collect().await;
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert!(deltas.iter().all(|d| d.chars().count() <= 3));
    assert_eq!(deltas.concat(), answer);
    let args: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallDelta {
                arguments_delta, ..
            } => Some(arguments_delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(args, r#"{"a":"bcdef"}"#);
    assert!(matches!(events.last(), Some(StreamEvent::Done(r)) if r.text() == answer));
    assert_eq!(client.call_count(), 1);
}

#[tokio::test]
async fn a_streaming_client_completes_with_its_done_response() {
    use kaos_llm::{Chunking, chunked_events};
    let client = FunctionClient::streaming(|request: LlmRequest| {
        let n = request.messages.len();
        chunked_events(
            ProviderResponse::from_text(format!("{n} message(s)")),
            Chunking::chars(2),
        )
    });
    let answer = client
        .complete(&LlmRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap();
    assert_eq!(answer.text(), "1 message(s)");
    assert_eq!(client.requests().len(), 1);
}
