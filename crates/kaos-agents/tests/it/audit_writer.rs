//! The audit hook's writer thread behind the real Runner: a turn's lines are in the file when
//! the turn returns, a failed write halts a fail-closed turn and is counted and logged when
//! fail-open, many concurrent sessions through a tiny queue lose nothing, and shutdown or
//! drop writes out what is still queued.

use std::sync::{Arc, Mutex};

use kaos_agents::testing::ScopeDriver;

use kaos_agents::audit::{self, AuditHook, FsyncPolicy};
use kaos_agents::{Agent, EventKind, FnTool, Hook, KaosRuntime, Runner, TurnError};
use kaos_llm::FunctionClient;
use serde_json::json;

use crate::audit::{TurnText, hooks, scope, tool_turn};
use crate::util::{assert_well_formed, routing_model};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Args {
    /// The text.
    text: String,
}

fn runner(audit: Arc<AuditHook>) -> Runner {
    let tool = FnTool::new("echo", "Echoes its text.", |a: Args| async move {
        format!("echoed {}", a.text)
    })
    .read_only();
    let runtime = KaosRuntime::test_mode()
        .with_client(
            "fake",
            FunctionClient::new(routing_model("echo", json!({"text": "hi"}))),
        )
        .with_tool(tool);
    let agent = Agent::builder()
        .name("auditor")
        .model("fake")
        .build()
        .unwrap();
    Runner::new(agent, runtime).with_shared_hook(audit)
}

/// The session's file, parsed: events and trailers (lines with `"trailer"`).
fn lines(audit: &AuditHook, session: &str) -> (audit::AuditLog, usize) {
    let path = audit.path_for_session(session);
    let text = std::fs::read_to_string(&path).unwrap();
    let trailers = text
        .lines()
        .filter(|l| l.starts_with(r#"{"trailer""#))
        .count();
    (audit::read_file(&path).unwrap(), trailers)
}

/// Points the session's file at `/dev/full`: it opens, but every write fails with ENOSPC.
#[cfg(target_os = "linux")]
fn full_disk(audit: &AuditHook, session: &str) {
    std::os::unix::fs::symlink("/dev/full", audit.path_for_session(session)).unwrap();
}

#[tokio::test]
async fn a_turns_lines_are_in_the_file_when_the_turn_returns() {
    for policy in [FsyncPolicy::EveryTurn, FsyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let audit = Arc::new(AuditHook::new(dir.path()).unwrap().with_fsync(policy));
        let runner = runner(audit.clone());
        for turn in 1..=3 {
            let message = if turn % 2 == 0 {
                "use the tool"
            } else {
                "hello"
            };
            runner.turn(message, "acked").await.unwrap();
            // No flush: the hook waited for the writer at the TurnSummary.
            let (log, trailers) = lines(&audit, "acked");
            assert_eq!(trailers, turn, "{policy:?}: one trailer per finished turn");
            assert!(
                matches!(log.events.last().unwrap().kind, EventKind::TurnSummary(_)),
                "{policy:?}: the turn's last event is on disk"
            );
            assert_eq!(log.torn_tail, None);
            assert_eq!(audit.stats().open_files, 0, "closed at the turn's end");
        }
        assert_eq!(audit.stats().failures, 0);
    }
}

/// The error a fail-closed turn ends with when the audit file cannot be written (ENOSPC:
/// the session's file is a link to `/dev/full`).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_failed_write_halts_a_fail_closed_turn() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditHook::new(dir.path()).unwrap().fail_closed(true));
    full_disk(&audit, "full");
    let err = runner(audit.clone())
        .turn("use the tool", "full")
        .await
        .unwrap_err();
    let TurnError::Failed { failure, .. } = err else {
        panic!("expected a failed turn, got {err:?}")
    };
    eprintln!("fail-closed audit write error: {}", failure.message);
    assert_eq!(failure.error_type, "hook_halt");
    assert!(
        failure.message.contains("audit trail cannot be written")
            && failure
                .message
                .contains("write audit line for session \"full\"")
            && failure.message.contains("No space left on device"),
        "{}",
        failure.message
    );
    assert!(audit.stats().failures >= 1);
    let err = audit.flush().unwrap_err();
    assert!(err.message.contains("audit write failure"), "{err}");
}

/// A `tracing` layer that keeps the messages of `kaos::audit` events.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event.metadata().target() != "kaos::audit" {
            return;
        }
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    *self.0 = format!("{value:?}");
                }
            }
        }
        let mut text = format!("{} ", event.metadata().level());
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        text.push_str(&message);
        self.0.lock().unwrap().push(text);
    }
}

/// Every `kaos::audit` log line of this test binary, from any thread. A process-wide
/// subscriber: with a scoped one, a callsite first met by another test's thread can stay
/// disabled for this one.
fn audit_logs() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let captured = Captured::default();
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(captured.clone()),
            )
            .expect("no other global subscriber in this test binary");
            captured
        })
        .clone()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_failed_write_of_a_fail_open_hook_is_counted_and_logged() {
    let captured = audit_logs();
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditHook::new(dir.path()).unwrap());
    full_disk(&audit, "fail-open");
    let response = runner(audit.clone())
        .turn("use the tool", "fail-open")
        .await
        .unwrap();
    assert!(response.text.contains("echoed hi"), "{}", response.text);
    // The metric `kaos.audit.write_failures` reads this counter.
    let failures = audit.stats().failures;
    assert!(failures >= 1, "the writer counted the failures");
    assert_eq!(audit.halt_reason(), None);
    let logged = captured.0.lock().unwrap().clone();
    assert!(
        logged.iter().any(|l| l.starts_with("ERROR")
            && l.contains("write audit line for session \"fail-open\"")
            && l.contains("No space left on device")),
        "{logged:?}"
    );
}

/// Many sessions at once through a queue of two lines: the delivering threads wait for room
/// (backpressure), and every file is complete when its turns return.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_turns_through_a_tiny_queue_lose_nothing() {
    const SESSIONS: usize = 24;
    const TURNS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(
        AuditHook::new(dir.path())
            .unwrap()
            .with_queue_capacity(2)
            .with_coalescing(None),
    );
    let runner = Arc::new(runner(audit.clone()));
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let runner = runner.clone();
        tasks.push(tokio::spawn(async move {
            let session = format!("c{i}");
            for turn in 0..TURNS {
                let message = if (i + turn) % 2 == 0 {
                    "use the tool"
                } else {
                    "hi"
                };
                runner.turn(message, &session).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut total = 0;
    for i in 0..SESSIONS {
        let (log, trailers) = lines(&audit, &format!("c{i}"));
        assert_eq!(trailers, TURNS, "c{i}");
        assert_eq!(log.torn_tail, None);
        let runs: Vec<_> = log
            .events
            .iter()
            .map(|e| e.run_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(runs.len(), TURNS, "c{i}");
        for run in runs {
            let events: Vec<_> = log
                .events
                .iter()
                .filter(|e| e.run_id == run)
                .cloned()
                .collect();
            assert_well_formed(&events);
            for (n, e) in events.iter().enumerate() {
                assert_eq!(e.sequence, n as u64, "gap-free sequence of {run} in c{i}");
            }
        }
        total += log.events.len();
    }
    let stats = audit.stats();
    assert_eq!(stats.events_written, total as u64);
    assert_eq!((stats.failures, stats.open_files), (0, 0));
}

/// Lines still queued (mid-turn: nothing waited for them) and deltas the coalescer holds
/// are written by `shutdown`; after it the hook starts a new writer.
#[test]
fn shutdown_writes_out_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditHook::new(dir.path()).unwrap().with_queue_capacity(4));
    let s = scope("mid", "run_mid", hooks(&audit));
    tool_turn(&s, 1, &TurnText::default());
    let (_turn2, _) = s.start_span(
        kaos_agents::SpanSubject::Turn,
        "turn.2",
        kaos_agents::attrs! {"turn_number" => 2},
    );
    for i in 0..50 {
        s.emit(EventKind::UsageObserved {
            input_tokens: i,
            output_tokens: 1,
            total_tokens: i + 1,
            cost_usd: None,
            model: "m".into(),
            source: "test".into(),
        });
    }
    s.emit(EventKind::TextDelta {
        content: "held by the coalescer".into(),
        span_id: None,
    });
    let expected = {
        let mut n = 0;
        while s.pop().is_some() {
            n += 1;
        }
        n
    };
    audit.shutdown().unwrap();
    let (log, _) = lines(&audit, "mid");
    assert_eq!(log.events.len(), expected, "every event is in the file");
    assert!(matches!(
        &log.events.last().unwrap().kind,
        EventKind::TextDelta { content, .. } if content == "held by the coalescer"
    ));
    assert_eq!(audit.stats().open_files, 0);

    // The hook still works after a shutdown.
    let s = scope("after", "run_after", hooks(&audit));
    tool_turn(&s, 1, &TurnText::default());
    let (log, trailers) = lines(&audit, "after");
    assert_eq!((trailers, log.torn_tail), (1, None));
}

/// Dropping the last handle on the hook writes out what is queued and joins the thread.
#[test]
fn drop_writes_out_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditHook::new(dir.path()).unwrap());
    let path = audit.path_for_session("dropped");
    let s = scope("dropped", "run_drop", hooks(&audit));
    let (_turn, _) = s.start_span(
        kaos_agents::SpanSubject::Turn,
        "turn.1",
        kaos_agents::attrs! {"turn_number" => 1},
    );
    for i in 0..20 {
        s.emit(EventKind::TextDelta {
            content: format!("chunk {i} "),
            span_id: None,
        });
    }
    drop(s);
    drop(audit);
    let log = audit::read_file(&path).unwrap();
    let text: String = log
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TextDelta { content, .. } => Some(content.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        text,
        (0..20).map(|i| format!("chunk {i} ")).collect::<String>()
    );
    assert_eq!(log.torn_tail, None);
}

/// A disk that stops answering (here: the session's file is a FIFO nobody reads, so a write
/// past the pipe's buffer blocks) costs a fail-closed turn one write timeout, then halts it;
/// later events do not wait again. Once the disk answers, drop writes out what is queued.
#[cfg(target_os = "linux")]
#[test]
fn a_stalled_writer_halts_a_fail_closed_turn_after_one_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(
        AuditHook::new(dir.path())
            .unwrap()
            .fail_closed(true)
            .with_coalescing(None)
            .with_write_timeout(std::time::Duration::from_millis(200)),
    );
    let fifo = audit.path_for_session("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let s = scope("fifo", "run_fifo", hooks(&audit));
    let (_turn, _) = s.start_span(
        kaos_agents::SpanSubject::Turn,
        "turn.1",
        kaos_agents::attrs! {"turn_number" => 1},
    );
    // 40 lines of 4 KiB (the redactor's string cap): more than a pipe holds (64 KiB).
    for _ in 0..40 {
        s.emit(EventKind::TextDelta {
            content: "x".repeat(4000),
            span_id: None,
        });
    }
    let halted = s.halted().expect("the turn is halted");
    eprintln!("stalled audit writer: {halted}");
    assert!(
        halted.contains("audit trail cannot be written")
            && halted.contains("did not confirm the write within 200 ms"),
        "{halted}"
    );
    let failures = audit.stats().failures;
    assert!(failures >= 2, "the later lines failed too: {failures}");
    let err = audit.flush().unwrap_err();
    assert!(err.message.contains("stalled"), "{err}");

    // The disk answers again: read the FIFO until the writer closes it.
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(&fifo)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    });
    drop(s);
    drop(audit);
    let bytes = reader.join().unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.starts_with(r#"{"format_version":1"#),
        "the header came first"
    );
    assert!(text.ends_with('\n'), "whole lines only");
}
