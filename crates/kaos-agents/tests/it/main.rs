//! Integration tests of kaos-agents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[cfg(feature = "otel")]
mod otel_export;
#[cfg(feature = "otel")]
mod otel_hook;
mod audit;
mod audit_e2e;
mod audit_html;
mod redact;
mod runner;
mod tree;
mod util;
