//! FallbackClient: fails over in order on provider errors.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use kaos_llm::{
    FallbackClient, FunctionClient, LlmClient, LlmError, LlmRequest, Message, ProviderResponse,
    StreamEvent,
};

fn unavailable() -> LlmError {
    LlmError::Provider {
        provider: "primary".into(),
        status: 503,
        message: "overloaded".into(),
        retry_after: None,
    }
}

fn request() -> LlmRequest {
    LlmRequest::new(vec![Message::user("hi")])
}

#[tokio::test]
async fn the_backup_answers_when_the_primary_is_unavailable() {
    let primary = Arc::new(FunctionClient::scripted([Err::<ProviderResponse, _>(
        unavailable(),
    )]));
    let backup = Arc::new(FunctionClient::new(|_: &[Message], _: &LlmRequest| {
        ProviderResponse::from_text("from backup")
    }));
    let client = FallbackClient::new(vec![primary.clone(), backup.clone()]);
    let answer = client.complete(&request()).await.unwrap();
    assert_eq!(answer.text(), "from backup");
    assert_eq!(primary.call_count(), 1);
    assert_eq!(backup.call_count(), 1);
    assert_eq!(client.provider(), "function");
}

#[tokio::test]
async fn the_primary_answers_alone_when_it_can() {
    let primary = Arc::new(FunctionClient::scripted([ProviderResponse::from_text(
        "primary",
    )]));
    let backup = Arc::new(FunctionClient::scripted([ProviderResponse::from_text(
        "backup",
    )]));
    let client = FallbackClient::new(vec![primary, backup.clone()]);
    assert_eq!(client.complete(&request()).await.unwrap().text(), "primary");
    assert_eq!(backup.call_count(), 0);
}

#[tokio::test]
async fn the_last_error_is_raised_when_all_fail() {
    let auth = LlmError::Auth {
        provider: "second".into(),
        status: 401,
        message: "bad key".into(),
    };
    let client = FallbackClient::new(vec![
        Arc::new(FunctionClient::scripted([Err::<ProviderResponse, _>(
            unavailable(),
        )])),
        Arc::new(FunctionClient::scripted([Err::<ProviderResponse, _>(auth)])),
    ]);
    let err = client.complete(&request()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Auth { ref provider, .. } if provider == "second"),
        "{err:?}"
    );
}

#[tokio::test]
async fn errors_that_are_not_failover_errors_are_raised_at_once() {
    let backup = Arc::new(FunctionClient::scripted([ProviderResponse::from_text(
        "backup",
    )]));
    let client = FallbackClient::new(vec![
        Arc::new(FunctionClient::scripted([Err::<ProviderResponse, _>(
            LlmError::Config("no model".into()),
        )])),
        backup.clone(),
    ]);
    let err = client.complete(&request()).await.unwrap_err();
    assert!(matches!(err, LlmError::Config(_)), "{err:?}");
    assert_eq!(backup.call_count(), 0);
}

#[tokio::test]
async fn an_empty_fallback_is_a_config_error() {
    let client = FallbackClient::new(vec![]);
    assert!(matches!(
        client.complete(&request()).await,
        Err(LlmError::Config(_))
    ));
    let events: Vec<_> = client.stream(&request()).collect().await;
    assert!(matches!(events.as_slice(), [Err(LlmError::Config(_))]));
}

#[tokio::test]
async fn a_stream_fails_over_before_its_first_event() {
    let client = FallbackClient::new(vec![
        Arc::new(FunctionClient::scripted([Err::<ProviderResponse, _>(
            unavailable(),
        )])),
        Arc::new(FunctionClient::scripted([ProviderResponse::from_text(
            "streamed backup",
        )])),
    ]);
    let events: Vec<_> = client.stream(&request()).collect().await;
    assert!(
        matches!(events.last(), Some(Ok(StreamEvent::Done(d))) if d.text() == "streamed backup"),
        "{events:?}"
    );
    assert!(events.iter().all(Result::is_ok));
}

/// A client whose stream yields one delta and then breaks.
struct BreaksMidStream;

#[async_trait::async_trait]
impl LlmClient for BreaksMidStream {
    async fn complete(&self, _: &LlmRequest) -> Result<ProviderResponse, LlmError> {
        Err(unavailable())
    }
    fn provider(&self) -> &str {
        "breaks"
    }
    fn model(&self) -> &str {
        "breaks"
    }
    fn stream<'a>(&'a self, _: &'a LlmRequest) -> BoxStream<'a, Result<StreamEvent, LlmError>> {
        stream::iter(vec![
            Ok(StreamEvent::TextDelta("half".into())),
            Err(LlmError::StreamInterrupted {
                provider: "breaks".into(),
                message: "reset".into(),
            }),
        ])
        .boxed()
    }
}

#[tokio::test]
async fn a_stream_does_not_fail_over_once_it_has_yielded() {
    let backup = Arc::new(FunctionClient::scripted([ProviderResponse::from_text(
        "backup",
    )]));
    let client = FallbackClient::new(vec![Arc::new(BreaksMidStream), backup.clone()]);
    let events: Vec<_> = client.stream(&request()).collect().await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(events[1], Err(LlmError::StreamInterrupted { .. })));
    assert_eq!(backup.call_count(), 0);
}
