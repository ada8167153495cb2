//! The redaction corpus: every positive sample must be caught by the rule it is labelled
//! with (its secret gone, that rule's marker present); every negative look-alike must come
//! out unchanged. Prints recall and false positives per rule / per kind.

use std::collections::BTreeMap;

use kaos_agents::redact::{Redactor, rule_names};
use serde::Deserialize;

#[derive(Deserialize)]
struct Positive {
    rule: String,
    secret: String,
    text: String,
}

#[derive(Deserialize)]
struct Negative {
    kind: String,
    text: String,
}

fn lines<T: for<'de> Deserialize<'de>>(text: &str) -> Vec<T> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", i + 1)))
        .collect()
}

#[test]
fn corpus_recall_is_total_and_false_positives_are_zero() {
    let positives: Vec<Positive> = lines(include_str!("../data/redact_positive.jsonl"));
    let negatives: Vec<Negative> = lines(include_str!("../data/redact_negative.jsonl"));
    assert!(
        positives.len() >= 150,
        "{} positive samples",
        positives.len()
    );
    assert!(
        negatives.len() >= 150,
        "{} negative samples",
        negatives.len()
    );
    let redactor = Redactor::default().with_max_string_len(usize::MAX);

    let mut recall: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    for p in &positives {
        let out = redactor.redact_str(&p.text);
        let hit = !out.contains(&p.secret) && out.contains(&format!("[REDACTED:{}]", p.rule));
        let e = recall.entry(&p.rule).or_default();
        e.1 += 1;
        if hit {
            e.0 += 1;
        } else {
            misses.push(format!("{}: {:?}\n    -> {:?}", p.rule, p.text, out));
        }
    }
    let mut fps: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut alarms = Vec::new();
    for n in &negatives {
        let out = redactor.redact_str(&n.text);
        let e = fps.entry(&n.kind).or_default();
        e.1 += 1;
        if out != n.text {
            e.0 += 1;
            alarms.push(format!("{}: {:?}\n    -> {:?}", n.kind, n.text, out));
        }
    }
    println!("recall per rule (caught/samples):");
    for (rule, (hit, all)) in &recall {
        println!("  {rule:<26} {hit}/{all}");
    }
    println!("false positives per kind (changed/samples):");
    for (kind, (bad, all)) in &fps {
        println!("  {kind:<26} {bad}/{all}");
    }
    let caught: usize = recall.values().map(|v| v.0).sum();
    let changed: usize = fps.values().map(|v| v.0).sum();
    println!(
        "total: recall {caught}/{} ({:.1}%), false positives {changed}/{}",
        positives.len(),
        100.0 * caught as f64 / positives.len() as f64,
        negatives.len()
    );
    // Every built-in rule (but the opt-in PII ones and the JSON-key one) has samples.
    let untested: Vec<&str> = rule_names()
        .into_iter()
        .filter(|r| *r != "sensitive_key" && !recall.contains_key(r))
        .collect();
    assert!(
        untested.is_empty(),
        "rules without positive samples: {untested:?}"
    );
    assert!(
        misses.is_empty() && alarms.is_empty(),
        "missed:\n{}\nfalse alarms:\n{}",
        misses.join("\n"),
        alarms.join("\n")
    );
}
