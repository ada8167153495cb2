//! SSE framing (parsed by an SSE library), JSON negotiation, approvals, sessions.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use kaos_agents::Event;
use kaos_server::{SessionInfo, TurnResponse};
use serde_json::json;

use crate::util::{Options, TOKEN_A, client, post_json, post_sse, start};

#[tokio::test]
async fn sse_frames_every_event_with_type_data_and_id() {
    let t = start(Options::default()).await;
    let response = post_sse(&t.base, TOKEN_A, "s1", "Hello there").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(response.headers().contains_key("traceparent"));
    let frames: Vec<_> = response
        .bytes_stream()
        .eventsource()
        .map(|f| f.unwrap())
        .collect()
        .await;
    assert!(frames.len() >= 6, "{} frames", frames.len());
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.id, i.to_string());
        let event: Event = serde_json::from_str(&f.data).unwrap();
        assert_eq!(f.event, event.kind.type_name());
        assert_eq!(&*event.session_id, "s1", "the tenant prefix never leaks");
    }
    assert_eq!(frames[0].event, "span");
    let last = frames.last().unwrap();
    assert_eq!(last.event, "turn_summary");
    let summary: serde_json::Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(summary["kind"]["text"], "echo: Hello there");
    assert_eq!(summary["kind"]["outcome"], "completed");
}

#[tokio::test]
async fn json_negotiation_returns_one_object_with_the_reference_fields() {
    let t = start(Options::default()).await;
    let response = post_json(
        &t.base,
        TOKEN_A,
        "s1",
        json!({"message": "use wordcount please"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let raw: serde_json::Value = response.json().await.unwrap();
    for field in [
        "text",
        "intent",
        "turn_number",
        "tokens_used",
        "tool_calls",
        "budget_exceeded",
        "paused_for_approval",
    ] {
        assert!(raw.get(field).is_some(), "missing {field}: {raw}");
    }
    let r: TurnResponse = serde_json::from_value(raw).unwrap();
    assert_eq!(r.text, "result was: 3 words");
    assert_eq!(r.intent.as_deref(), Some("tool_use"));
    assert_eq!(r.turn_number, 1);
    assert_eq!(r.tokens_used, 110 + 55 + 66);
    assert_eq!(r.tool_calls.len(), 1);
    assert_eq!(r.tool_calls[0].tool_name, "wordcount");
    assert_eq!(r.tool_calls[0].result_summary, "3 words");
    assert!(!r.tool_calls[0].is_error);
    assert!(!r.budget_exceeded && !r.paused_for_approval);
    assert_eq!(r.outcome, "completed");

    // The second turn sees the first.
    let r: TurnResponse = post_json(&t.base, TOKEN_A, "s1", json!({"message": "again"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r.turn_number, 2);
}

#[tokio::test]
async fn a_paused_run_is_approved_once_then_not_found() {
    let t = start(Options::default()).await;
    let r: TurnResponse = post_json(
        &t.base,
        TOKEN_A,
        "p1",
        json!({"message": "run the deleter"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(r.paused_for_approval);
    assert_eq!(r.pending_tool_name.as_deref(), Some("deleter"));
    assert_eq!(r.outcome, "paused");
    let info: SessionInfo = client()
        .get(t.url("/v1/sessions/p1"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info.pending_runs.len(), 1);
    assert_eq!(info.pending_runs[0].run_id, r.run_id);
    assert_eq!(info.pending_runs[0].tool_name, "deleter");

    let approve = || {
        client()
            .post(t.url(&format!("/v1/runs/{}/approve", r.run_id)))
            .bearer_auth(TOKEN_A)
            .header("accept", "application/json")
            .json(&json!({"approved": true, "session_id": "p1"}))
            .send()
    };
    let resumed: TurnResponse = approve().await.unwrap().json().await.unwrap();
    assert_eq!(resumed.outcome, "completed");
    assert_eq!(resumed.text, "result was: deleted");
    assert_eq!(resumed.tool_calls[0].tool_name, "deleter");
    let again = approve().await.unwrap();
    assert_eq!(again.status(), 404);
    let body: serde_json::Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "run_not_found");
}

#[tokio::test]
async fn request_fields_narrow_the_agent() {
    let t = start(Options::default()).await;
    // Only `gate*` tools offered: the model finds no wordcount tool.
    let r: TurnResponse = post_json(
        &t.base,
        TOKEN_A,
        "n1",
        json!({"message": "use wordcount", "tools": ["gate*"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(r.text, "no tool fits");
    assert!(r.tool_calls.is_empty());
    // A read-only tool the agent allows must now wait for approval.
    let r: TurnResponse = post_json(
        &t.base,
        TOKEN_A,
        "n2",
        json!({"message": "use wordcount", "require_approval_for_tools": ["word*"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(r.paused_for_approval, "{r:?}");
    // The approval continues under the narrowed agent and runs the call.
    let resumed: TurnResponse = client()
        .post(t.url(&format!("/v1/runs/{}/approve", r.run_id)))
        .bearer_auth(TOKEN_A)
        .header("accept", "application/json")
        .json(&json!({"approved": true, "session_id": "n2"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resumed.text, "result was: 3 words");
    // The `other` agent offers only wordcount; a request cannot add tools to it.
    let r: TurnResponse = post_json(
        &t.base,
        TOKEN_A,
        "n3",
        json!({"message": "use deleter", "agent": "other", "tools": ["*"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(r.text, "no tool fits");
    // A model the server does not serve is refused (403); one it serves is fine.
    let refused = post_json(
        &t.base,
        TOKEN_A,
        "n4",
        json!({"message": "hi", "model": "anthropic:claude-haiku-4-5"}),
    )
    .await;
    assert_eq!(refused.status(), 403);
    let ok = post_json(
        &t.base,
        TOKEN_A,
        "n4",
        json!({"message": "hi", "model": "fake-2"}),
    )
    .await;
    assert_eq!(ok.status(), 200);
    // Unknown agents are 404.
    let missing = post_json(
        &t.base,
        TOKEN_A,
        "n5",
        json!({"message": "hi", "agent": "nobody"}),
    )
    .await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn sessions_are_created_read_and_deleted() {
    let t = start(Options::default()).await;
    let c = client();
    let created = c
        .post(t.url("/v1/sessions"))
        .bearer_auth(TOKEN_A)
        .json(&json!({"session_id": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let dup = c
        .post(t.url("/v1/sessions"))
        .bearer_auth(TOKEN_A)
        .json(&json!({"session_id": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    let fresh: SessionInfo = c
        .post(t.url("/v1/sessions"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(fresh.session_id.starts_with("s-"));
    post_json(&t.base, TOKEN_A, "mine", json!({"message": "hello"})).await;
    let info: SessionInfo = c
        .get(t.url("/v1/sessions/mine"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info.turn_count, 1);
    assert_eq!(info.message_count, 2);
    let bad = c
        .get(t.url("/v1/sessions/bad%20id"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let deleted = c
        .delete(t.url("/v1/sessions/mine"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = c
        .get(t.url("/v1/sessions/mine"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let body: serde_json::Value = gone.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn health_and_readiness() {
    let t = start(Options::default()).await;
    let h = client().get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let r = client().get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
