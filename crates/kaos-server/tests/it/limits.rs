//! Body cap (413), message cap (422), concurrency (503 + Retry-After), busy session (409),
//! wall-clock limit (`timeout`).

use std::time::Duration;

use futures::StreamExt;
use kaos_server::{Limits, TurnResponse};
use serde_json::json;

use crate::util::{Options, TOKEN_A, post_json, post_sse, start};

fn limits(f: impl FnOnce(&mut Limits)) -> Options {
    let mut o = Options::default();
    f(&mut o.limits);
    o
}

#[tokio::test]
async fn an_oversized_body_is_413_and_a_long_message_422() {
    let t = start(limits(|l| {
        l.max_body_bytes = 1024;
        l.max_message_chars = 100;
    }))
    .await;
    let big = "x".repeat(2048);
    let r = post_json(&t.base, TOKEN_A, "s", json!({"message": big})).await;
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");
    let r = post_json(&t.base, TOKEN_A, "s", json!({"message": "y".repeat(200)})).await;
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "message_too_long");
    let r = post_json(&t.base, TOKEN_A, "s", json!({"nope": 1})).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn beyond_the_concurrency_limit_is_503_with_retry_after() {
    let t = start(limits(|l| l.max_concurrent_turns = 1)).await;
    let mut entered = t.gate_entries();
    let first = post_sse(&t.base, TOKEN_A, "a", "open the gate").await;
    entered.recv().await.unwrap();
    let second = post_json(&t.base, TOKEN_A, "b", json!({"message": "hello"})).await;
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "1");
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_turns");
    t.controls.gate_open.add_permits(1);
    let _ = first.bytes_stream().collect::<Vec<_>>().await;
    let third = post_json(&t.base, TOKEN_A, "b", json!({"message": "hello"})).await;
    assert_eq!(
        third.status(),
        200,
        "the permit came back when the first turn ended"
    );
}

#[tokio::test]
async fn a_busy_session_is_409_after_the_wait() {
    let t = start(limits(|l| l.busy_wait = Duration::ZERO)).await;
    let mut entered = t.gate_entries();
    let first = post_sse(&t.base, TOKEN_A, "busy", "open the gate").await;
    entered.recv().await.unwrap();
    let second = post_json(&t.base, TOKEN_A, "busy", json!({"message": "hello"})).await;
    assert_eq!(second.status(), 409);
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_busy");
    // Another session is not blocked.
    let other = post_json(&t.base, TOKEN_A, "free", json!({"message": "hello"})).await;
    assert_eq!(other.status(), 200);
    t.controls.gate_open.add_permits(1);
    let _ = first.bytes_stream().collect::<Vec<_>>().await;
}

#[tokio::test]
async fn a_turn_past_its_wall_clock_limit_ends_with_timeout() {
    // The gate never opens: only the limit can end this turn.
    let mut t = start(limits(|l| l.turn_timeout = Duration::from_millis(50))).await;
    let r: TurnResponse = post_json(
        &t.base,
        TOKEN_A,
        "slow",
        json!({"message": "open the gate"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(r.outcome, "timeout");
    assert_eq!(r.error.as_ref().unwrap().code, "timeout");
    let server = t.wait_span("POST /v1/sessions/{session_id}/messages").await;
    assert!(matches!(
        server.status,
        opentelemetry::trace::Status::Error { .. }
    ));
    let spans = t.spans();
    let turn = spans.iter().find(|s| s.name == "agent.turn").unwrap();
    assert!(
        turn.attributes
            .iter()
            .any(|kv| kv.key.as_str() == "kaos.cancelled")
    );
    assert!(spans.iter().any(|s| s.name == "agent.tool_call.gate"));
}
