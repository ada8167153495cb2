//! [`FunctionClient`]: a model backed by a closure, for offline runs and tests.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};

use crate::client::{LlmClient, StreamEvent, response_as_events};
use crate::error::LlmError;
use crate::types::{ContentPart, LlmRequest, Message, ProviderResponse};

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

type StreamFn =
    dyn Fn(LlmRequest) -> BoxStream<'static, Result<StreamEvent, LlmError>> + Send + Sync;

/// A stream of model events with no borrow (what a streaming [`FunctionClient`] returns).
pub type EventStream = BoxStream<'static, Result<StreamEvent, LlmError>>;

/// How a [`FunctionClient`] streams a complete answer: its text (and thinking and tool-call
/// arguments) in pieces of `chars` characters, with `delay` before every piece but the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Characters per piece (0 is read as 1).
    pub chars: usize,
    /// The pause before each piece after the first.
    pub delay: Duration,
}

impl Chunking {
    /// Pieces of `chars` characters, no delay.
    pub fn chars(chars: usize) -> Self {
        Self {
            chars,
            delay: Duration::ZERO,
        }
    }

    /// Sets the pause before each piece after the first.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Streams `response` in pieces as `chunking` says, ending with its usage and
/// [`StreamEvent::Done`]. The concatenated text deltas equal `response.text()`.
pub fn chunked_events(response: ProviderResponse, chunking: Chunking) -> EventStream {
    let size = chunking.chars.max(1);
    let mut events = Vec::new();
    let mut tool_index = 0;
    for part in &response.parts {
        match part {
            ContentPart::Text { text } => events.extend(
                split_chars(text, size).map(|piece| StreamEvent::TextDelta(piece.to_owned())),
            ),
            ContentPart::Thinking { thinking } => events.extend(
                split_chars(thinking, size)
                    .map(|piece| StreamEvent::ThinkingDelta(piece.to_owned())),
            ),
            ContentPart::ToolUse { tool_call } => {
                let arguments = tool_call.arguments.to_string();
                for (i, piece) in split_chars(&arguments, size).enumerate() {
                    events.push(StreamEvent::ToolCallDelta {
                        index: tool_index,
                        id: (i == 0).then(|| tool_call.id.clone()),
                        name: (i == 0).then(|| tool_call.name.clone()),
                        arguments_delta: piece.to_owned(),
                    });
                }
                tool_index += 1;
            }
        }
    }
    events.push(StreamEvent::Usage(response.usage));
    events.push(StreamEvent::Done(response));
    let delay = chunking.delay;
    stream::iter(events.into_iter().enumerate())
        .then(move |(i, event)| async move {
            let content = !matches!(event, StreamEvent::Usage(_) | StreamEvent::Done(_));
            if i > 0 && content && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(event)
        })
        .boxed()
}

/// `text` in pieces of at most `size` characters (none for an empty text).
fn split_chars(text: &str, size: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.char_indices().nth(size).map_or(rest.len(), |(i, _)| i);
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

enum Behaviour {
    Sync(Box<SyncFn>),
    Async(Box<AsyncFn>),
    Stream(Box<StreamFn>),
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
    chunking: Option<Chunking>,
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
            chunking: None,
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

    /// A client that streams: `f` returns the answer as a stream of [`StreamEvent`]s, which
    /// should end with [`StreamEvent::Done`] (else `complete` assembles the text that
    /// arrived). [`complete`](LlmClient::complete) drains the same stream.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use kaos_llm::function::{Chunking, chunked_events};
    /// use kaos_llm::{FunctionClient, LlmClient, LlmRequest, Message, ProviderResponse, StreamEvent};
    /// # futures::executor::block_on(async {
    /// let client = FunctionClient::streaming(|_request: LlmRequest| {
    ///     chunked_events(ProviderResponse::from_text("hello world"), Chunking::chars(4))
    /// });
    /// let request = LlmRequest::new(vec![Message::user("hi")]);
    /// let deltas: Vec<String> = client
    ///     .stream(&request)
    ///     .filter_map(|e| async move {
    ///         match e {
    ///             Ok(StreamEvent::TextDelta(t)) => Some(t),
    ///             _ => None,
    ///         }
    ///     })
    ///     .collect()
    ///     .await;
    /// assert_eq!(deltas, ["hell", "o wo", "rld"]);
    /// # });
    /// ```
    pub fn streaming<F>(f: F) -> Self
    where
        F: Fn(LlmRequest) -> EventStream + Send + Sync + 'static,
    {
        Self::with_behaviour(Behaviour::Stream(Box::new(f)))
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

    /// Streams every answer in pieces (see [`Chunking`]); without it a non-streaming client
    /// streams each part of its answer as one delta.
    pub fn with_chunking(mut self, chunking: Chunking) -> Self {
        self.chunking = Some(chunking);
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

    fn note_call(&self, request: &LlmRequest) {
        self.call_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.record
            && let Ok(mut calls) = self.calls.lock()
        {
            calls.push(request.clone());
        }
    }

    /// The answer of a non-streaming behaviour.
    async fn answer(&self, request: &LlmRequest) -> Result<ProviderResponse, LlmError> {
        match &self.behaviour {
            Behaviour::Sync(f) => f(&request.messages, request),
            Behaviour::Async(f) => f(request.clone()).await,
            Behaviour::Script { replies, total } => self.next_scripted(replies, *total),
            Behaviour::Stream(f) => drain(f(request.clone()), &self.model).await,
        }
    }
}

/// The response a stream ends with (its `Done`), or the text that arrived when it has none.
async fn drain(mut events: EventStream, model: &str) -> Result<ProviderResponse, LlmError> {
    let mut text = String::new();
    let mut usage = None;
    while let Some(event) = events.next().await {
        match event? {
            StreamEvent::Done(response) => return Ok(response),
            StreamEvent::TextDelta(more) => text.push_str(&more),
            StreamEvent::Usage(u) => usage = Some(u),
            _ => {}
        }
    }
    let mut response = ProviderResponse::from_text(text).with_model("function", model);
    if let Some(u) = usage {
        response.usage = u;
    }
    Ok(response)
}

#[async_trait::async_trait]
impl LlmClient for FunctionClient {
    async fn complete(&self, request: &LlmRequest) -> Result<ProviderResponse, LlmError> {
        self.note_call(request);
        self.answer(request).await
    }

    fn stream<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxStream<'a, Result<StreamEvent, LlmError>> {
        self.note_call(request);
        if let Behaviour::Stream(f) = &self.behaviour {
            return f(request.clone());
        }
        let chunking = self.chunking;
        stream::once(self.answer(request))
            .flat_map(move |result| match (result, chunking) {
                (Ok(response), Some(chunking)) => chunked_events(response, chunking),
                (Ok(response), None) => {
                    stream::iter(response_as_events(response).into_iter().map(Ok)).boxed()
                }
                (Err(e), _) => stream::iter([Err(e)]).boxed(),
            })
            .boxed()
    }

    fn provider(&self) -> &str {
        "function"
    }

    fn model(&self) -> &str {
        &self.model
    }
}
