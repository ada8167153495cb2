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

mod clean;
pub mod html;
mod reader;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use reader::{AuditLog, AuditReadError, read_dir, read_file};

use crate::coalesce::{Coalesce, DeltaCoalescer};
use crate::events::{Event, EventKind, SpanPhase, SpanSubject};
use crate::hooks::{Hook, HookAction, HookError};
use crate::redact::{RedactionStats, Redactor};

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

#[derive(Default)]
struct SessionFile {
    file: Option<File>,
    /// A turn span ended and the `TurnSummary` that owes its sync was not written yet.
    sync_owed: bool,
    /// Event lines written since the last trailer.
    turn_events: u64,
    /// Replacements in those lines.
    turn_redactions: RedactionStats,
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
/// Many sessions may write at once: each session file has its own lock; the session table's
/// lock is held only to look an entry up, never during I/O. A session's file stays open
/// for the whole turn and is closed at the turn's true end (its `TurnSummary`, or a
/// `cancelled` turn span), so idle sessions hold no handles.
pub struct AuditHook {
    dir: PathBuf,
    redactor: Redactor,
    memo: clean::CleanMemo,
    fsync: FsyncPolicy,
    fail_closed: bool,
    sessions: Mutex<HashMap<Arc<str>, Arc<Mutex<SessionFile>>>>,
    redactions: Mutex<RedactionStats>,
    written: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    halt: OnceLock<String>,
    coalescer: Option<DeltaCoalescer>,
}

impl std::fmt::Debug for AuditHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHook")
            .field("dir", &self.dir)
            .field("fsync", &self.fsync)
            .field("fail_closed", &self.fail_closed)
            .finish_non_exhaustive()
    }
}

/// Bytes a line buffer starts with, and the most it keeps between events.
const LINE_CAPACITY: usize = 1024;
const LINE_KEEP_CAPACITY: usize = 64 * 1024;

thread_local! {
    /// The line being written, reused by every event this thread writes.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(LINE_CAPACITY));
}

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
            fail_closed: false,
            sessions: Mutex::default(),
            redactions: Mutex::default(),
            written: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            halt: OnceLock::new(),
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
        self.fsync = policy;
        self
    }

    /// With `true`, the first write failure makes [`Hook::halt_reason`] return a reason, so
    /// the runner stops the turn instead of going on without an audit trail.
    pub fn fail_closed(mut self, on: bool) -> Self {
        self.fail_closed = on;
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
            events_written: self.written.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            open_files: lock(&self.sessions).len(),
            redactions: lock(&self.redactions).clone(),
        }
    }

    fn entry(&self, session_id: &Arc<str>) -> Arc<Mutex<SessionFile>> {
        let mut sessions = lock(&self.sessions);
        sessions.entry(session_id.clone()).or_default().clone()
    }

    fn fail(&self, what: &str, session_id: &str, error: &std::io::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let message = format!("{what} for session {session_id:?}: {error}");
        tracing::error!(target: "kaos::audit", "{message}");
        if self.fail_closed {
            let _ = self
                .halt
                .set(format!("audit trail cannot be written ({message})"));
        }
        *lock(&self.last_error) = Some(message);
    }

    /// Writes one event; errors are counted by the caller.
    /// Writes one event, counting a failure.
    fn record(&self, event: &Event) {
        if let Err((what, error)) = self.write_event(event) {
            self.fail(what, &event.session_id, &error);
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

    fn write_event(&self, event: &Event) -> Result<(), (&'static str, std::io::Error)> {
        let reused = LINE.try_with(|cell| {
            let mut line = cell.try_borrow_mut().ok()?;
            line.clear();
            let result = self.write_event_with(event, &mut line);
            if line.capacity() > LINE_KEEP_CAPACITY {
                *line = Vec::with_capacity(LINE_CAPACITY);
            }
            Some(result)
        });
        match reused {
            Ok(Some(result)) => result,
            // The thread is exiting, or its buffer is in use further up the stack.
            _ => self.write_event_with(event, &mut Vec::with_capacity(LINE_CAPACITY)),
        }
    }

    /// [`AuditHook::write_event`], serializing into `line` (empty).
    fn write_event_with(
        &self,
        event: &Event,
        line: &mut Vec<u8>,
    ) -> Result<(), (&'static str, std::io::Error)> {
        let mut counts = RedactionStats::default();
        let serialized = if self.memo.event_is_clean(&self.redactor, event) {
            serde_json::to_writer(&mut *line, event)
        } else {
            let redacted = self.redactor.redact_event_counted(event, &mut counts);
            if !counts.is_empty() {
                lock(&self.redactions).merge(&counts);
            }
            serde_json::to_writer(&mut *line, &redacted)
        };
        serialized.map_err(|e| ("serialize event", std::io::Error::other(e)))?;
        line.push(b'\n');

        let end = TurnEnd::of(event);
        let entry = self.entry(&event.session_id);
        let mut guard = lock(&entry);
        let session = &mut *guard;
        let mut header = None;
        if session.file.is_none() {
            let path = self.path_for_session(&event.session_id);
            let (file, empty) = open_session_file(&path).map_err(|e| ("open audit file", e))?;
            session.file = Some(file);
            if empty {
                header = Some(header_line().map_err(|e| ("serialize header", e))?);
            }
        }
        session.turn_events += 1;
        if !counts.is_empty() {
            session.turn_redactions.merge(&counts);
        }
        // The turn's last line carries its trailer in the same `write_all`.
        if end == TurnEnd::Final {
            let trailer = TrailerLine {
                trailer: AuditTrailer {
                    run_id: event.run_id.to_string(),
                    events: std::mem::take(&mut session.turn_events),
                    redactions: std::mem::take(&mut session.turn_redactions),
                },
            };
            serde_json::to_writer(&mut *line, &trailer)
                .map_err(|e| ("serialize trailer", std::io::Error::other(e)))?;
            line.push(b'\n');
        }
        let Some(file) = session.file.as_mut() else {
            return Err(("open audit file", std::io::Error::other("no file")));
        };
        // A new file's header and first line go out in one `write_all`: a crash can still
        // only tear the last line (and an empty file gets its header on the next open).
        let bytes: &[u8] = match &mut header {
            Some(header) => {
                header.extend_from_slice(line);
                header
            }
            None => line,
        };
        let result = file
            .write_all(bytes)
            .and_then(|()| file.flush())
            .map_err(|e| ("write audit line", e));
        if result.is_ok() {
            self.written.fetch_add(1, Ordering::Relaxed);
        }
        // `EveryTurn` syncs once per turn, at its true end: the `TurnSummary` that follows a
        // completed/failed turn span, or the turn span itself when it ends `cancelled` (no
        // summary follows). Should any other event come after a turn span before a summary,
        // it syncs the owed turn end with itself.
        let sync = match self.fsync {
            FsyncPolicy::EveryEvent => true,
            FsyncPolicy::EveryTurn => match end {
                TurnEnd::SpanAwaitingSummary => {
                    session.sync_owed = true;
                    false
                }
                TurnEnd::Final => true,
                TurnEnd::No => session.sync_owed,
            },
            FsyncPolicy::Never => false,
        };
        let synced = if sync {
            session.sync_owed = false;
            file.sync_data().map_err(|e| ("sync audit file", e))
        } else {
            Ok(())
        };
        // A turn's true end closes its session's file, so idle sessions hold no handles.
        if end == TurnEnd::Final || result.is_err() {
            // Closing after a failure makes the next event reopen (and repair) the file.
            session.file = None;
            session.sync_owed = false;
            drop(guard);
            self.forget(&event.session_id, &entry);
        }
        result.and(synced)
    }

    /// Drops a session's table entry if it still is `entry` and its file is closed.
    fn forget(&self, session_id: &Arc<str>, entry: &Arc<Mutex<SessionFile>>) {
        let mut sessions = lock(&self.sessions);
        if let Some(current) = sessions.get(session_id)
            && Arc::ptr_eq(current, entry)
            && lock(current).file.is_none()
        {
            sessions.remove(session_id);
        }
    }

    fn sync_all(&self, close: bool) -> Result<(), HookError> {
        let entries: Vec<(Arc<str>, Arc<Mutex<SessionFile>>)> = lock(&self.sessions)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (session_id, entry) in entries {
            let mut session = lock(&entry);
            if let Some(file) = &session.file
                && self.fsync != FsyncPolicy::Never
                && let Err(e) = file.sync_data()
            {
                self.fail("sync audit file", &session_id, &e);
            }
            session.sync_owed = false;
            if close {
                session.file = None;
                drop(session);
                self.forget(&session_id, &entry);
            }
        }
        let failures = self.failures.load(Ordering::Relaxed);
        if failures == 0 {
            return Ok(());
        }
        let last = lock(&self.last_error).clone().unwrap_or_default();
        Err(HookError {
            hook: "audit".into(),
            message: format!("{failures} audit write failure(s); last: {last}"),
        })
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
        self.halt.get().cloned()
    }

    /// Writes buffered deltas and syncs open files; an error if any write failed so far.
    fn flush(&self) -> Result<(), HookError> {
        self.release_deltas();
        self.sync_all(false)
    }

    /// Writes buffered deltas, syncs and closes every open file; an error if any write
    /// failed so far.
    fn shutdown(&self) -> Result<(), HookError> {
        self.release_deltas();
        self.sync_all(true)
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

/// Opens a session file for append: creates it (`0600`), or cuts a torn last line off an
/// existing one. `true` when the file is empty, so the header is still to be written (it
/// goes out with the first event's line, in the same `write_all`).
fn open_session_file(path: &Path) -> std::io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut file = OpenOptions::new().read(true).append(true).open(path)?;
            let len = repair_torn_tail(&mut file)?;
            Ok((file, len == 0))
        }
        Err(e) => Err(e),
    }
}

/// The header line (with its `\n`) of a file created now.
fn header_line() -> std::io::Result<Vec<u8>> {
    let mut header = serde_json::to_vec(&AuditHeader::now()).map_err(std::io::Error::other)?;
    header.push(b'\n');
    Ok(header)
}

/// Truncates a file that does not end in `\n` back to its last `\n` (a line torn by a crash);
/// returns the length kept.
fn repair_torn_tail(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    // Scan backwards in chunks for the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 8192];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = usize::try_from(end - start).unwrap_or(buf.len());
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(pos) = buf[..n].iter().rposition(|b| *b == b'\n') {
            let keep = start + pos as u64 + 1;
            tracing::warn!(target: "kaos::audit", cut = len - keep, "cut a torn last line off an audit file");
            file.set_len(keep)?;
            return Ok(keep);
        }
        end = start;
    }
    file.set_len(0)?;
    Ok(0)
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
