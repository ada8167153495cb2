//! Embedded, versioned schema migrations. Each store applies the ones its database has not
//! recorded (`kaos_schema_migrations`), in order, under a lock, in one transaction.

/// One schema change.
#[allow(dead_code)]
pub(crate) struct Migration {
    /// Its version (ascending, never reused).
    pub version: i64,
    /// A short name.
    pub name: &'static str,
    /// The SQL (several statements).
    pub sql: &'static str,
}

/// SQLite's migrations.
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: &[Migration] = &[Migration {
    version: 1,
    name: "sessions",
    sql: include_str!("../migrations/sqlite/0001_sessions.sql"),
}];

/// PostgreSQL's migrations.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    name: "sessions",
    sql: include_str!("../migrations/postgres/0001_sessions.sql"),
}];
