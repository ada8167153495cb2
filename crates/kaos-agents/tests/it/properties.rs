//! Property tests of what reads input from outside: audit files (and the span trees drawn
//! from them) and agent TOML. Arbitrary input gives a value or an error, never a panic.

use kaos_agents::audit::{AuditHeader, read_file};
use kaos_agents::tree::{TreeOptions, build_runs, render_tree};
use kaos_agents::{Agent, Event, EventKind, SpanEvent, SpanPhase, SpanSubject};
use proptest::prelude::*;
use serde_json::Map;

/// A span event of run `run` with ids and parents drawn from a small pool, so that
/// parents are missing, repeated, cyclic and shared across runs.
fn event() -> impl Strategy<Value = Event> {
    (
        0u8..3,
        0u8..6,
        prop::option::of(0u8..6),
        0u8..4,
        any::<u16>(),
    )
        .prop_map(|(run, id, parent, phase, seq)| {
            let phase = match phase {
                0 | 1 => SpanPhase::Start,
                2 => SpanPhase::Complete,
                _ => SpanPhase::Error,
            };
            Event {
                timestamp: u64::from(seq),
                sequence: u64::from(seq),
                session_id: format!("s{run}").into(),
                run_id: format!("run{run}").into(),
                agent: "a".into(),
                kind: EventKind::Span(SpanEvent {
                    subject: SpanSubject::ToolCall,
                    phase,
                    span_id: format!("x{id}").into(),
                    parent_span_id: parent.map(|p| format!("x{p}").into()),
                    name: format!("tool.{id}"),
                    duration_ms: Some(1.0),
                    attributes: Map::new(),
                    error: None,
                }),
            }
        })
}

/// A well-formed audit file of `events`, as bytes.
fn audit_bytes(events: &[Event]) -> Vec<u8> {
    let mut text = serde_json::to_string(&AuditHeader::now()).unwrap();
    text.push('\n');
    for event in events {
        text.push_str(&serde_json::to_string(event).unwrap());
        text.push('\n');
    }
    text.into_bytes()
}

/// Edits that break a file: cut it, overwrite bytes, insert a junk line.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Overwrite(usize, u8),
    InsertLine(usize, String),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::Overwrite(at, b)),
        (any::<usize>(), ".{0,40}").prop_map(|(at, s)| Damage::InsertLine(at, s)),
    ]
}

fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
    let len = bytes.len().max(1);
    match damage {
        Damage::Truncate(at) => bytes.truncate(at % len),
        Damage::Overwrite(at, b) => {
            if let Some(slot) = bytes.get_mut(at % len) {
                *slot = *b;
            }
        }
        Damage::InsertLine(at, line) => {
            let at = at % len;
            let at = bytes[..at]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |p| p + 1);
            let mut insert = line.clone().into_bytes();
            insert.push(b'\n');
            bytes.splice(at..at, insert);
        }
    }
}

/// TOML that looks like an agent file, with values of the wrong types mixed in.
fn agent_toml() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("name"),
        Just("instructions"),
        Just("model"),
        Just("pattern"),
        Just("tools"),
        Just("max_react_iterations"),
        Just("tool_timeout_ms"),
        Just("history_budget_chars"),
        Just("max_delegation_depth"),
        Just("unknown_field"),
    ];
    let value = prop_oneof![
        Just("\"assistant\"".to_owned()),
        Just("\"plan\"".to_owned()),
        Just("\"anthropic:claude-haiku-4-5\"".to_owned()),
        Just("[\"search*\", \"[\"]".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1e400".to_owned()),
        Just("true".to_owned()),
        Just("{ a = 1 }".to_owned()),
        "\"[^\"\\\\\n]{0,12}\"",
    ];
    let line = prop_oneof![
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        Just("[budget]".to_owned()),
        Just("max_cost_usd = -3.5".to_owned()),
        Just("[[permissions]]".to_owned()),
        Just("pattern = \"**\"".to_owned()),
        Just("action = \"ask\"".to_owned()),
        ".{0,20}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(crate::util::proptest_config(64))]

    #[test]
    fn span_trees_of_arbitrary_events_are_drawn(
        events in prop::collection::vec(event(), 0..40),
    ) {
        let runs = build_runs(&events);
        let spans: usize = runs.iter().map(|r| r.spans.len()).sum();
        let tree = render_tree(&events, &TreeOptions::default());
        // Every span and run appears at most once: no cycle is followed.
        prop_assert!(tree.lines().count() <= spans + runs.len() + events.len());
    }

    #[test]
    fn damaged_audit_files_read_or_fail_with_a_located_error(
        events in prop::collection::vec(event(), 0..12),
        damages in prop::collection::vec(damage(), 0..3),
    ) {
        let mut bytes = audit_bytes(&events);
        for d in &damages {
            apply(&mut bytes, d);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(&path, &bytes).unwrap();
        match read_file(&path) {
            Ok(log) => {
                prop_assert!(log.events.len() <= events.len() + damages.len());
                let _ = render_tree(&log.events, &TreeOptions::default());
            }
            Err(e) => prop_assert!(e.to_string().contains("s.jsonl"), "{e}"),
        }
        if damages.is_empty() {
            prop_assert_eq!(read_file(&path).unwrap().events, events);
        }
    }

    #[test]
    fn agent_toml_gives_an_agent_or_a_located_error(text in agent_toml()) {
        match Agent::from_toml_str(&text, "agent.toml") {
            Ok(agent) => prop_assert!(agent.validate().is_ok()),
            Err(e) => prop_assert!(e.to_string().starts_with("agent.toml"), "{e}"),
        }
    }

    #[test]
    fn arbitrary_text_is_not_an_agent_panic(text in any::<String>()) {
        let _ = Agent::from_toml_str(&text, "agent.toml");
    }
}
