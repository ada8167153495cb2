//! The conformance suite on SQLite, plus what the file-based store adds.

use std::sync::Arc;
use std::time::Duration;

use kaos_store::{SessionStore, SqliteStore, StoreOptions, TurnChanges};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("kaos.db"), StoreOptions::default())
        .await
        .unwrap();
    super::conformance::run_all(Arc::new(store), "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_share_leases_and_turns() {
    // Two stores on one file behave like two processes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaos.db");
    let a = SqliteStore::open(&path, StoreOptions::default())
        .await
        .unwrap();
    let b = SqliteStore::open(&path, StoreOptions::default())
        .await
        .unwrap();
    let (lease, _) = a.begin("s", Duration::from_secs(60)).await.unwrap();
    assert!(b.begin("s", Duration::ZERO).await.is_err());
    a.commit(
        lease,
        TurnChanges {
            turn_count: Some(1),
            ..TurnChanges::default()
        },
    )
    .await
    .unwrap();
    let (lease, s) = b.begin("s", Duration::from_secs(60)).await.unwrap();
    assert_eq!(s.turn_count, 1);
    b.release(lease).await.unwrap();
    // Stores sharing a file also run the whole suite against each other's commits.
    super::conformance::run_all(Arc::new(b), "sqlite-b").await;
    let listed = a.list().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|i| i.id == "sqlite-b-concurrent" && i.turn_count == 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_commit_fails_alone_among_many() {
    // Commits that arrive together share one transaction; a failing one must not sink it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaos.db");
    let store: Arc<dyn SessionStore> = Arc::new(
        SqliteStore::open(&path, StoreOptions::default())
            .await
            .unwrap(),
    );
    let ids: Vec<String> = (0..20).map(|i| format!("g{i}")).collect();
    let spoiled = path.clone();
    super::conformance::a_failing_commit_fails_alone(&store, &ids, 3, move || async move {
        let conn = rusqlite::Connection::open(&spoiled).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute(
            "INSERT INTO kaos_messages (session_id, seq, turn_number, role, content) \
             VALUES ('g3', 0, 1, 'user', 'squatter')",
            [],
        )
        .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        lease_ttl: Duration::ZERO,
        ..StoreOptions::default()
    };
    let store: Arc<dyn SessionStore> = Arc::new(
        SqliteStore::open(&dir.path().join("kaos.db"), options)
            .await
            .unwrap(),
    );
    super::conformance::an_expired_lease_is_taken_over_and_its_commit_refused(&store, "ttl").await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_state_dir_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = kaos_store::open_state_dir(&state, StoreOptions::default())
        .await
        .unwrap();
    let (lease, _) = store.begin("s", Duration::from_secs(60)).await.unwrap();
    store
        .commit(
            lease,
            TurnChanges {
                turn_count: Some(1),
                ..TurnChanges::default()
            },
        )
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("sessions")), 0o700);
    let db = kaos_store::state_dir_db(&state);
    assert_eq!(mode(&db), 0o600);
    for side in ["kaos.db-wal", "kaos.db-shm"] {
        let p = state.join("sessions").join(side);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{side}");
        }
    }
    // Reopening by URL reads the same sessions; migrations are not applied twice.
    drop(store);
    let again = kaos_store::open(&format!("sqlite:{}", db.display()), StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(again.load("s").await.unwrap().unwrap().turn_count, 1);
}
