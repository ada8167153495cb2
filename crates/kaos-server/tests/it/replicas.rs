//! Two replicas on one shared store (a SQLite state dir; a PostgreSQL schema): a session
//! alternates between them, and a run paused on one is approved on the other.

use std::sync::Arc;

use kaos_agents::SessionStore;
use kaos_server::{SessionInfo, TurnResponse};
use serde_json::json;

use crate::util::{Options, TOKEN_A, client, post_json, start};

async fn alternate_and_approve_across(
    store_a: Arc<dyn SessionStore>,
    store_b: Arc<dyn SessionStore>,
) {
    let a = start(Options {
        store: Some(store_a),
        ..Options::default()
    })
    .await;
    let b = start(Options {
        store: Some(store_b),
        ..Options::default()
    })
    .await;
    for (i, replica) in [&a, &b, &a, &b].into_iter().enumerate() {
        let r: TurnResponse = post_json(
            &replica.base,
            TOKEN_A,
            "shared",
            json!({"message": format!("turn {i}")}),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(
            r.turn_number,
            i as u64 + 1,
            "each replica sees the full history"
        );
    }
    let paused: TurnResponse = post_json(
        &a.base,
        TOKEN_A,
        "shared",
        json!({"message": "run the deleter"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(paused.paused_for_approval);
    let resumed: TurnResponse = client()
        .post(b.url(&format!("/v1/runs/{}/approve", paused.run_id)))
        .bearer_auth(TOKEN_A)
        .header("accept", "application/json")
        .json(&json!({"approved": true, "session_id": "shared"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resumed.text, "result was: deleted");
    let again = client()
        .post(a.url(&format!("/v1/runs/{}/approve", paused.run_id)))
        .bearer_auth(TOKEN_A)
        .json(&json!({"approved": true, "session_id": "shared"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404, "approved once, on either replica");
    // Both replicas see the five turns (four plus the resumed one), nothing pending.
    for replica in [&a, &b] {
        let info: SessionInfo = client()
            .get(replica.url("/v1/sessions/shared"))
            .bearer_auth(TOKEN_A)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info.turn_count, 5, "{info:?}");
        assert!(info.pending_runs.is_empty(), "{info:?}");
    }
}

#[tokio::test]
async fn two_replicas_share_a_state_dir() {
    let dir = std::env::temp_dir().join(format!("kaos-serve-{}", uuid::Uuid::new_v4().simple()));
    let options = kaos_store::StoreOptions::default;
    alternate_and_approve_across(
        kaos_store::open_state_dir(&dir, options()).await.unwrap(),
        kaos_store::open_state_dir(&dir, options()).await.unwrap(),
    )
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The PostgreSQL server of the tests (`KAOS_TEST_DATABASE_URL`, default the local one).
fn database_url() -> String {
    std::env::var("KAOS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Two replicas, each with its own pool from `kaos_store::open("postgres://…")`, on a fresh
/// schema dropped at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_a_postgres_schema() {
    let url = database_url();
    let schema = format!("kaos_server_{}", uuid::Uuid::new_v4().simple());
    let options = || kaos_store::StoreOptions {
        schema: Some(schema.clone()),
        pool_size: 4,
        ..kaos_store::StoreOptions::default()
    };
    let replica_a = kaos_store::open(&url, options()).await.unwrap_or_else(|e| {
        panic!(
            "the two-replica test needs PostgreSQL at {} (set KAOS_TEST_DATABASE_URL to use another): {e}\n\
             start the local one with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            kaos_store::redact_url(&url)
        )
    });
    let replica_b = kaos_store::open(&url, options()).await.unwrap();
    alternate_and_approve_across(replica_a, replica_b).await;
    let cleanup = kaos_store::PostgresStore::connect(&url, options())
        .await
        .unwrap();
    cleanup.drop_schema(&schema).await.unwrap();
}

/// A session held by a turn on one replica is `409 session_busy` on the other (the store's
/// lease, not the replica's own lock, is what says so), and free again once that turn ends.
#[tokio::test]
async fn a_session_busy_on_another_replica_is_409() {
    let dir = std::env::temp_dir().join(format!("kaos-serve-{}", uuid::Uuid::new_v4().simple()));
    let options = kaos_store::StoreOptions::default;
    let replica = |store| Options {
        store: Some(store),
        session_wait: Some(std::time::Duration::from_millis(200)),
        ..Options::default()
    };
    let a = start(replica(
        kaos_store::open_state_dir(&dir, options()).await.unwrap(),
    ))
    .await;
    let b = start(replica(
        kaos_store::open_state_dir(&dir, options()).await.unwrap(),
    ))
    .await;
    let mut entered = a.gate_entries();
    let first = crate::util::post_sse(&a.base, TOKEN_A, "held", "open the gate").await;
    entered.recv().await.unwrap();
    let busy = post_json(&b.base, TOKEN_A, "held", json!({"message": "hello"})).await;
    assert_eq!(busy.status(), 409);
    let error: serde_json::Value = busy.json().await.unwrap();
    assert_eq!(error["error"]["code"], "session_busy", "{error}");
    let streamed = client()
        .post(b.url("/v1/sessions/held/messages"))
        .bearer_auth(TOKEN_A)
        .header("accept", "text/event-stream")
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 409, "also when the caller asked for SSE");
    a.controls.gate_open.add_permits(1);
    let _ = futures::StreamExt::collect::<Vec<_>>(first.bytes_stream()).await;
    let after = post_json(&b.base, TOKEN_A, "held", json!({"message": "hello"})).await;
    assert_eq!(
        after.status(),
        200,
        "free once the turn on the other replica ended"
    );
    let _ = std::fs::remove_dir_all(dir);
}
