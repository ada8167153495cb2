//! Two replicas on one shared store: a session alternates between them, and a run paused
//! on one is approved on the other.

use std::sync::Arc;

use kaos_agents::SessionStore;
use kaos_server::TurnResponse;
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
