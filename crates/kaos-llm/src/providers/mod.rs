//! HTTP providers: Anthropic Messages and OpenAI Chat Completions (also any
//! OpenAI-compatible server), over `reqwest` with retries, timeouts and SSE streaming.
//!
//! [`create_client`] builds the client a [model spec](crate::ModelSpec) names, reading keys
//! and base URLs from the environment.

mod anthropic;
pub(crate) mod http;
mod openai;
#[cfg(test)]
mod proptests;

use std::sync::Arc;

pub use anthropic::{
    ANTHROPIC_API_KEY_ENV, ANTHROPIC_BASE_URL_ENV, ANTHROPIC_DEFAULT_BASE_URL, ANTHROPIC_VERSION,
    AnthropicClient,
};
pub use http::{DEFAULT_TIMEOUT, HttpLimits};
pub use openai::{
    OPENAI_API_KEY_ENV, OPENAI_BASE_URL_ENV, OPENAI_COMPATIBLE_API_KEY_ENV,
    OPENAI_DEFAULT_BASE_URL, OpenAiClient,
};

use crate::client::LlmClient;
use crate::error::LlmError;
use crate::spec::ModelSpec;

/// Builds the client `spec` names (see [`ModelSpec::parse`]), with keys and base URLs from
/// the environment: `ANTHROPIC_API_KEY`/`ANTHROPIC_BASE_URL`, `OPENAI_API_KEY`/
/// `OPENAI_BASE_URL`, and the optional `OPENAI_COMPATIBLE_API_KEY` for
/// `openai-compatible:` specs. `function:` specs are a [`LlmError::Config`]: function models
/// are registered on the runtime.
pub fn create_client(spec: &str) -> Result<Arc<dyn LlmClient>, LlmError> {
    create_client_with(spec, |name| std::env::var(name).ok())
}

/// Like [`create_client`], reading variables through `lookup` (for tests and other
/// configuration sources).
pub fn create_client_with(
    spec: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn LlmClient>, LlmError> {
    match ModelSpec::parse(spec)? {
        ModelSpec::Anthropic { model } => {
            Ok(Arc::new(AnthropicClient::from_lookup(model, lookup)?))
        }
        ModelSpec::OpenAi { model } => Ok(Arc::new(OpenAiClient::from_lookup(model, lookup)?)),
        ModelSpec::OpenAiCompatible { model, base_url } => {
            let mut client = OpenAiClient::compatible(model, base_url);
            if let Some(key) =
                lookup(OPENAI_COMPATIBLE_API_KEY_ENV).filter(|k| !k.trim().is_empty())
            {
                client = client.with_api_key(key.trim());
            }
            Ok(Arc::new(client))
        }
        ModelSpec::Function { name } => Err(LlmError::Config(format!(
            "`function:{name}` cannot be built from a spec: function models must be registered \
             on the runtime (KaosRuntime::with_client) under that name"
        ))),
    }
}
