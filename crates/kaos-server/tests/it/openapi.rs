//! The OpenAPI document is valid 3.1 and lists every route.

use crate::util::{Options, client, start};

#[tokio::test]
async fn the_openapi_document_validates_and_lists_every_route() {
    let t = start(Options::default()).await;
    let text = client()
        .get(t.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"));
    let paths = spec.paths.as_ref().expect("paths");
    let expected = [
        ("/v1/sessions/{session_id}/messages", "post"),
        ("/v1/runs/{run_id}/approve", "post"),
        ("/v1/sessions", "post"),
        ("/v1/sessions/{session_id}", "get"),
        ("/v1/sessions/{session_id}", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in expected {
        let item = paths.get(path).unwrap_or_else(|| panic!("{path} missing"));
        let op = match method {
            "get" => item.get.as_ref(),
            "post" => item.post.as_ref(),
            "delete" => item.delete.as_ref(),
            _ => None,
        };
        assert!(op.is_some(), "{method} {path} missing");
    }
    assert_eq!(paths.len(), 7, "no undocumented extras: {:?}", paths.keys());
    // Every $ref resolves.
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut refs = Vec::new();
    collect_refs(&raw, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.trim_start_matches('#');
        assert!(raw.pointer(pointer).is_some(), "dangling $ref {r}");
    }
    let turn = &raw["components"]["schemas"]["TurnResponse"]["properties"];
    for field in [
        "text",
        "intent",
        "turn_number",
        "tokens_used",
        "tool_calls",
        "budget_exceeded",
        "paused_for_approval",
        "run_id",
        "pending_tool_name",
    ] {
        assert!(turn.get(field).is_some(), "TurnResponse.{field}");
    }
}

fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    collect_refs(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
