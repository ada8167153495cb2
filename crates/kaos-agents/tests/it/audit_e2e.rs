//! The audit trail behind the real Runner: a FunctionClient model, an FnTool, canaries.

use std::sync::Arc;

use kaos_agents::audit::{self, AuditHook};
use kaos_agents::hooks::RecordingHook;
use kaos_agents::redact::Redactor;
use kaos_agents::tree::{TreeOptions, render_tree};
use kaos_agents::{Agent, EventKind, FnTool, Hook, KaosRuntime, Runner, TurnError};
use kaos_llm::FunctionClient;
use serde_json::json;

use crate::audit::{ANTHROPIC, BEARER, CARD, OPENAI};
use crate::util::{assert_well_formed, routing_model};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Args {
    /// The text.
    text: String,
}

fn runner(audit: Arc<AuditHook>) -> (Runner, Arc<RecordingHook>) {
    let tool = FnTool::new("echo", "Echoes its text.", |a: Args| async move {
        format!(
            r#"echoed {} with {{"password": "hunter2CANARY", "auth": "Bearer {BEARER}"}}"#,
            a.text
        )
    })
    .read_only();
    let args = json!({"text": format!("card {CARD} key {OPENAI}"), "api_key": ANTHROPIC});
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", FunctionClient::new(routing_model("echo", args)))
        .with_tool(tool);
    let agent = Agent::builder()
        .name("auditor")
        .model("fake")
        .build()
        .unwrap();
    let rec = Arc::new(RecordingHook::new());
    let runner = Runner::new(agent, runtime)
        .with_shared_hook(audit)
        .with_shared_hook(rec.clone());
    (runner, rec)
}

#[tokio::test]
async fn a_real_tool_turn_is_audited_redacted_and_replayable() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditHook::new(dir.path()).unwrap());
    let (runner, rec) = runner(audit.clone());
    let message = format!("use the tool; my key is {ANTHROPIC}, card {CARD}");
    let response = runner.turn(message, "e2e").await.unwrap();
    assert!(
        response.text.contains("CANARY"),
        "the model saw the secrets: {}",
        response.text
    );

    let path = audit.path_for_session("e2e");
    let text = std::fs::read_to_string(&path).unwrap();
    for canary in ["CANARY", "4242 4242 4242 4242", "hunter2"] {
        assert!(
            !text.contains(canary),
            "{canary} leaked into the audit file:\n{text}"
        );
    }
    assert!(
        text.contains("echoed card [REDACTED:card_number] key [REDACTED:openai_key]"),
        "{text}"
    );
    assert!(
        text.contains("[REDACTED:sensitive_key]"),
        "api_key argument"
    );

    let log = audit::read_file(&path).unwrap();
    let recorded = rec.events();
    assert_well_formed(&log.events);
    let redactor = Redactor::default();
    let expected: Vec<_> = recorded.iter().map(|e| redactor.redact_event(e)).collect();
    assert_eq!(log.events, expected, "file = stream, after redaction");
    assert!(matches!(
        log.events.last().unwrap().kind,
        EventKind::TurnSummary(_)
    ));
    assert_eq!(audit.stats().open_files, 0);
    assert!(audit.flush().is_ok());

    let tree = render_tree(
        &log.events,
        &TreeOptions {
            durations: false,
            ..TreeOptions::default()
        },
    );
    assert!(
        tree.contains("├─ ✓ agent.tool_call.echo → \"echoed card [REDACTED:card_number]"),
        "{tree}"
    );
    assert!(tree.contains("✓ agent.turn outcome=completed"), "{tree}");
    assert!(!tree.contains("CANARY"));
}

#[tokio::test]
async fn a_fail_closed_audit_that_cannot_write_stops_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditHook::new(dir.path()).unwrap().fail_closed(true));
    std::fs::create_dir(audit.path_for_session("blocked")).unwrap();
    let (runner, rec) = runner(audit.clone());
    let err = runner.turn("use the tool", "blocked").await.unwrap_err();
    let TurnError::Failed { failure, .. } = err else {
        panic!("expected a failed turn, got {err:?}")
    };
    assert_eq!(failure.error_type, "hook_halt");
    assert!(
        failure.message.contains("audit trail cannot be written"),
        "{}",
        failure.message
    );
    let events = rec.events();
    assert!(
        !events.iter().any(|e| e.label() == "span(tool_call,start)"),
        "no tool ran without an audit trail"
    );
    assert!(audit.flush().is_err());
}
