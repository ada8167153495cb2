//! Errors of the LLM layer.

use std::time::Duration;

/// Anything that can go wrong in a model call.
///
/// Provider errors keep the HTTP status and the provider's own message; no variant ever
/// contains an API key.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The provider rejected the credentials (HTTP 401/403). Never retried.
    #[error("{provider}: authentication failed (HTTP {status}): {message}")]
    Auth {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The provider answered with an error status (429, 5xx, 4xx other than auth).
    #[error("{provider}: HTTP {status}: {message}")]
    Provider {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// The provider's message (or the start of the body).
        message: String,
        /// The `Retry-After` the provider asked for, if any.
        retry_after: Option<Duration>,
    },
    /// The request could not be sent or the answer not received (connection refused,
    /// reset, DNS, ...).
    #[error("{provider}: transport error: {message}")]
    Transport {
        /// Provider name.
        provider: String,
        /// What happened.
        message: String,
    },
    /// No answer within the timeout.
    #[error("{provider}: no answer within {timeout:?}")]
    Timeout {
        /// Provider name.
        provider: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The provider answered 2xx with a body we could not understand.
    #[error(
        "{provider}: could not decode the answer (HTTP {status}): {message}; body starts with: {body_preview:?}"
    )]
    Decode {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// The decoder's message.
        message: String,
        /// The first bytes of the body.
        body_preview: String,
    },
    /// A stream broke after it had started yielding.
    #[error("{provider}: stream interrupted: {message}")]
    StreamInterrupted {
        /// Provider name.
        provider: String,
        /// What happened.
        message: String,
    },
    /// Every retry failed; `last` is the final error.
    #[error("gave up after {attempts} attempts: {last}")]
    RetryExhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<LlmError>,
    },
    /// The provider asked to wait longer before a retry (`Retry-After`) than the request's
    /// deadline leaves, so the call failed at once instead of sleeping.
    #[error(
        "{last}; the provider asked to wait {} before retrying, more than the {} left before the request deadline",
        wait_text(*.requested),
        wait_text(*.remaining)
    )]
    RetryAfterExceedsDeadline {
        /// The wait the provider asked for (saturated at [`Duration::MAX`]).
        requested: Duration,
        /// What was left of the request deadline.
        remaining: Duration,
        /// The error that carried the `Retry-After`.
        last: Box<LlmError>,
    },
    /// The provider sent more than a configured size limit allows
    /// ([`HttpLimits`](crate::providers::HttpLimits)); reading stopped there.
    #[error(
        "{provider}: the {what} exceeds the limit of {limit} bytes (HttpLimits::{setting}); reading stopped"
    )]
    ResponseTooLarge {
        /// Provider name.
        provider: String,
        /// What was too large (`response body`, `error body`, `server-sent event line`, ...).
        what: String,
        /// The limit in bytes.
        limit: usize,
        /// The [`HttpLimits`](crate::providers::HttpLimits) field that sets it.
        setting: &'static str,
    },
    /// A model spec could not be understood.
    #[error("unknown model spec {spec:?}: {message}")]
    InvalidModelSpec {
        /// The spec as given.
        spec: String,
        /// What was wrong, and the accepted forms.
        message: String,
    },
    /// Configuration is missing or wrong (e.g. no API key in the environment).
    #[error("configuration error: {0}")]
    Config(String),
    /// A [`FunctionClient`](crate::FunctionClient) closure failed or its script ran out.
    #[error("function client: {0}")]
    Function(String),
    /// The model's output did not match the requested format, even after a corrective retry.
    #[error("invalid model output after {attempts} attempt(s): {message}")]
    InvalidOutput {
        /// How many attempts were made.
        attempts: u32,
        /// The last validation error.
        message: String,
        /// The last raw text the model sent.
        raw: String,
        /// Tokens spent on all attempts (so totals still add up).
        usage: crate::types::Usage,
    },
}

impl LlmError {
    /// Whether a retry may help (429, 500, 502, 503, 504, transport errors and timeouts).
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Provider { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
            LlmError::Transport { .. } | LlmError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// Whether a [`FallbackClient`](crate::FallbackClient) should try the next client: any
    /// provider, transport or exhausted-retry error (not configuration or output errors).
    pub fn is_failover(&self) -> bool {
        matches!(
            self,
            LlmError::Provider { .. }
                | LlmError::Transport { .. }
                | LlmError::Timeout { .. }
                | LlmError::RetryExhausted { .. }
                | LlmError::RetryAfterExceedsDeadline { .. }
                | LlmError::ResponseTooLarge { .. }
                | LlmError::StreamInterrupted { .. }
                | LlmError::Auth { .. }
        )
    }

    /// The HTTP status the provider answered with, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            LlmError::Auth { status, .. }
            | LlmError::Provider { status, .. }
            | LlmError::Decode { status, .. } => Some(*status),
            LlmError::RetryExhausted { last, .. }
            | LlmError::RetryAfterExceedsDeadline { last, .. } => last.status(),
            _ => None,
        }
    }

    /// The `Retry-After` the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Provider { retry_after, .. } => *retry_after,
            LlmError::RetryAfterExceedsDeadline { requested, .. } => Some(*requested),
            _ => None,
        }
    }

    /// A short, stable name for the kind of failure, used as `error_type` in run errors:
    /// `auth_failure`, `rate_limit`, `service_unavailable`, `provider_error`,
    /// `transport_error`, `timeout`, `decode_error`, `invalid_output`, `config_error`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Auth { .. } => "auth_failure",
            LlmError::Provider { status: 429, .. } => "rate_limit",
            LlmError::Provider {
                status: 500 | 502 | 503 | 504 | 529,
                ..
            } => "service_unavailable",
            LlmError::Provider { .. } => "provider_error",
            LlmError::Transport { .. } => "transport_error",
            LlmError::Timeout { .. } => "timeout",
            LlmError::Decode { .. } => "decode_error",
            LlmError::StreamInterrupted { .. } => "stream_interrupted",
            LlmError::RetryExhausted { last, .. }
            | LlmError::RetryAfterExceedsDeadline { last, .. } => last.kind(),
            LlmError::ResponseTooLarge { .. } => "response_too_large",
            LlmError::InvalidModelSpec { .. } | LlmError::Config(_) => "config_error",
            LlmError::Function(_) => "function_error",
            LlmError::InvalidOutput { .. } => "invalid_output",
        }
    }

    /// Whether the failure is in the infrastructure (credentials, provider, network,
    /// configuration) rather than in what the model said.
    pub fn is_infrastructure(&self) -> bool {
        !matches!(
            self,
            LlmError::InvalidOutput { .. } | LlmError::Decode { .. }
        )
    }

    /// A one-line hint for the user on how to recover.
    pub fn recovery_hint(&self) -> &'static str {
        match self.kind() {
            "auth_failure" => {
                "Check the API key in the environment (ANTHROPIC_API_KEY / OPENAI_API_KEY) and the model spec."
            }
            "rate_limit" => "The provider is rate limiting; wait and retry, or lower concurrency.",
            "service_unavailable" => {
                "The provider is unavailable; retry later or configure a fallback model."
            }
            "transport_error" | "timeout" => "Check network access and the provider's base URL.",
            "config_error" => "Fix the model spec or configuration named in the message.",
            "response_too_large" => {
                "The provider's answer was larger than allowed; raise the client's HttpLimits if it is legitimate."
            }
            "invalid_output" | "decode_error" => {
                "The model's output was not in the expected format; try a stronger model."
            }
            _ => "See the message for details.",
        }
    }
}

/// A wait for error messages: whole seconds as `86400 s`, fractions as `1.500 s`, and the
/// saturated maximum as what it is (more than could be represented).
fn wait_text(wait: Duration) -> String {
    if wait == Duration::MAX {
        format!("more than {} s", u64::MAX)
    } else if wait.subsec_nanos() == 0 {
        format!("{} s", wait.as_secs())
    } else {
        format!("{:.3} s", wait.as_secs_f64())
    }
}
