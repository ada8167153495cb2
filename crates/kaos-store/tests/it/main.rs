//! kaos-store's integration tests: the conformance suite on every store, and what each
//! backend adds (file modes, migrations, URLs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod conformance;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
