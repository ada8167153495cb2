//! From a `postgres://` URL (plus the standard `PG*` variables) to a pool with TLS and a
//! migrated schema.

use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use kaos_agents::StoreError;
use kaos_agents::session::store::now_ms;
use tokio_postgres::config::SslMode;

use crate::migrate::POSTGRES;
use crate::{StoreOptions, redact_url};

/// A lock id all kaos processes take while migrating (any value, fixed forever).
const MIGRATION_LOCK: i64 = 0x6b61_6f73_0001;

/// The connection settings read from the URL and the environment.
pub(crate) struct Settings {
    pub config: tokio_postgres::Config,
    pub root_cert: Option<String>,
    /// `sslmode=verify-ca|verify-full`: check the server's certificate (libpq's
    /// `prefer`/`require` encrypt without checking it).
    pub verify: bool,
    pub shown: String,
}

/// Parses `url`; what it lacks comes from `PGUSER`, `PGPASSWORD`, `PGHOST`, `PGPORT`,
/// `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT` (then the OS user and `localhost`).
pub(crate) fn settings(
    url: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, StoreError> {
    let shown = redact_url(url);
    let bad = |m: String| StoreError::backend(format!("store URL {shown}: {m}"));
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut ssl_mode = None;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => ssl_mode = Some(v.to_string()),
            "sslrootcert" => root_cert = Some(v.to_string()),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = tokio_postgres::Config::from_str(&url).map_err(|e| bad(e.to_string()))?;
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .ok_or_else(|| bad("no user in the URL, PGUSER or USER".into()))?;
        config.user(user);
    }
    if config.get_password().is_none()
        && let Some(pw) = env("PGPASSWORD")
    {
        config.password(pw);
    }
    if config.get_dbname().is_none()
        && let Some(db) = env("PGDATABASE")
    {
        config.dbname(db);
    }
    if config.get_hosts().is_empty() {
        config.host(env("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if config.get_ports().is_empty()
        && let Some(port) = env("PGPORT")
    {
        let port: u16 = port
            .parse()
            .map_err(|_| bad(format!("PGPORT={port:?} is not a port")))?;
        config.port(port);
    }
    let mode = ssl_mode.or_else(|| env("PGSSLMODE"));
    let verify = matches!(mode.as_deref(), Some("verify-ca" | "verify-full"));
    if let Some(mode) = mode {
        config.ssl_mode(match mode.as_str() {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" | "verify-ca" | "verify-full" => SslMode::Require,
            other => {
                return Err(bad(format!(
                    "sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        });
    }
    let root_cert = root_cert.or_else(|| env("PGSSLROOTCERT"));
    Ok(Settings {
        config,
        root_cert,
        verify,
        shown,
    })
}

/// The rustls connector: the root certificates of `root_cert` (PEM), else the system's.
fn tls(settings: &Settings) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bad = |m: String| StoreError::backend(format!("store URL {}: TLS: {m}", settings.shown));
    let mut roots = rustls::RootCertStore::empty();
    match &settings.root_cert {
        Some(path) => {
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| bad(format!("{path}: {e}")))?
            {
                let cert = cert.map_err(|e| bad(format!("{path}: {e}")))?;
                roots.add(cert).map_err(|e| bad(format!("{path}: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?;
    let config = if settings.verify {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth()
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// libpq's `prefer`/`require`: the connection is encrypted, the server's certificate is not
/// checked against a CA (use `sslmode=verify-full` for that); handshake signatures are.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A pool for `settings` whose connections use `schema` (created if missing), with the
/// migrations applied.
pub(crate) async fn pool(
    mut settings: Settings,
    options: &StoreOptions,
) -> Result<Pool, StoreError> {
    let shown = settings.shown.clone();
    let bad = |m: String| StoreError::backend(format!("PostgreSQL store {shown}: {m}"));
    let tls = tls(&settings)?;
    if let Some(schema) = &options.schema {
        check_schema_name(schema).map_err(bad)?;
        let (client, conn) = settings
            .config
            .connect(tls.clone())
            .await
            .map_err(|e| bad(connect_hint(&e)))?;
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .await
            .map_err(|e| bad(e.to_string()))?;
        drop(client);
        let _ = task.await;
        settings.config.options(format!("-c search_path={schema}"));
    }
    let manager = Manager::from_config(
        settings.config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut client = pool.get().await.map_err(|e| bad(pool_hint(&e)))?;
    let tx = client.transaction().await.map_err(|e| bad(e.to_string()))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| bad(e.to_string()))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS kaos_schema_migrations (
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
    )
    .await
    .map_err(|e| bad(e.to_string()))?;
    let have: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM kaos_schema_migrations",
            &[],
        )
        .await
        .map_err(|e| bad(e.to_string()))?
        .get(0);
    for m in POSTGRES.iter().filter(|m| m.version > have) {
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| bad(format!("migration {} ({}): {e}", m.version, m.name)))?;
        tx.execute(
            "INSERT INTO kaos_schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &(now_ms() as i64)],
        )
        .await
        .map_err(|e| bad(e.to_string()))?;
    }
    tx.commit().await.map_err(|e| bad(e.to_string()))?;
    Ok(pool)
}

fn check_schema_name(schema: &str) -> Result<(), String> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema {schema:?}: use up to 63 ASCII letters, digits and underscores"
        ))
    }
}

fn connect_hint(e: &tokio_postgres::Error) -> String {
    format!("cannot connect: {e} (is the server running and the URL, password and sslmode right?)")
}

fn pool_hint(e: &deadpool_postgres::PoolError) -> String {
    format!("cannot connect: {e} (is the server running and the URL, password and sslmode right?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_url_wins_and_pg_variables_fill_the_rest() {
        let env = env_of(&[
            ("PGUSER", "envuser"),
            ("PGPASSWORD", "envpw"),
            ("PGHOST", "envhost"),
            ("PGPORT", "6543"),
            ("PGDATABASE", "envdb"),
            ("PGSSLMODE", "require"),
        ]);
        let s = settings("postgres://kaos:urlpw@db.example/app", &env).unwrap();
        assert_eq!(s.config.get_user(), Some("kaos"));
        assert_eq!(s.config.get_password(), Some(&b"urlpw"[..]));
        assert_eq!(s.config.get_dbname(), Some("app"));
        assert_eq!(s.config.get_ssl_mode(), SslMode::Require);
        assert!(!s.shown.contains("urlpw"));

        let s = settings("postgres://", &env).unwrap();
        assert_eq!(s.config.get_user(), Some("envuser"));
        assert_eq!(s.config.get_password(), Some(&b"envpw"[..]));
        assert_eq!(s.config.get_dbname(), Some("envdb"));
        assert_eq!(s.config.get_ports(), &[6543]);
        assert_eq!(
            s.config.get_hosts(),
            &[tokio_postgres::config::Host::Tcp("envhost".into())]
        );
    }

    #[test]
    fn libpq_ssl_modes_and_root_certs_are_understood() {
        let env = env_of(&[("PGSSLROOTCERT", "/etc/ca.pem")]);
        let s = settings(
            "postgres://u@h/db?sslmode=verify-full&application_name=kaos",
            &env,
        )
        .unwrap();
        assert_eq!(s.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(s.config.get_application_name(), Some("kaos"));
        assert_eq!(s.root_cert.as_deref(), Some("/etc/ca.pem"));
        let e = settings("postgres://u:pw@h/db?sslmode=sometimes", &env)
            .err()
            .unwrap();
        assert!(e.message.contains("sslmode"), "{e}");
        assert!(!e.message.contains("pw@"), "{e}");
    }
}
