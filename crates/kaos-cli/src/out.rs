//! Everything the CLI itself writes, redacted: this module's `eprintln!`/`eprint!` macros
//! are declared before every other module of the crate, so they shadow the standard ones
//! everywhere in it. Each stderr line (the span tree, notes, warnings, errors, the spinner)
//! goes through the same [`Redactor`] as the audit trail, and so do the `--json` events
//! ([`event_json`]) and the trails `kaos audit` reads back ([`redact_events`]). The plain
//! answer on stdout is the product and is printed as it is. `--no-redact` turns all of this
//! off ([`set_enabled`]).

use std::borrow::Cow;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use kaos_agents::Event;
use kaos_agents::redact::Redactor;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// The audit trail's rules, without truncation (the terminal shows whole values).
static REDACTOR: LazyLock<Redactor> =
    LazyLock::new(|| Redactor::default().with_max_string_len(usize::MAX));

/// Turns redaction of the CLI's own output on or off (`--no-redact`).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// `text` as the CLI may print it.
pub fn text(text: &str) -> Cow<'_, str> {
    if ENABLED.load(Ordering::Relaxed) {
        REDACTOR.redact_str(text)
    } else {
        Cow::Borrowed(text)
    }
}

/// One `--json` line: the event's serde form, its content redacted.
pub fn event_json(event: &Event) -> String {
    if ENABLED.load(Ordering::Relaxed) {
        REDACTOR.redact_event(event).to_json()
    } else {
        event.to_json()
    }
}

/// Events read back from a trail, redacted again (a trail written by an older kaos, or by a
/// program with a weaker redactor, may hold what today's rules catch).
pub fn redact_events(events: &mut [Event]) {
    if ENABLED.load(Ordering::Relaxed) {
        for event in events {
            *event = REDACTOR.redact_event(event);
        }
    }
}

/// Whether stderr carries JSON lines only (`--log-format json`).
static JSON_LINES: AtomicBool = AtomicBool::new(false);

/// With `--log-format json`, the CLI's own stderr lines (notes, warnings, errors, the span
/// tree) are written as JSON log lines too, so a log pipeline reading stderr never meets a
/// line it cannot parse.
pub fn set_json_lines(on: bool) {
    JSON_LINES.store(on, Ordering::Relaxed);
}

/// Writes `text` (redacted) to stderr: as it is, or one JSON log line per line of it.
pub fn stderr(text: &str) {
    use std::io::Write as _;
    let text = self::text(text);
    let mut err = std::io::stderr().lock();
    if !JSON_LINES.load(Ordering::Relaxed) {
        let _ = err.write_all(text.as_bytes());
        return;
    }
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if !line.trim().is_empty() {
            let _ = writeln!(err, "{}", json_line(line));
        }
    }
}

/// One of the CLI's own stderr lines as a JSON log line, shaped like the subscriber's
/// (`crate::logging`): a warning or an error by its words, else INFO.
fn json_line(line: &str) -> String {
    let lower = line.to_ascii_lowercase();
    let level = if lower.contains("error") && !lower.contains("warning") {
        "ERROR"
    } else if lower.contains("warning") {
        "WARN"
    } else {
        "INFO"
    };
    serde_json::json!({
        "timestamp_unix_ms": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        "level": level,
        "target": "kaos",
        "fields": {"message": line},
    })
    .to_string()
}

/// `eprintln!` through [`stderr`].
macro_rules! eprintln {
    () => {
        $crate::out::stderr("\n")
    };
    ($($arg:tt)*) => {
        $crate::out::stderr(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` through [`stderr`].
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::out::stderr(&format!($($arg)*))
    };
}
