//! AuditHook + reader: redaction before writing, durability, concurrency, strict decoding.

use kaos_agents::testing::ScopeDriver;
use std::sync::Arc;

use kaos_agents::audit::{self, AuditHook, AuditReadError, FsyncPolicy};
use kaos_agents::redact::Redactor;
use kaos_agents::scope::TurnScope;
use kaos_agents::tree::SpanStatus;
use kaos_agents::{
    Event, EventKind, HookSet, Intent, SpanError, SpanPhase, SpanSubject, ToolCallSummary,
    TurnOutcome, TurnSummary, attrs,
};
use serde_json::json;

pub const ANTHROPIC: &str = "sk-ant-api03-CANARYa1b2c3d4e5f6g7h8i9j0kLmNoPqRsTuVwXyZ-AAAA";
pub const OPENAI: &str = "sk-proj-CANARYz9y8x7w6v5u4t3s2r1q0pOnMlKjIhG";
pub const BEARER: &str = "CANARYbearerTOKEN0123456789abcdef";
pub const CARD: &str = "4242 4242 4242 4242";

pub fn hooks(hook: &Arc<AuditHook>) -> HookSet {
    let mut set = HookSet::default();
    set.push(hook.clone());
    set
}

pub fn scope(session: &str, run: &str, hooks: HookSet) -> TurnScope {
    TurnScope::new(session.into(), run.into(), "assistant".into(), hooks)
}

/// Drains the scope's buffered events (what the stream's consumer would see).
pub fn drain(scope: &TurnScope) -> Vec<Event> {
    std::iter::from_fn(|| scope.pop()).collect()
}

/// Contents of one realistic tool turn.
pub struct TurnText<'a> {
    pub user: &'a str,
    pub arguments: serde_json::Value,
    pub result: &'a str,
    pub answer: &'a str,
}

impl Default for TurnText<'_> {
    fn default() -> Self {
        Self {
            user: "what is the weather in Paris?",
            arguments: json!({"city": "Paris"}),
            result: "found 3 results",
            answer: "It is sunny in Paris.",
        }
    }
}

fn llm(scope: &TurnScope, purpose: &str, input: u64, output: u64, text: Option<&str>) {
    let (id, _) = scope.start_span(
        SpanSubject::LlmCall,
        format!("llm_call.{purpose}"),
        attrs! {"purpose" => purpose, "provider" => "function", "model" => "fn-model"},
    );
    if purpose == "intent_classification" {
        scope.emit(EventKind::IntentClassified {
            intent: Intent::ToolUse,
            confidence: 0.9,
            reasoning: "needs a lookup".into(),
        });
    }
    scope.emit(EventKind::UsageObserved {
        input_tokens: input,
        output_tokens: output,
        total_tokens: input + output,
        cost_usd: None,
        model: "fn-model".into(),
        source: purpose.into(),
    });
    if let Some(text) = text {
        scope.emit(EventKind::TextDelta {
            content: text.into(),
            span_id: None,
        });
    }
    scope.end_span(
        &id,
        SpanPhase::Complete,
        attrs! {"input_tokens" => input, "output_tokens" => output, "attempts" => 1},
        None,
    );
}

/// Emits one tool turn the way the runner does: classify, a good tool call, a failing one,
/// an answer, the TurnSummary last.
pub fn tool_turn(scope: &TurnScope, n: u64, text: &TurnText<'_>) {
    let (turn, _) = scope.start_span(
        SpanSubject::Turn,
        format!("turn.{n}"),
        attrs! {"turn_number" => n, "user_message" => text.user},
    );
    llm(scope, "intent_classification", 40, 5, None);
    let (tool, _) = scope.start_span(
        SpanSubject::ToolCall,
        "tool.lookup",
        attrs! {"tool_name" => "lookup", "call_id" => "call_1", "arguments" => text.arguments.clone(), "permission" => "allow"},
    );
    scope.end_span(
        &tool,
        SpanPhase::Complete,
        attrs! {"is_error" => false, "result_summary" => text.result},
        None,
    );
    let (flaky, _) = scope.start_span(
        SpanSubject::ToolCall,
        "tool.flaky",
        attrs! {"tool_name" => "flaky", "call_id" => "call_2", "arguments" => json!({}), "permission" => "allow"},
    );
    scope.end_span(
        &flaky,
        SpanPhase::Error,
        attrs! {"is_error" => true, "result_summary" => "timed out"},
        Some(SpanError {
            error_type: "tool_timeout".into(),
            message: "timed out after 1s".into(),
        }),
    );
    llm(scope, "respond", 60, 12, Some(text.answer));
    scope.end_span(
        &turn,
        SpanPhase::Complete,
        attrs! {"outcome" => "completed"},
        None,
    );
    scope.emit(EventKind::TurnSummary(TurnSummary {
        text: text.answer.into(),
        intent: Some(Intent::ToolUse),
        tool_calls: vec![
            ToolCallSummary {
                tool_name: "lookup".into(),
                call_id: "call_1".into(),
                is_error: false,
                duration_ms: 1.0,
                step_id: None,
            },
            ToolCallSummary {
                tool_name: "flaky".into(),
                call_id: "call_2".into(),
                is_error: true,
                duration_ms: 1.0,
                step_id: None,
            },
        ],
        tokens_used: 117,
        input_tokens: 100,
        output_tokens: 17,
        cost_usd: None,
        outcome: TurnOutcome::Completed,
    }));
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn canaries_never_reach_the_file() {
    let dir = tmp();
    let hook = Arc::new(AuditHook::new(dir.path().join("audit")).unwrap());
    let s = scope("s1", "run_canary", hooks(&hook));
    let user = format!("please use my key {ANTHROPIC} and card {CARD} for the booking");
    let result = format!(
        r#"{{"status": "ok", "password": "hunter2CANARY", "echo": "Authorization: Bearer {BEARER}"}}"#
    );
    let answer = format!("Done. I used {OPENAI} as asked");
    tool_turn(
        &s,
        1,
        &TurnText {
            user: &user,
            arguments: json!({"query": format!("book with {CARD}"), "api_key": OPENAI, "password": "hunter2CANARY", "note": format!("Bearer {BEARER}")}),
            result: &result,
            answer: &answer,
        },
    );
    s.emit(EventKind::ToolCallApprovalRequired {
        call_id: "call_3".into(),
        tool_name: "pay".into(),
        arguments: json!({"card": CARD, "auth": {"Authorization": format!("Bearer {BEARER}")}}),
        reason: format!("pays with {CARD}"),
        run_state_ref: None,
    });
    // An event after the turn's end is not waited for: flush waits for the writer.
    kaos_agents::Hook::flush(&*hook).unwrap();

    let text = std::fs::read_to_string(hook.path_for_session("s1")).unwrap();
    for canary in ["CANARY", "4242 4242 4242 4242", "hunter2"] {
        assert!(!text.contains(canary), "{canary} leaked:\n{text}");
    }
    for kept in [
        "please use my key [REDACTED:anthropic_key] and card [REDACTED:card_number] for the booking",
        "Done. I used [REDACTED:openai_key] as asked",
        r#"\"password\": \"[REDACTED:password]\""#,
        "Authorization: Bearer [REDACTED:bearer_token]",
        "book with [REDACTED:card_number]",
        r#""api_key":"[REDACTED:sensitive_key]""#,
        "pays with [REDACTED:card_number]",
    ] {
        assert!(text.contains(kept), "missing {kept:?} in\n{text}");
    }
    let stats = hook.stats();
    assert!(stats.redactions.get("anthropic_key") >= 1);
    assert!(stats.redactions.get("openai_key") >= 2);
    assert!(stats.redactions.get("card_number") >= 4);
    assert!(stats.redactions.get("bearer_token") >= 2);
    assert!(stats.redactions.get("sensitive_key") >= 2);
    assert_eq!(stats.failures, 0);
    // The stream's consumer still sees the original events; only the file is redacted.
    let events = drain(&s);
    assert!(events.iter().any(|e| e.to_json().contains("CANARY")));
    // And the file decodes strictly.
    let log = audit::read_file(hook.path_for_session("s1")).unwrap();
    assert_eq!(log.events.len(), events.len());
    // The turn's trailer counts what was replaced in its lines.
    assert_eq!(log.trailers.len(), 1);
    let trailer = &log.trailers[0];
    assert_eq!(trailer.run_id, "run_canary");
    assert!(trailer.redactions.get("anthropic_key") >= 1);
    assert!(trailer.redactions.get("card_number") >= 2);
    assert!(trailer.redactions.total() > 0);
    assert!(
        text.contains(r#"{"trailer":{"run_id":"run_canary""#),
        "{text}"
    );
}

#[test]
fn round_trip_equals_redacted_stream() {
    let dir = tmp();
    let redactor = Redactor::default();
    let hook = Arc::new(
        AuditHook::new(dir.path())
            .unwrap()
            .with_redactor(redactor.clone()),
    );
    let s = scope("s1", "run_rt", hooks(&hook));
    tool_turn(&s, 1, &TurnText::default());
    let s2 = scope("s1", "run_rt2", hooks(&hook));
    tool_turn(
        &s2,
        2,
        &TurnText {
            user: &format!("key {ANTHROPIC}"),
            ..TurnText::default()
        },
    );
    let mut expected = drain(&s);
    expected.extend(drain(&s2));
    let expected: Vec<Event> = expected.iter().map(|e| redactor.redact_event(e)).collect();

    let log = audit::read_file(hook.path_for_session("s1")).unwrap();
    assert_eq!(log.header.format_version, 1);
    assert_eq!(log.header.kaos_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(log.torn_tail, None);
    assert_eq!(log.events, expected);
    // One header only, though the file was closed after turn 1 and reopened.
    let text = std::fs::read_to_string(&log.path).unwrap();
    assert_eq!(text.matches("format_version").count(), 1);
    assert_eq!(
        hook.stats().open_files,
        0,
        "files are closed at the end of a turn"
    );

    let runs = log.runs();
    assert_eq!(runs.len(), 2);
    let turn = &runs[0].spans[runs[0].roots[0]];
    assert_eq!(turn.name, "agent.turn");
    assert_eq!(turn.status, SpanStatus::Complete);
    assert_eq!(turn.attributes["outcome"], "completed");
    assert_eq!(
        turn.attributes["turn_number"], 1,
        "start and terminal attributes merged"
    );
    let names: Vec<&str> = turn
        .children
        .iter()
        .map(|&c| runs[0].spans[c].name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "agent.intent_classification",
            "agent.tool_call.lookup",
            "agent.tool_call.flaky",
            "chat fn-model"
        ]
    );
    let flaky = runs[0]
        .span(&runs[0].spans[turn.children[2]].span_id)
        .unwrap();
    assert_eq!(flaky.status, SpanStatus::Error);
    assert_eq!(flaky.error.as_ref().unwrap().error_type, "tool_timeout");
    // The exporter's intent wrapper holds the classifier's `chat` span, which holds its facts.
    let wrapper = &runs[0].spans[turn.children[0]];
    let classify = &runs[0].spans[wrapper.children[0]];
    let attached: Vec<String> = classify
        .events
        .iter()
        .map(|&e| log.events[e].label())
        .collect();
    assert_eq!(attached, ["intent_classified", "usage_observed"]);
    assert_eq!(
        runs[0].loose_events.len(),
        1,
        "the TurnSummary comes after the turn span"
    );
}

#[test]
fn torn_last_line_is_tolerated_and_repaired() {
    let dir = tmp();
    let hook = Arc::new(AuditHook::new(dir.path()).unwrap());
    let s = scope("torn", "run_torn", hooks(&hook));
    tool_turn(&s, 1, &TurnText::default());
    let all = drain(&s);
    let path = hook.path_for_session("torn");
    let bytes = std::fs::read(&path).unwrap();
    // The last line is the turn's trailer; cut the file in the middle of the last event.
    let body = &bytes[..bytes.len() - 1];
    let trailer_start = body.iter().rposition(|b| *b == b'\n').unwrap() + 1;
    assert!(bytes[trailer_start..].starts_with(b"{\"trailer\":"));
    std::fs::write(&path, &bytes[..trailer_start - 20]).unwrap();
    let log = audit::read_file(&path).unwrap();
    assert_eq!(log.events.len(), all.len() - 1);
    assert_eq!(log.torn_tail, Some(all.len() + 1), "header is line 1");
    assert_eq!(log.events[..], all[..all.len() - 1]);

    // The next turn's writer cuts the torn tail off before appending.
    let s2 = scope("torn", "run_torn2", hooks(&hook));
    tool_turn(&s2, 2, &TurnText::default());
    let log = audit::read_file(&path).unwrap();
    assert_eq!(log.torn_tail, None);
    assert_eq!(log.events.len(), 2 * all.len() - 1);
    assert_eq!(
        log.trailers.len(),
        1,
        "the first turn's trailer was cut off with its tail"
    );
    assert_eq!(log.trailers[0].run_id, "run_torn2");
    assert_eq!(log.trailers[0].events, all.len() as u64);
}

#[test]
fn unknown_field_names_the_line() {
    let dir = tmp();
    let path = dir.path().join("bad.jsonl");
    let hook = Arc::new(AuditHook::new(dir.path()).unwrap());
    let s = scope("bad", "run_bad", hooks(&hook));
    tool_turn(&s, 1, &TurnText::default());
    let good = std::fs::read_to_string(hook.path_for_session("bad")).unwrap();
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    lines[3] = lines[3].replacen("{", r#"{"surprise":1,"#, 1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = audit::read_file(&path).unwrap_err();
    assert!(
        matches!(err, AuditReadError::Line { line: 4, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("bad.jsonl:4:") && msg.contains("surprise"),
        "{msg}"
    );

    // A complete (newline-terminated) bad last line is an error too, not a torn tail.
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    let last = lines.len() - 1;
    lines[last].truncate(10);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    assert!(matches!(
        audit::read_file(&path),
        Err(AuditReadError::Line { .. })
    ));
}

#[test]
fn header_is_checked() {
    let dir = tmp();
    let path = dir.path().join("v.jsonl");
    std::fs::write(
        &path,
        "{\"format_version\":2,\"created\":\"x\",\"kaos_version\":\"9\"}\n",
    )
    .unwrap();
    let err = audit::read_file(&path).unwrap_err();
    assert!(matches!(err, AuditReadError::UnsupportedVersion { .. }));
    assert!(
        err.to_string()
            .contains("unsupported audit format_version 2"),
        "{err}"
    );
    std::fs::write(&path, "").unwrap();
    assert!(matches!(
        audit::read_file(&path),
        Err(AuditReadError::Header { .. })
    ));
    std::fs::write(&path, "{\"timestamp\":1}\n").unwrap();
    let err = audit::read_file(&path).unwrap_err();
    assert!(err.to_string().contains("no format_version"), "{err}");
}

#[test]
fn two_hundred_sessions_at_once() {
    let dir = tmp();
    let hook = Arc::new(
        AuditHook::new(dir.path())
            .unwrap()
            .with_fsync(FsyncPolicy::Never),
    );
    let per_session = std::thread::scope(|threads| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let hook = hook.clone();
                threads.spawn(move || {
                    let s = scope(&format!("sess-{i}"), &format!("run_{i}"), hooks(&hook));
                    for n in 1..=3 {
                        tool_turn(&s, n, &TurnText::default());
                    }
                    drain(&s).len()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(hook.stats().failures, 0);
    assert_eq!(hook.stats().open_files, 0);
    let logs = audit::read_dir(dir.path()).unwrap();
    assert_eq!(logs.len(), 200);
    for log in logs {
        let session = log.events[0].session_id.clone();
        let i: usize = session.trim_start_matches("sess-").parse().unwrap();
        assert_eq!(log.events.len(), per_session[i]);
        for (n, e) in log.events.iter().enumerate() {
            assert_eq!(e.session_id, session, "no line of another session");
            assert_eq!(
                e.sequence,
                n as u64,
                "gap-free sequence in {}",
                log.path.display()
            );
        }
        assert_eq!(log.torn_tail, None);
    }
}

#[cfg(unix)]
#[test]
fn private_permissions_and_safe_names() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp();
    let root = dir.path().join("a/b/audit");
    let hook = Arc::new(AuditHook::new(&root).unwrap());
    let s = scope("../../escape/me", "run_x", hooks(&hook));
    tool_turn(&s, 1, &TurnText::default());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    let files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0], hook.path_for_session("../../escape/me"));
    assert_eq!(mode(&files[0]), 0o600);
    assert!(!dir.path().join("a/escape").exists());
}

#[test]
fn fail_closed_halts_the_turn() {
    let dir = tmp();
    let hook = Arc::new(AuditHook::new(dir.path()).unwrap().fail_closed(true));
    // Make the session's file impossible to open: a directory sits at its path.
    std::fs::create_dir(hook.path_for_session("blocked")).unwrap();
    let s = scope("blocked", "run_b", hooks(&hook));
    let (turn, _) = s.start_span(SpanSubject::Turn, "turn.1", attrs! {"turn_number" => 1});
    assert!(hook.stats().failures >= 1);
    let reason = kaos_agents::Hook::halt_reason(&*hook).unwrap();
    assert!(reason.contains("audit trail cannot be written"), "{reason}");
    assert!(
        s.halted().unwrap().contains("audit"),
        "the scope sees the halt"
    );
    s.end_span(&turn, SpanPhase::Error, attrs! {}, None);
    let err = kaos_agents::Hook::flush(&*hook).unwrap_err();
    assert!(err.message.contains("audit write failure"), "{err}");

    // Fail-open (default): failures are counted and reported, the turn goes on.
    // (Uncoalesced: a coalesced delta waits in memory for the next event.)
    let open = Arc::new(AuditHook::new(dir.path()).unwrap().with_coalescing(None));
    let s = scope("blocked", "run_c", hooks(&open));
    s.emit(EventKind::TextDelta {
        content: "x".into(),
        span_id: None,
    });
    // Fail-open does not wait for the writer; flush does.
    assert!(kaos_agents::Hook::flush(&*open).is_err());
    assert_eq!(open.stats().failures, 1);
    assert!(kaos_agents::Hook::halt_reason(&*open).is_none());
    assert!(s.halted().is_none());
}

#[test]
fn subagent_runs_link_across_files() {
    let dir = tmp();
    let hook = Arc::new(AuditHook::new(dir.path()).unwrap());
    let parent = scope("main", "run_parent", hooks(&hook));
    let (turn, _) = parent.start_span(SpanSubject::Turn, "turn.1", attrs! {"turn_number" => 1});
    let (sub, _) = parent.start_span(
        SpanSubject::Subagent,
        "subagent.researcher",
        attrs! {"agent" => "researcher"},
    );
    let child = TurnScope::nested(
        &parent,
        sub.clone(),
        "main/subagent-researcher".into(),
        "researcher".into(),
    );
    tool_turn(&child, 1, &TurnText::default());
    parent.end_span(&sub, SpanPhase::Complete, attrs! {}, None);
    parent.end_span(
        &turn,
        SpanPhase::Complete,
        attrs! {"outcome" => "completed"},
        None,
    );
    // No TurnSummary follows here, so nothing waited for the parent's last lines.
    kaos_agents::Hook::flush(&*hook).unwrap();

    let child_path = hook.path_for_session("main/subagent-researcher");
    assert_eq!(child_path.parent().unwrap(), dir.path());
    let mut log = audit::read_file(hook.path_for_session("main")).unwrap();
    assert_eq!(
        log.events.len(),
        4,
        "the parent file has only the parent's events"
    );
    assert_eq!(log.include_subagents().unwrap(), 1);
    let runs = log.runs();
    assert_eq!(runs.len(), 2);
    let child_run = runs
        .iter()
        .position(|r| &*r.run_id == child.run_id().as_ref())
        .unwrap();
    assert_eq!(runs[child_run].parent_run, Some(0));
    assert_eq!(runs[child_run].parent_span_id.as_deref(), Some(&*sub));
    let sub_node = runs[0].span(&sub).unwrap();
    assert_eq!(sub_node.child_runs, vec![child_run]);
}

#[test]
fn every_event_policy_writes_the_same_bytes() {
    // fsync is not observable here; this only checks the policy does not change content.
    let dir = tmp();
    let a = Arc::new(
        AuditHook::new(dir.path().join("a"))
            .unwrap()
            .with_fsync(FsyncPolicy::EveryEvent),
    );
    let b = Arc::new(
        AuditHook::new(dir.path().join("b"))
            .unwrap()
            .with_fsync(FsyncPolicy::Never),
    );
    let mut set = hooks(&a);
    set.push(b.clone());
    let s = scope("p", "run_p", set);
    tool_turn(&s, 1, &TurnText::default());
    let la = audit::read_file(a.path_for_session("p")).unwrap();
    let lb = audit::read_file(b.path_for_session("p")).unwrap();
    assert_eq!(la.events, lb.events);
    assert_eq!(a.stats().events_written, lb.events.len() as u64);
}

#[test]
fn a_file_stays_open_until_the_turns_true_end() {
    let dir = tmp();
    let hook = Arc::new(AuditHook::new(dir.path()).unwrap());
    let s = scope("open", "run_open", hooks(&hook));
    let (turn, _) = s.start_span(SpanSubject::Turn, "turn.1", attrs! {"turn_number" => 1});
    s.end_span(&turn, SpanPhase::Complete, attrs! {}, None);
    // Mid-turn lines are not waited for; flush waits for the writer (and closes nothing).
    kaos_agents::Hook::flush(&*hook).unwrap();
    assert_eq!(
        hook.stats().open_files,
        1,
        "the TurnSummary that follows is the turn's true end"
    );
    s.emit(EventKind::TurnSummary(TurnSummary {
        text: "done".into(),
        intent: None,
        tool_calls: vec![],
        tokens_used: 0,
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: None,
        outcome: TurnOutcome::Completed,
    }));
    assert_eq!(hook.stats().open_files, 0);

    // A cancelled turn has no summary: its span is the end.
    let s2 = scope("open", "run_open2", hooks(&hook));
    s2.start_span(SpanSubject::Turn, "turn.2", attrs! {"turn_number" => 2});
    assert_eq!(s2.cancel_open("dropped"), 1);
    assert_eq!(hook.stats().open_files, 0);
    let log = audit::read_file(hook.path_for_session("open")).unwrap();
    assert_eq!(log.events.len(), 5);
    assert_eq!(
        std::fs::read_to_string(&log.path)
            .unwrap()
            .matches("format_version")
            .count(),
        1
    );
}

/// Every kind of event, each twice (the second time the hook may answer from memory), with
/// clean and secret-bearing content in each redacted field.
fn every_kind(s: &TurnScope, secret: &str) {
    let (turn, _) = s.start_span(
        SpanSubject::Turn,
        "turn.1",
        attrs! {"turn_number" => 1, "note" => secret, "token" => serde_json::Value::Null},
    );
    s.emit(EventKind::IntentClassified {
        intent: Intent::Respond,
        confidence: 0.5,
        reasoning: secret.into(),
    });
    s.emit(EventKind::PlanProposed {
        steps: vec![kaos_agents::events::PlanStepSummary {
            step_id: "step-1".into(),
            description: secret.into(),
            tool_name: None,
        }],
        strategy: "plan".into(),
    });
    s.emit(EventKind::TextDelta {
        content: secret.into(),
        span_id: None,
    });
    s.emit(EventKind::ToolCallApprovalRequired {
        call_id: "call_1".into(),
        tool_name: "pay".into(),
        arguments: json!({"nested": [{"v": secret, "n": 1, "b": true}], "Api-Key": "plain", "token": null}),
        reason: secret.into(),
        run_state_ref: None,
    });
    s.emit(EventKind::BudgetExceeded {
        kind: "tokens".into(),
        limit: 1.0,
        actual: 2.0,
        reason: secret.into(),
    });
    s.emit(EventKind::RunError {
        error_type: "x".into(),
        message: secret.into(),
        recovery_hint: secret.into(),
    });
    s.end_span(
        &turn,
        SpanPhase::Error,
        attrs! {"outcome" => "failed"},
        Some(SpanError {
            error_type: "x".into(),
            message: secret.into(),
        }),
    );
    s.emit(EventKind::TurnSummary(TurnSummary {
        text: secret.into(),
        intent: None,
        tool_calls: vec![],
        tokens_used: 0,
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: None,
        outcome: TurnOutcome::Failed,
    }));
}

#[test]
fn what_is_written_is_what_the_redactor_returns() {
    let long = "x".repeat(5000);
    let contents = [
        "plain words",
        "plain words",
        ANTHROPIC,
        ANTHROPIC,
        "card 4242 4242 4242 4242 ok",
        "user 123-45-6789",
        "CUSTOM-42 inside",
        long.as_str(),
        "",
    ];
    let redactors = [
        Redactor::default(),
        Redactor::default()
            .try_with_pattern("custom", r"CUSTOM-\d+")
            .unwrap(),
        Redactor::default().with_secrets(false),
        Redactor::none(),
        Redactor::none().with_sensitive_key("note"),
    ];
    for (r, redactor) in redactors.into_iter().enumerate() {
        let dir = tmp();
        let hook = Arc::new(
            AuditHook::new(dir.path())
                .unwrap()
                .with_redactor(redactor.clone()),
        );
        let mut expected = Vec::new();
        let mut counts = kaos_agents::redact::RedactionStats::default();
        for (i, secret) in contents.iter().enumerate() {
            let s = scope("all", &format!("run_{i}"), hooks(&hook));
            every_kind(&s, secret);
            for e in drain(&s) {
                expected.push(redactor.redact_event_counted(&e, &mut counts));
            }
        }
        let log = audit::read_file(hook.path_for_session("all")).unwrap();
        assert_eq!(log.events, expected, "redactor #{r}");
        assert_eq!(hook.stats().redactions, counts, "redactor #{r}");
    }
}

#[test]
fn an_empty_or_headerless_torn_file_gets_its_header() {
    let dir = tmp();
    let hook = Arc::new(AuditHook::new(dir.path()).unwrap());
    // A crash right after creating the file, and one in the middle of writing the header.
    std::fs::write(hook.path_for_session("empty"), "").unwrap();
    std::fs::write(hook.path_for_session("torn"), "{\"format_vers").unwrap();
    for session in ["empty", "torn"] {
        let s = scope(session, "run_e", hooks(&hook));
        tool_turn(&s, 1, &TurnText::default());
        let log = audit::read_file(hook.path_for_session(session)).unwrap();
        assert_eq!(log.header.format_version, 1);
        assert_eq!(log.events, drain(&s), "{session}");
        assert_eq!(log.torn_tail, None);
    }
}
