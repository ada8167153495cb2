//! [`AnthropicClient`]: the Anthropic Messages API over `reqwest`.

use std::fmt;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};

use super::convert::{request_body, response};
use super::stream::AnthropicDecoder;
use super::wire::MessageResponse;
use crate::client::{LlmClient, ServerAddress, StreamEvent};
use crate::error::LlmError;
use crate::providers::http::{HttpLimits, Transport, join_url, with_trace_headers};
use crate::retry::RetryPolicy;
use crate::types::{LlmRequest, ProviderResponse};

/// The environment variable holding the Anthropic API key.
pub const ANTHROPIC_API_KEY_ENV: &str = "ANTHROPIC_API_KEY";
/// The environment variable overriding the base URL (without `/v1`, like the official SDK).
pub const ANTHROPIC_BASE_URL_ENV: &str = "ANTHROPIC_BASE_URL";
/// The default base URL.
pub const ANTHROPIC_DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version header kaos speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A Claude model behind the Anthropic Messages API (`POST {base}/v1/messages`).
///
/// The API key is a secret: it is sent only in the `x-api-key` header and never appears in
/// `Debug`, `Display`, logs or errors.
#[derive(Clone)]
pub struct AnthropicClient {
    model: String,
    base_url: String,
    transport: Transport,
}

impl fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicClient")
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &"[REDACTED]")
            .field("timeout", &self.transport.timeout)
            .field("retry", &self.transport.retry)
            .field("limits", &self.transport.limits)
            .finish()
    }
}

impl fmt::Display for AnthropicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "anthropic:{}", self.model)
    }
}

impl AnthropicClient {
    /// A client for `model` with this key, talking to `https://api.anthropic.com`.
    pub fn new(model: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            base_url: ANTHROPIC_DEFAULT_BASE_URL.to_owned(),
            transport: Transport::new("anthropic", Some(SecretString::from(api_key.into()))),
        }
    }

    /// A client whose key comes from `ANTHROPIC_API_KEY` and base URL from
    /// `ANTHROPIC_BASE_URL` (if set). A missing key is a [`LlmError::Config`] naming the
    /// variable.
    pub fn from_env(model: impl Into<String>) -> Result<Self, LlmError> {
        Self::from_lookup(model, |name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup` (for tests and
    /// other configuration sources).
    pub fn from_lookup(
        model: impl Into<String>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, LlmError> {
        let key = lookup(ANTHROPIC_API_KEY_ENV)
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                LlmError::Config(format!(
                    "{ANTHROPIC_API_KEY_ENV} is not set; export your Anthropic API key to use anthropic models"
                ))
            })?;
        let mut client = Self::new(model, key.trim());
        if let Some(base) = lookup(ANTHROPIC_BASE_URL_ENV).filter(|b| !b.trim().is_empty()) {
            client = client.with_base_url(base.trim());
        }
        Ok(client)
    }

    /// Sets the base URL (without `/v1`).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Sets the request timeout (default 120 s); `RequestOptions::timeout` overrides it.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.transport.timeout = timeout;
        self
    }

    /// Sets the retry policy (default: 3 retries, base 1 s, max 60 s).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.transport.retry = retry;
        self
    }

    /// Sets the size limits on answers (default: 32 MiB bodies and streams, 4 MiB
    /// server-sent-event lines); over a limit is [`LlmError::ResponseTooLarge`].
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.transport.limits = limits;
        self
    }

    /// Uses this `reqwest` client (to share a connection pool or set a proxy).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.transport.http = http;
        self
    }

    /// The base URL in use.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn builder(&self, body: &serde_json::Value) -> reqwest::RequestBuilder {
        let url = join_url(&self.base_url, "v1/messages");
        let mut request = self
            .transport
            .http
            .post(url)
            .header("anthropic-version", ANTHROPIC_VERSION)
            .header("content-type", "application/json")
            .json(body);
        if let Some(key) = &self.transport.key {
            request = request.header("x-api-key", key.expose_secret());
        }
        with_trace_headers(request)
    }

    fn timeout_for(&self, request: &LlmRequest) -> Duration {
        request.options.timeout.unwrap_or(self.transport.timeout)
    }
}

#[async_trait::async_trait]
impl LlmClient for AnthropicClient {
    async fn complete(&self, request: &LlmRequest) -> Result<ProviderResponse, LlmError> {
        let started = Instant::now();
        let body = request_body(&self.model, request, false);
        let build = || self.builder(&body);
        let (status, bytes) = self
            .transport
            .post_json(&build, self.timeout_for(request))
            .await?;
        let wire: MessageResponse = serde_json::from_slice(&bytes)
            .map_err(|e| self.transport.decode_error(status, e, &bytes))?;
        let mut answer = response(wire, &self.transport.provider, &self.model);
        answer.latency = started.elapsed();
        Ok(answer)
    }

    fn provider(&self) -> &str {
        &self.transport.provider
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn server_address(&self) -> Option<ServerAddress> {
        ServerAddress::of_url(&self.base_url)
    }

    fn stream<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxStream<'a, Result<StreamEvent, LlmError>> {
        let body = request_body(&self.model, request, true);
        let decoder = AnthropicDecoder::new(&self.transport.provider, &self.model);
        self.transport.sse_stream(
            move || self.builder(&body),
            self.timeout_for(request),
            decoder,
        )
    }
}
