//! The HTML viewer, rendered by a real headless Chromium when `KAOS_BROWSER_TESTS=1` (set by
//! `.ci/run`, which installs Chromium); otherwise the browser check says it did not run.

use kaos_agents::testing::ScopeDriver;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use kaos_agents::audit::{self, AuditHook, html::render_html};
use kaos_agents::scope::TurnScope;
use kaos_agents::{EventKind, SpanPhase, SpanSubject, attrs};
use serde_json::json;

use crate::audit::{ANTHROPIC, TurnText, hooks, scope, tool_turn};

/// Set to `1` (as `.ci/run` does) to render the viewer in a real Chromium; then a missing
/// browser fails the test.
const BROWSER_TESTS_ENV: &str = "KAOS_BROWSER_TESTS";
/// Overrides the browser binary (default `/usr/bin/chromium`).
const CHROMIUM_ENV: &str = "KAOS_CHROMIUM";
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a realistic session (two turns, a sub-agent, an error, hostile text) through the
/// AuditHook and reads it back.
fn realistic_log(dir: &Path) -> audit::AuditLog {
    let hook = Arc::new(AuditHook::new(dir).unwrap());
    let s = scope("demo", "run_demo_1", hooks(&hook));
    tool_turn(
        &s,
        1,
        &TurnText {
            user: &format!("book it, my key is {ANTHROPIC}"),
            arguments: json!({"city": "Paris", "api_key": "x"}),
            result: "</script><img src=x onerror=alert(1)> & more",
            answer: "Booked.",
        },
    );
    let s2 = scope("demo", "run_demo_2", hooks(&hook));
    let (turn, _) = s2.start_span(SpanSubject::Turn, "turn.2", attrs! {"turn_number" => 2});
    let (sub, _) = s2.start_span(
        SpanSubject::Subagent,
        "subagent.researcher",
        attrs! {"agent" => "researcher"},
    );
    let child = TurnScope::nested(
        &s2,
        sub.clone(),
        "demo/subagent-researcher".into(),
        "researcher".into(),
    );
    tool_turn(&child, 1, &TurnText::default());
    s2.end_span(&sub, SpanPhase::Complete, attrs! {}, None);
    s2.emit(EventKind::RunError {
        error_type: "rate_limit".into(),
        message: "429 Too Many Requests".into(),
        recovery_hint: "retry later".into(),
    });
    s2.end_span(
        &turn,
        SpanPhase::Error,
        attrs! {"outcome" => "failed"},
        None,
    );

    let mut log = audit::read_file(hook.path_for_session("demo")).unwrap();
    assert_eq!(log.include_subagents().unwrap(), 1);
    log
}

#[test]
fn html_is_self_contained_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let log = realistic_log(dir.path());
    let html = render_html(&log);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(
        html.matches("</script>").count(),
        2,
        "only the page's own two script ends"
    );
    assert!(!html.contains("<img src=x"));
    assert!(
        !html.contains("CANARY"),
        "content was redacted before it was written"
    );
    for forbidden in ["http://", "https://", "<link", "src=\"", "@import"] {
        assert!(
            !html.contains(forbidden),
            "{forbidden} in a self-contained page"
        );
    }
    let start = html.find("id=\"kaos-audit-data\">").unwrap() + "id=\"kaos-audit-data\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    let data: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
    assert_eq!(data["events"].as_array().unwrap().len(), log.events.len());
}

/// Says, past the test harness's output capture, that the browser check did not run (a
/// passing test's `eprintln!` would be swallowed).
fn say_not_run(page: &Path) {
    use std::io::Write;
    let line = format!(
        "NOTE audit_html::chromium_renders_runs_and_spans: the browser check of the audit HTML \
         viewer was NOT run ({BROWSER_TESTS_ENV} is not 1); .ci/run runs it with Chromium. \
         Page written to {}\n",
        page.display()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[test]
fn chromium_renders_runs_and_spans() {
    let dir = tempfile::tempdir().unwrap();
    let log = realistic_log(dir.path());
    let page = target_dir().join("audit-viewer.html");
    std::fs::write(&page, render_html(&log)).unwrap();
    if std::env::var(BROWSER_TESTS_ENV).as_deref() != Ok("1") {
        say_not_run(&page);
        return;
    }
    let chromium_path = std::env::var(CHROMIUM_ENV).unwrap_or_else(|_| DEFAULT_CHROMIUM.to_owned());
    let chromium_path = chromium_path.as_str();
    assert!(
        Path::new(chromium_path).exists(),
        "{chromium_path} is missing and {BROWSER_TESTS_ENV}=1 asks for the browser check: run \
         `.ci/ensure-chromium` (installs Debian's chromium) or point {CHROMIUM_ENV} at a \
         Chromium; page written to {}",
        page.display()
    );
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let chromium = |extra: &[&str]| {
        let out = Command::new(chromium_path)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1500,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let dom = String::from_utf8(chromium(&["--dump-dom"]).stdout).unwrap();
    assert!(
        dom.contains("data-rendered=\"true\""),
        "the script did not finish:\n{dom}"
    );
    for run in &log.runs() {
        assert!(
            dom.contains(&*run.run_id),
            "run {} missing from the DOM",
            run.run_id
        );
    }
    for name in [
        "agent.turn",
        "agent.intent_classification",
        "agent.tool_call.lookup",
        "agent.tool_call.flaky",
        "agent.subagent.researcher",
        "sub-run researcher",
    ] {
        assert!(dom.contains(name), "{name} missing from the rendered DOM");
    }
    // Every span row carries the name the exporter (and the terminal tree) gives it.
    for run in &log.runs() {
        for span in &run.spans {
            assert!(
                dom.contains(&format!("<span class=\"name\">{}</span>", span.name)),
                "{} missing from the rendered DOM",
                span.name
            );
        }
    }
    assert!(
        dom.contains("class=\"row span error"),
        "errors are highlighted"
    );
    assert!(
        dom.contains("tool_timeout: timed out after 1s"),
        "the first error's details are shown"
    );
    assert!(!dom.contains("<img src=\"x\""), "hostile text stays text");

    let shot = target_dir().join("audit-viewer.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
}
