//! Integration tests of kaos-llm (one binary; each module is a topic).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod anthropic;
mod fallback;
mod faults;
mod function;
mod openai;
mod pricing;
mod properties;
mod retry;
mod secrets;
mod spec;
mod stream_text;
mod structured;
mod util;
