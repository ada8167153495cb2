//! The audit trail: an append-only, redacted JSONL file per session ([`AuditHook`]), its
//! reader ([`read_file`]) and a self-contained HTML viewer ([`html::render_html`]).
//!
//! # Format
//!
//! One file per session, `{dir}/{safe session id}.jsonl` (see [`session_file_name`]), UTF-8,
//! one JSON document per line, each line ending in `\n`:
//!
//! 1. a header, written with the file's first event (in the same `write_all`), also when an
//!    existing file is empty (a crash right after creating it):
//!    `{"format_version":1,"created":"2026-11-25T21:30:22Z","kaos_version":"0.1.0"}`
//! 2. then every event of every run of the session, in emission order, exactly in the
//!    stream's serde form ([`Event`], see [`crate::events`]) **after redaction** by a
//!    [`Redactor`]:
//!    `{"timestamp":…,"sequence":0,"session_id":"s1","run_id":"run_…","agent":"assistant","kind":{"type":"span",…}}`
//!
//! Later turns of the same session append to the same file (no second header). A sub-agent's
//! events carry its own session id (`parent/subagent-x`) and go to its own file in the same
//! directory; its turn START's `parent_span_id` is the parent run's `subagent` span.
//!
//! Durability: each line is written with a single `write_all` of the whole line (with its
//! `\n`) on a file opened for append, so concurrent writers never interleave within a line
//! and a crash can only tear the **last** line. The reader tolerates a torn last line
//! ([`AuditLog::torn_tail`]); the writer cuts a torn tail off before appending to an
//! existing file. `fsync` follows the [`FsyncPolicy`]. Files are created `0600` in a `0700`
//! directory on Unix.
//!
//! 3. after each turn's last event (its `TurnSummary`, or its turn span when that ends
//!    `cancelled`), a trailer that counts what redaction replaced in that turn's lines:
//!    `{"trailer":{"run_id":"run_…","events":11,"redactions":{"anthropic_key":1}}}`
//!
//! The totals over every session are also in memory ([`AuditHook::stats`]).
//!
//! # Where the I/O runs
//!
//! Not on the thread that delivers events (a Tokio worker driving a turn): every `open`,
//! `write` and `fsync` runs on the hook's own writer thread, `kaos-audit-writer`, fed by a
//! bounded queue. The delivering thread redacts and serializes the event, queues the line and
//! goes on; it waits for the writer only where the durability promise needs it: at a turn's
//! true end (so a finished turn's lines are in the file, synced under
//! [`FsyncPolicy::EveryTurn`], when the runner hands the answer back), after every line under
//! [`FsyncPolicy::EveryEvent`] or [`AuditHook::fail_closed`] (so a failed write halts the turn
//! before the event is passed on), at [`Hook::flush`] and at [`Hook::shutdown`]. A full
//! queue makes the delivering thread wait (bounded memory; nothing is dropped); every wait is
//! bounded by [`AuditHook::with_write_timeout`], and running out of time counts as a failed
//! write.

mod clean;
pub mod html;
mod reader;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use reader::{AuditLog, AuditReadError, read_dir, read_file};

use crate::coalesce::{Coalesce, DeltaCoalescer};
use crate::events::{Event, EventKind, SpanPhase, SpanSubject};
use crate::hooks::{Hook, HookAction, HookError};
use crate::redact::{RedactionStats, Redactor};
use writer::{Line, Sender, Shared, Writer, WriterConfig, WriterError};

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The first line of an audit file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditHeader {
    /// The file format's version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// When the file was created, RFC 3339 UTC (`2026-11-25T21:30:22Z`).
    pub created: String,
    /// The kaos version that created it.
    pub kaos_version: String,
}

impl AuditHeader {
    /// A header for a file created now.
    pub fn now() -> Self {
        Self {
            format_version: FORMAT_VERSION,
            created: rfc3339_utc(SystemTime::now()),
            kaos_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The body of a trailer line (`{"trailer": {...}}`): what redaction replaced in one turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditTrailer {
    /// The run (turn) it closes.
    pub run_id: String,
    /// How many event lines that turn wrote to this file.
    pub events: u64,
    /// Replacements per kind in those lines (empty when nothing was redacted).
    pub redactions: RedactionStats,
}

/// A trailer line as written: one key, `trailer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrailerLine {
    pub(crate) trailer: AuditTrailer,
}

/// When audit files are `fsync`ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// After every event (slowest, loses nothing on power loss).
    EveryEvent,
    /// Once per turn, at its true end, and at [`Hook::flush`]/[`Hook::shutdown`]. A turn's
    /// true end is its `TurnSummary` (which the runner emits right after the terminal `turn`
    /// span), or the `turn` span itself when it ends `cancelled` (no summary follows). Should
    /// a session's next event after a terminal `turn` span not be a summary, that event's
    /// write carries the sync.
    #[default]
    EveryTurn,
    /// Never explicitly (the OS writes back when it wants).
    Never,
}

/// What an [`AuditHook`] did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Event lines written.
    pub events_written: u64,
    /// Write/sync/open failures (each lost at most one event).
    pub failures: u64,
    /// Session files currently open.
    pub open_files: usize,
    /// Replacements made by the redactor, per kind.
    pub redactions: RedactionStats,
}

/// An error setting an audit directory up.
#[derive(Debug, thiserror::Error)]
#[error("audit directory {}: {source}", path.display())]
pub struct AuditSetupError {
    /// The directory.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// How an event relates to the end of its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TurnEnd {
    /// Not a turn end.
    No,
    /// A turn span ended `complete`/`error`: the runner emits the turn's `TurnSummary` next.
    SpanAwaitingSummary,
    /// The turn's last event: its `TurnSummary`, or a turn span ended `cancelled`.
    Final,
}

impl TurnEnd {
    fn of(event: &Event) -> Self {
        match &event.kind {
            EventKind::Span(span) if span.subject == SpanSubject::Turn => match span.phase {
                SpanPhase::Start => Self::No,
                SpanPhase::Complete | SpanPhase::Error => Self::SpanAwaitingSummary,
                SpanPhase::Cancelled => Self::Final,
            },
            EventKind::TurnSummary(_) => Self::Final,
            _ => Self::No,
        }
    }
}

/// A [`Hook`] that appends every event, redacted, to a per-session JSONL file (see the
/// [module docs](self) for the format).
///
/// Redaction and serialization run on the thread that delivers the event; every file
/// operation (`open`, `write`, `fsync`) runs on the hook's own writer thread
/// (`kaos-audit-writer`, started at the first event), fed through a bounded queue
/// ([`AuditHook::with_queue_capacity`]): a full queue makes the delivering thread wait, so
/// memory stays bounded and no line is dropped. The hook waits for the writer's
/// acknowledgement at a turn's true end (its `TurnSummary`, or a `cancelled` turn span), so
/// when a turn returns its lines are in the file (and synced under
/// [`FsyncPolicy::EveryTurn`]); under [`FsyncPolicy::EveryEvent`] and with
/// [`AuditHook::fail_closed`] it waits after every line. Each wait is bounded by
/// [`AuditHook::with_write_timeout`]; running out of time is a failure like a failed write.
///
/// A session's file stays open for the whole turn and is closed at the turn's true end, so
/// idle sessions hold no handles. [`Hook::shutdown`] (and dropping the hook) syncs and
/// closes every file and joins the thread, waiting at most the write timeout.
pub struct AuditHook {
    dir: PathBuf,
    redactor: Redactor,
    memo: clean::CleanMemo,
    fsync: FsyncPolicy,
    queue_capacity: usize,
    write_timeout: Duration,
    shared: Arc<Shared>,
    redactions: Mutex<RedactionStats>,
    writer: Mutex<Option<Writer>>,
    coalescer: Option<DeltaCoalescer>,
}

impl std::fmt::Debug for AuditHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHook")
            .field("dir", &self.dir)
            .field("fsync", &self.fsync)
            .field("fail_closed", &self.is_fail_closed())
            .field("queue_capacity", &self.queue_capacity)
            .field("write_timeout", &self.write_timeout)
            .finish_non_exhaustive()
    }
}

/// Bytes a line buffer starts with.
const LINE_CAPACITY: usize = 1024;

/// Lines the writer's queue holds by default before senders wait.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;

/// How long the hook waits by default for room in the queue or for an acknowledgement.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AuditHook {
    /// Writes under `dir` (created `0700` if missing) with [`Redactor::default`] and
    /// [`FsyncPolicy::EveryTurn`].
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, AuditSetupError> {
        let dir = dir.into();
        create_private_dir(&dir).map_err(|source| AuditSetupError {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            redactor: Redactor::default(),
            memo: clean::CleanMemo::default(),
            fsync: FsyncPolicy::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            shared: Arc::default(),
            redactions: Mutex::default(),
            writer: Mutex::new(None),
            coalescer: Some(DeltaCoalescer::new(Coalesce::default())),
        })
    }

    /// Uses `redactor` instead of the default one.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self.memo.clear();
        self
    }

    /// Sets when files are synced.
    pub fn with_fsync(mut self, policy: FsyncPolicy) -> Self {
        self.retire_writer();
        self.fsync = policy;
        self
    }

    /// With `true`, the first write failure makes [`Hook::halt_reason`] return a reason, so
    /// the runner stops the turn instead of going on without an audit trail. The hook then
    /// waits for the writer after every line, so a failure is known before the event is
    /// passed on, as with a write on the delivering thread.
    pub fn fail_closed(self, on: bool) -> Self {
        self.shared.fail_closed.store(on, Ordering::Relaxed);
        self
    }

    /// How many lines the writer's queue holds (at least 1; default
    /// [`DEFAULT_QUEUE_CAPACITY`]). When it is full, the thread delivering an event waits.
    pub fn with_queue_capacity(mut self, lines: usize) -> Self {
        self.retire_writer();
        self.queue_capacity = lines.max(1);
        self
    }

    /// The longest the hook waits for room in the queue, for an acknowledgement, or for the
    /// writer thread to stop (default [`DEFAULT_WRITE_TIMEOUT`]). Running out of time counts
    /// as a failed write.
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The directory files are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file `session_id`'s events go to.
    pub fn path_for_session(&self, session_id: &str) -> PathBuf {
        self.dir.join(session_file_name(session_id))
    }

    /// Counters: events written, failures, open files and redactions per kind.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            events_written: self.shared.written.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            open_files: self.shared.open_files.load(Ordering::Relaxed),
            redactions: lock(&self.redactions).clone(),
        }
    }

    fn is_fail_closed(&self) -> bool {
        self.shared.fail_closed.load(Ordering::Relaxed)
    }

    /// Stops a running writer (a builder changed what it was started with); the next event
    /// starts one with the new settings.
    fn retire_writer(&mut self) {
        let running = self
            .writer
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = running
            && let Err(e) = writer.stop(self.write_timeout)
        {
            self.shared.fail("stop audit writer", None, &e);
        }
    }

    /// The running writer's queue, starting the thread if there is none.
    fn sender(&self) -> std::io::Result<Sender> {
        let mut slot = lock(&self.writer);
        if let Some(writer) = &*slot {
            return Ok(writer.sender());
        }
        let config = WriterConfig {
            dir: self.dir.clone(),
            fsync: self.fsync,
            capacity: self.queue_capacity,
        };
        let writer = Writer::spawn(config, self.shared.clone())?;
        let sender = writer.sender();
        *slot = Some(writer);
        Ok(sender)
    }

    /// A failure to reach the writer; a writer that is gone is replaced at the next event.
    fn writer_failed(&self, what: &str, session_id: Option<&str>, error: &WriterError) {
        if matches!(error, WriterError::Gone) {
            lock(&self.writer).take();
        }
        self.shared.fail(what, session_id, error);
    }

    /// Redacts and serializes one event, then hands the line to the writer (waiting for it
    /// at a turn's end, and after every line when fail-closed or syncing every event).
    fn record(&self, event: &Event) {
        let mut bytes = Vec::with_capacity(LINE_CAPACITY);
        let mut counts = RedactionStats::default();
        let serialized = if self.memo.event_is_clean(&self.redactor, event) {
            serde_json::to_writer(&mut bytes, event)
        } else {
            let redacted = self.redactor.redact_event_counted(event, &mut counts);
            if !counts.is_empty() {
                lock(&self.redactions).merge(&counts);
            }
            serde_json::to_writer(&mut bytes, &redacted)
        };
        if let Err(e) = serialized {
            self.shared
                .fail("serialize event", Some(&event.session_id), &e);
            return;
        }
        bytes.push(b'\n');
        let end = TurnEnd::of(event);
        let wait =
            end == TurnEnd::Final || self.fsync == FsyncPolicy::EveryEvent || self.is_fail_closed();
        let line = Line {
            session_id: event.session_id.clone(),
            run_id: event.run_id.clone(),
            bytes,
            redactions: counts,
            end,
        };
        let sent = match self.sender() {
            Ok(sender) => sender.line(line, wait, self.write_timeout),
            Err(e) => {
                self.shared
                    .fail("start audit writer thread", Some(&event.session_id), &e);
                return;
            }
        };
        if let Err(e) = sent {
            self.writer_failed("write audit line", Some(&event.session_id), &e);
        }
    }

    /// Writes the deltas the coalescer still holds.
    fn release_deltas(&self) {
        if let Some(coalescer) = &self.coalescer {
            coalescer.flush(&mut |e| self.record(e));
        }
    }

    /// Merges consecutive text/thinking deltas of one model call before writing them (by
    /// default [`Coalesce::default`]: up to 4 KiB or 250 ms per line), so a long streamed
    /// answer is a few lines rather than one per chunk; `None` writes every delta as it came.
    /// Merging also lets redaction see a secret the model streamed across several chunks.
    pub fn with_coalescing(mut self, coalesce: Option<Coalesce>) -> Self {
        self.coalescer = coalesce.map(DeltaCoalescer::new);
        self
    }

    /// `Err` naming the failures so far, if any.
    fn failures(&self) -> Result<(), HookError> {
        let failures = self.shared.failures.load(Ordering::Relaxed);
        if failures == 0 {
            return Ok(());
        }
        let last = lock(&self.shared.last_error).clone().unwrap_or_default();
        Err(HookError {
            hook: "audit".into(),
            message: format!("{failures} audit write failure(s); last: {last}"),
        })
    }

    /// Writes buffered deltas, then stops the writer thread: it writes what is queued, syncs
    /// and closes every file and ends; waits for it up to the write timeout.
    fn stop_writer(&self) {
        self.release_deltas();
        let running = lock(&self.writer).take();
        if let Some(writer) = running
            && let Err(e) = writer.stop(self.write_timeout)
        {
            self.shared.fail("stop audit writer", None, &e);
        }
    }
}

impl Drop for AuditHook {
    /// Nothing queued is lost: buffered deltas are written, files synced and closed, and the
    /// writer thread joined (after the write timeout it is detached, with a warning).
    fn drop(&mut self) {
        self.stop_writer();
    }
}

impl Hook for AuditHook {
    fn name(&self) -> &str {
        "audit"
    }

    fn on_event(&self, event: &Event) -> HookAction {
        match &self.coalescer {
            Some(coalescer) => coalescer.push(event, &mut |e| self.record(e)),
            None => self.record(event),
        }
        HookAction::Continue
    }

    fn halt_reason(&self) -> Option<String> {
        self.shared.halt.get().cloned()
    }

    /// Writes buffered deltas, waits until the writer has written everything queued and
    /// synced the open files; an error if any write failed so far.
    fn flush(&self) -> Result<(), HookError> {
        self.release_deltas();
        let running = lock(&self.writer).as_ref().map(Writer::sender);
        if let Some(sender) = running
            && let Err(e) = sender.sync(false, self.write_timeout)
        {
            self.writer_failed("sync audit files", None, &e);
        }
        self.failures()
    }

    /// Writes buffered deltas, then stops the writer thread (it writes what is queued, syncs
    /// and closes every file) and joins it, waiting at most the write timeout; an error if
    /// any write failed so far. A later event starts a new writer.
    fn shutdown(&self) -> Result<(), HookError> {
        self.stop_writer();
        self.failures()
    }
}

/// The file name of a session: the id itself plus `.jsonl` when it is made only of
/// `[A-Za-z0-9._-]`, does not start with `.` and is at most 100 bytes; otherwise the id with
/// every other character replaced by `_` (cut to 100 bytes, a leading `.` replaced), then
/// `-` and the first 8 hex digits of the id's SHA-256 (so `a/b` and `a_b` do not collide).
/// An empty id becomes `unscoped`. The name never contains a path separator.
pub fn session_file_name(session_id: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !session_id.is_empty()
        && session_id.len() <= 100
        && !session_id.starts_with('.')
        && session_id.chars().all(safe)
    {
        return format!("{session_id}.jsonl");
    }
    if session_id.is_empty() {
        return "unscoped.jsonl".to_string();
    }
    let name = session_file_stem(session_id);
    let digest = Sha256::digest(session_id.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{name}-{hex}.jsonl")
}

/// The id with every character outside `[A-Za-z0-9._-]` replaced by `_`, cut to 100 chars,
/// a leading `.` replaced by `_`.
pub(crate) fn session_file_stem(session_id: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let mut name: String = session_id
        .chars()
        .map(|c| if safe(c) { c } else { '_' })
        .take(100)
        .collect();
    if name.starts_with('.') {
        name.replace_range(0..1, "_");
    }
    name
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a system time (seconds precision, UTC).
pub(crate) fn rfc3339_utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_764_106_222);
        assert_eq!(rfc3339_utc(t), "2025-11-25T21:30:22Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn file_names() {
        assert_eq!(session_file_name("s1"), "s1.jsonl");
        assert_eq!(session_file_name(""), "unscoped.jsonl");
        let sub = session_file_name("parent/subagent-x");
        assert!(sub.starts_with("parent_subagent-x-") && !sub.contains('/'));
        assert_ne!(session_file_name("a/b"), session_file_name("a_b"));
        let up = session_file_name("../../etc/passwd");
        assert!(!up.starts_with('.') && !up.contains('/'), "{up}");
        assert!(session_file_name("..").starts_with('_'));
    }
}
