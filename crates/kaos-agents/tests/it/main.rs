//! Integration tests of kaos-agents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod circuit;
mod delegation;
mod plan;
mod resume;
mod support;
