//! The Anthropic Messages API: request/response conversion, the client and SSE streaming.

mod client;
mod convert;
mod stream;
mod wire;

#[cfg(test)]
pub(crate) use stream::AnthropicDecoder;

pub use client::{
    ANTHROPIC_API_KEY_ENV, ANTHROPIC_BASE_URL_ENV, ANTHROPIC_DEFAULT_BASE_URL, ANTHROPIC_VERSION,
    AnthropicClient,
};
