//! The conformance suite on PostgreSQL. The server comes from `KAOS_TEST_DATABASE_URL`
//! (default the local one); each test works in a fresh schema it drops at the end. Without
//! a server the tests fail and say how to start one.

use std::sync::Arc;
use std::time::Duration;

use kaos_store::{PostgresStore, SessionStore, StoreOptions};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("KAOS_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A store in a new schema, and that schema's name.
async fn fresh(options: StoreOptions) -> (PostgresStore, String) {
    let schema = format!("kaos_test_{}", uuid::Uuid::new_v4().simple());
    let url = url();
    let store = PostgresStore::connect(
        &url,
        StoreOptions {
            schema: Some(schema.clone()),
            pool_size: 8,
            ..options
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "PostgreSQL tests need a server at {} (set KAOS_TEST_DATABASE_URL to use another): {e}\n\
             start the local one with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            kaos_store::redact_url(&url)
        )
    });
    (store, schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    let (store, schema) = fresh(StoreOptions::default()).await;
    let shared = Arc::new(store.clone());
    super::conformance::run_all(shared, "pg").await;
    // A second pool on the same schema (another replica) sees and serializes with the first.
    let (other, _) = (
        PostgresStore::connect(
            &url(),
            StoreOptions {
                schema: Some(schema.clone()),
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap(),
        (),
    );
    let (lease, s) = other
        .begin("pg-order", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.turn_count, 3);
    assert!(store.begin("pg-order", Duration::ZERO).await.is_err());
    other.release(lease).await.unwrap();
    super::conformance::run_all(Arc::new(other), "pg-replica").await;
    store.drop_schema(&schema).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over() {
    let (store, schema) = fresh(StoreOptions {
        lease_ttl: Duration::ZERO,
        ..StoreOptions::default()
    })
    .await;
    let shared: Arc<dyn SessionStore> = Arc::new(store.clone());
    super::conformance::an_expired_lease_is_taken_over_and_its_commit_refused(&shared, "ttl").await;
    store.drop_schema(&schema).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_commit_fails_alone_among_many() {
    // Commits that arrive together run as one statement; a failing one must not sink it.
    let (store, schema) = fresh(StoreOptions::default()).await;
    let shared: Arc<dyn SessionStore> = Arc::new(store.clone());
    let ids: Vec<String> = (0..20).map(|i| format!("g{i}")).collect();
    let spoiled = schema.clone();
    super::conformance::a_failing_commit_fails_alone(&shared, &ids, 3, move || async move {
        let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "INSERT INTO \"{spoiled}\".kaos_messages (session_id, seq, turn_number, role, content) \
                 VALUES ('g3', 0, 1, 'user', 'squatter')"
            ))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
    })
    .await;
    store.drop_schema(&schema).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_fails_with_the_url_and_no_password() {
    let e = PostgresStore::connect(
        "postgres://kaos:hunter2@127.0.0.1:1/none?connect_timeout=5",
        StoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("127.0.0.1:1"), "{e}");
    assert!(!e.message.contains("hunter2"), "{e}");
    assert!(e.message.contains("cannot"), "{e}");
}
