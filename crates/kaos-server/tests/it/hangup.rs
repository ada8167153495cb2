//! A client that hangs up mid-tool cancels the turn: spans end cancelled, the tool's
//! process is killed, the session is unchanged.

use kaos_agents::{EventKind, SpanPhase, SpanSubject};
use kaos_server::SessionInfo;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use crate::util::{Options, TOKEN_A, client, post_json, post_sse, start};

#[tokio::test]
async fn hanging_up_mid_tool_cancels_the_turn_and_kills_the_tool() {
    let mut t = start(Options::default()).await;
    post_json(&t.base, TOKEN_A, "h1", json!({"message": "hello"})).await;

    let (tx, mut procs) = mpsc::unbounded_channel();
    *t.controls.proc_out.lock().unwrap() = Some(tx);
    let response = post_sse(&t.base, TOKEN_A, "h1", "please run slowproc").await;
    assert_eq!(response.status(), 200);
    let stdout = procs.recv().await.unwrap();
    let mut lines = BufReader::new(stdout);
    let mut line = String::new();
    lines.read_line(&mut line).await.unwrap();
    assert_eq!(line.trim(), "started");

    drop(response); // the client hangs up mid-tool

    let cancelled = t
        .wait_event(|e| e.is_span(SpanSubject::Turn, SpanPhase::Cancelled))
        .await;
    let EventKind::Span(span) = &cancelled.kind else {
        unreachable!()
    };
    assert!(
        span.attr_str("cancel_reason")
            .unwrap()
            .contains("disconnected")
    );
    // The child process is gone: its stdout reaches end-of-file.
    let mut rest = Vec::new();
    lines.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    let server = t
        .wait_span_where(|s| {
            s.name == "POST /v1/sessions/{session_id}/messages"
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "kaos.cancel_reason")
        })
        .await;
    let spans = t.spans();
    for name in ["agent.turn", "agent.tool_call.slowproc"] {
        let s = spans
            .iter()
            .rfind(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert!(
            s.attributes
                .iter()
                .any(|kv| kv.key.as_str() == "kaos.cancelled" && kv.value.to_string() == "true"),
            "{name} not cancelled: {:?}",
            s.attributes
        );
    }
    assert!(
        server
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "kaos.cancel_reason"
                && kv.value.to_string() == "client_disconnected")
    );

    let info: SessionInfo = client()
        .get(t.url("/v1/sessions/h1"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info.turn_count, 1,
        "the cancelled turn left no trace in the session"
    );
    assert_eq!(info.message_count, 2);
    // The session is free again for the next turn.
    let next = post_json(&t.base, TOKEN_A, "h1", json!({"message": "again"})).await;
    assert_eq!(next.status(), 200);
}
