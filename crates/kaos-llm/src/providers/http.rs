//! What the HTTP providers share: sending with retries and timeouts, mapping error bodies to
//! [`LlmError`]s, keeping API keys out of every message, and parsing server-sent events.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::client::StreamEvent;
use crate::error::LlmError;
use crate::retry::{RetryPolicy, parse_retry_after, seconds_to_duration};
use crate::types::ProviderResponse;

/// `request` with the current OpenTelemetry context's propagation headers (feature `otel`),
/// written by the global text-map propagator: W3C `traceparent`/`tracestate` once the
/// application set one (`opentelemetry::global::set_text_map_propagator`; the `kaos` CLI does
/// when it exports spans), nothing otherwise. Inside a turn the current context is the model
/// call's `chat` span, so a gateway or proxy that continues traces (LiteLLM, an
/// OpenAI-compatible server) nests its spans under it.
pub(crate) fn with_trace_headers(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    #[cfg(feature = "otel")]
    {
        struct Headers(Vec<(String, String)>);
        impl opentelemetry::propagation::Injector for Headers {
            fn set(&mut self, key: &str, value: String) {
                self.0.push((key.to_string(), value));
            }
        }
        let mut headers = Headers(Vec::new());
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&opentelemetry::Context::current(), &mut headers);
        });
        headers
            .0
            .into_iter()
            .fold(request, |r, (k, v)| r.header(k, v))
    }
    #[cfg(not(feature = "otel"))]
    request
}

/// The default request timeout of the HTTP providers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How much of a body an error message quotes.
const PREVIEW_CHARS: usize = 300;

/// How much of a non-2xx body is read for its error message (the rest is dropped).
const ERROR_BODY_BYTES: usize = 64 * 1024;

/// Size limits on what a provider may send; over a limit the answer fails with
/// [`LlmError::ResponseTooLarge`] instead of growing memory. The defaults are far above any
/// real model answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The largest response body, and the most bytes one stream may carry in total
    /// (default 32 MiB).
    pub max_body_bytes: usize,
    /// The longest server-sent-event line, and the most `data` one event may gather
    /// (default 4 MiB).
    pub max_sse_line_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_sse_line_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The transport of one HTTP client: provider name, connection pool, timeout, retries and
/// the key to scrub from anything that leaves the client.
#[derive(Clone)]
pub(crate) struct Transport {
    pub provider: String,
    pub http: reqwest::Client,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub key: Option<SecretString>,
    pub limits: HttpLimits,
}

impl Transport {
    pub fn new(provider: impl Into<String>, key: Option<SecretString>) -> Self {
        Self {
            provider: provider.into(),
            http: reqwest::Client::new(),
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            key,
            limits: HttpLimits::default(),
        }
    }

    /// Replaces the API key in `text` by `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) if !key.expose_secret().is_empty() => {
                text.replace(key.expose_secret(), "[REDACTED]")
            }
            _ => text.to_owned(),
        }
    }

    fn transport_error(&self, error: reqwest::Error, timeout: Duration) -> LlmError {
        if error.is_timeout() {
            LlmError::Timeout {
                provider: self.provider.clone(),
                timeout,
            }
        } else {
            LlmError::Transport {
                provider: self.provider.clone(),
                message: self.redact(&error_chain(&error)),
            }
        }
    }

    /// The typed error of a non-2xx answer.
    pub fn status_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> LlmError {
        let message = self.redact(&error_message(body));
        if status == 401 || status == 403 {
            LlmError::Auth {
                provider: self.provider.clone(),
                status,
                message,
            }
        } else {
            LlmError::Provider {
                provider: self.provider.clone(),
                status,
                message,
                retry_after: retry_after(headers),
            }
        }
    }

    /// A 2xx body we could not understand.
    pub fn decode_error(
        &self,
        status: u16,
        message: impl std::fmt::Display,
        body: &[u8],
    ) -> LlmError {
        LlmError::Decode {
            provider: self.provider.clone(),
            status,
            message: self.redact(&message.to_string()),
            body_preview: self.redact(&preview(body)),
        }
    }

    /// The error for an answer over a size limit.
    pub fn too_large(&self, what: &str, limit: usize, setting: &'static str) -> LlmError {
        LlmError::ResponseTooLarge {
            provider: self.provider.clone(),
            what: what.to_owned(),
            limit,
            setting,
        }
    }

    fn timeout_error(&self, timeout: Duration) -> LlmError {
        LlmError::Timeout {
            provider: self.provider.clone(),
            timeout,
        }
    }

    /// One attempt: sends the request and returns the 2xx response (the body not read yet),
    /// or the typed error. `timeout` is the request's whole budget, `deadline` when it ends.
    async fn send_once(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<reqwest::Response, LlmError> {
        let until = tokio::time::Instant::from_std(deadline);
        let response = match tokio::time::timeout_at(until, request.send()).await {
            Ok(result) => result.map_err(|e| self.transport_error(e, timeout))?,
            Err(_) => return Err(self.timeout_error(timeout)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = tokio::time::timeout_at(until, read_prefix(response, ERROR_BODY_BYTES))
            .await
            .unwrap_or_default();
        Err(self.status_error(status.as_u16(), &headers, &body))
    }

    /// Reads a 2xx body in chunks, failing once it passes `max_body_bytes` (an announced
    /// `Content-Length` over the limit fails before anything is read).
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        timeout: Duration,
    ) -> Result<Vec<u8>, LlmError> {
        let limit = self.limits.max_body_bytes;
        let too_large = || self.too_large("response body", limit, "max_body_bytes");
        let announced = response.content_length().unwrap_or(0);
        if announced > u64::try_from(limit).unwrap_or(u64::MAX) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e, timeout))?
        {
            if body.len().saturating_add(chunk.len()) > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Sends a JSON POST with retries and returns the status and body of the 2xx answer.
    /// `timeout` bounds the whole call, retries and their waits included.
    pub async fn post_json(
        &self,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Send + Sync),
        timeout: Duration,
    ) -> Result<(u16, Bytes), LlmError> {
        let deadline = deadline_after(timeout);
        self.retry
            .run_until(Some(deadline), |_attempt| async {
                let response = self.send_once(build(), deadline, timeout).await?;
                let status = response.status().as_u16();
                let until = tokio::time::Instant::from_std(deadline);
                match tokio::time::timeout_at(until, self.read_body(response, timeout)).await {
                    Ok(Ok(body)) => Ok((status, Bytes::from(body))),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(self.timeout_error(timeout)),
                }
            })
            .await
    }

    /// Sends a streaming POST (retrying until the 2xx headers arrive) and turns its
    /// server-sent events into [`StreamEvent`]s with `decoder`. Nothing is retried once an
    /// event has been yielded; a break after that is [`LlmError::StreamInterrupted`].
    pub fn sse_stream<'a, D, B>(
        &'a self,
        build: B,
        timeout: Duration,
        decoder: D,
    ) -> BoxStream<'a, Result<StreamEvent, LlmError>>
    where
        D: StreamDecoder + 'a,
        B: Fn() -> reqwest::RequestBuilder + Send + Sync + 'a,
    {
        let state = StreamState {
            transport: self,
            build,
            timeout,
            decoder,
            body: None,
            status: 0,
            parser: SseParser::new(self.limits.max_sse_line_bytes),
            streamed: 0,
            pending: VecDeque::new(),
            started: Instant::now(),
            seen_events: false,
            head: Vec::new(),
            finished: false,
        };
        stream::unfold(state, |mut st| async move {
            loop {
                if let Some(item) = st.pending.pop_front() {
                    return Some((item, st));
                }
                if st.finished {
                    return None;
                }
                st.step().await;
            }
        })
        .boxed()
    }
}

/// Turns a provider's server-sent events into [`StreamEvent`]s and the final response.
pub(crate) trait StreamDecoder: Send {
    /// Handles one event, pushing what it yields to `out`.
    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), LlmError>;
    /// Whether the provider's end-of-stream marker was seen.
    fn is_complete(&self) -> bool;
    /// Whether the stream may end here without the marker (the answer is whole).
    fn can_finish_at_eof(&self) -> bool;
    /// The assembled response.
    fn finish(&mut self, latency: Duration) -> ProviderResponse;
}

struct StreamState<'a, D, B> {
    transport: &'a Transport,
    build: B,
    timeout: Duration,
    decoder: D,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    status: u16,
    parser: SseParser,
    streamed: usize,
    pending: VecDeque<Result<StreamEvent, LlmError>>,
    started: Instant,
    seen_events: bool,
    head: Vec<u8>,
    finished: bool,
}

impl<D, B> StreamState<'_, D, B>
where
    D: StreamDecoder,
    B: Fn() -> reqwest::RequestBuilder + Send + Sync,
{
    fn fail(&mut self, error: LlmError) {
        self.pending.push_back(Err(error));
        self.finished = true;
    }

    fn interrupted(&self, message: impl Into<String>) -> LlmError {
        LlmError::StreamInterrupted {
            provider: self.transport.provider.clone(),
            message: self.transport.redact(&message.into()),
        }
    }

    fn handle_events(&mut self, events: Vec<SseEvent>) {
        let mut out = VecDeque::new();
        for event in events {
            self.seen_events = true;
            if let Err(e) = self.decoder.on_event(event, &mut out) {
                self.pending.extend(out.drain(..).map(Ok));
                self.fail(e);
                return;
            }
            if self.decoder.is_complete() {
                break;
            }
        }
        self.pending.extend(out.into_iter().map(Ok));
        if self.decoder.is_complete() {
            let response = self.decoder.finish(self.started.elapsed());
            self.pending.push_back(Ok(StreamEvent::Done(response)));
            self.finished = true;
        }
    }

    async fn step(&mut self) {
        let Some(body) = self.body.as_mut() else {
            let transport = self.transport;
            let build = &self.build;
            let timeout = self.timeout;
            let deadline = deadline_after(timeout);
            let connected = transport
                .retry
                .run_until(Some(deadline), |_attempt| {
                    transport.send_once(build(), deadline, timeout)
                })
                .await;
            match connected {
                Ok(response) => {
                    self.status = response.status().as_u16();
                    self.body = Some(response.bytes_stream().boxed());
                }
                Err(e) => self.fail(e),
            }
            return;
        };
        match tokio::time::timeout(self.timeout, body.next()).await {
            Err(_) => {
                let e = if self.seen_events {
                    self.interrupted(format!("no data for {:?}", self.timeout))
                } else {
                    LlmError::Timeout {
                        provider: self.transport.provider.clone(),
                        timeout: self.timeout,
                    }
                };
                self.fail(e);
            }
            Ok(Some(Ok(chunk))) => {
                if self.head.len() < PREVIEW_CHARS {
                    self.head
                        .extend_from_slice(&chunk[..chunk.len().min(PREVIEW_CHARS)]);
                }
                self.streamed = self.streamed.saturating_add(chunk.len());
                let limits = self.transport.limits;
                if self.streamed > limits.max_body_bytes {
                    let e =
                        self.transport
                            .too_large("stream", limits.max_body_bytes, "max_body_bytes");
                    self.body = None;
                    self.fail(e);
                    return;
                }
                match self.parser.feed(&chunk) {
                    Ok(events) => self.handle_events(events),
                    Err(LineTooLong) => {
                        let e = self.transport.too_large(
                            "server-sent event line",
                            limits.max_sse_line_bytes,
                            "max_sse_line_bytes",
                        );
                        self.body = None;
                        self.fail(e);
                    }
                }
            }
            Ok(Some(Err(e))) => {
                let e = self.interrupted(error_chain(&e));
                self.fail(e);
            }
            Ok(None) => {
                let Ok(events) = self.parser.finish() else {
                    let limit = self.transport.limits.max_sse_line_bytes;
                    let e = self.transport.too_large(
                        "server-sent event line",
                        limit,
                        "max_sse_line_bytes",
                    );
                    self.fail(e);
                    return;
                };
                self.handle_events(events);
                if self.finished {
                    return;
                }
                if self.decoder.can_finish_at_eof() {
                    let response = self.decoder.finish(self.started.elapsed());
                    self.pending.push_back(Ok(StreamEvent::Done(response)));
                    self.finished = true;
                } else if !self.seen_events {
                    let e = self.transport.decode_error(
                        self.status,
                        "the answer contains no server-sent events",
                        &self.head,
                    );
                    self.fail(e);
                } else {
                    let e = self.interrupted("the stream ended before the answer was complete");
                    self.fail(e);
                }
            }
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// A server-sent-event line (or one event's gathered `data`) longer than the parser's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineTooLong;

/// An incremental server-sent-events parser (bytes may split anywhere). Work is linear in
/// the input, and memory bounded by the line limit: a line or an event's data that grows
/// past it is an error, not an allocation.
#[derive(Debug)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    max_line: usize,
    event: Option<String>,
    data: Option<String>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(HttpLimits::default().max_sse_line_bytes)
    }
}

impl SseParser {
    /// A parser refusing lines (and event data) longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            max_line,
            event: None,
            data: None,
        }
    }

    /// Feeds bytes; returns the events completed by them.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        let mut from = self.scanned;
        while let Some(offset) = self.buf[from..].iter().position(|b| *b == b'\n') {
            let end = from + offset;
            if end - start > self.max_line {
                return Err(self.overflow());
            }
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            self.line(line.trim_end_matches('\r'), &mut events)?;
            start = end + 1;
            from = start;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > self.max_line {
            return Err(self.overflow());
        }
        Ok(events)
    }

    /// Ends the input: an event not closed by a blank line still counts.
    pub fn finish(&mut self) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut events = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.scanned = 0;
            let line = String::from_utf8_lossy(&rest);
            self.line(line.trim_end_matches('\r'), &mut events)?;
        }
        self.line("", &mut events)?;
        Ok(events)
    }

    fn overflow(&mut self) -> LineTooLong {
        self.buf = Vec::new();
        self.scanned = 0;
        self.data = None;
        LineTooLong
    }

    fn line(&mut self, line: &str, events: &mut Vec<SseEvent>) -> Result<(), LineTooLong> {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                events.push(SseEvent {
                    event: self.event.take(),
                    data,
                });
            }
            self.event = None;
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    if data.len().saturating_add(value.len()) >= self.max_line {
                        return Err(self.overflow());
                    }
                    data.push('\n');
                    data.push_str(value);
                }
                // The line limit counts raw bytes; lossy decoding turns each invalid byte
                // into a 3-byte U+FFFD, so the decoded value is checked again.
                None if value.len() > self.max_line => return Err(self.overflow()),
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        Ok(())
    }
}

/// The provider's message in an error body (`{"error":{"message":..}}`, `{"error":".."}`,
/// `{"message":..}`), else the start of the body.
pub(crate) fn error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let candidates = [
            value.pointer("/error/message"),
            value.get("error").filter(|e| e.is_string()),
            value.get("message").filter(|m| m.is_string()),
            value.get("detail").filter(|m| m.is_string()),
        ];
        if let Some(Value::String(message)) = candidates.into_iter().flatten().next() {
            return message.clone();
        }
    }
    let text = preview(body);
    if text.trim().is_empty() {
        "(empty body)".to_owned()
    } else {
        text
    }
}

/// The first characters of a body, lossily decoded.
pub(crate) fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(PREVIEW_CHARS * 4)]);
    text.chars().take(PREVIEW_CHARS).collect()
}

/// `retry-after-ms` or `retry-after` (seconds or HTTP date).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ms = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok());
    if let Some(wait) = ms.and_then(|ms| seconds_to_duration(ms / 1000.0)) {
        return Some(wait);
    }
    header("retry-after").and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// The instant `timeout` from now (far in the future when that cannot be represented).
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365 * 100)))
        .unwrap_or(now)
}

/// Reads at most `limit` bytes of a body (for error messages; the rest is dropped).
async fn read_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    body
}

/// An error and its sources, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Joins a base URL and a path with exactly one slash.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Parses tool-call arguments: JSON if they are JSON, `{}` if empty, else the raw text as
/// a JSON string (never an error: a model's bad JSON must not crash the turn).
pub(crate) fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_anywhere() {
        let input =
            b"event: a\ndata: {\"x\":1}\n\n: comment\r\ndata: one\r\ndata: two\r\n\r\ndata: [DONE]";
        for split in 0..input.len() {
            let mut parser = SseParser::default();
            let mut events = parser.feed(&input[..split]).unwrap();
            events.extend(parser.feed(&input[split..]).unwrap());
            events.extend(parser.finish().unwrap());
            assert_eq!(
                events,
                vec![
                    SseEvent {
                        event: Some("a".into()),
                        data: "{\"x\":1}".into()
                    },
                    SseEvent {
                        event: None,
                        data: "one\ntwo".into()
                    },
                    SseEvent {
                        event: None,
                        data: "[DONE]".into()
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn error_messages_are_extracted() {
        assert_eq!(
            error_message(br#"{"type":"error","error":{"type":"x","message":"bad key"}}"#),
            "bad key"
        );
        assert_eq!(
            error_message(br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message(b"<html>oops</html>"), "<html>oops</html>");
        assert_eq!(error_message(b""), "(empty body)");
    }

    #[test]
    fn arguments_never_fail() {
        assert_eq!(parse_arguments(r#"{"a":1}"#), serde_json::json!({"a":1}));
        assert_eq!(parse_arguments(""), serde_json::json!({}));
        assert_eq!(parse_arguments("{oops"), Value::String("{oops".into()));
    }
}
