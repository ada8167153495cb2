//! Graceful drain: in-flight turns finish, new ones are refused, /readyz is 503; past the
//! drain timeout the rest are cancelled.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::json;

use crate::util::{Options, TOKEN_A, client, post_json, post_sse, start};

#[tokio::test]
async fn a_turn_in_flight_finishes_while_the_server_drains() {
    let mut t = start(Options::default()).await;
    let mut entered = t.gate_entries();
    let long = post_sse(&t.base, TOKEN_A, "d1", "open the gate").await;
    entered.recv().await.unwrap();
    t.signal();
    // Draining: readiness fails and new turns are refused, while the listener stays open.
    let ready = loop {
        let r = client().get(t.url("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            break r;
        }
        tokio::task::yield_now().await;
    };
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "draining");
    let refused = post_json(&t.base, TOKEN_A, "d2", json!({"message": "hi"})).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    // The long turn completes.
    t.controls.gate_open.add_permits(1);
    let frames: Vec<_> = long
        .bytes_stream()
        .eventsource()
        .map(|f| f.unwrap())
        .collect()
        .await;
    assert_eq!(frames.last().unwrap().event, "turn_summary");
    let report = t.done.take().unwrap().await.unwrap().unwrap();
    assert!(report.signalled && report.clean);
    assert_eq!(report.turns_at_signal, 1);
    assert_eq!(report.cancelled_turns, 0);
}

#[tokio::test]
async fn past_the_drain_timeout_the_turn_is_cancelled() {
    let mut t = start(Options {
        drain_timeout: Duration::from_millis(20),
        ..Options::default()
    })
    .await;
    let mut entered = t.gate_entries();
    let long = post_sse(&t.base, TOKEN_A, "d1", "open the gate").await;
    entered.recv().await.unwrap();
    t.signal(); // the gate never opens
    let frames: Vec<_> = long
        .bytes_stream()
        .eventsource()
        .map(|f| f.unwrap())
        .collect()
        .await;
    let last = frames.last().unwrap();
    assert_eq!(last.event, "run_error");
    assert!(last.data.contains("\"error_type\":\"shutdown\""));
    let report = t.done.take().unwrap().await.unwrap().unwrap();
    assert_eq!(report.cancelled_turns, 1);
    assert!(report.clean);
    let spans = t.spans();
    let turn = spans.iter().find(|s| s.name == "agent.turn").unwrap();
    assert!(
        turn.attributes
            .iter()
            .any(|kv| kv.key.as_str() == "kaos.cancelled")
    );
}
