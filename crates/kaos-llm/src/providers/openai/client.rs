//! [`OpenAiClient`]: OpenAI Chat Completions over `reqwest`, also for any
//! OpenAI-compatible server (Ollama, vLLM, llama.cpp, ...).

use std::fmt;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};

use super::convert::{Flavour, request_body, response};
use super::stream::OpenAiDecoder;
use super::wire::ChatResponse;
use crate::client::{LlmClient, ServerAddress, StreamEvent};
use crate::error::LlmError;
use crate::providers::http::{HttpLimits, Transport, join_url, with_trace_headers};
use crate::retry::RetryPolicy;
use crate::types::{LlmRequest, ProviderResponse};

/// The environment variable holding the OpenAI API key.
pub const OPENAI_API_KEY_ENV: &str = "OPENAI_API_KEY";
/// The environment variable overriding the OpenAI base URL (with `/v1`).
pub const OPENAI_BASE_URL_ENV: &str = "OPENAI_BASE_URL";
/// The optional key for OpenAI-compatible servers (kept apart from `OPENAI_API_KEY` so a
/// real OpenAI key is never sent to some other server).
pub const OPENAI_COMPATIBLE_API_KEY_ENV: &str = "OPENAI_COMPATIBLE_API_KEY";
/// The default base URL.
pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A model behind OpenAI Chat Completions (`POST {base}/chat/completions`), on
/// api.openai.com (provider `openai`) or on an OpenAI-compatible server (provider
/// `openai-compatible`, see [`OpenAiClient::compatible`]).
///
/// The API key is a secret: it is sent only in the `Authorization` header and never appears
/// in `Debug`, `Display`, logs or errors.
#[derive(Clone)]
pub struct OpenAiClient {
    model: String,
    base_url: String,
    flavour: Flavour,
    transport: Transport,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.transport.key.is_some() {
            "[REDACTED]"
        } else {
            "(none)"
        };
        f.debug_struct("OpenAiClient")
            .field("provider", &self.transport.provider)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &key)
            .field("timeout", &self.transport.timeout)
            .field("retry", &self.transport.retry)
            .field("limits", &self.transport.limits)
            .finish()
    }
}

impl fmt::Display for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.flavour {
            Flavour::OpenAi => write!(f, "openai:{}", self.model),
            Flavour::Compatible => write!(f, "openai-compatible:{}@{}", self.model, self.base_url),
        }
    }
}

impl OpenAiClient {
    /// A client for `model` on api.openai.com with this key.
    pub fn new(model: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            base_url: OPENAI_DEFAULT_BASE_URL.to_owned(),
            flavour: Flavour::OpenAi,
            transport: Transport::new("openai", Some(SecretString::from(api_key.into()))),
        }
    }

    /// A client for an OpenAI-compatible server at `base_url` (with `/v1`, e.g.
    /// `http://127.0.0.1:11434/v1`), without a key (add one with
    /// [`with_api_key`](Self::with_api_key)). Its provider name is `openai-compatible`.
    pub fn compatible(model: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            flavour: Flavour::Compatible,
            transport: Transport::new("openai-compatible", None),
        }
    }

    /// A client whose key comes from `OPENAI_API_KEY` and base URL from `OPENAI_BASE_URL`
    /// (if set). A missing key is a [`LlmError::Config`] naming the variable.
    pub fn from_env(model: impl Into<String>) -> Result<Self, LlmError> {
        Self::from_lookup(model, |name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(
        model: impl Into<String>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, LlmError> {
        let key = lookup(OPENAI_API_KEY_ENV)
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                LlmError::Config(format!(
                    "{OPENAI_API_KEY_ENV} is not set; export your OpenAI API key to use openai models"
                ))
            })?;
        let mut client = Self::new(model, key.trim());
        if let Some(base) = lookup(OPENAI_BASE_URL_ENV).filter(|b| !b.trim().is_empty()) {
            client = client.with_base_url(base.trim());
        }
        Ok(client)
    }

    /// Sets (or replaces) the API key.
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.transport.key = Some(SecretString::from(api_key.into()));
        self
    }

    /// Sets the base URL (with `/v1`).
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
        let url = join_url(&self.base_url, "chat/completions");
        let mut request = self.transport.http.post(url).json(body);
        if let Some(key) = &self.transport.key {
            request = request.bearer_auth(key.expose_secret());
        }
        with_trace_headers(request)
    }

    fn timeout_for(&self, request: &LlmRequest) -> Duration {
        request.options.timeout.unwrap_or(self.transport.timeout)
    }
}

#[async_trait::async_trait]
impl LlmClient for OpenAiClient {
    async fn complete(&self, request: &LlmRequest) -> Result<ProviderResponse, LlmError> {
        let started = Instant::now();
        let body = request_body(&self.model, request, false, self.flavour);
        let build = || self.builder(&body);
        let (status, bytes) = self
            .transport
            .post_json(&build, self.timeout_for(request))
            .await?;
        let wire: ChatResponse = serde_json::from_slice(&bytes)
            .map_err(|e| self.transport.decode_error(status, e, &bytes))?;
        let mut answer =
            response(wire, &self.transport.provider, &self.model).ok_or_else(|| {
                self.transport
                    .decode_error(status, "no choices in the answer", &bytes)
            })?;
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
        let body = request_body(&self.model, request, true, self.flavour);
        let decoder = OpenAiDecoder::new(&self.transport.provider, &self.model);
        self.transport.sse_stream(
            move || self.builder(&body),
            self.timeout_for(request),
            decoder,
        )
    }
}
