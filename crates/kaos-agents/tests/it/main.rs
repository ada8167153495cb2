//! Integration tests of kaos-agents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[cfg(feature = "otel")]
mod otel_export;
#[cfg(feature = "otel")]
mod otel_hook;
mod runner;
mod util;
