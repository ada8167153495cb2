//! Hostile providers: absurd `Retry-After`s, huge bodies, endless stream lines and token
//! counts at the edge of `u64`. Each ends in a typed error (or a saturated value), never a
//! panic, a long sleep or an unbounded allocation. Waits are recorded, never slept.

use std::time::Duration;

use kaos_llm::providers::HttpLimits;
use kaos_llm::{
    AnthropicClient, LlmClient, LlmError, LlmRequest, Message, OpenAiClient, RequestOptions,
};
use serde_json::json;

use crate::retry::http_date;
use crate::util::{Reply, ReplyBody, TestServer, collect_stream, recording_policy_up_to, sse_data};

fn request() -> LlmRequest {
    LlmRequest::new(vec![Message::user("x")])
}

fn ok_openai() -> Reply {
    Reply::json(
        200,
        json!({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}),
    )
}

fn rate_limited(retry_after: &str) -> Reply {
    Reply::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", retry_after)
}

#[tokio::test]
async fn retry_after_1e30_fails_at_once_naming_the_wait() {
    let server = TestServer::start(vec![rate_limited("1e30"), ok_openai()]).await;
    let (policy, delays) = recording_policy_up_to(3, Duration::from_secs(60));
    let client = OpenAiClient::new("gpt-4o-mini", "k")
        .with_base_url(server.url())
        .with_retry(policy);
    let err = client.complete(&request()).await.unwrap_err();
    eprintln!("Retry-After: 1e30 -> {err}");
    match &err {
        LlmError::RetryAfterExceedsDeadline {
            requested, last, ..
        } => {
            assert_eq!(*requested, Duration::MAX);
            assert!(
                matches!(**last, LlmError::Provider { status: 429, .. }),
                "{last:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.kind(), "rate_limit");
    assert!(err.is_failover() && !err.is_retryable());
    assert!(err.to_string().contains("asked to wait more than"), "{err}");
    assert_eq!(server.request_count(), 1);
    assert!(delays.lock().unwrap().is_empty(), "no wait was started");
}

#[tokio::test]
async fn retry_after_a_day_with_a_30_s_deadline_fails_at_once() {
    let server = TestServer::start(vec![rate_limited("86400")]).await;
    let (policy, delays) = recording_policy_up_to(3, Duration::from_secs(60));
    let client = AnthropicClient::new("claude-haiku-4-5", "k")
        .with_base_url(server.url())
        .with_retry(policy);
    let request = request().with_options(RequestOptions {
        timeout: Some(Duration::from_secs(30)),
        ..RequestOptions::default()
    });
    let err = client.complete(&request).await.unwrap_err();
    eprintln!("Retry-After: 86400 (30 s deadline) -> {err}");
    match &err {
        LlmError::RetryAfterExceedsDeadline {
            requested,
            remaining,
            ..
        } => {
            assert_eq!(*requested, Duration::from_secs(86_400));
            assert!(*remaining <= Duration::from_secs(30), "{remaining:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("asked to wait 86400 s"), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(86_400)));
    assert_eq!(server.request_count(), 1);
    assert!(delays.lock().unwrap().is_empty(), "the call did not sleep");

    // The same for a stream: it never connects, and says why.
    let events = collect_stream(&client, &request).await;
    assert!(
        matches!(
            events.as_slice(),
            [Err(LlmError::RetryAfterExceedsDeadline { .. })]
        ),
        "{events:?}"
    );
    assert!(delays.lock().unwrap().is_empty());
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn retry_after_an_http_date_in_the_past_retries_without_waiting_for_it() {
    let past = http_date(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    let server = TestServer::start(vec![rate_limited(&past), ok_openai()]).await;
    let (policy, delays) = recording_policy_up_to(3, Duration::from_secs(60));
    let client = OpenAiClient::new("gpt-4o-mini", "k")
        .with_base_url(server.url())
        .with_retry(policy.clone());
    let answer = client.complete(&request()).await.unwrap();
    assert_eq!(answer.text(), "ok");
    assert_eq!(server.request_count(), 2);
    let delays = delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 1);
    assert!(delays[0] <= policy.backoff_cap(0), "{delays:?}");
}

#[tokio::test]
async fn a_50_mib_body_is_refused_by_its_length_and_while_reading() {
    let body = vec![b' '; 50 * 1024 * 1024];
    let announced = Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: ReplyBody::Full(body.clone()),
        hang: false,
    };
    let unannounced = Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: ReplyBody::Chunks(body.chunks(1024 * 1024).map(<[u8]>::to_vec).collect()),
        hang: false,
    };
    drop(body);
    for reply in [announced, unannounced] {
        let server = TestServer::start(vec![reply]).await;
        let (policy, _) = recording_policy_up_to(3, Duration::from_secs(60));
        let client = OpenAiClient::new("gpt-4o-mini", "k")
            .with_base_url(server.url())
            .with_retry(policy);
        let err = client.complete(&request()).await.unwrap_err();
        eprintln!("50 MiB body -> {err}");
        match &err {
            LlmError::ResponseTooLarge {
                what,
                limit,
                setting,
                ..
            } => {
                assert_eq!(what, "response body");
                assert_eq!(*limit, HttpLimits::default().max_body_bytes);
                assert_eq!(*setting, "max_body_bytes");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.kind(), "response_too_large");
        assert_eq!(server.request_count(), 1, "too large is not retried");
    }
}

#[tokio::test]
async fn a_body_limit_is_configurable() {
    let server = TestServer::start(vec![ok_openai()]).await;
    let client = OpenAiClient::new("gpt-4o-mini", "k")
        .with_base_url(server.url())
        .with_limits(HttpLimits {
            max_body_bytes: 16,
            ..HttpLimits::default()
        });
    let err = client.complete(&request()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::ResponseTooLarge { limit: 16, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_endless_sse_line_ends_in_a_typed_error() {
    let server = TestServer::start(vec![Reply::endless(
        "text/event-stream",
        "data: ",
        &[b'x'; 64 * 1024],
    )])
    .await;
    let client = OpenAiClient::new("gpt-4o-mini", "k").with_base_url(server.url());
    let events = collect_stream(&client, &request()).await;
    let [Err(err)] = events.as_slice() else {
        panic!("{events:?}");
    };
    eprintln!("endless SSE line -> {err}");
    match err {
        LlmError::ResponseTooLarge {
            what,
            limit,
            setting,
            ..
        } => {
            assert_eq!(what, "server-sent event line");
            assert_eq!(*limit, HttpLimits::default().max_sse_line_bytes);
            assert_eq!(*setting, "max_sse_line_bytes");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn an_endless_stream_of_small_events_ends_at_the_body_limit() {
    let event = sse_data(&json!({"choices": [{"delta": {"content": "x"}}]}).to_string());
    let server = TestServer::start(vec![Reply::endless(
        "text/event-stream",
        "",
        event.repeat(100).as_bytes(),
    )])
    .await;
    let client = OpenAiClient::new("gpt-4o-mini", "k")
        .with_base_url(server.url())
        .with_limits(HttpLimits {
            max_body_bytes: 256 * 1024,
            ..HttpLimits::default()
        });
    let events = collect_stream(&client, &request()).await;
    assert!(events.len() > 1, "deltas arrive before the limit");
    assert!(
        matches!(
            events.last(),
            Some(Err(LlmError::ResponseTooLarge { what, .. })) if what == "stream"
        ),
        "{:?}",
        events.last()
    );
}

#[tokio::test]
async fn token_counts_at_the_edge_of_u64_saturate() {
    let server = TestServer::start(vec![Reply::json(
        200,
        json!({"id": "msg", "model": "m", "content": [{"type": "text", "text": "ok"}],
               "stop_reason": "end_turn",
               "usage": {"input_tokens": u64::MAX, "output_tokens": u64::MAX,
                         "cache_read_input_tokens": u64::MAX}}),
    )])
    .await;
    let client = AnthropicClient::new("m", "k").with_base_url(server.url());
    let answer = client.complete(&request()).await.unwrap();
    assert_eq!(answer.usage.input_tokens, u64::MAX);
    assert_eq!(answer.usage.total_tokens, u64::MAX);
    let sum = answer.usage + answer.usage;
    assert_eq!(sum.output_tokens, u64::MAX);
    assert_eq!(sum.cache_read_tokens, u64::MAX);
}
