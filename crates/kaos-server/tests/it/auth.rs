//! Bearer tokens: missing and wrong tokens are 401; one tenant never sees another's sessions.

use std::net::SocketAddr;

use kaos_server::{SessionInfo, TokenSet, TurnResponse, check_bind};
use serde_json::json;

use crate::util::{Options, TOKEN_A, TOKEN_B, client, post_json, start};

#[tokio::test]
async fn missing_and_wrong_tokens_are_401_with_an_error_body() {
    let t = start(Options::default()).await;
    let missing = client()
        .post(t.url("/v1/sessions/s1/messages"))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    assert!(
        missing.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = post_json(
        &t.base,
        "not-the-token-at-all",
        "s1",
        json!({"message": "hi"}),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    // Health, readiness and the API document need no token.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(
            client().get(t.url(path)).send().await.unwrap().status(),
            200
        );
    }
}

#[tokio::test]
async fn one_tenant_never_reads_or_resumes_anothers_session() {
    let t = start(Options::default()).await;
    let paused: TurnResponse = post_json(
        &t.base,
        TOKEN_A,
        "shared-name",
        json!({"message": "run the deleter"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(paused.paused_for_approval);
    // Bob cannot read Alice's session ...
    let read = client()
        .get(t.url("/v1/sessions/shared-name"))
        .bearer_auth(TOKEN_B)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 404);
    // ... nor approve her paused run ...
    let approve = client()
        .post(t.url(&format!("/v1/runs/{}/approve", paused.run_id)))
        .bearer_auth(TOKEN_B)
        .json(&json!({"approved": true, "session_id": "shared-name"}))
        .send()
        .await
        .unwrap();
    assert_eq!(approve.status(), 404);
    // ... nor delete it; a turn of his on the same name is his own session.
    let delete = client()
        .delete(t.url("/v1/sessions/shared-name"))
        .bearer_auth(TOKEN_B)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
    let his: TurnResponse = post_json(&t.base, TOKEN_B, "shared-name", json!({"message": "hello"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(his.turn_number, 1);
    let hers: SessionInfo = client()
        .get(t.url("/v1/sessions/shared-name"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        hers.pending_runs.len(),
        1,
        "Alice's paused run is untouched"
    );
    assert_eq!(hers.message_count, 1, "only Alice's own message");
}

#[test]
fn tokens_parse_and_compare() {
    let set = TokenSet::from_list("alice=aaaaaaaa-1, bbbbbbbb-2").unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.tenant_of("aaaaaaaa-1").unwrap().name(), "alice");
    assert!(set.tenant_of("bbbbbbbb-2").unwrap().name().starts_with('t'));
    assert!(set.tenant_of("aaaaaaaa-").is_none());
    assert!(TokenSet::from_list("x=short").is_err());
    assert!(TokenSet::from_list("a=aaaaaaaa-1,b=aaaaaaaa-1").is_err());
    assert!(
        !format!("{set:?}").contains("aaaaaaaa"),
        "Debug never prints tokens"
    );
}

#[test]
fn no_token_is_allowed_only_on_loopback_with_the_flag() {
    let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let none = TokenSet::empty();
    assert!(check_bind(&loopback, &none, false).is_err());
    assert!(check_bind(&loopback, &none, true).is_ok());
    assert!(check_bind(&any, &none, true).is_err());
    let some = TokenSet::from_list("aaaaaaaa-1").unwrap();
    assert!(check_bind(&any, &some, false).is_ok());
}
