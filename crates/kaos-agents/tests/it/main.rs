//! Integration tests of kaos-agents (one binary; each module is a topic).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod audit;
mod audit_e2e;
mod audit_html;
mod audit_writer;
mod budget;
mod circuit;
mod delegation;
mod hooks;
#[cfg(feature = "otel")]
mod otel_concurrent;
#[cfg(feature = "otel")]
mod otel_content;
#[cfg(feature = "otel")]
mod otel_context;
#[cfg(feature = "otel")]
mod otel_export;
#[cfg(feature = "otel")]
mod otel_hook;
#[cfg(feature = "otel")]
mod otel_metrics;
#[cfg(feature = "otel")]
mod otel_names;
#[cfg(feature = "otel")]
mod otel_nesting;
#[cfg(feature = "otel")]
mod otel_runner;
mod plan;
mod properties;
mod redact;
mod redact_corpus;
mod redact_sinks;
mod resume;
mod runner;
mod stream;
mod support;
mod tool_result_cap;
mod tree;
mod util;
