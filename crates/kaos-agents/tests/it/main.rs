//! Integration tests of kaos-agents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod audit;
mod audit_e2e;
mod audit_html;
#[cfg(feature = "otel")]
mod otel_export;
#[cfg(feature = "otel")]
mod otel_hook;
#[cfg(feature = "otel")]
mod otel_runner;
mod redact;
mod runner;
mod tree;
mod util;
