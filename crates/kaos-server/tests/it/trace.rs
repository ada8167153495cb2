//! Trace context in: caller → HTTP server span → `agent.turn`, and the response header.

use futures::StreamExt;
use opentelemetry::trace::{SpanKind, Status};
use serde_json::json;

use crate::util::{Options, TOKEN_A, client, start};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const ROUTE: &str = "POST /v1/sessions/{session_id}/messages";

#[tokio::test]
async fn the_server_span_sits_between_the_caller_and_agent_turn() {
    let mut t = start(Options::default()).await;
    let response = client()
        .post(t.url("/v1/sessions/traced/messages"))
        .bearer_auth(TOKEN_A)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "vendor=abc")
        .header("user-agent", "kaos-test")
        .json(&json!({"message": "use wordcount"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let traceparent = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        response.headers()["traceresponse"].to_str().unwrap(),
        traceparent
    );
    let _ = response.bytes_stream().collect::<Vec<_>>().await;
    let server = t.wait_span(ROUTE).await;
    let spans = t.spans();
    let turn = spans
        .iter()
        .find(|s| s.name == "agent.turn")
        .expect("agent.turn");
    let tool = spans
        .iter()
        .find(|s| s.name == "agent.tool_call.wordcount")
        .expect("tool span");

    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.span_context.trace_id().to_string(), CALLER_TRACE);
    assert_eq!(server.parent_span_id.to_string(), CALLER_SPAN);
    assert_eq!(server.span_context.trace_state().header(), "vendor=abc");
    assert_eq!(turn.span_context.trace_id().to_string(), CALLER_TRACE);
    assert_eq!(turn.parent_span_id, server.span_context.span_id());
    assert_eq!(tool.parent_span_id, turn.span_context.span_id());
    assert_eq!(
        traceparent,
        format!("00-{CALLER_TRACE}-{}-01", server.span_context.span_id())
    );
    // The server span outlives the turn it streamed.
    assert!(server.end_time >= turn.end_time);

    let attr = |k: &str| {
        server
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        attr("http.route").as_deref(),
        Some("/v1/sessions/{session_id}/messages")
    );
    assert_eq!(attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(
        attr("url.path").as_deref(),
        Some("/v1/sessions/traced/messages")
    );
    assert_eq!(attr("server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr("server.port"), Some(t.addr.port().to_string()));
    assert_eq!(attr("client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr("user_agent.original").as_deref(), Some("kaos-test"));
    assert_eq!(server.status, Status::Unset);
}

#[tokio::test]
async fn without_a_caller_the_server_span_is_the_root() {
    let mut t = start(Options::default()).await;
    let response = client()
        .post(t.url("/v1/sessions/untraced/messages"))
        .bearer_auth(TOKEN_A)
        .header("accept", "application/json")
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    let traceparent = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = response.bytes().await.unwrap();
    let server = t.wait_span(ROUTE).await;
    let spans = t.spans();
    let turn = spans.iter().find(|s| s.name == "agent.turn").unwrap();
    assert_eq!(server.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert_eq!(turn.parent_span_id, server.span_context.span_id());
    assert!(traceparent.contains(&server.span_context.trace_id().to_string()));
}

#[tokio::test]
async fn a_rejected_request_gets_its_span_and_status_too() {
    let mut t = start(Options::default()).await;
    let response = client()
        .get(t.url("/v1/sessions/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let _ = response.bytes().await;
    let span = t.wait_span("GET /v1/sessions/{session_id}").await;
    assert!(
        span.attributes
            .iter()
            .any(|kv| kv.key.as_str() == "http.response.status_code"
                && kv.value.to_string() == "401")
    );
}

/// A `traceparent` the W3C spec rejects is ignored: the server span starts a trace of its
/// own (the SDK's parser alone would take a short trace id, padded, as the caller's).
#[tokio::test]
async fn a_malformed_traceparent_is_ignored() {
    let mut t = start(Options::default()).await;
    let short = "00-0af7651916cd43dd-b7ad6b7169203331-01";
    let response = client()
        .post(t.url("/v1/sessions/malformed/messages"))
        .bearer_auth(TOKEN_A)
        .header("accept", "application/json")
        .header("traceparent", short)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    let _ = response.bytes().await.unwrap();
    let server = t.wait_span(ROUTE).await;
    assert_eq!(server.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert!(
        !server
            .span_context
            .trace_id()
            .to_string()
            .contains("0af7651916cd43dd")
    );
}
