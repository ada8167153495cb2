//! Integration tests of kaos-server: a real HTTP client against a server on an ephemeral
//! port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod api;
mod auth;
mod drain;
mod hangup;
mod limits;
mod openapi;
mod replicas;
mod trace;
mod util;
