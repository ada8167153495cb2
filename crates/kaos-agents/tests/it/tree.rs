//! Text span tree.

use kaos_agents::scope::TurnScope;
use kaos_agents::testing::ScopeDriver;
use kaos_agents::tree::{TreeOptions, render_tree};
use kaos_agents::{Event, EventKind, HookSet, SpanEvent, SpanPhase, SpanSubject, attrs};
use serde_json::Map;

use crate::audit::{TurnText, drain, scope, tool_turn};

fn no_durations() -> TreeOptions {
    TreeOptions {
        durations: false,
        ..TreeOptions::default()
    }
}

#[test]
fn tool_turn_tree() {
    let s = scope("s1", "run_tree", HookSet::default());
    tool_turn(&s, 1, &TurnText::default());
    let tree = render_tree(&drain(&s), &no_durations());
    println!("{tree}");
    assert_eq!(
        tree,
        "\
run run_tree · session s1 · agent assistant
✓ agent.turn outcome=completed
├─ ✓ agent.intent_classification
│  └─ ✓ chat fn-model model=fn-model tokens=40/5
│     └─ · intent tool_use (0.90)
├─ ✓ agent.tool_call.lookup → \"found 3 results\"
├─ ✗ agent.tool_call.flaky is_error error tool_timeout: timed out after 1s
└─ ✓ chat fn-model model=fn-model tokens=60/12
= summary outcome=completed tokens=117 (100 in / 17 out) tool_calls=2
"
    );
}

/// A classifier call that failed, then the heuristic's intent: the classification did give
/// an intent, so its wrapper shows OK, as the exported `agent.intent_classification` span
/// (the failed call under it keeps its error).
#[test]
fn a_classification_saved_by_the_heuristic_shows_ok() {
    let s = scope("s1", "run_fallback", HookSet::default());
    let (turn, _) = s.start_span(SpanSubject::Turn, "turn.1", attrs! {"turn_number" => 1});
    let (call, _) = s.start_span(
        SpanSubject::LlmCall,
        "llm_call.intent_classification",
        attrs! {"purpose" => "intent_classification", "model" => "m"},
    );
    s.end_span(
        &call,
        SpanPhase::Error,
        Map::new(),
        Some(kaos_agents::SpanError {
            error_type: "invalid_output".into(),
            message: "not JSON".into(),
        }),
    );
    s.emit(EventKind::IntentClassified {
        intent: kaos_agents::Intent::Respond,
        confidence: 0.5,
        reasoning: "short message (heuristic)".into(),
    });
    s.end_span(
        &turn,
        SpanPhase::Complete,
        attrs! {"outcome" => "completed"},
        None,
    );
    let tree = render_tree(&drain(&s), &no_durations());
    assert!(tree.contains("├─ ✓ agent.intent_classification"), "{tree}");
    assert!(tree.contains("✗ chat m"), "{tree}");
}

#[test]
fn live_tree_with_subagent_and_cancellation_in_ascii() {
    let parent = scope("main", "run_parent", HookSet::default());
    let (_turn, _) = parent.start_span(SpanSubject::Turn, "turn.1", attrs! {"turn_number" => 1});
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
    let (ct, _) = child.start_span(SpanSubject::Turn, "turn.1", attrs! {"turn_number" => 1});
    child.emit(EventKind::RunError {
        error_type: "rate_limit".into(),
        message: "429 from provider".into(),
        recovery_hint: "retry later".into(),
    });
    child.end_span(&ct, SpanPhase::Error, attrs! {"outcome" => "failed"}, None);
    parent.end_span(&sub, SpanPhase::Complete, attrs! {}, None);
    parent.start_span(
        SpanSubject::ToolCall,
        "tool.slow",
        attrs! {"tool_name" => "slow", "permission" => "ask"},
    );
    let opts = TreeOptions {
        ascii: true,
        ..no_durations()
    };
    let mut events = drain(&parent);
    let child_run = child.run_id().to_string();
    let live = render_tree(&events, &opts);
    assert_eq!(
        live,
        format!(
            "\
run run_parent · session main · agent assistant
... agent.turn (running)
|- ok agent.subagent.researcher
|  `- -> run {child_run} · session main/subagent-researcher · agent researcher
|     `- ERR agent.turn outcome=failed
|        `- * run_error rate_limit: 429 from provider
`- ... agent.tool_call.slow (running) permission=ask
"
        )
    );
    assert_eq!(parent.cancel_open("user pressed ctrl-c"), 2);
    events.extend(drain(&parent));
    let done = render_tree(&events, &opts);
    assert!(
        done.contains(
            "`- CANCELLED agent.tool_call.slow permission=ask error cancelled: user pressed ctrl-c"
        ),
        "{done}"
    );
    assert!(
        done.starts_with("run run_parent · session main · agent assistant\nCANCELLED agent.turn")
    );
}

fn span(
    seq: u64,
    phase: SpanPhase,
    id: &str,
    parent: Option<&str>,
    name: &str,
    ms: Option<f64>,
) -> Event {
    Event {
        timestamp: 1_000 + seq,
        sequence: seq,
        session_id: "s".into(),
        run_id: "run_fixed".into(),
        agent: "a".into(),
        kind: EventKind::Span(SpanEvent {
            subject: if parent.is_none() {
                SpanSubject::Turn
            } else {
                SpanSubject::LlmCall
            },
            phase,
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            name: name.into(),
            duration_ms: ms,
            attributes: Map::new(),
            error: None,
        }),
    }
}

#[test]
fn durations_in_milliseconds() {
    let events = [
        span(0, SpanPhase::Start, "t", None, "turn.1", None),
        span(
            1,
            SpanPhase::Start,
            "l",
            Some("t"),
            "llm_call.respond",
            None,
        ),
        span(
            2,
            SpanPhase::Complete,
            "l",
            Some("t"),
            "llm_call.respond",
            Some(3.25),
        ),
        span(3, SpanPhase::Complete, "t", None, "turn.1", Some(12.5)),
    ];
    assert_eq!(
        render_tree(&events, &TreeOptions::default()),
        "run run_fixed · session s · agent a\n✓ agent.turn 12.5ms\n└─ ✓ chat  3.2ms\n"
    );
}

/// A crafted audit file: `depth` spans, each started inside the one before and never ended
/// (written by hand: a hostile file need not come from kaos).
fn deeply_nested_audit_file(dir: &std::path::Path, depth: u64) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("deep.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let header = kaos_agents::audit::AuditHeader::now();
    writeln!(file, "{}", serde_json::to_string(&header).unwrap()).unwrap();
    let template =
        serde_json::to_string(&span(0, SpanPhase::Start, "ID", Some("PARENT"), "x", None)).unwrap();
    for n in 0..depth {
        let line = template
            .replace("\"sequence\":0", &format!("\"sequence\":{n}"))
            .replace("\"ID\"", &format!("\"s{n}\""));
        let line = if n == 0 {
            line.replace("\"PARENT\"", "null")
        } else {
            line.replace("\"PARENT\"", &format!("\"s{}\"", n - 1))
        };
        writeln!(file, "{line}").unwrap();
    }
    file.flush().unwrap();
    path
}

#[test]
fn a_crafted_file_nested_100k_deep_renders_without_overflowing_the_stack() {
    const DEPTH: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let log = kaos_agents::audit::read_file(deeply_nested_audit_file(dir.path(), DEPTH)).unwrap();
    assert_eq!(log.events.len(), DEPTH as usize);
    // Rendered on a small thread stack: recursion per level would overflow it long before.
    let tree = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || render_tree(&log.events, &no_durations()))
        .unwrap()
        .join()
        .unwrap();
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines.len(), 1 + DEPTH as usize);
    assert!(
        lines[1].starts_with("… ") && lines[1].contains("(running)"),
        "{}",
        lines[1]
    );
    assert!(
        lines.last().unwrap().contains("[depth 99999] … "),
        "{}",
        lines.last().unwrap()
    );
    // Branches stop growing past the drawn depth: the output stays linear in the spans.
    let longest = lines.iter().map(|l| l.chars().count()).max().unwrap();
    assert!(longest < 400, "longest line has {longest} characters");
}
