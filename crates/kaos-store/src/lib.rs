//! Session stores for kaos behind one contract, [`kaos_agents::SessionStore`]:
//!
//! * [`SqliteStore`] (feature `sqlite`, default): one file in the state directory, WAL mode,
//!   a busy timeout, one append per turn; the file is 0600 in a 0700 directory.
//! * [`PostgresStore`] (feature `postgres`): for many processes or replicas; a pool,
//!   embedded versioned migrations, `SELECT … FOR UPDATE` on the session row, TLS and a
//!   password from the URL or the standard `PG*` variables.
//!
//! [`open`] picks one by URL (`sqlite:PATH`, `postgres://…`, `memory:`), so a server or a
//! CLI can take a `--store URL` and get an `Arc<dyn SessionStore>`.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use kaos_agents::session::{
    InMemoryStore, PausedRun, RunStatus, SessionInfo, SessionLease, SessionStore, StoreError,
    StoreErrorKind, TurnChanges,
};

mod cache;
mod migrate;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod renew;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The environment variable that names the store when no `--store` is given.
pub const STORE_ENV: &str = "KAOS_STORE";

/// The environment variable naming a FIFO that a SQLite commit writes `in-commit` to between
/// its statements (after the rows, before the session header), then blocks until the FIFO
/// is opened for writing: a test seam that lets a test kill the process mid-commit
/// without guessing at timing.
pub const COMMIT_GATE_ENV: &str = "KAOS_STORE_TEST_COMMIT_GATE";

/// Settings every store shares.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a lease lasts without renewal (a holder renews it every third of this
    /// while alive; a dead holder's lease frees itself after this long). Default 30 s.
    pub lease_ttl: Duration,
    /// How long SQLite waits for another process's write transaction. Default 10 s.
    pub busy_timeout: Duration,
    /// Connections in the PostgreSQL pool. Default 16.
    pub pool_size: usize,
    /// PostgreSQL schema for the tables (created if missing); `None` = the connection's
    /// `search_path` (usually `public`).
    pub schema: Option<String>,
    /// See [`COMMIT_GATE_ENV`] (SQLite only).
    pub commit_gate: Option<PathBuf>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(10),
            pool_size: 16,
            schema: None,
            commit_gate: std::env::var_os(COMMIT_GATE_ENV).map(PathBuf::from),
        }
    }
}

/// The default store's file inside a state directory.
pub fn state_dir_db(state_dir: &Path) -> PathBuf {
    state_dir.join("sessions").join("kaos.db")
}

/// The store a URL names, parsed without opening it (see [`open`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUrl<'a> {
    /// `memory:`.
    Memory,
    /// `sqlite:PATH` or `sqlite://PATH`: the path.
    Sqlite(&'a Path),
    /// `postgres://…` or `postgresql://…`: the whole URL.
    Postgres(&'a str),
}

/// Parses a store URL (see [`open`] for the forms); an unknown form is an error that lists
/// the accepted ones and names the URL without its password.
pub fn parse_url(url: &str) -> Result<StoreUrl<'_>, StoreError> {
    let url = url.trim();
    if url == "memory:" || url == "memory" {
        return Ok(StoreUrl::Memory);
    }
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.trim().is_empty() {
            return Err(StoreError::backend(
                "store URL \"sqlite:\" names no file: use sqlite:PATH",
            ));
        }
        return Ok(StoreUrl::Sqlite(Path::new(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(StoreUrl::Postgres(url));
    }
    Err(StoreError::backend(format!(
        "unknown store URL {:?}: use sqlite:PATH, postgres://USER@HOST/DB or memory:",
        redact_url(url)
    )))
}

/// Opens the store a URL names:
///
/// * `sqlite:PATH` or `sqlite://PATH` — a SQLite file (feature `sqlite`);
/// * `postgres://…` or `postgresql://…` — PostgreSQL (feature `postgres`); user, password,
///   host, database and `sslmode` from the URL, else from `PGUSER`, `PGPASSWORD`, `PGHOST`,
///   `PGPORT`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`;
/// * `memory:` — in this process's memory.
///
/// Errors name the URL without its password.
pub async fn open(url: &str, options: StoreOptions) -> Result<Arc<dyn SessionStore>, StoreError> {
    match parse_url(url)? {
        StoreUrl::Memory => Ok(Arc::new(InMemoryStore::new())),
        StoreUrl::Sqlite(path) => open_sqlite(path, options).await,
        StoreUrl::Postgres(url) => open_postgres(url, options).await,
    }
}

/// Opens the default store of a state directory (`<dir>/sessions/kaos.db`), creating the
/// directories owner-only (0700).
pub async fn open_state_dir(
    state_dir: &Path,
    options: StoreOptions,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    private_dir(state_dir, false)?;
    private_dir(&state_dir.join("sessions"), true)?;
    open_sqlite(&state_dir_db(state_dir), options).await
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(
    path: &Path,
    options: StoreOptions,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    Ok(Arc::new(SqliteStore::open(path, options).await?))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(
    path: &Path,
    _options: StoreOptions,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    Err(StoreError::backend(format!(
        "{}: this build has no SQLite store (enable kaos-store's `sqlite` feature)",
        path.display()
    )))
}

#[cfg(feature = "postgres")]
async fn open_postgres(
    url: &str,
    options: StoreOptions,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    Ok(Arc::new(PostgresStore::connect(url, options).await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(
    url: &str,
    _options: StoreOptions,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    Err(StoreError::backend(format!(
        "{}: this build has no PostgreSQL store (enable kaos-store's `postgres` feature)",
        redact_url(url)
    )))
}

/// `url` with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Creates `dir` (and parents) owner-only; with `force`, also makes an existing one 0700.
pub(crate) fn private_dir(dir: &Path, force: bool) -> Result<(), StoreError> {
    let err = |e: std::io::Error| StoreError::backend(format!("{}: {e}", dir.display()));
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(err)?;
    } else if force {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact_url("postgres://kaos:s3cret@db.example:5432/app?sslmode=require"),
            "postgres://kaos:***@db.example:5432/app?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://kaos@db/app"),
            "postgres://kaos@db/app"
        );
        assert_eq!(redact_url("sqlite:/tmp/x.db"), "sqlite:/tmp/x.db");
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused_with_the_forms_that_work() {
        let e = open("mysql://u:pw@h/db", StoreOptions::default())
            .await
            .err()
            .unwrap();
        assert!(e.message.contains("sqlite:PATH"), "{e}");
        assert!(!e.message.contains("pw"), "{e}");
    }
}
