//! Integration tests of kaos-mcp (one binary, modules by topic).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client;
mod interop;
mod serve;
mod support;
mod trace;
