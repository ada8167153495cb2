//! [`FunctionClient`]: a model backed by a closure, for offline runs and tests.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use crate::client::LlmClient;
use crate::error::LlmError;
use crate::types::{LlmRequest, Message, ProviderResponse};

/// What a [`FunctionClient`] closure may return: a response, or a result.
pub trait IntoLlmResult {
    /// Converts into a result.
    fn into_llm_result(self) -> Result<ProviderResponse, LlmError>;
}

impl IntoLlmResult for ProviderResponse {
    fn into_llm_result(self) -> Result<ProviderResponse, LlmError> {
        Ok(self)
    }
}

impl IntoLlmResult for Result<ProviderResponse, LlmError> {
    fn into_llm_result(self) -> Result<ProviderResponse, LlmError> {
        self
    }
}

type SyncFn = dyn Fn(&[Message], &LlmRequest) -> Result<ProviderResponse, LlmError> + Send + Sync;

type AsyncFn =
    dyn Fn(LlmRequest) -> BoxFuture<'static, Result<ProviderResponse, LlmError>> + Send + Sync;

enum Behaviour {
    Sync(Box<SyncFn>),
    Async(Box<AsyncFn>),
    Script {
        replies: Mutex<VecDeque<Result<ProviderResponse, LlmError>>>,
        total: usize,
    },
}

/// A model backed by a closure (sync or async) or by a script of replies.
///
/// It records every request it receives (messages, tools, tool choice, options), so tests
/// can assert on what the runtime sent.
///
/// ```
/// use kaos_llm::{FunctionClient, LlmClient, LlmRequest, Message, ProviderResponse};
/// # futures::executor::block_on(async {
/// let client = FunctionClient::new(|messages: &[Message], _request: &LlmRequest| {
///     ProviderResponse::from_text(format!("{} message(s)", messages.len()))
/// });
/// let answer = client.complete(&LlmRequest::new(vec![Message::user("hi")])).await.unwrap();
/// assert_eq!(answer.text(), "1 message(s)");
/// assert_eq!(client.call_count(), 1);
/// # });
/// ```
pub struct FunctionClient {
    model: String,
    behaviour: Behaviour,
    record: bool,
    calls: Mutex<Vec<LlmRequest>>,
    call_count: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for FunctionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionClient")
            .field("model", &self.model)
            .field("calls", &self.call_count())
            .finish_non_exhaustive()
    }
}

impl FunctionClient {
    fn with_behaviour(behaviour: Behaviour) -> Self {
        Self {
            model: "function-test".into(),
            behaviour,
            record: true,
            calls: Mutex::new(Vec::new()),
            call_count: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A client that answers with `f(messages, request)`. `f` may return a
    /// [`ProviderResponse`] or a `Result<ProviderResponse, LlmError>`.
    pub fn new<F, R>(f: F) -> Self
    where
        F: Fn(&[Message], &LlmRequest) -> R + Send + Sync + 'static,
        R: IntoLlmResult,
    {
        Self::with_behaviour(Behaviour::Sync(Box::new(move |messages, request| {
            f(messages, request).into_llm_result()
        })))
    }

    /// A client whose closure is async (it receives an owned copy of the request).
    pub fn new_async<F, Fut, R>(f: F) -> Self
    where
        F: Fn(LlmRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoLlmResult,
    {
        let f = Arc::new(f);
        Self::with_behaviour(Behaviour::Async(Box::new(move |request| {
            let f = Arc::clone(&f);
            Box::pin(async move { f(request).await.into_llm_result() })
        })))
    }

    /// A client that answers with these replies in order, then fails with
    /// "script exhausted after N calls".
    pub fn scripted<I, R>(replies: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: IntoLlmResult,
    {
        let replies: VecDeque<_> = replies
            .into_iter()
            .map(IntoLlmResult::into_llm_result)
            .collect();
        let total = replies.len();
        Self::with_behaviour(Behaviour::Script {
            replies: Mutex::new(replies),
            total,
        })
    }

    /// Sets the model name the client reports (default `function-test`).
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Stops recording requests (for benchmarks: recording clones every request).
    pub fn without_recording(mut self) -> Self {
        self.record = false;
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<LlmRequest> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// How many calls were made.
    pub fn call_count(&self) -> usize {
        self.call_count.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn next_scripted(
        &self,
        replies: &Mutex<VecDeque<Result<ProviderResponse, LlmError>>>,
        total: usize,
    ) -> Result<ProviderResponse, LlmError> {
        let next = replies
            .lock()
            .map_err(|_| LlmError::Function("script lock poisoned".into()))?
            .pop_front();
        next.unwrap_or_else(|| {
            Err(LlmError::Function(format!(
                "script exhausted after {total} calls"
            )))
        })
    }
}

#[async_trait::async_trait]
impl LlmClient for FunctionClient {
    async fn complete(&self, request: &LlmRequest) -> Result<ProviderResponse, LlmError> {
        self.call_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.record
            && let Ok(mut calls) = self.calls.lock()
        {
            calls.push(request.clone());
        }
        match &self.behaviour {
            Behaviour::Sync(f) => f(&request.messages, request),
            Behaviour::Async(f) => f(request.clone()).await,
            Behaviour::Script { replies, total } => self.next_scripted(replies, *total),
        }
    }

    fn provider(&self) -> &str {
        "function"
    }

    fn model(&self) -> &str {
        &self.model
    }
}
