//! Retries, backoff, Retry-After and timeouts, through the real providers and the local
//! server. Waits are recorded by an injected sleeper, never slept or timed.

use std::time::Duration;

use kaos_llm::retry::RetryPolicy;
use kaos_llm::{
    AnthropicClient, LlmClient, LlmError, LlmRequest, Message, OpenAiClient, RequestOptions,
    StreamEvent,
};
use serde_json::json;

use crate::util::{
    Reply, TestServer, collect_stream, recording_policy, recording_policy_up_to, sse_data,
    sse_event,
};

fn ok_anthropic() -> Reply {
    Reply::json(
        200,
        json!({"id": "msg", "model": "claude-haiku-4-5", "content": [{"type": "text", "text": "ok"}],
               "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}),
    )
}

fn ok_openai() -> Reply {
    Reply::json(
        200,
        json!({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}),
    )
}

fn request() -> LlmRequest {
    LlmRequest::new(vec![Message::user("x")])
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_at_least_that_long() {
    let server = TestServer::start(vec![
        Reply::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", "2"),
        ok_anthropic(),
    ])
    .await;
    let (policy, delays) = recording_policy_up_to(3, Duration::from_secs(60));
    let client = AnthropicClient::new("claude-haiku-4-5", "k")
        .with_base_url(server.url())
        .with_retry(policy);
    let answer = client.complete(&request()).await.unwrap();
    assert_eq!(answer.text(), "ok");
    assert_eq!(server.request_count(), 2);
    let delays = delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 1);
    assert!(delays[0] >= Duration::from_secs(2), "{delays:?}");
}

#[tokio::test]
async fn a_retry_after_is_clamped_to_the_policys_max_backoff() {
    let server = TestServer::start(vec![
        Reply::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", "30"),
        ok_anthropic(),
    ])
    .await;
    let (policy, delays) = recording_policy_up_to(3, Duration::from_secs(5));
    let client = AnthropicClient::new("claude-haiku-4-5", "k")
        .with_base_url(server.url())
        .with_retry(policy);
    assert_eq!(client.complete(&request()).await.unwrap().text(), "ok");
    assert_eq!(*delays.lock().unwrap(), vec![Duration::from_secs(5)]);
}

#[tokio::test]
async fn retry_after_ms_and_http_dates_are_understood() {
    let server = TestServer::start(vec![
        Reply::json(503, json!({"error": {"message": "busy"}})).header("retry-after-ms", "1500"),
        Reply::json(429, json!({"error": {"message": "busy"}}))
            .header("retry-after", &http_date_in(Duration::from_secs(20))),
        ok_openai(),
    ])
    .await;
    let (policy, delays) = recording_policy_up_to(3, Duration::from_secs(60));
    let client = OpenAiClient::new("gpt-4o-mini", "k")
        .with_base_url(server.url())
        .with_retry(policy);
    client.complete(&request()).await.unwrap();
    let delays = delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 2);
    assert!(delays[0] >= Duration::from_millis(1500), "{delays:?}");
    // The date is in whole seconds and read a moment later: somewhat under 20 s is left.
    assert!(delays[1] >= Duration::from_secs(10), "{delays:?}");
    assert!(delays[1] <= Duration::from_secs(20), "{delays:?}");
}

#[tokio::test]
async fn a_401_is_never_retried() {
    let server = TestServer::start(vec![Reply::json(
        401,
        json!({"error": {"message": "bad key"}}),
    )])
    .await;
    let (policy, delays) = recording_policy(3);
    let client = OpenAiClient::new("gpt-4o-mini", "k")
        .with_base_url(server.url())
        .with_retry(policy);
    let err = client.complete(&request()).await.unwrap_err();
    assert!(matches!(err, LlmError::Auth { status: 401, .. }), "{err:?}");
    assert_eq!(server.request_count(), 1);
    assert!(delays.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let server =
        TestServer::start(vec![Reply::json(400, json!({"error": {"message": "bad"}}))]).await;
    let (policy, _) = recording_policy(3);
    let client = AnthropicClient::new("m", "k")
        .with_base_url(server.url())
        .with_retry(policy);
    let err = client.complete(&request()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Provider { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_500_is_retried_until_the_retries_are_exhausted() {
    let server = TestServer::start(vec![Reply::json(
        500,
        json!({"type": "error", "error": {"type": "api_error", "message": "internal"}}),
    )])
    .await;
    let (policy, delays) = recording_policy(3);
    let client = AnthropicClient::new("m", "k")
        .with_base_url(server.url())
        .with_retry(policy);
    let err = client.complete(&request()).await.unwrap_err();
    match &err {
        LlmError::RetryExhausted { attempts, last } => {
            assert_eq!(*attempts, 4);
            assert!(
                matches!(**last, LlmError::Provider { status: 500, .. }),
                "{last:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.status(), Some(500));
    assert!(err.to_string().contains("internal"));
    assert_eq!(server.request_count(), 4);
    let delays = delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 3);
    let policy = RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(10));
    for (attempt, delay) in delays.iter().enumerate() {
        assert!(*delay <= policy.backoff_cap(attempt as u32), "{delays:?}");
    }
}

#[tokio::test]
async fn transport_errors_are_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (policy, delays) = recording_policy(2);
    let client = OpenAiClient::compatible("llama3", url).with_retry(policy);
    let err = client.complete(&request()).await.unwrap_err();
    match &err {
        LlmError::RetryExhausted { attempts: 3, last } => {
            assert!(matches!(**last, LlmError::Transport { .. }), "{last:?}")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(delays.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_client_timeout_applies() {
    let server = TestServer::start(vec![ok_openai().hang()]).await;
    let client = OpenAiClient::new("gpt-4o-mini", "k")
        .with_base_url(server.url())
        .with_timeout(Duration::from_millis(50))
        .with_retry(RetryPolicy::none());
    let err = client.complete(&request()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Timeout { timeout, .. } if timeout == Duration::from_millis(50)),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn the_request_timeout_overrides_the_client_timeout() {
    let server = TestServer::start(vec![ok_anthropic().hang()]).await;
    let client = AnthropicClient::new("m", "k")
        .with_base_url(server.url())
        .with_retry(RetryPolicy::none());
    let request = request().with_options(RequestOptions {
        timeout: Some(Duration::from_millis(40)),
        ..RequestOptions::default()
    });
    let err = client.complete(&request).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Timeout { timeout, .. } if timeout == Duration::from_millis(40)),
        "{err:?}"
    );
    let events = collect_stream(&client, &request).await;
    assert!(
        matches!(events.as_slice(), [Err(LlmError::Timeout { .. })]),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_stream_is_retried_before_its_first_event() {
    let server = TestServer::start(vec![
        Reply::json(503, json!({"error": {"message": "busy"}})),
        Reply::sse(&[
            sse_data(
                &json!({"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]})
                    .to_string(),
            ),
            sse_data("[DONE]"),
        ]),
    ])
    .await;
    let (policy, delays) = recording_policy(3);
    let client = OpenAiClient::new("gpt-4o-mini", "k")
        .with_base_url(server.url())
        .with_retry(policy);
    let events = collect_stream(&client, &request()).await;
    assert!(
        matches!(events.last(), Some(Ok(StreamEvent::Done(d))) if d.text() == "hi"),
        "{events:?}"
    );
    assert_eq!(server.request_count(), 2);
    assert_eq!(delays.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_stream_that_breaks_after_yielding_is_not_retried() {
    let server = TestServer::start(vec![Reply::sse(&[
        sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}),
        ),
        sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "partial"}}),
        ),
    ])])
    .await;
    let (policy, delays) = recording_policy(3);
    let client = AnthropicClient::new("m", "k")
        .with_base_url(server.url())
        .with_retry(policy);
    let events = collect_stream(&client, &request()).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0].as_ref().unwrap(),
        &StreamEvent::TextDelta("partial".into())
    );
    assert!(
        matches!(events[1], Err(LlmError::StreamInterrupted { .. })),
        "{events:?}"
    );
    assert_eq!(server.request_count(), 1);
    assert!(delays.lock().unwrap().is_empty());
}

/// An IMF-fixdate `ahead` from now (whole seconds).
pub(crate) fn http_date_in(ahead: Duration) -> String {
    let at = std::time::SystemTime::now() + ahead;
    http_date(at)
}

/// An IMF-fixdate of `at` (whole seconds), via the civil-from-days algorithm.
pub(crate) fn http_date(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}
