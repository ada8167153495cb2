//! OpenAI Chat Completions (and OpenAI-compatible servers): conversion, client, streaming.

mod client;
mod convert;
mod stream;
mod wire;

#[cfg(test)]
pub(crate) use stream::OpenAiDecoder;

pub use client::{
    OPENAI_API_KEY_ENV, OPENAI_BASE_URL_ENV, OPENAI_COMPATIBLE_API_KEY_ENV,
    OPENAI_DEFAULT_BASE_URL, OpenAiClient,
};
